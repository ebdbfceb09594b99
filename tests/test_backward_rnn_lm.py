"""Recurrent language models (funcnet/models/rnn_lm.py): the hand-written
LSTM step and BPTT against ``jax.vjp``/``jax.grad`` of an LSTM written
here gate by gate, the whole model per leaf for each cell, the one-token
decoder against the whole-window logits, ``time_step_grad_norms``
against the gradient of an additive perturbation of every hidden state,
and the gradient check's three columns.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import autodiff, backprop, gradcheck, layers
from funcnet.errors import ConfigError, ShapeError
from funcnet.model import DataSpec
from funcnet.models import mlp, registry
from funcnet.models.rnn import gru_step, rnn_step
from funcnet.models.rnn_lm import (forward, lstm_step_backward,
                                   lstm_step_forward, rnn_lm,
                                   time_step_grad_norms)
from helpers import rel, tree_rel

V, T, M = 7, 5, 3          # tokens, window, batch: tiny, so each jit is quick


def lstm_reference(p, state, x):
  """One LSTM step from the equations, gate by gate, each gate its own
  products (the model fuses the four): the reference the tests
  differentiate."""
  h, c = state
  n = h.shape[-1]

  def pre(k):             # gate k's pre-activation: columns k H .. (k+1) H
    cols = slice(k * n, (k + 1) * n)
    return x @ p["Wx"][:, cols] + h @ p["Wh"][:, cols] + p["b"][cols]
  i, f, o = (jax.nn.sigmoid(pre(k)) for k in range(3))
  c_new = f * c + i * jnp.tanh(pre(3))
  return o * jnp.tanh(c_new), c_new


# Each cell's step on a state tuple, h first: the references.
REFERENCE_STEPS = {"lstm": lstm_reference,
                   "gru": lambda p, s, x: (gru_step(p, s[0], x),),
                   "tanh": lambda p, s, x: (rnn_step(p, s[0], x),)}


def _random_like(tree, rng, scale=0.6):
  return jax.tree_util.tree_map(
      lambda s: jnp.asarray(scale * rng.normal(size=s.shape)), tree)


def _model(cell="lstm", n_layers=1, dropout=0.0, seed=0):
  """A tiny float64 model with random params (non-zero biases), tokens and
  next tokens (numpy's generator: no compilation per shape)."""
  model = rnn_lm((T,), V, cell=cell, n_layers=n_layers, n_hidden=3,
                 d_embed=2, dropout=dropout)
  rng = np.random.default_rng(seed)
  params = _random_like(jax.eval_shape(
      lambda k: model.init(k, jnp.float64), jax.random.key(0)), rng)
  x = jnp.asarray(rng.integers(0, V, (M, T)), jnp.int32)
  y = jnp.asarray(rng.integers(0, V, (M, T)), jnp.int32)
  return model, params, x, y


# --- the LSTM step alone ---------------------------------------------------------

def test_lstm_step_backward_matches_vjp(x64):
  m, f, h = 2, 3, 4
  rng = np.random.default_rng(1)
  params = {"Wx": rng.normal(size=(f, 4 * h)), "Wh": rng.normal(size=(h, 4 * h)),
            "b": rng.normal(size=(4 * h,))}
  params = jax.tree_util.tree_map(jnp.asarray, params)
  state = (jnp.asarray(rng.normal(size=(m, h))),
           jnp.asarray(rng.normal(size=(m, h))))
  x = jnp.asarray(rng.normal(size=(m, f)))
  dstate = (jnp.asarray(rng.normal(size=(m, h))),
            jnp.asarray(rng.normal(size=(m, h))))

  @jax.jit                # one compilation for both sides
  def both(params, state, x, dstate):
    out, vjp = jax.vjp(lstm_reference, params, state, x)
    new, cache = lstm_step_forward(params, state, x)
    return (out,) + vjp(dstate), (new,) + lstm_step_backward(params, cache,
                                                              dstate)
  (out, dparams, dstate0, dx), (new, got_dstate0, got_dx, got_dparams) = both(
      params, state, x, dstate)
  np.testing.assert_allclose(new, out, rtol=1e-13)
  assert tree_rel(got_dstate0, dstate0) <= 1e-10    # (dh_{t-1}, dc_{t-1})
  assert rel(got_dx, dx) <= 1e-10
  assert tree_rel(got_dparams, dparams) <= 1e-10


# --- the whole model -----------------------------------------------------------------

# (a one-layer LSTM without dropout: the gradient check below, entry by entry)
@pytest.mark.parametrize("cell, n_layers, dropout", [
    ("lstm", 2, 0.4), ("gru", 1, 0.0), ("tanh", 1, 0.0)])
def test_manual_matches_autodiff_for_every_leaf(cell, n_layers, dropout, x64):
  model, params, x, y = _model(cell, n_layers, dropout)
  manual = backprop.value_and_grad(model, "cross_entropy")
  auto = autodiff.value_and_grad(model, "cross_entropy")
  key = jax.random.key(5) if dropout else None

  both = jax.jit(lambda *a: (manual(*a), auto(*a)))  # one compilation
  (c_m, g_m), (c_a, g_a) = both(params, x, y, key)
  assert rel(c_m, c_a) <= 1e-14
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(g_m)[0],
                          jax.tree_util.tree_leaves(g_a)):
    assert rel(a, b) <= 1e-10, jax.tree_util.keystr(path)
  # the key switches dropout on: a mask on every layer's output (traced
  # only, nothing compiled)
  masks = jax.eval_shape(lambda p, x, k: forward(model.spec, p, x, k)[1].masks,
                         params, x, key)
  assert [mask is not None for mask in masks] == [bool(dropout)] * n_layers


def test_gradcheck_has_the_manual_column_and_passes(x64):
  model, params, x, y = _model("lstm", seed=3)
  report = gradcheck.compare(model, "cross_entropy", params, x, y,
                             max_entries=6)
  assert report.manual, str(report)
  assert [r.name for r in report.rows] == [
      "embed E", "head W", "head b", "layers 1 Wh", "layers 1 Wx",
      "layers 1 b"]
  assert all(r.manual_autodiff_rel is not None and r.manual_fd_rel is not None
             for r in report.rows)
  assert report.ok(), str(report)


def test_decoder_gives_the_logits_of_every_position(x64):
  # Fed the window one token at a time, the state carried, the decoder's
  # logits at t are logits(params, x)[:, t] (the window's forward is the
  # reference: the decoder is its one-position form).
  model, params, x, _ = _model("lstm", n_layers=2, dropout=0.4, seed=4)

  @jax.jit
  def both(params, x):
    carry, step = model.decoder(params, M, T)
    _, zs = jax.lax.scan(lambda c, xt: step(c, xt[0], xt[1]), carry,
                         (x.T, jnp.arange(T)))
    return jnp.swapaxes(zs, 0, 1), model.logits(params, x)
  got, want = both(params, x)
  assert got.shape == (M, T, V)
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


# --- dC/dh_t through time, per layer -----------------------------------------------

def _dh_norms_by_autodiff(model, params, x, y, key):
  """``||dC/dh^l_t||`` by ``jax.grad``: the model written again here with
  the reference steps and an additive ``eps^l_t`` on every hidden state
  (what the next step and the layer above read), differentiated at ``eps
  = 0``; also the reference's logits. ``(L, T)``."""
  spec = model.spec
  step, n_layers = REFERENCE_STEPS[spec["cell"]], spec["n_layers"]
  keys = ([None] * n_layers if key is None        # one per layer's output
          else jax.random.split(key, n_layers))

  def logits(eps):
    u = params["embed"]["E"][x.T]                  # (T, m, d)
    for l, p in enumerate(params["layers"]):
      state0 = tuple(jnp.zeros((M, spec["n_hidden"]))
                     for _ in range(2 if spec["cell"] == "lstm" else 1))

      def body(state, ue):
        state = step(p, state, ue[0])
        state = (state[0] + ue[1],) + state[1:]
        return state, state[0]
      u = jax.lax.scan(body, state0, (u, eps[l]))[1]
      u = layers.dropout(u, spec["dropout"], keys[l])
    return jnp.swapaxes(u, 0, 1) @ params["head"]["W"] + params["head"]["b"]

  def loss(eps):
    logp = jax.nn.log_softmax(logits(eps))
    return -jnp.mean(jnp.take_along_axis(logp, y[..., None], -1))
  eps = jnp.zeros((n_layers, T, M, spec["n_hidden"]))
  g = jax.grad(loss)(eps)
  return jnp.sqrt(jnp.sum(g * g, axis=(2, 3))), logits(eps)


def test_time_step_grad_norms_match_autodiff_of_a_perturbation(x64):
  # (no dropout: the backward's dropout is checked leaf by leaf above, and
  # random bits cost the most compilation time here)
  model, params, x, y = _model("lstm", n_layers=2, seed=6)
  key = None

  @jax.jit
  def both(params, x, y, key):
    return (time_step_grad_norms(model, params, x, y, key),
            model.logits(params, x, key),
            _dh_norms_by_autodiff(model, params, x, y, key))
  got, z, (want, z_ref) = both(params, x, y, key)
  np.testing.assert_allclose(z, z_ref, rtol=1e-12)   # the same model
  assert got.shape == (2, T)
  assert rel(got, want) <= 1e-10
  assert np.all(np.asarray(want) > 0)


def test_time_step_grad_norms_refuses_other_models():
  model = mlp([2, 3, 2], output_activation="softmax")
  with pytest.raises(ConfigError, match="expected kind 'rnn_lm'"):
    time_step_grad_norms(model, None, None, None)


# --- the config table ----------------------------------------------------------------

TEXT = DataSpec("text", "language", (T,), "int32", V)


@pytest.mark.parametrize("table, data, message", [
    ({"cell": "lstmx"}, TEXT,
     r"config \[model.rnn_lm\]: cell 'lstmx' must be one of: 'lstm', 'gru', "
     r"'tanh'$"),
    ({"dropout": 1.0}, TEXT, r"\[model.rnn_lm\]: dropout 1.0 must be in"),
    ({"forget_bias": "one"}, TEXT, r"forget_bias 'one' must be a finite"),
    ({"n_hidden": 0}, TEXT, r"n_hidden 0 must be a positive integer"),
    ({}, TEXT._replace(name="digits", x_dtype="float32"),
     r"needs token ids; 'digits' has float32 inputs; use data.name = 'text'"),
])
def test_a_bad_table_or_data_is_refused_with_one_line(table, data, message):
  with pytest.raises(ConfigError, match=message) as e:
    registry.from_config("rnn_lm", {**registry.get("rnn_lm").defaults,
                                    **table}, data)
  assert "\n" not in str(e.value)


def test_the_table_builds_the_model_the_data_sizes():
  model = registry.from_config("rnn_lm", registry.get("rnn_lm").defaults,
                               TEXT)
  assert (model.in_shape, model.n_out, model.kind) == ((T,), V, "rnn_lm")
  assert registry.rebuild(model.spec).spec == model.spec


def test_logits_read_any_window_length_of_integer_ids_only():
  # (traced only: nothing compiled)
  model = rnn_lm((T,), V, n_hidden=3, d_embed=2)
  params = jax.eval_shape(model.init, jax.random.key(0))
  for t in (1, T, 2 * T):      # a recurrent model reads any length
    z = jax.eval_shape(model.logits, params, jnp.zeros((M, t), jnp.int32))
    assert z.shape == (M, t, V)
  for x, message in ((jnp.zeros((M, T)), r"dtype float32; rnn_lm expects "
                      r"integer token ids$"),
                     (jnp.zeros((M,), jnp.int32), r"shape \(3,\); rnn_lm "
                      r"expects \(batch, T\) token ids$")):
    with pytest.raises(ShapeError, match=message):   # before any compute
      model.logits(params, x)
