"""Pooling: max and average over windows, and the global average."""

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.layers.checks import per_axis


def _window(x, window, stride):
  nd = x.ndim - 2
  window = per_axis(window, nd)
  stride = window if stride is None else per_axis(stride, nd)
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
