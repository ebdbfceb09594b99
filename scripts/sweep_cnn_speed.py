"""The MNIST-1D CNN sweep against one variant at a time, warm compile cache.

16 variants (4 learning rates x 4 seeds, as ``funcnet bench sweep`` makes
them), ``EPOCHS`` epochs: ``funcnet.sweep.run(cfg, grid)`` against
``sequential=True``, both timed as whole calls after an untimed pass of
each has filled a temporary persistent compilation cache (so neither
compiles in its timed pass). Also prints the epoch times from the
variants' histories (seconds between consecutive epochs' records).

  PYTHONPATH=$PWD python scripts/sweep_cnn_speed.py [EPOCHS] [ROUNDS]
"""

import os
import sys
import tempfile
import time

os.environ.setdefault("FUNCNET_COMPILATION_CACHE",
                      tempfile.mkdtemp(prefix="sweepcnn-xla-"))

from funcnet import config as config_lib, experiment, sweep  # noqa: E402
from funcnet.bench import sweep_speed  # noqa: E402
from funcnet.run import compile_cache  # noqa: E402


def epoch_times(res) -> list:
  """Each epoch's seconds after the first, from variant 0's history."""
  h = res.variants[0].history
  t = [r.get("time", r.get("wall_s")) for r in h]
  return [b - a for a, b in zip(t, t[1:]) if a is not None and b is not None]


def main(epochs: int = 3, rounds: int = 1) -> None:
  print("cache", compile_cache.enable(True))
  cfg = config_lib.load("configs/mnist1d_cnn.toml",
                        [f"train.epochs={epochs}", "run.plots=false"])
  grid = sweep_speed._grid(cfg, 16)
  experiment.build_dataset(cfg)
  quiet = lambda *a, **k: None  # noqa: E731
  t0 = time.perf_counter()
  sweep.run(cfg, grid, log=quiet)
  print(f"untimed vectorised (cold): {time.perf_counter() - t0:.1f} s")
  t0 = time.perf_counter()
  sweep.run(cfg, {**grid, "seed": [0]}, sequential=True, log=quiet)
  print(f"untimed sequential, 4 variants (cold): {time.perf_counter() - t0:.1f} s")
  for r in range(rounds):
    t0 = time.perf_counter()
    vec = sweep.run(cfg, grid, log=quiet)
    tv = time.perf_counter() - t0
    t0 = time.perf_counter()
    seq = sweep.run(cfg, grid, sequential=True, log=quiet)
    ts = time.perf_counter() - t0
    ev, es = epoch_times(vec), epoch_times(seq)
    print(f"round {r}: vectorised {tv:.1f} s, sequential {ts:.1f} s, "
          f"speed-up {ts / tv:.2f}x; epoch after the first: vectorised "
          f"{min(ev) if ev else float('nan'):.3f} s (16 variants), one "
          f"variant alone {min(es) if es else float('nan'):.3f} s")
    print("  vec history keys", sorted(vec.variants[0].history[-1]))
    print("  final acc", [round(v.final.get("test_accuracy", float("nan")), 4)
                          for v in vec.variants][:4],
          [round(v.final.get("test_accuracy", float("nan")), 4)
           for v in seq.variants][:4])
  print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
  main(*map(int, sys.argv[1:]))
