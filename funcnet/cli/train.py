"""``funcnet train``: one config into one run folder
(:func:`funcnet.experiment.train_and_evaluate`)."""

import os

from funcnet import timings
from funcnet.cli import common
from funcnet.errors import FuncnetError

NAME = "train"
HELP = "train a model from a config into a run folder"
DESCRIPTION = ("Train from a config; writes config.json, metrics.jsonl, "
               "summary.json, plots and checkpoints.")


def add_arguments(p) -> None:
  common.config_flags(p)
  p.add_argument("--out", metavar="DIR",
                 help="run folder (default: runs/<config name>-<time>)")
  p.add_argument("--resume", action="store_true",
                 help="continue the run in --out from its newest good "
                 "checkpoint, with its saved config (or --config), plus any "
                 "--set that only changes train.epochs, run.* reporting or "
                 "parallel.*; exit 2 without a checkpoint")
  p.add_argument("--auto-resume", action="store_true",
                 help="--resume when --out holds a checkpoint, else start it "
                 "(for a retry loop on preemptible machines; exit 75 means "
                 "SIGTERM stopped it after saving)")
  p.add_argument("--progress", choices=("auto", "always", "never"),
                 help="progress bar (default: run.progress)")
  common.import_flag(p)
  common.device_flags(p)


def run(args) -> int:
  with common.plotter(args) as plotter:
    return _train_with(args, plotter)


def _config(args):
  """The config to train: ``--config`` plus ``--set``, or with ``--resume``
  and no ``--config`` the run folder's own."""
  from funcnet import config as config_lib
  from funcnet.run import rundir
  if (args.resume or args.auto_resume) and not args.out:
    raise FuncnetError(f"{'--resume' if args.resume else '--auto-resume'} "
                       "needs --out DIR naming the run to continue")
  if args.auto_resume:  # a retry loop's flag: resume if there is anything
    args.resume = rundir.resumable(args.out)
  if args.resume and not args.config:
    # The run's own config, plus any --set; train_and_evaluate compares
    # the result with it (funcnet.run.resume) before touching the folder.
    cfg = rundir.read_config(args.out, args.overrides, "--resume: run folder")
  else:
    cfg = config_lib.load(args.config, args.overrides)
  if args.progress:
    cfg["run"]["progress"] = args.progress
  return cfg


def _train_with(args, plotter) -> int:
  with timings.phase("imports"):
    import jax
    from funcnet import experiment  # config and rundir come with it
  with timings.phase("config"):
    common.do_imports(args)
    cfg = _config(args)
  common.start_jax(cfg, args)
  if jax.process_count() > 1 and not args.out:
    raise FuncnetError("several processes need --out DIR, the same run folder "
                       "in every process")
  workdir = args.out or experiment.default_workdir(cfg)
  summary = experiment.train_and_evaluate(
      cfg, workdir, resume=args.resume, progress=cfg["run"]["progress"],
      plotter=plotter)
  if jax.process_index() != 0:
    return 0  # process 0 reports; the others wrote only checkpoint shards
  from funcnet import tasks
  shown = {k: summary[k] for k in tasks.evaluated_keys(summary["task"])
           + ("val_bpc", "steps_per_s") if summary.get(k) is not None}
  print("result " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
  if summary.get("compute"):
    from funcnet.train import compute
    print("compute " + compute.line(summary["compute"]))
  files = sorted(f for f in os.listdir(workdir)
                 if not f.endswith(".tmp") and not f.startswith("."))
  print(f"run folder {workdir}: {', '.join(files)}")
  return 0
