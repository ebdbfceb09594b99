"""Losses against numpy formulas, their derivatives against finite
differences, and the stable from-logits forms against the naive ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import losses
from funcnet.errors import ShapeError, UnknownNameError
from helpers import central_differences


def _sigmoid(z):
  return 1 / (1 + np.exp(-z))


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_values_match_numpy(getkey, x64):
  z = np.asarray(jax.random.normal(getkey(), (6, 4), jnp.float64))
  y01 = np.asarray(jax.random.bernoulli(getkey(), 0.5, (6, 4)), np.float64)
  onehot = np.eye(4)[[0, 3, 1, 2, 2, 0]]
  a = _sigmoid(z)
  np.testing.assert_allclose(losses.mean("mse", "identity", z, y01),
                             np.mean(0.5 * ((z - y01) ** 2).sum(-1)), rtol=1e-14)
  np.testing.assert_allclose(
      losses.mean("bce", "sigmoid", z, y01),
      np.mean(-(y01 * np.log(a) + (1 - y01) * np.log(1 - a)).sum(-1)),
      rtol=1e-13)
  np.testing.assert_allclose(
      losses.mean("cross_entropy", "softmax", z, onehot),
      np.mean(-(onehot * np.log(_softmax(z))).sum(-1)), rtol=1e-13)
  # mse after a sigmoid output uses a = sigmoid(z).
  np.testing.assert_allclose(losses.mean("mse", "sigmoid", z, y01),
                             np.mean(0.5 * ((a - y01) ** 2).sum(-1)), rtol=1e-14)


@pytest.mark.parametrize("name", ["mse", "bce", "cross_entropy"])
def test_hand_written_derivative_matches_finite_differences(name, getkey, x64):
  loss = losses.get(name)
  a = np.asarray(jax.random.uniform(getkey(), (5, 3), jnp.float64, 0.05, 0.95))
  y = np.asarray(jax.random.uniform(getkey(), (5, 3), jnp.float64))
  # rows are independent: d(sum_i C_i)/da[i, j] = dC_i/da[i, j]
  fd = central_differences(lambda b: float(np.sum(loss.value(b, y))), a)
  np.testing.assert_allclose(loss.grad(jnp.asarray(a), jnp.asarray(y)), fd,
                             rtol=1e-7, atol=1e-9)


def test_from_logits_is_finite_where_the_naive_form_is_not():
  z = jnp.array([[800.0, -800.0]])
  y = jnp.array([[0.0, 1.0]])
  assert np.isfinite(losses.mean("bce", "sigmoid", z, y))
  np.testing.assert_allclose(losses.mean("bce", "sigmoid", z, y), 1600.0)
  assert np.isfinite(losses.mean("cross_entropy", "softmax", z, y))
  np.testing.assert_allclose(losses.mean("cross_entropy", "softmax", z, y), 1600.0)


def test_integer_labels_equal_one_hot_rows(x64):
  y = jnp.array([2, 0, 1])
  rows = losses.prepare_targets("cross_entropy", y, (3, 3), jnp.float64)
  np.testing.assert_array_equal(rows, np.eye(3)[[2, 0, 1]])


@pytest.mark.parametrize("y, msg", [
    (jnp.array([0, 1, 3]), r"labels range over \[0, 3\].*expected labels in \[0, 2\]"),
    (jnp.array([0, -1, 2]), r"labels range over \[-1, 2\]"),
    (jnp.array([0, 1]), "x has 3 examples but y has 2"),
    (jnp.zeros((3, 4)), r"expected \(3, 3\)"),
    (jnp.array([0.0, 1.0, 2.0]), "must be integers"),
])
def test_bad_targets_raise_one_line(y, msg):
  with pytest.raises(ShapeError, match=msg) as err:
    losses.prepare_targets("cross_entropy", y, (3, 3), jnp.float64)
  assert "\n" not in str(err.value)


def test_pairs_that_make_no_sense_are_refused():
  with pytest.raises(ShapeError, match="cannot follow output activation 'tanh'"):
    losses.check_pair("cross_entropy", "tanh")
  with pytest.raises(ShapeError, match="bce"):
    losses.check_pair("bce", "identity")


def test_unknown_loss():
  with pytest.raises(UnknownNameError, match="cross_entropy"):
    losses.get("xent")
