"""Steps per second of the scanned epoch against a Python loop of jitted steps.

A thin wrapper over :mod:`funcnet.bench.step_time` (the library behind ``funcnet
bench``): times one SGD step of a small ([64, 32, 10], batch 32) and a large
([784, 1024, 1024, 10], batch 512) sigmoid MLP, with the hand-written and
the ``jax.grad`` gradient, as a Python loop of jitted steps and as
``funcnet.train.fit``'s scanned epoch, against a square matmul on the same
device. A benchmark, not a test: it asserts nothing.

  python scripts/bench_training.py                 # small and large
  python scripts/bench_training.py --sizes small --repeats 3 --json out.json

Every ``funcnet bench steps`` flag works; see ``funcnet bench steps --help`` and
docs/performance.md.
"""

import sys

from funcnet import cli

if __name__ == "__main__":
  sys.exit(cli.main(["bench", "steps", *sys.argv[1:]]))
