"""The Transformer's hand-written backward (funcnet/layers/norm.py,
funcnet/layers/attention.py, funcnet/models/transformer.py) against
``jax.vjp`` of the forward, finite differences and ``jax.grad``.

Layer by layer first (layer norm, multi-head self-attention), on random
shapes with several heads and batch axes; the convolutional stem's forward
against numpy (its layers are funcnet.layers.conv_forward/conv_backward,
tested with the conv family); then the whole model through
``gradcheck.compare`` and leaf by leaf: mean and cls pooling, learned and
sinusoidal positions, patches, a stem, dropout with a key, all jitted.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from jax.flatten_util import ravel_pytree
from scipy.special import erf

from funcnet import autodiff, backprop, gradcheck, layers
from funcnet.errors import ConfigError
from funcnet.models import registry, transformer
from helpers import rel, tree_rel

HYPOTHESIS = dict(deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])


def _randomised(params, key, scale=0.5):
  """``params`` moved off their init (non-zero biases, scales != 1)."""
  flat, unravel = ravel_pytree(params)
  return unravel(flat + scale * jax.random.normal(key, flat.shape, flat.dtype))


def _check_layer(forward, backward, apply, params, x, dy, jit=True):
  """Manual backward vs ``jax.vjp`` of ``apply``; both in one jitted
  function (one compile per shape), or the manual one eagerly."""
  def reference(params, x, dy):
    y, vjp = jax.vjp(apply, params, x)
    return y, vjp(dy)

  def manual(params, x, dy):
    y, cache = forward(params, x)
    return y, backward(params, cache, dy)

  if jit:
    (y, (dparams, dx)), (y_new, (got_dx, got_dparams)) = jax.jit(
        lambda p, x, dy: (reference(p, x, dy), manual(p, x, dy)))(params, x, dy)
  else:
    y, (dparams, dx) = jax.jit(reference)(params, x, dy)
    y_new, (got_dx, got_dparams) = manual(params, x, dy)
  np.testing.assert_allclose(y_new, y, rtol=1e-13, atol=1e-13)
  assert got_dx.shape == x.shape
  assert rel(got_dx, dx) <= 1e-10
  assert _leaves_agree(got_dparams, dparams)
  return got_dparams, got_dx


def _leaves_agree(got, want):
  """Each leaf within 1e-10 relative, or, where a leaf is zero in exact
  arithmetic (one token: the softmax of one score is 1 whatever the score,
  so dWq = dWk = 0), within 1e-14 of the whole gradient's size: the hand-
  written backward gives the exact 0, ``jax.grad`` of attention's deferred
  normalisation ``(E V) / l`` the rounding of ``x - x`` (~1e-19)."""
  scale = np.linalg.norm(ravel_pytree(want)[0])
  return all(rel(a, b) <= 1e-10 or np.linalg.norm(np.subtract(a, b)) <= 1e-14 * scale
             for a, b in zip(jax.tree_util.tree_leaves(got),
                             jax.tree_util.tree_leaves(want)))


def _check_differences(apply, params, x, dy, grads):
  """``grads = (dparams, dx)`` vs central differences of ``C = sum(dy * y)``
  along 6 random directions ``u`` of ``t = (params, x)``:
  ``(C(t + h u) - C(t - h u)) / 2h = <dC/dt, u>``."""
  theta, unravel = ravel_pytree((params, x))
  dirs = jax.random.normal(jax.random.key(0), (6,) + theta.shape, theta.dtype)
  h = 1e-6
  cost = lambda t: jnp.sum(dy * apply(*unravel(t)))  # noqa: E731
  fd = jax.jit(jax.vmap(lambda u: (cost(theta + h * u) - cost(theta - h * u))
                        / (2 * h)))(dirs)
  assert rel(dirs @ ravel_pytree(grads)[0], fd) <= 1e-6


# --- layer norm ---------------------------------------------------------------

@settings(max_examples=4, **HYPOTHESIS)
@given(batch=st.lists(st.integers(1, 3), min_size=0, max_size=2),
       d=st.integers(2, 6), seed=st.integers(0, 2**16))
def test_layer_norm_backward_matches_vjp(batch, d, seed, x64):
  k = jax.random.split(jax.random.key(seed), 3)
  params = _randomised(layers.layer_norm_init(d, jnp.float64), k[0])
  x = jax.random.normal(k[1], (*batch, d), jnp.float64)
  dy = jax.random.normal(k[2], x.shape, jnp.float64)
  _check_layer(layers.layer_norm_forward, layers.layer_norm_backward,
               layers.layer_norm, params, x, dy)


def test_layer_norm_eagerly_differences_and_cache(x64):
  x = np.random.default_rng(0).normal(size=(2, 3, 5))
  params = _randomised(layers.layer_norm_init(5, jnp.float64),
                       jax.random.key(0))
  x, dy = jnp.asarray(x), jnp.asarray(np.cos(x))
  grads = _check_layer(layers.layer_norm_forward, layers.layer_norm_backward,
                       layers.layer_norm, params, x, dy, jit=False)
  _check_differences(layers.layer_norm, params, x, dy, grads)
  _, (x_hat, rstd) = layers.layer_norm_forward(params, x)
  np.testing.assert_allclose(rstd, 1 / np.sqrt(x.var(-1, keepdims=True) + 1e-5),
                             rtol=1e-14)
  np.testing.assert_allclose(x_hat, (x - x.mean(-1, keepdims=True)) * rstd,
                             rtol=1e-13)


# --- self-attention -----------------------------------------------------------

@settings(max_examples=4, **HYPOTHESIS)
@given(batch=st.lists(st.integers(1, 2), min_size=0, max_size=2),
       t=st.integers(1, 4), n_heads=st.integers(1, 3), d_head=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_attention_backward_matches_vjp(batch, t, n_heads, d_head, seed, x64):
  d_model = n_heads * d_head
  k = jax.random.split(jax.random.key(seed), 4)
  params = _randomised(
      layers.attention_init(k[0], d_model, n_heads, jnp.float64), k[1])
  x = jax.random.normal(k[2], (*batch, t, d_model), jnp.float64)
  dy = jax.random.normal(k[3], x.shape, jnp.float64)
  _check_layer(layers.self_attention_forward, layers.self_attention_backward,
               layers.self_attention, params, x, dy)


def test_attention_eagerly_differences_sharp_softmax(x64):
  # Large scores (a nearly one-hot softmax) are where a wrong softmax
  # backward shows most; the key projection has no bias to differentiate.
  k = jax.random.split(jax.random.key(3), 3)
  params = _randomised(layers.attention_init(k[0], 4, 2, jnp.float64), k[0],
                       scale=0.2)
  params = jax.tree_util.tree_map(lambda w: 4.0 * w, params)
  x = 3.0 * jax.random.normal(k[1], (2, 5, 4), jnp.float64)
  dy = jax.random.normal(k[2], x.shape, jnp.float64)
  _, cache = layers.self_attention_forward(params, x)
  assert float(jnp.max(cache[4])) > 0.99
  _, grads = layers.self_attention_backward(params, cache, dy)
  assert set(grads["k"]) == {"W"}
  grads = _check_layer(layers.self_attention_forward,
                       layers.self_attention_backward, layers.self_attention,
                       params, x, dy, jit=False)
  _check_differences(layers.self_attention, params, x, dy, grads)


# --- the stem ----------------------------------------------------------------

def _np_conv_same(w, b, x):
  """Stride-1 "SAME" cross-correlation in numpy loops, XLA's padding split."""
  k = w.shape[0]
  lo = (k - 1) // 2
  m, length, _ = x.shape
  xp = np.pad(x, ((0, 0), (lo, k - 1 - lo), (0, 0)))
  y = np.zeros((m, length, w.shape[2])) + b
  for p in range(length):
    for q in range(k):
      y[:, p] += xp[:, p + q] @ w[q]
  return y


def test_model_with_a_stem_is_the_model_on_the_stem_features(x64):
  # The stem's output, computed in numpy, fed to the same model without a
  # stem (whose forward tests/test_models.py checks against numpy).
  rng = np.random.default_rng(5)
  with_stem = transformer((8,), 3, d_model=4, n_heads=2, n_layers=1, d_ff=3,
                          patch=2, stem_channels=[3, 2], stem_kernel=4)
  plain = transformer((8, 2), 3, d_model=4, n_heads=2, n_layers=1, d_ff=3,
                      patch=2)
  params = _randomised(with_stem.init(jax.random.key(0), jnp.float64),
                       jax.random.key(1))
  x = rng.normal(size=(2, 8))
  h = x[..., None]
  for p in params["stem"]:
    z = _np_conv_same(np.asarray(p["W"]), np.asarray(p["b"]), h)
    h = z * 0.5 * (1 + erf(z / np.sqrt(2)))             # gelu
  rest = {name: v for name, v in params.items() if name != "stem"}
  got, want = jax.jit(lambda p, r, x, h: (with_stem.logits(p, x),
                                          plain.logits(r, h)))(params, rest,
                                                               x, h)
  np.testing.assert_allclose(got, want, rtol=1e-12)


# --- the model ----------------------------------------------------------------

MODELS = {
    # cls token, sinusoids, 2 blocks, 2 steps per token
    "cls_sinusoidal_patch2": dict(pool="cls", pos="sinusoidal", patch=2,
                                  n_layers=2),
    # mean pooling, learned positions, a 2-layer stem, 4 steps per token
    "mean_learned_stem_patch4": dict(pool="mean", pos="learned", patch=4,
                                     stem_channels=[3, 2], stem_kernel=3),
}


def _model(name, dropout=0.0):
  return transformer((8, 2), 3, d_model=4, n_heads=2, d_ff=3,
                     dropout=dropout, **{"n_layers": 1, **MODELS[name]})


def _data(model, seed=0):
  rng = np.random.default_rng(seed)
  params = _randomised(model.init(jax.random.key(seed), jnp.float64),
                       jax.random.key(seed + 1), scale=0.3)
  return params, rng.normal(size=(3, 8, 2)), rng.integers(0, 3, 3)


def test_gradient_check_has_the_manual_column(x64):
  # compare() checks manual vs autodiff on every entry of every leaf
  # (rel <= 1e-10) and both against finite differences, jitted, without
  # dropout; the stem model, whose stem has the most hand-made code.
  model = _model("mean_learned_stem_patch4")
  params, x, y = _data(model)
  report = gradcheck.compare(model, "cross_entropy", params, x, y,
                             max_entries=3)
  assert report.manual
  assert report.ok(), str(report)
  assert len(report.rows) == len(jax.tree_util.tree_leaves(params))


@pytest.mark.parametrize("name", [
    "cls_sinusoidal_patch2",
    # the stem has no dropout: the same masks as the case above, so slow only
    pytest.param("mean_learned_stem_patch4", marks=pytest.mark.slow)])
def test_manual_matches_autodiff_with_dropout(name, x64):
  # One jitted function computes both: the manual path must draw the masks
  # logits draws with the key, or the gradients differ.
  model = _model(name, dropout=0.4)
  params, x, y = _data(model, seed=2)
  manual = backprop.value_and_grad(model, "cross_entropy")
  auto = autodiff.value_and_grad(model, "cross_entropy")
  (c_man, g_man), (c_auto, g_auto) = jax.jit(
      lambda p, x, y, k: (manual(p, x, y, k), auto(p, x, y, k)))(
          params, x, y, jax.random.key(4))
  assert rel(c_man, c_auto) <= 1e-12
  assert tree_rel(g_man, g_auto) <= 1e-10
  for leaf in jax.tree_util.tree_leaves(g_man):
    assert leaf.dtype == jnp.float64


def test_mean_pool_backward_matches_autodiff(x64):
  """Mean pooling without a stem, fast (the stem case is slow): each of the
  T' tokens gets ds / T' (a missing 1/T' scales every gradient below the
  pool by T')."""
  model = transformer((6, 2), 3, d_model=4, n_heads=2, d_ff=3, n_layers=1,
                      pool="mean", pos="learned", patch=2)
  params, x, y = _data(model, seed=3)
  x = x[:, :6]
  manual = backprop.value_and_grad(model, "cross_entropy")
  auto = autodiff.value_and_grad(model, "cross_entropy")
  (c_man, g_man), (c_auto, g_auto) = jax.jit(
      lambda p, x, y: (manual(p, x, y), auto(p, x, y)))(params, x, y)
  assert rel(c_man, c_auto) <= 1e-12
  assert tree_rel(g_man, g_auto) <= 1e-10


def test_manual_gradients_keep_the_params_dtype(x64):
  # float64 data with float32 params promotes inside the forward; the
  # gradients come back as float32, as jax.grad's do (traced, not compiled).
  model = _model("cls_sinusoidal_patch2")
  params = model.init(jax.random.key(0), jnp.float32)
  x = jax.ShapeDtypeStruct((3, 8, 2), jnp.float64)
  y = jax.ShapeDtypeStruct((3,), jnp.int32)
  _, manual = jax.eval_shape(backprop.value_and_grad(model, "cross_entropy"),
                             params, x, y)
  _, auto = jax.eval_shape(autodiff.value_and_grad(model, "cross_entropy"),
                           params, x, y)
  assert jax.tree_util.tree_structure(manual) == jax.tree_util.tree_structure(
      params)
  assert jax.tree_util.tree_leaves(manual) == jax.tree_util.tree_leaves(auto)
  assert all(leaf.dtype == jnp.float32
             for leaf in jax.tree_util.tree_leaves(manual))


# --- the stem's config keys -----------------------------------------------------

def test_default_has_no_stem_and_stem_is_a_config_key():
  kind = registry.get("transformer")
  assert kind.defaults["stem_channels"] == []
  plain = transformer((8,), 2, d_model=4, n_heads=2)
  shapes = jax.eval_shape(plain.init, jax.random.key(0))
  assert "stem" not in shapes and shapes["embed"]["W"].shape == (1, 4)
  stem = transformer((8,), 2, d_model=4, n_heads=2, patch=2,
                     stem_channels=[5, 6], stem_kernel=3)
  shapes = jax.eval_shape(stem.init, jax.random.key(0))
  assert [s["W"].shape for s in shapes["stem"]] == [(3, 1, 5), (3, 5, 6)]
  assert shapes["embed"]["W"].shape == (12, 4)
  assert registry.rebuild(stem.spec).spec == stem.spec


@pytest.mark.parametrize("bad", [dict(stem_channels=[0]),
                                 dict(stem_channels=[2], stem_kernel=0)])
def test_bad_stem_is_a_config_error(bad):
  with pytest.raises(ConfigError):
    transformer((8,), 2, d_model=4, n_heads=2, **bad)
