"""Manual backprop vs jax.grad on a config's model and data, as a table.

  python scripts/compare_gradients.py --config configs/compare_grads.toml [--set k=v ...]

Prints, per layer, the float64 gradient check (manual vs autodiff vs finite
differences) on a batch of the config's data, then trains the model twice
from the same seed (manual and autodiff gradients, float32) and prints how
far apart the final params are.
"""

import argparse

from funcnet import config, experiment
from funcnet.errors import FuncnetError


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/compare_grads.toml")
  p.add_argument("--set", dest="overrides", action="append", default=[])
  p.add_argument("--batch", type=int, default=16)
  args = p.parse_args()
  try:
    cfg = config.load(args.config, args.overrides + ["train.grads=manual"])
    report, heading = experiment.gradcheck(cfg, args.batch)
  except FuncnetError as e:  # e.g. a model kind without a hand-written backward
    raise SystemExit(f"compare_gradients: {e}") from None
  print(heading)
  print(report)
  setup = experiment.Setup(cfg)
  result = setup.fit(grads="manual")
  print(f"manual   final test accuracy {result.history[-1].get('test_accuracy')}")
  experiment.compare_training(setup, result.params)


if __name__ == "__main__":
  main()
