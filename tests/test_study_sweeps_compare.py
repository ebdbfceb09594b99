"""``funcnet compare``, whose table is checked against the variants' own
``metrics.jsonl`` (read with ``json``). (The studies that used to live here
have their own files: tests/test_study_learning_rate_batch.py,
tests/test_study_architecture.py.)"""
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
