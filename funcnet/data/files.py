"""A user's own data: an ``.npz`` or ``.csv`` file read into a
:class:`Dataset`, checked so that every bad file raises one
:class:`DataError` line naming the file and the problem.

Files are never unpickled: every ``.npz`` is read with ``allow_pickle=False``.
"""

import csv
import math
import os
import zipfile
from typing import Optional

import numpy as np

from funcnet import tasks
from funcnet.data.dataset import Dataset, _check_fraction, _split
from funcnet.errors import DataError

# The largest input magnitude accepted: sqrt of float32's largest value
# (~1.8e19), the largest number whose square is still finite in float32.
# Inputs are squared on the way (a first layer's products summed, the
# variance of standardisation, a squared-error loss of a linear model), and
# beyond this bound those overflow to inf and the run ends in NaN losses with
# exit 0 instead of an error naming the file.
MAX_INPUT = math.sqrt(float(np.finfo(np.float32).max))

# Labels and indices become int32 (what JAX indexes with by default); a
# larger one would wrap silently (2**40 becomes 0).
MAX_INDEX = int(np.iinfo(np.int32).max)


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
    # utf-8-sig drops the byte-order mark spreadsheet programs write, which
    # would otherwise open the first column's name ('\ufefflabel').
    with open(path, newline="", encoding="utf-8-sig") as f:
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
  if tasks.get(task).inputs == "pairs":
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


def _expected_instead(dtype) -> Optional[str]:
  """What a file's array should have held instead of ``dtype``; None for
  integers, floats and booleans. Complex numbers are refused too: their
  cast to float drops the imaginary part with only a warning."""
  if (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
      or dtype == bool):
    return None
  return "real numbers" if np.issubdtype(dtype, np.complexfloating) \
      else "numbers"


def _as_inputs(path, x, task, where):
  if _expected_instead(x.dtype):
    raise _fail(path, f"inputs have dtype {x.dtype}; expected "
                      f"{_expected_instead(x.dtype)}")
  if x.ndim == 0 or x.shape[0] == 0:
    raise _fail(path, "has no examples")
  if tasks.get(task).inputs == "pairs":
    if x.ndim != 2 or x.shape[1] != 2:
      raise _fail(path, f"ratings inputs have shape {x.shape}; expected "
                        f"(m, 2) user and item indices")
    _integers(path, x.reshape(len(x), -1), "user/item indices", where)
    return x.astype(np.int32)
  if x.ndim == 1:
    x = x[:, None]
  # Checked before the cast to float32, which would turn a float64 beyond
  # its range into inf (and one beyond MAX_INPUT into an overflow later).
  flat = x.reshape(len(x), -1)
  bad = ~np.isfinite(flat).all(axis=1)
  if bad.any():
    raise _fail(path, f"inputs have NaN or infinite values in "
                      f"{int(bad.sum())} example(s), first at {where(bad)}; "
                      f"expected finite numbers")
  # min and max rather than abs: no copy of the data, and no abs() overflow
  # of the most negative integer.
  if max(-float(flat.min()), float(flat.max())) > MAX_INPUT:
    big = (np.abs(flat.astype(np.float64)) > MAX_INPUT).any(axis=1)
    j = int(np.argmax(big))
    biggest = float(np.abs(flat[j].astype(np.float64)).max())
    raise _fail(path, f"inputs reach |x| = {biggest:.3g} in {int(big.sum())} "
                      f"example(s), first at {where(big)}; expected |x| <= "
                      f"{MAX_INPUT:.3g} (the square root of float32's "
                      f"largest value; larger inputs overflow when squared)")
  return x.astype(np.float32)


def _integers(path, v, what, where):
  """Refuses ``v`` (one entry or row per example) unless every entry is a
  finite, non-negative integer that fits in int32; run before the cast."""
  bad = (v != np.round(v)) | ~np.isfinite(v) | (v < 0)
  bad = bad.reshape(len(v), -1).any(axis=1)
  if bad.any():
    j = int(np.argmax(bad))
    raise _fail(path, f"{what} must be non-negative integers but {where(bad)} "
                      f"has {v[j].tolist()!r}")
  big = (v > MAX_INDEX).reshape(len(v), -1).any(axis=1)
  if big.any():
    j = int(np.argmax(big))
    # As integers while floats hold them exactly, e.g. 1099511627776 for
    # 2**40; beyond 2**53 as floats (1e+300, not its 301 digits).
    exact = lambda a: int(a) if a < 2**53 else a
    shown = v[j].tolist()
    shown = ([exact(a) for a in shown] if isinstance(shown, list)
             else exact(shown))
    raise _fail(path, f"{what} must fit in int32 (at most {MAX_INDEX}) but "
                      f"{where(big)} has {shown!r}")


def _check_classes(path, ys):
  """Refuses labels that are not roughly ``0..K-1`` for ``K >= 2`` classes.

  ``n_classes`` is the largest label plus one and becomes the model's output
  width (and every one-hot row), so a stray label of 1e9 in a small file
  would ask for gigabytes. Classes implied by the largest label may be at
  most twice the distinct labels present: a few unused classes are fine
  (labels 1..K leave 0 empty), a sparse labelling is not.
  """
  present = np.unique(np.concatenate(ys))
  if len(present) < 2:
    raise _fail(path, f"has only one class (label {int(present[0])}); "
                      f"classification needs at least two")
  n_classes = int(present[-1]) + 1
  if n_classes > 2 * len(present):
    raise _fail(path, f"the largest label {int(present[-1])} implies "
                      f"{n_classes} classes but only {len(present)} distinct "
                      f"labels are present; expected labels 0..K-1 for K "
                      f"classes")
  return n_classes


def _check_train_classes(path, y_train):
  """A training split with one class teaches nothing (and accuracy would be
  reported as if the output were a sigmoid): refused."""
  present = np.unique(y_train)
  if len(present) < 2:
    raise _fail(path, f"the training split has only one class (label "
                      f"{int(present[0])}); classification needs at least "
                      f"two: add examples of the other classes")


def _as_targets(path, y, m, task, where):
  if _expected_instead(y.dtype):
    raise _fail(path, f"targets have dtype {y.dtype}; expected "
                      f"{_expected_instead(y.dtype)}")
  if y.ndim == 0 or y.shape[0] != m:
    raise _fail(path, f"x has {m} examples but y has "
                      f"{y.shape[0] if y.ndim else 'a scalar'}; expected the "
                      f"same number")
  if tasks.get(task).classes:
    if y.ndim == 2 and y.shape[1] == 1:
      y = y[:, 0]
    if y.ndim != 1:
      raise _fail(path, f"labels have shape {y.shape}; expected ({m},) "
                        f"integer class labels")
    # Every check on float64, before the int32 cast that would wrap 2**40.
    _integers(path, y.astype(np.float64), "classification labels", where)
    return y.astype(np.int32)
  if tasks.get(task).label_rank == 0:
    if y.ndim != 1:
      raise _fail(path, f"{task} have shape {y.shape}; expected ({m},)")
  elif y.ndim == 1:
    y = y[:, None]
  y32 = y.astype(np.float32)
  bad = ~np.isfinite(y32.reshape(m, -1)).all(axis=1)
  if bad.any():
    raise _fail(path, f"targets have NaN or infinite values, first at "
                      f"{where(bad)}; expected finite numbers")
  return y32


def from_file(path, label: Optional[str] = None, task: str = tasks.DEFAULT,
              *, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """A user's own data from an ``.npz`` or ``.csv`` file.

  ``.npz``: arrays ``x (m, *in_shape)`` and ``y``, and optionally both
  ``x_test`` and ``y_test``. ``.csv``: a header row, then one example per
  line; ``label`` names the label column and every other column is a
  feature. For ``task="ratings"`` the CSV header must have ``user``, ``item``
  and ``rating`` (an ``.npz`` holds ``x (m, 2)`` indices and ``y (m,)``).

  Without test arrays, ``test_fraction`` of the examples are split off with
  ``seed`` (stratified for classification). ``y`` must be ``(m,)``
  non-negative integer labels below ``2**31`` for classification
  (``n_classes`` is the largest label plus one, at most twice the number of
  distinct labels, and the training split must hold at least two classes),
  ``(m,)`` or ``(m, k)`` for regression (``(m,)`` becomes ``(m, 1)``).
  Ratings get ``info["n_users"]`` and ``info["n_items"]`` from the largest
  indices. Inputs must be finite with ``|x| <= MAX_INPUT`` (about 1.8e19).
  Every check runs on the values as read, before the cast to float32/int32.

  Raises:
    DataError: one line naming the file and what is wrong with it.
    UnknownNameError: an unknown ``task``.
  """
  tasks.get(task)  # an unknown name lists the known ones
  name = os.path.basename(os.fspath(path))
  if os.path.isdir(path):
    raise _fail(path, "is a directory; expected a .npz or .csv file")
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
  if len(ys) == 2 and tasks.get(task).label_rank == 1 \
      and ys[1].shape[1] != ys[0].shape[1]:
    raise _fail(path, f"y_test has {ys[1].shape[1]} target columns but y has "
                      f"{ys[0].shape[1]}; expected the same")

  if len(xs) == 1:
    # Before the class checks: a file too small to split says so first.
    m = len(ys[0])
    _check_fraction(name, "test_fraction", test_fraction)
    if math.ceil(test_fraction * m) >= m:
      raise _fail(path, f"has {m} example(s), too few to split off a test "
                        f"set of {test_fraction:g}; add x_test and y_test or "
                        f"more examples")

  info = {"path": os.fspath(path)}
  n_classes = None
  if tasks.get(task).classes:
    n_classes = _check_classes(path, ys)
  if tasks.get(task).inputs == "pairs":
    info["n_users"] = int(max(x[:, 0].max() for x in xs)) + 1
    info["n_items"] = int(max(x[:, 1].max() for x in xs)) + 1
  if len(xs) == 2:
    ds = Dataset(xs[0], ys[0], xs[1], ys[1], task, n_classes, name, info)
  else:
    ds = _split(name, xs[0], ys[0], task, n_classes, info, test_fraction,
                np.random.default_rng(seed))
  if tasks.get(task).classes:
    _check_train_classes(path, ds.y_train)
  return ds
