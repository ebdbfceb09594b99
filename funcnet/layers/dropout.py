"""Inverted dropout, with its backward."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from funcnet.tracing import is_off


def keep_mask(key, keep: float, shape):
  """``jax.random.bernoulli(key, keep, shape)``, bit for bit, as one integer
  comparison of the random bits.

  jax draws ``u = (bits >> (n - nmant)) * 2^-nmant`` (``n`` = 32 or 64 bits,
  ``nmant`` = 23 or 52 mantissa bits of the default float) and keeps where
  ``u < keep``. With ``k = bits >> (n - nmant)`` an integer, ``k 2^-nmant <
  keep`` iff ``k < T = ceil(keep 2^nmant)`` (``keep`` rounded to that float
  first, as jax does), iff ``bits < T 2^(n - nmant)``: the same booleans
  without the shift, the or, the bitcast and the float subtraction, so XLA
  fuses the threshold into the bits' consumer.
  """
  dtype = jnp.dtype(lax.dtype(keep))           # float32, or float64 with x64
  nbits, nmant = dtype.itemsize * 8, jnp.finfo(dtype).nmant
  p = float(np.asarray(keep, dtype))           # keep as jax rounds it
  if p <= 0.0:
    return jnp.zeros(shape, bool)
  threshold = math.ceil(p * 2.0 ** nmant) << (nbits - nmant)   # exact
  if threshold >= 2 ** nbits:        # every u (at most 1 - 2^-nmant) < keep
    return jnp.ones(shape, bool)
  uint = jnp.uint32 if nbits == 32 else jnp.uint64
  bits = jax.random.bits(key, shape, uint)
  return bits < jnp.asarray(threshold, uint)


def dropout_forward(x, rate: float, key=None):
  """Inverted dropout: ``y = x * r / (1 - rate)``, ``r ~ Bernoulli(1 - rate)``.

  Dividing by the keep probability in training keeps ``E[y] = x``, so
  evaluation (``key=None``) is the identity with no rescaling. The cache is
  the mask ``r / (1 - rate)`` (None without dropout).
  """
  if key is None or is_off(rate):
    return x, None
  keep = 1.0 - rate
  r = keep_mask(key, keep, x.shape)
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
  return [keep_mask(k, keep, s).astype(dtype) / keep
          for k, s in zip(keys, hidden_shapes)]
