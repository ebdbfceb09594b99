"""The ``robustness`` study: run quick, its verdicts re-derived here from the
numbers it reports, and the properties any attack must have (PGD never
weaker than FGSM, accuracy falling as eps grows) asserted on them."""

import json
import os

import numpy as np

from funcnet import studies
from funcnet.studies import robustness


def test_quick_robustness_study(tmp_path):
  r = studies.run("robustness", out=str(tmp_path), quick=True)
  for name in ("README.md", "results.json", "table.md", "accuracy_vs_eps.png",
               "saliency.png"):
    assert os.path.isfile(tmp_path / name), name
  with open(tmp_path / "results.json") as f:
    assert "verdicts" in json.dumps(json.load(f))
  p = robustness.STUDY.quick
  mid = p["eps_list"].index(p["eps_mid"])
  for kind, runs in r["runs"].items():
    s, a = runs["standard"], runs["adversarial"]
    for t in (s, a):
      fgsm, pgd = np.array(t["fgsm"]), np.array(t["pgd"])
      assert len(pgd) == len(p["eps_list"])
      assert np.all(pgd <= fgsm + 0.005)            # PGD never weaker
      assert np.all(np.diff(pgd) <= 1e-9)           # falls as eps grows
      assert pgd[0] <= t["clean_accuracy"] + 1e-9
    v = r["verdicts"][kind]                         # decided by the numbers
    assert v["keeps_3x"] == (a["pgd"][mid] >= 3 * s["pgd"][mid]
                             and a["pgd"][mid] > 0)
    assert v["clean_within_3_points"] == (
        abs(s["clean_accuracy"] - a["clean_accuracy"]) <= 0.03)
    assert v["saliency_more_like_input"] == (
        a["saliency_input_corr"] > s["saliency_input_corr"])
    # Adversarial training does something even in the quick version.
    assert a["pgd"][mid] > s["pgd"][mid]
  readme = (tmp_path / "README.md").read_text()
  assert "Measured" in readme and "eps" in readme
