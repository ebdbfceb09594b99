"""Embedding tables and positional encodings."""

import jax
import jax.numpy as jnp


def embedding_init(key, n: int, d: int, dtype=jnp.float32, scale: float = 0.02):
  """``{"E": (n, d)}`` with entries ``N(0, scale^2)``.

  Also the learned positional table (``n`` = the number of positions), added
  to the token vectors as ``x + E``.
  """
  return {"E": scale * jax.random.normal(key, (n, d), dtype)}


def embed(params, ids):
  """Rows of the table: ``ids (...)`` integers ``-> (..., d)``."""
  return params["E"][ids]


def sinusoidal(length: int, d: int, dtype=jnp.float32):
  """The fixed positional table of Vaswani et al. (2017), ``(length, d)``.

  Each pair of columns ``(2i, 2i+1)`` is a sine and cosine of period
  ``2 pi 10000^(2i/d)``, so a shift in position is a rotation of each pair.
  """
  t = jnp.arange(length, dtype=dtype)[:, None]
  i = jnp.arange(d)[None, :]
  angle = t / 10000.0 ** ((2 * (i // 2)).astype(dtype) / d)
  return jnp.where(i % 2 == 0, jnp.sin(angle), jnp.cos(angle))
