"""Training a group of variants as one compiled program.

A group's ``V`` variants share every shape and every piece of the program
(:mod:`funcnet.sweep.grid`), so their params and optimizer states are
stacked on a leading axis and one jitted epoch trains them all:

  params, opt_state   each leaf (V, ...)           sharded over devices on V
  hp                  {swept key: (V,)}            the traced hyperparameters
  order               (V, B, b) int32               each variant's batch_order
  x, y                (n, ...), or (V, n, ...)      shared, or per variant

  loop over s = 0..B-1 (one fori_loop, the same for every variant):
    xs[v] = x[order[v, s]]
    C[v], params[v], opt_state[v] = step_v(params[v], opt_state[v], xs[v], ...)
      (jax.vmap over v of train.train_step, whose optimizer is built from
       hp[v] inside the trace: one program for any values)

Every variant runs exactly the steps it would alone (``train.fit``): the
same ``batch_order``, the same keys ``fold_in(k_train, e)``, the same
update; only the summation order of a batched matmul may differ. The
divergence guard is ``fit``'s, per variant: the epoch notes each variant's
first non-finite loss, and only when some variant has one does a second
pass rerun the epoch's steps for those variants up to the step before it
(the others are masked; the step is in the program once, as in ``fit``). A variant that diverged, stopped early or ran its
epochs is *inactive*: the epoch returns its params unchanged, and the host
stops feeding it once every variant is inactive.

The host side is ``fit``'s too: one :class:`funcnet.train.Monitor` per
variant records its history, decides its evaluations and early stopping.
"""

import json
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from funcnet import config as config_lib, experiment, tasks, train
from funcnet.errors import ConfigError
from funcnet.train import host_keys, monitor as monitor_lib, precision
from funcnet.train import program_cache
from funcnet.layers.conv import SCOPE as CONV_SCOPE
from funcnet.run import rundir
from funcnet.sweep import grid as grid_lib

AXIS = "variants"


def _stack(trees):
  return jax.tree_util.tree_map(lambda *a: np.stack([np.asarray(x) for x in a]),
                                *trees)


def _select(mask, new, old):
  """Per variant: ``new`` where ``mask[v]``, else ``old`` (leaves ``(V, ...)``)."""
  def pick(a, b):
    return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)
  return jax.tree_util.tree_map(pick, new, old)


def _to_host(tree):
  """Device arrays to numpy; on several processes, gathered from all."""
  leaves = jax.tree_util.tree_leaves(tree)
  if all(getattr(a, "is_fully_addressable", True) for a in leaves):
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)


def devices_for(cfg) -> list:
  """The devices a sweep spreads its variants over: ``parallel.devices``
  (0: all of every process)."""
  n = cfg["parallel"]["devices"]
  return jax.devices() if n == 0 else jax.devices()[:n]


class Placement:
  """Where a group's arrays live: the variant axis split over ``devices``.

  ``V`` variants are padded to a multiple of the device count with copies
  of variant 0 that never train (inactive) and are dropped afterwards.
  """

  def __init__(self, devices, n_variants: int):
    self.mesh = Mesh(np.asarray(devices), (AXIS,))
    d = len(devices)
    self.n = n_variants
    self.padded = -(-n_variants // d) * d
    self.split = NamedSharding(self.mesh, P(AXIS))
    self.same = NamedSharding(self.mesh, P())

  def pad(self, a: np.ndarray) -> np.ndarray:
    """``(V, ...)`` -> ``(V_padded, ...)``, padding with copies of row 0."""
    extra = self.padded - a.shape[0]
    return a if not extra else np.concatenate([a, np.repeat(a[:1], extra, 0)])

  def put(self, tree, split: bool = True):
    """Host arrays onto the mesh: split on the variant axis (padded), or
    replicated. Every process passes the whole array and keeps its part."""
    def put(a):
      a = np.asarray(a)
      if split:
        a = self.pad(a)
      sharding = self.split if split else self.same
      return jax.make_array_from_callback(a.shape, sharding, lambda i: a[i])
    return jax.tree_util.tree_map(put, tree)


def _equations(jaxpr):
  """Every equation of ``jaxpr``, those of its sub-jaxprs (jit, scan,
  cond, custom rules) included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for v in eqn.params.values():
      for sub in v if isinstance(v, (tuple, list)) else (v,):
        sub = getattr(sub, "jaxpr", sub)
        if hasattr(sub, "eqns"):
          yield from _equations(sub)


def _is_convolution(eqn) -> bool:
  """A convolution: ``conv_general_dilated``, or a product of funcnet's
  convolution layer (its name scope, ``funcnet.layers.conv.SCOPE``,
  in the equation's name stack: autodiff's transposes keep it)."""
  if eqn.primitive.name == "conv_general_dilated":
    return True
  return (eqn.primitive.name == "dot_general"
          and CONV_SCOPE in str(eqn.source_info.name_stack))


def variant_loop(setup: experiment.Setup, params, opt_state,
                 n_devices: int = 1) -> str:
  """``"vmap"`` (the variants' steps batched into one) or ``"map"`` (one
  after another inside the compiled step, ``lax.map``).

  On a CPU, a step with a convolution loops over the variants, still
  compiled once; anything else is batched. funcnet's convolution is im2col
  (:mod:`funcnet.layers.conv`), whose ``vmap`` is a batched matrix product
  per layer: XLA:CPU runs it as a loop of small products, and 16 MNIST-1D
  CNN variants' gradients batched took 2.6x the time of ``lax.map`` over
  the same 16 (``scripts/cnn_step_layouts.py``, docs/performance.md; a
  ``vmap`` of ``lax.conv_general_dilated`` is a grouped convolution, worse
  still). GPUs and TPUs run batched products and grouped convolutions
  well: ``vmap`` there.
  """
  if jax.default_backend() != "cpu":
    return "vmap"
  b = setup.cfg["train"]["batch_size"]
  x, y = train.as_arrays(setup.ds.x_train[:b], setup.ds.y_train[:b], setup.dtype)
  vg = train.gradient_fn(setup.model, setup.loss, setup.cfg["train"]["grads"])
  jaxpr = jax.make_jaxpr(vg)(params, x, y, setup.key).jaxpr
  return "map" if any(map(_is_convolution, _equations(jaxpr))) else "vmap"


def _variant_step(setup: experiment.Setup, traced: list, norms: bool,
                  loop: str):
  """``vstep(params, opt_state, hp, xs, ys, keys) -> (params, opt_state,
  metrics)``: ``train.train_step`` of every variant (leaves ``(V, ...)``),
  each with the model and optimizer its traced hyperparameters ``hp``
  build; ``loop``: see :func:`variant_loop`."""
  cfg, ds, model = setup.cfg, setup.ds, setup.model
  loss, grads = setup.loss, setup.gradient()  # [distill]: its own loss
  model_keys = [k for k in traced if k.startswith("model.")]

  def build(hp):
    """The variant's model and optimizer from its traced hyperparameters."""
    c = grid_lib.with_values(cfg, hp)
    m = experiment.build_model(c, ds) if model_keys else model
    _, opt = experiment.build_optimizer(c, m, setup.pretrained is not None)
    return m, opt

  def one_step(params, opt_state, hp, xs, ys, key):
    m, opt = build(hp)
    vg = precision.accumulate(
        train.gradient_fn(m, loss, grads, setup.mixed.compute_dtype),
        setup.mixed.accumulate)
    state, metrics = train.train_step(
        train.TrainState(params, opt_state), train.Batch(xs, ys, key),
        vg=vg, optimizer=opt, norms=norms, refresh=m.refresh)
    return state.params, state.opt_state, metrics

  if loop == "map":
    def vstep(*args):
      return jax.lax.map(lambda a: one_step(*a), args)
    return vstep
  return jax.vmap(one_step)


def _guarded_variants(step, params, opt_state, n_batches, zero):
  """``(params, opt_state, bad, sums)`` after ``n_batches`` of ``step(s, p,
  o) -> (p, o, metrics)`` over every variant, with fit's divergence guard
  per variant.

  One copy of the step in the program (a second copy doubles the compile
  time): pass 0 runs every variant's epoch and notes its first step with a
  non-finite loss; only when some variant has one does pass 1 rerun, from
  the epoch's start, the diverged variants' steps 0..bad-2 (the params
  after them had a finite loss), every other variant masked."""
  none = jnp.full(zero[0].shape[:1], -1, jnp.int32)  # (V,): no bad step

  def run_pass(carry):
    k, p0, o0, bad0, sums0 = carry
    first = k == 0
    limit = jnp.where(first, n_batches,
                      jnp.where(bad0 >= 0, jnp.maximum(bad0 - 1, 0), 0))

    def body(s, c):
      p, o, bad, sums = c
      p2, o2, m = step(s, p, o)
      p, o = _select(s < limit, (p2, o2), (p, o))
      bad = jnp.where((bad < 0) & ~jnp.isfinite(m[0]), s, bad)
      return p, o, bad, tuple(a + b for a, b in zip(sums, m))

    p, o, bad, sums = jax.lax.fori_loop(
        0, jnp.max(limit), body, (params, opt_state, none, zero))
    redo = ~first & (bad0 >= 0)
    p, o = _select(first | redo, (p, o), (p0, o0))
    return (k + 1, p, o, jnp.where(first, bad, bad0),
            tuple(jnp.where(first, a, b) for a, b in zip(sums, sums0)))

  def another_pass(carry):
    return (carry[0] == 0) | ((carry[0] == 1) & jnp.any(carry[3] >= 0))

  _, p, o, bad, sums = jax.lax.while_loop(
      another_pass, run_pass, (jnp.int32(0), params, opt_state, none, zero))
  return p, o, bad, sums


def _group_program(setup: experiment.Setup, traced: list, norms: bool,
                   shared: bool, loop: str = "vmap"):
  """``epoch(params, opt_state, hp, key_data, e, order, x, y, active)`` and
  ``evaluate(params, x, y)`` of a group, before jit and vmap; ``shared``:
  one dataset ``(n, ...)`` for all variants, else ``(V, n, ...)``; ``loop``:
  see :func:`variant_loop`."""
  vstep = _variant_step(setup, traced, norms, loop)
  impl = jax.random.key_impl(setup.key)

  def epoch(params, opt_state, hp, key_data, e, order, x, y, active):
    n_batches = order.shape[1]
    k_drop = jax.vmap(lambda kd: jax.random.split(jax.random.fold_in(
        jax.random.wrap_key_data(kd, impl=impl), e))[1])(key_data)

    def step(s, p, o):
      rows = order[:, s]
      if shared:
        xs, ys = x[rows], y[rows]
      else:
        xs = jax.vmap(lambda a, r: a[r])(x, rows)
        ys = jax.vmap(lambda a, r: a[r])(y, rows)
      keys = jax.vmap(lambda k: jax.random.fold_in(k, s))(k_drop)
      return vstep(p, o, hp, xs, ys, keys)

    v = order.shape[0]
    one = jax.tree_util.tree_map(lambda a: a[0], params)
    zero = tuple(jnp.zeros((v,) + z.shape, z.dtype)
                 for z in train.metric_zeros(one, norms))
    p, o, bad, sums = _guarded_variants(step, params, opt_state, n_batches,
                                        zero)
    p, o = _select(active, (p, o), (params, opt_state))
    metrics = jax.vmap(train.epoch_metrics, in_axes=(0, 0, None, 0))(
        p, sums, n_batches, bad)
    return p, o, metrics

  evaluate = train.make_evaluate(setup.model, setup.loss,
                                 setup.ds.task)
  return epoch, evaluate


def init_states(setups, hp: dict) -> list:
  """Every variant's ``(params, opt_state)`` as numpy arrays, as
  ``Setup.init_state`` makes them: one compiled init per distinct
  initialiser (variants whose models differ only in their dropout rate
  initialise alike), called with each variant's key and its optimizer's
  (traced) hyperparameters. (A compiled init per variant costs a lowering
  each, 0.1-0.2 s: a third of a 16-variant MLP sweep; a vmapped init
  compiles 1.5x slower than this loop of calls runs.)"""
  subgroups = {}
  for i, s in enumerate(setups):
    spec = {k: v for k, v in s.model.spec.items() if k != "dropout"}
    subgroups.setdefault(json.dumps(rundir.json_safe(spec), sort_keys=True),
                         []).append(i)
  out = [None] * len(setups)
  for members in subgroups.values():
    s0 = setups[members[0]]
    impl = jax.random.key_impl(s0.key)
    pretrained = None if s0.pretrained is None else s0.pretrained.params

    def one(key_data, h, s0=s0, impl=impl, pretrained=pretrained):
      c = grid_lib.with_values(s0.cfg, h)
      _, opt = experiment.build_optimizer(c, s0.model, s0.pretrained is not None)
      key = jax.random.wrap_key_data(key_data, impl=impl)
      return s0.initializer(opt)(key, pretrained)

    init = jax.jit(one)
    for i in members:
      out[i] = jax.device_get(init(np.asarray(jax.random.key_data(setups[i].key)),
                                   {k: v[i] for k, v in hp.items()}))
  return out


def train_group(variants, setups, placement: Placement, *, norms: bool = True,
                cache: Optional[dict] = None, log=None,
                checkpoint=None) -> list:
  """Trains one group's variants together; returns one result dict each.

  Args:
    variants: :class:`funcnet.sweep.grid.Variant` s of one group.
    setups: their :class:`funcnet.experiment.Setup` s (same shapes).
    placement: a :class:`Placement` for ``len(variants)``.
    norms: record per-layer gradient norms (as ``fit`` does by default).
    cache: compiled programs by group signature, kept across calls (an
      Optuna search trains batch after batch of the same group).
    checkpoint: a :class:`funcnet.sweep.resume.GroupCheckpoint`: the
      group starts from its newest good step (a finished group is neither
      compiled nor trained again) and saves as it trains; None: no
      checkpoints.

  Returns:
    Per variant ``{"status", "reason", "history", "params"}`` (params as
    numpy arrays), as ``train.fit`` would give for it alone.
  """
  rep = setups[0]
  _check_same_attack(setups)
  cfgs = [s.cfg for s in setups]
  traced = grid_lib.traced_keys(cfgs)
  datas = [s.ds for s in setups]
  shared = all(d is datas[0] for d in datas)
  flats = [config_lib.flatten(c) for c in cfgs]
  hp_host = {k: np.asarray([f[k] for f in flats],
                           np.int32 if isinstance(flats[0][k], int) else rep.dtype)
             for k in traced}
  # Each variant's start, keys and hyperparameters, exactly as fit makes them.
  states = init_states(setups, hp_host)
  ds = rep.ds
  signature = (grid_lib.program_key(rep.cfg), tuple(traced), shared,
               placement.padded, norms, rep.model.n_out, ds.task,
               *(None if a is None else (np.shape(a), str(np.asarray(a).dtype))
                 for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test)))
  params, opt_state = placement.put(_stack([st[0] for st in states])), \
      placement.put(_stack([st[1] for st in states]))
  # fit's training key of each variant, drawn as fit draws it (on the host
  # for threefry keys: JAX's split and indexing compiled three programs)
  key_data = np.stack([
      host_keys.key_data(train.loop.run_keys_for(s.key)(s.key, 0)[1])
      for s in setups])
  steps = len(datas[0].y_train) // rep.cfg["train"]["batch_size"]
  # every variant's learning rate at every epoch: one program for the group
  rates = (monitor_lib.rate_tables([s.schedule for s in setups], steps,
                                   [s.cfg["train"]["epochs"] for s in setups])
           if all(s.schedule is not None for s in setups)
           else [None] * len(setups))
  monitors = [train.Monitor(
      train.layer_groups(states[0][0]), steps, s.cfg["train"]["epochs"],
      s.evaluation, norms, s.schedule,
      getattr(datas[0], "x_test", None) is not None, rates=r)
      for s, r in zip(setups, rates)]
  start_epoch, wall0 = 0, 0.0
  restored = checkpoint and checkpoint.restore(params, opt_state, key_data,
                                               monitors)
  if restored:
    start_epoch, params, opt_state, wall0 = restored
    if log:
      log(f"  resumed from epoch {start_epoch}"
          + (" (finished)" if not _active(monitors, setups, start_epoch).any()
             else ""))
  t0 = time.perf_counter()
  try:
    if _active(monitors, setups, start_epoch).any():
      cache = {} if cache is None else cache
      if signature not in cache:
        cache[signature] = _compile_group(rep, traced, norms, shared,
                                          placement, states[0], log)
      arrays = _group_data(datas, shared, placement, rep.dtype)
      identity = _group_identity(rep, traced, shared, norms)
      programs = [program_cache.at_first_call(fn, identity, name)
                  for fn, name in zip(cache[signature],
                                      ("sweep_epoch", "sweep_evaluate"))]
      t0 = time.perf_counter()  # the group's wall time: its epochs, as before
      params = _train_epochs(
          programs, setups, placement, monitors,
          (params, opt_state, placement.put(hp_host), key_data), arrays, log,
          start_epoch=start_epoch, wall0=wall0, checkpoint=checkpoint)
    else:
      params = _to_host(params)
  finally:
    if checkpoint is not None:
      checkpoint.close()  # every save on disk, however the group ended
  wall = wall0 + time.perf_counter() - t0
  return [{"status": mon.status, "reason": mon.reason, "history": mon.history,
           "params": jax.tree_util.tree_map(lambda a: a[i], params),
           "group_wall_s": wall}
          for i, mon in enumerate(monitors)]


def _check_same_attack(setups) -> None:
  """The group's step makes its first variant's adversarial examples
  (:func:`_variant_step`): refused, in one line, when a variant's data
  gives its attack other model units (e.g. another ``data.seed``, whose
  split has another std)."""
  first = setups[0].adversarial
  for s in setups[1:]:
    same = (s.adversarial is None) == (first is None) and (first is None or all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(first, s.adversarial)))
    if not same:
      raise ConfigError(
          "a sweep's variants whose data scale adversarial.eps differently "
          "(eps / std of each training split) cannot share a compiled step; "
          "expected the same data for every variant, or --sequential")


def _compile_group(rep, traced, norms, shared, placement, state, log):
  """``(epoch_fn, eval_fn)``: the group's epoch and evaluation, jitted over
  the placement (the epoch donating params and optimizer state)."""
  loop = variant_loop(rep, *state, len(placement.mesh.devices.flat))
  if log:
    log(f"variants {'batched (vmap)' if loop == 'vmap' else 'looped (lax.map)'}"
        " in one compiled step")
  epoch, evaluate = _group_program(rep, traced, norms, shared, loop)
  if loop == "vmap":
    data_axis = None if shared else 0
    evaluate_all = jax.vmap(evaluate, in_axes=(0, data_axis, data_axis))
  elif shared:
    def evaluate_all(params, x, y):
      return jax.lax.map(lambda p: evaluate(p, x, y), params)
  else:
    def evaluate_all(params, x, y):
      return jax.lax.map(lambda a: evaluate(*a), (params, x, y))
  return (jax.jit(epoch, donate_argnums=(0, 1), out_shardings=placement.split),
          jax.jit(evaluate_all, out_shardings=placement.split))


def _group_identity(rep, traced, shared: bool, norms: bool) -> Optional[str]:
  """What decides a group's programs besides their arguments' shapes, for
  :mod:`funcnet.train.program_cache` (a warm sweep loads them without
  tracing: a 16-variant MLP sweep's tracing and lowering went 0.52 -> 0.13
  s of its 7 s, docs/performance.md): the first variant's
  identity with the swept values left out (they are the programs'
  arguments), and how the group is built; None where ``fit`` would not
  cache either (a mesh plan, streamed data)."""
  unswept = rep._identity(grid_lib.with_values(rep.cfg,
                                                {k: None for k in traced}))
  return unswept and program_cache.digest(("sweep group", unswept,
                                           list(traced), shared, norms))


def _group_data(datas, shared: bool, placement: Placement, dtype):
  """``(x, y, x_test, y_test)`` on the mesh: one copy, replicated, when the
  variants share their data, else stacked and split on the variant axis
  (``x_test``, ``y_test`` None without a held-out split)."""
  def put(pairs):
    x_np = [np.asarray(p[0]) for p in pairs]
    y_np = [np.asarray(p[1]) for p in pairs]
    if shared:
      return placement.put((x_np[0], y_np[0]), split=False)
    return placement.put((np.stack(x_np), np.stack(y_np)))

  some = datas[:1 if shared else None]
  x, y = put([train.as_arrays(d.x_train, d.y_train, dtype) for d in some])
  xt = yt = None
  if getattr(datas[0], "x_test", None) is not None:
    xt, yt = put([train.as_arrays(d.x_test, d.y_test, dtype) for d in some])
  return x, y, xt, yt


def _active(monitors, setups, e: int) -> np.ndarray:
  """``(V,)`` bool: the variants that train epoch ``e`` (not stopped, not
  diverged, ``e`` below their ``train.epochs``)."""
  return np.array([m.status == "done" and e < s.cfg["train"]["epochs"]
                   for m, s in zip(monitors, setups)])


def _train_epochs(programs, setups, placement, monitors, start, arrays, log,
                  *, start_epoch=0, wall0=0.0, checkpoint=None):
  """The group's epochs from ``start_epoch`` until every variant is
  inactive; returns the params on the host. ``start``: ``(params,
  opt_state, hp, key_data)``; ``arrays``: :func:`_group_data`'s;
  ``wall0``: seconds trained before (a resumed group's records count on
  from it); ``checkpoint``: saves after each epoch as it says."""
  epoch_fn, eval_fn = programs
  params, opt_state, hp, key_data = start
  x_dev, y_dev, xt, yt = arrays
  n, b = len(setups[0].ds.y_train), setups[0].cfg["train"]["batch_size"]
  steps = n // b
  epochs = [s.cfg["train"]["epochs"] for s in setups]
  key_dev = placement.put(key_data)

  def orders(e):
    rows = [train.batch_order(kd, e, n, b).reshape(steps, b) for kd in key_data]
    return placement.put(np.stack(rows))

  t0 = time.perf_counter() - wall0
  upcoming = orders(start_epoch)
  for e in range(start_epoch, max(epochs)):
    active = _active(monitors, setups, e)
    if not active.any():
      break
    params, opt_state, m = epoch_fn(
        params, opt_state, hp, key_dev, np.int32(e), upcoming, x_dev, y_dev,
        placement.put(active))
    if e + 1 < max(epochs):
      upcoming = orders(e + 1)  # on the host while the device runs epoch e
    m = _to_host(m)
    want = [bool(active[i]) and monitors[i].wants_eval(e, m.bad_step[i])
            for i in range(len(setups))]
    ev = _to_host(eval_fn(params, xt, yt)) if any(want) else None
    elapsed = time.perf_counter() - t0
    for i in map(int, np.flatnonzero(active)):
      mi = jax.tree_util.tree_map(lambda a: a[i], m)
      metrics = ({k: float(a[i]) for k, a in ev.items()} if want[i] else None)
      monitors[i].after(e, mi, metrics, elapsed)
    if checkpoint is not None:
      checkpoint.after_epoch(e + 1, params, opt_state, key_data, monitors,
                             elapsed, last=not _active(monitors, setups,
                                                       e + 1).any())
    if log and ((e + 1) % max(1, max(epochs) // 5) == 0 or e == 0):
      log(_progress(e, max(epochs), monitors, active, elapsed,
                    setups[0].ds.task))
  return _to_host(params)


def _progress(e: int, epochs: int, monitors, active, elapsed: float,
              task: str) -> str:
  """One line after epoch ``e``: variants still training, the best of the
  last evaluations by the task's headline, the time so far."""
  last = [m.history[-1] for m in monitors if m.history]
  metric, higher = tasks.headline(task)
  best = ""
  values = [h[metric] for h in last if metric in h and h[metric] == h[metric]]
  if values:
    pick = max if higher else min
    best = f", best {metric.replace('test_', 'test ')} {pick(values):.4g}"
  return (f"  epoch {e + 1}/{epochs}: {int(active.sum())} of {len(monitors)} "
          f"training{best}, {elapsed:.0f} s")


def train_one(setup: experiment.Setup) -> dict:
  """The same variant trained alone by ``train.fit`` (``--sequential``)."""
  t0 = time.perf_counter()
  # from the one cached init program, as `funcnet train` starts (a bare
  # fit traces and lowers model.init and optimizer.init at every call);
  # the same bits
  res = setup.fit(train.TrainState(*setup.init_state()))
  return {"status": res.status, "reason": res.reason, "history": res.history,
          "params": jax.device_get(res.state.params),
          "group_wall_s": time.perf_counter() - t0}
