"""``fit``: the training loop, one jitted call per epoch (or chunk).

  fit(model, loss, optimizer, data, *, options=FitOptions(epochs, batch_size,
      key, ...), state=None, callbacks=Callbacks(on_epoch, on_chunk))
    -> FitResult(state, history, status, reason)

For each epoch ``e`` from ``state.epoch``: the feed (:mod:`.feed`) gives its
mini-batches, the jitted program (:mod:`.programs`) runs its steps, the
:class:`~funcnet.train.monitor.Monitor` turns the metrics into a history
record (evaluating on the held-out split when due) and says whether to go
on; ``callbacks.on_epoch`` sees the record and the new
:class:`~funcnet.train.state.TrainState`.

Keys: epoch ``e`` depends only on ``(key, e)`` (its order on
``batch_order(key, e, ...)``, its dropout on ``fold_in(key, e)``), so a
run resumed from a ``TrainState`` repeats an uninterrupted one bit for bit.
"""

import time
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import initializers, losses, tasks
from funcnet.data import streamed as streamed_data
from funcnet.model import Model
from funcnet.optimizers import GradientTransformation
from funcnet.train import host_keys, program_cache
from funcnet.train import precision
from funcnet.train.adversarial import Adversarial
from funcnet.train.evaluate import make_evaluate, to_host
from funcnet.train.feed import (InMemoryFeed, StreamedFeed, key_bits,
                                as_arrays, check_batch, device_dtype,
                                host_arrays)
from funcnet.train.monitor import Evaluation, Monitor, epoch_rates
from funcnet.train.programs import Layout, make_chunk, make_epoch
from funcnet.train.state import TrainState
from funcnet.train.step import epoch_metrics, layer_groups, metric_zeros

# A fit that runs one epoch of at most this many steps compiles its epoch
# and evaluation programs quick (program_cache.QUICK_TO_COMPILE): they run
# once, and at 17-29% slower steps a short epoch loses less than the
# compilation saves (the default run's epoch 0.50-0.60 -> 0.31-0.38 s to
# compile; docs/performance.md, "Level 1, and a one-epoch run's epoch").
QUICK_STEPS = 256


class FitOptions(NamedTuple):
  """How ``fit`` trains: the loop's settings, grouped.

  Attributes:
    epochs: the epoch to stop at (counting from 0, so a resumed run passes
      the same ``epochs`` and a later ``state.epoch``).
    batch_size: examples per step, ``1 <= batch_size <= n_train``.
    key: a PRNG key, split into ``k_init, k_train``: ``init`` uses
      ``k_init`` when no ``state`` is given; epoch ``e`` takes its
      mini-batches in ``batch_order(k_train, e, ...)`` and its dropout keys
      from ``fold_in(k_train, e)``.
    grads: ``"autodiff"`` or ``"manual"``, or an
      :class:`funcnet.train.adversarial.Adversarial` naming its source
      (each batch mixed with attacks on it, made inside the step).
    dtype: the float dtype of params and inputs.
    evaluation: an :class:`~funcnet.train.monitor.Evaluation`: how often,
      and early stopping.
    mixed: a :class:`funcnet.train.precision.Mixed`: the forward/backward
      dtype (e.g. ``jnp.bfloat16``) and micro-batches per step.
    plan: a :class:`funcnet.parallel.Plan` to train data parallel (and
      FSDP) over its mesh, every process feeding only its own rows; None:
      one device. Either way step ``s`` sees the same examples.
    lr_schedule: ``count -> lr``, only to record the learning rate.
    task: a :mod:`funcnet.tasks` name (default: ``data.task``, else
      :data:`funcnet.tasks.DEFAULT`).
    norms: record per-layer gradient norms and the update norm (default);
      False leaves them out of the history for a faster step.
    chunk_steps: for a training split streamed from shards: steps per
      jitted call (0: the whole epoch, or what fits
      :data:`funcnet.train.feed.CHUNK_BYTES`). In-memory data ignores it
      (one call per epoch).
    programs: a string that decides ``model``, ``loss``, ``optimizer`` and
      ``lr_schedule`` (the caller vouches: :meth:`funcnet.experiment.Setup.fit`
      passes its :attr:`~funcnet.experiment.Setup.program_identity`); with
      it, and :mod:`funcnet.train.program_cache` on, fit's epoch, evaluation
      and learning-rate table programs are loaded from that cache without
      tracing. None: jitted.
      Ignored for data streamed from shards and with a ``plan``.
    evaluation_programs: the same for the evaluation alone, which reads
      ``model`` and ``loss`` but not the optimizer (a sweep's variants that
      differ in learning rate share it); None: ``programs``.
  """
  epochs: int
  batch_size: int
  key: Any
  grads: Union[str, Adversarial] = "autodiff"
  dtype: Any = jnp.float32
  evaluation: Evaluation = Evaluation()
  mixed: precision.Mixed = precision.Mixed()
  plan: Any = None
  lr_schedule: Optional[Callable] = None
  task: Optional[str] = None
  norms: bool = True
  chunk_steps: int = 0
  programs: Optional[str] = None
  evaluation_programs: Optional[str] = None


class Callbacks(NamedTuple):
  """What ``fit`` calls as it trains; a truthy return stops it (status
  ``"stopped"``).

  Attributes:
    on_epoch: ``on_epoch(record, state, status)`` after each epoch:
      ``record`` its history dict, ``state`` the
      :class:`~funcnet.train.state.TrainState` after it, ``status`` the
      monitor's verdict so far (``"diverged"``: ``state`` is not worth
      saving).
    on_chunk: streamed data only: ``on_chunk(state)`` after each chunk
      that ends inside an epoch; ``state.position`` says where.
    meanwhile: ``meanwhile()`` once, before the first epoch, while XLA
      compiles fit's programs on other threads (when they compile): host
      work the caller would do anyway, done in that time (the experiment's
      summary traces its FLOP count there). Its return value is ignored.
  """
  on_epoch: Optional[Callable] = None
  on_chunk: Optional[Callable] = None
  meanwhile: Optional[Callable] = None


class FitResult(NamedTuple):
  """``fit``'s result.

  Attributes:
    state: the :class:`~funcnet.train.state.TrainState` after the last epoch
      run (for ``"diverged"`` by a non-finite loss: the last params whose
      loss was finite, and their optimizer state; when ``on_chunk`` stopped
      a streamed run inside an epoch, that step's, with ``position`` set).
    history: one JSON-ready dict per epoch run: ``epoch, step, train_loss,
      grad_norms, param_norm, update_norm, lr, time`` (``grad_norms`` and
      ``update_norm`` only with ``norms``) and, on evaluation epochs,
      ``test_<metric>``.
    status: ``"done"`` (every epoch ran), ``"early_stopped"`` (patience ran
      out), ``"diverged"`` (a NaN/inf loss, or one grown past
      :data:`funcnet.train.monitor.LOSS_GROWTH_LIMIT`) or ``"stopped"`` (a
      callback asked).
    reason: one line saying why training ended before ``epochs`` (None
      when ``status == "done"``).
    best_epoch: with ``Evaluation(restore_best=True)``, the epoch whose
      params ``state`` holds (the lowest held-out loss); None otherwise.
  """
  state: TrainState
  history: list
  status: str = "done"
  reason: Optional[str] = None
  best_epoch: Optional[int] = None

  @property
  def diverged(self) -> bool:
    return self.status == "diverged"


def fit(model: Model, loss, optimizer: GradientTransformation, data, *,
        options: FitOptions, state: Optional[TrainState] = None,
        callbacks: Callbacks = Callbacks()) -> FitResult:
  """Trains ``model`` on ``data``; returns the final state and history.

  Args:
    model: any :class:`funcnet.model.Model`.
    loss: a loss name (see :mod:`funcnet.losses`).
    optimizer: a ``GradientTransformation``, funcnet's or optax's
      (:class:`funcnet.optimizers.GradientTransformation`).
    data: an object with ``x_train, y_train, x_test, y_test`` (and ``task``),
      e.g. a :class:`funcnet.data.Dataset`. ``x_test`` may be ``None``;
      ``x_train`` may be the rows of a split streamed from shards
      (:mod:`funcnet.data.streamed`).
    options: :class:`FitOptions`.
    state: a :class:`~funcnet.train.state.TrainState` to resume or
      fine-tune from (``opt_state`` None: ``optimizer.init``); None:
      ``model.init`` and ``optimizer.init``, each one compiled call (the
      same bits as op by op, see :mod:`funcnet.initializers`).
    callbacks: :class:`Callbacks`.

  Returns:
    A :class:`FitResult`.
  """
  n = int(np.shape(data.x_train)[0])
  check_batch(options.batch_size, n, options.mixed.accumulate)
  losses.check_pair(loss, model.output_activation)
  identity = _identity(loss, data, options)
  run_keys = run_keys_for(options.key, identity is not None)
  k_init, k_train, _ = run_keys(options.key, 0)
  state = _starting_state(model, optimizer, state, k_init, options,
                          n // options.batch_size)
  return _Loop(model, loss, optimizer, data, options, state, k_train,
               callbacks, run_keys).run(state)


def _identity(loss, data, o: FitOptions) -> Optional[str]:
  """``o.programs`` with what else decides fit's programs: the loss and
  the options the steps and the evaluation are built from; None when the
  cache is not used."""
  if o.programs is None or o.plan is not None \
      or isinstance(data.x_train, streamed_data.Rows):
    return None
  return program_cache.digest(
      (o.programs, loss, o.batch_size, str(jnp.dtype(o.dtype)), o.grads,
       o.mixed, o.norms, o.task or getattr(data, "task", tasks.DEFAULT)))


def _evaluation_identity(loss, data, o: FitOptions) -> Optional[str]:
  """The evaluation's identity: ``o.evaluation_programs`` in place of
  ``o.programs`` when given (see :class:`FitOptions`)."""
  if o.evaluation_programs is None:
    return _identity(loss, data, o)
  return _identity(loss, data, o._replace(programs=o.evaluation_programs))


def _quick(o: FitOptions, start: int, steps: int, streamed: bool) -> bool:
  """Whether fit's epoch and evaluation compile quick: a fresh fit of one
  short epoch (a newcomer's first run, a smoke test) runs each once. Not a
  resumed fit's last epoch: a resumed run gives the uninterrupted one's
  numbers bit for bit, and the older emitters may round differently (the
  MNIST-1D CNN's first-epoch loss by 1 ulp)."""
  return (o.epochs - start == 1 and start == 0 and steps <= QUICK_STEPS
          and not streamed)


def _epoch_program(model, loss, optimizer, o: FitOptions, layout: Layout):
  """The jitted epoch of in-memory data (:func:`~.programs.make_epoch`)."""
  return make_epoch(model, loss, optimizer, o.batch_size, o.grads,
                    layout=layout, prebatched=True, mixed=o.mixed,
                    norms=o.norms)


def prepare(model: Model, loss, optimizer: GradientTransformation, data, *,
            options: FitOptions, state: TrainState) -> None:
  """Begins compiling the epoch and evaluation programs a ``fit`` with
  these arguments will run first, on threads (XLA releases the GIL while it
  compiles), and returns; that ``fit`` takes them from the program cache,
  waiting for them at its first calls.

  For a caller with other work before ``fit``: ``Setup.init_state`` runs
  it while XLA compiles init on a cold cache, so the three compilations
  overlap (docs/performance.md, "Cold start: programs compiled beside
  each other"). ``state``'s arrays may be shapes
  (``jax.ShapeDtypeStruct``s with the init's dtypes). Nothing is done
  unless ``fit`` would use the program cache (``options.programs``, the
  cache on, one device, data in memory) and has an epoch to run; a warm
  cache loads the programs here instead.
  """
  o = options
  identity = _identity(loss, data, o)
  if identity is None or program_cache.folder() is None \
      or state.epoch >= o.epochs:
    return
  steps = int(np.shape(data.x_train)[0]) // o.batch_size
  quick = _quick(o, state.epoch, steps, False)
  # fit's state is committed to the device (_starting_state's copies), and
  # an executable lowered for committed inputs gives committed outputs:
  # shapes without a sharding would give the run's params uncommitted,
  # and each eager op on them (a comparison, a sample) a second program
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  params, opt_state = jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(
          a.shape, a.dtype, sharding=a.sharding
          if isinstance(a, jax.Array) else device),
      (state.params, state.opt_state))
  key_e = run_keys_for(o.key, True)(o.key, state.epoch)[2]
  xb, yb = (jax.ShapeDtypeStruct((steps, o.batch_size, *np.shape(a)[1:]),
                                 device_dtype(a, o.dtype))
            for a in (data.x_train, data.y_train))
  program_cache.at_first_call(
      _epoch_program(model, loss, optimizer, o, Layout()), identity,
      quick=quick).start(params, opt_state, key_e, xb, yb)
  if getattr(data, "x_test", None) is not None:
    test = (jax.ShapeDtypeStruct(np.shape(a), device_dtype(a, o.dtype))
            for a in (data.x_test, data.y_test))
    program_cache.at_first_call(
        make_evaluate(model, loss, o.task or getattr(data, "task",
                                                     tasks.DEFAULT)),
        _evaluation_identity(loss, data, o), quick=quick).start(
            params, *test)


def _starting_state(model, optimizer, state, k_init, options,
                    steps_per_epoch) -> TrainState:
  """``state`` (or a fresh one) with its own copy of every array, on the
  plan's mesh, and ``step`` counted from its epoch and position."""
  quick = program_cache.quick_options()  # they run once
  if state is None:  # one compiled call, the same bits as op by op
    state = TrainState(jax.jit(initializers.batched(model.init),
                               static_argnums=1,
                               compiler_options=quick)(k_init, options.dtype))
  opt_state = (jax.jit(optimizer.init, compiler_options=quick)(state.params)
               if state.opt_state is None else state.opt_state)
  # The epoch donates every leaf; a pytree that holds one array at two
  # places (legal in a user's init) would be donated twice, and the
  # caller's arrays would be deleted. Copy once, on the device (a copy
  # that compiles nothing, unlike jnp.array's per shape).
  params, opt_state = jax.tree_util.tree_map(_fresh_copy,
                                             (state.params, opt_state))
  if options.plan is not None:
    options.plan.check_batch(options.batch_size, options.mixed.accumulate)
    params, opt_state = options.plan.place((params, opt_state))
  inside = (state.position or {}).get("step", 0)
  return state._replace(params=params, opt_state=opt_state,
                        step=state.epoch * steps_per_epoch + inside)


class _Loop:
  """One ``fit`` call: its feed, compiled program, evaluation and monitor.

  The training split stays on the host: each epoch's mini-batches are cut
  there in batch_order and shipped ahead while the device runs the current
  epoch or chunk (:mod:`funcnet.train.feed`)."""

  def __init__(self, model, loss, optimizer, data, options: FitOptions,
               state: TrainState, k_train, callbacks: Callbacks,
               run_keys):
    o, self.options, self.callbacks = options, options, callbacks
    self.run_keys = run_keys  # fit's _run_keys (host_keys', or compiled)
    # with an identity: the first call's shapes load the cached programs
    self.identity = _identity(loss, data, options)
    task = o.task or getattr(data, "task", tasks.DEFAULT)
    self.steps = int(np.shape(data.x_train)[0]) // o.batch_size
    self.streamed = isinstance(data.x_train, streamed_data.Rows)
    self.test = None
    if getattr(data, "x_test", None) is not None:
      self.test = as_arrays(data.x_test, data.y_test, o.dtype)
      if o.plan is not None:
        self.test = o.plan.replicate(self.test)
    layout = Layout() if o.plan is None else Layout(
        o.plan.batch_sharding, o.plan.shardings((state.params, state.opt_state)))
    self.evaluate = make_evaluate(model, loss, task)
    self.monitor = Monitor(layer_groups(state.params), self.steps, o.epochs,
                           o.evaluation, o.norms, o.lr_schedule,
                           self.test is not None, state,
                           rates=self._rates(state.epoch))
    order_key = key_bits(k_train)  # read once: no epoch waits on the device
    epochs = range(state.epoch, o.epochs)
    self.quick = _quick(o, state.epoch, self.steps, self.streamed)
    if self.streamed:
      self.program = make_chunk(model, loss, optimizer, o.grads, layout=layout,
                                mixed=o.mixed, norms=o.norms)
      self.finish = jax.jit(epoch_metrics, static_argnums=2)
      self.feed = StreamedFeed(
          data.x_train, order_key, o.batch_size, o.dtype, o.plan,
          chunk_steps=o.chunk_steps, epochs=epochs,
          first_step=(state.position or {}).get("step", 0)
          if state.epoch < o.epochs else 0)
    else:
      x, y = host_arrays(data.x_train, data.y_train, o.dtype)
      self.program = _epoch_program(model, loss, optimizer, o, layout)
      self.feed = InMemoryFeed(x, y, order_key, o.batch_size, o.plan,
                               epochs=epochs)
    # with an identity, from the program cache; when quick, compiled quick
    # (with or without a cache)
    evaluation = _evaluation_identity(loss, data, o)
    self.program, self.evaluate = (
        program_cache.at_first_call(f, identity, quick=self.quick)
        for f, identity in ((self.program, self.identity),
                            (self.evaluate, evaluation)))

  def run(self, state: TrainState) -> FitResult:
    """Epochs ``state.epoch .. epochs - 1``, until the monitor or a callback
    stops them."""
    o, monitor, on_epoch = self.options, self.monitor, self.callbacks.on_epoch
    t0 = time.perf_counter()
    self._start(state)
    best = None  # (params, epoch) of the best evaluation, for restore_best
    try:
      for e in range(state.epoch, o.epochs):
        key_e = self.run_keys(o.key, e)[2]
        key_e = key_e if o.plan is None else o.plan.replicate(key_e)
        state, m = (self._streamed_epoch if self.streamed
                    else self._epoch)(e, state, key_e)
        if m is None:  # on_chunk stopped inside the epoch
          return FitResult(state, monitor.history, "stopped",
                           f"stopped by callback at step "
                           f"{state.position['step']} of epoch {e + 1}")
        m = jax.device_get(m)
        metrics = (to_host(jax.device_get(self.evaluate(
            state.params, *self.test)))
                   if monitor.wants_eval(e, m.bad_step) else None)
        record = monitor.after(e, m, metrics, time.perf_counter() - t0)
        if monitor.improved and o.evaluation.restore_best:
          # A copy: the next epoch's call donates state.params' buffers.
          best = (jax.tree.map(_fresh_copy, state.params), e + 1)
        state = state._replace(
            epoch=e + 1, step=(e + 1) * self.steps, position=None,
            early_stopping=monitor.early_stopping(),
            initial_loss=monitor.initial_loss)
        if on_epoch is not None and on_epoch(record, state, monitor.status) \
            and monitor.status == "done":
          monitor.stop(f"stopped by callback at epoch {e + 1}")
        if monitor.status != "done":
          break
    finally:
      self.feed.close()  # a streamed run's reader thread
    if best is not None and monitor.status != "stopped":  # a stop is resumed
      state = state._replace(params=best[0])
      return FitResult(state, monitor.history, monitor.status,
                       monitor.reason, best_epoch=best[1])
    return FitResult(state, monitor.history, monitor.status, monitor.reason)

  def _start(self, state: TrainState) -> None:
    """The first epoch's program and the evaluation begun on threads (when
    they compile: a cold cache), then ``callbacks.meanwhile``; the first
    calls wait for the programs. Lowering stays in this thread (its
    config contexts); XLA's compilations run beside each other and beside
    ``meanwhile`` (it releases the GIL)."""
    o = self.options
    if not self.streamed and state.epoch < o.epochs:
      key_e = self.run_keys(o.key, state.epoch)[2]
      key_e = key_e if o.plan is None else o.plan.replicate(key_e)
      self.program.start(state.params, state.opt_state, key_e,
                         *self.feed.upcoming)
    if self.test is not None:
      self.evaluate.start(state.params, *self.test)
    if self.callbacks.meanwhile is not None:
      self.callbacks.meanwhile()

  def _rates(self, start: int):
    """Every epoch's learning rate, for the records
    (:func:`~funcnet.train.monitor.epoch_rates`; with an identity, its
    program from the program cache: a warm run loads it untraced); None
    without a schedule or an epoch left from ``start`` (the monitor then
    calls the schedule itself)."""
    o = self.options
    if o.lr_schedule is None or start >= o.epochs:
      return None
    return epoch_rates(o.lr_schedule, self.steps, o.epochs, self.identity)

  def _epoch(self, e: int, state: TrainState, key_e):
    """Epoch ``e`` of in-memory data: one call of the epoch program."""
    for chunk in self.feed.epoch(e):  # the next epoch is cut after the call
      params, opt_state, m = self.program(state.params, state.opt_state,
                                          key_e, chunk.xb, chunk.yb)
      state = state._replace(params=params, opt_state=opt_state)
    return state, m

  def _streamed_epoch(self, e: int, state: TrainState, key_e):
    """Epoch ``e`` of streamed data, a chunk program call per chunk, with the
    metric sums carried across calls (from ``state.position`` when resumed
    inside it). Returns ``(state, EpochMetrics)``, or ``(state, None)`` with
    ``state.position`` set when ``on_chunk`` stopped inside the epoch."""
    o, on_chunk = self.options, self.callbacks.on_chunk
    sums = metric_zeros(state.params, o.norms)
    if state.position is not None:
      sums = tuple(jnp.asarray(np.asarray(v, z.dtype))
                   for v, z in zip(state.position["sums"], sums))
    bad = jnp.int32(-1)
    if o.plan is not None:  # inputs of a program over the mesh
      sums, bad = o.plan.replicate((sums, bad))
    params, opt_state = state.params, state.opt_state
    for chunk in self.feed.epoch(e):
      params, opt_state, bad, sums = self.program(
          params, opt_state, key_e, chunk.xb, chunk.yb, jnp.int32(chunk.first),
          jnp.int32(chunk.steps), bad, sums)
      done = chunk.first + chunk.steps
      if done < self.steps and (on_chunk is not None or int(bad) >= 0):
        if int(bad) >= 0:
          break  # diverged: finish the epoch's metrics here (fit stops)
        where = {"step": done,
                 "sums": [np.asarray(jax.device_get(a)).tolist()
                          for a in sums]}
        inside = state._replace(params=params, opt_state=opt_state,
                                step=e * self.steps + done, position=where)
        if on_chunk(inside):
          return inside, None
    state = state._replace(params=params, opt_state=opt_state, position=None)
    return state, self.finish(params, sums, self.steps, bad)


def _fresh_copy(a):
  """A new device array holding ``a``, laid out as ``a``: a copy that
  compiles nothing (``jnp.array`` compiles one per shape). A global array
  of several processes, which ``device_put`` cannot copy, and anything not
  yet on a device take ``jnp.array``."""
  if isinstance(a, jax.Array) and a.is_fully_addressable:
    return jax.device_put(a, a.sharding, may_alias=False)
  return jnp.array(a)


def run_keys_for(key, cached: bool = False):
  """The function ``(key, epoch) -> (k_init, k_train, fold_in(k_train,
  epoch))`` fit draws its keys with (:func:`_run_keys`'s values): made on
  the host (nothing to compile) from a concrete threefry key
  (:mod:`funcnet.train.host_keys`); else one program, decided by the key's
  type alone, kept in the program cache when ``cached``."""
  if host_keys.usable(key):
    return host_keys.run_keys
  return program_cache.compiled(
      _run_keys, (key, 0), "funcnet.train.loop._run_keys" if cached else None,
      quick=True, integers=True)


def _run_keys(key, epoch):
  """``(k_init, k_train, fold_in(k_train, epoch))`` from fit's ``key``.

  One compiled call for every key fit draws (op by op, split and fold_in
  compiled four small programs). Integer arithmetic: the same bits either
  way."""
  k_init, k_train = jax.random.split(key)
  return k_init, k_train, jax.random.fold_in(k_train, epoch)
