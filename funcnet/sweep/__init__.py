"""Sweeps: many trainings of one config in one compiled program.

  result = funcnet.sweep.run(cfg, {"optimizer.learning_rate": [0.1, 0.01],
                                   "seed": [0, 1]}, out="sweeps/lr")
  result.best.assignment, result.best.final["test_accuracy"]

``run`` trains the cross product of the grid. Variants that differ only in
numbers the step reads (learning rate, optimizer and schedule
hyperparameters, L2, clip norm, dropout rate) or in what is read on the
host (seed, epochs, patience, the initialiser) form a group and train
together: params and optimizer states stacked on a variant axis, one jitted
epoch vmapped over it, compiled once (:mod:`funcnet.sweep.engine`). Keys
that change shapes or the program (batch size, widths, model kind,
optimizer name, ...) split the grid into groups, trained one after another
(:mod:`funcnet.sweep.grid`). Every variant trains exactly as ``funcnet
train`` would train its config alone, early stopping and the divergence
guard included; ``sequential=True`` trains them that way, one at a time.

The output folder (:mod:`funcnet.sweep.results`): ``results.csv`` and
``results.md`` (one row per variant), ``best.toml`` (``funcnet train
--config`` it to reproduce the best variant), ``sweep.json`` (the grid and
every variant's per-epoch metrics), ``heatmap.png`` / ``curves.png``, and
one run folder per variant under ``variants/``; while it trains,
``sweep_plan.json`` and a checkpoint folder per group, from which
``resume=True`` (``funcnet sweep --resume``) continues a stopped sweep
(:mod:`funcnet.sweep.resume`).

Data streamed from shards (``data.name`` = a shards folder) is read into
memory first (:func:`funcnet.data.streamed.in_memory`, the same rows and
standardisation ``fit`` streams), so such a sweep equals the sweep of the
in-memory dataset; a split that does not fit is one line.

Search beyond grids, through Optuna's ask-and-tell interface, is
:mod:`funcnet.sweep.search`.
"""

import functools
import json
import time
from typing import NamedTuple, Optional

import jax

from funcnet import experiment, tasks
from funcnet.errors import ConfigError
from funcnet.data import streamed
from funcnet.sweep import engine, grid as grid_lib, resume as resume_lib
from funcnet.sweep.grid import parse_grid


class VariantResult(NamedTuple):
  """One trained variant.

  Attributes:
    index: its position in the sweep (``variants/NNN``).
    assignment: the swept keys' values, ``{key: value}``.
    cfg: its whole config.
    status: ``"done"``, ``"early_stopped"``, ``"diverged"`` or ``"stopped"``.
    reason: why it ended early (None when done).
    history: its per-epoch records, as ``train.fit`` gives them.
    params: its final params (numpy arrays).
    group: the index of the compiled program that trained it.
    group_wall_s: the wall time of that program's training (for
      ``--sequential``, of the variant alone, compilation included).
    task: its data's task (a :mod:`funcnet.tasks` name).
    model: its :class:`funcnet.model.Model`.
    stats: ``(mean, std)`` its inputs were standardised with, or None.
  """
  index: int
  assignment: dict
  cfg: dict
  status: str
  reason: Optional[str]
  history: list
  params: object
  group: int
  group_wall_s: float
  task: str
  model: object = None
  stats: Optional[tuple] = None

  @property
  def final(self) -> dict:
    """The last evaluation's ``test_*`` metrics (``{}`` when none ran)."""
    tests = [h for h in self.history if any(k.startswith("test_") for k in h)]
    return {k: v for k, v in tests[-1].items() if k.startswith("test_")} \
        if tests else {}

  @property
  def best_epoch(self) -> dict:
    """The best evaluation: ``epoch`` and its ``test_*`` metrics."""
    return tasks.best(self.history, self.task)


class SweepResult(NamedTuple):
  """A finished sweep: its variants (in grid order) and what ranks them."""
  variants: list
  keys: list
  metric: str
  higher_is_better: bool
  groups: int
  wall_s: float
  out: Optional[str] = None

  def score(self, v: VariantResult) -> float:
    """The variant's final main metric, oriented so larger is better (a
    variant without one, e.g. diverged at once, scores -inf)."""
    x = v.final.get(self.metric)
    if x is None or x != x:
      return float("-inf")
    return x if self.higher_is_better else -x

  def ranked(self) -> list:
    return sorted(self.variants, key=self.score, reverse=True)

  @property
  def best(self) -> VariantResult:
    return self.ranked()[0]


def _data_key(cfg) -> str:
  return json.dumps([cfg["data"], cfg["finetune"]["from_run"]], sort_keys=True)


def _shapes(setup) -> tuple:
  ds = setup.ds
  arrays = (ds.x_train, ds.y_train, ds.x_test, ds.y_test)
  return tuple(None if a is None else (a.shape, str(a.dtype)) for a in arrays) \
      + (ds.task, setup.model.n_out)


def _setup(cfg, ds):
  """The variant's :class:`funcnet.experiment.Setup`, its data in memory: a
  split streamed from shards is read whole (see
  :func:`funcnet.data.streamed.in_memory`) and the Setup rebuilt on it."""
  setup = experiment.Setup(cfg, ds=ds)
  if streamed.is_streamed(setup.built_ds):
    setup = experiment.Setup(cfg, ds=streamed.in_memory(setup.built_ds))
  return setup


def train_variants(vs, *, sequential: bool = False, cache=None, group_base=0,
                   log=print, folder=None, plan=None) -> list:
  """Trains :class:`funcnet.sweep.grid.Variant` s, grouped; returns
  :class:`VariantResult` s in the same order.

  ``folder``: a :class:`funcnet.sweep.resume.Folder` to check or write the
  plan in (``plan(groups) -> dict``, ``groups`` the member lists) and keep
  each group's checkpoints; None: none."""
  datasets, setups = {}, []
  for v in vs:
    key = _data_key(v.cfg)
    setup = _setup(v.cfg, datasets.get(key))
    datasets.setdefault(key, setup.built_ds)  # without a teacher's targets
    setups.append(setup)
  groups = {}
  for i, (v, s) in enumerate(zip(vs, setups)):
    groups.setdefault((grid_lib.program_key(v.cfg), _shapes(s)), []).append(i)
  if folder is not None:
    folder.open(plan(list(groups.values())))
  out = [None] * len(vs)
  for g, members in enumerate(groups.values()):
    if sequential:
      for i in members:
        log(f"variant {vs[i].index}: {_label(vs[i].assignment)} (alone)")
        out[i] = (g, engine.train_one(setups[i]))
      continue
    cfgs = [vs[i].cfg for i in members]
    traced = grid_lib.traced_keys(cfgs)
    devices = engine.devices_for(cfgs[0])
    log(f"group {group_base + g + 1}: {len(members)} variants in one program"
        + (f" (arrays: {', '.join(traced)})" if traced else "")
        + f" on {len(devices)} device{'s' * (len(devices) > 1)}")
    placement = engine.Placement(devices, len(members))
    results = engine.train_group(
        [vs[i] for i in members], [setups[i] for i in members], placement,
        cache=cache, log=log, checkpoint=folder and folder.group(
            group_base + g, setups[members[0]].cfg))
    for i, r in zip(members, results):
      out[i] = (g, r)
  return [VariantResult(v.index, v.assignment, v.cfg, r["status"], r["reason"],
                        r["history"], r["params"], group_base + g,
                        r["group_wall_s"], s.ds.task, s.model, s.stats)
          for v, s, (g, r) in zip(vs, setups, out)]


def _label(assignment: dict) -> str:
  return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in assignment.items())


def run(cfg: dict, grid: dict, out: Optional[str] = None, *,
        sequential: bool = False, resume: bool = False, cache=None,
        log=print, plotter=None) -> SweepResult:
  """Trains every variant of ``grid`` over the base config ``cfg``.

  Args:
    cfg: a resolved config (``funcnet.config.load``).
    grid: ``{key: [values]}`` (``parse_grid`` reads ``--grid`` flags).
    out: a folder for the results (:mod:`funcnet.sweep.results`), the plan
      and each group's checkpoints (:mod:`funcnet.sweep.resume`); None
      writes nothing.
    sequential: train each variant alone with ``train.fit`` instead (no
      checkpoints).
    resume: continue the sweep in ``out`` from its groups' checkpoints;
      ``cfg`` and ``grid`` must give its plan.
    cache: compiled programs kept across calls (see
      :func:`funcnet.sweep.engine.train_group`); None: compiled afresh.
    log: where progress lines go.
    plotter: a started :class:`funcnet.run.plot_process.Plotter` that
      draws the folder's figures (``funcnet sweep`` starts one before
      JAX); None: drawn in this process.

  Returns:
    A :class:`SweepResult`.

  Raises:
    ConfigError: no grid; ``resume`` without ``out`` or with
      ``sequential``; a plan that differs; a folder another process holds,
      or that holds a sweep and no ``resume``.
    CheckpointError: ``resume`` of a folder without a plan.
    Preempted: SIGTERM or SIGINT stopped it after an epoch, saved.
  """
  if not grid:
    raise ConfigError("a sweep needs at least one --grid KEY=V1,V2,...")
  if resume and (out is None or sequential):
    raise ConfigError("--resume continues the group checkpoints of a sweep "
                      "folder; expected --out DIR and no --sequential (which "
                      "keeps none)")
  folder = None
  if out is not None and not sequential:
    folder = resume_lib.Folder(out, resume)  # checks, before anything is built
  vs = grid_lib.variants(cfg, grid_lib.expand(grid))
  plan = functools.partial(resume_lib.make_plan, cfg, grid, vs,
                           devices=len(engine.devices_for(cfg)))
  t0 = time.perf_counter()
  try:
    variants = train_variants(vs, sequential=sequential, cache=cache,
                              log=log, folder=folder, plan=plan)
    metric, higher = tasks.headline(variants[0].task)  # what ranks them
    result = SweepResult(variants, list(grid), metric, higher,
                         len({v.group for v in variants}),
                         time.perf_counter() - t0, out)
    if out is not None and jax.process_index() == 0:  # one writer
      from funcnet.sweep import results
      results.write(result, grid, log=log, plotter=plotter)
  finally:
    if folder is not None:
      folder.close()
  return result


__all__ = ["SweepResult", "VariantResult", "parse_grid", "run",
           "train_variants"]
