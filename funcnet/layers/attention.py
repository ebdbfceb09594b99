"""Scaled dot-product multi-head self-attention, optionally causal, with its
backward and a key/value-cached step for decoding one token at a time."""

import math

import jax
import jax.numpy as jnp

from funcnet import initializers
from funcnet.errors import ShapeError


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


def _project(params, x):
  """``Q = x Wq + bq, K = x Wk, V = x Wv + bv``, each ``(..., T, h,
  d_head)`` from ``x: (..., T, d_model)``."""
  q = jnp.einsum("...td,dhk->...thk", x, params["q"]["W"]) + params["q"]["b"]
  k = jnp.einsum("...td,dhk->...thk", x, params["k"]["W"])
  v = jnp.einsum("...td,dhk->...thk", x, params["v"]["W"]) + params["v"]["b"]
  return q, k, v


def causal_mask(t: int):
  """``(t, t)`` booleans, True where query ``i`` may see key ``j``:
  ``j <= i`` (itself and the past)."""
  return jnp.arange(t)[None, :] <= jnp.arange(t)[:, None]


def self_attention_forward(params, x, causal: bool = False):
  """Scaled dot-product multi-head self-attention, ``(..., T, d_model) -> (..., T, d_model)``.

  With ``h`` heads of width ``d_head = d_model / h`` (the head axis lives in
  the weights, see :func:`attention_init`), every leading axis a batch axis:

    Q = (x Wq + bq) / sqrt(d_head),  K = x Wk,  V = x Wv + bv   (..., T, h, d_head)
    S = Q K^T                                       (..., h, T, T)  per head
    S[q, s] = -inf where s > q   (causal only)
    E = exp(S - max_s S),  l = sum_s E              (..., h, T, T), (..., h, T)
    P = E / l = softmax(S) over the key axis        (..., h, T, T)
    O = (E V) / l  (= P V)                          (..., T, h, d_head)
    y = sum_h O_h Wo_h + bo                         (..., T, d_model)

  Without ``causal`` every token attends to every token; with it, token
  ``q`` attends to tokens ``0..q`` only (a decoder: ``y[q]`` does not depend
  on ``x[q+1:]``), so ``E[q, s] = exp(-inf) = 0`` exactly for ``s > q``. The
  diagonal is never masked, so every row keeps a finite maximum. The cache
  is ``(x, Q, K, V, P, O)`` (``Q`` the scaled one).

  Written so that ``jax.grad`` of it is as cheap as
  :func:`self_attention_backward` (both compute the same function):

  - ``1/sqrt(d_head)`` scales ``Q`` (``T d_head`` entries per head), not
    ``S`` (``T^2``): XLA:CPU materialised the scale broadcast to the scores'
    full shape, and autodiff multiplies by it again in the backward.
  - the softmax's ``1 / l`` scales the product ``E V`` (``T d_head`` per
    head) rather than ``E`` (flash attention's deferred normalisation).
    Through ``P = E / l`` autodiff keeps ``E`` and a full-size broadcast of
    ``1 / l`` and writes ``P`` and the quotient rule's terms at ``(T, T)``;
    through ``O = (E V) / l`` the ``(T, T)`` arrays are only ``E`` forward
    and ``dS`` backward, as in the hand-written backward. ``P`` itself is
    computed for the cache only (unused under ``jax.grad``, so XLA drops it).
  - the max is a constant shift (``stop_gradient``): ``P`` does not
    depend on it, so its gradient through it is zero (as in
    ``jax.nn.softmax``).
  """
  q, k, v = _project(params, x)
  q = q * (1.0 / math.sqrt(q.shape[-1]))
  scores = jnp.einsum("...qhk,...shk->...hqs", q, k)
  if causal:
    t = x.shape[-2]
    scores = jnp.where(causal_mask(t), scores, -jnp.inf)
  e = jnp.exp(scores - jax.lax.stop_gradient(
      jnp.max(scores, axis=-1, keepdims=True)))
  r = 1.0 / jnp.sum(e, axis=-1, keepdims=True)          # 1 / l: (..., h, T, 1)
  o = jnp.einsum("...hqs,...shk->...qhk", e, v) * jnp.swapaxes(r, -2, -3)
  y = jnp.einsum("...thk,hkd->...td", o, params["o"]["W"]) + params["o"]["b"]
  return y, (x, q, k, v, e * r, o)


def self_attention_backward(params, cache, dy):
  """The attention's backward, ``dy: (..., T, d_model) -> dx: (..., T, d_model)``.

  Back through the forward (per head; ``sum`` over every leading batch
  axis for the parameters, ``^T`` swaps the two token axes; ``O = P V``
  however the forward computes it):

    dO  = dy Wo_h^T                   dWo = sum O^T dy,  dbo = sum dy
    dV  = P^T dO                      dP  = dO V^T              (..., h, T, T)
    dS  = P * (dP - sum_s(dP * P))    softmax backward, per query row
    dQ  = dS K / sqrt(d_head)         dK  = dS^T Q   (Q the scaled one)
    dWq = sum x^T dQ,  dbq = sum dQ   (same for V;  K has no bias)
    dx  = dQ Wq^T + dK Wk^T + dV Wv^T (x feeds all three projections)

  The softmax line is ``J^T dP`` with the softmax Jacobian ``diag(p) - p
  p^T`` of each row. Returns ``(dx, grads)`` with grads shaped like params.

  The same backward serves causal attention (``causal=True`` of the
  forward), with no mask argument: a masked score ``S[q, s] = -inf`` has
  ``P[q, s] = 0``, so its ``dS[q, s] = P[q, s] * (...) = 0`` and nothing
  flows to ``Q[q]`` or ``K[s]`` through it (the mask is a constant with no
  gradient of its own); ``dV = P^T dO`` and the row sums ``sum_s(dP * P)``
  skip the masked entries for the same reason. The cache's ``P`` carries
  the mask.
  """
  x, q, k, v, a, o = cache
  scale = 1.0 / math.sqrt(q.shape[-1])
  batch = tuple(range(dy.ndim - 2))              # the leading batch axes
  # The output projection y = sum_h O_h Wo_h + bo.
  d_o = jnp.einsum("...td,hkd->...thk", dy, params["o"]["W"])
  g_o = {"W": jnp.einsum("...thk,...td->hkd", o, dy),
         "b": jnp.sum(dy, axis=batch + (dy.ndim - 2,))}
  # O = P V.
  d_v = jnp.einsum("...hqs,...qhk->...shk", a, d_o)
  d_a = jnp.einsum("...qhk,...shk->...hqs", d_o, v)
  # P = softmax(S), one row per query.
  d_s = a * (d_a - jnp.sum(d_a * a, axis=-1, keepdims=True))
  # S = Q K^T, Q = (x Wq + bq) * scale (the cache's q is the scaled one).
  d_q = jnp.einsum("...hqs,...shk->...qhk", d_s, k) * scale
  d_k = jnp.einsum("...hqs,...qhk->...shk", d_s, q)
  # The three input projections, each x W (+ b).
  grads, dx = {"o": g_o}, 0.0
  rows = batch + (x.ndim - 2,)                   # batch and token axes
  for name, d in (("q", d_q), ("k", d_k), ("v", d_v)):
    grads[name] = {"W": jnp.einsum("...td,...thk->dhk", x, d)}
    if name != "k":
      grads[name]["b"] = jnp.sum(d, axis=rows)
    dx = dx + jnp.einsum("...thk,dhk->...td", d, params[name]["W"])
  return dx, grads


def self_attention(params, x, causal: bool = False):
  """Multi-head self-attention (see :func:`self_attention_forward`)."""
  return self_attention_forward(params, x, causal)[0]


def attention_weights(params, x, causal: bool = False):
  """Each head's attention weights ``P: (..., h, T, T)`` (rows: queries,
  columns: keys; each row sums to 1), for plots. The forward's cache."""
  return self_attention_forward(params, x, causal)[1][4]


def self_attention_step(params, x, k_cache, v_cache, t):
  """Causal self-attention for the one token at position ``t``, from a
  key/value cache: the decoder's form of :func:`self_attention_forward`.

  ``x: (m, d_model)`` is the (layer-normed) token at position ``t`` (an int
  scalar, may be traced); ``k_cache, v_cache: (m, n, h, d_head)`` hold the
  keys and values of positions ``0..t-1`` (slots ``>= t`` are ignored).
  Writes ``K[t], V[t]`` of ``x`` at slot ``t``, then

    S = Q K^T / sqrt(d_head) over slots 0..t (the rest masked)   (m, h, n)
    y = sum_h (softmax(S) V)_h Wo_h + bo                          (m, d_model)

  which is row ``t`` of the causal forward on positions ``0..t``. Returns
  ``(y, k_cache, v_cache)`` with the caches updated.
  """
  q, k, v = _project(params, x[:, None, :])          # (m, 1, h, d_head)
  k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype),
                                                t, axis=1)
  v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype),
                                                t, axis=1)
  scores = jnp.einsum("mhk,mshk->mhs", q[:, 0], k_cache) / math.sqrt(q.shape[-1])
  seen = jnp.arange(k_cache.shape[1]) <= t            # slots 0..t
  a = jax.nn.softmax(jnp.where(seen, scores, -jnp.inf), axis=-1)
  o = jnp.einsum("mhs,mshk->mhk", a, v_cache)
  y = jnp.einsum("mhk,hkd->md", o, params["o"]["W"]) + params["o"]["b"]
  return y, k_cache, v_cache
