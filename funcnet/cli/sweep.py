"""``funcnet sweep``: a grid of variants in one compiled program
(:func:`funcnet.sweep.run`), or an Optuna search (:mod:`funcnet.sweep.search`)."""

import os

from funcnet.cli import common
from funcnet.errors import FuncnetError

NAME = "sweep"
HELP = ("train many variants of a config in one compiled program (a grid, or "
        "an Optuna search)")
DESCRIPTION = (
    "Trains the cross product of the --grid values (every other key from the "
    "config). Variants that differ only in numbers the step reads (learning "
    "rate, optimizer and schedule hyperparameters, L2, clip norm, dropout) or "
    "in seed, epochs, patience or initialiser train together in one "
    "vectorised program; other keys split the grid into groups. Writes "
    "results.csv, results.md, best.toml, sweep.json, heatmap.png, curves.png "
    "and variants/ into --out, and before the first epoch sweep_plan.json; "
    "each group saves checkpoints into --out/checkpoints/ as it trains, so "
    "--resume continues a stopped sweep (SIGTERM/SIGINT: save, exit 75/130).")


def add_arguments(p) -> None:
  common.config_flags(p)
  p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                 help="a swept key and its values (repeatable; values are "
                 "TOML, e.g. model.mlp.hidden=[64],[128,128])")
  p.add_argument("--out", metavar="DIR",
                 help="sweep folder (default: sweeps/<config name>-<time>)")
  p.add_argument("--resume", action="store_true",
                 help="continue the sweep in --out from each group's newest "
                 "good checkpoint (finished groups are not trained again), "
                 "with its plan's config and grid unless --config/--grid are "
                 "given (they must give the same plan); exit 2 without one")
  p.add_argument("--sequential", action="store_true",
                 help="train the variants one at a time with the ordinary "
                 "loop (to compare, or to debug)")
  p.add_argument("--search", choices=("optuna",),
                 help="search with Optuna instead of a grid (the [sweep] extra)")
  p.add_argument("--space", action="append", default=[], metavar="KEY=DIST",
                 help="with --search: KEY=loguniform:LOW,HIGH | uniform:LOW,HIGH"
                 " | int:LOW,HIGH | logint:LOW,HIGH | choice:V1,V2,... "
                 "(repeatable)")
  p.add_argument("--trials", type=int, default=32, metavar="N",
                 help="with --search: trials in all (default 32)")
  p.add_argument("--parallel", type=int, default=8, metavar="K",
                 help="with --search: trials trained at once (default 8)")
  common.device_flags(p)


def run(args) -> int:
  # curves.png and heatmap.png (a search's search.png), drawn while the
  # results tables are written
  with common.plotter(args) as plotter:
    return _run(args, plotter)


def _run(args, plotter) -> int:
  import time
  from funcnet import config as config_lib
  if args.resume and (not args.out or args.search):
    raise FuncnetError("--resume needs --out DIR naming the sweep to continue"
                       " (an Optuna search resumes without it: the same --out)")
  plan = None
  if args.resume and not (args.config and args.grid):
    from funcnet.sweep import resume
    plan = resume.read_plan(args.out)  # one line when there is none
  if args.config or plan is None:
    cfg = config_lib.load(args.config, args.overrides)
  else:  # the sweep's own config, plus any --set (compared with the plan)
    cfg = config_lib.from_dict(plan["config"], args.overrides)
  common.start_jax(cfg, args)
  out = args.out or os.path.join(
      "sweeps", f"{cfg['name']}-{time.strftime('%Y%m%d-%H%M%S')}")
  import jax
  if args.search:
    return _search(args, cfg, out, jax.process_count(), plotter)
  if args.space:
    raise FuncnetError("--space needs --search optuna; a grid is --grid KEY=V1,V2")
  from funcnet import sweep
  if args.grid or plan is None:
    grid = sweep.parse_grid(args.grid)
  else:
    from funcnet.sweep import resume
    grid = resume.saved_grid(plan)
  if not args.resume:
    from funcnet.sweep import resume
    resume.refuse_existing(out)
  sweep.run(cfg, grid, out, sequential=args.sequential, resume=args.resume,
            log=print if jax.process_index() == 0 else (lambda *a: None),
            plotter=plotter)
  return 0


def _search(args, cfg, out, process_count: int, plotter) -> int:
  """``--search optuna``: one process, ``--space`` not ``--grid``."""
  if process_count > 1:
    raise FuncnetError("--search runs in one process (Optuna's storage has "
                       "one writer); expected a grid sweep on several")
  if args.grid or args.sequential:
    raise FuncnetError("--search takes --space, not --grid or --sequential")
  from funcnet.sweep import search
  space = search.parse_space(args.space)
  search.run(cfg, space, trials=args.trials, parallel=args.parallel, out=out,
             plotter=plotter)
  return 0
