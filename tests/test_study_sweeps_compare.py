"""The ``architecture`` study, run quick with its sweep written out, its
claims asserted on numbers recomputed here from the variants' own
``metrics.jsonl`` (read with ``json``); and ``funcnet compare``, whose table
is checked against the same files. (``learning-rate-batch``: its own
tests/test_study_learning_rate_batch.py.)"""

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


# --- architecture ----------------------------------------------------------------

def _param_count(sizes):
  """A dense layer n_in -> n_out holds (n_in + 1) n_out parameters."""
  return sum((a + 1) * b for a, b in zip(sizes, sizes[1:]))


@pytest.mark.slow
def test_architecture_study(tmp_path):
  # Four architectures (four compiled programs): 15-25 s on the 2-core machine.
  r = studies.run("architecture", out=str(tmp_path), quick=True,
                  overrides=["runs=true"])
  p = r["params"]
  _files(tmp_path, ["README.md", "table.md", "results.json", "architecture.png"])
  assert p["data"] == "mnist1d" and {0, 1, 2, 3} <= set(p["depths"])

  # Parameter counts against the formula; MNIST-1D: 40 inputs, 10 classes.
  archs = {(a["width"], a["depth"]): a for a in r["architectures"]}
  for a in r["architectures"]:
    assert a["params"] == _param_count([40] + a["hidden"] + [10]), a["hidden"]
  assert archs[0, 0]["params"] == 410

  # Accuracies recomputed from the run folders.
  acc, loss = {}, {}
  for cfg, records, status in _variants(tmp_path / "sweep"):
    key = json.dumps(cfg["model"]["mlp"]["hidden"])
    acc.setdefault(key, []).append(_final_accuracy(records, status))
    loss.setdefault(key, []).append(records[-1]["train_loss"])
  for a in r["architectures"]:
    xs = acc[json.dumps(a["hidden"])]
    assert abs(a["test_accuracy"] - sum(xs) / len(xs)) < 1e-6

  w = p["widths"][0]

  def test_acc(d):
    xs = acc[json.dumps([w] * d)]
    return sum(xs) / len(xs)

  def train_loss(d):
    xs = loss[json.dumps([w] * d)]
    return sum(xs) / len(xs)

  gain = [test_acc(d + 1) - test_acc(d) for d in range(3)]
  # The first hidden layer lifts logistic regression (0.29-0.31) by more
  # than ten points; the second still helps, less; the third stops helping.
  assert gain[0] > 0.10, gain
  assert 0.02 < gain[1] < gain[0], gain
  assert gain[2] < 0.04 and gain[2] < gain[1], gain
  # Not for want of capacity: each layer still fits the training set better.
  assert train_loss(3) < train_loss(2) < train_loss(1) < train_loss(0)
  assert all(a["seconds_per_step"] > 0 for a in r["architectures"])


# --- funcnet compare -------------------------------------------------------------

def test_architecture_study_numbers_from_its_run_folders(tmp_path):
  """Fast (the slow test above checks the claim): width 3 at depths 0 and
  1, two seeds, on digits; each number recomputed from the variants'
  run folders and the layer sizes."""
  r = studies.run("architecture", out=str(tmp_path), quick=True, overrides=[
      'data="digits"', "widths=[3]", "depths=[0, 1]", "seeds=[0, 1]",
      "epochs=2", "batch_size=64", "runs=true"])
  acc, loss, train_loss = {}, {}, {}
  for cfg, records, status in _variants(tmp_path / "sweep"):
    hidden = tuple(cfg["model"]["mlp"]["hidden"])
    assert status == "done"
    acc.setdefault(hidden, []).append(_final_accuracy(records, status))
    last = [x for x in records if "test_loss" in x][-1]
    loss.setdefault(hidden, []).append(last["test_loss"])
    train_loss.setdefault(hidden, []).append(records[-1]["train_loss"])
  assert set(acc) == {(), (3,)}
  archs = {tuple(a["hidden"]): a for a in r["architectures"]}
  for hidden, a in archs.items():
    sizes = [64, *hidden, 10]
    assert a["params"] == sum((i + 1) * o for i, o in zip(sizes, sizes[1:]))
    assert a["depth"] == len(hidden) and a["width"] == (hidden or (0,))[0]
    mean = sum(acc[hidden]) / 2
    assert a["test_accuracy"] == pytest.approx(mean, abs=1e-6)
    assert a["test_accuracy_std"] == pytest.approx(
        abs(acc[hidden][0] - acc[hidden][1]) / 2, abs=1e-6)
    assert a["test_loss"] == pytest.approx(sum(loss[hidden]) / 2, rel=1e-6)
    assert a["train_loss"] == pytest.approx(sum(train_loss[hidden]) / 2,
                                            rel=1e-6)
  assert len(r["by_width"]) == 1
  for line, w in zip(r["by_width"], [3]):
    got = [archs[()]["test_accuracy"], archs[(w,)]["test_accuracy"]]
    assert line["width"] == w and line["test_accuracy"] == got
    assert line["gains"] == [got[1] - got[0]]
    assert line["best_depth"] == (1 if got[1] > got[0] else 0)
  assert r["groups"] == 2  # one program per architecture


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
