"""The MNIST-1D table: each model class trained from its config, beside the
benchmark's reference numbers (Greydanus 2020, "Scaling down deep
learning", default 4,000 / 1,000 split).

    python scripts/mnist1d_table.py [--out DIR] [--only cnn,gru] [--set key=value ...]

Each row is one run through the library (``funcnet.config.load`` then
``funcnet.experiment.train_and_evaluate``) into ``DIR/<model>`` (default: a
temporary folder, removed afterwards). Accuracy is the test accuracy after
the last epoch (never the best epoch, which would select on the test set);
wall time covers building the data and model, compiling, training and
checkpointing. ``--set`` applies to every run (``--set train.epochs=1`` for
a smoke test). Runs go one at a time: each uses every core.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

from funcnet import config, experiment

# (row, config, benchmark's reported accuracy or None, our target)
ROWS = [
    ("logistic", "mnist1d_logistic", 0.32, 0.32),
    ("mlp", "mnist1d_mlp", 0.68, 0.78),
    ("cnn", "mnist1d_cnn", 0.94, 0.98),
    ("gru", "mnist1d_gru", 0.91, 0.95),
    ("transformer", "mnist1d_transformer", None, 0.95),
]
HUMAN = 0.96
CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                       "configs")


def train_row(name, config_name, out, overrides):
  """``(test_accuracy, wall seconds, epochs)`` of one config trained into ``out``."""
  path = os.path.join(CONFIGS, config_name + ".toml")
  cfg = config.load(path, list(overrides) + ["run.plots=false"])
  t0 = time.perf_counter()
  summary = experiment.train_and_evaluate(cfg, os.path.join(out, name),
                                          progress="never",
                                          log=lambda *a, **k: None)
  return summary["test_accuracy"], time.perf_counter() - t0, summary["epochs"]


def pct(v):
  return "—" if v is None else f"{100 * v:.1f}%"


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", help="keep the run folders here (default: a temp "
                 "folder, removed)")
  p.add_argument("--only", help="comma-separated rows: " +
                 ",".join(r[0] for r in ROWS))
  p.add_argument("--set", dest="overrides", action="append", default=[],
                 metavar="KEY=VALUE", help="override a key in every config")
  args = p.parse_args(argv)
  only = set(args.only.split(",")) if args.only else None
  rows = [r for r in ROWS if only is None or r[0] in only]
  if only and len(rows) != len(only):
    p.error(f"--only: unknown row(s) {sorted(only - {r[0] for r in rows})}")
  out = args.out or tempfile.mkdtemp(prefix="mnist1d-table-")
  results = []
  try:
    for name, cfg_name, ref, target in rows:
      print(f"training {name} ({cfg_name}.toml) ...", file=sys.stderr,
            flush=True)
      acc, wall, epochs = train_row(name, cfg_name, out, args.overrides)
      results.append((name, cfg_name, acc, wall, epochs, ref, target))
  finally:
    if not args.out:
      shutil.rmtree(out, ignore_errors=True)
  print("| model | config | test accuracy | benchmark | target | met | epochs | wall time |")
  print("| --- | --- | ---: | ---: | ---: | :---: | ---: | ---: |")
  for name, cfg_name, acc, wall, epochs, ref, target in results:
    print(f"| {name} | `configs/{cfg_name}.toml` | {pct(acc)} | {pct(ref)} | "
          f"≥ {pct(target)} | {'yes' if acc >= target else 'no'} | {epochs} | "
          f"{wall:.0f} s |")
  print(f"| human | | | {pct(HUMAN)} | | | | |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
