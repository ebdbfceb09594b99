"""Embedding tables and positional encodings, with the lookup's backward."""

import jax.numpy as jnp

from funcnet import initializers


def embedding_init(key, n: int, d: int, dtype=jnp.float32, scale: float = 0.02):
  """``{"E": (n, d)}`` with entries ``N(0, scale^2)``.

  Also the learned positional table (``n`` = the number of positions), added
  to the token vectors as ``x + E``.
  """
  return {"E": initializers.scaled_normal(key, (n, d), dtype, scale)}


def embed_forward(params, ids):
  """``y = E[ids]``: rows of the table, ``ids (...)`` integers ``-> (..., d)``.

  The cache is ``ids``: which rows were read.
  """
  return params["E"][ids], ids


def embed_backward(params, cache, dy):
  """The lookup's backward: a scatter-add of ``dy`` into the rows read.

  With ``y[...] = E[ids[...]]`` and ``dy = dC/dy: (..., d)``:

    dE[r] = sum over positions p with ids[p] = r of dy[p]     (n, d)

  so a row looked up twice gets both gradients (``.at[ids].add`` sums
  repeats) and a row never looked up gets zero. The ids are integers: no
  gradient flows to them, and ``dx`` is None.

  Returns ``(None, {"E": dE})``.
  """
  ids = cache
  n, d = params["E"].shape
  dE = jnp.zeros((n, d), params["E"].dtype).at[ids.reshape(-1)].add(
      dy.reshape(-1, d))
  return None, {"E": dE}


def embed(params, ids):
  """Rows of the table (see :func:`embed_forward`)."""
  return embed_forward(params, ids)[0]


def sinusoidal(length: int, d: int, dtype=jnp.float32):
  """The fixed positional table of Vaswani et al. (2017), ``(length, d)``.

  Each pair of columns ``(2i, 2i+1)`` is a sine and cosine of period
  ``2 pi 10000^(2i/d)``, so a shift in position is a rotation of each pair.
  """
  t = jnp.arange(length, dtype=dtype)[:, None]
  i = jnp.arange(d)[None, :]
  angle = t / 10000.0 ** ((2 * (i // 2)).astype(dtype) / d)
  return jnp.where(i % 2 == 0, jnp.sin(angle), jnp.cos(angle))
