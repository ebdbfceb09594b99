"""Layer normalisation over the last axis."""

import jax.numpy as jnp


def layer_norm_init(d: int, dtype=jnp.float32):
  """``{"scale": ones (d,), "bias": zeros (d,)}``, so it starts as pure normalisation."""
  return {"scale": jnp.ones((d,), dtype), "bias": jnp.zeros((d,), dtype)}


def layer_norm(params, x, eps: float = 1e-5):
  """Normalises each row over its last axis, then scales and shifts: ``(..., d)``."""
  mu = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean((x - mu) ** 2, axis=-1, keepdims=True)
  x_hat = (x - mu) / jnp.sqrt(var + eps)
  return params["scale"] * x_hat + params["bias"]
