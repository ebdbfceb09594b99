"""The training loop: one jitted call per epoch, for any model.

``fit(model, loss, optimizer, data, ...)`` trains a :class:`funcnet.model.Model`
with an optax-compatible optimizer (funcnet's own or optax's) and gradients
from the hand-written backward of its kind (``grads="manual"``) or ``jax.grad``
(``grads="autodiff"``).

One epoch is one call of a jitted function (``make_epoch``):

  perm   = batch_order(key, epoch, n, b)          on the host, numpy's shuffle
  X_b    = x[perm].reshape(B, b, ...)             B = n // b mini-batches of b
  loop over s = 0..B-1 (in the jitted call):
    C_s, g_s  = value_and_grad(params, X_b[s], Y_b[s], key=fold_in(key_d, s))
    u_s, opt  = optimizer.update(g_s, opt, params)
    params    = params + u_s                      (w := w - eta dC/dw for sgd)

``fit`` cuts epoch ``e + 1``'s ``X_b`` on the host while the device runs
epoch ``e``. ``params`` and the optimizer state are donated, so XLA updates
them in place; nothing leaves the device inside an epoch, and the metrics
(mean loss, per-layer gradient norms, update norm) are summed in the loop
and read once per epoch. The epoch compiles once for the whole run. The
last ``n mod b`` examples of each shuffled epoch are dropped (a fresh
permutation each epoch means every example is seen). Full-batch gradient
descent is ``batch_size = n``; stochastic gradient descent is
``batch_size = 1``.

Divergence guard: the loop notes the first step ``s`` whose loss is not
finite; only then does the epoch rerun its steps ``0 .. s - 2`` from its
start (the same compiled steps, so the same numbers) and return those
params, the last whose loss was finite (at ``s = 0``, the epoch's starting
params), with their optimizer state. ``fit`` stops after that epoch
(``history`` says where). No step pays for the guard.

Keys: epoch ``e`` depends only on ``(key, e)`` (its order on
``batch_order(key, e, ...)``, its dropout on ``fold_in(key, e)``), so a
resumed run (``start_epoch``) repeats an uninterrupted one bit for bit.

On several devices (``fit(plan=...)``, see :mod:`funcnet.parallel`) each
process gathers its rows of ``X_b[s]`` in the same ``batch_order`` on the
host, the epoch takes the global ``(B, b, ...)`` arrays split over the
devices, and the step above runs unchanged; XLA sums the gradient over
devices. ``compute_dtype`` (bfloat16) and ``accumulate`` (micro-batches)
wrap ``value_and_grad``.
"""

import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnet import activations, autodiff, backprop, losses, precision, tasks
from funcnet.data import streamed as streamed_data
from funcnet.errors import ConfigError
from funcnet.model import Model


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


STATUSES = ("done", "early_stopped", "diverged", "stopped")


class FitResult(NamedTuple):
  """``fit``'s result: final (or last good) params, optimizer state, history.

  Attributes:
    params, opt_state: after the last epoch run (for ``"diverged"``: the
      last params whose loss was finite, and their optimizer state).
    history: one JSON-ready dict per epoch run (see :func:`fit`).
    status: ``"done"`` (every epoch ran), ``"early_stopped"`` (patience ran
      out), ``"diverged"`` (a NaN/inf loss) or ``"stopped"`` (the callback
      asked).
    reason: one line saying why training ended before ``epochs`` (None
      when ``status == "done"``).
    position: when a ``chunk_callback`` stopped a streamed run inside an
      epoch, where (as :attr:`Start.position`); ``params`` and
      ``opt_state`` are then that step's.
  """
  params: Any
  opt_state: Any
  history: list
  status: str = "done"
  reason: Optional[str] = None
  position: Optional[dict] = None  # stopped inside an epoch (see Start)

  @property
  def diverged(self) -> bool:
    return self.status == "diverged"


class Start(NamedTuple):
  """Where ``fit`` starts: given params and optimizer state at ``epoch``
  (to resume a run, or to fine-tune); ``fit`` draws fresh ones without it.

  ``early_stopping``: the early-stopping counters at ``epoch``, as the
  record of that epoch had them (``record["early_stopping"]``, see
  :meth:`Monitor.after`); None: none yet. A resumed run passes them back so
  it stops where the uninterrupted run would.

  ``position``: inside epoch ``epoch`` of a run streamed from shards,
  ``{"step": s, "sums": [...]}``: its first ``s`` steps are done and their
  metric sums are ``sums`` (see :func:`make_chunk`); None: at its start."""
  params: Any
  opt_state: Any = None
  epoch: int = 0
  early_stopping: Optional[dict] = None
  position: Optional[dict] = None


class Evaluation(NamedTuple):
  """When ``fit`` evaluates on the held-out split, and when it stops early.

  Attributes:
    every: evaluate every this many epochs (and at the last one).
    patience: stop when the held-out loss has not improved for this many
      evaluations; None: never (the best params are *not* swapped in).
  """
  every: int = 1
  patience: Optional[int] = None


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


def gradient_fn(model: Model, loss, grads: str, compute_dtype=None):
  """``(params, x, y, key) -> (C, g)`` from the chosen gradient source.

  ``compute_dtype`` (e.g. ``bfloat16``) runs the forward and backward passes
  in that dtype while params, ``C`` and ``g`` keep theirs (mixed precision,
  see :mod:`funcnet.precision`); None computes in the params' dtype.
  """
  if grads == "manual":
    vg = backprop.value_and_grad(model, loss)
    return vg if compute_dtype is None else precision.in_dtype(vg, compute_dtype)
  if grads == "autodiff":
    if compute_dtype is not None:
      model = precision.compute_in(model, compute_dtype)
    return autodiff.value_and_grad(model, loss)
  raise ConfigError(f"grads {grads!r}: expected 'manual' or 'autodiff'")


def _key_bits(key) -> np.ndarray:
  """A PRNG key's raw bits on the host (a typed key or a legacy uint32 one)."""
  typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
  return np.asarray(jax.random.key_data(key) if typed else key)


def batch_order(key, epoch: int, n: int, batch_size: int) -> np.ndarray:
  """``(B * b,)`` int32: the example indices of an epoch's mini-batches, in order.

  A shuffle on the host, ``perm = numpy.random.default_rng([*bits(key),
  epoch]).permutation(n)[: B * b]``; step ``s`` takes ``perm[s b : (s + 1)
  b]``. It depends only on ``key`` and ``epoch``, so a resumed run repeats an
  uninterrupted one, and every process of a multi-host run (and the
  single-device path) computes the same order. Numpy's shuffle costs ~10 ns
  per example; XLA's sort-based ``jax.random.permutation`` costs ~0.5 us per
  example on a CPU, more than a small MLP's whole step.

  Args:
    key: the training key, or its ``jax.random.key_data`` bits as a numpy
      array (then nothing waits on the device).
    epoch: the epoch, from 0.
    n: examples in the training split.
    batch_size: ``b``; the last ``n mod b`` of the shuffled examples are
      dropped.
  """
  bits = key if isinstance(key, np.ndarray) else _key_bits(key)
  rng = np.random.default_rng([*(int(v) for v in bits.ravel()), int(epoch)])
  return rng.permutation(n)[: (n // batch_size) * batch_size].astype(np.int32)


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


def train_step(vg, optimizer, params, opt_state, xs, ys, key, norms=True):
  """One gradient step: ``C, g = vg(params, xs, ys, key)``; ``u, opt_state =
  optimizer.update(g, ...)``; ``params + u``.

  Returns ``(params, opt_state, metrics)`` with ``metrics = (C, ||g_l||,
  ||u||)`` (``(C,)`` without ``norms``), each in at least float32: what an
  epoch sums (:func:`metric_zeros`). The one step of :func:`make_epoch`
  and of :mod:`funcnet.sweep`'s vectorised epochs.
  """
  c, g = vg(params, xs, ys, key)
  updates, opt_state = optimizer.update(g, opt_state, params)
  params = optax.apply_updates(params, updates)
  acc = jnp.promote_types(c.dtype, jnp.float32)
  m = (c.astype(acc),) + (step_norms(g, updates, acc) if norms else ())
  return params, opt_state, m


def epoch_metrics(params, sums, n_batches, bad_step) -> EpochMetrics:
  """:class:`EpochMetrics` from an epoch's summed step metrics (NaN norms
  when they were not recorded)."""
  means = [a / n_batches for a in sums]
  if len(means) == 1:
    n_groups = len(layer_groups(params))
    means += [jnp.full((n_groups,), jnp.nan, means[0].dtype),
              jnp.array(jnp.nan, means[0].dtype)]
  return EpochMetrics(means[0], means[1], optax.tree.norm(params), means[2],
                      bad_step)


def _keep_layout(tree, state_sharding):
  if state_sharding is None:
    return tree
  return jax.lax.with_sharding_constraint(tree, state_sharding)


def _step(vg, optimizer, xb, yb, k_drop, norms, data_sharding, offset=None):
  """``step(i, (params, opt_state, bad_step, sums))``: step ``i`` of
  ``xb, yb`` as ``fori_loop``'s body. Its index in the epoch is ``s = i``
  (``offset + i`` in a chunk): dropout from ``fold_in(k_drop, s)``,
  ``bad_step`` the first ``s`` with a non-finite loss, ``sums`` the running
  metric sums (:func:`metric_zeros`)."""
  def step(i, carry):
    params, opt_state, bad_step, sums = carry
    xs, ys = xb[i], yb[i]
    if data_sharding is not None:
      xs = jax.lax.with_sharding_constraint(xs, data_sharding)
      ys = jax.lax.with_sharding_constraint(ys, data_sharding)
    s = i if offset is None else offset + i
    params, opt_state, m = train_step(
        vg, optimizer, params, opt_state, xs, ys,
        jax.random.fold_in(k_drop, s), norms)
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


def make_epoch(model: Model, loss, optimizer: optax.GradientTransformation,
               batch_size: int, grads: str = "autodiff", *, jit: bool = True,
               data_sharding=None, state_sharding=None, prebatched: bool = False,
               compute_dtype=None, accumulate: int = 1, norms: bool = True):
  """The function that runs one epoch; jitted with params and state donated.

  Returns ``epoch(params, opt_state, key, x, y) -> (params, opt_state,
  EpochMetrics)`` with ``x: (n, *in_shape)``, ``y: (n, ...)``.

  For :mod:`funcnet.parallel`: ``prebatched`` epochs take ``x: (B, b,
  *in_shape)``, ``y: (B, b, ...)`` already in :func:`batch_order`;
  ``data_sharding`` constrains each mini-batch's rows to be split over
  devices; ``state_sharding`` is the ``(params, opt_state)`` layout kept
  across the epoch. ``compute_dtype`` and ``accumulate`` (micro-batches per
  step) wrap the gradient (:func:`funcnet.precision.accumulate`).

  ``norms=False`` skips the per-layer gradient norms and the update norm
  (``EpochMetrics`` holds NaN for them): two extra passes over the params'
  size every step, which on a CPU add 14-19% to a small MLP's step and
  5-9% to a large one's (docs/performance.md).
  """
  vg = precision.accumulate(gradient_fn(model, loss, grads, compute_dtype),
                           accumulate, data_sharding)

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
    step = _step(vg, optimizer, xb, yb, k_drop, norms, data_sharding)
    params, opt_state, bad_step, sums = _guarded(
        step, params, opt_state, n_batches, jnp.int32(-1),
        metric_zeros(params, norms))
    params, opt_state = _keep_layout((params, opt_state), state_sharding)
    return params, opt_state, epoch_metrics(params, sums, n_batches, bad_step)

  return jax.jit(epoch, donate_argnums=(0, 1)) if jit else epoch


def make_chunk(model: Model, loss, optimizer: optax.GradientTransformation,
               grads: str = "autodiff", *, data_sharding=None,
               state_sharding=None, compute_dtype=None, accumulate: int = 1,
               norms: bool = True):
  """Some steps of an epoch in one jitted call: the epoch of data streamed
  from shards, a chunk at a time (:func:`fit`).

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
  vg = precision.accumulate(gradient_fn(model, loss, grads, compute_dtype),
                           accumulate, data_sharding)

  def chunk(params, opt_state, key, xb, yb, offset, n_steps, bad_step, sums):
    _, k_drop = jax.random.split(key)
    params, opt_state = _keep_layout((params, opt_state), state_sharding)
    step = _step(vg, optimizer, xb, yb, k_drop, norms, data_sharding, offset)
    params, opt_state, bad_step, sums = _guarded(
        step, params, opt_state, n_steps, bad_step, sums, offset)
    params, opt_state = _keep_layout((params, opt_state), state_sharding)
    return params, opt_state, bad_step, sums

  return jax.jit(chunk, donate_argnums=(0, 1))


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


def _to_host(tree) -> dict:
  return {k: float(v) for k, v in tree.items()}


def check_batch(batch_size: int, n: int, accumulate: int = 1) -> None:
  """Raises a one-line ``ConfigError`` unless ``1 <= batch_size <= n`` and
  ``accumulate`` splits the batch into equal micro-batches."""
  if not 1 <= batch_size <= n:
    raise ConfigError(f"batch_size = {batch_size} is larger than the {n} "
                      f"training examples; expected 1..{n}"
                      if batch_size > n else
                      f"batch_size = {batch_size}; expected 1..{n}")
  if accumulate < 1 or batch_size % accumulate:
    raise ConfigError(f"accumulate = {accumulate} does not divide batch_size = "
                      f"{batch_size}; expected equal micro-batches")


def _host_arrays(x, y, dtype):
  """``x`` and ``y`` as numpy arrays, floats in ``dtype`` (labels and ids
  keep their integer dtypes, as JAX canonicalises them)."""
  x, y = np.asarray(x), np.asarray(y)
  if np.issubdtype(x.dtype, np.floating):
    x = x.astype(dtype, copy=False)
  if np.issubdtype(y.dtype, np.floating):
    y = y.astype(dtype, copy=False)
  return x, y


def as_arrays(x, y, dtype):
  """``x`` and ``y`` as device arrays, floats in ``dtype`` (labels and ids
  keep their integer dtypes).

  Converted on the host, then copied over: ``jnp.asarray`` of a numpy array
  compiles a small program per shape and dtype, three of them in a run.
  """
  return tuple(jax.device_put(a) for a in _host_arrays(x, y, dtype))


def _fresh_copy(a):
  """A new device array holding ``a``, laid out as ``a``: a copy that
  compiles nothing (``jnp.array`` compiles one per shape). A global array
  of several processes, which ``device_put`` cannot copy, and anything not
  yet on a device take ``jnp.array``."""
  if isinstance(a, jax.Array) and a.is_fully_addressable:
    return jax.device_put(a, a.sharding, may_alias=False)
  return jnp.array(a)


@jax.jit
def _run_keys(key, epoch):
  """``(k_init, k_train, fold_in(k_train, epoch))`` from fit's ``key``.

  One compiled call for every key fit draws (op by op, split and fold_in
  compiled four small programs). Integer arithmetic: the same bits either
  way."""
  k_init, k_train = jax.random.split(key)
  return k_init, k_train, jax.random.fold_in(k_train, epoch)


class Monitor:
  """One run's bookkeeping between epochs: its history, when it evaluates,
  early stopping and the divergence verdict.

  ``fit`` keeps one; :mod:`funcnet.sweep` keeps one per variant, so a
  variant records, evaluates and stops exactly where the same run alone
  would. Epoch ``e`` (from 0) is evaluated when ``e + 1`` is a multiple of
  ``evaluation.every``, or at the last epoch, unless it diverged; counted
  from the run's first epoch, not from where this process started, so a
  resumed run evaluates the epochs the uninterrupted one does. ``status``
  leaves ``"done"`` when the loss was not finite (``"diverged"``) or the
  held-out loss has not improved for ``evaluation.patience`` evaluations
  (``"early_stopped"``). With patience, each record carries the counters
  (``record["early_stopping"] = {"best_test_loss", "evaluations_since_best"}``),
  which ``early_stopping`` (a resumed run's :attr:`Start.early_stopping`)
  restores.
  """

  def __init__(self, groups, steps_per_epoch: int, epochs: int,
               start_epoch: int = 0, evaluation: Evaluation = Evaluation(),
               norms: bool = True, lr_schedule=None, has_test: bool = True,
               early_stopping: Optional[dict] = None):
    self.groups, self.steps_per_epoch = groups, steps_per_epoch
    self.epochs, self.start_epoch = epochs, start_epoch
    self.evaluation, self.norms = evaluation, norms
    self.lr_schedule, self.has_test = lr_schedule, has_test
    self.history, self.status, self.reason = [], "done", None
    es = early_stopping or {}
    best = es.get("best_test_loss")
    self.best = np.inf if best is None else float(best)
    self.since_best = int(es.get("evaluations_since_best", 0))

  def wants_eval(self, e: int, bad_step) -> bool:
    """Whether epoch ``e`` (its ``bad_step`` from :class:`EpochMetrics`)
    is evaluated on the held-out split."""
    return bool(self.has_test and bad_step < 0 and (
        (e + 1) % self.evaluation.every == 0 or e + 1 == self.epochs))

  def stop(self, reason: str) -> None:
    self.status, self.reason = "stopped", reason

  def after(self, e: int, m: EpochMetrics, metrics: Optional[dict],
            elapsed: float) -> dict:
    """Epoch ``e``'s history record, from its host-side ``EpochMetrics`` and
    held-out ``metrics`` (None when not evaluated); updates ``status``."""
    step = (e + 1) * self.steps_per_epoch
    record = {"epoch": e + 1, "step": step, "train_loss": float(m.loss)}
    if self.norms:
      record["grad_norms"] = dict(zip(self.groups, map(float, m.grad_norms)))
    record["param_norm"] = float(m.param_norm)
    if self.norms:
      record["update_norm"] = float(m.update_norm)
    if self.lr_schedule is not None:
      record["lr"] = float(self.lr_schedule(step))
    if m.bad_step >= 0:
      self.status, self.reason = "diverged", (
          f"loss became non-finite at epoch {e + 1}, step "
          f"{e * self.steps_per_epoch + int(m.bad_step) + 1}; kept the last "
          "params with a finite loss")
      record["train_loss"] = float("nan")
    elif metrics is not None:
      record.update({f"test_{k}": v for k, v in metrics.items()})
      patience = self.evaluation.patience
      if patience is not None:
        if metrics["loss"] < self.best - 1e-12:
          self.best, self.since_best = metrics["loss"], 0
        else:
          self.since_best += 1
          if self.since_best >= patience:
            self.status, self.reason = "early_stopped", (
                f"early stopping at epoch {e + 1}: held-out loss has not "
                f"improved for {patience} evaluations")
    if self.evaluation.patience is not None:
      # inf (nothing evaluated yet) is written as None (json_safe)
      record["early_stopping"] = {"best_test_loss": float(self.best),
                                  "evaluations_since_best": self.since_best}
    record["time"] = elapsed
    self.history.append(record)
    return record


def fit(model: Model, loss, optimizer: optax.GradientTransformation, data, *,
        epochs: int, batch_size: int, key, grads: str = "autodiff",
        dtype=jnp.float32, start: Optional[Start] = None,
        evaluation: Evaluation = Evaluation(),
        mixed: precision.Mixed = precision.Mixed(), plan=None,
        callback: Optional[Callable] = None,
        lr_schedule: Optional[Callable] = None, task: Optional[str] = None,
        norms: bool = True, chunk_steps: int = 0,
        chunk_callback: Optional[Callable] = None) -> FitResult:
  """Trains ``model`` on ``data``; returns params, optimizer state and history.

  Args:
    model: any :class:`funcnet.model.Model`.
    loss: a loss name (see :mod:`funcnet.losses`).
    optimizer: an ``optax.GradientTransformation``.
    data: an object with ``x_train, y_train, x_test, y_test`` (and ``task``),
      e.g. a :class:`funcnet.data.Dataset`. ``x_test`` may be ``None``.
    epochs: the epoch to stop at (counting from 0, so a resumed run passes
      the same ``epochs`` and a later ``start.epoch``).
    batch_size: examples per step, ``1 <= batch_size <= n_train``.
    key: a PRNG key, split into ``k_init, k_train``: ``init`` uses ``k_init``
      when no ``start`` is given; epoch ``e`` takes its mini-batches in
      ``batch_order(k_train, e, ...)`` and its dropout keys from
      ``fold_in(k_train, e)``.
    grads: ``"autodiff"`` or ``"manual"``.
    dtype: the float dtype of params and inputs.
    start: a :class:`Start` (params, optimizer state, epoch) to resume or
      fine-tune from; None: ``model.init`` and ``optimizer.init``, each
      one compiled call (the same bits as op by op, see
      :mod:`funcnet.initializers`).
    evaluation: an :class:`Evaluation`: how often, and early stopping.
    mixed: a :class:`funcnet.precision.Mixed`: the forward/backward dtype
      (e.g. ``jnp.bfloat16``) and micro-batches per step.
    plan: a :class:`funcnet.parallel.Plan` to train data parallel (and
      FSDP) over its mesh, every process feeding only its own rows; None:
      one device. Either way step ``s`` sees the same examples.
    callback: ``callback(record, params, opt_state)`` after each epoch; a
      truthy return stops training (status ``"stopped"``).
    lr_schedule: ``count -> lr``, only to record the learning rate.
    task: a :mod:`funcnet.tasks` name (default: ``data.task``, else
      :data:`funcnet.tasks.DEFAULT`).
    norms: record per-layer gradient norms and the update norm (default);
      False leaves them out of ``history`` for a faster step (see
      :func:`make_epoch`).
    chunk_steps: for a training split streamed from shards
      (:mod:`funcnet.data.streamed`): steps per jitted call (0: the whole
      epoch, or what fits :data:`CHUNK_BYTES`). Each chunk's batches are
      read on the host, a chunk ahead, while the device runs the current
      one. In-memory data ignores it (one call per epoch).
    chunk_callback: streamed data only: ``chunk_callback(epoch, step,
      params, opt_state, position)`` after each chunk that ends inside an
      epoch (``step`` of its steps done; ``position`` as
      :attr:`Start.position`); a truthy return stops there (status
      ``"stopped"``, :attr:`FitResult.position` set).

  Returns:
    A :class:`FitResult`. ``history`` is a list of JSON-ready dicts, one per
    epoch: ``epoch, step, train_loss, grad_norms, param_norm, update_norm,
    lr, time`` (``grad_norms`` and ``update_norm`` only with ``norms``) and,
    on evaluation epochs, ``test_<metric>``.
  """
  task = task or getattr(data, "task", tasks.DEFAULT)
  n = int(np.shape(data.x_train)[0])
  check_batch(batch_size, n, mixed.accumulate)
  losses.check_pair(loss, model.output_activation)
  k_init, k_train, _ = _run_keys(key, 0)
  if start is None:  # one compiled call, the same bits as op by op
    start = Start(jax.jit(model.init, static_argnums=1)(k_init, dtype))
  params, start_epoch = start.params, start.epoch
  opt_state = (jax.jit(optimizer.init)(params) if start.opt_state is None
               else start.opt_state)
  compute_dtype, accumulate = mixed.compute_dtype, mixed.accumulate
  # The epoch donates every leaf; a pytree that holds one array at two
  # places (legal in a user's init) would be donated twice, and the
  # caller's arrays would be deleted. Copy once, on the device (a copy
  # that compiles nothing, unlike jnp.array's per shape).
  params, opt_state = jax.tree_util.tree_map(_fresh_copy, (params, opt_state))
  if plan is not None:
    plan.check_batch(batch_size, accumulate)
    params, opt_state = plan.place((params, opt_state))

  # The training split stays on the host: each epoch's mini-batches are cut
  # there in batch_order and shipped one epoch ahead, while the device runs
  # the current one (a shuffle inside the jitted epoch is XLA's sort, which
  # on a CPU costs more than a small MLP's steps). With a plan, each process
  # ships only its own rows.
  streamed = isinstance(data.x_train, streamed_data.Rows)
  if not streamed:
    x, y = _host_arrays(data.x_train, data.y_train, dtype)
  has_test = getattr(data, "x_test", None) is not None
  if has_test:
    x_test, y_test = as_arrays(data.x_test, data.y_test, dtype)
    if plan is not None:
      x_test, y_test = plan.replicate((x_test, y_test))
  shardings = dict(
      data_sharding=None if plan is None else plan.batch_sharding,
      state_sharding=None if plan is None else plan.shardings((params, opt_state)))
  evaluate = make_evaluate(model, loss, task)
  steps_per_epoch = n // batch_size
  monitor = Monitor(layer_groups(params), steps_per_epoch, epochs, start_epoch,
                    evaluation, norms, lr_schedule, has_test,
                    start.early_stopping)
  order_key = _key_bits(k_train)  # read once: no epoch waits on the device

  if streamed:
    run_epoch = _streamed_epochs(
        make_chunk(model, loss, optimizer, grads, compute_dtype=compute_dtype,
                   accumulate=accumulate, norms=norms, **shardings),
        data.x_train, batch_size, steps_per_epoch, dtype, plan, order_key,
        chunk_steps, norms, start.position if start_epoch < epochs else None,
        chunk_callback, start_epoch, epochs)
  else:
    epoch_fn = make_epoch(
        model, loss, optimizer, batch_size, grads, compute_dtype=compute_dtype,
        accumulate=accumulate, prebatched=True, norms=norms, **shardings)

    def batches(e):
      order = batch_order(order_key, e, n, batch_size)
      if plan is not None:
        return plan.epoch_batches(order, x, y, batch_size)
      rows = (steps_per_epoch, batch_size)
      return (jax.device_put(x[order].reshape(rows + x.shape[1:])),
              jax.device_put(y[order].reshape(rows + y.shape[1:])))

    upcoming = [batches(start_epoch) if start_epoch < epochs else None]

    def run_epoch(e, params, opt_state, key_e):
      xb, yb = upcoming[0]
      params, opt_state, m = epoch_fn(params, opt_state, key_e, xb, yb)
      if e + 1 < epochs:
        upcoming[0] = batches(e + 1)  # on the host while the device runs e
      return params, opt_state, m, None
    run_epoch.close = lambda: None

  t0 = time.perf_counter()
  try:
    for e in range(start_epoch, epochs):
      key_e = _run_keys(key, e)[2]
      params, opt_state, m, position = run_epoch(
          e, params, opt_state, key_e if plan is None else plan.replicate(key_e))
      if position is not None:  # a chunk_callback stopped inside the epoch
        return FitResult(params, opt_state, monitor.history, "stopped",
                         f"stopped by callback at step {position['step']} of "
                         f"epoch {e + 1}", position)
      m = jax.device_get(m)
      metrics = (_to_host(jax.device_get(evaluate(params, x_test, y_test)))
                 if monitor.wants_eval(e, m.bad_step) else None)
      record = monitor.after(e, m, metrics, time.perf_counter() - t0)
      if callback is not None and callback(record, params, opt_state) \
          and monitor.status == "done":
        monitor.stop(f"stopped by callback at epoch {e + 1}")
      if monitor.status != "done":
        break
  finally:
    run_epoch.close()  # a streamed run's reader thread
  return FitResult(params, opt_state, monitor.history, monitor.status,
                   monitor.reason)


# A streamed chunk's batches on the host and the device, at most (0:
# chunk_steps = 0 means the whole epoch up to this).
CHUNK_BYTES = 64 << 20


def chunk_length(in_shape, dtype, batch_size: int, steps_per_epoch: int,
                 chunk_steps: int = 0) -> int:
  """Steps per call of a streamed epoch: ``chunk_steps``, or (0) as many as
  keep a chunk's inputs within :data:`CHUNK_BYTES`; at most the epoch."""
  row = int(np.prod(in_shape)) * np.dtype(dtype).itemsize
  k = chunk_steps or max(1, CHUNK_BYTES // max(row * batch_size, 1))
  return max(1, min(k, steps_per_epoch))


# Chunks held at once while streaming: the one the device runs, the one
# being read and ``depth`` = 2 prefetched (funcnet.run.preflight counts them).
CHUNKS_IN_FLIGHT = 4


def _streamed_epochs(chunk_fn, rows, batch_size, steps_per_epoch, dtype, plan,
                     order_key, chunk_steps, norms, position, chunk_callback,
                     start_epoch, epochs):
  """``run_epoch(e, params, opt_state, key_e) -> (params, opt_state,
  EpochMetrics, position)`` for a training split streamed from shards, and
  ``run_epoch.close()``.

  The epoch's steps run in chunks of :func:`make_chunk`; each chunk's rows
  are read in :func:`batch_order`, as the in-memory epoch takes them, by one
  :class:`funcnet.data.prefetch.Prefetcher` thread for the whole run, two
  chunks ahead: across epoch ends too, so epoch ``e + 1``'s first chunk is
  read while epoch ``e``'s last one runs (a prefetcher per epoch made each
  epoch wait for its first read: 3-4% of an MNIST-1D MLP epoch).
  ``position`` (a resumed run's, for ``start_epoch``) skips the steps
  already done; the returned position is not None when ``chunk_callback``
  stopped the epoch inside.

  A call of the chunk program costs 11-17 ms before its first step here
  (docs/performance.md): a small ``train.chunk_steps`` pays it every chunk.
  """
  from funcnet.data.prefetch import Prefetcher
  b = batch_size
  k = chunk_length(rows.shape[1:], dtype, b, steps_per_epoch, chunk_steps)
  finish = jax.jit(epoch_metrics, static_argnums=2)
  first = int(position["step"]) if position is not None else 0

  def read(order):
    x, y = _host_arrays(*rows.read(order), dtype)
    return x, y

  def items():
    """``(epoch, first step, rows)`` of every chunk left in the run."""
    for e in range(start_epoch, epochs):
      order = batch_order(order_key, e, len(rows), b)
      for c in range(first if e == start_epoch else 0, steps_per_epoch, k):
        yield e, c, order[c * b:min(c + k, steps_per_epoch) * b]

  def load(item):
    e, c, order = item
    steps = len(order) // b
    if plan is not None:
      xb, yb = plan.read_batches(order, read, b, k)
    else:
      x, y = read(order)
      pad = lambda a: np.concatenate(
          [a.reshape((steps, b) + a.shape[1:]),
           np.zeros((k - steps, b) + a.shape[1:], a.dtype)])
      xb, yb = jax.device_put(pad(x)), jax.device_put(pad(y))
    return e, c, steps, xb, yb

  feed = Prefetcher(load, items(), depth=2)
  resume = [position]

  def run_epoch(e, params, opt_state, key_e):
    sums = metric_zeros(params, norms)
    if resume[0] is not None:
      sums = tuple(jnp.asarray(np.asarray(v, z.dtype))
                   for v, z in zip(resume[0]["sums"], sums))
      resume[0] = None
    bad = jnp.int32(-1)
    if plan is not None:  # inputs of a program over the mesh
      sums, bad = plan.replicate((sums, bad))
    done = None
    while done != steps_per_epoch:
      e_read, c, steps, xb, yb = next(feed)
      assert e_read == e, (e_read, e)  # the feed runs in step with the loop
      params, opt_state, bad, sums = chunk_fn(
          params, opt_state, key_e, xb, yb, jnp.int32(c), jnp.int32(steps),
          bad, sums)
      done = c + steps
      if done < steps_per_epoch and (
          chunk_callback is not None or int(bad) >= 0):
        if int(bad) >= 0:
          break  # diverged: finish the epoch's metrics here (fit stops)
        where = {"step": done,
                 "sums": [np.asarray(jax.device_get(a)).tolist()
                          for a in sums]}
        if chunk_callback(e, done, params, opt_state, where):
          return params, opt_state, None, where
    return params, opt_state, finish(params, sums, steps_per_epoch, bad), None

  run_epoch.close = feed.close
  return run_epoch


def predict(model: Model, params, x):
  """``model.apply`` on a host array, jitted; ``(m, *in_shape) -> (m, n_out)``."""
  return jax.jit(model.apply)(params, jnp.asarray(x))
