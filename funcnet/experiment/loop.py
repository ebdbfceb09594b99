"""Training a run into its folder: ``train_and_evaluate`` and its phases.

  train_and_evaluate(cfg, workdir)    checks, then a :class:`Run`:
    Run.restore        the newest good checkpoint (when resuming)
    Run.first_writes   config.json, model.json, stats, metrics.jsonl
    Run.train          train.fit, with a callback per epoch (and chunk)
                       that writes the metrics and saves checkpoints
    Run.finish         the last checkpoint, the summary, the plots

Resuming compares the requested config with ``config.json``
(:mod:`funcnet.run.resume`), reads the newest good checkpoint (a
``TrainState``: params, optimizer state, epoch, early-stopping
counters, stream position), drops the metrics lines written after it, and
continues; since epoch ``e`` draws its order and keys from ``(key, e)`` and
evaluates on the absolute epoch, the resumed run ends with the same params
and history as one never interrupted.
"""

import contextlib
import os
import sys
import time
from typing import Optional

from funcnet import data, parallel, timings
from funcnet.data import streamed
from funcnet.errors import CheckpointError, ConfigError, DivergenceError
from funcnet.errors import Preempted
from funcnet.experiment import language, summary as summary_lib
from funcnet.experiment.setup import Setup
from funcnet.experiment.verify import compare_training
from funcnet.models import registry
from funcnet.run import checkpoints, preemption
from funcnet.run import resume as resume_lib, rundir
from funcnet.run.progress import Progress
from funcnet.train import Callbacks, TrainState, compute


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
  training after the current epoch (streamed from shards: chunk), which is
  saved; the first signal says so at once (:mod:`funcnet.run.preemption`).

  Raises:
    ConfigError: a config that does not fit its data; a workdir that already
      holds another run (pass ``resume``), or that another process is
      writing; a resume whose config differs in a key it cannot change; a
      folder that cannot be written. Nothing in ``workdir`` is changed.
    CheckpointError: ``resume`` without a (readable) checkpoint; nothing in
      ``workdir`` is changed.
    DivergenceError: the loss became NaN/inf or grew without bound (exit
      status 3); the run folder keeps its last good checkpoint, metrics,
      summary and plots.
    Preempted: a SIGTERM/SIGINT stopped the run after an epoch; its
      checkpoint and the summary (``status = "preempted"``) are written.
  """
  if is_main is None:
    is_main = parallel.is_main()
  if not is_main:
    log, progress = (lambda *a, **k: None), "never"
  workdir = os.fspath(workdir)
  cfg, ckpt_dir, has_ckpt, changed = _check_folder(cfg, workdir, resume,
                                                   is_main)
  if has_ckpt and cfg["train"]["restore_best"]:
    # The best params live in memory only: a resumed run would not know them.
    raise ConfigError("train.restore_best keeps the best params in memory, "
                      "so its run cannot be resumed; expected train.restore_best "
                      "= false to resume, or a fresh --out")
  with timings.phase("data"):
    setup = Setup(cfg)
  with contextlib.ExitStack() as stack:
    if is_main:
      stack.enter_context(rundir.lock(workdir))
    rundir.check_writable(ckpt_dir, "config key 'run.checkpoint_dir' ="
                        if cfg["run"]["checkpoint_dir"] else "run folder")
    watch = stack.enter_context(preemption.Watch(
        "chunk" if streamed.is_streamed(setup.ds) else "epoch"))
    run = Run(setup, workdir, ckpt_dir, watch, log=log, is_main=is_main,
              progress=progress, plotter=plotter)
    return run.execute(has_ckpt, changed)


def _check_folder(cfg, workdir: str, resume: bool, is_main: bool):
  """``(cfg, ckpt_dir, has_ckpt, changed)`` once the run folder is checked:
  unlocked, a resume's config compatible with the saved one (``changed``:
  the keys it changes), a checkpoint present exactly when resuming.

  Every check first, then the compiled calls: a mistake in the config, the
  data or the folder is one line before anything is compiled or written.
  (orbax is imported only when the checkpoint folder exists.)"""
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
  return cfg, ckpt_dir, has_ckpt, changed


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




class Run:
  """One run being trained into its folder, a phase per method.

  Fields: the ``setup``, the folder (``workdir``, ``ckpt_dir``), the
  signal ``watch``; what the phases hand on: ``state`` (the
  ``TrainState`` training starts from, then the one it ended with),
  ``history`` (the records before this process's first epoch, then all),
  ``events`` (damaged checkpoints, a changed config) and ``last_saved``
  (the number of the newest checkpoint saved). :meth:`execute` runs the
  phases in order.
  """

  def __init__(self, setup: Setup, workdir: str, ckpt_dir: str, watch, *,
               log=print, is_main: bool = True, progress="auto",
               plotter=None):
    self.setup, self.workdir, self.ckpt_dir = setup, workdir, ckpt_dir
    self.watch, self.log, self.is_main = watch, log, is_main
    self.progress, self.plotter = progress, plotter
    t = setup.cfg["train"]
    self.steps_per_epoch = len(setup.ds.y_train) // t["batch_size"]
    # A run streamed from shards numbers its checkpoints by optimizer step
    # (it also saves inside epochs); others by epoch.
    self.stream = streamed.is_streamed(setup.ds)
    self.state: Optional[TrainState] = None
    self.history, self.events = [], []
    self.last_saved, self.signal_name = 0, None
    self.board = self.bar = self.metrics = self.saver = None

  def execute(self, has_ckpt: bool, changed: dict) -> dict:
    """Every phase; returns the summary, or raises DivergenceError or
    Preempted after writing it (see :func:`train_and_evaluate`)."""
    if has_ckpt:  # the restore needs it now; else ahead() begins it
      _import_in_background(["orbax.checkpoint"])
    with timings.phase("init"):
      self.state = TrainState(*self.setup.init_state(
          meanwhile=None if has_ckpt else self.ahead))
    if has_ckpt:
      self.restore(changed)
    self.last_saved = self._number(self.state)
    self.first_writes()
    drawing, summary = False, None
    self.saver = checkpoints.Saver(self.ckpt_dir,
                                   self.setup.cfg["run"]["keep_checkpoints"],
                                   by_step=self.stream)
    try:
      result, elapsed = self.train()
      summary, drawing = self.finish(result, elapsed)
    finally:
      # Every checkpoint complete on disk before the summary says the run is
      # done, and before an error (or Ctrl-C) leaves the process.
      with timings.phase("save"):
        self.saver.close()
    if self.is_main:
      rundir.write_summary(self.workdir, summary)
    if drawing:
      with timings.phase("plots"):
        self.plotter.wait()
    self._raise_if_stopped(result, summary)
    return summary

  def _number(self, state: TrainState) -> int:
    """The number of ``state``'s checkpoint: its step when streamed, else
    its epoch."""
    inside = (state.position or {}).get("step", 0)
    return (state.epoch * self.steps_per_epoch + inside if self.stream
            else state.epoch)

  def restore(self, changed: dict) -> None:
    """The newest good checkpoint into :attr:`state`, the metrics written
    up to it into :attr:`history`, damaged steps and ``changed`` keys into
    :attr:`events`."""
    with timings.phase("restore"):
      restored = checkpoints.restore_newest_good(
          self.ckpt_dir, self.state, move_damaged=True,
          on_damaged=lambda line: self.is_main and print(
              f"funcnet: warning: {line}", file=sys.stderr))
    self.state = state = restored.state
    start, position = state.epoch, state.position
    self.events += [{"event": "damaged_checkpoint", "resumed_from": start,
                     **d._asdict()} for d in restored.damaged]
    if self.is_main:
      self.history = rundir.read_metrics(self.workdir, start, events=True)
    if changed:
      self.events.append({"event": "resume", "epoch": start,
                          "changed": changed})
    self.log(f"resuming {self.workdir} from epoch {start}"
             + (f", step {position['step']} of epoch {start + 1}" if position
                else "")
             + (f" (changed: {', '.join(changed)})" if changed else ""))

  def first_writes(self) -> None:
    """The run folder's files before training (main process), the
    TensorBoard writer when asked for, and the opening lines of the log."""
    setup, cfg, start = self.setup, self.setup.cfg, self.state.epoch
    if self.is_main:
      rundir.write_config(self.workdir, cfg)
      rundir.write_model(self.workdir, setup.model)
      rundir.write_stats(self.workdir, setup.stats)
      rundir.write_tokenizer(self.workdir, setup.ds.info.get("tokenizer"))
      rundir.reset_metrics(self.workdir, self.history + self.events)
      if cfg["run"]["tensorboard"]:
        from funcnet.run import tensorboard  # tensorboardX only when asked for
        self.board = tensorboard.open_writer(
            self.workdir, purge_step=start * self.steps_per_epoch + 1
            if start else None)
    self.history = [h for h in self.history if "event" not in h]
    t, model = cfg["train"], setup.model
    self.log(f"data   {data.summary(setup.ds)}")
    self.log(f"model  {registry.describe(model.spec)}")
    compute = setup.mixed.compute_dtype
    self.log(f"train  {t['epochs']} epochs x {self.steps_per_epoch} steps, "
             f"{cfg['optimizer']['name']} ({cfg['optimizer']['impl']}), "
             f"grads {t['grads']}, device {setup.device()}"
             + (f", compute {compute.name}" if compute is not None else "")
             + (f", {t['accumulate']} micro-batches" if t["accumulate"] > 1
                else ""))
    if setup.teacher is not None:
      d = cfg["distill"]
      self.log(f"distil from {setup.teacher.run} ({setup.teacher.model.kind}, "
               f"epoch {setup.teacher.epoch}), T {d['temperature']:g}, "
               f"alpha {d['alpha']:g}")
    if setup.adversarial is not None:
      a = cfg["adversarial"]
      self.log(f"attack {a['method']} eps {a['eps']:g} (raw units) on "
               f"{a['ratio']:.0%} of each batch"
               + (f", {a['steps']} steps" if a["method"] == "pgd" else ""))

  def train(self):
    """``(result, seconds)`` of ``train.fit`` from :attr:`state`, the
    metrics written and checkpoints saved as it goes."""
    t = self.setup.cfg["train"]
    self.bar = Progress(t["epochs"], self.state.epoch, mode=self.progress,
                        task=self.setup.ds.task)
    self.metrics = rundir.MetricsWriter(self.workdir) if self.is_main else None
    t0, rapl0 = time.perf_counter(), compute.rapl_joules()
    try:
      with timings.phase("train"):
        result = self.setup.fit(self.state, callbacks=Callbacks(
            self.on_epoch, self.on_chunk if self.stream else None,
            meanwhile=self.count_flops))
    finally:
      self.bar.close()
      for f in (self.metrics, self.board):
        if f:
          f.close()
    self.rapl = (rapl0, compute.rapl_joules())
    return result, time.perf_counter() - t0

  def ahead(self, shapes) -> None:
    """While XLA compiles init (a fresh run on a cold cache): fit's epoch
    and evaluation lowered and begun compiling beside it, and the FLOP
    count traced; that tracing followed each compilation before (a cold
    default run 1.93 -> 1.85 s; docs/performance.md, "Cold start:
    programs compiled beside each other")."""
    self.setup.prepare_fit(TrainState(*shapes))
    self.count_flops()
    # orbax's import (0.2 s holding the GIL, needed at the first save)
    # while this thread waits for XLA. Begun before init, it competed with
    # the tracing above for the GIL (one cold timeline: the epoch's
    # lowering 0.09 -> 0.46 s); in an A/B of 10 rounds either place gave
    # the same wall time, cold and warm.
    _import_in_background(["orbax.checkpoint"])

  def count_flops(self) -> None:
    """The summary's FLOP count (``Setup.compute``, kept on the Setup),
    traced while XLA compiles the run's programs on other threads: on a
    cold cache 0.1 s of tracing that followed training now overlaps the
    epoch's compilation. A model that cannot be counted is left to the
    summary (which records no ``compute``)."""
    try:
      self.setup.compute()
    except Exception:  # noqa: BLE001 - accounting must never fail a run
      pass

  def on_epoch(self, record: dict, state: TrainState,
               status: str) -> bool:
    """After each epoch: its record written; a checkpoint every
    ``run.checkpoint_every`` epochs (not of a diverged one, nor the last,
    which :meth:`finish` saves); stop after it on SIGTERM/SIGINT."""
    record = language.per_char(record, self.setup.ds.info)
    if self.metrics:
      self.metrics.write(record)
    if self.board:
      self.board.write(record)
    self.bar.update(record)
    e, cfg = record["epoch"], self.setup.cfg
    if e % cfg["run"]["checkpoint_every"] == 0 and e < cfg["train"]["epochs"] \
        and status != "diverged":
      with timings.phase("save"):  # returns while orbax writes
        self.saver.save(state)
      self.last_saved = self._number(state)
    return self.watch.requested() is not None  # stop: saved in finish

  def on_chunk(self, state: TrainState) -> bool:
    """Inside an epoch of streamed data: save every
    ``run.checkpoint_every_steps`` steps (at a chunk's end), and stop there
    on SIGTERM/SIGINT."""
    stop = self.watch.requested() is not None
    every_steps = self.setup.cfg["run"]["checkpoint_every_steps"]
    g = self._number(state)
    if stop or (every_steps and _crossed(g, self.last_saved, every_steps)):
      with timings.phase("save"):
        self.saver.save(state)
      self.last_saved = g
    return stop

  def finish(self, result, elapsed: float):
    """``(summary, drawing)``: the last checkpoint saved (unless diverged, or
    already saved inside an epoch), the summary built, the plots drawn or
    handed to the plotter process (``drawing``)."""
    cfg = self.setup.cfg
    self.signal_name = (self.watch.requested() if result.status == "stopped"
                        else None)
    self.history = self.history + result.history
    # The plots are asked for first: another process draws them while this
    # one saves the last checkpoint and builds the summary (its compute
    # accounting traces the step: 0.2 s of a cold one-epoch run). Before
    # the save too: a short run's first save waits for orbax's import, which
    # the run began on a thread (_import_in_background) and which a warm
    # one-epoch run outpaces (the save phase 0.07 -> 0.13 s once optax left
    # the start, issue 27); drawing meanwhile takes the plots' 0.1-0.2 s off
    # the end of the run.
    plotting = bool(self.is_main and cfg["run"]["plots"] and self.history)
    drawing = False
    if plotting:
      with timings.phase("plots"):
        drawing = bool(self.plotter) and self.plotter.draw(
            self.history, self.workdir, cfg["name"])
    if not result.diverged and result.state.position is None:  # (else saved)
      with timings.phase("save"):
        self.saver.save(result.state)
    if plotting and not drawing:  # no plotting process: drawn here
      with timings.phase("plots"):
        from funcnet.run import plots  # matplotlib only when plotting
        plots.write(self.history, self.workdir, title=cfg["name"])
    summary = summary_lib.record(self.setup, result, self.history, elapsed,
                                 self.signal_name)
    summary.update(language.summary_keys(self.history))
    if summary.get("compute"):
      summary["compute"] = compute.energy(
          summary["compute"], elapsed, getattr(self, "rapl", None),
          cfg["run"]["power_watts"])
    if self.is_main and summary["status"] == "finished":
      text = language.end_sample(self.setup.model, result.state.params,
                                 self.setup.ds.info.get("tokenizer"))
      if text is not None:
        self.log("sample " + repr(text))
    if cfg["train"]["compare_grads"] and summary["status"] == "finished":
      summary["compare_grads"] = compare_training(
          self.setup, result.state.params, self.log)
    return summary, drawing

  def _raise_if_stopped(self, result, summary: dict) -> None:
    """DivergenceError (exit 3) for a diverged run, Preempted for one a
    signal stopped; both once the summary and checkpoints are written."""
    t = self.setup.cfg["train"]
    if result.diverged:
      last = checkpoints.latest_epoch(self.ckpt_dir)
      where = (f"the last good checkpoint (epoch {last}) is in "
               f"{self.ckpt_dir}" if last is not None
               else "no checkpoint had been written yet")
      raise DivergenceError(f"{result.reason}; {where}; try a smaller "
                            "optimizer.learning_rate or optimizer.clip_norm")
    if self.signal_name:
      where = summary_lib.stopped_at(result, summary["epochs"])
      raise Preempted(
          f"{self.signal_name}: stopped after {where} of {t['epochs']}, "
          f"checkpoint saved in {self.ckpt_dir}; continue with: funcnet "
          f"train --out {self.workdir} --resume",
          preemption.EXIT_CODES[self.signal_name])
