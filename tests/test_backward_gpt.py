"""The character GPT (funcnet/models/gpt.py) and causal attention
(funcnet/layers/attention.py) against independent references.

Causal attention's forward against a numpy masked softmax and its backward
against ``jax.vjp``; the whole model's forward against numpy and its
causality (changing later tokens leaves earlier logits alone); the tied
head's gradient (the sum of the head's and the lookup's uses of ``E``)
against ``jax.grad``; the whole model's hand-written backward against
``jax.grad`` with a dropout key, and without one through
:func:`funcnet.gradcheck.compare` (manual, autodiff and finite
differences, one row per array); the key/value-cached decoder against the
full forward. Float64, small shapes, one jit per comparison (about 9 s of
CPU for the file, most of it XLA compiling).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from funcnet import autodiff, backprop, gradcheck, layers
from funcnet.errors import ConfigError, ShapeError
from funcnet.model import DataSpec
from funcnet.models import gpt as gpt_module, registry
from funcnet.models.gpt import gpt
from helpers import rel, tree_rel

pytestmark = pytest.mark.usefixtures("x64")

BLOCK, VOCAB = 6, 7


def _random_params(init, seed, scale=0.5):
  """Params shaped as ``init`` makes them, drawn N(0, scale^2) in numpy
  (non-zero biases, scales != 1): no compile, where an eager or jitted
  ``init`` costs seconds in this suite."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: init(jax.random.key(0), jnp.float64))
  return jax.tree_util.tree_map(
      lambda s: jnp.asarray(scale * rng.normal(size=s.shape)), shapes)


def _model(dropout=0.0, n_layers=1):
  return gpt(BLOCK, VOCAB, n_layers=n_layers, n_heads=2, d_model=4, d_ff=5,
             dropout=dropout)


def _data(model, seed=0, m=3, t=5):
  rng = np.random.default_rng(seed)
  params = _random_params(model.init, seed)
  x = jnp.asarray(rng.integers(0, VOCAB, (m, t)), jnp.int32)
  y = jnp.asarray(rng.integers(0, VOCAB, (m, t)), jnp.int32)
  return params, x, y


# --- causal attention -----------------------------------------------------------

def _np_causal_attention(p, x):
  """The causal forward in plain numpy, one head and one example at a time."""
  p = jax.tree_util.tree_map(np.asarray, p)
  m, t, _ = x.shape
  y = np.zeros_like(x) + p["o"]["b"]
  for i in range(m):
    for h in range(p["q"]["W"].shape[1]):
      q = x[i] @ p["q"]["W"][:, h] + p["q"]["b"][h]
      k = x[i] @ p["k"]["W"][:, h]
      v = x[i] @ p["v"]["W"][:, h] + p["v"]["b"][h]
      s = q @ k.T / np.sqrt(q.shape[1])
      s[np.triu_indices(t, 1)] = -np.inf
      a = np.exp(s - s.max(1, keepdims=True))
      a /= a.sum(1, keepdims=True)
      y[i] += (a @ v) @ p["o"]["W"][h]
  return y


def _np_gpt_logits(p, x):
  """The GPT's forward in plain numpy (no dropout), from its definition in
  funcnet/models/gpt.py's docstring."""
  p = jax.tree_util.tree_map(np.asarray, p)

  def ln(q, e):
    mu, var = e.mean(-1, keepdims=True), e.var(-1, keepdims=True)
    return q["scale"] * (e - mu) / np.sqrt(var + 1e-5) + q["bias"]

  E = p["tok"]["E"]
  e = E[np.asarray(x)] + p["pos"]["E"][:x.shape[1]]
  for b in p["blocks"]:
    e = e + _np_causal_attention(b["attn"], ln(b["ln1"], e))
    u = ln(b["ln2"], e) @ b["ff1"]["W"] + b["ff1"]["b"]
    e = e + (u * 0.5 * (1 + erf(u / np.sqrt(2)))) @ b["ff2"]["W"] + b["ff2"]["b"]
  return ln(p["ln"], e) @ E.T


def _np_cross_entropy(z, y):
  z = z - z.max(-1, keepdims=True)
  log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
  return -np.mean(np.take_along_axis(log_p, np.asarray(y)[..., None], -1))


def test_causal_attention_forward_is_numpy_and_backward_is_vjp():
  rng = np.random.default_rng(0)
  params = _random_params(
      lambda k, dtype: layers.attention_init(k, 6, 3, dtype), 0, scale=0.7)
  x, dy = (jnp.asarray(rng.normal(size=(2, 5, 6))) for _ in range(2))

  def both(params, x, dy):
    y_ref, vjp = jax.vjp(lambda p, x: layers.self_attention(p, x, causal=True),
                         params, x)
    y, cache = layers.self_attention_forward(params, x, causal=True)
    return (y_ref, vjp(dy)), (y, layers.self_attention_backward(params, cache, dy),
                              layers.attention_weights(params, x, causal=True))

  (y_ref, (dp_ref, dx_ref)), (y, (dx, dp), a) = jax.jit(both)(params, x, dy)
  np.testing.assert_allclose(y, _np_causal_attention(params, np.asarray(x)),
                             rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(y, y_ref, rtol=1e-13, atol=1e-13)
  assert rel(dx, dx_ref) <= 1e-10
  assert tree_rel(dp, dp_ref) <= 1e-10
  # Per-head weights: (m, h, T, T), rows sum to 1, nothing above the diagonal.
  assert a.shape == (2, 3, 5, 5)
  np.testing.assert_allclose(np.sum(a, -1), 1.0, rtol=1e-13)
  assert np.all(np.triu(np.asarray(a), 1) == 0.0)


# --- the tied head --------------------------------------------------------------

def test_tied_weight_gradient_is_the_sum_of_head_and_lookup():
  # C(E) = sum(dz * (E[ids] @ E^T)): E read by the lookup and by the head.
  rng = np.random.default_rng(1)
  E = jnp.asarray(rng.normal(size=(VOCAB, 4)))
  ids = jnp.asarray([[0, 3, 3, 6], [2, 0, 5, 5]], jnp.int32)
  dz = jnp.asarray(rng.normal(size=ids.shape + (VOCAB,)))

  def both(E, dz):
    ref = jax.grad(lambda E: jnp.sum(dz * (E[ids] @ E.T)))(E)
    h, c_tok = layers.embed_forward({"E": E}, ids)
    _, c_head = gpt_module.tied_head_forward(E, h)
    dh, dE_head = gpt_module.tied_head_backward(E, c_head, dz)
    _, dE_tok = layers.embed_backward({"E": E}, c_tok, dh)
    head_only = jax.grad(lambda W: jnp.sum(dz * (h @ W.T)))(E)
    return ref, dE_head + dE_tok["E"], head_only, dE_head

  ref, got, head_ref, head = jax.jit(both)(E, dz)
  assert rel(head, head_ref) <= 1e-10
  assert rel(got, ref) <= 1e-10
  assert rel(head, ref) > 1e-3      # the head's share alone is not enough


# --- the whole model ------------------------------------------------------------

def test_manual_backward_matches_jax_grad_with_dropout():
  # With a key: the manual path must draw the masks logits draws, or the
  # gradients differ. (Without a key: the gradient check below compares
  # manual and jax.grad on every entry of every array.) T = 5 < block_size:
  # the rows of P never read get a zero gradient. An "rbg" key: the masks
  # are drawn alike by any key type, and XLA compiles its generator in a
  # fraction of threefry's time (0.5 s of this test's 2.6 s).
  model = _model(dropout=0.3)
  params, x, y = _data(model, seed=2)
  manual = backprop.value_and_grad(model, "cross_entropy")
  auto = autodiff.value_and_grad(model, "cross_entropy")
  (c_man, g_man), (c_auto, g_auto) = jax.jit(
      lambda p, x, y, k: (manual(p, x, y, k), auto(p, x, y, k)))(
          params, x, y, jax.random.key(4, impl="rbg"))
  assert rel(c_man, c_auto) <= 1e-12
  c_plain = _np_cross_entropy(_np_gpt_logits(params, x), y)
  assert abs(float(c_man) - c_plain) > 1e-3             # the key is used
  leaves_m, leaves_a = (jax.tree_util.tree_flatten_with_path(g)[0]
                        for g in (g_man, g_auto))
  assert [p for p, _ in leaves_m] == [p for p, _ in leaves_a]
  for (path, a), (_, b) in zip(leaves_m, leaves_a):
    assert rel(a, b) <= 1e-10, path                     # per leaf
    assert a.dtype == jnp.float64
  np.testing.assert_array_equal(g_man["pos"]["E"][5:], 0.0)


def test_logits_are_numpys_see_tokens_0_to_t_only_and_decode_one_by_one():
  # Two blocks: one key/value cache each. The forward is numpy's; changing
  # tokens t+1.. leaves the logits 0..t alone; the decoder, fed x one token
  # at a time (a scan, as a sampler runs it), gives logits(params, x)[:, t]
  # at every t; the attention maps are causal rows of weights.
  model = _model(n_layers=2)
  params, x, _ = _data(model, seed=3, m=2, t=BLOCK)
  t = 2
  later = x.at[:, t + 1:].set((x[:, t + 1:] + 3) % VOCAB)

  def run(params, x, later):
    carry, step = model.decoder(params, x.shape[0], BLOCK)
    _, zs = jax.lax.scan(lambda c, xt: step(c, *xt), carry,
                         (x.T, jnp.arange(BLOCK)))
    return (jnp.swapaxes(zs, 0, 1), model.logits(params, x),
            model.logits(params, later),
            gpt_module.attention_maps(model, params, x))

  carry, _ = model.decoder(params, 2, BLOCK)
  assert [kv["k"].shape for kv in carry] == [(2, BLOCK, 2, 2)] * 2
  stepped, z, z_later, maps = jax.jit(run)(params, x, later)
  assert maps.shape == (2, 2, 2, BLOCK, BLOCK)           # (layers, m, h, T, T)
  np.testing.assert_allclose(np.sum(maps, -1), 1.0, rtol=1e-13)
  assert np.all(np.triu(np.asarray(maps), 1) == 0.0)
  assert z.shape == (2, BLOCK, VOCAB)
  np.testing.assert_allclose(z, _np_gpt_logits(params, x), rtol=1e-12,
                             atol=1e-12)
  np.testing.assert_allclose(z_later[:, :t + 1], z[:, :t + 1], rtol=1e-13,
                             atol=1e-13)
  assert rel(z_later[:, t + 1:], z[:, t + 1:]) > 1e-3   # later ones do move
  assert rel(stepped, z) <= 1e-10
  np.testing.assert_allclose(stepped, z, rtol=1e-10, atol=1e-12)
  with pytest.raises(ShapeError, match="block_size 6"):
    model.decoder(params, 2, BLOCK + 1)


def test_gradient_check_one_row_per_array_all_agree():
  model = _model()
  params, x, y = _data(model, seed=5, m=2, t=4)
  report = gradcheck.compare(model, "cross_entropy", params, x, y,
                             max_entries=3)
  assert report.manual
  assert report.ok(), str(report)
  assert len(report.rows) == len(jax.tree_util.tree_leaves(params))


# --- sizes and the config table -------------------------------------------------

def test_bad_inputs_and_config_values_are_one_line_errors():
  model = _model()
  params = _random_params(model.init, 0)
  with pytest.raises(ShapeError, match="block_size = 6"):
    model.logits(params, jnp.zeros((2, BLOCK + 1), jnp.int32))
  with pytest.raises(ShapeError, match="integer token ids"):
    model.logits(params, jnp.zeros((2, 3)))
  text = DataSpec("text", "language", (BLOCK,), "int32", VOCAB)
  table = registry.get("gpt").defaults
  built = registry.from_config("gpt", {**table, "n_layers": 1, "d_model": 8},
                               text)
  assert (built.in_shape, built.n_out, built.spec["d_ff"]) == ((BLOCK,),
                                                               VOCAB, 32)
  for bad, match in (({"n_heads": 3}, "not divisible by n_heads 3"),
                     ({"dropout": 1.0}, "dropout 1.0 must be in"),
                     ({"d_ff": -1}, "d_ff -1 must be")):
    with pytest.raises(ConfigError, match=match) as e:
      registry.from_config("gpt", {**table, **bad}, text)
    assert "\n" not in str(e.value) and "[model.gpt]" in str(e.value)
  features = text._replace(name="signals", x_dtype="float32")
  with pytest.raises(ConfigError, match="needs token ids") as e:
    registry.from_config("gpt", table, features)
  assert "\n" not in str(e.value)
