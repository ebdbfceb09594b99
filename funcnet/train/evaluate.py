"""Evaluation on a held-out split: the metrics each task reports.

``make_evaluate(model, loss, task)`` is the jitted ``evaluate(params, x,
y)`` that ``fit`` calls on evaluation epochs, the sweep engine vmaps over
variants, and ``funcnet eval`` runs on a saved checkpoint.
"""

import jax
import jax.numpy as jnp

from funcnet import losses
from funcnet.model import Model


def make_evaluate(model: Model, loss, task: str):
  """``evaluate(params, x, y) -> dict`` of held-out metrics, jitted.

  classification: ``loss`` and ``accuracy`` (argmax of ``z``, or ``z > 0`` for
  one sigmoid output); regression: ``loss`` and ``rmse``; ratings: ``loss``,
  ``rmse`` and ``mae`` of the predicted ratings.
  """
  @jax.jit
  def evaluate(params, x, y):
    z = model.logits(params, x)
    yt = losses.prepare_targets(loss, y, model.n_out, z.shape[0], z.dtype)
    out = {"loss": losses.mean(loss, model.output_activation, z, yt)}
    if task == "classification":
      pred = (z[:, 0] > 0).astype(jnp.int32) if model.n_out == 1 else jnp.argmax(z, -1)
      labels = y if y.ndim == 1 else jnp.argmax(y, -1)
      out["accuracy"] = jnp.mean(pred == labels)
    else:
      a = model.apply(params, x)
      err = a - yt
      out["rmse"] = jnp.sqrt(jnp.mean(err ** 2))
      if task == "ratings":
        out["mae"] = jnp.mean(jnp.abs(err))
    return out
  return evaluate


def to_host(tree) -> dict:
  """A dict of device scalars as Python floats."""
  return {k: float(v) for k, v in tree.items()}


def predict(model: Model, params, x):
  """``model.apply`` on a host array, jitted; ``(m, *in_shape) -> (m, n_out)``."""
  return jax.jit(model.apply)(params, jnp.asarray(x))
