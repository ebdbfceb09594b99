"""Datasets larger than memory: the shards format, and reading it by row
with the readers Grain's ArrayRecordDataSource uses (issue 16).

  sh = Shards(dst)                  the folder's facts, nothing read yet
  x, y = sh.read("train", rows)     rows (k,) int64, any order, repeats allowed

Writing is :mod:`funcnet.data.shard_writer` (``write``, ``convert``,
``generate``); reading ahead on a thread is :mod:`funcnet.data.prefetch`.

A shards folder holds::

  meta.json                                   FORMAT, shapes, dtypes, sizes
  stats.npz                                   mean, std (float64, x_shape)
  train-00000-of-000NN.array_record ...       the training split
  test-00000-of-000NN.array_record ...        the test split

One record per example: the raw bytes of ``x`` (``x_dtype``, ``x_shape``,
C order) followed by those of ``y`` (``y_dtype``, ``y_shape``), with no
padding and no header; the byte order is the one ``meta.json``'s dtype
strings name (``"<f4"``). A record is decoded with ``np.frombuffer`` over
the packed structured dtype ``[("x", x_dtype, x_shape), ("y", y_dtype,
y_shape)]``; nothing is ever unpickled. Files are written with ArrayRecord's
``group_size:1`` (one record per chunk, what random access wants: reading
a row decodes that row only) and no compression (ArrayRecord's default,
zstd, made MNIST-1D's shard 7% larger, not smaller, and its reads 10%
slower: raw floats do not compress).

The inputs are stored raw, in the dtype they were loaded in; the training
statistics are computed while writing, in float64, and :meth:`Shards.read`
applies them exactly as :func:`funcnet.data.standardize` does, so a
standardised read equals the in-memory path given the same statistics, bit
for bit.

``grain`` and ``array_record`` (the ``[data]`` extra) are imported inside
the functions that need them, so ``import funcnet.data`` never does.
"""

import json
import os
import threading

import numpy as np

from funcnet import tasks
from funcnet.errors import ConfigError, DataError, needs_extra

FORMAT = "funcnet-shards-1"

# The writer's options: see the module docstring for why.
WRITER_OPTIONS = "group_size:1,uncompressed"

NEEDS_EXTRA = str(needs_extra("funcnet data", "data", "grain, array_record"))

SPLITS = ("train", "test")


def array_record():
  """The ArrayRecord module, or the one-line error naming the extra."""
  try:
    from array_record.python import array_record_module
  except ImportError:
    raise ConfigError(NEEDS_EXTRA) from None
  return array_record_module


def _grain():
  """``grain.python``, or the one-line error naming the extra."""
  try:
    import grain.python as grain_python
  except ImportError:
    raise ConfigError(NEEDS_EXTRA) from None
  return grain_python


def record_dtype(x_shape, x_dtype, y_shape, y_dtype) -> np.dtype:
  """The packed structured dtype of one record (x's bytes, then y's)."""
  return np.dtype([("x", np.dtype(x_dtype), tuple(x_shape)),
                   ("y", np.dtype(y_dtype), tuple(y_shape))])


def shard_name(split: str, i: int, n: int) -> str:
  """The file name of shard ``i`` of ``n`` of ``split``."""
  return f"{split}-{i:05d}-of-{n:05d}.array_record"


# How a shard's rows are read (ArrayRecordReader, measured on 164- and
# 1028-byte records, 2 cores): read(positions) costs ~3 ns per record *in
# the shard* per call (so ~400 us a call on a 130,000-record shard) plus
# ~8 us per row; read(start, end) of one row costs ~4 us whatever the
# shard, and of a run of rows ~120 us plus ~2 us per row. So: a run of
# consecutive rows from this length on in one call, every other row alone.
_RUN_READ = 512


class Shards:
  """A shards folder written by :func:`write`, read by row.

  Opening reads ``meta.json`` and ``stats.npz`` and checks that every shard
  file is there with the size it was written with (a copy cut short is an
  error here, not at some later step); a shard file itself is opened when
  a row is first read from it.

  Attributes:
    path, meta: the folder and its ``meta.json``.
    name, task, n_classes: as :class:`funcnet.data.Dataset`'s.
    n_train, n_test: examples per split.
    x_shape, x_dtype, y_shape, y_dtype: one example's (tuples, np.dtypes).
    mean, std: float64 arrays of ``x_shape``, the training statistics (std
      of a constant feature already 1), or None.
    info: the further facts (``n_users``, ``n_items`` of ratings...).
  """

  def __init__(self, path):
    self.path = os.fspath(path)
    meta_path = os.path.join(self.path, "meta.json")
    fail = lambda why: DataError(
        f"data shards {self.path}: {why}; expected a folder written by "
        "funcnet data convert")
    if not os.path.isdir(self.path):
      raise fail("not a folder")
    try:
      with open(meta_path) as f:
        meta = json.load(f)
    except FileNotFoundError:
      raise fail("no meta.json") from None
    except (OSError, ValueError) as e:
      raise fail(f"meta.json cannot be read ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
      got = meta.get("format") if isinstance(meta, dict) else None
      raise fail(f"meta.json has format {got!r}, not {FORMAT!r}")
    try:
      self.name, self.task = meta["name"], meta["task"]
      self.n_classes = meta["n_classes"]
      self.x_shape = tuple(meta["x_shape"])
      self.y_shape = tuple(meta["y_shape"])
      self.x_dtype = np.dtype(meta["x_dtype"])
      self.y_dtype = np.dtype(meta["y_dtype"])
      self.n_train = int(meta["splits"]["train"]["n"])
      self.n_test = int(meta["splits"]["test"]["n"])
      self.info = dict(meta.get("info") or {})
      self._rec = record_dtype(self.x_shape, self.x_dtype, self.y_shape,
                                self.y_dtype)
      shards = {s: list(zip(meta["splits"][s]["shards"],
                            meta["splits"][s]["shard_rows"])) for s in SPLITS}
      sizes = {s: meta["splits"][s]["shard_bytes"] for s in SPLITS}
    except (KeyError, TypeError, ValueError) as e:
      raise fail(f"meta.json is incomplete ({type(e).__name__}: {e})") from None
    for s in SPLITS:
      if sum(k for _, k in shards[s]) != meta["splits"][s]["n"]:
        raise fail(f"meta.json's {s} shard sizes do not add up")
      for (f, _), size in zip(shards[s], sizes[s]):
        p = os.path.join(self.path, f)
        if not os.path.isfile(p):
          raise fail(f"shard {f} is missing")
        if os.path.getsize(p) != size:
          raise fail(f"shard {f} has {os.path.getsize(p)} bytes, not the "
                     f"{size} written")
    self.meta, self._shards = meta, shards
    self.mean = self.std = None
    if meta.get("stats"):
      try:
        with open(os.path.join(self.path, meta["stats"]["file"]), "rb") as fh, \
            np.load(fh, allow_pickle=False) as z:
          self.mean, self.std = z["mean"], z["std"]
      except (OSError, ValueError, KeyError, EOFError) as e:
        raise fail(f"the statistics cannot be read ({e})") from None
      if self.mean.shape != self.x_shape or self.std.shape != self.x_shape:
        raise fail(f"statistics of shape {self.mean.shape}, inputs "
                   f"{self.x_shape}")
    # The first row of each shard, per split.
    self._starts = {s: np.cumsum([0] + [k for _, k in shards[s]])[:-1]
                    for s in SPLITS}
    self._sources, self._readers = {}, {}
    self._lock = threading.Lock()

  def n(self, split: str) -> int:
    """Examples in ``split``."""
    return {"train": self.n_train, "test": self.n_test}[split]

  def source(self, split: str):
    """The split's ``grain.python.ArrayRecordDataSource`` (opened once), for
    a Grain pipeline; record ``i`` is row ``i``, decoded by :meth:`decode`."""
    with self._lock:
      if split not in self._sources:
        gp = _grain()
        # "file[start:end]" tells the source each shard's size, so it opens
        # no file until a record is read from it (and a pod's hosts do not
        # all open every shard at start).
        paths = [f"{os.path.join(self.path, f)}[0:{k}]"
                 for f, k in self._shards[split]]
        self._sources[split] = gp.ArrayRecordDataSource(paths)
      return self._sources[split]

  def decode(self, records) -> np.ndarray:
    """Records (a list of ``bytes``) as a structured array with fields
    ``"x"`` and ``"y"`` (read-only views of one joined buffer)."""
    return np.frombuffer(b"".join(records), self._rec)

  def _reader(self, split: str, i: int):
    """Shard ``i`` of ``split``'s reader, opened once, with the options
    Grain's ArrayRecordDataSource opens it with (no readahead: random
    access). One reader serves every thread, as in Grain."""
    key = (split, i)
    if key not in self._readers:
      ar = array_record()
      with self._lock:
        if key not in self._readers:
          self._readers[key] = ar.ArrayRecordReader(
              os.path.join(self.path, self._shards[split][i][0]),
              "readahead_buffer_size:0", file_reader_buffer_size=32768)
    return self._readers[key]

  def _read_shard(self, split: str, i: int, positions: np.ndarray) -> list:
    """The records at ``positions`` (1-d int64) of shard ``i``, as bytes."""
    reader = self._reader(split, i)
    # Runs of consecutive positions: [a, b) in positions' own indices.
    breaks = (np.flatnonzero(np.diff(positions) != 1) + 1).tolist()
    out = []
    for a, b in zip([0] + breaks, breaks + [len(positions)]):
      p = int(positions[a])
      if b - a >= _RUN_READ:
        out += reader.read(p, p + b - a)
      else:
        out += [reader.read(q, q + 1)[0] for q in range(p, p + b - a)]
    return out

  def read(self, split: str, rows, standardize: bool = True):
    """The examples ``rows`` of ``split``, in that order.

    Args:
      split: ``"train"`` or ``"test"``.
      rows: ``(k,)`` integer indices into the split, any order, repeats
        allowed.
      standardize: apply the stored statistics as
        :func:`funcnet.data.standardize` does, ``((x - mean) /
        std).astype(np.float32)`` (no-op without statistics).

    Returns:
      ``x (k, *x_shape)`` (float32 when standardised, else ``x_dtype``),
      ``y (k, *y_shape)`` ``y_dtype``; new arrays the caller owns.

    Raises:
      IndexError: a row outside ``[0, n(split))``.

    Each shard is read by the ArrayRecordReader Grain's
    ArrayRecordDataSource would open for it (same options), a row at a time
    or a long run of consecutive rows at once (``_RUN_READ``). The source's
    own ``__getitems__`` calls ``read(positions)`` per shard, whose cost
    grows with the shard, after starting a Python thread pool: 3x slower at
    128 rows here, on MNIST-1D and on 130,000-record shards alike.
    """
    if split not in SPLITS:
      raise DataError(f"split {split!r}; expected one of {list(SPLITS)}")
    rows = np.asarray(rows)
    if rows.ndim != 1 or not (np.issubdtype(rows.dtype, np.integer)
                              or rows.size == 0):
      raise IndexError(f"rows of shape {rows.shape} {rows.dtype}; expected a "
                       "1-d array of integers")
    n = self.n(split)
    if rows.size and (rows.min() < 0 or rows.max() >= n):
      raise IndexError(f"rows {int(rows.min())}..{int(rows.max())} of split "
                       f"{split!r}; expected 0..{n - 1}")
    starts = self._starts[split]
    if rows.size == 0:
      records = np.empty(0, self._rec)
    elif len(starts) == 1:                   # one shard: no regrouping
      records = self.decode(self._read_shard(split, 0, rows))
    else:
      shard = np.searchsorted(starts, rows, side="right") - 1
      # Each shard's rows in their given order (a stable sort keeps runs of
      # consecutive rows together, for _read_shard).
      order = np.argsort(shard, kind="stable")
      cuts = np.flatnonzero(np.diff(shard[order])) + 1
      records = np.empty(rows.size, self._rec)
      for at in np.split(order, cuts):
        i = int(shard[at[0]])
        records[at] = self.decode(
            self._read_shard(split, i, rows[at] - starts[i]))
    x, y = records["x"], records["y"].copy()
    if standardize and self.mean is not None:
      return ((x - self.mean) / self.std).astype(np.float32), y
    return x.copy(), y

  def dataset_info(self) -> dict:
    """What :func:`funcnet.data.summary` and the experiment read off a
    :class:`funcnet.data.Dataset`, without its arrays."""
    n_outputs = tasks.get(self.task).n_outputs(self.n_classes,
                                               tuple(self.y_shape), None)
    return {"name": self.name, "task": self.task, "n_classes": self.n_classes,
            "n_train": self.n_train, "n_test": self.n_test,
            "in_shape": self.x_shape, "n_outputs": n_outputs,
            "x_dtype": self.x_dtype.str, "y_shape": self.y_shape,
            "y_dtype": self.y_dtype.str, "info": dict(self.info),
            "path": self.path}

  def summary(self) -> str:
    """One line as :func:`funcnet.data.summary` writes it, plus the folder."""
    what = tasks.get(self.task).describe(
        self.n_classes, self.dataset_info()["n_outputs"], self.info)
    return (f"{self.name} (shards {self.path}): {self.task}, {self.n_train} "
            f"train / {self.n_test} test, inputs {self.x_shape}, {what}")

  def close(self) -> None:
    """Closes the shard files (a later read opens them again)."""
    with self._lock:
      for src in self._sources.values():
        src.__exit__(None, None, None)
      for reader in self._readers.values():
        reader.close()
      self._sources, self._readers = {}, {}

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


