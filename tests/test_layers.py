"""The building blocks in funcnet.layers against plain-numpy loop references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import layers
from funcnet.errors import ConfigError, ShapeError, UnknownNameError
from helpers import xla_pads


@pytest.fixture
def rng():
  # Data and params come from numpy: the layers are tested, not jax.random
  # (whose every new shape costs an eager compile).
  return np.random.default_rng(0)


def _shapes(tree):
  return jax.tree_util.tree_map(lambda a: a.shape, tree)


def _windows(x, k, s, padding, fill):
  """Yields (output index, window of x) over every output position."""
  nd = x.ndim - 2
  sizes, pads = zip(*(xla_pads(n, kk, ss, padding)
                      for n, kk, ss in zip(x.shape[1:-1], k, s)))
  xp = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=fill)
  for idx in np.ndindex(*sizes):
    sl = tuple(slice(i * ss, i * ss + kk) for i, kk, ss in zip(idx, k, s))
    yield idx, xp[(slice(None),) + sl + (slice(None),)], sizes, nd


def np_conv(x, w, b, stride, padding):
  nd = w.ndim - 2
  y = None
  for idx, patch, sizes, _ in _windows(x, w.shape[:nd], (stride,) * nd,
                                       padding, 0.0):
    if y is None:
      y = np.zeros((x.shape[0], *sizes, w.shape[-1]))
    # sum over the window's positions and input channels
    y[(slice(None),) + idx] = np.tensordot(
        patch, w, axes=(list(range(1, nd + 2)), list(range(nd + 1)))) + b
  return y


def np_pool(x, window, stride, padding, reduce):
  nd = x.ndim - 2
  y = None
  for idx, patch, sizes, _ in _windows(x, (window,) * nd, (stride,) * nd,
                                       padding, np.nan):
    if y is None:
      y = np.zeros((x.shape[0], *sizes, x.shape[-1]))
    y[(slice(None),) + idx] = reduce(patch, axis=tuple(range(1, nd + 1)))
  return y


def test_init_shapes(getkey):
  key = getkey()
  init_shapes = lambda f, *a: _shapes(jax.eval_shape(lambda k: f(k, *a), key))
  assert init_shapes(layers.dense_init, 5, 3) == {"W": (5, 3), "b": (3,)}
  assert init_shapes(layers.conv_init, (3,), 2, 4) == {"W": (3, 2, 4),
                                                       "b": (4,)}
  assert init_shapes(layers.conv_init, (3, 2), 2, 4) == {"W": (3, 2, 2, 4),
                                                         "b": (4,)}
  assert init_shapes(layers.attention_init, 6, 2) == {
      "q": {"W": (6, 2, 3), "b": (2, 3)}, "k": {"W": (6, 2, 3)},
      "v": {"W": (6, 2, 3), "b": (2, 3)}, "o": {"W": (2, 3, 6), "b": (6,)}}
  assert init_shapes(layers.embedding_init, 7, 3) == {"E": (7, 3)}
  assert _shapes(layers.layer_norm_init(4)) == {"scale": (4,), "bias": (4,)}


def test_dense_matches_numpy(rng):
  p = {"W": rng.normal(size=(5, 3)), "b": rng.normal(size=3)}
  x = rng.normal(size=(4, 2, 5))
  np.testing.assert_allclose(layers.dense(p, x), x @ p["W"] + p["b"],
                             rtol=1e-13)


CONV_CASES = [
    # (spatial, kernel, c_in, c_out, stride, padding)
    ((9,), 3, 1, 2, 1, "SAME"),
    ((9,), 4, 2, 3, 2, "SAME"),
    ((10,), 3, 3, 2, 3, "VALID"),
    ((6, 5), 3, 1, 2, 1, "SAME"),
    ((7, 6), 2, 2, 3, 2, "SAME"),
    ((7, 7), 3, 2, 2, 2, "VALID"),
]


@pytest.mark.parametrize("spatial,k,c_in,c_out,stride,padding", CONV_CASES)
def test_conv_matches_numpy_loop(spatial, k, c_in, c_out, stride, padding,
                                 rng, x64):
  nd = len(spatial)
  p = {"W": rng.normal(size=(k,) * nd + (c_in, c_out)),
       "b": rng.normal(size=c_out)}
  x = rng.normal(size=(2, *spatial, c_in))
  y = layers.conv(p, x, stride, padding)
  ref = np_conv(x, p["W"], p["b"], stride, padding)
  assert y.shape == ref.shape
  assert y.shape[1:-1] == tuple(layers.out_size(n, k, stride, padding)
                                for n in spatial)
  np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


POOL_CASES = [
    # (spatial, window, stride, padding)
    ((8,), 2, None, "VALID"),
    ((9,), 3, 2, "SAME"),
    ((6, 7), 2, None, "VALID"),
    ((5, 5), 2, 2, "SAME"),
    ((6, 6), 3, 1, "VALID"),
]


@pytest.mark.parametrize("spatial,window,stride,padding", POOL_CASES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_matches_numpy(kind, spatial, window, stride, padding, rng, x64):
  x = rng.normal(size=(2, *spatial, 3))
  fn = layers.max_pool if kind == "max" else layers.avg_pool
  y = fn(jnp.asarray(x), window, stride, padding)
  # nan padding: ignored by nanmax/nanmean, so edge windows use real entries only
  ref = np_pool(x, window, window if stride is None else stride, padding,
                np.nanmax if kind == "max" else np.nanmean)
  np.testing.assert_allclose(y, ref, rtol=1e-13)


def test_global_avg_pool(rng, x64):
  x = rng.normal(size=(2, 3, 4, 5))
  np.testing.assert_allclose(layers.global_avg_pool(x), x.mean(axis=(1, 2)),
                             rtol=1e-13)


def test_layer_norm_matches_numpy(rng, x64):
  x = rng.normal(size=(3, 4, 6)) * 3 + 1
  p = {"scale": rng.normal(size=6), "bias": rng.normal(size=6)}
  mu = x.mean(-1, keepdims=True)
  sd = np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
  ref = p["scale"] * (x - mu) / sd + p["bias"]
  np.testing.assert_allclose(layers.layer_norm(p, x), ref, rtol=1e-12,
                             atol=1e-13)
  # init is pure normalisation: scale 1, bias 0
  p0 = layers.layer_norm_init(6, jnp.float64)
  np.testing.assert_allclose(layers.layer_norm(p0, x), (x - mu) / sd,
                             rtol=1e-12, atol=1e-13)


def test_dropout(getkey, rng, x64):
  x = jnp.asarray(rng.normal(size=(200, 50)))
  assert layers.dropout(x, 0.3, None) is x
  assert layers.dropout(x, 0.0, getkey()) is x
  y = np.asarray(layers.dropout(x, 0.3, getkey()))
  kept = y != 0
  # inverted: every kept entry is x / keep; about 70% are kept
  np.testing.assert_allclose(y[kept], np.asarray(x)[kept] / 0.7, rtol=1e-13)
  assert abs(kept.mean() - 0.7) < 0.02
  k = getkey()
  np.testing.assert_array_equal(layers.dropout(x, 0.3, k),
                                layers.dropout(x, 0.3, k))


@pytest.mark.parametrize("wide", [False, True], ids=["x32", "x64"])
def test_keep_mask_is_jax_bernoulli_bit_for_bit(wide):
  """keep_mask replaces ``jax.random.bernoulli`` in dropout, so the masks (and
  every gradient with dropout) must not change: the same booleans for the
  same key (new-style and legacy), in float32 (32-bit draws) and float64
  (64-bit draws) mode, a shape of the Transformer's size among them,
  including the extreme probabilities (keep below 2^-23, the largest float32
  below 1, 0 and 1)."""
  before = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", wide)
  try:
    base = jax.random.key(7)
    below_one = float(np.nextafter(np.float32(1), np.float32(0)))
    for i, (keep, shape) in enumerate([
        (0.9, (10, 40, 64)), (1 / 3, (7, 9)), (1e-8, (50,)),
        (below_one, (50,)), (0.0, (4,)), (1.0, (4,))]):
      k = jax.random.fold_in(base, i)
      np.testing.assert_array_equal(layers.keep_mask(k, keep, shape),
                                    jax.random.bernoulli(k, keep, shape))
    traced = jax.jit(lambda k, p: layers.keep_mask(k, p, (6, 7)))  # a sweep's rate
    np.testing.assert_array_equal(traced(base, 0.3),
                                  jax.random.bernoulli(base, 0.3, (6, 7)))
    raw = jax.random.PRNGKey(3)                  # a legacy uint32[2] key
    np.testing.assert_array_equal(layers.keep_mask(raw, 0.9, (6, 7)),
                                  jax.random.bernoulli(raw, 0.9, (6, 7)))
  finally:
    jax.config.update("jax_enable_x64", before)


def test_dropout_masks_are_zero_or_one_over_keep_with_mean_one(getkey, x64):
  """The MLP's forward and backprop share these masks, so manual and
  autodiff agree whatever they hold: only their values can show a missing
  ``1/keep``."""
  assert layers.dropout_masks(None, 0.3, [(4,)], jnp.float64) is None
  assert layers.dropout_masks(getkey(), 0.0, [(4,)], jnp.float64) is None
  masks = layers.dropout_masks(getkey(), 0.25, [(300, 40), (300, 20)],
                               jnp.float64)
  assert [m.shape for m in masks] == [(300, 40), (300, 20)]
  for m in masks:
    m = np.asarray(m)
    assert m.dtype == np.float64
    assert set(np.unique(m)) == {0.0, 1 / 0.75}
    assert abs(m.mean() - 1.0) < 0.03  # E[r / keep] = 1
  # one key per layer: the two layers' patterns differ
  assert not np.array_equal(np.asarray(masks[0])[:, :20] != 0,
                            np.asarray(masks[1]) != 0)


def np_attention(x, p):
  """softmax(Q K^T / sqrt(d_head)) V per head on column blocks, then W_o."""
  d = x.shape[-1]
  h = p["q"]["W"].shape[1]
  dk = d // h
  full = lambda a: np.asarray(a).reshape(d, d)
  q = x @ full(p["q"]["W"]) + np.asarray(p["q"]["b"]).reshape(d)
  k = x @ full(p["k"]["W"])
  v = x @ full(p["v"]["W"]) + np.asarray(p["v"]["b"]).reshape(d)
  heads = []
  for j in range(h):
    cols = slice(j * dk, (j + 1) * dk)
    s = q[..., cols] @ np.swapaxes(k[..., cols], -1, -2) / np.sqrt(dk)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    heads.append(a @ v[..., cols])
  return np.concatenate(heads, -1) @ full(p["o"]["W"]) + np.asarray(p["o"]["b"])


@pytest.mark.parametrize("d,h", [(4, 1), (6, 2), (8, 4)])
def test_attention_matches_numpy(d, h, rng, x64):
  dk = d // h
  p = {"q": {"W": rng.normal(size=(d, h, dk)), "b": rng.normal(size=(h, dk))},
       "k": {"W": rng.normal(size=(d, h, dk))},
       "v": {"W": rng.normal(size=(d, h, dk)), "b": rng.normal(size=(h, dk))},
       "o": {"W": rng.normal(size=(h, dk, d)), "b": rng.normal(size=d)}}
  p = jax.tree_util.tree_map(lambda a: a / np.sqrt(d), p)
  x = rng.normal(size=(2, 5, d))
  np.testing.assert_allclose(jax.jit(layers.self_attention)(p, x),
                             np_attention(x, p), rtol=1e-12, atol=1e-13)


def test_attention_heads_must_divide_width(getkey):
  with pytest.raises(ShapeError, match="d_model 6 is not divisible by n_heads 4"):
    layers.attention_init(getkey(), 6, 4)


def test_embedding_and_sinusoidal(rng, x64):
  p = {"E": rng.normal(size=(7, 3))}
  ids = np.array([[0, 6], [3, 3]])
  np.testing.assert_array_equal(layers.embed(p, ids), p["E"][ids])
  for d in (4, 5):
    pe = np.asarray(jax.jit(layers.sinusoidal, static_argnums=(0, 1, 2))(
        6, d, jnp.float64))
    ref = np.array([[math.sin(t / 10000 ** (2 * (i // 2) / d)) if i % 2 == 0
                     else math.cos(t / 10000 ** (2 * (i // 2) / d))
                     for i in range(d)] for t in range(6)])
    np.testing.assert_allclose(pe, ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("fn,args,err,fragment", [
    (layers.require_positive, ("rank", 0), ConfigError, "rank 0 must be a positive"),
    (layers.require_positive, ("rank", 2.5), ConfigError, "rank 2.5"),
    (layers.require_positive, ("rank", "x"), ConfigError, "rank 'x'"),
    (layers.require_rate, ("dropout", 1.0), ConfigError, r"dropout 1.0 must be in \[0, 1\)"),
    (layers.require_choice, ("pool", "min", ("max", "avg")), ConfigError,
     "pool 'min' must be one of: 'max', 'avg'"),
    (layers.require_sizes, ("in_shape", ()), ConfigError, "in_shape"),
    (layers.require_sizes, ("hidden", (4, 0)), ConfigError, "hidden entry 0"),
    (layers.hidden_activation, ("softmax",), ConfigError, "only on the output"),
    (layers.hidden_activation, ("nope",), UnknownNameError, "unknown activation"),
])
def test_bad_hyperparameters_are_one_line_errors(fn, args, err, fragment):
  with pytest.raises(err, match=fragment) as info:
    fn(*args)
  assert "\n" not in str(info.value)
