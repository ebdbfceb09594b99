"""The ``robustness`` study: run quick (its rate chosen on validation before
the test split is read), and :func:`robustness.decide` fed hand-made
numbers over three seeds, one perturbed so that a clause fails."""

import json
import os

import numpy as np
import pytest

from funcnet import studies
from funcnet.studies import claims as claims_lib
from funcnet.studies import robustness


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  """One --quick run, logging the order of the rate choice and the reads of
  the test split."""
  out = tmp_path_factory.mktemp("robustness")
  log = []
  choose, test_split = robustness.choose, robustness._test_split
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(robustness, "choose",
               lambda *a: log.append("choose") or choose(*a))
    mp.setattr(robustness, "_test_split",
               lambda *a: log.append("test") or test_split(*a))
    r = studies.run("robustness", out=str(out), quick=True)
  return out, r, log


def test_quick_robustness_study(quick):
  out, r, _ = quick
  for name in ("README.md", "results.json", "table.md", "accuracy_vs_eps.png",
               "saliency.png"):
    assert os.path.isfile(out / name), name
  with open(out / "results.json") as f:
    assert "selection" in json.load(f)
  p = robustness.STUDY.quick
  mid = p["eps_list"].index(p["eps_mid"])
  for kind, runs in r["runs"].items():
    s, a = runs["standard"], runs["adversarial"]
    for t in (s, a):
      assert len(t["pgd"]) == len(p["seeds"])
      for fgsm, pgd, clean in zip(t["fgsm"], t["pgd"], t["clean_accuracy"]):
        fgsm, pgd = np.array(fgsm), np.array(pgd)
        assert len(pgd) == len(p["eps_list"])
        assert np.all(pgd <= fgsm + 0.005)          # PGD never weaker
        assert np.all(np.diff(pgd) <= 1e-9)         # falls as eps grows
        assert pgd[0] <= clean + 1e-9
      # digits' 1437 training examples, a fifth held out; its 360 test ones.
      assert (t["n_val"], t["n_test"]) == (round(0.2 * 1437), 360)
    # Adversarial training does something even in the quick version.
    assert a["pgd"][0][mid] > s["pgd"][0][mid]
    sel = r["selection"][kind]                      # the best mean validation
    score = np.mean([sel["val_accuracy"][t] for t in robustness.TRAININGS], 0)
    assert sel["chosen"] == sel["rates"][int(np.argmax(score))]
  readme = (out / "README.md").read_text()
  # One seed and 3 epochs leave the clauses on the trained models untested;
  # the attack's own property is decided, as the numbers say.
  c = r["claims"]
  assert all(x["holds"] is None for x in c[:-1]) and "1 seed(s) < 3" in c[0]["evidence"]
  worst = max(pg - fg for runs in r["runs"].values() for t in runs.values()
              for ps, fs in zip(t["pgd"], t["fgsm"]) for pg, fg in zip(ps, fs))
  assert c[-1]["holds"] is (worst <= 0.005)
  assert "funcnet study robustness --quick" in readme
  assert "**not tested**: mlp: adversarial training keeps" in readme
  assert r["figure_titles"]["accuracy_vs_eps.png"][0].startswith("untested: mlp")


def test_robustness_chooses_on_validation_before_reading_test(quick):
  """The rate is chosen (once per kind) before the test split is first
  read, and the test split is read once per final run only (2 trainings x
  seeds), not for the grid's other rates."""
  _, r, log = quick
  p = robustness.STUDY.quick
  assert log.index("test") > max(i for i, e in enumerate(log) if e == "choose")
  assert log.count("choose") == len(p["kinds"])
  assert log.count("test") == len(p["kinds"]) * 2 * len(p["seeds"])


def test_robustness_choose_is_the_best_mean_validation_accuracy():
  val = {"standard": [0.90, 0.95, 0.97], "adversarial": [0.80, 0.90, 0.82]}
  assert robustness.choose(val, [1e-3, 3e-3, 1e-2]) == 1   # means .85 .925 .895
  val = {"standard": [0.9, 0.9], "adversarial": [0.8, 0.8]}
  assert robustness.choose(val, [1e-3, 3e-3]) == 0          # a tie: the first


def _runs(adv_pgd, adv_clean, corr):
  """One kind over 3 seeds: the standard model at PGD 0.1 (eps_mid), clean
  0.97, saliency corr 0.1; the adversarial one as given (per seed)."""
  def t(clean, pgd, c, gap=0.0):
    return {"clean_accuracy": clean, "pgd": [[x, 0.0] for x in pgd],
            "fgsm": [[x + gap, 0.0] for x in pgd], "saliency_input_corr": c}
  return {"mlp": {"standard": t([0.97] * 3, [0.1] * 3, [0.1] * 3),
                  "adversarial": t(adv_clean, adv_pgd, corr)}}


def test_robustness_decide_follows_the_numbers():
  p = {**robustness.STUDY.defaults, "kinds": ["mlp"], "eps_list": [1.0, 2.0],
       "eps_mid": 1.0}
  good = dict(adv_pgd=[0.5, 0.45, 0.55], adv_clean=[0.96, 0.95, 0.97],
              corr=[0.2, 0.25, 0.3])
  holds = lambda **kw: [c["holds"] for c in robustness.decide(
      _runs(**{**good, **kw}), p)]
  assert holds() == [True, True, True, True]
  # One seed below 3 x 0.1 fails the clause though the mean (0.4) clears it.
  assert holds(adv_pgd=[0.5, 0.45, 0.25]) == [False, True, True, True]
  # One seed 4 points lower in clean accuracy; the mean drop is 1.3 points.
  assert holds(adv_clean=[0.97, 0.97, 0.93]) == [True, False, True, True]
  assert holds(corr=[0.2, 0.05, 0.3]) == [True, True, False, True]
  # PGD 1 point weaker than FGSM at one eps of one seed.
  runs = _runs(**good)
  runs["mlp"]["adversarial"]["fgsm"][2][1] = -0.01
  assert [c["holds"] for c in robustness.decide(runs, p)][3] is False
  # Fewer seeds than min_seeds: the seed-dependent clauses are untested.
  c = robustness.decide(_runs(**good), {**p, "min_seeds": 4})
  assert [x["holds"] for x in c] == [None, None, None, True]
  assert "3 seed(s) < 4" in c[0]["evidence"]
  # What a reader sees follows the failed clause.
  c = robustness.decide(_runs(**{**good, "adv_pgd": [0.5, 0.45, 0.25]}), p)
  assert claims_lib.title(c[0], "x").startswith("NOT:")
  assert "**FAILS**: mlp: adversarial training keeps" in claims_lib.markdown(c)
