"""Batch normalisation over every axis but the last, with its backward.

Training mode normalises each feature (the last axis, ``d``) by the
statistics of the batch: with ``x: (..., d)`` and ``m`` the number of
entries per feature (the product of every other axis: examples, and
positions or pixels when there are any),

  mu    = (1/m) sum x                  var = (1/m) sum (x - mu)^2   (d,)
  sigma = sqrt(var + eps)
  x_hat = (x - mu) / sigma             y   = gamma * x_hat + beta   (..., d)

Inference mode uses running statistics instead, so an example's output
does not depend on the rest of its batch:

  y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta

updated after each training batch by an exponential moving average,

  running_mean <- momentum * running_mean + (1 - momentum) * mu
  running_var  <- momentum * running_var  + (1 - momentum) * var

(``momentum`` weighs the old statistics, as in CS231n, Flax and Keras;
PyTorch's ``momentum`` is ``1 -`` this one and its running variance is the
unbiased ``m / (m - 1) var``). The params are ``{"scale": gamma, "bias":
beta}``; the statistics ``{"mean", "var"}`` are state, not params: no
gradient flows to them.

Not wired into funcnet's training state yet (a model's ``logits`` has no
state to carry the running statistics between steps): these are the layer's
pure functions, checked on their own.
"""

import jax.numpy as jnp


def batch_norm_init(d: int, dtype=jnp.float32):
  """``{"scale": ones (d,), "bias": zeros (d,)}``: pure normalisation."""
  return {"scale": jnp.ones((d,), dtype), "bias": jnp.zeros((d,), dtype)}


def batch_norm_stats_init(d: int, dtype=jnp.float32):
  """``{"mean": zeros (d,), "var": ones (d,)}``: inference is the identity
  (up to ``eps``) before any update."""
  return {"mean": jnp.zeros((d,), dtype), "var": jnp.ones((d,), dtype)}


def batch_stats(x):
  """``(mu, var)``, each ``(d,)``: the mean and the biased variance of each
  feature over every axis of ``x: (..., d)`` but the last."""
  axes = tuple(range(x.ndim - 1))
  mu = jnp.mean(x, axis=axes)
  return mu, jnp.mean((x - mu) ** 2, axis=axes)


def batch_norm_forward(params, x, eps: float = 1e-5):
  """Training mode: normalises by the batch's statistics, then scales and shifts.

  ``x, y: (..., d)``. The cache is ``(x_hat: (..., d), sigma: (d,))``, what
  the backward needs (as for layer norm, not ``x`` or ``mu``).
  """
  mu, var = batch_stats(x)
  sigma = jnp.sqrt(var + eps)
  x_hat = (x - mu) / sigma
  return params["scale"] * x_hat + params["bias"], (x_hat, sigma)


def batch_norm_backward(params, cache, dy):
  """Training mode's backward, ``dy: (..., d) -> dx: (..., d)``.

  With ``sum`` over every axis but the last (``m`` entries per feature):

    dbeta  = sum dy                                           (d,)
    dgamma = sum dy * x_hat                                   (d,)
    dx     = (1/m) gamma / sigma
             * (m dy - dbeta - x_hat * dgamma)                (..., d)

  ``dx`` is the compact form: every ``x`` of a feature moves ``mu`` and
  ``sigma``, so besides the direct path ``gamma dy / sigma`` the gradient
  loses its mean (through ``mu``) and its component along ``x_hat``
  (through ``sigma``), the two sums.

  Returns ``(dx, {"scale": dgamma, "bias": dbeta})``.
  """
  x_hat, sigma = cache
  axes = tuple(range(dy.ndim - 1))
  m = x_hat.size // x_hat.shape[-1]
  dbeta = jnp.sum(dy, axis=axes)
  dgamma = jnp.sum(dy * x_hat, axis=axes)
  dx = (params["scale"] / (m * sigma)) * (m * dy - dbeta - x_hat * dgamma)
  return dx, {"scale": dgamma, "bias": dbeta}


def batch_norm_inference(params, stats, x, eps: float = 1e-5):
  """Inference mode: ``x: (..., d)`` normalised by the running ``stats``."""
  x_hat = (x - stats["mean"]) / jnp.sqrt(stats["var"] + eps)
  return params["scale"] * x_hat + params["bias"]


def batch_norm_update(stats, x, momentum: float = 0.9):
  """The running statistics after the training batch ``x: (..., d)``:
  ``momentum * old + (1 - momentum) * batch``, for the mean and the biased
  variance (:func:`batch_stats`). Pure: returns new ``{"mean", "var"}``."""
  mu, var = batch_stats(x)
  return {"mean": momentum * stats["mean"] + (1 - momentum) * mu,
          "var": momentum * stats["var"] + (1 - momentum) * var}


def batch_norm(params, x, eps: float = 1e-5):
  """Training-mode batch normalisation (see :func:`batch_norm_forward`)."""
  return batch_norm_forward(params, x, eps)[0]
