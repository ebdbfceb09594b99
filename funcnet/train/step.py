"""One training step and what it measures.

  C, g = value_and_grad(params, x, y, key)      gradient_fn: manual or autodiff
  u, opt_state = optimizer.update(g, opt_state, params)
  params := params + u                          train_step

with the per-step metrics an epoch sums (the loss, per-layer gradient norms
``||dC/dθ_l||`` and the update norm ``||u||``) and their epoch means
(:class:`EpochMetrics`). The same step runs in ``fit``'s jitted epochs and
chunks and in :mod:`funcnet.sweep`'s vectorised ones, so a variant of a
sweep takes exactly the steps it would alone.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import autodiff, backprop, optimizers
from funcnet.errors import ConfigError
from funcnet.model import Model
from funcnet.train import adversarial, precision
from funcnet.train.state import TrainState


class EpochMetrics(NamedTuple):
  """What one jitted epoch returns besides params and optimizer state.

  Attributes:
    loss: mean training loss over the epoch's steps (scalar).
    grad_norms: ``(n_groups,)`` mean per-layer gradient norm ``||dC/dθ_l||``.
    param_norm: global norm of the params at the end of the epoch.
    update_norm: mean global norm of the updates ``u_s``.
    bad_step: index of the first step with a non-finite loss, -1 if none.
  """
  loss: jnp.ndarray
  grad_norms: jnp.ndarray
  param_norm: jnp.ndarray
  update_norm: jnp.ndarray
  bad_step: jnp.ndarray


def _layers(params):
  """``[(name, subtree)]``: the layers whose gradient norms are tracked.

  An MLP's params are a list of layers (``layer 1``, ...). Other models'
  params are a dict: a key holding a list is one layer per entry (``conv 1``,
  ``conv 2``, ``blocks 1``, ...), any other key one layer (``head``,
  ``fwd``, ...). Names count from 1, as the equations do.
  """
  if isinstance(params, (list, tuple)):
    return [(f"layer {i + 1}", p) for i, p in enumerate(params)]
  if not isinstance(params, dict):
    return [("params", params)]
  out = []
  for k in sorted(params):
    v = params[k]
    if isinstance(v, (list, tuple)) and v:
      out += [(f"{k} {i + 1}", p) for i, p in enumerate(v)]
    else:
      out.append((str(k), v))
  return out


def layer_groups(params) -> list[str]:
  """Names of the per-layer groups whose gradient norms are tracked."""
  return [name for name, _ in _layers(params)]


def layer_subtrees(params) -> list:
  """The params of each group of :func:`layer_groups`, in the same order."""
  return [p for _, p in _layers(params)]


def gradient_fn(model: Model, loss, grads, compute_dtype=None):
  """``(params, x, y, key) -> (C, g)`` from the chosen gradient source.

  ``grads``: ``"manual"`` or ``"autodiff"``, or an
  :class:`funcnet.train.adversarial.Adversarial` (adversarial training: the
  gradient, by its ``source``, of each batch mixed with attacks on it).
  ``compute_dtype`` (e.g. ``bfloat16``) runs the forward and backward passes
  in that dtype while params, ``C`` and ``g`` keep theirs (mixed precision,
  see :mod:`funcnet.train.precision`); None computes in the params' dtype.
  """
  if isinstance(grads, adversarial.Adversarial):
    return adversarial.value_and_grad(
        gradient_fn(model, loss, grads.source, compute_dtype), model, loss,
        grads)
  if grads == "manual":
    vg = backprop.value_and_grad(model, loss)
    return vg if compute_dtype is None else precision.in_dtype(vg, compute_dtype)
  if grads == "autodiff":
    if compute_dtype is not None:
      model = precision.compute_in(model, compute_dtype)
    return autodiff.value_and_grad(model, loss)
  raise ConfigError(f"grads {grads!r}: expected 'manual' or 'autodiff'")


def metric_zeros(params, norms: bool = True) -> tuple:
  """The zero sums of an epoch's step metrics (see :func:`train_step`).

  Summed in the loop carry (not stacked per step), in at least float32 so a
  bfloat16 run still averages its loss accurately.
  """
  acc = jnp.promote_types(jax.tree_util.tree_leaves(params)[0].dtype,
                          jnp.float32)
  n_groups = len(layer_groups(params))
  return ((jnp.zeros((), acc), jnp.zeros((n_groups,), acc), jnp.zeros((), acc))
          if norms else (jnp.zeros((), acc),))


def step_norms(g, updates, dtype):
  """``(||g_l|| per layer group, ||u||)`` of one step's gradient and update.

  From each leaf's squared norm as a dot product: on a CPU, XLA runs a
  reduction as its own pass, and vdot's one pass per leaf (n_leaves passes
  over g and u, not the 2 n_leaves of per-group optax.global_norm calls)
  costs half as much. Leaf l belongs to layer group ``group_of[l]`` (the
  groups of :func:`layer_groups`, whose leaves come in tree_leaves order).
  """
  subtrees = layer_subtrees(g)
  group_of = np.repeat(np.arange(len(subtrees)), [
      len(jax.tree_util.tree_leaves(t)) for t in subtrees])
  sq = jnp.stack([
      jnp.stack([jnp.vdot(a, a), jnp.vdot(b, b)]).astype(dtype)
      for a, b in zip(jax.tree_util.tree_leaves(g),
                      jax.tree_util.tree_leaves(updates))])
  per_group = jax.ops.segment_sum(sq[:, 0], group_of, len(subtrees))
  return jnp.sqrt(per_group), jnp.sqrt(jnp.sum(sq[:, 1]))


class Batch(NamedTuple):
  """One step's examples and its dropout key.

  Attributes:
    x: ``(b, *in_shape)`` inputs.
    y: ``(b,)`` labels or ``(b, n_out)`` targets.
    key: the step's key, ``fold_in(k_drop, s)`` for step ``s`` of an epoch.
  """
  x: Any
  y: Any
  key: Any


def train_step(state: TrainState, batch: Batch, *, vg, optimizer,
               norms: bool = True, refresh=None):
  """One gradient step, ``train_step(state, batch) -> (state, metrics)``:

    C, g           = vg(params, x, y, key)
    u, opt_state   = optimizer.update(g, opt_state, params)
    params        := params + u

  ``vg`` is a :func:`gradient_fn`, ``optimizer`` a ``GradientTransformation``
  (funcnet's or optax's). Only ``params`` and ``opt_state`` of ``state``
  change (the step and epoch counters are the host's, see
  :mod:`funcnet.train.state`). ``metrics = (C, ||g_l||, ||u||)`` (``(C,)``
  without ``norms``), each in at least float32: what an epoch sums
  (:func:`metric_zeros`). The one step of the jitted epoch and chunk
  programs (:mod:`funcnet.train.programs`) and of :mod:`funcnet.sweep`'s
  vectorised epochs.

  ``refresh`` (a model's ``Model.refresh``, e.g. batch norm's running
  statistics) then sets the params' non-learned leaves from the step's
  batch: ``params := refresh(old params, params, x, key)``.
  """
  c, g = vg(state.params, batch.x, batch.y, batch.key)
  updates, opt_state = optimizer.update(g, state.opt_state, state.params)
  params = optimizers.apply_updates(state.params, updates)
  if refresh is not None:
    params = refresh(state.params, params, batch.x, batch.key)
  acc = jnp.promote_types(c.dtype, jnp.float32)
  m = (c.astype(acc),) + (step_norms(g, updates, acc) if norms else ())
  return state._replace(params=params, opt_state=opt_state), m


def epoch_metrics(params, sums, n_batches, bad_step) -> EpochMetrics:
  """:class:`EpochMetrics` from an epoch's summed step metrics (NaN norms
  when they were not recorded)."""
  means = [a / n_batches for a in sums]
  if len(means) == 1:
    n_groups = len(layer_groups(params))
    means += [jnp.full((n_groups,), jnp.nan, means[0].dtype),
              jnp.array(jnp.nan, means[0].dtype)]
  return EpochMetrics(means[0], means[1], optimizers.global_norm(params), means[2],
                      bad_step)
