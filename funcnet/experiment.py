"""From a resolved config to a trained run folder, and back.

This is the library behind ``funcnet train``, ``gradcheck`` and ``eval``;
the command line only parses flags (see :mod:`funcnet.cli`), and the run
folder is :mod:`funcnet.run.rundir`'s.

  Setup(cfg)                          data, model, schedule, optimizer, checked
  train_and_evaluate(cfg, workdir)    trains into a run folder; the summary
  evaluate(run)                       a run's latest checkpoint on its test split
  gradcheck(cfg, batch)               manual vs autodiff vs finite differences

Resuming compares the requested config with ``config.json``
(:mod:`funcnet.run.resume`), reads the newest good checkpoint (params, optimizer
state, epoch, early-stopping counters), drops the metrics lines written
after it, and continues; since epoch ``e`` draws its order and keys from
``(key, e)`` and evaluates on the absolute epoch, the resumed run ends with
the same params and history as one never interrupted.
"""

import contextlib
import functools
import hashlib
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import backprop, config as config_lib, data, finetune, losses
from funcnet import parallel, precision, tasks, timings, train
from funcnet.run import checkpoints, preemption, preflight
from funcnet.run import resume as resume_lib, rundir
from funcnet.errors import CheckpointError, ConfigError, DivergenceError
from funcnet.errors import Preempted
from funcnet.data import streamed
from funcnet.models import registry
from funcnet.run.progress import Progress

def build_dataset(cfg, stats=None) -> data.Dataset:
  """The dataset the config names: its classes (``data.classes``), few labels
  (``data.train_per_class``), then standardised when asked (and the task
  standardises: not ratings, whose inputs are indices),
  with the training split's statistics or the given ``(mean, std)``."""
  d = cfg["data"]
  if streamed.is_shards(d["name"]):  # on disk, read by rows as it trains
    for key in ("classes", "train_per_class"):
      if d[key]:
        raise ConfigError(
            f"config key 'data.{key}' selects examples, which a dataset "
            f"streamed from shards ({d['name']!r}) cannot; expected it "
            "applied before funcnet data convert")
    return streamed.load(d["name"], d["standardize"], stats)
  kwargs = {}
  if d["name"] not in data.DATASETS:
    kwargs = {"label": d["label"], "task": d["task"]}
  ds = data.load(d["name"], seed=d["seed"], **kwargs)
  if d["classes"]:
    ds = data.select_classes(ds, d["classes"])
  if d["train_per_class"]:
    ds = data.few_per_class(ds, d["train_per_class"], d["seed"])
  if d["standardize"] and tasks.get(ds.task).standardize:
    ds = data.standardize(ds, stats)
  return ds


def n_outputs(cfg, ds) -> int:
  """Output width, the task's (:attr:`funcnet.tasks.Task.n_outputs`): e.g.
  one unit for two classes under bce, else the data's width."""
  return data.n_outputs(ds, cfg["train"]["loss"])


def build_model(cfg, ds):
  """The model ``cfg["model"]`` describes, sized to the dataset."""
  kind = cfg["model"]["kind"]
  return registry.from_config(kind, cfg["model"][kind],
                              data.spec(ds, n_outputs(cfg, ds)))


def check(cfg, ds, model) -> None:
  """Cross-key checks that need the data, made before anything is written
  or compiled: loss vs task, batch size, gradient source, dtype. (Whether
  the run fits in memory is :class:`Setup`'s last check, once the optimizer
  and the device plan are built.)"""
  t = cfg["train"]
  losses.get(t["loss"])  # an unknown name lists the known ones
  allowed = tasks.get(ds.task).losses
  if t["loss"] not in allowed:
    raise ConfigError(f"config key 'train.loss' = {t['loss']!r} does not suit "
                      f"the {ds.task} data {ds.name!r}; expected one of "
                      f"{', '.join(allowed)}")
  train.check_batch(t["batch_size"], len(ds.y_train), t["accumulate"])
  if t["grads"] == "manual":
    backprop.value_and_grad(model, t["loss"])  # raises for a kind without one
  if t["dtype"] == "float64" and not jax.config.jax_enable_x64:
    raise ConfigError("config key 'train.dtype' = 'float64' needs 64-bit JAX; "
                      "expected JAX_ENABLE_X64=1 in the environment")


def build_optimizer(cfg, model, fine_tuning: bool = False):
  """``(schedule, optimizer)`` from ``[schedule]`` and ``[optimizer]``; when
  ``fine_tuning``, wrapped for ``[finetune]`` (a frozen or slower body).

  Also called with traced hyperparameters in ``cfg`` (:mod:`funcnet.sweep`
  builds each variant's optimizer inside its compiled step)."""
  schedule = config_lib.schedule_from_config(cfg)
  optimizer = config_lib.optimizer_from_config(cfg, schedule)
  if fine_tuning:
    ft = cfg["finetune"]
    optimizer = finetune.optimizer(optimizer, model, ft["freeze_body"],
                                   ft["body_lr_scale"])
  return schedule, optimizer


class Setup:
  """Everything built from a config: data, model, schedule, optimizer.

  ``ds``: the dataset, when the caller already built it from this config
  (:mod:`funcnet.sweep` builds each distinct one once for many variants).
  """

  def __init__(self, cfg, ds=None):
    self.cfg = cfg
    ft, t = cfg["finetune"], cfg["train"]
    # Fine-tuning: the trained run first, since its input statistics scale
    # this data (see funcnet.finetune).
    self.pretrained = (finetune.load_pretrained(ft["from_run"])
                       if ft["from_run"] else None)
    self.ds = ds if ds is not None else build_dataset(
        cfg, self.pretrained and self.pretrained.stats)
    self.model = build_model(cfg, self.ds)
    check(cfg, self.ds, self.model)
    self.schedule, self.optimizer = build_optimizer(
        cfg, self.model, self.pretrained is not None)
    self.loss = t["loss"]
    self.dtype = jnp.dtype(t["dtype"])
    cd = t["compute_dtype"]
    # None keeps the plain step (bit-identical to a run without the key).
    self.mixed = precision.Mixed(
        None if cd in ("same", self.dtype.name) else jnp.dtype(cd),
        t["accumulate"])
    self.evaluation = train.Evaluation(t["eval_every"], t["patience"] or None)
    # None on one device: the single-device path, unchanged.
    self.plan = parallel.plan_from_config(cfg)
    if self.plan is not None:
      self.plan.check_batch(t["batch_size"], t["accumulate"])
    # Last: the run must fit in memory (shapes only, nothing allocated; a
    # model too large for the machine is refused before its init runs).
    preflight.check_memory(cfg, self.model, self.ds, self.optimizer, self.plan)

  @functools.cached_property
  def key(self):
    """``jax.random.key(cfg["seed"])``, the run's one key; made on first use,
    after every check (it is a compiled call, if a small one)."""
    return jax.random.key(self.cfg["seed"])

  @property
  def stats(self):
    """``(mean, std)`` the inputs were standardised with, or None."""
    info = self.ds.info
    return (info["mean"], info["std"]) if "mean" in info else None

  def init_state(self, place: bool = True):
    """Params and optimizer state exactly as ``train.fit`` would make them.

    One compiled call (key split, ``model.init``, the fine-tuned head,
    ``optimizer.init``), shared by every Setup whose call is the same
    program (:func:`_compiled`). Op by op, every initialiser and zero state
    compiled a program per array shape: ten of a default run's 26
    compilations, 3.5 s (issue 15). The params are bit for bit those of
    ``model.init`` run op by op (see :mod:`funcnet.initializers`).

    Laid out on the plan's mesh when there is one and ``place`` (so a
    checkpoint restores straight into that layout).
    """
    init = self.initializer()
    args = (self.key,
            None if self.pretrained is None else self.pretrained.params)
    state = _compiled(init, *args)(*args)
    return state if self.plan is None or not place else self.plan.place(state)

  def initializer(self, optimizer=None):
    """``init(key, pretrained) -> (params, opt_state)``, the pure function
    :meth:`init_state` compiles: ``model.init`` from the first half of
    ``split(key)`` (as ``train.fit`` draws it), the fine-tuned run's body
    (``pretrained``: its params, or None), ``optimizer.init``. ``optimizer``
    replaces this Setup's (a sweep passes one built from traced values)."""
    model, dtype = self.model, self.dtype
    optimizer = optimizer or self.optimizer

    def init(key, pretrained):
      k_init, _ = jax.random.split(key)
      params = model.init(k_init, dtype)
      if pretrained is not None:  # the run's body, this init's new head
        params = finetune.replace_head(model, pretrained, params)
      return params, optimizer.init(params)
    return init

  def fit(self, start=None, grads=None, **kwargs):
    """``train.fit`` as the config says; ``start`` a ``train.Start`` to resume."""
    t = self.cfg["train"]
    if self.pretrained is not None and start is None:
      start = train.Start(*self.init_state())
    return train.fit(
        self.model, self.loss, self.optimizer, self.ds, epochs=t["epochs"],
        batch_size=t["batch_size"], key=self.key, grads=grads or t["grads"],
        dtype=self.dtype, start=start, evaluation=self.evaluation,
        mixed=self.mixed, plan=self.plan, lr_schedule=self.schedule,
        chunk_steps=t["chunk_steps"], **kwargs)

  def device(self) -> str:
    """``"cpu"``, or e.g. ``"8 x TPU v4 (mesh data=8 fsdp=1, 2 processes)"``."""
    return (self.plan.describe() if self.plan is not None
            else jax.devices()[0].device_kind)


_PROGRAMS: dict = {}


def _compiled(fn, *args):
  """``jax.jit(fn)`` compiled for ``args``, one executable per distinct program.

  jit caches by function, and each Setup makes its own ``init``: a sweep's
  variants (or a test's many Setups) would each compile the same program.
  Lowering is milliseconds, compiling a tenth of a second or more, so the
  executables are kept by a fingerprint of the lowered program's text (MLIR
  prints every constant in full). JAX's persistent cache, when on, keys its
  files the same way across processes.
  """
  lowered = jax.jit(fn).lower(*args)
  # The text says what is computed; the devices, where (the arguments'
  # placement, or the default device a context may have set).
  devices = [str(d) for a in jax.tree_util.tree_leaves(args)
             if isinstance(a, jax.Array) for d in a.devices()]
  key = hashlib.sha256(repr((lowered.as_text(), devices,
                             str(jax.config.jax_default_device))).encode()
                       ).hexdigest()
  if key not in _PROGRAMS:
    if len(_PROGRAMS) >= 64:  # a long-lived process: forget the oldest
      del _PROGRAMS[next(iter(_PROGRAMS))]
    _PROGRAMS[key] = lowered.compile()
  return _PROGRAMS[key]


def default_workdir(cfg) -> str:
  return os.path.join("runs", f"{cfg['name']}-{time.strftime('%Y%m%d-%H%M%S')}")


def train_and_evaluate(cfg, workdir, *, resume=False, progress="auto",
                       log=print, is_main=None, plotter=None):
  """Trains the run ``cfg`` describes into ``workdir``; returns the summary.

  With several processes every process calls this with the same arguments:
  all of them train and write checkpoints (collectively, each its own
  shards); only the main process (``is_main``, default: process 0) writes
  the run folder's other files (:mod:`funcnet.run.rundir`), and logs.

  ``resume``: continue ``workdir`` from its newest good checkpoint. ``cfg``
  is first compared with the run's ``config.json`` (:mod:`funcnet.run.resume`):
  only safe keys may differ. The checkpoint holds everything that decides
  what happens next (params, optimizer state, epoch, early-stopping
  counters; the data order and dropout keys follow from ``(seed, epoch)``),
  so the resumed run ends as the uninterrupted one. A damaged newest
  checkpoint is moved aside and the one before it used
  (:mod:`funcnet.run.checkpoints`); both are recorded in ``metrics.jsonl``.

  ``plotter``: a :class:`funcnet.run.plot_process.Plotter` the command started
  before importing JAX, which then draws the plots (None: drawn here). It
  is waited for when it draws; the caller closes it in any case.

  One writer: the main process holds ``workdir``'s lock (:func:`rundir.lock`)
  from before its first write to the end. SIGTERM and SIGINT stop the
  training after the current epoch, which is saved (:mod:`funcnet.run.preemption`).

  Raises:
    ConfigError: a config that does not fit its data; a workdir that already
      holds another run (pass ``resume``), or that another process is
      writing; a resume whose config differs in a key it cannot change; a
      folder that cannot be written. Nothing in ``workdir`` is changed.
    CheckpointError: ``resume`` without a (readable) checkpoint; nothing in
      ``workdir`` is changed.
    DivergenceError: the loss became NaN/inf (exit status 3); the run
      folder keeps its last good checkpoint, metrics, summary and plots.
    Preempted: a SIGTERM/SIGINT stopped the run after an epoch; its
      checkpoint and the summary (``status = "preempted"``) are written.
  """
  if is_main is None:
    is_main = parallel.is_main()
  if not is_main:
    log, progress = (lambda *a, **k: None), "never"
  workdir = os.fspath(workdir)
  # Every check first, then the compiled calls: a mistake in the config,
  # the data or the folder is one line before anything is compiled or
  # written. (orbax is imported only when the checkpoint folder exists.)
  if is_main:
    rundir.check_unlocked(workdir)
  changed = {}
  if resume:
    saved = rundir.read_config(workdir, what="--resume: run folder")
    changed = resume_lib.check(workdir, saved, cfg)
  cfg = resume_lib.resolve_checkpoint_dir(cfg)
  ckpt_dir = rundir.checkpoint_dir(workdir, cfg)
  has_ckpt = checkpoints.latest_epoch(ckpt_dir) is not None
  if resume and not has_ckpt:
    raise CheckpointError(
        f"--resume: run folder {workdir!r} has no checkpoint in {ckpt_dir!r}; "
        "nothing was changed; expected a run that has saved one (every "
        "run.checkpoint_every epochs and at the end), or no --resume")
  if has_ckpt and not resume:
    raise ConfigError(f"run folder {workdir!r} already holds checkpoints; "
                      "expected --resume to continue it or a new --out folder")
  with timings.phase("data"):
    setup = Setup(cfg)
  with contextlib.ExitStack() as stack:
    if is_main:
      stack.enter_context(rundir.lock(workdir))
    rundir.check_writable(ckpt_dir, "config key 'run.checkpoint_dir' ="
                        if cfg["run"]["checkpoint_dir"] else "run folder")
    watch = stack.enter_context(preemption.Watch())
    return _train(setup, workdir, ckpt_dir, has_ckpt, changed, watch,
                  progress, log, is_main, plotter)


def _crossed(step: int, saved: int, every: int) -> bool:
  """Whether a multiple of ``every`` lies in ``(saved, step]``: a chunk
  ending at ``step`` passed a save point since the last save at ``saved``."""
  return step // every > saved // every


def _import_in_background(modules) -> None:
  """Imports ``modules`` on a daemon thread while the main one compiles.

  orbax (0.2 s with tensorstore) is needed only at the first save; XLA's
  compiler releases the GIL, so on two cores its import overlaps the first
  epoch's compilation instead of adding to a short run's time (issue 15).
  Measured, warm one-epoch runs: 2.19-2.29 s with orbax imported so,
  2.37-2.88 s with nothing, 2.34-2.66 s with matplotlib too (its import
  then competes with the main thread for the GIL and the cores until the
  end of a short run). Python's import locks make a
  main-thread import of the same module wait for this one, never run it
  twice; an import that fails here fails again, with its message, where it
  is used."""
  import importlib
  import threading

  def run():
    for name in modules:
      try:
        importlib.import_module(name)
      except Exception:  # pylint: disable=broad-except
        pass
  threading.Thread(target=run, name="funcnet-imports", daemon=True).start()


def _train(setup, workdir, ckpt_dir, has_ckpt, changed, watch, progress, log,
           is_main, plotter=None):
  """:func:`train_and_evaluate` once every check has passed and the run
  folder is locked."""
  cfg, ds, model = setup.cfg, setup.ds, setup.model
  t = cfg["train"]
  steps_per_epoch = len(ds.y_train) // t["batch_size"]
  _import_in_background(["orbax.checkpoint"])

  with timings.phase("init"):
    params, opt_state = setup.init_state()
  start, history, early_stopping, position, events = 0, [], None, None, []
  # A run streamed from shards numbers its checkpoints by optimizer step
  # (it also saves inside epochs); others by epoch.
  stream = streamed.is_streamed(ds)
  ckpt_id = ((lambda e, s=0: e * steps_per_epoch + s) if stream
             else (lambda e, s=0: e))
  if has_ckpt:
    with timings.phase("restore"):
      restored = checkpoints.restore_newest_good(
          ckpt_dir, params, opt_state, move_damaged=True,
          on_damaged=lambda line: is_main and print(
              f"funcnet: warning: {line}", file=sys.stderr))
    start, params, opt_state = restored.epoch, restored.params, restored.opt_state
    early_stopping, position = restored.early_stopping, restored.position
    events += [{"event": "damaged_checkpoint", "resumed_from": start,
                **d._asdict()} for d in restored.damaged]
    if is_main:
      history = rundir.read_metrics(workdir, start, events=True)
    if changed:
      events.append({"event": "resume", "epoch": start, "changed": changed})
    log(f"resuming {workdir} from epoch {start}"
        + (f", step {position['step']} of epoch {start + 1}" if position
           else "")
        + (f" (changed: {', '.join(changed)})" if changed else ""))

  board = None
  if is_main:
    rundir.write_config(workdir, cfg)
    rundir.write_model(workdir, model)
    rundir.write_stats(workdir, setup.stats)
    rundir.reset_metrics(workdir, history + events)
    if cfg["run"]["tensorboard"]:
      from funcnet.run import tensorboard  # tensorboardX only when asked for
      board = tensorboard.open_writer(
          workdir, purge_step=start * steps_per_epoch + 1 if start else None)
  history = [h for h in history if "event" not in h]

  log(f"data   {data.summary(ds)}")
  log(f"model  {registry.describe(model.spec)}")
  compute = setup.mixed.compute_dtype
  log(f"train  {t['epochs']} epochs x {steps_per_epoch} steps, "
      f"{cfg['optimizer']['name']} ({cfg['optimizer']['impl']}), "
      f"grads {t['grads']}, device {setup.device()}"
      + (f", compute {compute.name}" if compute is not None else "")
      + (f", {t['accumulate']} micro-batches" if t["accumulate"] > 1 else ""))
  bar = Progress(t["epochs"], start, mode=progress, task=ds.task)
  saver = checkpoints.Saver(ckpt_dir, cfg["run"]["keep_checkpoints"])
  every = cfg["run"]["checkpoint_every"]
  metrics = rundir.MetricsWriter(workdir) if is_main else None

  def on_epoch(record, params, opt_state):
    if metrics:
      metrics.write(record)
    if board:
      board.write(record)
    bar.update(record)
    e = record["epoch"]
    if e % every == 0 and e < t["epochs"] and math.isfinite(record["train_loss"]):
      with timings.phase("save"):  # returns while orbax writes
        saver.save(e, params, opt_state, record.get("early_stopping"),
                   step=ckpt_id(e))
      last_saved[0] = ckpt_id(e)
    last_record[0] = record
    return watch.requested() is not None  # stop after this epoch: saved below

  every_steps = cfg["run"]["checkpoint_every_steps"]
  last_record = [history[-1] if history else None]

  def on_chunk(e, step, params, opt_state, where):
    """Inside an epoch of streamed data: save every run.checkpoint_every_steps
    steps (at a chunk's end), and stop there on SIGTERM/SIGINT."""
    stop = watch.requested() is not None
    g = ckpt_id(e, step)
    if stop or (every_steps and _crossed(g, last_saved[0], every_steps)):
      es = (last_record[0] or {}).get("early_stopping", early_stopping)
      with timings.phase("save"):
        saver.save(e, params, opt_state, es, step=g, position=where)
      last_saved[0] = g
    return stop

  last_saved = [ckpt_id(start, (position or {}).get("step", 0))]

  drawing = False  # by the plotter process
  try:
    t0 = time.perf_counter()
    try:
      with timings.phase("train"):
        result = setup.fit(start=train.Start(params, opt_state, start,
                                             early_stopping, position),
                           callback=on_epoch,
                           chunk_callback=on_chunk if stream else None)
    finally:
      bar.close()
      for f in (metrics, board):
        if f:
          f.close()
    elapsed = time.perf_counter() - t0
    signal_name = watch.requested() if result.status == "stopped" else None
    history = history + result.history
    last_epoch = history[-1]["epoch"] if history else start
    if not result.diverged and result.position is None:  # (else saved)
      with timings.phase("save"):
        saver.save(last_epoch, result.params, result.opt_state,
                   history[-1].get("early_stopping") if history else None,
                   step=ckpt_id(last_epoch))

    # Steps per second after the first epoch of this process, which pays
    # for compilation (the whole run when there is only one epoch).
    timed = result.history[1:] if len(result.history) > 1 else result.history
    t_timed = (timed[-1]["time"] - result.history[0]["time"]
               if len(result.history) > 1 else elapsed)
    final = history[-1] if history else {}
    status = ("diverged" if result.diverged
              else "preempted" if signal_name else "finished")
    summary = {
        "name": cfg["name"], "status": status,
        "fit_status": result.status, "stopped": result.reason,
        "epochs": last_epoch, "total_steps": last_epoch * steps_per_epoch,
        "steps_per_s": (len(timed) * steps_per_epoch / t_timed
                        if t_timed > 0 and timed else None),
        "wall_time_s": elapsed, "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(), "task": ds.task,
        "devices_used": setup.plan.n_devices if setup.plan is not None else 1,
        "process_count": jax.process_count(), "device": setup.device(),
        "final": {k: v for k, v in final.items() if k != "grad_norms"},
        "best": tasks.best(history, ds.task),
    }
    where = (f"step {result.position['step']} of epoch {last_epoch + 1}"
             if result.position else f"epoch {last_epoch}")
    if signal_name:
      summary["stopped"] = (f"{signal_name} after {where} of {t['epochs']}; "
                            "resume with --resume")
    for k in tasks.evaluated_keys(ds.task):
      last = [h[k] for h in history if k in h]
      if last:
        summary[k] = last[-1]
    if t["compare_grads"] and status == "finished":
      summary["compare_grads"] = compare_training(setup, result.params, log)
    # The plots are drawn while orbax writes the last checkpoint (and the
    # summary is written, when another process draws them).
    if is_main and cfg["run"]["plots"] and history:
      with timings.phase("plots"):
        drawing = bool(plotter) and plotter.draw(history, workdir, cfg["name"])
        if not drawing:
          from funcnet.run import plots  # matplotlib only when plotting
          plots.write(history, workdir, title=cfg["name"])
  finally:
    # Every checkpoint complete on disk before the summary says the run is
    # done, and before an error (or Ctrl-C) leaves the process.
    with timings.phase("save"):
      saver.close()
  if is_main:
    rundir.write_summary(workdir, summary)
  if drawing:
    with timings.phase("plots"):
      plotter.wait()
  if result.diverged:
    last = checkpoints.latest_epoch(ckpt_dir)
    where = (f"the last good checkpoint (epoch {last}) is in {ckpt_dir}"
             if last is not None else "no checkpoint had been written yet")
    raise DivergenceError(f"{result.reason}; {where}; try a smaller "
                          "optimizer.learning_rate or optimizer.clip_norm")
  if signal_name:
    raise Preempted(
        f"{signal_name}: stopped after {where} of {t['epochs']}, "
        f"checkpoint saved in {ckpt_dir}; continue with: funcnet train --out "
        f"{workdir} --resume", preemption.EXIT_CODES[signal_name])
  return summary


def evaluate(run) -> dict:
  """The latest checkpoint of the run folder ``run`` on its test split.

  The model comes from the run's ``model.json`` and its params from its
  checkpoints (wherever ``run.checkpoint_dir`` put them); the test split is
  the config's, standardised with the run's saved training statistics.

  Returns:
    ``{"run", "epoch", "test_<metric>": ...}`` (the metrics of
    :func:`funcnet.train.make_evaluate`).
  """
  trained = rundir.load_trained(run, "--run")
  ds = build_dataset(trained.cfg, trained.stats)
  if ds.x_test is None:
    raise ConfigError(f"--run {run!r}: its data {ds.name!r} has no test split; "
                      "expected a dataset with x_test")
  dtype = jnp.dtype(trained.cfg["train"]["dtype"])
  x, y = train.as_arrays(ds.x_test, ds.y_test, dtype)
  metrics = train.make_evaluate(trained.model, trained.cfg["train"]["loss"],
                                ds.task)(trained.params, x, y)
  return {"run": run, "epoch": trained.epoch,
          **{f"test_{k}": float(v) for k, v in jax.device_get(metrics).items()}}


def gradcheck(cfg, batch=None):
  """The gradient check of ``cfg``'s model at its initial params, in float64.

  Args:
    cfg: a resolved config.
    batch: examples to check on, drawn from the training split with
      ``cfg["seed"]``; None: 8, or all of them when there are fewer.

  Returns:
    ``(report, heading)``: a :class:`funcnet.gradcheck.Report` and one line
    saying what was checked.
  """
  from funcnet import gradcheck as gradcheck_lib
  setup = Setup(cfg)
  ds = setup.ds
  n = len(ds.y_train)
  batch = min(8, n) if batch is None else batch
  if not 1 <= batch <= n:
    raise ConfigError(f"--batch {batch}: expected 1..{n}, the training "
                      f"examples of {ds.name!r}")
  rng = np.random.default_rng(cfg["seed"])
  idx = np.sort(rng.choice(n, batch, replace=False))
  params, _ = setup.init_state()
  x, y = (ds.x_train.read(idx) if streamed.is_streamed(ds)
          else (ds.x_train[idx], ds.y_train[idx]))
  report = gradcheck_lib.compare(setup.model, setup.loss, params, x, y,
                                 key=jax.random.key(cfg["seed"]))
  heading = (f"gradient check of {cfg['name']}: {setup.model.kind}, loss "
             f"{setup.loss}, {batch} examples of {ds.name}, float64")
  return report, heading


def compare_training(setup: Setup, params, log=print) -> dict:
  """Trains again with the other gradient source, same seed; compares params."""
  other = "autodiff" if setup.cfg["train"]["grads"] == "manual" else "manual"
  res = setup.fit(grads=other)
  a = jax.tree_util.tree_leaves(params)
  b = jax.tree_util.tree_leaves(res.params)
  diff = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(a, b))
  scale = max(float(jnp.max(jnp.abs(x))) for x in a)
  out = {"other_grads": other, "max_abs_param_diff": diff,
         "max_rel_param_diff": diff / max(scale, 1e-30),
         "other_final": {k: v for k, v in res.history[-1].items()
                         if k.startswith("test_") or k == "train_loss"}}
  log(f"compare  {setup.cfg['train']['grads']} vs {other}: max |Δparam| = "
      f"{diff:.3e} (relative {out['max_rel_param_diff']:.3e})")
  return out
