"""The ``labels`` study, quick: its files; its means, label counts and
clauses re-derived here from the numbers it reports; and a pretrained run
of it (the pretrain -> fine-tune path) loaded into fine-tuning."""

import json
import os

import numpy as np
import pytest

from funcnet import config, experiment, studies
from funcnet.errors import ConfigError
from funcnet.run import rundir
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
    assert set(methods) == {"scratch", *p["objectives"]}
    for method, by in methods.items():
      for f, s in by.items():
        a = np.array(s["accuracies"])
        assert len(a) == len(p["seeds"]) and ((0 <= a) & (a <= 1)).all()
        assert np.isclose(s["mean"], a.mean())
        # Every method read the same labels: k classes x round(f m / k).
        assert s["n_labels"] == methods["scratch"][f]["n_labels"]
        assert s["n_labels"] % 10 == 0 and s["n_labels"] < 0.1 * 1797
    for o in p["objectives"]:  # one pretrained run per objective and seed
      assert len(saved[name]["pretrain_test_loss"][o]) == len(p["seeds"])
      assert os.path.isdir(tmp_path / "runs" / f"{name}-{o}-0")
  assert r["datasets"].keys() == saved.keys()
  # One clause per dataset, objective and share; one seed decides none.
  assert len(r["claims"]) == len(p["data"]) * len(p["objectives"]) * len(
      p["fractions"])
  assert all(c["holds"] is None for c in r["claims"])
  assert "Measured" in (tmp_path / "README.md").read_text()
  # A pretrained run (contrastive: saved as the plain MLP) loads into
  # fine-tuning: its body as saved, a fresh head for 10 classes.
  run = str(tmp_path / "runs" / "digits-contrastive-0")
  saved = rundir.load_trained(run).params
  ft = experiment.Setup(config.load(None, [
      'data.name="digits"', "model.mlp.hidden=[16]", "data.train_per_class=5",
      f'finetune.from_run="{run}"']))
  params, _ = ft.init_state()
  np.testing.assert_array_equal(params[0]["W"], saved[0]["W"])
  assert params[-1]["W"].shape == (16, 10) != saved[-1]["W"].shape


def test_labels_decide_follows_the_numbers():
  """With 3 seeds the clauses follow the numbers: +6 points holds, +4
  fails; with one seed none is decided."""
  fake = {"d": {"methods": {
      "scratch": {"0.05": {"mean": 0.5, "std": 0.01}},
      "masked": {"0.05": {"mean": 0.56, "std": 0.01}},
      "contrastive": {"0.05": {"mean": 0.54, "std": 0.01}}}}}
  p = {**labels.STUDY.defaults, "fractions": [0.05]}
  decided = labels.decide(fake, {**p, "seeds": [0, 1, 2]})
  assert [c["holds"] for c in decided] == [True, False]
  assert [c["holds"] for c in labels.decide(fake, {**p, "seeds": [0]})] \
      == [None, None]


@pytest.mark.slow
def test_masked_pretraining_beats_scratch_at_5_percent_of_mnist1d(tmp_path):
  """Issue 26's target: with 5% of MNIST-1D's labels (20 per class), the
  masked-pretrained CNN fine-tuned beats the same CNN from scratch. The
  study's full run measured +5.8 on the mean of 3 seeds (48.5 vs 42.7) and
  a gain on every seed; here one seed, the one of the smallest gain (seed
  1: 43.2 vs 38.4, +4.8), required to gain at least 3 points, since three
  seeds cost ~10 CPU-minutes of CI's 25-minute budget."""
  r = studies.run("labels", out=str(tmp_path), overrides=[
      'data=["mnist1d"]', 'objectives=["masked"]', "fractions=[0.05]",
      "seeds=[1]"])
  by = r["datasets"]["mnist1d"]["methods"]
  pre, scratch = (np.array(by[m]["0.05"]["accuracies"])
                  for m in ("masked", "scratch"))
  assert by["masked"]["0.05"]["n_labels"] == 200
  assert (pre > scratch).all(), (pre, scratch)
  assert pre.mean() - scratch.mean() >= 0.03, (pre, scratch)


def test_pretrain_epochs_one_for_all_or_one_per_objective():
  p = labels.STUDY.defaults
  assert [labels.pretrain_epochs({**p, "pretrain_epochs": 7}, o)
          for o in p["objectives"]] == [7, 7]
  assert labels.pretrain_epochs(p, "masked") != labels.pretrain_epochs(
      p, "contrastive")
  with pytest.raises(ConfigError, match="no entry for \\['contrastive'\\]"):
    labels._check({**p, "pretrain_epochs": {"masked": 5}})
