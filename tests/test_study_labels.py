"""The ``labels`` study, quick: its files, and its means, deviations and
label counts re-derived here from the numbers it reports."""

import json
import os

import numpy as np

from funcnet import studies
from funcnet.studies import labels


def test_quick_labels_study(tmp_path):
  r = studies.run("labels", out=str(tmp_path), quick=True)
  for name in ("README.md", "results.json", "table.md", "accuracy.png"):
    assert os.path.isfile(tmp_path / name), name
  with open(tmp_path / "results.json") as f:
    saved = json.load(f)["datasets"]
  p = labels.STUDY.quick
  for name in p["data"]:
    methods = saved[name]["methods"]
    assert set(methods) == {"scratch", *labels.OBJECTIVES}
    for method, by in methods.items():
      for f, s in by.items():
        a = np.array(s["accuracies"])
        assert len(a) == len(p["seeds"]) and ((0 <= a) & (a <= 1)).all()
        assert np.isclose(s["mean"], a.mean())
        # Every method read the same labels: k classes x round(f m / k).
        assert s["n_labels"] == methods["scratch"][f]["n_labels"]
        assert s["n_labels"] % 10 == 0 and s["n_labels"] < 0.1 * 1797
    for o in labels.OBJECTIVES:  # one pretrained run per objective and seed
      assert len(saved[name]["pretrain_test_loss"][o]) == len(p["seeds"])
      assert os.path.isdir(tmp_path / "runs" / f"{name}-{o}-0")
  assert r["datasets"].keys() == saved.keys()
  # One clause per dataset, objective and share; one seed decides none.
  assert len(r["claims"]) == len(p["data"]) * len(labels.OBJECTIVES) * len(
      p["fractions"])
  assert all(c["holds"] is None for c in r["claims"])
  # With 3 seeds the clauses follow the numbers: +6 points holds, +4 fails.
  fake = {"d": {"methods": {
      "scratch": {"0.05": {"mean": 0.5, "std": 0.01}},
      "masked": {"0.05": {"mean": 0.56, "std": 0.01}},
      "contrastive": {"0.05": {"mean": 0.54, "std": 0.01}}}}}
  decided = labels.decide(fake, {**labels.STUDY.defaults, "seeds": [0, 1, 2]})
  assert [c["holds"] for c in decided] == [True, False]
  assert "Measured" in (tmp_path / "README.md").read_text()
