"""Gradients by ``jax.value_and_grad``: the reference the hand-written one must match.

``value_and_grad(model, loss)`` differentiates

  C(params) = (1/m) sum_i C_i(z_L[i], y[i]),   z_L = model.logits(params, x)

with JAX's reverse mode. It works for every model that keeps the contract in
:mod:`funcnet.model`, not only MLPs.
"""

import jax

from funcnet import losses
from funcnet.model import Model


def loss_fn(model: Model, loss):
  """``(params, x, y, key=None) -> C``, the batch-mean loss of ``model``."""
  losses.get(loss)
  losses.check_pair(loss, model.output_activation)

  def fn(params, x, y, key=None):
    z = model.logits(params, x, key)
    y = losses.prepare_targets(loss, y, z.shape, z.dtype)
    return losses.mean(loss, model.output_activation, z, y)
  return fn


def value_and_grad(model: Model, loss):
  """``(params, x, y, key=None) -> (C, grads)`` by ``jax.value_and_grad``."""
  return jax.value_and_grad(loss_fn(model, loss))
