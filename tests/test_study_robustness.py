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
  # The claim as clauses: 3 epochs leave those on the trained models
  # untested; the attack's own property is decided, as the numbers say.
  c = r["claims"]
  assert all(x["holds"] is None for x in c[:-1]) and "--quick" in c[0]["evidence"]
  assert c[-1]["holds"] is all(v["pgd_never_weaker"] for v in r["verdicts"].values())
  assert "funcnet study robustness --quick" in readme
  assert "**not tested**: mlp: adversarial training keeps" in readme
  assert r["figure_titles"]["accuracy_vs_eps.png"][0].startswith("untested: mlp")


def test_robustness_decide_follows_the_numbers():
  p = {**robustness.STUDY.defaults, "kinds": ["mlp"], "eps_list": [1.0, 2.0],
       "eps_mid": 1.0}
  def runs(adv_pgd, adv_clean=0.96, corr=(0.1, 0.2), pgd_fgsm=0.0):
    t = lambda clean, pgd, c: {"clean_accuracy": clean, "pgd": pgd,
                               "fgsm": [x - pgd_fgsm for x in pgd],
                               "saliency_input_corr": c}
    return {"mlp": {"standard": t(0.97, [0.1, 0.0], corr[0]),
                    "adversarial": t(adv_clean, [adv_pgd, 0.1], corr[1])}}
  holds = lambda **kw: [c["holds"] for c in robustness.decide(runs(**kw), p)]
  assert holds(adv_pgd=0.5) == [True, True, True, True]
  assert holds(adv_pgd=0.29)[0] is False                # below 3 x 0.1
  assert holds(adv_pgd=0.5, adv_clean=0.9)[1] is False  # 7 points lower
  assert holds(adv_pgd=0.5, corr=(0.2, 0.1))[2] is False
  assert holds(adv_pgd=0.5, pgd_fgsm=0.01)[3] is False  # PGD 1 point weaker
