"""Dense (fully connected) layers: ``y = x @ W + b``."""

import jax.numpy as jnp

from funcnet import initializers


def dense_init(key, n_in: int, n_out: int, dtype=jnp.float32, init="xavier"):
  """``{"W": (n_in, n_out), "b": (n_out,)}``; ``W`` by the named initialiser, ``b = 0``."""
  return {"W": initializers.get(init)(key, (n_in, n_out), dtype),
          "b": jnp.zeros((n_out,), dtype)}


def dense(params, x):
  """``x @ W + b``: ``(..., n_in) -> (..., n_out)``."""
  return x @ params["W"] + params["b"]
