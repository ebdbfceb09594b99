"""Datasets larger than memory: ArrayRecord shards written once, read back
by row with the readers Grain's ArrayRecordDataSource uses (issue 16).

The contract::

  write(dst, {"train": chunks, "test": chunks}, name=..., task=...,
        n_classes=...) -> meta      one streaming pass, atomic
  convert(src, dst)                 anything funcnet.data.load loads -> write()
  generate(dst, ...)                a synthetic set, any size -> write()
  sh = Shards(dst)                  the folder's facts, nothing read yet
  x, y = sh.read("train", rows)     rows (k,) int64, any order, repeats allowed
  Prefetcher(fn, items)             fn(item) ahead of the consumer, in order

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

import collections
import concurrent.futures
import json
import math
import os
import shutil
import threading
from typing import Callable, Iterable, Optional

import numpy as np

from funcnet import tasks
from funcnet.errors import ConfigError, DataError, needs_extra

FORMAT = "funcnet-shards-1"

# A shard's size when shard_rows is not given: large enough that a dataset
# of a few hundred GB is a few thousand files, small enough that copying one
# to a host (or a bucket) is quick. TFDS aims at 100-200 MB too.
SHARD_BYTES = 128 * 2**20

# The writer's options: see the module docstring for why.
WRITER_OPTIONS = "group_size:1,uncompressed"

NEEDS_EXTRA = str(needs_extra("funcnet data", "data", "grain, array_record"))

SPLITS = ("train", "test")


def _array_record():
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


def _record_dtype(x_shape, x_dtype, y_shape, y_dtype) -> np.dtype:
  """The packed structured dtype of one record (x's bytes, then y's)."""
  return np.dtype([("x", np.dtype(x_dtype), tuple(x_shape)),
                   ("y", np.dtype(y_dtype), tuple(y_shape))])


# --- statistics: Chan's parallel merge of per-chunk moments ------------------

class _Moments:
  """Per-feature count, mean and sum of squared deviations, in float64.

  A chunk's own ``(n_b, mean_b, M2_b)`` comes from two passes over the
  chunk; merging it into the running ``(n_a, mean_a, M2_a)`` is Chan et
  al.'s (1979) update, with ``delta = mean_b - mean_a``, ``n = n_a + n_b``::

    mean = mean_a + delta * n_b / n
    M2   = M2_a + M2_b + delta**2 * n_a * n_b / n

  so the result does not depend on how the rows were cut into chunks beyond
  rounding, and never suffers the cancellation of ``E[x^2] - E[x]^2``.
  """

  def __init__(self):
    self.n, self.mean, self.m2 = 0, None, None

  def add(self, x: np.ndarray) -> None:
    """``x`` ``(k, *x_shape)``: one chunk of examples."""
    if len(x) == 0:
      return
    x = x.astype(np.float64)
    n_b = len(x)
    mean_b = x.mean(axis=0)
    m2_b = ((x - mean_b) ** 2).sum(axis=0)
    if self.n == 0:
      self.n, self.mean, self.m2 = n_b, mean_b, m2_b
      return
    n = self.n + n_b
    delta = mean_b - self.mean
    self.mean = self.mean + delta * (n_b / n)
    self.m2 = self.m2 + m2_b + delta ** 2 * (self.n * n_b / n)
    self.n = n

  def mean_std(self):
    """``(mean, std)`` float64 of ``x_shape``; a constant feature's std is 1,
    as :func:`funcnet.data.standardize` takes it."""
    std = np.sqrt(self.m2 / self.n)
    return self.mean, np.where(std > 0, std, 1.0)


# --- writing -----------------------------------------------------------------

def _check_dst(dst: str) -> None:
  if os.path.lexists(dst) and not (os.path.isdir(dst) and not os.listdir(dst)):
    raise DataError(f"shards destination {dst} already exists; expected a new "
                    "folder (or an empty one)")


def _shard_name(split: str, i: int, n: int) -> str:
  return f"{split}-{i:05d}-of-{n:05d}.array_record"


def _fsync(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


class _SplitWriter:
  """Writes one split's chunks into shards of ``shard_rows`` records.

  Shards are named ``SPLIT-IIIII.partial`` until the split ends, when their
  count is known and :meth:`finish` renames them ``SPLIT-IIIII-of-NNNNN``.
  """

  def __init__(self, folder, split, shard_rows, record_dtype, moments):
    self.folder, self.split = folder, split
    self.shard_rows, self.rec = shard_rows, record_dtype
    self.moments = moments
    self.n = 0
    self.counts = []           # records per shard
    self.writer = None

  def _open_next(self):
    ar = _array_record()
    path = os.path.join(self.folder,
                        f"{self.split}-{len(self.counts):05d}.partial")
    self.writer = ar.ArrayRecordWriter(path, WRITER_OPTIONS)
    self.counts.append(0)

  def add(self, x: np.ndarray, y: np.ndarray) -> None:
    if self.moments is not None:
      self.moments.add(x)
    records = np.empty(len(x), self.rec)
    records["x"], records["y"] = x, y
    buf, size = records.tobytes(), self.rec.itemsize
    for i in range(len(x)):
      if self.writer is None or self.counts[-1] == self.shard_rows:
        self.close_shard()
        self._open_next()
      self.writer.write(buf[i * size:(i + 1) * size])
      self.counts[-1] += 1
    self.n += len(x)

  def close_shard(self):
    if self.writer is not None:
      self.writer.close()
      self.writer = None

  def finish(self) -> list:
    """Closes the last shard and gives each its final name; returns them."""
    self.close_shard()
    names = []
    for i in range(len(self.counts)):
      name = _shard_name(self.split, i, len(self.counts))
      src = os.path.join(self.folder, f"{self.split}-{i:05d}.partial")
      os.replace(src, os.path.join(self.folder, name))
      names.append(name)
    return names


def _check_chunk(split, k, x, y, want):
  """``want``: ``(x_shape, x_dtype, y_shape, y_dtype)`` of the first chunk."""
  where = f"split {split!r}, chunk {k}"
  for what, a in (("x", x), ("y", y)):
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
      raise DataError(f"{where}: {what} has dtype {a.dtype}; expected numbers")
    if a.ndim == 0:
      raise DataError(f"{where}: {what} is a scalar; expected one row per "
                      "example")
  if len(x) != len(y):
    raise DataError(f"{where}: x has {len(x)} rows but y has {len(y)}; "
                    "expected the same")
  got = (x.shape[1:], x.dtype, y.shape[1:], y.dtype)
  if want is not None and got != want:
    raise DataError(
        f"{where}: examples x {got[0]} {got[1]}, y {got[2]} {got[3]}; expected "
        f"x {want[0]} {want[1]}, y {want[2]} {want[3]} as in the first chunk")
  return got


def write(dst, splits: dict, *, name: str, task: str,
          n_classes: Optional[int], shard_rows: Optional[int] = None,
          stats_from: Optional[str] = "train", info: Optional[dict] = None
          ) -> dict:
  """Writes ``splits`` into the shards folder ``dst`` in one streaming pass.

  Args:
    dst: the folder to create; it must not exist, or be empty.
    splits: ``{"train": chunks, "test": chunks}``, each an iterable of
      ``(x, y)`` numpy arrays, ``x (k, *x_shape)`` and ``y (k, *y_shape)``
      with the same shapes and dtypes in every chunk of both splits (``k``
      may vary, 0 included). Consumed once, one chunk at a time: only one
      chunk is ever in memory.
    name, task, n_classes: what :class:`Shards` reports (the
      :class:`funcnet.data.Dataset` fields).
    shard_rows: records per shard file (default: about ``SHARD_BYTES``).
    stats_from: ``"train"``: the per-feature ``mean`` and ``std`` of the
      training inputs, accumulated in float64 while writing (:class:`_Moments`)
      and stored in ``stats.npz``; ``None`` (and always for a task that does
      not standardise, :attr:`funcnet.tasks.Task.standardize`: ratings,
      whose inputs are indices): none.
    info: further JSON facts kept in ``meta.json`` (``n_users``...).

  Returns:
    The ``meta.json`` dict.

  Everything is written into ``dst + ".tmp-<pid>"``, which is renamed to
  ``dst`` only when complete, so ``dst`` is either absent or whole.

  Raises:
    DataError: ``dst`` exists and is not an empty folder; chunks of
      mismatched shapes or dtypes, or no training examples.
  """
  dst = os.path.normpath(os.fspath(dst))
  _check_dst(dst)
  if sorted(splits) != sorted(SPLITS):
    raise DataError(f"splits {sorted(splits)}; expected exactly "
                    f"{list(SPLITS)}")
  if stats_from not in ("train", None):
    raise ConfigError(f"stats_from={stats_from!r}; expected 'train' or None")
  if shard_rows is not None and (isinstance(shard_rows, bool) or int(shard_rows)
                                 != shard_rows or shard_rows < 1):
    raise ConfigError(f"shard_rows={shard_rows!r}; expected a positive integer")
  _array_record()  # the one-line error before anything is created
  tmp = f"{dst}.tmp-{os.getpid()}"
  if os.path.lexists(tmp):
    shutil.rmtree(tmp)           # left by an earlier process of the same pid
  os.makedirs(tmp)
  try:
    meta = _write_into(tmp, splits, name, task, n_classes, shard_rows,
                       stats_from if tasks.get(task).standardize else None,
                       info or {})
    for f in os.listdir(tmp):
      _fsync(os.path.join(tmp, f))
    _check_dst(dst)              # in case another process made it meanwhile
    try:
      os.replace(tmp, dst)
    except OSError as e:         # made non-empty between the check and here
      raise DataError(f"shards destination {dst} could not be replaced "
                      f"({e.strerror}); expected a new folder") from None
    _fsync(os.path.dirname(os.path.abspath(dst)))
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return meta


def _write_into(folder, splits, name, task, n_classes, shard_rows, stats_from,
                info) -> dict:
  want = None
  moments = _Moments() if stats_from == "train" else None
  out = {}
  for split in SPLITS:
    writer = None
    try:
      for k, (x, y) in enumerate(splits[split]):
        x, y = np.asarray(x), np.asarray(y)
        want = _check_chunk(split, k, x, y, want)
        if writer is None:
          rec = _record_dtype(*want)
          rows = shard_rows or max(1, SHARD_BYTES // rec.itemsize)
          writer = _SplitWriter(folder, split, rows,
                                rec, moments if split == "train" else None)
        writer.add(x, y)
    except BaseException:
      if writer is not None:
        writer.close_shard()     # before the caller removes the folder
      raise
    if writer is None:
      out[split] = {"n": 0, "shards": [], "shard_rows": [],
                    "shard_bytes": []}
    else:
      names = writer.finish()
      out[split] = {"n": writer.n, "shards": names,
                    "shard_rows": writer.counts,
                    "shard_bytes": [os.path.getsize(os.path.join(folder, f))
                                    for f in names]}
  if out["train"]["n"] == 0:
    raise DataError(f"dataset {name!r} has no training examples; expected at "
                    "least one")
  x_shape, x_dtype, y_shape, y_dtype = want
  stats = None
  if moments is not None:
    mean, std = moments.mean_std()
    with open(os.path.join(folder, "stats.npz"), "wb") as f:
      np.savez(f, mean=mean, std=std)
    stats = {"file": "stats.npz", "from": "train"}
  rec = _record_dtype(*want)
  meta = {
      "format": FORMAT, "name": name, "task": task,
      "n_classes": None if n_classes is None else int(n_classes),
      "x_shape": list(x_shape), "x_dtype": x_dtype.str,
      "y_shape": list(y_shape), "y_dtype": y_dtype.str,
      "record_bytes": rec.itemsize, "writer_options": WRITER_OPTIONS,
      "splits": out, "stats": stats, "info": info,
  }
  meta["bytes"] = sum(sum(out[s]["shard_bytes"]) for s in SPLITS)
  with open(os.path.join(folder, "meta.json"), "w") as f:
    json.dump(meta, f, indent=1)
    f.write("\n")
  return meta


def _chunks(x, y, rows):
  """``(x, y)`` in slices of ``rows`` examples (views, no copies)."""
  for i in range(0, len(x), rows):
    yield x[i:i + rows], y[i:i + rows]


def _json_info(info) -> dict:
  """The facts of ``info`` that JSON holds exactly (ints, strings, lists of
  them); arrays (MNIST-1D's sample grid) and paths of the source are left."""
  keep = {}
  for k, v in info.items():
    if k in ("path", "cache"):
      continue
    if isinstance(v, (bool, int, str)) or (
        isinstance(v, list) and all(isinstance(a, (int, str)) for a in v)):
      keep[k] = v
  return keep


# Rows handed to write() at a time by convert(): the source is in memory
# already, so this only bounds the write buffer.
_CONVERT_CHUNK = 65536


def convert(src, dst, *, seed: int = 0, label: str = "label",
            task: str = "classification",
            shard_rows: Optional[int] = None) -> dict:
  """Any dataset :func:`funcnet.data.load` loads, written by :func:`write`.

  ``src`` is a registered name (``digits``, ``mnist1d``...) or an ``.npz``
  / ``.csv`` path; ``seed`` fixes the split as ``funcnet.data.load`` does
  (the config's ``data.seed``), ``label`` and ``task`` are a file's options.
  The raw (unstandardised) inputs are stored in their loaded dtype, labels
  and targets as loaded (int32 labels, float32 targets).

  Raises:
    DataError: ``dst`` exists and is not an empty folder (checked first,
      so nothing is loaded); a file that cannot be used.
    UnknownNameError: an unknown dataset name.
  """
  from funcnet import data
  _check_dst(os.path.normpath(os.fspath(dst)))
  if isinstance(src, str) and src in data.DATASETS:
    ds = data.load(src, seed=seed)
  else:
    ds = data.load(src, seed=seed, label=label, task=task)
  splits = {"train": _chunks(ds.x_train, ds.y_train, _CONVERT_CHUNK),
            "test": _chunks(ds.x_test, ds.y_test, _CONVERT_CHUNK)}
  return write(dst, splits, name=ds.name, task=ds.task, n_classes=ds.n_classes,
               shard_rows=shard_rows, info=_json_info(ds.info))


def teacher(seed: int, n_features: int, n_classes: int) -> np.ndarray:
  """``W (n_features, n_classes)`` float64 of :func:`generate`:
  ``np.random.default_rng([seed, 0]).standard_normal((D, K))``."""
  return np.random.default_rng([seed, 0]).standard_normal(
      (n_features, n_classes))


def generate(dst, n_train: int, n_test: int, x_shape, n_classes: int,
             seed: int = 0, chunk_rows: int = 8192,
             shard_rows: Optional[int] = None) -> dict:
  """A synthetic classification set from a linear teacher, written by
  :func:`write` one chunk at a time (never whole in memory).

  With ``D = prod(x_shape)`` and ``W = teacher(seed, D, K)``
  (``default_rng([seed, 0]).standard_normal((D, K))``)::

    x ~ N(0, 1)                      float32, drawn from default_rng([seed, 1])
                                     (train) and default_rng([seed, 2]) (test)
                                     with standard_normal(dtype=np.float32)
    y = argmax(x.reshape(-1, D) @ W)  int32, the product in float64

  Rows are drawn in order from one stream per split, so the set does not
  depend on ``chunk_rows``, which bounds the memory: about 40 bytes per
  number of a chunk (the float32 draw, its float64 copies for the product
  and the statistics, the packed records), 80 MB for the default 8192 rows
  of 256 numbers. Measured: 10^6 x 256 (1.1 GB of shards) written with a
  peak RSS of 150 MB, the interpreter and numpy included.
  """
  x_shape = tuple(int(d) for d in x_shape)
  d = math.prod(x_shape)
  w = teacher(seed, d, n_classes)

  def chunks(n, stream):
    rng = np.random.default_rng([seed, stream])
    for start in range(0, n, chunk_rows):
      k = min(chunk_rows, n - start)
      x = rng.standard_normal((k, d), dtype=np.float32)
      y = np.argmax(x.astype(np.float64) @ w, axis=1).astype(np.int32)
      yield x.reshape(k, *x_shape), y

  return write(dst, {"train": chunks(n_train, 1), "test": chunks(n_test, 2)},
               name="teacher", task="classification", n_classes=n_classes,
               shard_rows=shard_rows,
               info={"generator": "linear teacher", "seed": int(seed)})


# --- reading -----------------------------------------------------------------

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
      self._rec = _record_dtype(self.x_shape, self.x_dtype, self.y_shape,
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
      ar = _array_record()
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


# --- host-side prefetch ------------------------------------------------------

class Prefetcher:
  """``fn(item)`` for each of ``items``, computed on ``threads`` threads
  ahead of the consumer, yielded in the order of ``items``.

  At most ``depth`` results are computed or waiting beyond the one the
  consumer holds, so memory is bounded by ``depth + 1`` results. ``items``
  is consumed lazily (an endless generator is fine). An exception raised by
  ``fn`` is re-raised, the same object, where its result would have been
  yielded, and stops the prefetcher. :meth:`close` (also on leaving a
  ``with`` block, or a ``for`` loop's ``break`` followed by garbage
  collection) cancels what has not started and waits for what has.

  ``threads`` above ``depth`` would wait idle: give ``depth >= threads``.
  Threads suffice: the work is reading files and numpy copies, which
  release the GIL for most of their time, and the results need no
  pickling.
  """

  def __init__(self, fn: Callable, items: Iterable, depth: int = 2,
               threads: int = 1):
    if depth < 1 or threads < 1:
      raise ConfigError(f"Prefetcher depth={depth}, threads={threads}; "
                        "expected both >= 1")
    self._fn, self._items = fn, iter(items)
    self._depth = depth
    self._pool = concurrent.futures.ThreadPoolExecutor(
        threads, thread_name_prefix="funcnet-prefetch")
    self._ahead = collections.deque()
    self._closed = False

  def _fill(self) -> None:
    while len(self._ahead) < self._depth:
      try:
        item = next(self._items)
      except StopIteration:
        return
      self._ahead.append(self._pool.submit(self._fn, item))

  def __iter__(self):
    return self

  def __next__(self):
    if self._closed:
      raise StopIteration
    self._fill()
    if not self._ahead:
      self.close()
      raise StopIteration
    head = self._ahead.popleft()
    self._fill()               # keep depth in flight while the consumer works
    try:
      return head.result()
    except BaseException:
      self.close()
      raise

  def close(self) -> None:
    """Stops: pending items are cancelled, running ones finish first."""
    if self._closed:
      return
    self._closed = True
    for f in self._ahead:
      f.cancel()
    self._ahead.clear()
    self._pool.shutdown(wait=True, cancel_futures=True)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def __del__(self):
    # Not during interpreter teardown, when the pool's module may be gone.
    if not getattr(self, "_closed", True):
      self._pool.shutdown(wait=False, cancel_futures=True)
