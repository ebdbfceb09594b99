"""User mistakes in data files and config values: each one line, never a
traceback, never silently accepted (issue 14).

Most cases call the library (``funcnet.data.load``, ``funcnet.config``);
four run ``funcnet train`` in a subprocess as a user does and check the one
``funcnet: error:`` line and exit status 2."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from funcnet import config, data
from funcnet.data import files
from funcnet.errors import ConfigError, DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
ENV.pop("JAX_ENABLE_X64", None)

_X = np.random.default_rng(0).standard_normal((20, 2))
_Y = np.arange(20) % 2


def _npz(tmp_path, name="d.npz", **arrays):
  path = tmp_path / name
  np.savez(path, **arrays)
  return path


def _refused(path, *parts, **options):
  """The one-line DataError ``data.load(path)`` raises, checked to name
  the file and each of ``parts``."""
  with pytest.raises(DataError) as e:
    data.load(path, **options)
  message = str(e.value)
  assert "\n" not in message
  assert message.startswith(f"data file {path}: "), message
  for part in parts:
    assert part in message, message
  return message


# --- labels, checked before the int32 cast -----------------------------------

@pytest.mark.parametrize("bad,shown", [
    (1.5, "has 1.5"), (-1, "has -1"), (np.inf, "has inf"), (np.nan, "has nan"),
])
def test_labels_must_be_finite_non_negative_integers(tmp_path, bad, shown):
  y = np.r_[_Y[:-1], bad].astype(np.float64)
  _refused(_npz(tmp_path, x=_X, y=y), "non-negative integers",
           "row 19 of 'y'", shown)


def test_labels_as_whole_floats_become_int32(tmp_path):
  y = (np.arange(20) % 3).astype(np.float64)   # 0.0, 1.0, 2.0
  ds = data.load(_npz(tmp_path, x=_X, y=y))
  assert ds.y_train.dtype == np.int32 and ds.n_classes == 3


@pytest.mark.parametrize("label,shown", [
    (2**40, "1099511627776"), (2**31, "2147483648"), (1e300, "1e+300")])
def test_label_beyond_int32_is_refused_not_wrapped(tmp_path, label, shown):
  # An int32 cast turns 2**40 into 0: a silently relabelled example.
  y = np.r_[_Y[:-1], label]
  _refused(_npz(tmp_path, x=_X, y=y), "must fit in int32", "row 19 of 'y'",
           f"has {shown}")


def test_user_item_index_beyond_int32_is_refused(tmp_path):
  x = np.zeros((10, 2), np.int64)
  x[4] = (1, 2**40)
  _refused(_npz(tmp_path, x=x, y=np.ones(10)), "user/item indices",
           "int32", "row 4 of 'x'", "[1, 1099511627776]", task="ratings")


def test_far_too_many_classes_for_the_labels_present_is_refused(tmp_path):
  # max label + 1 classes would be a 10**9-wide output layer.
  y = np.r_[_Y[:-1], 1e9]
  _refused(_npz(tmp_path, x=_X, y=y), "largest label 1000000000",
           "1000000001 classes", "only 3 distinct labels")


@pytest.mark.parametrize("labels,n_classes", [
    ([1, 2], 3),          # 1-based: class 0 unused, 3 <= 2 * 2
    ([0, 1, 3], 4),       # one class missing
    ([0, 2, 5], 6),       # the most the rule allows: 6 = 2 * 3
])
def test_a_few_unused_classes_are_accepted(tmp_path, labels, n_classes):
  y = np.resize(labels, 20)
  assert data.load(_npz(tmp_path, x=_X, y=y)).n_classes == n_classes


def test_sparse_labels_just_past_the_rule_are_refused(tmp_path):
  y = np.resize([0, 2, 6], 20)                 # 7 classes > 2 * 3
  _refused(_npz(tmp_path, x=_X, y=y), "largest label 6", "7 classes",
           "3 distinct labels")


def test_one_class_is_refused(tmp_path):
  _refused(_npz(tmp_path, x=_X, y=np.full(20, 4)), "only one class",
           "label 4")


def test_one_class_in_the_training_split_is_refused(tmp_path):
  path = _npz(tmp_path, x=_X, y=np.zeros(20), x_test=_X[:2],
              y_test=np.array([0, 1]))
  _refused(path, "training split has only one class", "label 0")


def test_one_class_after_the_split_is_refused(tmp_path):
  # Each class has one example: the stratified split sends class 1 to test.
  path = _npz(tmp_path, x=_X[:2], y=np.array([0, 1]))
  _refused(path, "training split has only one class", test_fraction=0.5)


# --- inputs ------------------------------------------------------------------

def test_max_input_is_the_square_root_of_float32_max():
  assert files.MAX_INPUT == pytest.approx(1.8446744e19, rel=1e-6)
  # Its square is still finite in float32, which is the point of the bound.
  assert np.isfinite(np.square(np.float32(files.MAX_INPUT)))


@pytest.mark.parametrize("value", [3e38, -2e19, 1e300])
def test_inputs_that_overflow_when_squared_are_refused(tmp_path, value):
  x = _X.copy()
  x[7, 1] = value
  _refused(_npz(tmp_path, x=x, y=_Y), f"|x| = {abs(value):.3g}",
           "row 7 of 'x'", "1.84e+19")


def test_inputs_at_the_bound_are_accepted(tmp_path):
  x = _X.copy()
  x[7, 1] = -1.8e19
  ds = data.load(_npz(tmp_path, x=x, y=_Y), test_fraction=0.5)
  assert np.isfinite(np.concatenate([ds.x_train, ds.x_test])).all()


def test_huge_inputs_in_a_csv_are_refused(tmp_path):
  path = tmp_path / "big.csv"
  path.write_text("a,label\n1,0\n3e38,1\n2,0\n4,1\n")
  _refused(path, "|x| = 3e+38", "line 3", label="label")


def test_complex_inputs_are_refused(tmp_path):
  # The float cast would drop the imaginary part with only a warning.
  _refused(_npz(tmp_path, x=_X * (1 + 1j), y=_Y), "dtype complex128",
           "expected real numbers")


# --- files -------------------------------------------------------------------

def test_csv_with_a_byte_order_mark(tmp_path):
  path = tmp_path / "excel.csv"
  rows = "".join(f"{i % 2},{i}\n" for i in range(10))
  path.write_text("label,a\n" + rows, encoding="utf-8-sig")
  assert path.read_bytes().startswith(b"\xef\xbb\xbf")
  ds = data.load(path, label="label")
  assert ds.n_classes == 2 and ds.x_train.shape == (8, 1)


def test_a_directory_is_not_a_data_file(tmp_path):
  path = tmp_path / "data.npz"
  path.mkdir()
  message = _refused(path, "is a directory; expected a .npz or .csv file")
  assert "no such file" not in message


# --- config: list items ------------------------------------------------------

@pytest.mark.parametrize("override,item,expected", [
    ("model.mlp.hidden=[64.5]", "item 64.5 is a float", "integers"),
    ('model.mlp.hidden=["a"]', "item 'a' is a string", "integers"),
    ("model.mlp.hidden=[true]", "item True is a boolean", "integers"),
    ("model.mlp.hidden=[[64]]", "item [64] is a list", "integers"),
    ("model.mlp.hidden=[32, 1.0]", "item 1.0 is a float", "integers"),
    ("data.classes=[1.5]", "item 1.5 is a float", "integers"),
])
def test_list_items_are_type_checked(override, item, expected):
  key = override.split("=")[0]
  with pytest.raises(ConfigError) as e:
    config.load(None, [override])
  message = str(e.value)
  assert message.startswith(f"config key {key!r} = ["), message
  assert item in message and f"expected a list of {expected}" in message


@pytest.mark.parametrize("overrides,key,value", [
    (["model.mlp.hidden=[32, 16]"], "model.mlp.hidden", [32, 16]),
    (["model.mlp.hidden=[]"], "model.mlp.hidden", []),
    (["data.classes=[3, 5]"], "data.classes", [3, 5]),
    (["model.kind=cnn", "model.cnn.channels=[4, 8]"], "model.cnn.channels",
     [4, 8]),
    (["model.kind=cnn", "model.cnn.image_shape=[8, 8]"],
     "model.cnn.image_shape", [8, 8]),
    (["model.kind=cnn", "model.cnn.hidden=[12]"], "model.cnn.hidden", [12]),
    (["model.kind=transformer", "model.transformer.stem_channels=[4]"],
     "model.transformer.stem_channels", [4]),
    (["model.kind=ncf", "data.name=ratings", "train.loss=mse",
      "model.ncf.hidden=[8]"], "model.ncf.hidden", [8]),
])
def test_every_list_key_still_takes_a_list_of_integers(overrides, key, value):
  assert config.flatten(config.load(None, overrides))[key] == value


def test_every_list_default_holds_integers():
  # The empty defaults are taken as integer lists (config._LIST_ITEM): a
  # new list key of another type must show it in its default.
  for key, default in config.flatten(config.DEFAULTS).items():
    if isinstance(default, list):
      assert all(type(v) is int for v in default), key


def test_list_items_in_a_toml_file_and_a_saved_config(tmp_path):
  path = tmp_path / "c.toml"
  path.write_text("[model.mlp]\nhidden = [64, 0.5]\n")
  with pytest.raises(ConfigError, match=r"item 0\.5 is a float"):
    config.load(path)
  with pytest.raises(ConfigError, match=r"item 'x' is a string"):
    config.from_dict({"data": {"classes": ["x"]}})


# --- config: seeds -----------------------------------------------------------

def test_the_seed_range_is_what_jax_and_numpy_both_take_as_distinct():
  low, high = config.SEED_RANGE
  assert (low, high) == (0, 2**32 - 1)
  np.random.default_rng(high)
  with pytest.raises(ValueError):
    np.random.default_rng(low - 1)
  key = lambda s: jax.random.key_data(jax.random.key(s)).tolist()
  assert key(high) != key(0)
  # Past the range jax (32-bit by default) would repeat seeds or fail.
  if not jax.config.jax_enable_x64:
    assert key(high + 1) == key(0)


@pytest.mark.parametrize("key", ["seed", "data.seed"])
@pytest.mark.parametrize("value", [-1, 2**32, 99999999999999999999999])
def test_seeds_outside_the_range_are_refused(key, value):
  with pytest.raises(ConfigError) as e:
    config.load(None, [f"{key}={value}"])
  message = str(e.value)
  assert f"config key {key!r} = {value}" in message
  assert "expected in [0, 4294967295]" in message


@pytest.mark.parametrize("key", ["seed", "data.seed"])
def test_largest_seed_is_accepted_and_documented(key):
  assert config.flatten(config.load(None, [f"{key}={2**32 - 1}"]))[key] \
      == 2**32 - 1
  assert "0 <= seed < 2**32" in config.DOCS[key]


def test_huge_seed_in_a_saved_config_is_refused():
  with pytest.raises(ConfigError, match="'seed' = 10000000000000000000000"):
    config.from_dict({"seed": 10**22})


# --- the command, as a user runs it ------------------------------------------

def _train(tmp_path, *sets):
  args = [sys.executable, "-m", "funcnet.cli", "train", "--set",
          "train.epochs=1", "--out", str(tmp_path / "r")]
  for s in sets:
    args += ["--set", s]
  proc = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr
  assert "Traceback" not in proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("funcnet: error:"), \
      proc.stderr
  assert not (tmp_path / "r" / "summary.json").exists()
  return lines[0]


def test_command_refuses_a_label_that_would_wrap(tmp_path):
  path = _npz(tmp_path, x=_X, y=np.r_[_Y[:-1], 2**40])
  line = _train(tmp_path, f"data.name={path}")
  assert "1099511627776" in line and "int32" in line


def test_command_refuses_inputs_that_overflow(tmp_path):
  x = _X.copy()
  x[3, 0] = 3e38
  line = _train(tmp_path, f"data.name={_npz(tmp_path, x=x, y=_Y)}")
  assert "|x| = 3e+38" in line and "row 3 of 'x'" in line


def test_command_refuses_a_directory(tmp_path):
  path = tmp_path / "mine.csv"
  path.mkdir()
  line = _train(tmp_path, f"data.name={path}")
  assert f"{path}: is a directory" in line


def test_command_refuses_a_huge_seed(tmp_path):
  line = _train(tmp_path, "seed=99999999999999999999999")
  assert "'seed' = 99999999999999999999999" in line


def test_selecting_one_class_is_refused():
  ds = data.load("digits")
  with pytest.raises(ConfigError, match=r"'data.classes' = \[3\] keeps one class"):
    data.select_classes(ds, [3])
  assert data.select_classes(ds, [3, 5]).n_classes == 2
