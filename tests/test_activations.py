"""Each activation's forward rule against numpy, and its hand-written
derivative against float64 central differences and jax.grad."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import activations
from funcnet.errors import UnknownNameError

_erf = np.vectorize(math.erf)

NUMPY_F = {
    "identity": lambda z: z,
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0),
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
    "elu": lambda z: np.where(z > 0, z, np.exp(z) - 1),
    "softplus": lambda z: np.log1p(np.exp(z)),
    "gelu": lambda z: 0.5 * z * (1 + _erf(z / np.sqrt(2))),
    "silu": lambda z: z / (1 + np.exp(-z)),
}

ELEMENTWISE = sorted(NUMPY_F)


def _points(key):
  z = np.asarray(jax.random.uniform(key, (200,), jnp.float64, -6, 6))
  return z[np.abs(z) > 1e-3]  # away from the kinks of relu/leaky_relu


def test_every_activation_is_tested():
  assert set(ELEMENTWISE) | {"softmax"} == set(activations.names())


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_forward_matches_numpy(name, getkey, x64):
  z = _points(getkey())
  np.testing.assert_allclose(activations.get(name).f(jnp.asarray(z)),
                             NUMPY_F[name](z), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_derivative_matches_finite_differences(name, getkey, x64):
  z = _points(getkey())
  act = activations.get(name)
  h = 1e-6
  fd = (NUMPY_F[name](z + h) - NUMPY_F[name](z - h)) / (2 * h)
  zj = jnp.asarray(z)
  np.testing.assert_allclose(act.df(zj, act.f(zj)), fd, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_derivative_matches_jax_grad(name, getkey, x64):
  z = jnp.asarray(_points(getkey()))
  act = activations.get(name)
  auto = jax.vmap(jax.grad(act.f))(z)
  np.testing.assert_allclose(act.df(z, act.f(z)), auto, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["relu", "leaky_relu"])
def test_kink_convention_matches_autodiff_at_zero(name):
  act = activations.get(name)
  z = jnp.zeros((3,))
  np.testing.assert_array_equal(act.df(z, act.f(z)),
                                jax.vmap(jax.grad(act.f))(z))


def test_softmax_rows_sum_to_one_and_survive_large_logits(getkey, x64):
  z = jax.random.normal(getkey(), (5, 7), jnp.float64) * 400
  a = activations.get("softmax").f(z)
  assert np.all(np.isfinite(a))
  np.testing.assert_allclose(a.sum(axis=-1), 1.0, rtol=1e-14)
  small = np.asarray(z) / 400
  e = np.exp(small - small.max(-1, keepdims=True))
  np.testing.assert_allclose(activations.get("softmax").f(jnp.asarray(small)),
                             e / e.sum(-1, keepdims=True), rtol=1e-13)


def test_unknown_name_lists_known_ones():
  with pytest.raises(UnknownNameError, match="relu") as err:
    activations.get("rleu")
  assert "unknown activation 'rleu'" in str(err.value)
