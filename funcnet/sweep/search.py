"""Hyperparameter search with Optuna, ``parallel`` trials per compiled program.

  funcnet sweep --search optuna --trials 32 --parallel 8 \\
      --space optimizer.learning_rate=loguniform:1e-4,1e-1 --out sweeps/s

Optuna's ask-and-tell interface: ask for ``parallel`` trials, train them as
one sweep (:func:`funcnet.sweep.train_variants`: trials that share a program
train together, and later batches reuse the compiled program, since the
swept values are arrays), tell each trial its final main metric, repeat
until ``trials`` have finished. A diverged trial is told as failed.

The study lives in Optuna's own SQLite storage, ``DIR/optuna.db``, so a
search that was killed resumes where it stopped when run again with the
same ``--out``: trials left running are marked failed and asked again with
the same values (``enqueue_trial``). Optuna is an optional extra,
``pip install -e ".[sweep]"``.

Space syntax, ``KEY=KIND:ARGS``:

  loguniform:LOW,HIGH    a float, log-uniform     uniform:LOW,HIGH   a float
  int:LOW,HIGH           an integer               logint:LOW,HIGH    log-spaced
  choice:V1,V2,...       one of the values (TOML, as --set parses them)
"""

import csv
import json
import os
from typing import Optional

from funcnet import tasks
from funcnet.errors import ConfigError, needs_extra
from funcnet.sweep import grid as grid_lib

KINDS = ("loguniform", "uniform", "int", "logint", "choice")
STATUS = "funcnet_status"  # the user attribute of every trial that trained


def _optuna():
  try:
    import optuna
  except ImportError:
    raise needs_extra("--search optuna", "sweep", "optuna") from None
  optuna.logging.set_verbosity(optuna.logging.WARNING)  # funcnet logs its own
  return optuna


def parse_space(specs) -> dict:
  """``["key=loguniform:1e-4,1e-1", ...]`` -> ``{key: optuna distribution}``."""
  optuna = _optuna()
  d = optuna.distributions
  space = {}
  for text in specs:
    key, _, rhs = text.partition("=")
    kind, _, args = rhs.partition(":")
    key, kind = key.strip(), kind.strip()
    if not key or kind not in KINDS or not args:
      raise ConfigError(f"--space {text!r}: expected KEY=KIND:ARGS with KIND one "
                        f"of {', '.join(KINDS)}, e.g. "
                        "optimizer.learning_rate=loguniform:1e-4,1e-1")
    values = grid_lib.split_values(args)
    if kind == "choice":
      space[key] = d.CategoricalDistribution(values)
      continue
    try:
      lo, hi = (float(v) for v in values) if len(values) == 2 else (None, None)
    except ValueError:
      lo = hi = None
    if lo is None or not lo < hi or (kind.startswith("log") and lo <= 0):
      raise ConfigError(f"--space {text!r}: expected two numbers LOW < HIGH"
                        + (" with LOW > 0" if kind.startswith("log") else ""))
    if kind in ("int", "logint"):
      if lo != int(lo) or hi != int(hi):
        raise ConfigError(f"--space {text!r}: expected integer bounds")
      space[key] = d.IntDistribution(int(lo), int(hi), log=kind == "logint")
    else:
      space[key] = d.FloatDistribution(lo, hi, log=kind == "loguniform")
  if not space:
    raise ConfigError("--search optuna needs at least one --space KEY=KIND:ARGS")
  return space


def _assignment(params: dict, space: dict) -> dict:
  """A trial's params as config values (choices parsed as TOML)."""
  out = {}
  for key, value in params.items():
    if key in space and type(space[key]).__name__ == "CategoricalDistribution":
      from funcnet import config as config_lib
      value = config_lib.parse_override(f"{key}={value}")[1]
    out[key] = value
  return out


def run(cfg: dict, space: dict, *, trials: int, parallel: int, out: str,
        seed: Optional[int] = None, log=print, plotter=None):
  """Runs (or resumes) the search in ``out``; returns the Optuna study.

  Args:
    cfg: the base config; every key not in ``space`` comes from it.
    space: ``{key: optuna distribution}`` (:func:`parse_space`).
    trials: trials to finish in all (those of an earlier, interrupted run
      of this search count).
    parallel: trials asked for, and trained as one sweep, at a time.
    out: the folder holding ``optuna.db`` and the results.
    seed: the sampler's seed (default: the config's ``seed``).
    plotter: a started :class:`funcnet.run.plot_process.Plotter` that draws
      ``search.png`` (``funcnet sweep`` starts one before JAX); None: drawn
      in this process.
  """
  from funcnet import sweep
  optuna = _optuna()
  if trials < 1 or parallel < 1:
    raise ConfigError(f"--trials {trials} --parallel {parallel}: expected both >= 1")
  os.makedirs(out, exist_ok=True)
  metric, higher = tasks.headline(_task(cfg))
  study = optuna.create_study(
      study_name="funcnet", storage=f"sqlite:///{os.path.abspath(out)}/optuna.db",
      load_if_exists=True, direction="maximize" if higher else "minimize",
      sampler=optuna.samplers.TPESampler(
          seed=cfg["seed"] if seed is None else seed))
  _check_same_space(study, space, out)
  state = optuna.trial.TrialState
  for t in study.get_trials(deepcopy=False, states=(state.RUNNING,)):
    study.tell(t.number, state=state.FAIL)   # killed mid-batch: ask again
    study.enqueue_trial(t.params)
    log(f"trial {t.number} was interrupted; asking for its values again")
  cache = {}
  while True:
    finished = [t for t in study.get_trials(deepcopy=False)
                if STATUS in t.user_attrs]
    left = trials - len(finished)
    if left <= 0:
      break
    asked = [study.ask(space) for _ in range(min(parallel, left))]
    vs = [grid_lib.Variant(t.number, a, grid_lib.variant_config(cfg, a))
          for t, a in ((t, _assignment(t.params, space)) for t in asked)]
    log(f"trials {asked[0].number}..{asked[-1].number}: {len(asked)} at once "
        f"({len(finished)} of {trials} finished)")
    results = sweep.train_variants(vs, cache=cache, log=log)
    from funcnet.sweep import results as results_lib
    results_lib.write_variants(results, os.path.join(out, "variants"))
    for t, r in zip(asked, results):
      value = r.final.get(metric)
      t.set_user_attr(STATUS, r.status)
      if value is None or value != value:
        study.tell(t, state=state.FAIL)
      else:
        study.tell(t, value)
  write(study, cfg, space, out, metric, log, plotter=plotter)
  return study


def _task(cfg) -> str:
  from funcnet import experiment
  return experiment.build_dataset(cfg).task


def _check_same_space(study, space, out) -> None:
  """A resumed search must ask the same questions."""
  saved = study.user_attrs.get("space")
  mine = {k: repr(v) for k, v in space.items()}
  if saved is None:
    study.set_user_attr("space", mine)
  elif saved != mine:
    raise ConfigError(f"--out {out!r} holds a search over another space "
                      f"({', '.join(saved)}); expected the same --space flags "
                      "to resume it, or a new --out folder")


def write(study, cfg, space, out, metric, log=print, plotter=None) -> None:
  """``results.csv`` / ``results.md`` (one row per finished trial, the
  table sorted best first), ``best.toml`` and ``search.png`` (drawn by
  ``plotter``, a started :class:`funcnet.run.plot_process.Plotter`, while
  the rest is written; here when there is none or it is gone)."""
  from funcnet.run import sweep_figures
  from funcnet.sweep import results as results_lib
  done = [t for t in study.get_trials(deepcopy=False)
          if STATUS in t.user_attrs]
  good = [t for t in done if t.value is not None]
  sign = 1 if study.direction.name == "MAXIMIZE" else -1
  figure = {"metric": metric, "higher_is_better": sign > 0,
            "finished": len(done),
            "trials": [[t.number, t.value] for t in good]}
  drawing = bool(good) and plotter is not None and plotter.draw_search(figure, out)
  keys = list(space)
  header = ["trial"] + keys + [f"final {metric}", "status"]
  rows = [[t.number] + [t.params.get(k) for k in keys]
          + [t.value if t.value is not None else float("nan"),
             t.user_attrs[STATUS]] for t in done]
  with open(os.path.join(out, "results.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
  ranked = sorted(rows, key=lambda r: -sign * r[-2] if r[-2] == r[-2] else 1e300)
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
    for r in ranked:
      f.write("| " + " | ".join(f"{x:.4g}" if isinstance(x, float) else str(x)
                                for x in r) + " |\n")
  if good:
    best = study.best_trial
    a = _assignment(best.params, space)
    best_cfg = grid_lib.variant_config(cfg, a)
    with open(os.path.join(out, "best.toml"), "w") as f:
      f.write(results_lib.config_toml(best_cfg, (
          f"The best trial ({best.number}) of the search in this folder: "
          + ", ".join(f"{k} = {json.dumps(v)}" for k, v in a.items())
          + f"\nfinal {metric} = {best.value}; train it again with: "
          "funcnet train --config <this file>")))
    if drawing:
      plotter.wait()  # FuncnetError: its one line
    else:
      sweep_figures.search(figure, os.path.join(out, sweep_figures.SEARCH))
    log(f"best trial {best.number}: "
        + ", ".join(f"{k}={json.dumps(v)}" for k, v in a.items())
        + f", final {metric} {best.value:.4g}")
  log(f"search folder {out}: optuna.db, results.csv, results.md, best.toml, "
      "search.png, variants/")
