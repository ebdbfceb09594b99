"""Backpropagation through time, written by hand (funcnet/models/rnn.py),
against ``jax.vjp``/``jax.grad`` of the forward and finite differences.

Layer by layer: each cell's step backward alone, then :func:`bptt` over a
whole sequence, then the full models (tanh RNN, GRU, bidirectional, dropout,
several features per step, T = 1 and T = 7) through ``gradcheck.compare`` and
leaf by leaf, and ``hidden_grad_norms`` against the gradient with respect to
an additive perturbation of every hidden state.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from jax.flatten_util import ravel_pytree

from funcnet import autodiff, backprop, gradcheck, layers
from funcnet.errors import ConfigError
from funcnet.models import mlp, rnn
from funcnet.models.rnn import CELLS as MODEL_CELLS
from funcnet.models.rnn import (bptt, gru_cell_init, gru_step,
                                gru_step_backward, gru_step_forward,
                                hidden_grad_norms, rnn_cell_init, rnn_step,
                                rnn_step_backward, rnn_step_forward,
                                scan_forward)
from helpers import rel, tree_rel

CELLS = {"rnn": (rnn_cell_init, rnn_step_forward, rnn_step_backward, rnn_step),
         "gru": (gru_cell_init, gru_step_forward, gru_step_backward, gru_step)}


def _cell(cell, seed, m, f, h):
  """Float64 params with non-zero biases, a state, an input and a ``dh``
  (numpy's generator: no compilation per shape)."""
  init = CELLS[cell][0]
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: init(jax.random.key(0), f, h, jnp.float64))
  params = jax.tree_util.tree_map(
      lambda s: jnp.asarray(0.6 * rng.normal(size=s.shape)), shapes)
  return (params, jnp.asarray(0.8 * rng.normal(size=(m, h))),
          jnp.asarray(rng.normal(size=(m, f))),
          jnp.asarray(rng.normal(size=(m, h))))


# --- each step alone ----------------------------------------------------------

@pytest.mark.parametrize("cell", ["rnn", "gru"])
@settings(max_examples=3, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=st.integers(1, 4), f=st.integers(1, 3), h=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_step_backward_matches_vjp(cell, m, f, h, seed, x64):
  _, forward, backward, step = CELLS[cell]
  params, h0, x, dh = _cell(cell, seed, m, f, h)

  @jax.jit               # one compilation for both sides, under jit
  def both(params, h0, x, dh):
    h1, vjp = jax.vjp(step, params, h0, x)
    h_new, cache = forward(params, h0, x)
    return (h1,) + vjp(dh), (h_new,) + backward(params, cache, dh)
  (h1, dparams, dh0, dx), (h_new, got_dh0, got_dx, got_dparams) = both(
      params, h0, x, dh)
  np.testing.assert_array_equal(h_new, h1)
  assert got_dh0.shape == (m, h) and got_dx.shape == (m, f)
  assert rel(got_dh0, dh0) <= 1e-10
  assert rel(got_dx, dx) <= 1e-10
  assert tree_rel(got_dparams, dparams) <= 1e-10


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_step_backward_matches_finite_differences(cell, x64):
  # C = sum(w * h_t) for a fixed random w, so dC/dh_t = w; every entry of
  # (params, h_{t-1}, x_t) is perturbed by +-eps. The backward runs eagerly
  # here (the other tests run it under jit).
  _, forward, backward, step = CELLS[cell]
  params, h0, x, w = _cell(cell, 7, 2, 2, 3)
  theta, unravel = ravel_pytree((params, h0, x))

  @jax.jit
  def fd(theta):
    def c(th):
      p, hh, xx = unravel(th)
      return jnp.sum(w * step(p, hh, xx))
    shifts = 1e-6 * jnp.eye(theta.size, dtype=theta.dtype)
    return (jax.vmap(c)(theta + shifts) - jax.vmap(c)(theta - shifts)) / 2e-6
  dh0, dx, dparams = backward(params, forward(params, h0, x)[1], w)
  assert rel(ravel_pytree((dparams, dh0, dx))[0], fd(theta)) <= 1e-6


# --- through time --------------------------------------------------------------

@pytest.mark.parametrize("cell", ["rnn", "gru"])
@pytest.mark.parametrize("steps", [1, 7])
def test_bptt_matches_vjp_of_the_scan(cell, steps, x64):
  # Both directions: reverse=True is how the bidirectional model's second
  # cell reads, and its BPTT runs forward in time.
  _, forward, backward, step = CELLS[cell]
  params, h0, _, dh = _cell(cell, steps, 3, 2, 4)
  xs = jnp.asarray(np.random.default_rng(steps).normal(size=(steps, 3, 2)))

  @jax.jit
  def both(params, h0, xs, dh):
    out = []
    for reverse in (False, True):
      def last(p, h, xs):     # the plain step, scanned: an independent forward
        return jax.lax.scan(lambda c, x_t: (step(p, c, x_t), None), h, xs,
                            reverse=reverse)[0]
      h_last, vjp = jax.vjp(last, params, h0, xs)
      h, caches = scan_forward(forward, params, h0, xs, reverse=reverse)
      out.append(((h_last,) + vjp(dh),
                  (h,) + bptt(MODEL_CELLS[cell], params, caches, dh,
                              reverse=reverse)))
    return out

  for reverse, (want, got) in zip((False, True), both(params, h0, xs, dh)):
    h_last, dparams, dh0, dxs = want
    h, got_dparams, got_dh0, got_dxs, norms = got
    np.testing.assert_allclose(h, h_last, rtol=1e-14)
    assert tree_rel(got_dparams, dparams) <= 1e-10
    assert rel(got_dh0, dh0) <= 1e-10
    assert rel(got_dxs, dxs) <= 1e-10
    # the last state read is the one whose gradient is dh itself
    last_read = 0 if reverse else steps - 1
    assert norms.shape == (steps,)
    np.testing.assert_allclose(norms[last_read], np.linalg.norm(dh),
                               rtol=1e-14)


# --- the models -----------------------------------------------------------------

# (builder kwargs, in_shape): T = 7 or 1 steps, one or several features a step
MODELS = {
    "rnn_T7_bidirectional_features2_dropout": (
        dict(cell="rnn", bidirectional=True, dropout=0.4, input_features=2),
        (14,)),
    "gru_T7_bidirectional_dropout": (
        dict(cell="gru", bidirectional=True, dropout=0.4), (7, 2)),
    "gru_T7": (dict(cell="gru"), (7,)),
    "rnn_T1": (dict(cell="rnn"), (1,)),
    "gru_T1_bidirectional_features3": (
        dict(cell="gru", bidirectional=True), (1, 3)),
}


def _model(name, dtype=jnp.float64, m=4):
  """A model of :data:`MODELS` (or a ``(kwargs, in_shape)``), float ``dtype``
  params with non-zero biases, ``x: (m, *in_shape)`` and labels."""
  kwargs, in_shape = MODELS[name] if isinstance(name, str) else name
  model = rnn(in_shape, 3, hidden=3, **kwargs)
  rng = np.random.default_rng(len(str(name)))
  params = jax.tree_util.tree_map(
      lambda s: jnp.asarray(0.6 * rng.normal(size=s.shape), dtype),
      jax.eval_shape(model.init, jax.random.key(0)))
  x = jnp.asarray(rng.normal(size=(m, *in_shape)), dtype)
  return model, params, x, jnp.arange(m) % 3


# gradcheck compiles three functions a model: two models cover both cells,
# both directions, T = 1 and T = 7 and several features a step (it passes no
# key; dropout, and every model, is checked leaf by leaf below).
@pytest.mark.parametrize("name", ["rnn_T7_bidirectional_features2_dropout",
                                  "gru_T1_bidirectional_features3"])
def test_gradcheck_has_the_manual_column_and_passes(name, x64):
  model, params, x, y = _model(name)
  report = gradcheck.compare(model, "cross_entropy", params, x, y,
                             max_entries=8)
  assert report.manual, str(report)
  assert all(r.manual_autodiff_rel is not None for r in report.rows)
  assert report.ok(), str(report)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_manual_matches_autodiff_for_every_leaf(name, x64):
  # With the key where the model has dropout (the masks must be the ones
  # logits draws); the keyless path is gradcheck's above.
  model, params, x, y = _model(name)
  manual = backprop.value_and_grad(model, "cross_entropy")
  auto = autodiff.value_and_grad(model, "cross_entropy")
  key = jax.random.key(5) if model.spec["dropout"] else None

  @jax.jit               # one compilation for both
  def both(params, x, y, key):
    return (manual(params, x, y, key), auto(params, x, y, key),
            model.logits(params, x) - model.logits(params, x, key))
  (c_m, g_m), (c_a, g_a), dropped = both(params, x, y, key)
  assert rel(c_m, c_a) <= 1e-14
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(g_m)[0],
                          jax.tree_util.tree_leaves(g_a)):
    assert rel(a, b) <= 1e-10, jax.tree_util.keystr(path)
  # the key really switches dropout on
  assert (np.abs(dropped).max() > 1e-3) == bool(model.spec["dropout"])


def test_float32_path(x64):
  # What training runs by default: float32 params and data. With float32
  # params and float64 data (x64 on) the passes run in float64 and the
  # gradients come back in the params' dtype, as jax.grad returns them.
  model, params, x, y = _model("gru_T1_bidirectional_features3", jnp.float32)
  manual = backprop.value_and_grad(model, "cross_entropy")
  auto = autodiff.value_and_grad(model, "cross_entropy")
  both = jax.jit(lambda p, x, y, k: (manual(p, x, y, k), auto(p, x, y, k)))
  for xx in (x, x.astype(jnp.float64)):
    (c_m, g_m), (c_a, g_a) = both(params, xx, y, jax.random.key(1))
    assert jax.tree_util.tree_map(lambda a: a.dtype, g_m) == \
        jax.tree_util.tree_map(lambda a: a.dtype, g_a)
    assert tree_rel(g_m, g_a) <= 1e-5 and rel(c_m, c_a) <= 1e-6


# --- dC/dh_t through time -----------------------------------------------------

def _dh_by_autodiff(model, params, x, y, key=None):
  """``||dC/dh_t||`` by ``jax.grad``: the model's forward rewritten with the
  public steps and an additive ``eps_t`` on every state, differentiated at
  ``eps = 0``. ``(directions, T)``."""
  spec = model.spec
  hidden, step = spec["hidden"], CELLS[spec["cell"]][3]
  shape = spec["in_shape"]
  features = shape[1] if len(shape) == 2 else spec["input_features"]
  m = x.shape[0]
  xs = jnp.swapaxes(x.reshape(m, -1, features), 0, 1)        # (T, m, F)
  n_dirs = 2 if spec["bidirectional"] else 1

  def read(p, xs, eps, reverse):
    h0 = jnp.zeros((m, hidden), x.dtype)
    return jax.lax.scan(lambda h, xe: (step(p, h, xe[0]) + xe[1], None), h0,
                        (xs, eps), reverse=reverse)[0]

  def loss(eps):
    h = read(params["fwd"], xs, eps[0], False)
    if n_dirs == 2:
      h = jnp.concatenate([h, read(params["bwd"], xs, eps[1], True)], -1)
    z = layers.dropout(h, spec["dropout"], key) @ params["head"]["W"] \
        + params["head"]["b"]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], 1))
  g = jax.jit(jax.grad(loss))(jnp.zeros((n_dirs,) + xs.shape[:2] + (hidden,),
                                        x.dtype))
  return jnp.sqrt(jnp.sum(g * g, axis=(2, 3)))


@pytest.mark.parametrize("name", ["rnn_T7_bidirectional_features2_dropout",
                                  "gru_T7"])
def test_hidden_grad_norms_match_autodiff(name, x64):
  # (a unidirectional tanh RNN is checked in the test below)
  model, params, x, y = _model(name)
  key = jax.random.key(2) if model.spec["dropout"] else None
  got = jax.jit(lambda p, x, y, k: hidden_grad_norms(
      model, "cross_entropy", p, x, y, k))(params, x, y, key)
  want = _dh_by_autodiff(model, params, x, y, key)
  if model.spec["bidirectional"]:
    assert got.shape == want.shape == (2, 7)
  else:
    assert got.shape == (7,) and want.shape == (1, 7)
    want = want[0]
  assert rel(got, want) <= 1e-10


def test_hidden_grad_norms_vanish_with_small_recurrent_weights(x64):
  # dh_{t-1} = (dh_t * (1 - h_t^2)) Wh^T and |1 - h^2| <= 1, so
  # ||dC/dh_{t-1}|| <= ||Wh||_2 ||dC/dh_t||: with ||Wh||_2 = 0.2 the norm
  # falls at least five-fold every step back in time.
  model, params, x, y = _model((dict(cell="rnn"), (7,)))
  q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
  params["fwd"]["Wh"] = jnp.asarray(0.2 * q)
  spectral = np.linalg.norm(np.asarray(params["fwd"]["Wh"]), 2)
  np.testing.assert_allclose(spectral, 0.2, rtol=1e-12)
  want = np.asarray(_dh_by_autodiff(model, params, x, y)[0])   # t = 1..7
  got = hidden_grad_norms(model, "cross_entropy", params, x, y)
  assert got.shape == (7,) and rel(got, want) <= 1e-10
  assert np.all(want[:-1] <= spectral * want[1:] * (1 + 1e-12))
  assert want[0] / want[-1] <= spectral ** 6          # <= 6.4e-5
  assert want[0] / want[-1] > 0                       # small, not zero


def test_hidden_grad_norms_refuses_other_models():
  model = mlp([2, 3, 2], output_activation="softmax")
  with pytest.raises(ConfigError, match="expected kind 'rnn' or 'gru'"):
    hidden_grad_norms(model, "cross_entropy", None, None, None)
