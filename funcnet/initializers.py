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
scaled normal needs :func:`scaled_normal` for that.
"""

import math

import jax
import jax.numpy as jnp

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
  return sample(key, (math.prod(shape),), dtype, *args).reshape(shape)


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
