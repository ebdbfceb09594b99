"""Inverted dropout, with its backward."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from funcnet.tracing import is_off, is_traced


def keep_mask(key, keep: float, shape):
  """``jax.random.bernoulli(key, keep, shape)``, bit for bit, computed so that
  XLA:CPU fuses it into one elementwise loop.

  jax draws ``u = (bits >> (n - nmant)) * 2^-nmant`` (``n`` = 32 or 64 bits,
  ``nmant`` = 23 or 52 mantissa bits of the default float) and keeps where
  ``u < keep``. With ``k = bits >> (n - nmant)`` an integer, ``k 2^-nmant <
  keep`` iff ``k < T = ceil(keep 2^nmant)`` (``keep`` rounded to that float
  first, as jax does), iff ``bits < T 2^(n - nmant)``: one integer compare.

  The bits themselves: for a threefry key (jax's default, with
  ``jax_threefry_partitionable``, jax's default) element ``i`` of the
  row-major ``shape`` is ``threefry2x32(key, (0, i))``, xor-ed to 32 bits
  (or joined to 64). jax lowers threefry on CPU as a rolled 5-step loop
  over whole arrays (each step a pass over memory); :func:`_threefry2x32`
  writes the same 20 rounds unrolled, so the hash, the compare and the
  dropout's multiply fuse. Any other key or setting, more than 2^32
  elements, or a traced ``keep`` (a sweep over the rate) uses jax's own.
  """
  if is_traced(keep):            # a sweep's rate: no Python threshold to fold
    return jax.random.bernoulli(key, keep, shape)
  dtype = jnp.dtype(lax.dtype(keep))           # float32, or float64 with x64
  nbits, nmant = dtype.itemsize * 8, jnp.finfo(dtype).nmant
  p = float(np.asarray(keep, dtype))           # keep as jax rounds it
  if p <= 0.0:
    return jnp.zeros(shape, bool)
  threshold = math.ceil(p * 2.0 ** nmant) << (nbits - nmant)   # exact
  if threshold >= 2 ** nbits:        # every u (at most 1 - 2^-nmant) < keep
    return jnp.ones(shape, bool)
  size = math.prod(shape)
  if (str(jax.random.key_impl(key)) != "threefry2x32"
      or not jax.config.jax_threefry_partitionable or size >= 2 ** 32):
    uint = jnp.uint32 if nbits == 32 else jnp.uint64
    return jax.random.bits(key, shape, uint) < jnp.asarray(threshold, uint)
  typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
  data = jax.random.key_data(key) if typed else key     # legacy: uint32[2]
  count = lax.iota(jnp.uint32, size).reshape(shape)        # i < 2^32: hi word 0
  hi, lo = _threefry2x32(data[0], data[1], jnp.zeros((), jnp.uint32), count)
  if nbits == 32:
    return (hi ^ lo) < jnp.uint32(threshold)
  t_hi, t_lo = jnp.uint32(threshold >> 32), jnp.uint32(threshold & 0xFFFFFFFF)
  return (hi < t_hi) | ((hi == t_hi) & (lo < t_lo))        # (hi, lo) < T


def _rotl(x, d: int):
  return lax.shift_left(x, jnp.uint32(d)) | lax.shift_right_logical(
      x, jnp.uint32(32 - d))


def _threefry2x32(k1, k2, x1, x2):
  """Threefry-2x32 with 20 rounds (Salmon et al. 2011), as jax's
  ``threefry2x32`` primitive computes it, unrolled: ``(uint32, uint32)`` of
  the broadcast shape of ``x1, x2``."""
  rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
  ks = (k1, k2, k1 ^ k2 ^ jnp.uint32(0x1BD11BDA))
  x = [x1 + ks[0], x2 + ks[1]]
  for i in range(5):
    for r in rotations[i % 2]:
      x[0] = x[0] + x[1]
      x[1] = x[0] ^ _rotl(x[1], r)
    x[0] = x[0] + ks[(i + 1) % 3]
    x[1] = x[1] + ks[(i + 2) % 3] + jnp.uint32(i + 1)
  return x[0], x[1]


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
