"""``funcnet explain``: attribution maps, attention maps and the
model-randomisation sanity check for test examples of a trained run
(:func:`funcnet.explain.explain`), as PNGs, explain.md and results.json."""

import os

from funcnet.cli import common

NAME = "explain"
HELP = "explain a classifier's decisions on test examples (saliency, IG, ...)"
DESCRIPTION = (
    "Loads the newest intact checkpoint of a classification run with "
    "real-valued inputs and explains chosen test examples: the input "
    "gradient of the predicted class's logit (saliency), gradient x input, "
    "SmoothGrad, Integrated Gradients (baseline zeros: the training mean "
    "of standardised inputs; m doubled until the completeness gap is at "
    "most 1%), a Transformer's attention maps, and the model-randomisation "
    "sanity check (Adebayo et al. 2018). Maps are on the model's "
    "(standardised) inputs; pictures show the inputs in the data's units. "
    "Writes attributions.png, attention_<i>.png, sanity.png, explain.md "
    "and results.json into --out.")


def add_arguments(p) -> None:
  p.add_argument("--run", required=True, metavar="DIR", help="a run folder")
  p.add_argument("--method", metavar="M,M", default=None,
                 help="comma-separated: saliency, grad_x_input, smoothgrad, "
                 "ig, attention, sanity (default: all that apply)")
  p.add_argument("--examples", default="8", metavar="N|I,J",
                 help="the first N test examples, or their indices "
                 "(default 8)")
  p.add_argument("--source", default="manual", metavar="manual|autodiff",
                 help="the input gradient: the kind's hand-written backward "
                 "or jax.grad (default manual)")
  p.add_argument("--steps", type=int, default=None, metavar="M",
                 help="Integrated Gradients' starting step count (default 50)")
  p.add_argument("--rule", default="gausslegendre",
                 metavar="gausslegendre|trapezoid",
                 help="Integrated Gradients' quadrature (default "
                 "gausslegendre)")
  p.add_argument("--seed", type=int, default=0, metavar="S",
                 help="the key of SmoothGrad's noise and of the sanity "
                 "check's re-initialisation (default 0)")
  p.add_argument("--out", metavar="DIR",
                 help="where to write (default RUN/explain)")


def parse_examples(text: str, n_test: int) -> list:
  """``"8"`` -> the first 8 test indices; ``"3,17"`` -> those; checked."""
  from funcnet.errors import ConfigError
  parts = [t.strip() for t in str(text).split(",") if t.strip()]
  try:
    values = [int(t) for t in parts]
  except ValueError:
    values = []
  if not values:
    raise ConfigError(f"--examples {text!r}; expected a count N or "
                      "comma-separated test indices")
  if len(parts) == 1 and "," not in str(text):
    if values[0] < 1:
      raise ConfigError(f"--examples {values[0]}; expected at least 1")
    return list(range(min(values[0], n_test)))
  bad = [v for v in values if not 0 <= v < n_test]
  if bad:
    raise ConfigError(f"--examples index {bad[0]} is outside the test split "
                      f"of {n_test} examples; expected 0..{n_test - 1}")
  return values


def _check_task(name: str, run: str) -> None:
  """A one-line ConfigError unless the task has classes and real inputs."""
  from funcnet import tasks
  from funcnet.errors import ConfigError
  task = tasks.get(name)
  if not task.classes or task.inputs != "features":
    raise ConfigError(
        f"--run {run!r} is a {name} run whose inputs are {task.inputs}; "
        "expected a classification run with real-valued inputs to explain")


def run(args) -> int:
  from funcnet.run import rundir
  from funcnet.explain.report import parse_methods
  from funcnet.explain.methods import check_source
  parse_methods(args.method)             # the names, before loading anything
  check_source(args.source)
  from funcnet.models import registry
  cfg = rundir.read_config(args.run, what="--run")
  kind = registry.find(cfg["model"]["kind"])
  if kind is not None and kind.task is not None:   # refused before loading
    _check_task(kind.task, args.run)
  common.start_jax(cfg)
  import numpy as np
  from funcnet import explain
  from funcnet.experiment.loaded import load_run
  loaded = load_run(args.run)
  methods = parse_methods(args.method, loaded.model)
  ds = loaded.dataset
  _check_task(ds.task, args.run)
  indices = parse_examples(args.examples, len(ds.y_test))
  x = np.asarray(ds.x_test)[indices]
  y = np.asarray(ds.y_test)[indices]
  out = args.out or os.path.join(args.run, "explain")
  steps = explain.methods.STEPS if args.steps is None else args.steps
  settings = explain.Settings(methods, args.source, steps, args.rule,
                              args.seed)
  res = explain.explain(loaded.model, loaded.params, x, y, indices, out,
                        settings, stats=loaded.stats, run=args.run)
  with open(os.path.join(out, "explain.md")) as f:
    print(f.read(), end="")
  common.log(f"wrote {', '.join(res['files'])} into {out}")
  return 0
