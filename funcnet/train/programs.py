"""The jitted programs: one epoch in memory, or a chunk of a streamed one.

One epoch is one call of ``make_epoch``'s program:

  X_b    = x[perm].reshape(B, b, ...)             B = n // b mini-batches of b
  loop over s = 0..B-1 (in the jitted call):
    state, m_s = train_step(state, Batch(X_b[s], Y_b[s], fold_in(key_d, s)))
    sums      += m_s

``params`` and the optimizer state are donated, so XLA updates them in
place; nothing leaves the device inside an epoch, and the metrics (mean
loss, per-layer gradient norms, update norm) are summed in the loop and
read once per epoch. The epoch compiles once for the whole run. A
streamed epoch runs the same steps ``make_chunk``'s program at a time, with
the sums carried from one call to the next, so its params equal the
in-memory epoch's bit for bit.

Divergence guard: the loop notes the first step ``s`` whose loss is not
finite; only then does the epoch rerun its steps ``0 .. s - 2`` from its
start (the same compiled steps, so the same numbers) and return those
params, the last whose loss was finite (at ``s = 0``, the epoch's starting
params), with their optimizer state. No step pays for the guard.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcnet.model import Model
from funcnet.optimizers import GradientTransformation
from funcnet.train import precision
from funcnet.train.state import TrainState
from funcnet.train.step import (Batch, epoch_metrics, gradient_fn,
                                metric_zeros, train_step)


class Layout(NamedTuple):
  """Where a program's arrays live on several devices (:mod:`funcnet.parallel`).

  Attributes:
    data: the sharding of a mini-batch's rows (split over the devices);
      None: one device.
    state: the ``(params, opt_state)`` shardings kept across the program;
      None: one device.
  """
  data: Any = None
  state: Any = None


def _gradient(model, loss, grads, layout: Layout, mixed: precision.Mixed):
  """The step's ``vg``: :func:`gradient_fn` in ``mixed.compute_dtype``,
  over ``mixed.accumulate`` micro-batches."""
  return precision.accumulate(
      gradient_fn(model, loss, grads, mixed.compute_dtype), mixed.accumulate,
      layout.data)


def _keep_layout(tree, state_sharding):
  if state_sharding is None:
    return tree
  return jax.lax.with_sharding_constraint(tree, state_sharding)


def _step(vg, optimizer, xb, yb, k_drop, norms, data_sharding, offset=None,
          refresh=None):
  """``step(i, (params, opt_state, bad_step, sums))``: step ``i`` of
  ``xb, yb`` as ``fori_loop``'s body. Its index in the epoch is ``s = i``
  (``offset + i`` in a chunk): dropout from ``fold_in(k_drop, s)``,
  ``bad_step`` the first ``s`` with a non-finite loss, ``sums`` the running
  metric sums (:func:`funcnet.train.step.metric_zeros`)."""
  def step(i, carry):
    params, opt_state, bad_step, sums = carry
    xs, ys = xb[i], yb[i]
    if data_sharding is not None:
      xs = jax.lax.with_sharding_constraint(xs, data_sharding)
      ys = jax.lax.with_sharding_constraint(ys, data_sharding)
    s = i if offset is None else offset + i
    state, m = train_step(
        TrainState(params, opt_state),
        Batch(xs, ys, jax.random.fold_in(k_drop, s)),
        vg=vg, optimizer=optimizer, norms=norms, refresh=refresh)
    params, opt_state = state.params, state.opt_state
    bad_step = jnp.where((bad_step < 0) & ~jnp.isfinite(m[0]), s, bad_step)
    sums = tuple(a + b.astype(a.dtype) for a, b in zip(sums, m))
    return params, opt_state, bad_step, sums
  return step


def _guarded(step, params, opt_state, n_steps, bad_step, sums, offset=None):
  """``n_steps`` of ``step`` from ``(params, opt_state, bad_step, sums)``,
  with the divergence guard; returns the four after them.

  The guard costs nothing per step: pass 0 runs the steps and notes the
  first step whose loss is not finite; only then does pass 1 rerun the same
  compiled steps from the start up to the step before it, whose params had
  the last finite loss (the bad step's index is ``offset +`` its place, so
  ``offset`` is subtracted). (Keeping the last good params in the carry
  instead makes every step select and copy all the params: 7 MB of extra
  memory traffic a step for the large MLP of docs/performance.md.) The sums
  and ``bad_step`` are pass 0's."""
  start = (params, opt_state, bad_step, sums)

  def run_pass(carry):
    k, _, _, bad, out_sums = carry
    first = k == 0
    rel = bad if offset is None else bad - offset
    limit = jnp.where(first, n_steps, jnp.maximum(rel - 1, 0))
    p, o, b, m = jax.lax.fori_loop(0, limit, step, start)
    return (k + 1, p, o, jnp.where(first, b, bad),
            tuple(jnp.where(first, a, c) for a, c in zip(m, out_sums)))

  def another_pass(carry):
    k, bad = carry[0], carry[3]
    return (k == 0) | ((k == 1) & (bad >= (0 if offset is None else offset)))

  _, params, opt_state, bad_step, sums = jax.lax.while_loop(
      another_pass, run_pass, (jnp.int32(0), params, opt_state, bad_step, sums))
  return params, opt_state, bad_step, sums


def make_epoch(model: Model, loss, optimizer: GradientTransformation,
               batch_size: int, grads="autodiff", *, jit: bool = True,
               layout: Layout = Layout(), prebatched: bool = False,
               mixed: precision.Mixed = precision.Mixed(), norms: bool = True):
  """The function that runs one epoch; jitted with params and state donated.

  Returns ``epoch(params, opt_state, key, x, y) -> (params, opt_state,
  EpochMetrics)`` with ``x: (n, *in_shape)``, ``y: (n, ...)``. ``grads``:
  a source name or an adversarial training's
  :class:`funcnet.train.adversarial.Adversarial` (:func:`gradient_fn`).

  ``prebatched`` epochs take ``x: (B, b, *in_shape)``, ``y: (B, b, ...)``
  already in :func:`funcnet.train.feed.batch_order` (as ``fit`` passes
  them). For :mod:`funcnet.parallel`, ``layout`` (a :class:`Layout`) splits
  each mini-batch's rows over devices and keeps the ``(params, opt_state)``
  layout across the epoch. ``mixed`` (a
  :class:`funcnet.train.precision.Mixed`: compute dtype and micro-batches
  per step) wraps the gradient (:func:`funcnet.train.precision.accumulate`).

  ``norms=False`` skips the per-layer gradient norms and the update norm
  (``EpochMetrics`` holds NaN for them): two extra passes over the params'
  size every step, which on a CPU add 14-19% to a small MLP's step and
  5-9% to a large one's (docs/performance.md).
  """
  vg = _gradient(model, loss, grads, layout, mixed)
  data_sharding, state_sharding = layout

  def epoch(params, opt_state, key, x, y):
    _, k_drop = jax.random.split(key)
    if prebatched:
      xb, yb = x, y
      n_batches = x.shape[0]
      params, opt_state = _keep_layout((params, opt_state), state_sharding)
    else:
      n = x.shape[0]
      n_batches = n // batch_size
      # On the device: XLA's sort, slow on a CPU; fit passes prebatched
      # epochs cut on the host in batch_order instead.
      perm = jax.random.permutation(jax.random.split(key)[0], n)
      perm = perm[: n_batches * batch_size]
      xb = x[perm].reshape((n_batches, batch_size) + x.shape[1:])
      yb = y[perm].reshape((n_batches, batch_size) + y.shape[1:])
    step = _step(vg, optimizer, xb, yb, k_drop, norms, data_sharding,
                 refresh=model.refresh)
    params, opt_state, bad_step, sums = _guarded(
        step, params, opt_state, n_batches, jnp.int32(-1),
        metric_zeros(params, norms))
    params, opt_state = _keep_layout((params, opt_state), state_sharding)
    return params, opt_state, epoch_metrics(params, sums, n_batches, bad_step)

  return jax.jit(epoch, donate_argnums=(0, 1)) if jit else epoch


def make_chunk(model: Model, loss, optimizer: GradientTransformation,
               grads="autodiff", *, layout: Layout = Layout(),
               mixed: precision.Mixed = precision.Mixed(), norms: bool = True):
  """Some steps of an epoch in one jitted call: the epoch of data streamed
  from shards, a chunk at a time (:func:`funcnet.train.loop.fit`);
  ``layout``, ``mixed`` and ``norms`` as :func:`make_epoch`'s.

  Returns ``chunk(params, opt_state, key, xb, yb, offset, n_steps, bad_step,
  sums) -> (params, opt_state, bad_step, sums)``: steps ``offset ..
  offset + n_steps - 1`` of the epoch whose key is ``key``, on ``xb: (K, b,
  *in_shape)``, ``yb: (K, b, ...)`` (``n_steps <= K``; rows past it are
  padding, never read). ``bad_step`` and ``sums`` come in from the previous
  chunk (``-1`` and :func:`metric_zeros` at the epoch's start) and go on, so
  the epoch's sums add up in the order :func:`make_epoch`'s do, and step
  ``s`` draws dropout from ``fold_in(split(key)[1], s)`` as there: the
  params equal the in-memory epoch's bit for bit. One compilation serves
  every chunk (``offset`` and ``n_steps`` are traced).

  Divergence guard: as :func:`make_epoch`'s, within the chunk: a
  non-finite loss at step ``s`` reruns the chunk's steps before ``s - 1``
  and returns the params step ``s - 1`` started from, the last with a
  finite loss; when ``s`` is the chunk's first step, those are the params
  the chunk started with (the step before belongs to the previous call).
  """
  vg = _gradient(model, loss, grads, layout, mixed)
  data_sharding, state_sharding = layout

  def chunk(params, opt_state, key, xb, yb, offset, n_steps, bad_step, sums):
    _, k_drop = jax.random.split(key)
    params, opt_state = _keep_layout((params, opt_state), state_sharding)
    step = _step(vg, optimizer, xb, yb, k_drop, norms, data_sharding, offset,
                 model.refresh)
    params, opt_state, bad_step, sums = _guarded(
        step, params, opt_state, n_steps, bad_step, sums, offset)
    params, opt_state = _keep_layout((params, opt_state), state_sharding)
    return params, opt_state, bad_step, sums

  return jax.jit(chunk, donate_argnums=(0, 1))
