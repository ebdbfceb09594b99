"""``funcnet bench sweep``: a vectorised sweep against the same variants
trained one at a time, measured in one run.

For each case (a config and a number of variants ``V``) the grid is 4
learning rates (the config's, x3, /3, /10) times ``V / 4`` seeds, trained
for ``epochs`` epochs twice: by :func:`funcnet.sweep.run` (one vectorised
program per group) and with ``sequential=True`` (``train.fit`` per variant,
as ``funcnet train`` would, compilation included). Reported: both wall
times, their ratio, and training steps per second per variant. Both
include what a user waits for: building each variant, initialising it,
compiling, training and evaluating; the dataset is loaded once beforehand.
"""

import time
from typing import Sequence

from funcnet import config as config_lib, experiment, sweep
from funcnet.bench import model_steps

CASES = ("digits_mlp:16", "mnist1d_cnn:16", "digits_mlp:64", "mnist1d_cnn:64")


def _grid(cfg, n: int) -> dict:
  if n % 4:
    raise ValueError(f"{n} variants: expected a multiple of 4")
  lr = cfg["optimizer"]["learning_rate"]
  return {"optimizer.learning_rate": [lr * 3, lr, lr / 3, lr / 10],
          "seed": list(range(n // 4))}


def run(cases: Sequence[str] = CASES, epochs: int = 5, sequential: bool = True,
        log=print) -> list:
  """One record per case: ``config, variants, epochs, steps_per_epoch,
  vectorised_s, sequential_s, speedup, vectorised_steps_per_s,
  sequential_steps_per_s`` (steps per second per variant)."""
  records = []
  quiet = lambda *a, **k: None  # noqa: E731
  for case in cases:
    name, _, n = case.partition(":")
    cfg = config_lib.load(model_steps._config_path(name),
                          [f"train.epochs={epochs}", "run.plots=false"])
    grid = _grid(cfg, int(n))
    # Warm-up outside the timings: the data's first load (and its imports)
    # would otherwise be charged to whichever mode runs first.
    experiment.build_dataset(cfg)
    t0 = time.perf_counter()
    res = sweep.run(cfg, grid, log=quiet)
    vec = time.perf_counter() - t0
    steps = res.variants[0].history[0]["step"]
    rec = {"config": name, "variants": int(n), "epochs": epochs,
           "steps_per_epoch": steps, "groups": res.groups, "vectorised_s": vec,
           "vectorised_steps_per_s": steps * epochs / vec}
    if sequential:
      t0 = time.perf_counter()
      sweep.run(cfg, grid, sequential=True, log=quiet)
      seq = time.perf_counter() - t0
      rec.update(sequential_s=seq, speedup=seq / vec,
                 sequential_steps_per_s=steps * epochs / seq)
    log(f"{name} x {n}: vectorised {vec:.1f} s"
        + (f", sequential {rec['sequential_s']:.1f} s, {rec['speedup']:.1f}x"
           if sequential else ""))
    records.append(rec)
  return records


def format_table(records) -> str:
  lines = ["| config | variants | epochs | vectorised s | sequential s | speed-up "
           "| steps/s per variant, vectorised | sequential |",
           "|---|---|---|---|---|---|---|---|"]
  for r in records:
    has_seq = "sequential_s" in r
    seq = f"{r['sequential_s']:.1f}" if has_seq else ""
    speedup = f"{r['speedup']:.1f}x" if has_seq else ""
    seq_rate = f"{r['sequential_steps_per_s']:.0f}" if has_seq else ""
    lines.append(f"| {r['config']} | {r['variants']} | {r['epochs']} | "
                 f"{r['vectorised_s']:.1f} | {seq} | {speedup} | "
                 f"{r['vectorised_steps_per_s']:.0f} | {seq_rate} |")
  return "\n".join(lines)
