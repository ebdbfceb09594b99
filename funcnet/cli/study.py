"""``funcnet study``: one of :mod:`funcnet.studies`, into a folder of
figures, a table and a README."""

import json

from funcnet.cli import common
from funcnet.errors import FuncnetError

NAME = "study"
HELP = ("run a study: a classic claim about backprop or gradient descent as "
        "figures and numbers")
DESCRIPTION = ("Runs one study into a folder with its figures, table.md, "
               "results.json and README.md; see docs/studies.md.")


def add_arguments(p) -> None:
  p.add_argument("name", nargs="?", metavar="NAME", help="the study "
                 "(--list shows them)")
  p.add_argument("--list", action="store_true", help="list the studies")
  p.add_argument("--out", metavar="DIR",
                 help="output folder (default: studies/<name>-<time>)")
  p.add_argument("--quick", action="store_true",
                 help="a small version that runs in seconds")
  p.add_argument("--set", dest="overrides", action="append", default=[],
                 metavar="KEY=VALUE", help="change a study parameter "
                 "(repeatable; --list shows them)")


def run(args) -> int:
  from funcnet import studies
  if args.list:
    for name, study in studies.STUDIES.items():
      print(f"{name:22s}{study.claim}")
      print(" " * 22 + "parameters: " + ", ".join(
          f"{k}={json.dumps(v)}" for k, v in study.defaults.items()))
    return 0
  if not args.name:
    raise FuncnetError("funcnet study needs a NAME; expected one of "
                       f"{', '.join(studies.STUDIES)} (or --list)")
  from funcnet import config as config_lib
  common.start_jax(config_lib.DEFAULTS)  # a study has no config: the default
  result = studies.run(args.name, args.out, args.quick, args.overrides)
  print(f"study {args.name}: {result['out']}/README.md "
        f"({result['wall_time_s']:.1f} s)")
  return 0
