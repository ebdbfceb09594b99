"""Datasets as named tuples of numpy arrays, and the loaders that make them.

A dataset is a :class:`Dataset` ``(x_train, y_train, x_test, y_test, task,
n_classes, name, info)``. Its arrays depend on ``task``:

  ``"classification"``  x ``(m, *in_shape)`` float32, y ``(m,)`` int32 labels
                        in ``[0, n_classes)``
  ``"regression"``      x ``(m, *in_shape)`` float32, y ``(m, k)`` float32,
                        ``n_classes`` is ``None``
  ``"ratings"``         x ``(m, 2)`` int32 ``(user, item)`` indices, y ``(m,)``
                        float32 ratings; ``info["n_users"]`` and
                        ``info["n_items"]`` give the index ranges

``info`` is a dict of further facts (generating noise, standardisation
statistics, true parameters of generated data); ``m`` differs between the
train and test splits.

Every loader is deterministic: the ones that draw anything take an explicit
integer ``seed`` and use ``np.random.default_rng(seed)`` only, never numpy's
global state. None of them downloads anything. The built-in sets register
themselves (:mod:`funcnet.data.registry`: name, loader, task, one line
each; ``DATASETS`` here is that registry); ``from_file()`` reads a user's
own ``.npz`` or ``.csv``.

Subsets for fine-tuning studies: ``select_classes(ds, classes)`` keeps some
classes (relabelled ``0..k-1``), ``few_per_class(ds, n, seed)`` keeps ``n``
training examples of each.

``load(name_or_path)`` picks one by registered name (:data:`DATASETS`) or by
path. Files are never unpickled: every ``.npz`` is read with
``allow_pickle=False``, and a bad file raises :class:`DataError` with one
line naming the file and the problem.

Where each part lives (every public name is re-exported here, so
``funcnet.data.X`` is the way to reach it):

  ``registry.py``    :class:`~funcnet.data.registry.Source`, ``DATASETS``,
                     ``names``, ``valid_range``: the built-in sets (a raw input range)
  ``dataset.py``     :class:`Dataset`, ``in_shape``,
                     ``n_features``, ``n_outputs``, ``spec`` (what model
                     builders read), ``summary``, ``split_indices``
  ``generated.py``   ``xor``, ``spirals``, ``moons``, ``regression``,
                     ``ratings``
  ``bundled.py``     ``digits``, ``mnist1d`` and its cache (in
                     :func:`funcnet.paths.cache_root`)
  ``files.py``       ``from_file``
  ``transforms.py``  ``standardize``, ``select_classes``, ``few_per_class``
  ``text.py``, ``tokenize.py``, ``text_file.py``, ``text_folder.py``:
                     text for language models (task ``language``: x
                     ``(m, T)`` int32 token ids, y ``(m, T)`` the next ids)
  ``shards.py``, ``shard_writer.py``, ``prefetch.py``, ``streamed.py``:
                     datasets larger than memory, on disk
  this file          ``load``
"""

import importlib
import inspect
import os
import pkgutil

# In this order, the order of the sets in config.py's doc line; then any
# other module in the folder (a new one registers its sets when imported).
from funcnet.data.registry import DATASETS, names, valid_range
from funcnet.data.generated import moons, ratings, regression, spirals, xor
from funcnet.data.bundled import digits, mnist1d
from funcnet.data.dataset import (Dataset, in_shape, n_features,
                                  n_outputs, spec, split_indices, summary)
from funcnet.data.files import from_file
from funcnet.data.transforms import (few_per_class, hold_out, select_classes,
                                     standardize)
from funcnet.errors import ConfigError, unknown

for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f"{__name__}.{_module.name}")

# load() takes a flag named standardize, which hides the function there.
_standardize = standardize


def _looks_like_path(name) -> bool:
  s = os.fspath(name)
  return bool(os.path.splitext(s)[1]) or os.sep in s or "/" in s


def _loader(name_or_path):
  """``(loader, what, kwargs)``: the loader of a registered name, a token
  folder or a file, how messages name it, and the arguments it gets from
  the name."""
  from funcnet.data import text, text_folder
  if isinstance(name_or_path, str) and name_or_path in DATASETS:
    return DATASETS[name_or_path].load, repr(name_or_path), {}
  if text_folder.is_folder(name_or_path):
    return text.from_folder, "from a token folder", {"path": name_or_path}
  if isinstance(name_or_path, os.PathLike) or (
      isinstance(name_or_path, str) and _looks_like_path(name_or_path)):
    return from_file, "from a file", {"path": name_or_path}
  raise unknown("dataset", name_or_path, DATASETS)


def options(name_or_path, table: dict) -> dict:
  """The entries of ``table`` (a config's ``[data]``) that the loader of
  ``name_or_path`` takes as options: a file's ``label`` and ``task``,
  the text's ``path``, ``block_size``, ... (not ``seed``, which
  :func:`load` passes itself, nor what the name gives)."""
  loader, _, given = _loader(name_or_path)
  params = inspect.signature(loader).parameters
  return {k: v for k, v in table.items()
          if k in params and k not in given and k not in ("seed", "name")}


def load(name_or_path, *, seed: int = 0, standardize: bool = True,
         **kwargs) -> Dataset:
  """A dataset by registered name (:data:`DATASETS`), token folder or file
  path.

  ``seed`` goes to every loader that draws anything (``xor`` and ``mnist1d``
  do not); ``kwargs`` are the loader's own options (for a file:
  ``label``, ``task``, ``test_fraction``; :func:`options` picks them from
  a config). By default the inputs are
  standardised (:func:`standardize`: mean 0, std 1 per feature, with the
  training split's statistics), as ``funcnet train`` does
  (``data.standardize``) and as the README says; a task whose inputs are
  ids (ratings, text) is left as it is. ``standardize=False`` gives the raw
  inputs (digits' 0-16 pixel values).

  Raises:
    UnknownNameError: a name that is neither registered nor a path.
    ConfigError: an option the loader does not take.
    DataError: a file that cannot be used.
  """
  loader, what, given = _loader(name_or_path)
  kwargs = {**given, **kwargs}
  params = inspect.signature(loader).parameters
  for k in kwargs:
    if k not in params:
      takes = [p for p in params if p not in ("seed", "path")]
      raise ConfigError(
          f"dataset {what} takes no option {k!r}; expected one of: "
          f"{', '.join(takes) or '(none)'}")
  if "seed" in params:
    kwargs["seed"] = seed
  ds = loader(**kwargs)
  return _standardize(ds) if standardize else ds


__all__ = [
    "DATASETS", "Dataset", "digits", "few_per_class", "from_file", "hold_out",
    "in_shape", "load", "mnist1d", "moons", "n_features", "n_outputs",
    "names", "options", "ratings", "regression", "select_classes", "spec", "spirals",
    "split_indices", "standardize", "summary", "xor",
]
