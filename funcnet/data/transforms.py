"""Transforms of a :class:`Dataset` into another: inputs standardised with
the training split's statistics, the subsets of fine-tuning studies
(some classes relabelled ``0..k-1``, a few training examples per class),
and a validation split carved from training (:func:`hold_out`).
"""

import numpy as np

from funcnet import tasks
from funcnet.data.dataset import Dataset
from funcnet.errors import ConfigError


# --- standardisation ----------------------------------------------------------

def standardize(ds: Dataset, stats=None) -> Dataset:
  """``ds`` with inputs shifted and scaled to mean 0, std 1 per feature.

  ``mean`` and ``std`` (each of shape ``in_shape``) come from the training
  split only, so nothing about the test set leaks into training; a feature
  constant in training has ``std`` taken as 1. Both are recorded in
  ``info["mean"]`` and ``info["std"]``, and applied as
  ``(x - mean) / std`` to both splits.

  ``stats = (mean, std)`` applies given statistics instead (a fine-tuned
  model must see its inputs scaled as the pre-trained one did, not by a
  few labelled examples' own statistics).

  A dataset whose task does not standardise (ratings, whose inputs are
  indices: :attr:`funcnet.tasks.Task.standardize`) and an already
  standardised one are returned unchanged.
  """
  if not tasks.get(ds.task).standardize or "mean" in ds.info:
    return ds
  if stats is not None:
    mean, std = (np.asarray(a, np.float64) for a in stats)
  else:
    x = ds.x_train.astype(np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
  scale = lambda a: ((a - mean) / std).astype(np.float32)
  info = {**ds.info, "mean": mean.astype(np.float32),
          "std": std.astype(np.float32)}
  if "test" in info:  # hold_out's test split, kept for the final numbers
    info["test"] = (scale(info["test"][0]), info["test"][1])
  return ds._replace(x_train=scale(ds.x_train), x_test=scale(ds.x_test),
                     info=info)


# --- subsets: some classes, few labels ---------------------------------------

def select_classes(ds: Dataset, classes) -> Dataset:
  """Only the examples whose label is in ``classes``, relabelled.

  Label ``classes[j]`` becomes ``j`` in both splits, so ``[5, 6, 7, 8, 9]``
  maps 5..9 to 0..4 and ``n_classes`` becomes ``len(classes)``. Example
  order is kept. ``info["classes"]`` records the original labels.

  Raises:
    ConfigError: data without classes (:attr:`funcnet.tasks.Task.classes`),
      or ``classes`` empty, of one class, with repeats, or naming a label
      outside ``[0, n_classes)``.
  """
  classes = list(classes)
  if not tasks.get(ds.task).classes:
    raise ConfigError(f"config key 'data.classes' selects classes; dataset "
                      f"{ds.name!r} is {ds.task}; expected [] for it")
  if not classes or len(set(classes)) != len(classes) or not all(
      isinstance(c, (int, np.integer)) and not isinstance(c, bool)
      and 0 <= c < ds.n_classes for c in classes):
    raise ConfigError(f"config key 'data.classes' = {classes!r}; expected "
                      f"distinct labels of {ds.name!r} in 0..{ds.n_classes - 1}")
  if len(classes) < 2:  # a classifier of one class learns nothing
    raise ConfigError(f"config key 'data.classes' = {classes!r} keeps one "
                      "class; expected at least two (or [] for all)")
  # lookup[label] = new label, or -1 for a class left out.
  lookup = np.full(ds.n_classes, -1, np.int32)
  lookup[classes] = np.arange(len(classes), dtype=np.int32)
  keep_train = lookup[ds.y_train] >= 0
  keep_test = lookup[ds.y_test] >= 0
  return ds._replace(
      x_train=ds.x_train[keep_train], y_train=lookup[ds.y_train[keep_train]],
      x_test=ds.x_test[keep_test], y_test=lookup[ds.y_test[keep_test]],
      n_classes=len(classes),
      info={**ds.info, "classes": [int(c) for c in classes]})


def few_per_class(ds: Dataset, n: int, seed: int = 0) -> Dataset:
  """At most ``n`` training examples of each class; the test split unchanged.

  With ``order = default_rng(seed).permutation(m)`` over the ``m`` training
  examples, class ``c`` keeps the first ``n`` entries of ``order`` whose label
  is ``c`` (all of them when it has fewer). The kept examples stay in their
  original relative order.
  """
  if not tasks.get(ds.task).classes:
    raise ConfigError(f"config key 'data.train_per_class' needs "
                      f"classification data; {ds.name!r} is {ds.task}")
  order = np.random.default_rng(seed).permutation(len(ds.y_train))
  keep = np.sort(np.concatenate(
      [order[ds.y_train[order] == c][:n] for c in range(ds.n_classes)]))
  return ds._replace(x_train=ds.x_train[keep], y_train=ds.y_train[keep])


# --- a validation split carved from training ----------------------------------

def hold_out(ds: Dataset, fraction: float, seed: int = 0) -> Dataset:
  """``ds`` with a validation split carved from its training split, for
  choices made from data (early stopping, the best rate, the best variant)
  that must not read the test split.

  With ``order = default_rng(seed).permutation(m)`` over the ``m`` training
  examples, the first ``round(fraction * m)`` of ``order`` (at least 1)
  become the held-out split (``x_test``, ``y_test``) and the rest, in their
  original relative order, the training split. The untouched test split
  moves to ``info["test"] = (x_test, y_test)``, read only for the final
  numbers (:func:`standardize` scales it with the training statistics, as
  it does the validation split).
  """
  if not 0.0 < fraction < 1.0:
    raise ConfigError(f"a validation fraction of {fraction!r}; expected "
                      "0 < fraction < 1")
  m = len(ds.y_train)
  n = max(1, int(round(fraction * m)))
  if n >= m:
    raise ConfigError(f"a validation fraction of {fraction!r} leaves no "
                      f"training example of {m}")
  order = np.random.default_rng(seed).permutation(m)
  val, keep = np.sort(order[:n]), np.sort(order[n:])
  return ds._replace(x_train=ds.x_train[keep], y_train=ds.y_train[keep],
                     x_test=ds.x_train[val], y_test=ds.y_train[val],
                     info={**ds.info, "test": (ds.x_test, ds.y_test)})
