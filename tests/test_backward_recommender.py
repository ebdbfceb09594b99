"""The embedding lookup's backward and the recommenders' hand-written
gradients (matrix factorisation, NCF) against jax.vjp / jax.grad, finite
differences and a per-example numpy loop."""

import jax
import numpy as np
import pytest

from funcnet import autodiff, backprop, gradcheck, layers, losses
from funcnet.models import matrix_factorization, ncf
from helpers import central_differences

M = 7  # examples per batch: more than the 4 users and 3 items, so ids repeat


def _rel(a, b):
  a, b = np.ravel(np.asarray(a)), np.ravel(np.asarray(b))
  return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b),
                                     1e-300)


def _max_leaf_rel(g1, g2):
  assert (jax.tree_util.tree_structure(g1)
          == jax.tree_util.tree_structure(g2))
  return max(_rel(a, b) for a, b in zip(jax.tree_util.tree_leaves(g1),
                                        jax.tree_util.tree_leaves(g2)))


# ----------------------------------------------------------------- embedding

@pytest.mark.parametrize("n, d, ids_shape", [(3, 2, (6,)), (5, 4, (3, 4)),
                                             (1, 3, (2,))])
def test_embed_backward_is_the_vjp_and_a_scatter_add(n, d, ids_shape, x64):
  rng = np.random.default_rng(n)
  E = rng.normal(size=(n, d))
  # More lookups than rows: ids repeat.
  ids = rng.integers(0, n, ids_shape)
  dy = rng.normal(size=ids_shape + (d,))

  @jax.jit  # forward, backward and jax.vjp's answer, compiled once
  def both(params, ids, dy):
    y, cache = layers.embed_forward(params, ids)
    dx, grads = layers.embed_backward(params, cache, dy)
    _, vjp = jax.vjp(lambda p: layers.embed(p, ids), params)
    return y, dx, grads, vjp(dy)[0]

  y, dx, grads, ref_vjp = both({"E": E}, ids, dy)
  np.testing.assert_array_equal(y, E[ids])
  assert dx is None and set(grads) == {"E"} and grads["E"].shape == (n, d)
  assert _rel(grads["E"], ref_vjp["E"]) <= 1e-10

  # numpy: every lookup adds its row of dy; repeats accumulate.
  ref = np.zeros((n, d))
  np.add.at(ref, ids.reshape(-1), dy.reshape(-1, d))
  assert _rel(grads["E"], ref) <= 1e-10
  unused = np.setdiff1d(np.arange(n), ids)
  assert np.all(np.asarray(grads["E"])[unused] == 0)


def test_embed_backward_matches_finite_differences(x64):
  # C(E) = sum(w * E[ids]) is linear in E, so central differences are exact
  # up to rounding: dC/dE[r, k] = sum over p with ids[p] = r of w[p, k].
  rng = np.random.default_rng(0)
  E = rng.normal(size=(3, 2))
  ids = np.array([2, 0, 2, 2, 1, 0])
  w = rng.normal(size=(6, 2))
  fd = central_differences(lambda table: float(np.sum(w * table[ids])), E)
  grads = jax.jit(lambda p, i, g: layers.embed_backward(
      p, layers.embed_forward(p, i)[1], g)[1])({"E": E}, ids, w)
  assert _rel(grads["E"], fd) <= 1e-6


# ------------------------------------------------------------- the models

def _problem(model, seed):
  """float64 numpy params of the model's structure (biases and mu off 0, so
  their gradients are tested off the origin), ids with repeats, ratings.
  ``eval_shape`` only traces ``init``: nothing compiles."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0))
  params = jax.tree_util.tree_map(lambda s: 0.5 * rng.normal(size=s.shape),
                                  shapes)
  x = np.stack([rng.integers(0, 4, M), rng.integers(0, 3, M)], 1)
  y = rng.normal(size=M)
  return params, x, y


MODELS = {
    "mf": lambda: matrix_factorization(4, 3, rank=2, global_mean=0.5),
    "ncf_tanh_dropout": lambda: ncf(4, 3, embed=2, hidden=(4, 3),
                                    activation="tanh", dropout=0.5),
    "ncf_relu": lambda: ncf(4, 3, embed=2, hidden=(4,)),
    "ncf_no_hidden_dropout": lambda: ncf(4, 3, embed=2, hidden=(),
                                         dropout=0.3),
}
@pytest.mark.parametrize("name", ["mf", "ncf_relu"])
def test_gradient_check_has_the_manual_column_and_passes(name, x64):
  model = MODELS[name]()
  params, x, y = _problem(model, 0)
  report = gradcheck.compare(model, "mse", params, x, y, max_entries=3)
  assert report.manual
  assert all(r.manual_autodiff_rel is not None for r in report.rows)
  assert report.ok(), str(report)


# (model, losses): each loss with and without a dropout key. The gradient
# check above already compares mse without a key on mf and ncf_relu.
JITTED = [("mf", ("huber", "mae")),
          ("ncf_tanh_dropout", ("mse", "mae")),
          ("ncf_no_hidden_dropout", ("huber",))]


@pytest.mark.parametrize("name, loss_names", JITTED)
def test_manual_equals_autodiff_every_leaf_jitted(name, loss_names, x64):
  """One compiled function per model: manual and autodiff for each loss,
  without a key and with one (same key, so the same dropout masks)."""
  model = MODELS[name]()
  params, x, y = _problem(model, 1)

  @jax.jit
  def both(params, x, y, key):
    out = {}
    for loss in loss_names:
      for k in (None, key):
        out[loss, k is None] = (
            backprop.value_and_grad(model, loss)(params, x, y, k),
            autodiff.value_and_grad(model, loss)(params, x, y, k))
    # The forward alone with the key, for the mask check below.
    return out, model.logits(params, x, key)

  out, z_key = both(params, x, y, jax.random.key(3))
  for (loss, no_key), ((c_m, g_m), (c_a, g_a)) in out.items():
    assert abs(float(c_m) - float(c_a)) <= 1e-12 * abs(float(c_a)), loss
    assert _max_leaf_rel(g_m, g_a) <= 1e-10, (loss, no_key)
  # The manual pass drew the masks model.logits draws: its loss is the loss
  # of those logits; and the key really drops units where there is dropout.
  loss = loss_names[0]
  c_key, c_eval = out[loss, False][0][0], out[loss, True][0][0]
  np.testing.assert_allclose(
      float(c_key), float(losses.mean(loss, "identity", z_key, y[:, None])),
      rtol=1e-13)
  assert (float(c_key) != float(c_eval)) == (model.spec.get("dropout", 0) > 0)


def test_matrix_factorization_gradient_matches_a_numpy_loop(x64):
  """Each rating adds its own terms, written out per example:
  dC/dp_u += e q_i, dC/dq_i += e p_u, db_u += e, db_i += e, dmu += e with
  e = (r_hat - r) / m."""
  model = MODELS["mf"]()
  params, x, y = _problem(model, 2)
  p = jax.tree_util.tree_map(np.asarray, params)
  ref = {k: np.zeros_like(v) for k, v in p.items()}
  c = 0.0
  for (u, i), r in zip(x, y):
    r_hat = p["mu"] + p["b_user"][u] + p["b_item"][i] + p["P"][u] @ p["Q"][i]
    c += 0.5 * (r_hat - r) ** 2 / M
    e = (r_hat - r) / M
    ref["mu"] += e
    ref["b_user"][u] += e
    ref["b_item"][i] += e
    ref["P"][u] += e * p["Q"][i]
    ref["Q"][i] += e * p["P"][u]
  c_m, g_m = jax.jit(backprop.value_and_grad(model, "mse"))(params, x, y)
  np.testing.assert_allclose(float(c_m), c, rtol=1e-13)
  for k in ref:
    assert _rel(g_m[k], ref[k]) <= 1e-12, k
