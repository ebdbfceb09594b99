"""``funcnet gradcheck``: hand-written backprop against jax.grad and finite
differences, per layer (:func:`funcnet.experiment.gradcheck`)."""

from funcnet.cli import common

NAME = "gradcheck"
HELP = ("manual vs autodiff vs finite differences, per layer, on a batch of "
        "the config's data")
DESCRIPTION = (
    "Computes the gradient of the config's model and loss at its initial "
    "params three ways, in float64, on a batch of its training data: the "
    "hand-written backward pass, jax.grad, and central finite differences "
    "(on sampled entries). Prints one row per parameter array (each layer's "
    "W and b) with the largest absolute and relative differences; passes "
    "when manual vs autodiff agree to 1e-10 and both vs finite differences "
    "to 1e-6 (relative), else exit 1. See funcnet/gradcheck.py.")


def add_arguments(p) -> None:
  common.config_flags(p)
  common.import_flag(p)
  p.add_argument("--batch", type=int, metavar="N",
                 help="examples in the batch (default 8, or the whole "
                 "training split when it is smaller)")


def run(args) -> int:
  from funcnet import config as config_lib, experiment
  common.do_imports(args)
  cfg = config_lib.load(args.config, args.overrides)
  common.start_jax(cfg)
  report, heading = experiment.gradcheck(cfg, args.batch)
  print(heading)
  print(report)
  return 0 if report.ok() else 1
