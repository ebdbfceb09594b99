"""Writing the shards format (:mod:`funcnet.data.shards`): one streaming
pass, atomic.

  write(dst, {"train": chunks, "test": chunks}, name=..., task=...,
        n_classes=...) -> meta      one streaming pass, atomic
  convert(src, dst)                 anything funcnet.data.load loads -> write()
  generate(dst, ...)                a synthetic set, any size -> write()
  need(n_train, n_test, ...)        generate's disk and memory, from sizes

Nothing half-written stays: everything goes into ``DST.tmp-<pid>``,
renamed to ``DST`` when whole, and an error, a full disk (an ``OSError``
naming the file: ``funcnet data`` prints one line and exits 2), SIGTERM or
SIGINT (``errors.Preempted``, exit 75 or 130, as ``funcnet train``)
removes it. ``generate`` refuses, in one line and before allocating or
writing anything, a set larger than the free disk or a chunk larger than
the free memory.

The inputs are stored raw, in the dtype they were loaded in; the training
statistics are computed while writing, in float64 (:class:`_Moments`), and
``Shards.read`` applies them exactly as :func:`funcnet.data.standardize`
does, so a standardised read equals the in-memory path given the same
statistics, bit for bit.
"""

import contextlib
import errno
import json
import math
import os
import re
import shutil
import signal
import threading
from typing import Optional

import numpy as np

from funcnet import paths, tasks
from funcnet.data.shards import (FORMAT, SPLITS, WRITER_OPTIONS,
                                 array_record, record_dtype, shard_name)
from funcnet.errors import (SIGNAL_EXIT_CODES, ConfigError, DataError,
                            Preempted)

# A shard's size when shard_rows is not given: large enough that a dataset
# of a few hundred GB is a few thousand files, small enough that copying one
# to a host (or a bucket) is quick. TFDS aims at 100-200 MB too.
SHARD_BYTES = 128 * 2**20


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

# The OS's words for each errno ("File too large": EFBIG), to read them back
# out of ArrayRecord's messages.
_ERRNO = {os.strerror(n): n for n in errno.errorcode}


@contextlib.contextmanager
def _writing(path: str):
  """A failed write becomes an ``OSError`` naming ``path``, which the
  command prints as one line (``cli._os_error``, exit 2).

  The OS's error for a failed ``write()`` carries no file name, and
  ArrayRecord's C++ writer reports one as ``RuntimeError("write() failed:
  File too large; writing PATH; at byte N; ...")``: the reason is read back
  out of that (its errno too, when the words are the OS's).
  """
  try:
    yield
  except OSError as e:
    if e.filename is None:
      raise OSError(e.errno, e.strerror or str(e), path) from None
    raise
  except RuntimeError as e:
    found = re.search(r"failed: ([^;]+)", str(e))
    reason = found.group(1).strip() if found else str(e)
    raise OSError(_ERRNO.get(reason), reason, path) from None


@contextlib.contextmanager
def _stop_on_signals(dst: str):
  """While inside, SIGTERM and SIGINT raise :class:`Preempted` (exit 75 or
  130, as ``funcnet train``'s) where the writing is, so :func:`write`'s
  cleanup removes the temporary folder before the command exits; without
  this SIGTERM would end the process and leave it behind.

  The first signal puts the default actions back, so a second one ends the
  process at once (as in :mod:`funcnet.run.preemption`). Only the main
  thread can install handlers; elsewhere this is inert.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  signals = (signal.SIGTERM, signal.SIGINT)

  def stop(signum, frame):
    del frame
    for s in signals:
      signal.signal(s, signal.SIG_DFL)
    name = signal.Signals(signum).name
    raise Preempted(f"{name}: {dst} was not written (its partial folder is "
                    "removed)", SIGNAL_EXIT_CODES[name])

  before = {s: signal.signal(s, stop) for s in signals}
  try:
    yield
  finally:
    for s, handler in before.items():
      signal.signal(s, handler)

def _check_dst(dst: str) -> None:
  if os.path.lexists(dst) and not (os.path.isdir(dst) and not os.listdir(dst)):
    raise DataError(f"shards destination {dst} already exists; expected a new "
                    "folder (or an empty one)")


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

  def __init__(self, folder, split, shard_rows, rec, moments):
    self.folder, self.split = folder, split
    self.shard_rows, self.rec = shard_rows, rec
    self.moments = moments
    self.n = 0
    self.counts = []           # records per shard
    self.writer = None

  def _path(self, i: int) -> str:
    return os.path.join(self.folder, f"{self.split}-{i:05d}.partial")

  def _open_next(self):
    ar = array_record()
    path = self._path(len(self.counts))
    with _writing(path):
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
      with _writing(self._path(len(self.counts) - 1)):
        self.writer.write(buf[i * size:(i + 1) * size])
      self.counts[-1] += 1
    self.n += len(x)

  def close_shard(self):
    if self.writer is not None:
      writer, self.writer = self.writer, None
      with _writing(self._path(len(self.counts) - 1)):
        writer.close()       # flushes: a full disk may show only here

  def abandon(self):
    """Closes the open shard, whatever it says: the folder is about to be
    removed, and a second error (the same full disk) would only hide the
    first."""
    if self.writer is not None:
      writer, self.writer = self.writer, None
      with contextlib.suppress(Exception):
        writer.close()

  def finish(self) -> list:
    """Closes the last shard and gives each its final name; returns them."""
    self.close_shard()
    names = []
    for i in range(len(self.counts)):
      name = shard_name(self.split, i, len(self.counts))
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
  ``dst`` only when complete, so ``dst`` is either absent or whole. The
  temporary folder is removed when anything stops the writing: an error,
  a full disk (an ``OSError`` naming the file), SIGTERM or SIGINT
  (:class:`funcnet.errors.Preempted`, exit 75 or 130).

  Raises:
    DataError: ``dst`` exists and is not an empty folder; chunks of
      mismatched shapes or dtypes, or no training examples.
    OSError: a write failed (a full disk); its ``filename`` is the file.
    Preempted: SIGTERM or SIGINT arrived while writing (main thread only).
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
  array_record()  # the one-line error before anything is created
  tmp = f"{dst}.tmp-{os.getpid()}"
  if os.path.lexists(tmp):
    shutil.rmtree(tmp)           # left by an earlier process of the same pid
  with _stop_on_signals(dst):
    os.makedirs(tmp)
    try:
      meta = _write_into(tmp, splits, name, task, n_classes, shard_rows,
                         stats_from if tasks.get(task).standardize else None,
                         info or {})
      for f in os.listdir(tmp):
        _fsync(os.path.join(tmp, f))
      _check_dst(dst)            # in case another process made it meanwhile
      try:
        os.replace(tmp, dst)
      except OSError as e:       # made non-empty between the check and here
        raise DataError(f"shards destination {dst} could not be replaced "
                        f"({e.strerror}); expected a new folder") from None
    except BaseException:        # a full disk, a signal, a bad chunk
      shutil.rmtree(tmp, ignore_errors=True)
      raise
  _fsync(os.path.dirname(os.path.abspath(dst)))
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
          rec = record_dtype(*want)
          rows = shard_rows or max(1, SHARD_BYTES // rec.itemsize)
          writer = _SplitWriter(folder, split, rows,
                                rec, moments if split == "train" else None)
        writer.add(x, y)
    except BaseException:
      if writer is not None:
        writer.abandon()         # before the caller removes the folder
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
    path = os.path.join(folder, "stats.npz")
    with _writing(path), open(path, "wb") as f:
      np.savez(f, mean=mean, std=std)
    stats = {"file": "stats.npz", "from": "train"}
  rec = record_dtype(*want)
  meta = {
      "format": FORMAT, "name": name, "task": task,
      "n_classes": None if n_classes is None else int(n_classes),
      "x_shape": list(x_shape), "x_dtype": x_dtype.str,
      "y_shape": list(y_shape), "y_dtype": y_dtype.str,
      "record_bytes": rec.itemsize, "writer_options": WRITER_OPTIONS,
      "splits": out, "stats": stats, "info": info,
  }
  meta["bytes"] = sum(sum(out[s]["shard_bytes"]) for s in SPLITS)
  path = os.path.join(folder, "meta.json")
  with _writing(path), open(path, "w") as f:
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
    ds = data.load(src, seed=seed, standardize=False)
  else:
    ds = data.load(src, seed=seed, label=label, task=task,
                   standardize=False)
  splits = {"train": _chunks(ds.x_train, ds.y_train, _CONVERT_CHUNK),
            "test": _chunks(ds.x_test, ds.y_test, _CONVERT_CHUNK)}
  return write(dst, splits, name=ds.name, task=ds.task, n_classes=ds.n_classes,
               shard_rows=shard_rows, info=_json_info(ds.info))


# ArrayRecord's bytes per record beyond its own with group_size:1 (each
# record its own chunk, with a header): 54-80 measured here on records of
# 8 to 16,388 bytes. 48 keeps the disk estimate a lower bound.
_RECORD_OVERHEAD = 48

# Bytes of memory per number of a chunk of generate(): the float32 draw, its
# float64 copies for the product and the statistics, the packed records
# (generate's docstring has the measurement).
_CHUNK_BYTES_PER_NUMBER = 40


def need(n_train: int, n_test: int, n_features: int, n_classes: int,
         chunk_rows: int) -> dict:
  """What :func:`generate` needs, from the sizes alone: ``{"disk": bytes,
  "memory": bytes}``.

  disk    ``(n_train + n_test) x (4 n_features + 4 + 48)``: each
          example's float32 inputs and int32 label, packed, and
          ArrayRecord's header (54-80 bytes measured, and each file padded:
          a lower bound)
  memory  a chunk, ``40 x min(chunk_rows, n) x n_features`` bytes, and the
          float64 teacher ``W``, ``8 x n_features x n_classes``
  """
  rows = min(chunk_rows, max(n_train, n_test))
  return {"disk": (n_train + n_test) * (4 * n_features + 4 + _RECORD_OVERHEAD),
          "memory": (_CHUNK_BYTES_PER_NUMBER * rows * n_features
                     + 8 * n_features * n_classes)}


def _check_room(dst, n_train, n_test, n_features, n_classes, chunk_rows):
  """Refuses, in one line and before anything is allocated or written, a
  set that cannot fit on the disk under ``dst`` or a chunk that cannot fit
  in memory (1e12 examples of 100,000 numbers once ran for 75 s and took
  15.6 GB before anything stopped it)."""
  want = need(n_train, n_test, n_features, n_classes, chunk_rows)
  size = f"{n_train + n_test:,} examples of {n_features:,} float32 numbers"
  free = paths.free_disk(os.path.dirname(os.path.abspath(os.fspath(dst))))
  if free is not None and want["disk"] > free:
    raise ConfigError(
        f"{size} need at least "
        f"{paths.human(want['disk'])} on disk; the filesystem of {dst} has "
        f"{paths.human(free)} free; expected fewer examples (--train, "
        "--test) or a smaller --shape")
  memory, where = paths.host_memory()
  if memory is not None and want["memory"] > memory:
    rows = min(chunk_rows, max(n_train, n_test))
    raise ConfigError(
        f"generating chunks of {rows:,} examples of "
        f"{n_features:,} numbers and the {n_features:,} x {n_classes} teacher "
        f"need about {paths.human(want['memory'])} of memory; {where} has "
        f"{paths.human(memory)} available; expected a smaller --chunk-rows "
        "or --shape")


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
  _check_room(dst, n_train, n_test, d, n_classes, chunk_rows)
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


