"""Inverted dropout."""

import jax
import jax.numpy as jnp


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
