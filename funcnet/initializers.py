"""Weight initialisers by name; biases always start at zero.

Each initialiser maps ``(key, (fan_in, fan_out), dtype)`` to a weight matrix
``W`` of that shape:

  ``"normal"``  W ~ N(0, 1)                                  (the textbook example)
  ``"xavier"``  W ~ U(-r, r),  r = sqrt(6 / (fan_in + fan_out))   (Glorot & Bengio 2010)
  ``"he"``      W ~ N(0, 2 / fan_in)                         (He et al. 2015, for relu)

For weights with more than two axes (convolution kernels ``(k..., c_in,
c_out)``) the receptive field multiplies both fans, as in
``jax.nn.initializers.variance_scaling``.

Every initialiser gives the same bits op by op and under ``jax.jit`` (a
model's ``init`` runs as one compiled call in :mod:`funcnet.experiment`); a
scaled normal needs :func:`scaled_normal` for that. Under :func:`batched`
(what that compiled call uses) the random bits of all of an init's draws
are made in a few vectorised threefry calls, and still give those bits.
"""

import functools
import math
import threading

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.errors import lookup


def _fans(shape):
  receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
  return shape[-2] * receptive, shape[-1] * receptive


def _draw(sample, key, shape, dtype, *args):
  """``sample(key, shape, dtype, *args)``, drawn as a vector and reshaped.

  The same bits: JAX's counter-based threefry numbers the entries in
  row-major order (partitionable or not). But XLA:CPU compiles the draw of a
  vector 2-3x faster than that of a matrix with a narrow last axis (a
  [64, 64, 10] MLP's init: 1.0 s against 0.35 s here), and a run compiles
  its init before anything else (issue 15).
  """
  batch = getattr(_batch, "now", None)
  if batch is not None:
    return batch.draw(sample, key, shape, dtype, args)
  return _flat(sample, key, math.prod(shape), dtype, args).reshape(shape)


def _flat(sample, key, n, dtype, args):
  """``sample``'s draw of ``n`` entries as a vector, the one call every
  unbatched draw makes."""
  return sample(key, (n,), dtype, *args)


# --- every draw of an init in a few vectorised ones --------------------------

_batch = threading.local()  # the _Draws of a batched init being traced

# A group's rows are padded to its longest draw: at most this many times the
# entries drawn, plus _SLACK (a small draw beside a large one).
_WASTE, _SLACK = 2, 1 << 16


class _Draws:
  """The draws of one trace of an init: recorded on the first pass (each
  answered with zeros of its shape), made in groups, then handed out in the
  same order on the second.

  Only draws traced at the init's own level (``trace``: its key's): one
  inside a ``vmap``, ``scan`` or other transformation of the init's body
  has a key of an inner trace, which cannot leave it; it is drawn where it
  is, in both passes."""

  def __init__(self, trace):
    self.trace, self.asked, self.made, self.handed = trace, [], None, 0

  def draw(self, sample, key, shape, dtype, args):
    n, dtype = math.prod(shape), jnp.dtype(dtype)
    if getattr(key, "_trace", None) is not self.trace:  # an inner trace's
      return _flat(sample, key, n, dtype, args).reshape(shape)
    if self.made is None:  # first pass: note it
      self.asked.append((sample, key, n, dtype, args))
      return jnp.zeros(shape, dtype)
    i, self.handed = self.handed, self.handed + 1
    if i < len(self.asked):
      s, _, m, d, a = self.asked[i]
      if s is sample and (m, d, a) == (n, dtype, args):
        return self.made[i].reshape(shape)
    # an init that asks for other draws the second time (it should not):
    # this one and every later one op by op
    self.handed = len(self.asked)
    return _flat(sample, key, n, dtype, args).reshape(shape)

  def make(self):
    """Each draw's random bits, made in groups of one width: one vectorised
    threefry call per group (rows padded to the group's longest), then each
    draw's floats from its own bits, as ``jax.random`` makes them.

    Only the integers are made together. Floats computed in a padded,
    sliced row fuse differently, and XLA:CPU's ``log`` (inside
    ``erf_inv``) rounds 1 ulp differently in some fusions (seen at LLVM
    level 0); each draw's conversion on its own ``n`` entries is the
    program op by op makes."""
    out = [None] * len(self.asked)
    groups = {}
    for i, (sample, key, n, dtype, args) in enumerate(self.asked):
      width = _bits_width(sample, dtype)
      if width is None:  # a sampler or dtype this does not convert: alone
        out[i] = _flat(sample, key, n, dtype, args)
      else:
        groups.setdefault(width, []).append(i)
    for width, members in groups.items():
      members.sort(key=lambda i: -self.asked[i][2])
      while members:
        longest, take, total = self.asked[members[0]][2], 0, 0
        for i in members:
          n = self.asked[i][2]
          if take and (take + 1) * longest > _WASTE * (total + n) + _SLACK:
            break
          take, total = take + 1, total + n
        chosen, members = members[:take], members[take:]
        keys = jnp.stack([self.asked[i][1] for i in chosen])
        rows = jax.vmap(lambda k: jax.random.bits(
            k, (longest,), _UINT[width]))(keys)
        for row, i in zip(rows, chosen):
          sample, _, n, dtype, args = self.asked[i]
          out[i] = _from_bits(sample, row[:n], dtype, args)
    self.made = out


_UINT = {16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint64}


def _bits_width(sample, dtype):
  """The bits ``sample`` draws for ``dtype`` when :func:`_from_bits` can
  convert them (JAX's uniform and normal of a float of 16, 32 or 64 bits
  with 8 or more mantissa bits), else None."""
  if sample not in (jax.random.uniform, jax.random.normal):
    return None
  if not jnp.issubdtype(dtype, jnp.floating):
    return None
  info = jnp.finfo(dtype)
  if info.bits not in _UINT or info.nmant < 8:
    return None
  return info.bits


def _from_bits(sample, bits, dtype, args):
  """``jax.random.uniform(key, (n,), dtype, *args)`` or ``normal`` from the
  key's ``jax.random.bits``, op for op as JAX makes them
  (``jax/_src/random/core.py``: ``_uniform``, ``_normal_real``): the
  mantissa from the top bits with an exponent of 1, minus one, scaled to
  ``[minval, maxval)`` and clipped below; a normal is ``sqrt(2) *
  erf_inv(u)`` of a uniform on ``[nextafter(-1, 0), 1)``. The tests hold
  it to JAX's own draws."""
  info = jnp.finfo(dtype)
  uint = bits.dtype
  if sample is jax.random.normal:
    minval = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype),
                          dtype=dtype)
    maxval = np.array(1.0, dtype)
  else:
    lo, hi = (tuple(args) + (0.0, 1.0)[len(args):])[:2]
    minval = jax.lax.convert_element_type(lo, dtype)
    maxval = jax.lax.convert_element_type(hi, dtype)
  float_bits = jax.lax.shift_right_logical(
      bits, jnp.array(info.bits - info.nmant, uint))
  float_bits = jax.lax.bitwise_or(
      float_bits, jnp.asarray(np.array(1.0, dtype).view(uint), dtype=uint))
  floats = jax.lax.bitcast_convert_type(float_bits, dtype) - jnp.array(1.0,
                                                                       dtype)
  u = jax.lax.max(minval, floats * (maxval - minval) + minval)
  if sample is jax.random.normal:
    return jax.lax.mul(np.array(np.sqrt(2), dtype), jax.lax.erf_inv(u))
  return u


def batchable(key) -> bool:
  """Whether draws from ``key`` can be made in groups bit for bit: JAX's
  partitionable threefry numbers a draw's entries by their index alone, so a
  row of ``n_max`` from a key starts with that key's draw of ``n``."""
  try:
    impl = str(jax.random.key_impl(key))
  except Exception:  # raw uint32 keys: the default implementation's
    impl = str(jax.config.jax_default_prng_impl)
  return "threefry2x32" in impl and bool(jax.config.jax_threefry_partitionable)


def batched(init):
  """``init(key, *args)`` with the random bits of every draw of these
  initialisers made in a few vectorised threefry calls: the same params, bit
  for bit, in a program XLA compiles up to twice as fast (each draw was a
  threefry loop of its own; XLA:CPU with ``program_cache.QUICK_TO_COMPILE``,
  the MNIST-1D Transformer's init 1.15 -> 0.64 s, the GPT's 26 draws 1.26 ->
  0.85 s; docs/performance.md).

  For a traced call (under ``jax.jit`` or ``jax.vmap``): ``init`` is traced
  twice, once to learn its draws and once to hand them out; the first
  pass's ops are dead code. Op by op, or with a random number generator
  whose rows do not start with a shorter draw's bits (:func:`batchable`),
  ``init`` unchanged.
  """

  @functools.wraps(init)
  def wrapped(key, *args, **kwargs):
    if (not isinstance(key, jax.core.Tracer) or not batchable(key)
        or getattr(_batch, "now", None) is not None):
      return init(key, *args, **kwargs)
    draws = _Draws(getattr(key, "_trace", None))
    _batch.now = draws
    try:
      init(key, *args, **kwargs)
      draws.make()
      return init(key, *args, **kwargs)
    finally:
      _batch.now = None
  return wrapped


def normal(key, shape, dtype=jnp.float32):
  return _draw(jax.random.normal, key, shape, dtype)


def xavier(key, shape, dtype=jnp.float32):
  fan_in, fan_out = _fans(shape)
  r = math.sqrt(6.0 / (fan_in + fan_out))
  return _draw(jax.random.uniform, key, shape, dtype, -r, r)


def scaled_normal(key, shape, dtype=jnp.float32, scale=1.0):
  """``scale * N(0, 1)``: the same bits op by op and under ``jax.jit``.

  ``jax.random.normal`` returns ``sqrt(2) * erfinv(u)``. Under ``jit`` XLA's
  algebraic simplifier folds that constant into ours, ``(sqrt(2) * e) * s ->
  e * (sqrt(2) * s)``: one rounding instead of two, and 61% of a He
  matrix's entries came out 1 ulp away from the same init run op by op
  (float32 and float64 alike; embeddings too). The barrier keeps the two
  multiplies apart and costs nothing measurable.
  """
  z = _draw(jax.random.normal, key, shape, dtype)
  return jax.lax.optimization_barrier(z) * scale


def he(key, shape, dtype=jnp.float32):
  fan_in, _ = _fans(shape)
  return scaled_normal(key, shape, dtype, math.sqrt(2.0 / fan_in))


INITIALIZERS = {"normal": normal, "xavier": xavier, "he": he}


def get(name):
  """The initialiser called ``name``; an ``UnknownNameError`` names the known ones."""
  if callable(name):
    return name
  return lookup("initializer", name, INITIALIZERS)


def names() -> list[str]:
  return sorted(INITIALIZERS)
