"""Small pure building blocks shared by the models: each an ``*_init`` and an apply.

Every block is a pair of functions in the style of ``stax``:

  params = foo_init(key, ..., dtype)    # a plain dict of arrays
  y      = foo(params, x, ...)          # pure; batched over leading axes

Arrays are channels-last and carry the batch on the leading axis ``m``.

  dense            y = x @ W + b                      x: (..., n_in)  W: (n_in, n_out)
                                                       b: (n_out,)     y: (..., n_out)
  conv             y[p, o] = b[o] + sum_{q, i} W[q, i, o] x[s p + q - pad, i]
                                                       x: (m, *spatial, c_in)
                                                       W: (*kernel, c_in, c_out)
                                                       y: (m, *spatial', c_out)
  max_pool         y[p] = max_{q in window} x[s p + q]      x: (m, *spatial, c)
  avg_pool         y[p] = mean over the window's in-bounds entries
  global_avg_pool  y = mean of x over the spatial axes       (m, *spatial, c) -> (m, c)
  layer_norm       y = scale * (x - mean) / sqrt(var + eps) + bias, over the last
                   axis                                      x, y: (..., d)
  dropout          y = x * r / (1 - rate),  r ~ Bernoulli(1 - rate)  (identity
                   without a key)
  self_attention   per head h:  Q_h = x Wq_h + bq_h,  K_h = x Wk_h,
                   V_h = x Wv_h + bv_h,
                   O_h = softmax(Q_h K_h^T / sqrt(d_head)) V_h,
                   y = sum_h O_h Wo_h + bo               x, y: (..., T, d_model)
  embed            y = E[ids]                            ids: (...) ints,  E: (n, d)
  sinusoidal       PE[t, 2i] = sin(t / 10000^(2i/d)),  PE[t, 2i+1] = cos(same)
                                                       PE: (length, d)

Spatial output sizes (per axis, input ``n``, kernel or window ``k``, stride
``s``) follow XLA: ``"SAME"`` gives ``ceil(n / s)`` with the padding split
low ``total // 2`` / high the rest, ``total = max((out - 1) s + k - n, 0)``;
``"VALID"`` gives ``floor((n - k) / s) + 1``. See :func:`out_size`.

The ``require_*`` helpers at the end are the builders' shared checks of
hyperparameters; each raises a one-line ``ConfigError``.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import activations, initializers
from funcnet.errors import ConfigError, ShapeError

PADDINGS = ("SAME", "VALID")

# lax dimension numbers for channels-last inputs and (*kernel, c_in, c_out)
# kernels, by the number of spatial axes.
_CONV_DIMS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"),
              3: ("NDHWC", "DHWIO", "NDHWC")}


def out_size(n: int, k: int, stride: int, padding: str) -> int:
  """The length of one spatial axis after a conv or pool (may be < 1 when
  ``k > n`` with ``"VALID"``: the caller reports that)."""
  if padding == "SAME":
    return -(-n // stride)
  return (n - k) // stride + 1


def _tuple(v, n):
  return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * n


# --- dense ---------------------------------------------------------------

def dense_init(key, n_in: int, n_out: int, dtype=jnp.float32, init="xavier"):
  """``{"W": (n_in, n_out), "b": (n_out,)}``; ``W`` by the named initialiser, ``b = 0``."""
  return {"W": initializers.get(init)(key, (n_in, n_out), dtype),
          "b": jnp.zeros((n_out,), dtype)}


def dense(params, x):
  """``x @ W + b``: ``(..., n_in) -> (..., n_out)``."""
  return x @ params["W"] + params["b"]


# --- convolution ---------------------------------------------------------

def conv_init(key, kernel_size, c_in: int, c_out: int, dtype=jnp.float32,
              init="he"):
  """``{"W": (*kernel_size, c_in, c_out), "b": (c_out,)}``.

  ``kernel_size`` is a tuple with one entry per spatial axis (``(k,)`` for
  1-D, ``(kh, kw)`` for 2-D); the initialiser's fans include the receptive
  field (see :mod:`funcnet.initializers`).
  """
  shape = tuple(int(k) for k in kernel_size) + (c_in, c_out)
  return {"W": initializers.get(init)(key, shape, dtype),
          "b": jnp.zeros((c_out,), dtype)}


def conv(params, x, stride=1, padding="SAME"):
  """A strided convolution (cross-correlation, as in every DL library).

  Args:
    params: ``{"W": (*kernel, c_in, c_out), "b": (c_out,)}``; the number of
      spatial axes (1 or 2, or 3) is read from ``W``.
    x: ``(m, *spatial, c_in)``, channels last.
    stride: an int for every spatial axis, or one per axis.
    padding: ``"SAME"`` or ``"VALID"``.

  Returns:
    ``(m, *spatial', c_out)`` with ``spatial'`` given by :func:`out_size`.
  """
  w = params["W"]
  nd = w.ndim - 2
  # lax wants both operands in one dtype (float32 data may meet float64
  # params): promote as a matmul would.
  dtype = jnp.result_type(x, w)
  x, w = jnp.asarray(x, dtype), jnp.asarray(w, dtype)
  y = jax.lax.conv_general_dilated(
      x, w, window_strides=_tuple(stride, nd), padding=padding,
      dimension_numbers=_CONV_DIMS[nd])
  return y + params["b"]


# --- pooling -------------------------------------------------------------

def _window(x, window, stride):
  nd = x.ndim - 2
  window = _tuple(window, nd)
  stride = window if stride is None else _tuple(stride, nd)
  # Pool over the spatial axes only: size-1 windows on batch and channels.
  return (1,) + window + (1,), (1,) + stride + (1,)


def max_pool(x, window, stride=None, padding="VALID"):
  """Max over each window: ``(m, *spatial, c) -> (m, *spatial', c)``.

  ``stride`` defaults to ``window`` (non-overlapping windows). ``"SAME"``
  pads with ``-inf``, so padding never wins the max.
  """
  dims, strides = _window(x, window, stride)
  # A numpy (not jnp) init value: lax differentiates reduce_window only
  # when it can see a constant -inf and so knows this is a max-pool.
  return jax.lax.reduce_window(x, np.array(-np.inf, x.dtype), jax.lax.max,
                               dims, strides, padding)


def avg_pool(x, window, stride=None, padding="VALID"):
  """Mean over each window's in-bounds entries: ``(m, *spatial, c) -> (m, *spatial', c)``.

  With ``"SAME"`` padding the edge windows are divided by the number of real
  entries they hold, not the window size, so padding does not dilute them.
  """
  dims, strides = _window(x, window, stride)
  zero = np.array(0, x.dtype)  # a constant, as in max_pool
  total = jax.lax.reduce_window(x, zero, jax.lax.add, dims, strides, padding)
  count = jax.lax.reduce_window(jnp.ones(x.shape[1:-1], x.dtype), zero,
                                jax.lax.add, dims[1:-1], strides[1:-1], padding)
  return total / count[..., None]


def global_avg_pool(x):
  """Mean over every spatial axis: ``(m, *spatial, c) -> (m, c)``."""
  return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


# --- layer norm ----------------------------------------------------------

def layer_norm_init(d: int, dtype=jnp.float32):
  """``{"scale": ones (d,), "bias": zeros (d,)}``, so it starts as pure normalisation."""
  return {"scale": jnp.ones((d,), dtype), "bias": jnp.zeros((d,), dtype)}


def layer_norm(params, x, eps: float = 1e-5):
  """Normalises each row over its last axis, then scales and shifts: ``(..., d)``."""
  mu = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean((x - mu) ** 2, axis=-1, keepdims=True)
  x_hat = (x - mu) / jnp.sqrt(var + eps)
  return params["scale"] * x_hat + params["bias"]


# --- dropout -------------------------------------------------------------

def dropout(x, rate: float, key=None):
  """Inverted dropout: ``x * r / (1 - rate)``, ``r ~ Bernoulli(1 - rate)``.

  Dividing by the keep probability in training keeps ``E[y] = x``, so
  evaluation (``key=None``) is the identity with no rescaling.
  """
  if key is None or rate == 0.0:
    return x
  keep = 1.0 - rate
  r = jax.random.bernoulli(key, keep, x.shape)
  return jnp.where(r, x / keep, jnp.zeros((), x.dtype))


def dropout_masks(key, rate: float, hidden_shapes, dtype):
  """The inverted-dropout masks ``r_l / (1 - rate)`` for each hidden layer.

  Shared by the MLP's forward pass and :mod:`funcnet.backprop` so both draw the
  same masks from the same key. Returns ``None`` when no dropout applies.
  """
  if key is None or rate == 0.0 or not hidden_shapes:
    return None
  keep = 1.0 - rate
  keys = jax.random.split(key, len(hidden_shapes))
  return [jax.random.bernoulli(k, keep, s).astype(dtype) / keep
          for k, s in zip(keys, hidden_shapes)]


# --- multi-head self-attention --------------------------------------------

def attention_init(key, d_model: int, n_heads: int, dtype=jnp.float32,
                   init="xavier"):
  """Projections for ``n_heads`` heads of width ``d_head = d_model / n_heads``.

  Returns ``{"q": {"W": (d_model, h, d_head), "b": (h, d_head)},
  "k": {"W": (d_model, h, d_head)}, "v": {...like q}, "o": {"W": (h, d_head,
  d_model), "b": (d_model,)}}``. Keeping the head axis in the shapes means
  :func:`self_attention` needs no ``n_heads`` argument. Each ``W`` is drawn as
  the ``(d_model, d_model)`` matrix it is (so the fans are right) and then
  split into heads.
  """
  if d_model % n_heads:
    raise ShapeError(f"d_model {d_model} is not divisible by n_heads "
                     f"{n_heads}; expected d_model a multiple of n_heads")
  d_head = d_model // n_heads
  init_w = initializers.get(init)
  kq, kk, kv, ko = jax.random.split(key, 4)
  heads = (d_model, n_heads, d_head)
  # Separate zero arrays: one array at two places in a pytree cannot be
  # donated twice to a jitted training step.
  zeros = lambda: jnp.zeros((n_heads, d_head), dtype)  # noqa: E731
  return {
      "q": {"W": init_w(kq, (d_model, d_model), dtype).reshape(heads), "b": zeros()},
      # No key bias: it adds q . b_k to every score of a query alike, which
      # the softmax cancels, so it would only be a parameter with zero gradient.
      "k": {"W": init_w(kk, (d_model, d_model), dtype).reshape(heads)},
      "v": {"W": init_w(kv, (d_model, d_model), dtype).reshape(heads), "b": zeros()},
      "o": {"W": init_w(ko, (d_model, d_model), dtype).reshape(
          (n_heads, d_head, d_model)), "b": jnp.zeros((d_model,), dtype)},
  }


def self_attention(params, x):
  """Scaled dot-product multi-head self-attention, ``(..., T, d_model) -> (..., T, d_model)``.

  ``A_h = softmax(Q_h K_h^T / sqrt(d_head))`` is ``(..., h, T, T)``, softmax
  over the key axis; every token attends to every token (no mask).
  """
  q = jnp.einsum("...td,dhk->...thk", x, params["q"]["W"]) + params["q"]["b"]
  k = jnp.einsum("...td,dhk->...thk", x, params["k"]["W"])
  v = jnp.einsum("...td,dhk->...thk", x, params["v"]["W"]) + params["v"]["b"]
  # 1/sqrt(d_head) keeps the scores' variance ~1 so the softmax stays soft.
  scores = jnp.einsum("...qhk,...shk->...hqs", q, k) / math.sqrt(q.shape[-1])
  a = jax.nn.softmax(scores, axis=-1)
  o = jnp.einsum("...hqs,...shk->...qhk", a, v)
  return jnp.einsum("...thk,hkd->...td", o, params["o"]["W"]) + params["o"]["b"]


# --- embeddings ----------------------------------------------------------

def embedding_init(key, n: int, d: int, dtype=jnp.float32, scale: float = 0.02):
  """``{"E": (n, d)}`` with entries ``N(0, scale^2)``.

  Also the learned positional table (``n`` = the number of positions), added
  to the token vectors as ``x + E``.
  """
  return {"E": scale * jax.random.normal(key, (n, d), dtype)}


def embed(params, ids):
  """Rows of the table: ``ids (...)`` integers ``-> (..., d)``."""
  return params["E"][ids]


def sinusoidal(length: int, d: int, dtype=jnp.float32):
  """The fixed positional table of Vaswani et al. (2017), ``(length, d)``.

  Each pair of columns ``(2i, 2i+1)`` is a sine and cosine of period
  ``2 pi 10000^(2i/d)``, so a shift in position is a rotation of each pair.
  """
  t = jnp.arange(length, dtype=dtype)[:, None]
  i = jnp.arange(d)[None, :]
  angle = t / 10000.0 ** ((2 * (i // 2)).astype(dtype) / d)
  return jnp.where(i % 2 == 0, jnp.sin(angle), jnp.cos(angle))


# --- hyperparameter checks shared by the model builders --------------------

def require_positive(name: str, value) -> int:
  """``value`` as an int, or a one-line ``ConfigError`` unless it is a positive integer."""
  try:
    ok = not isinstance(value, bool) and int(value) == value and value >= 1
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ConfigError(f"{name} {value!r} must be a positive integer")
  return int(value)


def require_positive_number(name: str, value) -> float:
  """``value`` as a float > 0, else a one-line ``ConfigError``."""
  try:
    ok = not isinstance(value, bool) and 0.0 < float(value) < math.inf
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ConfigError(f"{name} {value!r} must be a number > 0")
  return float(value)


def require_rate(name: str, value) -> float:
  """``value`` as a float in [0, 1), else a one-line ``ConfigError``."""
  try:
    ok = not isinstance(value, bool) and 0.0 <= float(value) < 1.0
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ConfigError(f"{name} {value!r} must be in [0, 1)")
  return float(value)


def require_choice(name: str, value, choices) -> str:
  """``value`` if it is one of ``choices``, else a one-line ``ConfigError``."""
  if value not in choices:
    raise ConfigError(f"{name} {value!r} must be one of: "
                      f"{', '.join(map(repr, choices))}")
  return value


def hidden_activation(name):
  """The activation ``name`` for a hidden layer (``softmax`` is output-only)."""
  act = activations.get(name)
  if act.name in activations.OUTPUT_ONLY:
    raise ConfigError(f"activation {act.name!r} is allowed only on the output "
                      "layer; choose another hidden activation")
  return act


def require_sizes(name: str, value, empty_ok: bool = False) -> tuple:
  """``value`` (an int or a sequence of them) as a tuple of positive ints."""
  seq = value if isinstance(value, (tuple, list)) else (value,)
  if not seq and not empty_ok:
    raise ConfigError(f"{name} {value!r} must list at least one positive size")
  return tuple(require_positive(f"{name} entry", v) for v in seq)
