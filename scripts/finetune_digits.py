"""Fine-tuning with few labels on the digits: pre-train on 0-4, fine-tune on
5-9 with 5 labels per class, against training from scratch on those labels.

    python scripts/finetune_digits.py [--out DIR] [--seeds N] [--set key=value ...]

1. pre-train ``configs/digits_pretrain_0to4.toml`` (all training images of
   0-4) into ``DIR/pretrain``;
2. for each of ``N`` label draws (``data.seed`` and ``seed`` = 0..N-1; each
   draw picks other images and another head init):
   a. fine-tune ``configs/digits_finetune.toml``: that run's body frozen,
      a new 5-way head trained on the 25 labelled images of 5-9;
   b. the same with the body trained too, at 0.1 × the learning rate
      (``finetune.freeze_body = false``);
   c. the same model and settings from scratch (``finetune.from_run = ""``).

Every run goes through the library (``funcnet.config.load`` then
``funcnet.experiment.train_and_evaluate``). Accuracies are on all test
images of 5-9 (~180 of the draw's split), after the last epoch. ``--set``
applies to every run.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile

from funcnet import config, experiment

HERE = os.path.dirname(os.path.abspath(__file__))
PRETRAIN = os.path.join(HERE, "..", "configs", "digits_pretrain_0to4.toml")
FINETUNE = os.path.join(HERE, "..", "configs", "digits_finetune.toml")


def run(path, out, overrides):
  """The summary of one run of the config at ``path`` trained into ``out``."""
  cfg = config.load(path, list(overrides) + ["run.plots=false"])
  return experiment.train_and_evaluate(cfg, out, progress="never",
                                       log=lambda *a, **k: None)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", help="keep the run folders here (default: a temp "
                 "folder, removed)")
  p.add_argument("--seeds", type=int, default=5,
                 help="label draws to average over (default 5)")
  p.add_argument("--set", dest="overrides", action="append", default=[],
                 metavar="KEY=VALUE", help="override a key in every config")
  args = p.parse_args(argv)
  if args.seeds < 1:
    p.error("--seeds must be >= 1")
  out = args.out or tempfile.mkdtemp(prefix="finetune-digits-")
  pre_dir = os.path.join(out, "pretrain")
  arms = [("fine-tune, body frozen", "frozen", []),
          ("fine-tune, body at 0.1 x lr", "slow",
           ["finetune.freeze_body=false", "finetune.body_lr_scale=0.1"]),
          ("from scratch", "scratch", ['finetune.from_run=""'])]
  accs = {key: [] for _, key, _ in arms}
  try:
    pre = run(PRETRAIN, pre_dir, args.overrides)
    n_labels = None
    for s in range(args.seeds):
      for _, key, extra in arms:
        sets = [f"finetune.from_run={pre_dir!r}", f"data.seed={s}",
                f"seed={s}", *args.overrides, *extra]
        summary = run(FINETUNE, os.path.join(out, f"{key}-{s}"), sets)
        accs[key].append(summary["test_accuracy"])
        if n_labels is None:
          cfg = config.load(FINETUNE, sets)
          n_labels = (len(cfg["data"]["classes"])
                      * cfg["data"]["train_per_class"])
      print(f"draw {s}: " + ", ".join(f"{k} {accs[k][-1]:.3f}"
                                      for _, k, _ in arms),
            file=sys.stderr, flush=True)
  finally:
    if not args.out:
      shutil.rmtree(out, ignore_errors=True)
  print(f"pre-trained on digits 0-4: test accuracy {pre['test_accuracy']:.3f} "
        f"(5 classes)")
  print(f"digits 5-9 with {n_labels} labelled training images, "
        f"{args.seeds} draw(s):\n")
  print("| training | test accuracy, mean ± std | per draw |")
  print("| --- | ---: | --- |")
  for label, key, _ in arms:
    a = accs[key]
    sd = statistics.stdev(a) if len(a) > 1 else 0.0
    print(f"| {label} | {100 * statistics.mean(a):.1f}% ± {100 * sd:.1f} | "
          f"{' '.join(f'{100 * v:.1f}' for v in a)} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
