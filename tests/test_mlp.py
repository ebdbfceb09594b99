"""The MLP's init and apply: shapes, initialiser statistics, purity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet


def test_params_are_plain_lists_of_dicts_with_the_documented_shapes(getkey):
  model = funcnet.mlp([784, 128, 10], activation="relu",
                      output_activation="softmax", init="he")
  params = model.init(getkey())
  assert isinstance(params, list) and len(params) == 2
  assert [type(p) for p in params] == [dict, dict]
  assert params[0]["W"].shape == (784, 128) and params[0]["b"].shape == (128,)
  assert params[1]["W"].shape == (128, 10) and params[1]["b"].shape == (10,)
  assert all(np.all(p["b"] == 0) for p in params)
  out = model.apply(params, jnp.ones((32, 784)))
  assert out.shape == (32, 10)
  np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_apply_matches_numpy_forward(getkey, x64):
  model = funcnet.mlp([5, 4, 3], activation="tanh", output_activation="sigmoid")
  params = model.init(getkey(), jnp.float64)
  x = np.asarray(jax.random.normal(getkey(), (6, 5), jnp.float64))
  h = np.tanh(x @ np.asarray(params[0]["W"]) + np.asarray(params[0]["b"]))
  z = h @ np.asarray(params[1]["W"]) + np.asarray(params[1]["b"])
  np.testing.assert_allclose(model.apply(params, jnp.asarray(x)),
                             1 / (1 + np.exp(-z)), rtol=1e-13)
  np.testing.assert_allclose(jax.jit(model.apply)(params, jnp.asarray(x)),
                             1 / (1 + np.exp(-z)), rtol=1e-13)


@pytest.mark.parametrize("init, std", [
    ("normal", lambda fi, fo: 1.0),
    ("he", lambda fi, fo: np.sqrt(2.0 / fi)),
    ("xavier", lambda fi, fo: np.sqrt(6.0 / (fi + fo)) / np.sqrt(3.0)),
])
def test_initialiser_scales(init, std, getkey):
  fan_in, fan_out = 400, 300
  W = np.asarray(funcnet.mlp([fan_in, fan_out], init=init).init(getkey())[0]["W"])
  # 120k samples: the sample std is within 1% of the true one.
  assert abs(W.std() / std(fan_in, fan_out) - 1) < 0.01
  assert abs(W.mean()) < 0.01 * std(fan_in, fan_out)
  if init == "xavier":
    assert np.abs(W).max() <= np.sqrt(6.0 / (fan_in + fan_out))


def test_init_is_deterministic_in_the_key(getkey):
  model = funcnet.mlp([3, 5, 2])
  k = getkey()
  a, b, c = model.init(k), model.init(k), model.init(getkey())
  np.testing.assert_array_equal(a[0]["W"], b[0]["W"])
  assert not np.array_equal(a[0]["W"], c[0]["W"])


def test_init_dtype(getkey, x64):
  params = funcnet.mlp([3, 2]).init(getkey(), jnp.float64)
  assert params[0]["W"].dtype == jnp.float64


@pytest.mark.parametrize("sizes", [[3], [3, 0, 2], []])
def test_bad_sizes(sizes):
  with pytest.raises(funcnet.errors.ConfigError, match="sizes"):
    funcnet.mlp(sizes)
