"""The :class:`Dataset` named tuple, the facts a training loop reads off it,
and the seeded train/test split every loader shares.

The arrays of each task are listed in the :mod:`funcnet.data` docstring.
"""

import math
import types
from typing import NamedTuple, Optional

import numpy as np

from funcnet.errors import ConfigError

TASKS = ("classification", "regression", "ratings")


class Dataset(NamedTuple):
  """Train and test arrays with what they mean (shapes in the
  :mod:`funcnet.data` docstring).

  Attributes:
    x_train, y_train: the training split.
    x_test, y_test: the test split.
    task: one of :data:`TASKS`.
    n_classes: the number of classes for classification, else ``None``.
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


def n_outputs(ds: Dataset) -> int:
  """The model output width the task needs: classes, target columns, or 1."""
  if ds.task == "classification":
    return ds.n_classes
  if ds.task == "regression":
    return ds.y_train.shape[1]
  return 1


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
  what = {"classification": f"{ds.n_classes} classes",
          "regression": f"{n_outputs(ds)} targets",
          "ratings": (f"{ds.info.get('n_users')} users x "
                      f"{ds.info.get('n_items')} items")}[ds.task]
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
      len(y), test_fraction, rng, y if task == "classification" else None)
  return Dataset(x[train], y[train], x[test], y[test], task, n_classes, name,
                 info)


def _check_fraction(name, key, value):
  if not 0 < value < 1:
    raise ConfigError(f"dataset {name!r}: {key}={value!r}; expected a number "
                      f"strictly between 0 and 1")
