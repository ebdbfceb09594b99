"""The ``architecture`` study: its decision on hand-made numbers, its choices
read from the validation split only, its numbers against the variants' run
folders and an independent forward pass, and one quick run."""

import json
import os
import types

import numpy as np
import pytest

from funcnet import data, experiment, studies
from funcnet.errors import ConfigError
from funcnet.studies import architecture, claims, report

P = dict(architecture.STUDY.defaults)


def _series(seeds=3, bad=False):
  """Hand-made per-seed numbers where every clause holds; ``bad`` makes the
  wider net worse than the narrower at depth 3 in one seed."""
  W, D = [32, 128], [0, 1, 2, 3]
  level = {0: 0.30, 1: 0.45, 2: 0.52, 3: 0.53}
  acc, tl = {}, {}
  for w in W:
    for d in D:
      acc[w, d] = [level[d] + (0.02 * (w == 128) if d else 0) + 0.001 * s
                   for s in range(seeds)]
      tl[w, d] = [1.5 / (d + 1) - 0.1 * (w == 128) * (d > 0) + 0.01 * s
                  for s in range(seeds)]
  if bad:
    acc[128, 3][1] = acc[32, 3][1] - 0.01
  return {"acc": acc, "train_loss": tl, "best_depth": {32: 3, 128: 2},
          "widths": W, "depths": D}


def test_decide_on_hand_made_numbers():
  good = {c["clause"]: c for c in architecture.decide(_series(), P)}
  assert all(c["holds"] is True for c in good.values()), good
  assert len(good) == 6
  bad = architecture.decide(_series(bad=True), P)
  width = claims.find(bad, "width helps")
  assert width["holds"] is False
  assert "depth 3 width 32->128: 0.010 ± 0.017" in width["evidence"]
  assert sum(c["holds"] is False for c in bad) == 1
  few = architecture.decide(_series(seeds=2), P)
  assert all(c["holds"] is None for c in few[:-1])
  assert few[-1]["holds"] is True    # the validation choice needs no spread


def test_first_layer_threshold():
  s = _series()
  s["acc"][32, 1] = [a - 0.06 for a in s["acc"][32, 1]]   # gain 0.09 < 0.10
  assert claims.find(architecture.decide(s, P), "a first")["holds"] is False


def test_later_change_threshold():
  s = _series()
  s["acc"][32, 3] = [a + 0.04 for a in s["acc"][32, 3]]   # 0.05 > 0.03
  assert claims.find(architecture.decide(s, P), "layers beyond")["holds"] is False


def _arch(width, depth, val, test):
  return {"width": width, "depth": depth, "hidden": [width] * depth,
          "val_accuracy": val, "test_accuracy": test}


def test_choose_reads_validation_only():
  archs = [_arch(0, 0, 0.3, 0.3), _arch(8, 1, 0.5, 0.9), _arch(8, 2, 0.6, 0.1),
           _arch(16, 1, float("nan"), 0.99), _arch(16, 2, 0.4, 0.2)]
  best_depth, best = architecture.choose(archs, [8, 16], [0, 1, 2])
  assert best_depth == {8: 2, 16: 2} and best == [8, 8]


def test_readme_table_and_titles_follow_the_numbers(tmp_path, monkeypatch):
  """The study's pipeline on hand-made measurements, one clause failing."""
  s = _series(bad=True)
  archs = []
  for (w, d), acc in s["acc"].items():
    if d == 0 and w != 32:
      continue
    a = {"hidden": [w] * d, "depth": d, "width": w if d else 0,
         "params": 10 * (d + 1) * w, "seeds": [{"test_accuracy": x, "train_loss": t}
                                               for x, t in zip(acc, s["train_loss"][w, d])],
         "seconds_per_step": 1e-4 * (d + 1), "group_wall_s": 1.0}
    for k in ("val_accuracy", "test_accuracy", "test_loss", "train_loss"):
      xs = acc if k != "train_loss" else s["train_loss"][w, d]
      a[k], a[f"{k}_std"] = float(np.mean(xs)), float(np.std(xs, ddof=1))
    archs.append(a)
  m = {"task": "digits", "architectures": archs, "best_depth": s["best_depth"],
       "best": [128, 128], "groups": 7, "sweep_wall_s": 1.0, "n_test": 9,
       "n_val": 8, "n_train": 7}
  task = data.load("digits").task
  monkeypatch.setattr(architecture, "_sweep", lambda out, p: types.SimpleNamespace(
      variants=[types.SimpleNamespace(task=task)]))
  monkeypatch.setattr(architecture, "_measure", lambda result, p: m)
  seen = {}

  def save(fig, out, name):
    seen[name] = [ax.get_title() for ax in fig.axes]
    report.plt.close(fig)
    return name
  monkeypatch.setattr(report, "save", save)
  studies.run("architecture", out=str(tmp_path),
              overrides=["widths=[32, 128]", "depths=[0, 1, 2, 3]"])
  readme = (tmp_path / "README.md").read_text()
  table = (tmp_path / "table.md").read_text()
  assert "**FAILS**: width helps at every depth" in readme
  assert "| width helps at every depth: each wider net has a higher test " \
         "accuracy (in every seed) | FAILS |" in table
  assert "NOT: width helps at every depth" in seen["architecture.png"]
  assert "later layers change test accuracy by a few points at most" in \
      seen["architecture.png"]


def test_rejects_a_malformed_grid(tmp_path):
  with pytest.raises(ConfigError, match="depths"):
    studies.run("architecture", out=str(tmp_path), quick=True,
                overrides=["depths=[2, 1]"])


# --- a tiny sweep -------------------------------------------------------------------

def _variants(sweep_dir):
  root = os.path.join(sweep_dir, "variants")
  return [os.path.join(root, n) for n in sorted(os.listdir(root))]


def _numpy_predict(params, x, stats):
  """Class predictions of a relu MLP in float64 numpy, from raw inputs
  standardised with the run's ``(mean, std)``."""
  mean, std = (np.asarray(a, np.float64) for a in stats)
  a = (np.asarray(x, np.float64) - mean) / std
  for i, layer in enumerate(params):
    a = a @ np.asarray(layer["W"], np.float64) + np.asarray(layer["b"], np.float64)
    if i < len(params) - 1:
      a = np.maximum(a, 0)
  return np.argmax(a, axis=1)


def test_numbers_from_its_run_folders(tmp_path, monkeypatch):
  """Width 3 at depths 0 and 1, two seeds, on digits: validation numbers
  against each variant's metrics.jsonl, test accuracy against a numpy
  forward pass of its params on the raw test split, parameter counts
  against the layer sizes; and the choices unchanged when the study is
  shown permuted test labels."""
  runs = {}
  measure = architecture._measure

  def keep(result, p):
    runs["result"] = result
    return measure(result, p)
  monkeypatch.setattr(architecture, "_measure", keep)
  r = studies.run("architecture", out=str(tmp_path), quick=True, overrides=[
      'data="digits"', "widths=[3]", "depths=[0, 1]", "seeds=[0, 1]",
      "epochs=2", "batch_size=64", "runs=true"])
  raw = data.load("digits", standardize=False)
  want = {}
  for run, v in zip(_variants(tmp_path / "sweep"), runs["result"].variants):
    with open(os.path.join(run, "config.json")) as f:
      cfg = json.load(f)
    with open(os.path.join(run, "metrics.jsonl")) as f:
      last = [json.loads(line) for line in f][-1]
    hidden = tuple(cfg["model"]["mlp"]["hidden"])
    assert hidden == tuple(v.assignment["model.mlp.hidden"])
    pred = _numpy_predict(v.params, raw.x_test, v.stats)
    want.setdefault(hidden, {})[cfg["seed"]] = (
        last["test_accuracy"], float(np.mean(pred == raw.y_test)))
  archs = {tuple(a["hidden"]): a for a in r["architectures"]}
  assert set(archs) == set(want) == {(), (3,)}
  for hidden, a in archs.items():
    sizes = [64, *hidden, 10]
    assert a["params"] == sum((i + 1) * o for i, o in zip(sizes, sizes[1:]))
    for s in a["seeds"]:
      val, test = want[hidden][s["seed"]]
      assert s["val_accuracy"] == pytest.approx(val, abs=1e-6)
      # float64 here, float32 there: an argmax tie may flip one example.
      assert s["test_accuracy"] == pytest.approx(test, abs=1.5 / len(raw.y_test))
  assert r["n_val"] == round(0.2 * len(raw.y_train))
  assert r["n_test"] == len(raw.y_test) and r["groups"] == 2

  build = experiment.build_dataset

  def permuted(cfg, stats=None):
    ds = build(cfg, stats)
    x, y = ds.info["test"]
    return ds._replace(info={**ds.info, "test": (x, np.roll(y, 1))})
  monkeypatch.setattr(experiment, "build_dataset", permuted)
  again = measure(runs["result"], r["params"])
  assert again["best_depth"] == r["best_depth"] and again["best"] == r["best"]
  for a, b in zip(again["architectures"], r["architectures"]):
    assert a["val_accuracy"] == b["val_accuracy"]
  assert [a["test_accuracy"] for a in again["architectures"]] != \
      [a["test_accuracy"] for a in r["architectures"]]


# --- the quick run ------------------------------------------------------------------

@pytest.mark.slow
def test_quick_run(tmp_path):
  r = studies.run("architecture", out=str(tmp_path), quick=True)
  for name in ("README.md", "table.md", "results.json", "architecture.png"):
    assert os.path.isfile(tmp_path / name), name
  archs = {a["depth"]: a for a in r["architectures"]}
  for a in archs.values():
    sizes = [40, *a["hidden"], 10]          # MNIST-1D: 40 inputs, 10 classes
    assert a["params"] == sum((i + 1) * o for i, o in zip(sizes, sizes[1:]))
  acc = [archs[d]["test_accuracy"] for d in range(4)]
  # A first hidden layer lifts logistic regression (~0.30) by > 10 points;
  # each layer still fits the training set better.
  assert acc[1] - acc[0] > 0.10, acc
  assert all(archs[d + 1]["train_loss"] < archs[d]["train_loss"] for d in range(3))
  assert all(c["holds"] is None for c in r["claims"][:-1])   # one seed
