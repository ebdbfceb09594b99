"""``funcnet eval``: a run folder's latest checkpoint on its test split
(:func:`funcnet.experiment.evaluate`)."""

import json

from funcnet.cli import common

NAME = "eval"
HELP = "evaluate a run's latest checkpoint on its test split"
DESCRIPTION = (
    "Restores the newest intact checkpoint of a run folder (funcnet train "
    "--out) with the run's own config.json, evaluates it on the test split "
    "and prints the metrics as JSON (the same numbers as its summary.json "
    "when the run finished).")


def add_arguments(p) -> None:
  p.add_argument("--run", required=True, metavar="DIR", help="a run folder")
  common.import_flag(p)


def run(args) -> int:
  from funcnet import experiment
  from funcnet.run import rundir
  common.do_imports(args)
  common.start_jax(rundir.read_config(args.run, what="--run"))
  print(json.dumps(experiment.evaluate(args.run), indent=2))
  return 0
