"""Datasets that come with installed packages, so nothing is downloaded:
scikit-learn's bundled 8x8 digits, and MNIST-1D made by the ``mnist1d``
package and cached as ``.npz`` in :func:`funcnet.paths.cache_root`.

Neither package is imported for a run: the digits are read from the CSV
file scikit-learn ships, and MNIST-1D from its cache once made.
"""

import gzip
import importlib.metadata
import importlib.util
import io
import os
import random
import tempfile
import zipfile
from typing import Optional

import numpy as np

from funcnet import paths
from funcnet.data import registry
from funcnet.data.dataset import Dataset, _split


# --- scikit-learn's digits ----------------------------------------------------

def _digits_csv() -> Optional[str]:
  """The ``digits.csv.gz`` that scikit-learn ships, found without importing
  it (``find_spec`` of a top-level package reads no code); None when absent."""
  spec = importlib.util.find_spec("sklearn")
  for root in (spec.submodule_search_locations or []) if spec else []:
    path = os.path.join(root, "datasets", "data", "digits.csv.gz")
    if os.path.isfile(path):
      return path
  return None


def _load_digits():
  """``(x, y)`` exactly as ``sklearn.datasets.load_digits(return_X_y=True)``:
  x ``(1797, 64)`` float64, y ``(1797,)`` int.

  Read straight from scikit-learn's CSV, the values its loader reads
  (``np.loadtxt`` of the gzipped file, the last column the label), parsed
  by :func:`_integer_csv` (5 ms; loadtxt, 20 ms, when the file holds more
  than plain integers), where importing scikit-learn took about 3 s of
  every run (issue 15).
  ``tests/test_startup.py`` compares the arrays with scikit-learn's own.
  """
  path = _digits_csv()
  if path is None:  # a layout we do not know: scikit-learn's loader
    from sklearn.datasets import load_digits
    return load_digits(return_X_y=True)
  with gzip.open(path, "rb") as f:
    raw = f.read()
  data = _integer_csv(raw)
  if data is None:  # not the plain integers it has always held
    data = np.loadtxt(io.StringIO(raw.decode("utf-8")), delimiter=",")
  return data[:, :-1], data[:, -1].astype(int)


def _integer_csv(raw: bytes):
  """``np.loadtxt(raw, delimiter=",")`` of a CSV of non-negative integers
  (bytes ``0-9``, ``,`` and ``\n`` alone, a ``\n`` ending every row, the
  same number of fields in each, at most 15 digits a field), parsed by
  whole-array numpy: float64 ``(rows, fields)``, the same values exactly.
  None for anything else. The digits' CSV in 2-5 ms against loadtxt's 20
  (a tenth of a warm one-epoch run's time above JAX's floor, issue 27).

  Each field's value is the sum of its digits times 10 to the number of
  digits after it in the field (exact in float64 below 2**53)."""
  b = np.frombuffer(raw, np.uint8)
  newline = b == ord("\n")
  sep = newline | (b == ord(","))
  digit = (b >= ord("0")) & (b <= ord("9"))
  if b.size == 0 or not newline[-1] or not (sep | digit).all():
    return None
  ends = np.flatnonzero(sep)                     # one separator per field
  width = ends - np.concatenate(([0], ends[:-1] + 1))
  if width.min() < 1 or width.max() > 15:
    return None
  field = np.cumsum(sep) - sep                   # the field of each byte
  after = ends[field] - 1 - np.arange(b.size)    # its digits after this one
  values = np.bincount(field[digit], weights=(b[digit] - ord("0"))
                       * 10.0 ** after[digit], minlength=ends.size)
  rows = int(newline.sum())
  cols = ends.size // rows
  row_ends = np.flatnonzero(newline[ends])       # each row's last field
  if cols * rows != ends.size or not np.array_equal(
      row_ends, np.arange(cols - 1, ends.size, cols)):
    return None
  return values.reshape(rows, cols)


def digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """scikit-learn's bundled 8x8 handwritten digits (read from the package).

  1,797 images, flattened to x ``(m, 64)`` float32 with pixel values 0..16;
  y ``(m,)`` int32 in 0..9. The split is stratified and fixed by ``seed``;
  the default gives 1,437 train and 360 test images.
  """
  x, y = _load_digits()
  rng = np.random.default_rng(seed)
  return _split("digits", x.astype(np.float32), y.astype(np.int32),
                "classification", 10, {}, test_fraction, rng)


# --- MNIST-1D, generated once and cached --------------------------------------

_MNIST1D_ARRAYS = ("x", "y", "x_test", "y_test", "t")


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
  (default :func:`funcnet.paths.cache_root`), written atomically; a cache
  file that cannot be read is rebuilt. The package's ``get_dataset`` is
  never called: it downloads a pickle.
  """
  folder = cache_dir if cache_dir is not None else paths.cache_root()
  path = _mnist1d_path(folder)
  raw = _read_mnist1d(path)
  if raw is None:
    raw = _make_mnist1d()
    _write_atomic(path, raw)
  return Dataset(raw["x"].astype(np.float32), raw["y"].astype(np.int32),
                 raw["x_test"].astype(np.float32),
                 raw["y_test"].astype(np.int32), "classification", 10,
                 "mnist1d", {"t": raw["t"], "cache": path})


registry.register(registry.Source(
    "digits", digits, "classification",
    "scikit-learn's bundled 8x8 digits, 1,437 train / 360 test",
    valid_range=(0.0, 16.0)))
registry.register(registry.Source(
    "mnist1d", mnist1d, "classification",
    "MNIST-1D with its default arguments, 4,000 / 1,000, cached as .npz"))
