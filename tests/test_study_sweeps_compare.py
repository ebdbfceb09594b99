"""The ``learning-rate-batch`` study, run quick
with its sweep written out, its claims asserted on numbers recomputed here
from the variants' own ``metrics.jsonl`` (read with ``json``); and
``funcnet compare``, whose table is checked against the same files."""

import json
import math
import os
import re
import subprocess
import sys

import pytest

from funcnet import config, studies, sweep
from funcnet.run import compare
from funcnet.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
ENV.pop("JAX_ENABLE_X64", None)


def _files(out, names):
  missing = [n for n in names if not os.path.isfile(os.path.join(out, n))]
  assert not missing, f"missing in {out}: {missing}"


def _variants(sweep_dir):
  """Every variant folder's config and metrics records, read with json."""
  root = os.path.join(sweep_dir, "variants")
  out = []
  for name in sorted(os.listdir(root)):
    with open(os.path.join(root, name, "config.json")) as f:
      cfg = json.load(f)
    with open(os.path.join(root, name, "metrics.jsonl")) as f:
      records = [json.loads(line) for line in f]
    with open(os.path.join(root, name, "summary.json")) as f:
      status = json.load(f)["status"]
    out.append((cfg, records, status))
  return out


def _final_accuracy(records, status):
  """None when diverged, else the last record's test accuracy."""
  if status == "diverged":
    return None
  return [r for r in records if "test_accuracy" in r][-1]["test_accuracy"]


# --- learning-rate-batch ---------------------------------------------------------

@pytest.mark.slow
def test_learning_rate_batch_study(tmp_path):
  # Two batch sizes (two compiled programs): 10-15 s on the 2-core machine.
  r = studies.run("learning-rate-batch", out=str(tmp_path), quick=True,
                  overrides=["runs=true"])
  p = r["params"]
  _files(tmp_path, ["README.md", "table.md", "results.json", "heatmaps.png",
                    "curves.png"])
  bs, lrs, seeds = p["batch_sizes"], p["learning_rates"], p["seeds"]
  assert len(bs) >= 2 and bs[-1] >= 8 * bs[0]

  # Recompute the grid from the run folders, independently of the study.
  runs = _variants(tmp_path / "sweep")
  assert len(runs) == len(bs) * len(lrs) * len(seeds)
  acc, first_step = {}, {}
  for cfg, records, status in runs:
    cell = (cfg["train"]["batch_size"], cfg["optimizer"]["learning_rate"])
    assert cfg["optimizer"]["name"] == "sgd" and cfg["train"]["epochs"] == p["epochs"]
    acc.setdefault(cell, []).append(_final_accuracy(records, status))
    hit = [rec["step"] for rec in records
           if rec.get("test_accuracy") is not None and rec["test_accuracy"] >= p["target"]]
    first_step.setdefault(cell, []).append(hit[0] if hit and status != "diverged"
                                           else None)
    # n_train // batch steps per epoch (digits: 1437 training examples).
    assert records[0]["step"] == 1437 // cell[0]
  for i, b in enumerate(bs):
    for j, lr in enumerate(lrs):
      xs = acc[b, lr]
      want = None if None in xs else sum(xs) / len(xs)
      got = r["final_test_accuracy"][i][j]
      assert (got is None) == (want is None), (b, lr)
      if want is not None:
        assert abs(got - want) < 1e-6
      steps = first_step[b, lr]
      want = None if None in steps else sum(steps) / len(steps)
      assert r["steps_to_target"][i][j] == want, (b, lr)

  best = {b: max((a, lr) for lr in lrs if None not in acc[b, lr]
                 for a in [sum(acc[b, lr]) / len(acc[b, lr])])[1] for b in bs}
  assert r["best_lr"] == [best[b] for b in bs]
  needed = {b: next(lr for lr in lrs if None not in first_step[b, lr]) for b in bs}
  assert r["lr_needed"] == [needed[b] for b in bs]

  # The claim: the best rate, and the smallest rate reaching the target,
  # grow with the batch (the linear rule predicts x bs[-1] / bs[0] = 16).
  assert best[bs[-1]] > best[bs[0]]
  assert needed[bs[-1]] >= 4 * needed[bs[0]]
  # With its rate tuned, the larger batch reaches the target in fewer steps.
  i_small, i_large = 0, len(bs) - 1
  s_small = r["steps_to_target"][i_small][lrs.index(best[bs[0]])]
  s_large = r["steps_to_target"][i_large][lrs.index(best[bs[-1]])]
  assert s_small is not None and s_large is not None and s_large < s_small

  # Too large a rate: above the best, the largest whose loss stayed finite
  # ends clearly worse, and the next diverges (every seed's loss went NaN/inf).
  c = r["curves"]
  assert c["batch"] == p["curve_batch"]
  good, large, div = (c["lrs"][k] for k in ("good", "too_large", "diverging"))
  assert good < large < div
  mean = lambda cell: sum(acc[cell]) / len(acc[cell])
  assert mean((c["batch"], large)) < mean((c["batch"], good)) - 0.03
  assert all(a is None for a in acc[c["batch"], div])
  assert c["status"]["diverging"] == "diverged"
  assert c["lrs"]["too_small"] < good
  assert mean((c["batch"], c["lrs"]["too_small"])) < mean((c["batch"], good)) - 0.03


def _fake_variant(index, b, lr, seed, accs, group, diverged=False):
  """A sweep variant of the learning-rate-batch grid with the given test
  accuracy per epoch (1280 examples: 160 steps an epoch at batch 8; a
  second an epoch)."""
  steps = 1280 // b
  history = [{"epoch": e + 1, "step": steps * (e + 1), "time": float(e + 1),
              "train_loss": 1.0, "test_loss": 1.0 - a, "test_accuracy": a}
             for e, a in enumerate(accs)]
  if diverged:
    history[-1] = {"epoch": len(accs), "step": steps * len(accs),
                   "time": float(len(accs)), "train_loss": float("nan")}
  return sweep.VariantResult(
      index, {"train.batch_size": b, "optimizer.learning_rate": lr,
              "seed": seed}, {}, "diverged" if diverged else "done",
      "non-finite loss" if diverged else None, history, None, group, 3.0,
      "classification")


def test_learning_rate_batch_measures_from_the_runs_records():
  """The study's derived numbers (best rate, rate needed, largest finite
  rate, scaling slope) recomputed here from per-run records made up so
  that they differ: at batch 8 the best rate (1.0) is not the rate needed
  (0.1), and at batch 128 every rate diverges."""
  from funcnet.studies import learning_rate_batch as lrb
  bs, lrs, seeds, target = [8, 32, 128], [0.01, 0.1, 1.0], [0, 1], 0.9
  accs = {(8, 0.01): [[0.3, 0.5], [0.4, 0.6]],
          (8, 0.1): [[0.6, 0.91], [0.7, 0.93]],
          (8, 1.0): [[0.95, 0.97], [0.92, 0.96]],
          (32, 0.01): [[0.2, 0.3], [0.2, 0.4]],
          (32, 0.1): [[0.5, 0.6], [0.5, 0.7]],
          (32, 1.0): [[0.8, 0.9], [0.85, 0.95]]}
  variants = []
  for g, b in enumerate(bs):
    for lr in lrs:
      for seed in seeds:
        diverged = b == 128
        a = accs.get((b, lr), [[0.1, 0.1]] * 2)[seed]
        variants.append(_fake_variant(len(variants), b, lr, seed, a, g,
                                      diverged))
  result = sweep.SweepResult(variants, ["train.batch_size",
                                        "optimizer.learning_rate", "seed"],
                             "test_accuracy", True, 3, 9.0)
  m = lrb._measure(result, {"batch_sizes": bs, "learning_rates": lrs,
                            "seeds": seeds, "target": target})
  mean = lambda cell: sum(a[-1] for a in accs[cell]) / 2  # noqa: E731
  for i, b in enumerate(bs[:2]):
    for j, lr in enumerate(lrs):
      assert m["final_test_accuracy"][i][j] == pytest.approx(mean((b, lr)))
  assert m["final_test_accuracy"][2] == [None, None, None]
  assert m["seeds_diverged"][2] == [2, 2, 2]
  # best: the highest mean final accuracy; None where every rate diverged
  assert m["best_lr"] == [1.0, 1.0, None]
  assert m["best_test_accuracy"] == [pytest.approx(0.965),
                                     pytest.approx(0.925), None]
  # needed: the smallest rate whose every seed reaches the target
  assert m["lr_needed"] == [0.1, 1.0, None]
  assert m["steps_to_target"][0][1] == 320.0  # both seeds at epoch 2
  assert m["steps_to_target"][0][2] == 160.0  # both at epoch 1
  assert m["steps_to_target"][1][2] == 80.0
  assert m["largest_finite_lr"] == [1.0, 1.0, None]
  # slope of log(rate needed) against log(batch), over the batches with one
  slope = (math.log(1.0) - math.log(0.1)) / (math.log(32) - math.log(8))
  assert m["scaling_slope"] == pytest.approx(slope, rel=1e-12)
  assert m["steps_per_epoch"] == [160, 40, 10]
  # a second an epoch, shared by the group's 6 variants
  assert m["seconds_per_step"] == [pytest.approx(1 / 160 / 6),
                                   pytest.approx(1 / 40 / 6),
                                   pytest.approx(1 / 10 / 6)]


def test_learning_rate_batch_rejects_a_curve_batch_off_the_grid(tmp_path):
  with pytest.raises(ConfigError, match="curve_batch"):
    studies.run("learning-rate-batch", out=str(tmp_path), quick=True,
                overrides=["curve_batch=7"])


# --- funcnet compare -------------------------------------------------------------

def _number(cell):
  return float("nan") if cell == "nan" else float(cell)


def _rows(md):
  """The compare.md table as {path: {column: cell}}."""
  lines = [line for line in md.splitlines() if line.startswith("|")]
  header = [h.strip() for h in lines[0].strip("|").split("|")]
  rows = {}
  for line in lines[2:]:
    cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
    row = dict(zip(header, cells))
    rows[row["path"].strip("`")] = row
  return rows


def test_compare_two_sweep_variants(tmp_path):
  cfg = config.load(None, ["train.epochs=2", "model.mlp.hidden=[16]",
                           'optimizer.name="sgd"', "run.plots=false"])
  sweep.run(cfg, {"optimizer.learning_rate": [0.1, 0.01]}, out=str(tmp_path / "sw"),
            log=lambda *a: None)
  runs = [str(tmp_path / "sw" / "variants" / n) for n in ("000", "001")]
  out = tmp_path / "cmp"
  result = compare.compare(runs, str(out))
  _files(out, ["compare.png", "compare.md"])
  assert os.path.getsize(out / "compare.png") > 10_000

  rows = _rows((out / "compare.md").read_text())
  assert set(rows) == set(runs)
  for run in runs:
    with open(os.path.join(run, "metrics.jsonl")) as f:
      records = [json.loads(line) for line in f]
    last = records[-1]
    row = rows[run]
    assert int(row["epochs"]) == last["epoch"] == 2
    assert row["status"] == "done"
    assert math.isclose(_number(row["final train loss"]), last["train_loss"], rel_tol=1e-5)
    for metric in ("test_accuracy", "test_loss"):
      assert math.isclose(_number(row[f"final {metric}"]), last[metric], rel_tol=1e-5)
  assert "learning_rate=0.1" in rows[runs[0]]["run"]
  assert len(result["runs"]) == 2


def test_compare_refuses_a_folder_without_metrics(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(ConfigError, match="no metrics"):
    compare.compare([str(tmp_path / "empty")], str(tmp_path / "cmp"))
  assert not (tmp_path / "cmp").exists()


def test_compare_cli_missing_run_exits_2(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "funcnet.cli", "compare", str(tmp_path / "nope"),
       str(tmp_path / "nope2"), "--out", str(tmp_path / "cmp")],
      cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("funcnet: error:"), proc.stderr
  assert "nope" in lines[0]
  assert not (tmp_path / "cmp").exists()
