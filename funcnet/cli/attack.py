"""``funcnet attack``: a run's accuracy under FGSM / PGD for a list of eps
(:func:`funcnet.experiment.attack.attack_run`)."""

from funcnet.cli import common
from funcnet.errors import ConfigError

NAME = "attack"
HELP = "accuracy of a run under FGSM / PGD attacks, for a list of eps"
DESCRIPTION = (
    "Loads the newest intact checkpoint of a classifier's run folder, "
    "attacks its test split with FGSM and/or PGD in the L-infinity ball for "
    "each eps, and writes attack.md (eps | clean accuracy | accuracy under "
    "attack), results.json, accuracy_vs_eps.png and examples.png into --out. "
    "eps is in the data's own units (digits: pixel intensities 0-16), not "
    "standardised ones; adversarial inputs are clipped to the range the "
    "dataset states.")


def add_arguments(p) -> None:
  p.add_argument("--run", required=True, metavar="DIR", help="a run folder")
  p.add_argument("--method", default="fgsm,pgd", metavar="M",
                 help="fgsm, pgd, or a comma list (default fgsm,pgd)")
  p.add_argument("--eps", default="0.5,1,2,4,8", metavar="E1,E2,...",
                 help="L-infinity radii in the data's own units, >= 0 "
                 "(default 0.5,1,2,4,8)")
  p.add_argument("--steps", type=int, default=20, metavar="N",
                 help="PGD's steps (default 20)")
  p.add_argument("--step-size", type=float, metavar="R",
                 help="PGD's step as a multiple of eps (default 2.5/steps, "
                 "Madry et al.)")
  p.add_argument("--random-start", action="store_true", default=True,
                 help="PGD starts uniformly in the ball (the default)")
  p.add_argument("--no-random-start", dest="random_start",
                 action="store_false", help="PGD starts at the clean input")
  p.add_argument("--targeted", action="store_true",
                 help="push each example towards --target-class instead of "
                 "away from its label")
  p.add_argument("--target-class", metavar="K",
                 help="the class to push towards: an index, or 'next' "
                 "(each label + 1, the default); implies --targeted")
  p.add_argument("--source", default="manual", metavar="S",
                 help="the input gradient: manual (the hand-written "
                 "backward, default) or autodiff")
  p.add_argument("--examples", type=int, metavar="N",
                 help="attack the first N test examples (default: all)")
  p.add_argument("--seed", type=int, default=0, metavar="S",
                 help="PGD's random starts (default 0)")
  p.add_argument("--out", metavar="DIR",
                 help="where the report goes (default: DIR/attack)")
  common.import_flag(p)


def _eps(text: str) -> list:
  try:
    return [float(e) for e in text.split(",")]
  except ValueError:
    raise ConfigError(f"--eps {text!r}: expected numbers >= 0 separated by "
                      "commas, e.g. 0.5,1,2") from None


def _target(text):
  if text is None or text == "next":
    return text
  try:
    return int(text)
  except ValueError:
    raise ConfigError(f"--target-class {text!r}: expected a class index or "
                      "'next'") from None


def run(args) -> int:
  from funcnet.attacks import evaluate
  from funcnet.run import rundir
  methods = tuple(m.strip() for m in args.method.split(",") if m.strip())
  targeted = args.targeted or args.target_class is not None
  settings = evaluate.Settings(methods, args.steps, args.step_size,
                               args.random_start, targeted, args.source)
  eps = _eps(args.eps)
  evaluate.check(eps, settings)  # before anything is loaded
  target = _target(args.target_class)
  common.do_imports(args)
  common.start_jax(rundir.read_config(args.run, what="--run"))
  from funcnet.experiment.attack import attack_run, markdown
  record = attack_run(args.run, eps, settings, target=target,
                      examples=args.examples, out=args.out, seed=args.seed,
                      imports=args.imports)
  print(markdown(record), end="")
  return 0
