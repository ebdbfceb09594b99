"""Datasets: shapes and dtypes, determinism by seed, splits that partition
and stratify, standardisation from training statistics only, the MNIST-1D
cache, generated data against its own generating parameters, and one
``DataError`` line for every kind of bad file."""

import os
import random
import shutil

import mnist1d.data
import numpy as np
import pytest

from funcnet import data, paths
from funcnet.errors import ConfigError, DataError, UnknownNameError


# --- shapes, dtypes, determinism ----------------------------------------------

# name, kwargs, task, in_shape, train size, test size
SHAPES = [
    ("xor", {}, "classification", (2,), 4, 4),
    ("spirals", {"n": 300}, "classification", (2,), 240, 60),
    ("moons", {"n": 301}, "classification", (2,), 240, 61),
    ("regression", {"n": 200, "n_features": 3}, "regression", (3,), 160, 40),
    ("digits", {}, "classification", (64,), 1437, 360),
    ("ratings", {"n_users": 40, "n_items": 30, "density": 0.5}, "ratings",
     (2,), 480, 120),
]


@pytest.mark.parametrize("name,kwargs,task,shape,m_train,m_test", SHAPES)
def test_shapes_and_dtypes(name, kwargs, task, shape, m_train, m_test):
  ds = data.load(name, **kwargs)
  assert (ds.name, ds.task) == (name, task)
  assert ds.x_train.shape == (m_train, *shape)
  assert ds.x_test.shape == (m_test, *shape)
  assert data.in_shape(ds) == shape and data.n_features(ds) == shape[0]
  if task == "classification":
    assert ds.x_train.dtype == ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == ds.y_test.dtype == np.int32
    assert ds.y_train.shape == (m_train,) and ds.y_test.shape == (m_test,)
    labels = np.concatenate([ds.y_train, ds.y_test])
    assert set(labels.tolist()) == set(range(ds.n_classes))
    assert data.n_outputs(ds) == ds.n_classes
  elif task == "regression":
    assert ds.y_train.dtype == np.float32 and ds.n_classes is None
    assert ds.y_train.shape == (m_train, 1) and ds.y_test.shape == (m_test, 1)
    assert data.n_outputs(ds) == 1
  else:
    assert ds.x_train.dtype == np.int32 and ds.y_train.dtype == np.float32
    assert ds.y_train.shape == (m_train,)
    x = np.concatenate([ds.x_train, ds.x_test])
    assert x.min() >= 0
    assert x[:, 0].max() < ds.info["n_users"] == kwargs["n_users"]
    assert x[:, 1].max() < ds.info["n_items"] == kwargs["n_items"]
  assert name in data.summary(ds)


def test_xor_is_the_truth_table():
  ds = data.xor()
  np.testing.assert_array_equal(ds.x_train, [[0, 0], [0, 1], [1, 0], [1, 1]])
  np.testing.assert_array_equal(ds.y_train, [0, 1, 1, 0])
  np.testing.assert_array_equal(ds.x_test, ds.x_train)
  np.testing.assert_array_equal(ds.y_test, ds.y_train)
  assert ds.n_classes == 2


@pytest.mark.parametrize("name", ["spirals", "moons", "regression", "ratings",
                                  "digits"])
def test_same_seed_same_arrays_other_seed_other_arrays(name):
  a, b, c = (data.load(name, seed=s) for s in (3, 3, 4))
  for k in ("x_train", "y_train", "x_test", "y_test"):
    np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
  assert not np.array_equal(a.x_train, c.x_train)


def test_loaders_leave_the_global_generators_alone():
  np.random.seed(7)
  random.seed(7)
  want_np, want_py = np.random.random(), random.random()
  np.random.seed(7)
  random.seed(7)
  for name in ("spirals", "regression", "ratings", "digits"):
    data.load(name)
  assert (np.random.random(), random.random()) == (want_np, want_py)


# --- splits -------------------------------------------------------------------

def _rows(*xs):
  """The rows of the arrays together, sorted, to compare as multisets."""
  x = np.concatenate([np.asarray(a).reshape(len(a), -1) for a in xs])
  return x[np.lexsort(x.T[::-1])]


def _assert_stratified(y_train, y_test, n_classes):
  y = np.concatenate([y_train, y_test])
  share = len(y_test) / len(y)
  for c in range(n_classes):
    total, test = np.sum(y == c), np.sum(y_test == c)
    assert abs(test - share * total) < 1, (c, test, share * total)


def test_digits_split_partitions_the_bundled_set_stratified():
  from sklearn.datasets import load_digits
  x, y = load_digits(return_X_y=True)
  ds = data.digits()
  assert len(ds.y_train) + len(ds.y_test) == 1797
  assert (len(ds.y_train), len(ds.y_test)) == (1437, 360)
  assert ds.x_train.min() == 0 and ds.x_train.max() == 16
  # Every image lands in exactly one split, with its own label.
  np.testing.assert_array_equal(
      _rows(np.c_[ds.x_train, ds.y_train], np.c_[ds.x_test, ds.y_test]),
      _rows(np.c_[x, y]))
  _assert_stratified(ds.y_train, ds.y_test, 10)


@pytest.mark.parametrize("m,fraction", [(10, 0.2), (101, 0.3), (1797, 0.2)])
def test_split_indices_partition_and_stratify(m, fraction):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, m)
  train, test = data.split_indices(m, fraction, rng, labels)
  assert len(test) == np.ceil(fraction * m)
  np.testing.assert_array_equal(np.sort(np.r_[train, test]), np.arange(m))
  _assert_stratified(labels[train], labels[test], 4)
  train, test = data.split_indices(m, fraction, rng)
  np.testing.assert_array_equal(np.sort(np.r_[train, test]), np.arange(m))


def test_spirals_classes_are_balanced_and_stratified():
  ds = data.spirals(n=500)
  y = np.concatenate([ds.y_train, ds.y_test])
  assert np.sum(y == 0) == 250
  _assert_stratified(ds.y_train, ds.y_test, 2)


# --- generated data against its generating parameters -------------------------

def test_ratings_true_parameters_reach_the_noise_floor():
  ds = data.ratings(n_users=300, n_items=200, density=0.25, noise_std=0.4,
                    seed=1)
  t = ds.info["true"]
  u, i = ds.x_test[:, 0], ds.x_test[:, 1]
  pred = (t["mu"] + t["b_user"][u] + t["b_item"][i]
          + np.sum(t["p"][u] * t["q"][i], axis=1))
  rmse = np.sqrt(np.mean((pred - ds.y_test) ** 2))
  # The mean of n squared N(0, s^2) draws has relative sd sqrt(2/n), so the
  # RMSE has relative sd about 1/sqrt(2n); allow five of them.
  n = len(ds.y_test)
  assert abs(rmse / 0.4 - 1) < 5 / np.sqrt(2 * n), rmse
  assert ds.info["noise_std"] == 0.4
  # Observed pairs are distinct, so no test rating is also a training one.
  pairs = np.concatenate([ds.x_train, ds.x_test])
  assert len(np.unique(pairs, axis=0)) == len(pairs)


def test_regression_true_function_reaches_the_noise_floor():
  ds = data.regression(n=20000, n_features=3, noise=0.3, seed=2)
  pred = np.sin(ds.x_test.astype(np.float64) @ ds.info["w"])[:, None]
  rmse = np.sqrt(np.mean((pred - ds.y_test) ** 2))
  assert abs(rmse / 0.3 - 1) < 5 / np.sqrt(2 * len(ds.y_test)), rmse


# --- standardisation ----------------------------------------------------------

def test_standardize_uses_training_statistics_only():
  ds = data.digits()
  st = data.standardize(ds)
  x = ds.x_train.astype(np.float64)
  mean, std = x.mean(0), x.std(0)
  # Some digit pixels are 0 in every training image: std 0 is taken as 1.
  assert (std == 0).any()
  std = np.where(std == 0, 1, std)
  np.testing.assert_allclose(st.info["mean"], mean, rtol=1e-6)
  np.testing.assert_allclose(st.info["std"], std, rtol=1e-6)
  np.testing.assert_allclose(st.x_train, (x - mean) / std, rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(st.x_test, (ds.x_test - mean) / std, rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(st.x_train.mean(0), 0, atol=1e-5)
  # The test split keeps its own offset: it was not used for the statistics.
  assert np.abs(st.x_test.mean(0)).max() > 1e-3
  assert st.x_train.dtype == np.float32
  np.testing.assert_array_equal(st.y_train, ds.y_train)
  assert "mean" not in ds.info                     # the input is unchanged
  assert data.standardize(st) is st                # and it is idempotent


def test_standardize_leaves_ratings_alone_and_load_applies_it():
  r = data.ratings(n_users=20, n_items=20, density=0.5)
  assert data.standardize(r) is r
  st = data.load("spirals", standardize=True)
  np.testing.assert_allclose(st.x_train.mean(0), 0, atol=1e-6)
  np.testing.assert_allclose(st.x_train.std(0), 1, atol=1e-5)


# --- load by name -------------------------------------------------------------

def test_unknown_name_and_option():
  with pytest.raises(UnknownNameError, match="unknown dataset 'cifar'.*digits"):
    data.load("cifar")
  with pytest.raises(ConfigError, match="'xor' takes no option 'n'"):
    data.load("xor", n=5)
  with pytest.raises(ConfigError, match="test_fraction"):
    data.load("spirals", test_fraction=1.5)


def test_load_passes_a_path_to_from_file(tmp_path):
  path = tmp_path / "mine.npz"
  np.savez(path, x=np.arange(20.0).reshape(10, 2), y=np.arange(10) % 2)
  ds = data.load(str(path), seed=1)
  assert ds.name == "mine.npz" and len(ds.y_test) == 2
  assert data.load(path, seed=1).x_train.tolist() == ds.x_train.tolist()


# --- MNIST-1D and its cache ---------------------------------------------------

@pytest.fixture(scope="module")
def mnist1d_cache(tmp_path_factory):
  """The cache folder after one real generation, and the dataset made."""
  folder = str(tmp_path_factory.mktemp("cache"))
  return folder, data.mnist1d(cache_dir=folder)


def test_mnist1d_is_make_dataset_with_default_arguments(mnist1d_cache):
  folder, ds = mnist1d_cache
  ref = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
  assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
  assert ds.n_classes == 10
  assert set(ds.y_train.tolist()) == set(range(10))
  np.testing.assert_array_equal(ds.x_train, ref["x"].astype(np.float32))
  np.testing.assert_array_equal(ds.x_test, ref["x_test"].astype(np.float32))
  np.testing.assert_array_equal(ds.y_train, ref["y"])
  np.testing.assert_array_equal(ds.y_test, ref["y_test"])
  # The cache keeps the package's float64 arrays bit for bit.
  with np.load(ds.info["cache"], allow_pickle=False) as f:
    for k in ("x", "y", "x_test", "y_test", "t"):
      assert f[k].dtype == ref[k].dtype
      np.testing.assert_array_equal(f[k], ref[k])
  assert os.path.dirname(ds.info["cache"]) == folder
  assert os.listdir(folder) == [os.path.basename(ds.info["cache"])]


def _forbid_make_dataset(monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError("make_dataset called despite a cache")
  monkeypatch.setattr(mnist1d.data, "make_dataset", fail)


def test_mnist1d_second_load_reads_the_cache(mnist1d_cache, monkeypatch):
  folder, ds = mnist1d_cache
  _forbid_make_dataset(monkeypatch)
  monkeypatch.setenv("FUNCNET_CACHE", folder)
  again = data.load("mnist1d", standardize=False)  # the cache holds raw inputs
  np.testing.assert_array_equal(again.x_train, ds.x_train)
  np.testing.assert_array_equal(again.y_test, ds.y_test)


def test_the_cache_root_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.setenv("FUNCNET_CACHE", str(tmp_path / "a"))
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "b"))
  assert paths.cache_root() == str(tmp_path / "a")
  monkeypatch.delenv("FUNCNET_CACHE")
  assert paths.cache_root() == str(tmp_path / "b" / "funcnet")
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.setenv("HOME", str(tmp_path / "c"))
  assert paths.cache_root() == str(tmp_path / "c" / ".cache" / "funcnet")


def _fake_make_dataset(ds, calls):
  """A stand-in for make_dataset that returns the cached arrays, counting."""
  with np.load(ds.info["cache"], allow_pickle=False) as f:
    raw = {k: f[k] for k in f.files}

  def make(args=None, template=None):
    calls.append(1)
    # Like the real one, it reseeds the global generators.
    np.random.seed(42)
    random.seed(42)
    return {**raw, "templates": {"x": None, "t": None, "y": None}}
  return make


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_a_damaged_cache_file_is_rebuilt(mnist1d_cache, monkeypatch, tmp_path,
                                         damage):
  _, ds = mnist1d_cache
  path = tmp_path / os.path.basename(ds.info["cache"])
  shutil.copy(ds.info["cache"], path)
  size = path.stat().st_size
  if damage == "truncate":
    with open(path, "r+b") as f:
      f.truncate(size // 2)
  else:
    path.write_bytes(b"not a zip file" if damage == "garbage" else b"")
  calls = []
  monkeypatch.setattr(mnist1d.data, "make_dataset",
                      _fake_make_dataset(ds, calls))
  rebuilt = data.mnist1d(cache_dir=str(tmp_path))
  assert calls == [1]
  np.testing.assert_array_equal(rebuilt.x_train, ds.x_train)
  assert path.stat().st_size == size
  data.mnist1d(cache_dir=str(tmp_path))
  assert calls == [1]                      # the rebuilt file is used
  assert os.listdir(tmp_path) == [path.name]


def test_mnist1d_generation_restores_the_global_generators(
    mnist1d_cache, monkeypatch, tmp_path):
  _, ds = mnist1d_cache
  monkeypatch.setattr(mnist1d.data, "make_dataset", _fake_make_dataset(ds, []))
  np.random.seed(3)
  random.seed(3)
  want = (np.random.random(), random.random())
  np.random.seed(3)
  random.seed(3)
  data.mnist1d(cache_dir=str(tmp_path))
  assert (np.random.random(), random.random()) == want


def test_a_failed_cache_write_leaves_no_file(mnist1d_cache, monkeypatch,
                                             tmp_path):
  _, ds = mnist1d_cache
  monkeypatch.setattr(mnist1d.data, "make_dataset", _fake_make_dataset(ds, []))

  def savez_then_die(f, **arrays):
    f.write(b"PK\x03\x04 half an archive")
    raise KeyboardInterrupt
  monkeypatch.setattr(np, "savez", savez_then_die)
  with pytest.raises(KeyboardInterrupt):
    data.mnist1d(cache_dir=str(tmp_path))
  assert os.listdir(tmp_path) == []


# --- a user's own files -------------------------------------------------------

def test_npz_with_test_arrays_is_used_as_given(tmp_path):
  path = tmp_path / "given.npz"
  x, xt = np.arange(12).reshape(6, 2), np.arange(4.0).reshape(2, 2)
  np.savez(path, x=x, y=np.array([0, 1, 2, 0, 1, 2]), x_test=xt,
           y_test=np.array([1.0, 3.0]))
  ds = data.from_file(path)
  np.testing.assert_array_equal(ds.x_train, x)
  np.testing.assert_array_equal(ds.y_test, [1, 3])
  assert ds.x_train.dtype == np.float32 and ds.y_test.dtype == np.int32
  assert ds.n_classes == 4 and ds.task == "classification"


def test_npz_without_test_arrays_is_split_stratified(tmp_path):
  path = tmp_path / "own.npz"
  rng = np.random.default_rng(0)
  y = rng.integers(0, 3, 100)
  np.savez(path, x=rng.standard_normal((100, 2, 3)), y=y)
  ds = data.from_file(path, seed=5)
  assert ds.x_train.shape == (80, 2, 3) and ds.x_test.shape == (20, 2, 3)
  assert data.in_shape(ds) == (2, 3) and data.n_features(ds) == 6
  _assert_stratified(ds.y_train, ds.y_test, 3)
  assert not np.array_equal(ds.y_test, data.from_file(path, seed=6).y_test)


def test_csv_classification_and_regression(tmp_path):
  path = tmp_path / "table.csv"
  rows = [f"{i},{i * 0.5},{i % 2}" for i in range(10)]
  path.write_text("a, b ,label\n" + "\n".join(rows) + "\n\n")
  ds = data.from_file(path, label="label")
  assert ds.x_train.shape == (8, 2) and ds.n_classes == 2
  x = np.concatenate([ds.x_train, ds.x_test])
  y = np.concatenate([ds.y_train, ds.y_test])
  np.testing.assert_array_equal(x[:, 0] % 2, y)          # rows stay whole
  reg = data.from_file(path, label="b", task="regression")
  assert reg.y_train.shape == (8, 1)
  np.testing.assert_allclose(reg.y_train[:, 0], reg.x_train[:, 0] * 0.5)


def test_ratings_csv(tmp_path):
  path = tmp_path / "r.csv"
  path.write_text("user,item,rating\n0,1,4\n2,0,3.5\n1,4,1\n0,0,5\n3,3,2\n")
  ds = data.from_file(path, task="ratings")
  assert ds.x_train.dtype == np.int32 and ds.y_train.dtype == np.float32
  assert (ds.info["n_users"], ds.info["n_items"]) == (4, 5)
  assert len(ds.y_train) == 4 and len(ds.y_test) == 1


def _npz(**arrays):
  return lambda path: np.savez(path, **arrays)


def _text(s):
  return lambda path: path.write_text(s)


def _truncated_npz(path):
  np.savez(path, x=np.zeros((100, 2)), y=np.zeros(100, int))
  with open(path, "r+b") as f:
    f.truncate(path.stat().st_size // 2)


_X = np.zeros((10, 2))
_Y = np.arange(10) % 2
_NAN = _X.copy()
_NAN[3, 1] = np.nan

# file name, how to write it (None: not at all), options, expected message part
BAD_FILES = [
    ("nope.npz", None, {}, "no such file"),
    ("data.txt", _text("1,2\n"), {}, "unknown extension '.txt'"),
    ("data", _text("1,2\n"), {}, "unknown extension '(none)'"),
    ("only_x.npz", _npz(x=_X, z=_Y), {}, "missing array(s) y; found: x, z"),
    ("half_test.npz", _npz(x=_X, y=_Y, x_test=_X), {},
     "missing array(s) y_test; found: x, x_test, y"),
    ("lengths.npz", _npz(x=_X, y=_Y[:9]), {},
     "x has 10 examples but y has 9"),
    ("nan.npz", _npz(x=_NAN, y=_Y), {}, "NaN or infinite values in 1 "
     "example(s), first at row 3 of 'x'"),
    ("inf_test.npz", _npz(x=_X, y=_Y, x_test=np.full((2, 2), np.inf),
                          y_test=_Y[:2]), {}, "row 0 of 'x_test'"),
    ("half_labels.npz", _npz(x=_X, y=np.r_[0, 1, 1.5, 0, 1, 0, 1, 0, 1, 0]),
     {}, "labels must be non-negative integers but row 2 of 'y' has 1.5"),
    ("negative.npz", _npz(x=_X, y=-_Y), {}, "has -1"),
    ("onehot.npz", _npz(x=_X, y=np.eye(2)[_Y]), {},
     "labels have shape (10, 2); expected (10,)"),
    ("nan_target.npz", _npz(x=_X, y=np.r_[np.nan, _Y[1:]]),
     {"task": "regression"}, "targets have NaN or infinite values"),
    ("strings.npz", _npz(x=np.array([["a", "b"]] * 10), y=_Y), {},
     "dtype <U1; expected numbers"),
    ("objects.npz", _npz(x=_X, y=np.array([{}] * 10, dtype=object)), {},
     "array 'y' holds Python objects"),
    ("test_width.npz", _npz(x=_X, y=_Y, x_test=np.zeros((2, 3)),
                            y_test=_Y[:2]), {},
     "x_test examples have shape (3,) but x examples have (2,)"),
    ("garbage.npz", _text("no zip here"), {}, "cannot be read as .npz"),
    ("cut.npz", _truncated_npz, {}, "cannot be read"),
    ("single.npz", lambda p: np.save(p.with_suffix(".npy"), _X)
     or p.with_suffix(".npy").rename(p), {},
     "holds a single array"),
    ("tiny.npz", _npz(x=_X[:1], y=_Y[:1]), {}, "too few to split"),
    ("empty.csv", _text(""), {"label": "y"}, "is empty"),
    ("blank.csv", _text("\n\n"), {"label": "y"}, "is empty"),
    ("header.csv", _text("a,b,y\n"), {"label": "y"}, "header but no data rows"),
    ("nolabel.csv", _text("a,b,c\n1,2,3\n"), {},
     "label= must name the label column of a .csv; columns are: a, b, c"),
    ("wronglabel.csv", _text("a,b,c\n1,2,3\n"), {"label": "y"},
     "no column 'y'; columns are: a, b, c"),
    ("word.csv", _text("a,b,y\n1,2,0\n3,abc,1\n"), {"label": "y"},
     "line 3, column 'b': cannot parse 'abc' as a number"),
    ("blankcell.csv", _text("a,b,y\n1,2,0\n3,,1\n"), {"label": "y"},
     "line 3, column 'b': cannot parse ''"),
    ("nan.csv", _text("a,b,y\n1,2,0\n\n3,nan,1\n"), {"label": "y"},
     "line 4, column 'b': 'nan' is not a finite number"),
    ("ragged.csv", _text("a,b,y\n1,2,0\n3,1\n"), {"label": "y"},
     "line 3 has 2 fields but the header has 3"),
    ("halfclass.csv", _text("a,y\n1,0\n2,1\n3,2.5\n"), {"label": "y"},
     "line 4 has 2.5"),
    ("onlylabel.csv", _text("y\n1\n0\n"), {"label": "y"},
     "has only the label column"),
    ("ratings.csv", _text("user,movie,rating\n1,2,3\n"), {"task": "ratings"},
     "ratings need columns user, item, rating; columns are: user, movie"),
    ("badindex.csv", _text("user,item,rating\n1,2,3\n1,0.5,3\n"),
     {"task": "ratings"}, "user/item indices must be non-negative integers "
     "but line 3 has [1.0, 0.5]"),
]


@pytest.mark.parametrize("name,write,options,problem", BAD_FILES,
                         ids=[b[0] for b in BAD_FILES])
def test_bad_files_raise_one_line_naming_file_and_problem(
    tmp_path, name, write, options, problem):
  path = tmp_path / name
  if write is not None:
    write(path)
  with pytest.raises(DataError) as e:
    data.from_file(path, **options)
  message = str(e.value)
  assert "\n" not in message
  assert message.startswith(f"data file {path}: ")
  assert problem in message, message


def test_unknown_task():
  with pytest.raises(UnknownNameError, match="unknown task 'images'"):
    data.from_file("x.npz", task="images")
