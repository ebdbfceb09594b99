"""Scaled dot-product multi-head self-attention."""

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
