"""Inverted dropout, with its backward."""

import jax
import jax.numpy as jnp

from funcnet.tracing import is_off


def dropout_forward(x, rate: float, key=None):
  """Inverted dropout: ``y = x * r / (1 - rate)``, ``r ~ Bernoulli(1 - rate)``.

  Dividing by the keep probability in training keeps ``E[y] = x``, so
  evaluation (``key=None``) is the identity with no rescaling. The cache is
  the mask ``r / (1 - rate)`` (None without dropout).
  """
  if key is None or is_off(rate):
    return x, None
  keep = 1.0 - rate
  r = jax.random.bernoulli(key, keep, x.shape)
  mask = jnp.where(r, jnp.asarray(1.0 / keep, x.dtype), jnp.zeros((), x.dtype))
  return x * mask, mask


def dropout_backward(mask, dy):
  """``dx = dy * r / (1 - rate)``: the gradient flows through the kept
  units only, scaled as they were (``dx = dy`` without dropout)."""
  return dy if mask is None else dy * mask


def dropout(x, rate: float, key=None):
  """Inverted dropout (see :func:`dropout_forward`)."""
  return dropout_forward(x, rate, key)[0]


def dropout_masks(key, rate: float, hidden_shapes, dtype):
  """The inverted-dropout masks ``r_l / (1 - rate)`` for each hidden layer.

  Shared by the MLP's forward pass and :mod:`funcnet.backprop` so both draw the
  same masks from the same key. Returns ``None`` when no dropout applies.
  """
  if key is None or is_off(rate) or not hidden_shapes:
    return None
  keep = 1.0 - rate
  keys = jax.random.split(key, len(hidden_shapes))
  return [jax.random.bernoulli(k, keep, s).astype(dtype) / keep
          for k, s in zip(keys, hidden_shapes)]
