"""The :class:`Dataset` named tuple, the facts a training loop reads off it,
and the seeded train/test split every loader shares.

The arrays of each task are listed in the :mod:`funcnet.data` docstring.
"""

import math
import types
from typing import NamedTuple, Optional

import numpy as np

from funcnet import tasks
from funcnet.errors import ConfigError


class Dataset(NamedTuple):
  """Train and test arrays with what they mean (shapes in the
  :mod:`funcnet.data` docstring).

  Attributes:
    x_train, y_train: the training split.
    x_test, y_test: the test split.
    task: a :mod:`funcnet.tasks` name.
    n_classes: the number of classes of a task with classes, else ``None``.
    name: the registered name, or the file name for :func:`from_file`.
    info: further facts as a dict (read-only when empty).
  """
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  task: str
  n_classes: Optional[int]
  name: str
  # A read-only empty mapping, so the shared default cannot be mutated.
  info: dict = types.MappingProxyType({})


# --- helpers the training loop uses -----------------------------------------

def in_shape(ds: Dataset) -> tuple:
  """The shape of one input example, e.g. ``(64,)`` for digits."""
  return tuple(ds.x_train.shape[1:])


def n_features(ds: Dataset) -> int:
  """The number of input numbers per example (the product of ``in_shape``)."""
  return math.prod(in_shape(ds))


def n_outputs(ds: Dataset, loss=None) -> int:
  """The model output width the task needs (trained with the loss named
  ``loss``): classes, target columns, or 1 (:mod:`funcnet.tasks`)."""
  return tasks.get(ds.task).n_outputs(ds.n_classes, tuple(ds.y_train.shape[1:]),
                                      loss)


def spec(ds: Dataset, n_out: Optional[int] = None):
  """The :class:`funcnet.model.DataSpec` model builders read: ``ds``'s input
  shape and dtype, ``n_out`` outputs (default :func:`n_outputs`), its id
  ranges and mean target where it has them."""
  from funcnet.model import DataSpec  # JAX only for a caller that builds
  in_memory = isinstance(ds.y_train, np.ndarray)
  return DataSpec(
      name=ds.name, task=ds.task, in_shape=in_shape(ds),
      x_dtype=np.dtype(ds.x_train.dtype).name,
      n_out=n_outputs(ds) if n_out is None else n_out,
      n_users=ds.info.get("n_users"), n_items=ds.info.get("n_items"),
      target_mean=float(np.mean(ds.y_train)) if in_memory else None)


def summary(ds: Dataset) -> str:
  """One line describing ``ds``, for logs."""
  what = tasks.get(ds.task).describe(ds.n_classes, n_outputs(ds), ds.info)
  return (f"{ds.name}: {ds.task}, {len(ds.y_train)} train / "
          f"{len(ds.y_test)} test, inputs {in_shape(ds)}, {what}")


# --- splitting ----------------------------------------------------------------

def split_indices(m: int, test_fraction: float, rng, labels=None):
  """Shuffled ``(train, test)`` index arrays of a ``m``-example set.

  ``ceil(test_fraction * m)`` examples go to test (scikit-learn's rule). With
  ``labels`` the split is stratified: each class gives the test set its share
  ``n_test * count / m``, rounded down, and the examples left over go to the
  classes with the largest remainders, so every class is within one example
  of its exact proportion in both splits.
  """
  n_test = math.ceil(test_fraction * m)
  if labels is None:
    perm = rng.permutation(m)
    return perm[n_test:], perm[:n_test]
  _, inverse, counts = np.unique(labels, return_inverse=True,
                                 return_counts=True)
  quota = n_test * counts / m
  take = np.floor(quota).astype(int)
  left = n_test - take.sum()
  # Stable sort so ties go to the lower class, whatever the rng.
  take[np.argsort(-(quota - take), kind="stable")[:left]] += 1
  train, test = [], []
  for c, k in enumerate(take):
    idx = rng.permutation(np.flatnonzero(inverse == c))
    test.append(idx[:k])
    train.append(idx[k:])
  # Interleave the classes; a per-class order would feed batches one class
  # at a time to anyone who forgets to shuffle.
  train, test = np.concatenate(train), np.concatenate(test)
  return rng.permutation(train), rng.permutation(test)


def _split(name, x, y, task, n_classes, info, test_fraction, rng):
  _check_fraction(name, "test_fraction", test_fraction)
  train, test = split_indices(
      len(y), test_fraction, rng, y if tasks.get(task).classes else None)
  return Dataset(x[train], y[train], x[test], y[test], task, n_classes, name,
                 info)


def _check_fraction(name, key, value):
  if not 0 < value < 1:
    raise ConfigError(f"dataset {name!r}: {key}={value!r}; expected a number "
                      f"strictly between 0 and 1")
