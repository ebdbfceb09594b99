"""Layer normalisation over the last axis, with its backward.

With ``d`` features per row, for every row ``x: (d,)`` (all leading axes
are batch axes):

  mu    = mean(x)                  rstd  = 1 / sqrt(mean((x - mu)^2) + eps)
  x_hat = (x - mu) * rstd          y     = scale * x_hat + bias
"""

import jax.numpy as jnp
from jax import lax


def layer_norm_init(d: int, dtype=jnp.float32):
  """``{"scale": ones (d,), "bias": zeros (d,)}``, so it starts as pure normalisation."""
  return {"scale": jnp.ones((d,), dtype), "bias": jnp.zeros((d,), dtype)}


def layer_norm_forward(params, x, eps: float = 1e-5):
  """Normalises each row over its last axis, then scales and shifts.

  ``x, y: (..., d)``. The cache is ``(x_hat: (..., d), rstd: (..., 1))``:
  the backward needs the normalised rows and their reciprocal standard
  deviation, not ``x`` or ``mu`` (llm.c keeps ``mean`` and ``rstd``).

  Written for ``jax.grad`` as much as for the backward: one ``rsqrt`` per
  row and a multiply per entry. ``(x - mu) / sigma`` had autodiff
  differentiate a divide of every entry (``-x_c / sigma^2``, full-size
  broadcast divides in the backward).
  """
  mu = jnp.mean(x, axis=-1, keepdims=True)
  xc = x - mu
  var = jnp.mean(xc * xc, axis=-1, keepdims=True)
  rstd = lax.rsqrt(var + eps)
  x_hat = xc * rstd
  return params["scale"] * x_hat + params["bias"], (x_hat, rstd)


def layer_norm_backward(params, cache, dy):
  """The layer norm's backward, ``dy: (..., d) -> dx: (..., d)``.

  Per row, with ``mean`` over the ``d`` features and ``sum`` over every
  leading (batch) axis:

    dx_hat = dy * scale                                       (..., d)
    dx     = (dx_hat - mean(dx_hat)
              - x_hat * mean(dx_hat * x_hat)) * rstd          (..., d)
    dscale = sum dy * x_hat                                   (d,)
    dbias  = sum dy                                           (d,)

  ``dx`` is ``dx_hat`` with the two directions the normalisation removes
  (a shift of the row, and a scaling of ``x_hat``) projected out: ``mu``
  and ``sigma = 1 / rstd`` depend on every entry of the row.

  Returns ``(dx, {"scale": dscale, "bias": dbias})``.
  """
  x_hat, rstd = cache
  dx_hat = dy * params["scale"]
  dx = (dx_hat - jnp.mean(dx_hat, axis=-1, keepdims=True)
        - x_hat * jnp.mean(dx_hat * x_hat, axis=-1, keepdims=True)) * rstd
  batch = tuple(range(dy.ndim - 1))
  return dx, {"scale": jnp.sum(dy * x_hat, axis=batch),
              "bias": jnp.sum(dy, axis=batch)}


def layer_norm(params, x, eps: float = 1e-5):
  """Layer normalisation over the last axis (see :func:`layer_norm_forward`)."""
  return layer_norm_forward(params, x, eps)[0]
