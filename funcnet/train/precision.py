"""Mixed precision and gradient accumulation: wrappers of ``value_and_grad``.

Both wrap a gradient function ``vg(params, x, y, key) -> (C, g)`` and keep
its signature, so the training step (:mod:`funcnet.train`) is the same on
one device or many (:mod:`funcnet.parallel`).

Mixed precision (``compute_dtype="bfloat16"``): params, optimizer state and
gradients stay float32; the forward and backward passes run in bfloat16
(params and inputs cast on entry). For ``jax.grad`` the logits are cast back
to float32 before the loss, so log-sum-exp and the batch mean are computed
in float32 and the loss stays finite (bfloat16 has float32's exponent range;
it loses mantissa, not range, so no loss scaling is needed, unlike float16).
The hand-written backprop runs wholly in the compute dtype; its loss and
gradients are cast back.

Gradient accumulation (``accumulate=k``): a step of ``b`` examples is cut
into ``k`` micro-batches of ``b / k`` and

  C = (1/k) sum_j C_j,   g = (1/k) sum_j g_j

which equals the full-batch mean because every micro-batch has the same
size; only one micro-batch's activations are alive at a time. Micro-batch
``j`` takes rows ``j, j + k, j + 2k, ...`` so that each one stays spread over
all devices.
"""

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from funcnet.model import Model


class Mixed(NamedTuple):
  """How a training step computes, beside the params' own dtype.

  Attributes:
    compute_dtype: the dtype of the forward and backward passes (e.g.
      ``jnp.bfloat16``); None computes in the params' dtype (the plain
      step, bit-identical to a run without it).
    accumulate: micro-batches per step, ``k``; the batch must divide by it.
  """
  compute_dtype: Optional[Any] = None
  accumulate: int = 1


def _floats(tree, dtype):
  """``tree`` with its floating arrays cast to ``dtype`` (labels, ids kept)."""
  def cast(a):
    return a.astype(dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a
  return jax.tree_util.tree_map(cast, tree)


def compute_in(model: Model, compute_dtype) -> Model:
  """``model`` whose ``logits`` compute in ``compute_dtype``.

  Params and float inputs are cast on entry; ``z`` is cast back to the
  params' dtype, so a loss on ``z`` (and ``jax.grad`` of it) stays in
  float32 while the layers run in, e.g., bfloat16. The gradient with respect
  to float32 params comes back float32 (the transpose of the cast).
  """
  compute_dtype = jnp.dtype(compute_dtype)

  def logits(params, x, key=None):
    out = jax.tree_util.tree_leaves(params)[0].dtype
    z = model.logits(_floats(params, compute_dtype), _floats(x, compute_dtype), key)
    return z.astype(out)
  return model._replace(logits=logits)


def in_dtype(vg, compute_dtype):
  """``vg(params, x, y, key) -> (C, g)`` run in ``compute_dtype``.

  For gradients that do not go through ``model.logits`` (the hand-written
  backprop): params and float inputs are cast on entry, ``C`` and ``g``
  cast back to the params' dtypes on exit.
  """
  compute_dtype = jnp.dtype(compute_dtype)

  def fn(params, x, y, key=None):
    dtypes = jax.tree_util.tree_map(lambda a: a.dtype, params)
    c, g = vg(_floats(params, compute_dtype), _floats(x, compute_dtype), y, key)
    g = jax.tree_util.tree_map(lambda a, d: a.astype(d), g, dtypes)
    return c.astype(jax.tree_util.tree_leaves(dtypes)[0]), g
  return fn


def accumulate(vg, k: int, sharding=None):
  """``vg`` averaged over ``k`` micro-batches of each batch (see the module doc).

  Args:
    vg: ``(params, x, y, key) -> (C, g)``, ``C`` a batch mean.
    k: micro-batches per batch; must divide the batch.
    sharding: optional layout of each micro-batch's rows (the batch's own).

  Returns:
    The same signature; micro-batch ``j`` draws its dropout from
    ``fold_in(key, j)``. Accumulation is in the gradients' own dtype.
  """
  if k == 1:
    return vg

  def fn(params, x, y, key=None):
    def micro(a):  # (b, ...) -> (k, b / k, ...); row j + i k -> [j, i]
      return a.reshape((a.shape[0] // k, k) + a.shape[1:]).swapaxes(0, 1)

    def body(acc, inputs):
      j, xj, yj = inputs
      if sharding is not None:
        xj = jax.lax.with_sharding_constraint(xj, sharding)
        yj = jax.lax.with_sharding_constraint(yj, sharding)
      c, g = vg(params, xj, yj, None if key is None else jax.random.fold_in(key, j))
      return jax.tree_util.tree_map(jnp.add, acc, (c, g)), None

    row = lambda a: jax.ShapeDtypeStruct((a.shape[0] // k,) + a.shape[1:], a.dtype)
    shapes = jax.eval_shape(vg, params, row(x), row(y), key)
    zero = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    (c, g), _ = jax.lax.scan(body, zero, (jnp.arange(k), micro(x), micro(y)))
    return jax.tree_util.tree_map(lambda a: a / k, (c, g))
  return fn


__all__ = ["Mixed", "accumulate", "compute_in", "in_dtype"]
