"""A :class:`Dataset` whose training split stays on disk, in shards.

``data.name = DIR`` names a folder written by ``funcnet data convert`` or
``funcnet data generate`` (:mod:`funcnet.data.shards`). :func:`load` gives
a :class:`funcnet.data.Dataset` like any other, except that ``x_train``
and ``y_train`` are :class:`Rows`: their shape and dtype, no values. What
reads them is ``train.fit``, a chunk of steps at a time, each process only
its rows of every batch (:meth:`Rows.read`). The test split is read into
memory (evaluation is one call on all of it, as for every dataset), so it
must fit: keep it to what an evaluation needs.

Every config check, the model builders, the memory pre-flight and the run
folder see the usual fields: ``len(ds.y_train)``, ``ds.x_train.shape``,
``ds.x_train.dtype``, ``ds.info["mean"]``. Anything that would need the
values of the whole split (``np.asarray(ds.x_train)``) is an error naming
what asked, not a silent read of a dataset larger than memory; a reader
that needs it whole (a sweep) asks :func:`in_memory`, which checks the
size first.
"""

import os
from typing import Callable

import numpy as np

from funcnet import tasks, timings
from funcnet.data.dataset import Dataset
from funcnet.errors import DataError

META = "meta.json"
_BLOCK = 4096  # rows standardised at a time


def is_shards(name) -> bool:
  """Whether ``data.name`` is a folder of shards (it holds ``meta.json``;
  a text's token folder, :mod:`funcnet.data.text_folder`, is not: it loads
  through :func:`funcnet.data.load`)."""
  from funcnet.data import text_folder
  return (isinstance(name, str) and os.path.isfile(os.path.join(name, META))
          and not text_folder.is_folder(name))


class Rows:
  """``x_train`` or ``y_train`` of a streamed dataset: shape and dtype only.

  ``read(rows) -> (x, y)`` (set on ``x_train``; the two are read
  together) returns the given training rows, standardised as the dataset
  is. ``np.asarray`` of a Rows is refused: the split may not fit in memory.
  """

  def __init__(self, shape, dtype, read: Callable = None):
    self.shape, self.dtype, self._read = tuple(shape), np.dtype(dtype), read
    self.ndim = len(self.shape)

  def __len__(self) -> int:
    return self.shape[0]

  def read(self, rows):
    return self._read(np.asarray(rows, np.int64))

  def __array__(self, *args, **kwargs):
    raise DataError("the training split is streamed from shards and is not "
                    "held in memory; expected it read by rows (train.fit), "
                    "or an in-memory dataset for this use")


def load(path: str, standardize: bool = True, stats=None) -> Dataset:
  """The shards in ``path`` as a :class:`Dataset` with :class:`Rows`.

  ``standardize``: scale inputs with the statistics stored beside the
  shards (computed in one pass when they were written), or with ``stats =
  (mean, std)`` when given (fine-tuning from a run that saved its own);
  exactly ``((x - mean) / std).astype(float32)``, as
  :func:`funcnet.data.standardize` does in memory.

  Raises:
    DataError: not a folder of shards, or a read that fails.
  """
  from funcnet.data.shards import Shards
  sh = Shards(path)
  mean = std = None
  if standardize and tasks.get(sh.task).standardize:
    mean, std = ((np.asarray(a, np.float64) for a in stats) if stats is not None
                 else (sh.mean, sh.std))

  def read(split, rows):
    timings.count(f"{split}_rows_read", len(rows))
    x, y = sh.read(split, rows, standardize=False)
    if mean is not None:
      # Row blocks: the same bits as the whole at once, but the float64
      # temporaries stay 4096 rows (a chunk's two float64 copies were most
      # of a streamed run's memory above its runtime: docs/performance.md).
      out = np.empty(x.shape, np.float32)
      for i in range(0, len(x), _BLOCK):
        out[i:i + _BLOCK] = (x[i:i + _BLOCK] - mean) / std
      x = out
    return x, y

  x_dtype = np.float32 if mean is not None else sh.x_dtype
  x_test, y_test = read("test", np.arange(sh.n_test, dtype=np.int64))
  info = {"shards": os.path.abspath(path)}
  if mean is not None:
    info.update(mean=mean.astype(np.float32), std=std.astype(np.float32))
  return Dataset(
      x_train=Rows((sh.n_train,) + tuple(sh.x_shape), x_dtype,
                   lambda rows: read("train", rows)),
      y_train=Rows((sh.n_train,) + tuple(sh.y_shape), sh.y_dtype),
      x_test=x_test, y_test=y_test, task=sh.task, n_classes=sh.n_classes,
      name=sh.name, info=info)


def is_streamed(ds) -> bool:
  """Whether ``ds``'s training split is :class:`Rows` (read by ``fit``)."""
  return isinstance(getattr(ds, "x_train", None), Rows)


def in_memory(ds: Dataset, who: str = "a sweep") -> Dataset:
  """``ds`` with its streamed training split read whole into memory.

  The rows are read in order through :meth:`Rows.read`, so they are
  standardised exactly as ``fit`` reads them chunk by chunk (the stored
  statistics, ``((x - mean) / std).astype(float32)``): the arrays equal
  those of the in-memory dataset the shards were written from, bit for
  bit. ``who`` names the reader in the error.

  Raises:
    DataError: the split would take more than half of the host's
      available memory (the rest is the training's own).
  """
  if not is_streamed(ds):
    return ds
  from funcnet import paths
  n = len(ds.y_train)
  nbytes = n * (int(np.prod(ds.x_train.shape[1:])) * ds.x_train.dtype.itemsize
                + int(np.prod(ds.y_train.shape[1:])) * ds.y_train.dtype.itemsize)
  free, where = paths.host_memory()
  if free is not None and nbytes > free // 2:
    raise DataError(
        f"{who} reads its shards' training split into memory, and "
        f"{ds.name!r} takes {paths.human(nbytes)} of the "
        f"{paths.human(free)} {where} has available; expected a split "
        "that fits in half of it, or funcnet train, which streams it")
  x, y = ds.x_train.read(np.arange(n, dtype=np.int64))
  return ds._replace(x_train=x, y_train=y)
