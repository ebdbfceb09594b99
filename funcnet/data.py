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
global state. None of them downloads anything:

  ``xor()``         the 4 XOR points, train = test
  ``spirals()``     two interleaved spirals, 2 classes
  ``moons()``       two interleaving half circles, 2 classes
  ``regression()``  y = sin(x . w) + noise, targets ``(m, 1)``
  ``digits()``      scikit-learn's bundled 8x8 digits, 1,437 train / 360 test
  ``mnist1d()``     MNIST-1D with its default arguments, 4,000 / 1,000,
                    generated once and cached as ``.npz``
  ``ratings()``     low-rank ratings plus Gaussian noise, for recommenders
  ``from_file()``   a user's own ``.npz`` or ``.csv``

Subsets for fine-tuning studies: ``select_classes(ds, classes)`` keeps some
classes (relabelled ``0..k-1``), ``few_per_class(ds, n, seed)`` keeps ``n``
training examples of each.

``load(name_or_path)`` picks one by registered name (:data:`DATASETS`) or by
path. Files are never unpickled: every ``.npz`` is read with
``allow_pickle=False``, and a bad file raises :class:`DataError` with one
line naming the file and the problem.
"""

import csv
import hashlib
import importlib.metadata
import inspect
import math
import os
import random
import tempfile
import types
import zipfile
from typing import NamedTuple, Optional

import numpy as np

from funcnet.errors import ConfigError, DataError, unknown

TASKS = ("classification", "regression", "ratings")


class Dataset(NamedTuple):
  """Train and test arrays with what they mean (shapes in the module docstring).

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


def _check_count(name, key, value, least=1):
  if not isinstance(value, (int, np.integer)) or value < least:
    raise ConfigError(f"dataset {name!r}: {key}={value!r}; expected an "
                      f"integer >= {least}")


# --- generated and bundled datasets -------------------------------------------

def xor() -> Dataset:
  """The four XOR points; the test set is the training set.

  x ``(4, 2)`` float32 corners of the unit square, y ``(4,)`` int32 with
  ``y = x1 xor x2``. No line separates the classes, which is why one hidden
  layer is needed.
  """
  x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
  y = np.array([0, 1, 1, 0], np.int32)
  return Dataset(x, y, x.copy(), y.copy(), "classification", 2, "xor", {})


def spirals(n: int = 1000, noise: float = 0.05, turns: float = 1.5,
            test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """Two interleaved spirals, one class each.

  For class ``c`` in {0, 1} and ``t ~ U(0, 1)``:
  ``r = 0.1 + 0.9 t``, ``theta = 2 pi turns t + c pi``,
  ``x = r (cos theta, sin theta) + noise * N(0, I)``.
  The two arms lie ``0.9 / (2 turns)`` apart radially (0.3 by default).

  Returns x ``(m, 2)`` float32 and y ``(m,)`` int32, ``n`` points in all
  (``n // 2`` in class 0), split stratified with ``test_fraction`` to test.
  """
  _check_count("spirals", "n", n, 4)
  rng = np.random.default_rng(seed)
  c = (np.arange(n) >= n // 2).astype(np.int32)
  t = rng.uniform(0, 1, n)
  r = 0.1 + 0.9 * t
  theta = 2 * np.pi * turns * t + c * np.pi
  x = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
  x = x + noise * rng.standard_normal((n, 2))
  return _split("spirals", x.astype(np.float32), c, "classification", 2,
                {"noise": noise, "turns": turns}, test_fraction, rng)


def moons(n: int = 1000, noise: float = 0.1, test_fraction: float = 0.2,
          seed: int = 0) -> Dataset:
  """Two interleaving half circles (scikit-learn's ``make_moons`` shape).

  For ``theta ~ U(0, pi)``: class 0 is ``(cos theta, sin theta)``, class 1 is
  ``(1 - cos theta, 0.5 - sin theta)``, each plus ``noise * N(0, I)``.

  Returns x ``(m, 2)`` float32 and y ``(m,)`` int32, ``n`` points in all,
  split stratified with ``test_fraction`` to test.
  """
  _check_count("moons", "n", n, 4)
  rng = np.random.default_rng(seed)
  c = (np.arange(n) >= n // 2).astype(np.int32)
  theta = rng.uniform(0, np.pi, n)
  x = np.where(c[:, None] == 0,
               np.stack([np.cos(theta), np.sin(theta)], axis=1),
               np.stack([1 - np.cos(theta), 0.5 - np.sin(theta)], axis=1))
  x = x + noise * rng.standard_normal((n, 2))
  return _split("moons", x.astype(np.float32), c, "classification", 2,
                {"noise": noise}, test_fraction, rng)


def regression(n: int = 1000, n_features: int = 2, noise: float = 0.1,
               test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """A smooth nonlinear regression set, ``y = sin(x . w) + noise * eps``.

  ``x ~ N(0, I)`` of shape ``(n, n_features)``; ``w`` is a random direction of
  length 2, so ``x . w ~ N(0, 4)`` spans a few periods of the sine;
  ``eps ~ N(0, 1)``. Targets are ``(m, 1)`` float32.

  ``info["noise_std"]`` is ``noise``, the test RMSE of the true function
  (up to sampling error); ``info["w"]`` is ``w``.
  """
  _check_count("regression", "n", n, 2)
  _check_count("regression", "n_features", n_features)
  rng = np.random.default_rng(seed)
  w = rng.standard_normal(n_features)
  w *= 2 / np.linalg.norm(w)
  x = rng.standard_normal((n, n_features))
  y = np.sin(x @ w)[:, None] + noise * rng.standard_normal((n, 1))
  return _split("regression", x.astype(np.float32), y.astype(np.float32),
                "regression", None, {"noise_std": noise, "w": w},
                test_fraction, rng)


def digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """scikit-learn's bundled 8x8 handwritten digits (read from the package).

  1,797 images, flattened to x ``(m, 64)`` float32 with pixel values 0..16;
  y ``(m,)`` int32 in 0..9. The split is stratified and fixed by ``seed``;
  the default gives 1,437 train and 360 test images.
  """
  # Imported here: scikit-learn takes about a second to import, and only
  # this loader needs it.
  from sklearn.datasets import load_digits
  x, y = load_digits(return_X_y=True)
  rng = np.random.default_rng(seed)
  return _split("digits", x.astype(np.float32), y.astype(np.int32),
                "classification", 10, {}, test_fraction, rng)


# --- MNIST-1D, generated once and cached --------------------------------------

_MNIST1D_ARRAYS = ("x", "y", "x_test", "y_test", "t")


def default_cache_dir() -> str:
  """funcnet's cache folder (not created here).

  ``$FUNCNET_CACHE`` if set, else ``$XDG_CACHE_HOME/funcnet``, else
  ``~/.cache/funcnet``.
  """
  if os.environ.get("FUNCNET_CACHE"):
    return os.environ["FUNCNET_CACHE"]
  if os.environ.get("XDG_CACHE_HOME"):
    return os.path.join(os.environ["XDG_CACHE_HOME"], "funcnet")
  return os.path.join(os.path.expanduser("~"), ".cache", "funcnet")


def _mnist1d_path(folder):
  # Keyed by the package version rather than its default arguments, so a
  # cache hit need not import mnist1d (about 0.9 s, for scipy) while an
  # upgrade that changes the defaults still gets fresh data.
  version = importlib.metadata.version("mnist1d")
  return os.path.join(folder, f"mnist1d-{version}.npz")


def _read_mnist1d(path):
  """The cached arrays, or ``None`` when the file is missing or unusable."""
  # Opened here rather than by np.load, which leaks its handle when the
  # archive is damaged.
  try:
    with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
      raw = {k: f[k] for k in _MNIST1D_ARRAYS}
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
    return None
  ok = (raw["x"].ndim == 2 and raw["x_test"].ndim == 2
        and raw["x"].shape[0] == raw["y"].shape[0]
        and raw["x_test"].shape[0] == raw["y_test"].shape[0])
  return raw if ok else None


def _make_mnist1d():
  import mnist1d.data
  # make_dataset reseeds numpy's and Python's global generators (its own
  # seed 42); put them back so loading data does not change a caller's
  # random stream.
  np_state, py_state = np.random.get_state(), random.getstate()
  try:
    d = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
  finally:
    np.random.set_state(np_state)
    random.setstate(py_state)
  # "templates" is a dict of the ten clean signals; it is not cached.
  return {k: np.asarray(d[k]) for k in _MNIST1D_ARRAYS}


def _write_atomic(path, arrays):
  """``np.savez`` to a temp file beside ``path``, then rename over it, so a
  killed process leaves either the old file or the new one, never half."""
  folder = os.path.dirname(path)
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def mnist1d(cache_dir: Optional[str] = None) -> Dataset:
  """MNIST-1D (Greydanus 2020) made by ``mnist1d.data.make_dataset`` with its
  default arguments: 4,000 train and 1,000 test signals of length 40, 10
  classes, the split the package defines.

  x ``(m, 40)`` float32 (the package centres and scales the whole set to
  mean 0, std 1), y ``(m,)`` int32; ``info["t"]`` is the ``(40,)`` sample
  grid. Generating takes about 1.2 s here (plus 0.9 s to import mnist1d), so
  the arrays are cached as ``mnist1d-<version>.npz`` in ``cache_dir``
  (default :func:`default_cache_dir`), written atomically; a cache file that
  cannot be read is rebuilt. The package's ``get_dataset`` is never called:
  it downloads a pickle.
  """
  folder = cache_dir if cache_dir is not None else default_cache_dir()
  path = _mnist1d_path(folder)
  raw = _read_mnist1d(path)
  if raw is None:
    raw = _make_mnist1d()
    _write_atomic(path, raw)
  return Dataset(raw["x"].astype(np.float32), raw["y"].astype(np.int32),
                 raw["x_test"].astype(np.float32),
                 raw["y_test"].astype(np.int32), "classification", 10,
                 "mnist1d", {"t": raw["t"], "cache": path})


# --- ratings for recommenders -------------------------------------------------

def ratings(n_users: int = 500, n_items: int = 300, rank: int = 5,
            density: float = 0.1, noise_std: float = 0.5, mean: float = 3.5,
            test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """Ratings of known low-rank structure plus Gaussian noise.

  ``r_ui = mu + b_u + b_i + p_u . q_i + eps``, with ``mu = mean``,
  ``b_u, b_i ~ N(0, 0.3^2)``, ``p_u, q_i ~ N(0, rank^(-1/2) I_rank)`` (so
  ``p_u . q_i`` has variance 1) and ``eps ~ N(0, noise_std^2)``. Ratings are
  not rounded or clipped, which would break the noise floor below.

  ``round(density * n_users * n_items)`` distinct (user, item) pairs are
  observed, chosen uniformly; ``test_fraction`` of them, chosen at random,
  are held out. x ``(m, 2)`` int32 ``(user, item)``, y ``(m,)`` float32.

  ``info`` holds ``n_users``, ``n_items``, ``rank``, ``noise_std`` (the test
  RMSE a perfect model reaches, up to sampling error) and ``true``: the
  generating ``mu``, ``b_user (n_users,)``, ``b_item (n_items,)``,
  ``p (n_users, rank)`` and ``q (n_items, rank)``.
  """
  _check_count("ratings", "n_users", n_users)
  _check_count("ratings", "n_items", n_items)
  _check_count("ratings", "rank", rank)
  if not 0 < density <= 1:
    raise ConfigError(f"dataset 'ratings': density={density!r}; expected a "
                      f"number in (0, 1]")
  n_obs = round(density * n_users * n_items)
  if n_obs < 2:
    raise ConfigError(
        f"dataset 'ratings': density={density!r} observes {n_obs} of "
        f"{n_users} x {n_items} pairs; expected at least 2")
  rng = np.random.default_rng(seed)
  true = {"mu": float(mean),
          "b_user": 0.3 * rng.standard_normal(n_users),
          "b_item": 0.3 * rng.standard_normal(n_items),
          "p": rng.standard_normal((n_users, rank)) * rank ** -0.25,
          "q": rng.standard_normal((n_items, rank)) * rank ** -0.25}
  pairs = rng.choice(n_users * n_items, size=n_obs, replace=False)
  u, i = np.divmod(pairs, n_items)
  r = (true["mu"] + true["b_user"][u] + true["b_item"][i]
       + np.sum(true["p"][u] * true["q"][i], axis=1)
       + noise_std * rng.standard_normal(n_obs))
  x = np.stack([u, i], axis=1).astype(np.int32)
  info = {"n_users": n_users, "n_items": n_items, "rank": rank,
          "noise_std": noise_std, "true": true}
  return _split("ratings", x, r.astype(np.float32), "ratings", None, info,
                test_fraction, rng)


# --- a user's own file --------------------------------------------------------

def _fail(path, problem):
  return DataError(f"data file {os.fspath(path)}: {problem}")


def _read_npz(path):
  """The arrays ``x``, ``y`` and, if present, ``x_test``, ``y_test``."""
  # Opened here rather than by np.load, which leaks its handle when the
  # archive is damaged.
  with open(path, "rb") as fh:
    try:
      f = np.load(fh, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
      raise _fail(path, f"cannot be read as .npz ({e})") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
      raise _fail(path, "holds a single array, not an .npz archive of named "
                        "arrays x, y[, x_test, y_test]")
    with f:
      found = sorted(f.files)
      missing = [k for k in ("x", "y") if k not in found]
      if "x_test" in found and "y_test" not in found:
        missing.append("y_test")
      if "y_test" in found and "x_test" not in found:
        missing.append("x_test")
      if missing:
        raise _fail(path, f"missing array(s) {', '.join(missing)}; found: "
                          f"{', '.join(found) or 'none'}")
      arrays = {}
      for k in [k for k in ("x", "y", "x_test", "y_test") if k in found]:
        try:
          arrays[k] = f[k]
        except ValueError as e:
          # allow_pickle=False refuses object arrays, which need unpickling.
          if "allow_pickle" in str(e):
            raise _fail(path, f"array {k!r} holds Python objects; expected "
                              f"numbers (pickled data is never loaded)"
                        ) from None
          raise _fail(path, f"array {k!r} cannot be read ({e})") from None
        except (OSError, EOFError, zipfile.BadZipFile) as e:
          raise _fail(path, f"array {k!r} cannot be read ({e})") from None
  return arrays


def _parse_csv(path, label, task):
  """``x, y, lines`` from a CSV with a header row.

  ``lines[j]`` is the 1-based line number of data row ``j``, for messages.
  """
  try:
    with open(path, newline="") as f:
      rows = list(csv.reader(f))
  except UnicodeDecodeError:
    raise _fail(path, "is not a text file") from None
  # csv.reader yields [] for blank lines; keep each row's 1-based line.
  lines = [n for n, row in enumerate(rows, 1) if any(c.strip() for c in row)]
  if not lines:
    raise _fail(path, "is empty; expected a header row and data rows")
  header = [c.strip() for c in rows[lines[0] - 1]]
  body = lines[1:]
  if not body:
    raise _fail(path, "has a header but no data rows")
  if task == "ratings":
    want = ["user", "item", "rating"]
    if any(c not in header for c in want):
      raise _fail(path, f"ratings need columns user, item, rating; columns "
                        f"are: {', '.join(header)}")
    x_cols, y_col = [header.index("user"), header.index("item")], \
        header.index("rating")
  else:
    if label is None:
      raise _fail(path, f"label= must name the label column of a .csv; "
                        f"columns are: {', '.join(header)}")
    if label not in header:
      raise _fail(path, f"no column {label!r}; columns are: "
                        f"{', '.join(header)}")
    y_col = header.index(label)
    x_cols = [j for j in range(len(header)) if j != y_col]
    if not x_cols:
      raise _fail(path, f"has only the label column {label!r}; expected "
                        f"feature columns too")
  values = np.empty((len(body), len(header)))
  for j, n in enumerate(body):
    row = rows[n - 1]
    if len(row) != len(header):
      raise _fail(path, f"line {n} has {len(row)} fields but the header has "
                        f"{len(header)}")
    for k, cell in enumerate(row):
      try:
        v = float(cell)
      except ValueError:
        raise _fail(path, f"line {n}, column {header[k]!r}: cannot parse "
                          f"{cell!r} as a number") from None
      if not math.isfinite(v):
        raise _fail(path, f"line {n}, column {header[k]!r}: {cell.strip()!r} "
                          f"is not a finite number")
      values[j, k] = v
  return values[:, x_cols], values[:, y_col], np.array(body)


def _as_inputs(path, x, task, where):
  if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
    raise _fail(path, f"inputs have dtype {x.dtype}; expected numbers")
  if x.ndim == 0 or x.shape[0] == 0:
    raise _fail(path, "has no examples")
  if task == "ratings":
    if x.ndim != 2 or x.shape[1] != 2:
      raise _fail(path, f"ratings inputs have shape {x.shape}; expected "
                        f"(m, 2) user and item indices")
    _integers(path, x.reshape(len(x), -1), "user/item indices", where)
    return x.astype(np.int32)
  if x.ndim == 1:
    x = x[:, None]
  # Check after the cast too: a float64 beyond float32's range becomes inf.
  x32 = x.astype(np.float32)
  bad = ~np.isfinite(x32.reshape(len(x32), -1)).all(axis=1)
  if bad.any():
    raise _fail(path, f"inputs have NaN or infinite values in "
                      f"{int(bad.sum())} example(s), first at {where(bad)}; "
                      f"expected finite numbers")
  return x32


def _integers(path, v, what, where):
  bad = (v != np.round(v)) | ~np.isfinite(v) | (v < 0)
  bad = bad.reshape(len(v), -1).any(axis=1)
  if bad.any():
    j = int(np.argmax(bad))
    raise _fail(path, f"{what} must be non-negative integers but {where(bad)} "
                      f"has {v[j].tolist()!r}")


def _as_targets(path, y, m, task, where):
  if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
    raise _fail(path, f"targets have dtype {y.dtype}; expected numbers")
  if y.ndim == 0 or y.shape[0] != m:
    raise _fail(path, f"x has {m} examples but y has "
                      f"{y.shape[0] if y.ndim else 'a scalar'}; expected the "
                      f"same number")
  if task == "classification":
    if y.ndim == 2 and y.shape[1] == 1:
      y = y[:, 0]
    if y.ndim != 1:
      raise _fail(path, f"labels have shape {y.shape}; expected ({m},) "
                        f"integer class labels")
    _integers(path, y.astype(np.float64), "classification labels", where)
    return y.astype(np.int32)
  if task == "ratings":
    if y.ndim != 1:
      raise _fail(path, f"ratings have shape {y.shape}; expected ({m},)")
  elif y.ndim == 1:
    y = y[:, None]
  y32 = y.astype(np.float32)
  bad = ~np.isfinite(y32.reshape(m, -1)).all(axis=1)
  if bad.any():
    raise _fail(path, f"targets have NaN or infinite values, first at "
                      f"{where(bad)}; expected finite numbers")
  return y32


def from_file(path, label: Optional[str] = None, task: str = "classification",
              *, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """A user's own data from an ``.npz`` or ``.csv`` file.

  ``.npz``: arrays ``x (m, *in_shape)`` and ``y``, and optionally both
  ``x_test`` and ``y_test``. ``.csv``: a header row, then one example per
  line; ``label`` names the label column and every other column is a
  feature. For ``task="ratings"`` the CSV header must have ``user``, ``item``
  and ``rating`` (an ``.npz`` holds ``x (m, 2)`` indices and ``y (m,)``).

  Without test arrays, ``test_fraction`` of the examples are split off with
  ``seed`` (stratified for classification). ``y`` must be ``(m,)``
  non-negative integer labels for classification (``n_classes`` is the
  largest label plus one), ``(m,)`` or ``(m, k)`` for regression (``(m,)``
  becomes ``(m, 1)``). Ratings get ``info["n_users"]`` and ``info["n_items"]``
  from the largest indices.

  Raises:
    DataError: one line naming the file and what is wrong with it.
    UnknownNameError: an unknown ``task``.
  """
  if task not in TASKS:
    raise unknown("task", task, TASKS)
  name = os.path.basename(os.fspath(path))
  if not os.path.isfile(path):
    raise _fail(path, "no such file")
  ext = os.path.splitext(name)[1].lower()
  if ext not in (".npz", ".csv"):
    raise _fail(path, f"unknown extension {ext or '(none)'!r}; expected .npz "
                      f"or .csv")
  if os.path.getsize(path) == 0:
    raise _fail(path, "is empty")

  if ext == ".npz":
    arrays = _read_npz(path)
    row = lambda k: lambda bad: f"row {int(np.argmax(bad))} of {k!r}"
    parts = [("x", "y")] + ([("x_test", "y_test")] if "x_test" in arrays
                            else [])
    xs, ys = [], []
    for kx, ky in parts:
      x = _as_inputs(path, arrays[kx], task, row(kx))
      xs.append(x)
      ys.append(_as_targets(path, arrays[ky], len(x), task, row(ky)))
  else:
    x, y, lines = _parse_csv(path, label, task)
    line = lambda bad: f"line {int(lines[np.argmax(bad)])}"
    x = _as_inputs(path, x, task, line)
    xs, ys = [x], [_as_targets(path, y, len(x), task, line)]

  if len(xs) == 2 and xs[1].shape[1:] != xs[0].shape[1:]:
    raise _fail(path, f"x_test examples have shape {xs[1].shape[1:]} but x "
                      f"examples have {xs[0].shape[1:]}; expected the same")
  if len(ys) == 2 and task == "regression" and ys[1].shape[1] != ys[0].shape[1]:
    raise _fail(path, f"y_test has {ys[1].shape[1]} target columns but y has "
                      f"{ys[0].shape[1]}; expected the same")

  info = {"path": os.fspath(path)}
  n_classes = None
  if task == "classification":
    n_classes = int(max(y.max() for y in ys)) + 1
  if task == "ratings":
    info["n_users"] = int(max(x[:, 0].max() for x in xs)) + 1
    info["n_items"] = int(max(x[:, 1].max() for x in xs)) + 1
  if len(xs) == 2:
    return Dataset(xs[0], ys[0], xs[1], ys[1], task, n_classes, name, info)
  m = len(ys[0])
  _check_fraction(name, "test_fraction", test_fraction)
  n_test = math.ceil(test_fraction * m)
  if n_test >= m:
    raise _fail(path, f"has {m} example(s), too few to split off a test set "
                      f"of {test_fraction:g}; add x_test and y_test or more "
                      f"examples")
  return _split(name, xs[0], ys[0], task, n_classes, info, test_fraction,
                np.random.default_rng(seed))


# --- standardisation and loading by name --------------------------------------

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

  Ratings (whose inputs are indices) and an already standardised dataset are
  returned unchanged.
  """
  if ds.task == "ratings" or "mean" in ds.info:
    return ds
  if stats is not None:
    mean, std = (np.asarray(a, np.float64) for a in stats)
  else:
    x = ds.x_train.astype(np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
  scale = lambda a: ((a - mean) / std).astype(np.float32)
  return ds._replace(x_train=scale(ds.x_train), x_test=scale(ds.x_test),
                     info={**ds.info, "mean": mean.astype(np.float32),
                           "std": std.astype(np.float32)})


# --- subsets: some classes, few labels ---------------------------------------

def select_classes(ds: Dataset, classes) -> Dataset:
  """Only the examples whose label is in ``classes``, relabelled.

  Label ``classes[j]`` becomes ``j`` in both splits, so ``[5, 6, 7, 8, 9]``
  maps 5..9 to 0..4 and ``n_classes`` becomes ``len(classes)``. Example
  order is kept. ``info["classes"]`` records the original labels.

  Raises:
    ConfigError: not a classification set, or ``classes`` empty, with
      repeats, or naming a label outside ``[0, n_classes)``.
  """
  classes = list(classes)
  if ds.task != "classification":
    raise ConfigError(f"config key 'data.classes' selects classes; dataset "
                      f"{ds.name!r} is {ds.task}; expected [] for it")
  if not classes or len(set(classes)) != len(classes) or not all(
      isinstance(c, (int, np.integer)) and not isinstance(c, bool)
      and 0 <= c < ds.n_classes for c in classes):
    raise ConfigError(f"config key 'data.classes' = {classes!r}; expected "
                      f"distinct labels of {ds.name!r} in 0..{ds.n_classes - 1}")
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
  if ds.task != "classification":
    raise ConfigError(f"config key 'data.train_per_class' needs "
                      f"classification data; {ds.name!r} is {ds.task}")
  order = np.random.default_rng(seed).permutation(len(ds.y_train))
  keep = np.sort(np.concatenate(
      [order[ds.y_train[order] == c][:n] for c in range(ds.n_classes)]))
  return ds._replace(x_train=ds.x_train[keep], y_train=ds.y_train[keep])


# load() takes a flag named standardize, which hides the function there.
_standardize = standardize

DATASETS = {
    "xor": xor,
    "spirals": spirals,
    "moons": moons,
    "regression": regression,
    "digits": digits,
    "mnist1d": mnist1d,
    "ratings": ratings,
}


def names() -> list[str]:
  return sorted(DATASETS)


def _looks_like_path(name) -> bool:
  s = os.fspath(name)
  return bool(os.path.splitext(s)[1]) or os.sep in s or "/" in s


def load(name_or_path, *, seed: int = 0, standardize: bool = False,
         **kwargs) -> Dataset:
  """A dataset by registered name (:data:`DATASETS`) or by file path.

  ``seed`` goes to every loader that draws anything (``xor`` and ``mnist1d``
  do not); ``kwargs`` are the loader's own options (for a file:
  ``label``, ``task``, ``test_fraction``). ``standardize=True`` applies
  :func:`standardize`.

  Raises:
    UnknownNameError: a name that is neither registered nor a path.
    ConfigError: an option the loader does not take.
    DataError: a file that cannot be used.
  """
  if isinstance(name_or_path, str) and name_or_path in DATASETS:
    loader, what = DATASETS[name_or_path], repr(name_or_path)
  elif isinstance(name_or_path, os.PathLike) or (
      isinstance(name_or_path, str) and _looks_like_path(name_or_path)):
    loader, what = from_file, "from a file"
    kwargs = {"path": name_or_path, **kwargs}
  else:
    raise unknown("dataset", name_or_path, DATASETS)
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
