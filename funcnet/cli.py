"""The ``funcnet`` command: a thin layer of flags over :mod:`funcnet.experiment`.

  funcnet train     [--config FILE] [--set key=value ...] [--out DIR] [--resume]
  funcnet gradcheck [--config FILE] [--set key=value ...] [--batch N]
  funcnet eval      --run DIR

Exit status: 0 done; 1 a gradient check that failed; 2 a user mistake (bad
config, data file, name or run folder), reported as one line on stderr; 3
training diverged (NaN/inf loss; the last good checkpoint stays); 130
interrupted.
"""

import argparse
import json
import os
import sys

from funcnet.errors import FuncnetError

EPILOG = """examples:
  funcnet train                                   # the default: an MLP on digits
  funcnet train --config configs/xor_textbook.toml
  funcnet train --config configs/digits_mlp.toml --set train.epochs=5 --out runs/try
  funcnet train --out runs/try --resume           # continue from the latest checkpoint
  funcnet gradcheck --config configs/digits_mlp.toml
  funcnet eval --run runs/try
Every config key, its default and meaning: configs/README.md."""


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="funcnet", description="Train neural networks written as pure JAX "
      "functions; compare hand-written backprop with jax.grad.",
      epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", metavar="COMMAND")

  def config_flags(q):
    q.add_argument("--config", metavar="FILE",
                   help="a TOML config (default: the built-in digits MLP)")
    q.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=5 "
                   "(repeatable; values are TOML: 0.1, [64,64], true, adam)")

  t = sub.add_parser("train", help="train a model from a config into a run folder",
                     description="Train from a config; writes config.json, "
                     "metrics.jsonl, summary.json, plots and checkpoints.")
  config_flags(t)
  t.add_argument("--out", metavar="DIR",
                 help="run folder (default: runs/<config name>-<time>)")
  t.add_argument("--resume", action="store_true",
                 help="continue the run in --out from its latest checkpoint, "
                 "using its saved config (plus any --set)")
  t.add_argument("--progress", choices=("auto", "always", "never"),
                 help="progress bar (default: run.progress)")

  g = sub.add_parser("gradcheck", help="manual vs autodiff vs finite "
                     "differences, per layer, on a batch of the config's data")
  config_flags(g)
  g.add_argument("--batch", type=int, default=8, metavar="N",
                 help="examples in the batch (default 8)")

  e = sub.add_parser("eval", help="evaluate a run's latest checkpoint on its "
                     "test split")
  e.add_argument("--run", required=True, metavar="DIR", help="a run folder")
  return p


def _cmd_train(args) -> int:
  from funcnet import config as config_lib, experiment
  if args.resume:
    if not args.out:
      raise FuncnetError("--resume needs --out DIR naming the run to continue")
    saved = os.path.join(args.out, "config.json")
    if not os.path.exists(saved):
      raise FuncnetError(f"--resume: {saved!r} does not exist; expected a run "
                         "folder written by funcnet train")
    with open(saved) as f:
      cfg = config_lib.from_dict(json.load(f), args.overrides)
  else:
    cfg = config_lib.load(args.config, args.overrides)
  if args.progress:
    cfg["run"]["progress"] = args.progress
  workdir = args.out or experiment.default_workdir(cfg)
  summary = experiment.train_and_evaluate(
      cfg, workdir, resume=args.resume, progress=cfg["run"]["progress"])
  shown = {k: summary[k] for k in ("test_accuracy", "test_loss", "test_rmse",
                                   "steps_per_s") if summary.get(k) is not None}
  print("result " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
  files = sorted(f for f in os.listdir(workdir) if not f.endswith(".tmp"))
  print(f"run folder {workdir}: {', '.join(files)}")
  return 0


def _cmd_gradcheck(args) -> int:
  import jax
  import numpy as np
  from funcnet import config as config_lib, experiment, gradcheck
  cfg = config_lib.load(args.config, args.overrides)
  setup = experiment.Setup(cfg)
  ds = setup.ds
  n = len(ds.y_train)
  if not 1 <= args.batch <= n:
    raise FuncnetError(f"--batch {args.batch}: expected 1..{n}")
  rng = np.random.default_rng(cfg["seed"])
  idx = np.sort(rng.choice(n, args.batch, replace=False))
  params, _ = setup.init_state()
  report = gradcheck.compare(setup.model, setup.loss, params,
                             ds.x_train[idx], ds.y_train[idx],
                             key=jax.random.key(cfg["seed"]))
  print(f"gradient check of {cfg['name']}: {setup.model.kind}, loss "
        f"{setup.loss}, {args.batch} examples of {ds.name}, float64")
  print(report)
  return 0 if report.ok() else 1


def _cmd_eval(args) -> int:
  import jax
  from funcnet import checkpoints, config as config_lib, experiment, train
  saved = os.path.join(args.run, "config.json")
  if not os.path.exists(saved):
    raise FuncnetError(f"--run {args.run!r} has no config.json; expected a run "
                       "folder written by funcnet train")
  with open(saved) as f:
    cfg = config_lib.from_dict(json.load(f))
  setup = experiment.Setup(cfg)
  params, opt_state = setup.init_state()
  epoch, params, _ = checkpoints.restore(
      os.path.join(args.run, "checkpoints"), params, opt_state)
  metrics = train.make_evaluate(setup.model, setup.loss, setup.ds.task)(
      params, *train_arrays(setup))
  out = {"run": args.run, "epoch": epoch,
         **{f"test_{k}": float(v) for k, v in jax.device_get(metrics).items()}}
  print(json.dumps(out, indent=2))
  return 0


def train_arrays(setup):
  import jax.numpy as jnp
  ds = setup.ds
  x = ds.x_test
  x = jnp.asarray(x, setup.dtype) if x.dtype.kind == "f" else jnp.asarray(x)
  y = jnp.asarray(ds.y_test)
  return x, (y.astype(setup.dtype) if y.dtype.kind == "f" else y)


def main(argv=None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  if args.command is None:
    parser.print_help()
    return 2
  try:
    return {"train": _cmd_train, "gradcheck": _cmd_gradcheck,
            "eval": _cmd_eval}[args.command](args)
  except FuncnetError as e:
    print(f"funcnet: error: {e}", file=sys.stderr)
    return e.exit_code
  except KeyboardInterrupt:
    print("funcnet: interrupted; checkpoints already written stay", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
