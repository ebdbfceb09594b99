"""Evaluation on a held-out split: the metrics each task reports.

``make_evaluate(model, loss, task)`` is the jitted ``evaluate(params, x,
y)`` that ``fit`` calls on evaluation epochs, the sweep engine vmaps over
variants, and ``funcnet eval`` runs on a saved checkpoint.
"""

import jax
import jax.numpy as jnp

from funcnet import activations, losses, tasks
from funcnet.model import Model


def make_evaluate(model: Model, loss, task: str):
  """``evaluate(params, x, y) -> dict`` of held-out metrics, jitted: the
  ``loss`` and the task's own metrics (:attr:`funcnet.tasks.Task.metrics`,
  e.g. ``accuracy`` for classification).
  """
  metrics = tasks.get(task).metrics
  f_out = activations.get(model.output_activation).f

  @jax.jit
  def evaluate(params, x, y):
    z = model.logits(params, x)
    yt = losses.prepare_targets(loss, y, z.shape, z.dtype)
    out = {"loss": losses.mean(loss, model.output_activation, z, yt)}
    out.update(metrics(z, f_out(z), y, yt))  # a = f(z), as model.apply
    return out
  return evaluate


def to_host(tree) -> dict:
  """A dict of device scalars as Python floats."""
  return {k: float(v) for k, v in tree.items()}


def predict(model: Model, params, x):
  """``model.apply`` on a host array, jitted; ``(m, *in_shape) -> (m, n_out)``."""
  return jax.jit(model.apply)(params, jnp.asarray(x))
