"""Manual backprop vs jax.grad on a config's model and data, as a table.

  python scripts/compare_gradients.py --config configs/compare_grads.toml [--set k=v ...]

Prints, per layer, the float64 gradient check (manual vs autodiff vs finite
differences) on a batch of the config's data, then trains the model twice
from the same seed (manual and autodiff gradients, float32) and prints how
far apart the final params are.
"""

import argparse

import jax
import numpy as np

from funcnet import config, experiment, gradcheck


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/compare_grads.toml")
  p.add_argument("--set", dest="overrides", action="append", default=[])
  p.add_argument("--batch", type=int, default=16)
  args = p.parse_args()
  cfg = config.load(args.config, args.overrides)
  setup = experiment.Setup(cfg)
  if setup.model.kind != "mlp":
    raise SystemExit("compare_gradients: the hand-written backprop covers "
                     f"MLPs; {args.config} builds a {setup.model.kind}")
  ds = setup.ds
  idx = np.random.default_rng(cfg["seed"]).choice(len(ds.y_train), args.batch,
                                                  replace=False)
  params, _ = setup.init_state()
  print(gradcheck.compare(setup.model, setup.loss, params, ds.x_train[idx],
                          ds.y_train[idx], key=jax.random.key(cfg["seed"])))
  result = setup.fit(grads="manual")
  print(f"manual   final test accuracy {result.history[-1].get('test_accuracy')}")
  experiment.compare_training(setup, result.params)


if __name__ == "__main__":
  main()
