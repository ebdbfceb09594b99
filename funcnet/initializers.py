"""Weight initialisers by name; biases always start at zero.

Each initialiser maps ``(key, (fan_in, fan_out), dtype)`` to a weight matrix
``W`` of that shape:

  ``"normal"``  W ~ N(0, 1)                                  (the textbook example)
  ``"xavier"``  W ~ U(-r, r),  r = sqrt(6 / (fan_in + fan_out))   (Glorot & Bengio 2010)
  ``"he"``      W ~ N(0, 2 / fan_in)                         (He et al. 2015, for relu)

For weights with more than two axes (convolution kernels ``(k..., c_in,
c_out)``) the receptive field multiplies both fans, as in
``jax.nn.initializers.variance_scaling``.
"""

import math

import jax
import jax.numpy as jnp

from funcnet.errors import lookup


def _fans(shape):
  receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
  return shape[-2] * receptive, shape[-1] * receptive


def normal(key, shape, dtype=jnp.float32):
  return jax.random.normal(key, shape, dtype)


def xavier(key, shape, dtype=jnp.float32):
  fan_in, fan_out = _fans(shape)
  r = math.sqrt(6.0 / (fan_in + fan_out))
  return jax.random.uniform(key, shape, dtype, -r, r)


def he(key, shape, dtype=jnp.float32):
  fan_in, _ = _fans(shape)
  return jax.random.normal(key, shape, dtype) * math.sqrt(2.0 / fan_in)


INITIALIZERS = {"normal": normal, "xavier": xavier, "he": he}


def get(name):
  """The initialiser called ``name``; an ``UnknownNameError`` names the known ones."""
  if callable(name):
    return name
  return lookup("initializer", name, INITIALIZERS)


def names() -> list[str]:
  return sorted(INITIALIZERS)
