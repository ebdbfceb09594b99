"""The ``regularisation`` study: its decision on hand-made numbers, its
choices read from the validation split only, and one quick run.

The fast tests train nothing (the study's trainer is replaced by hand-made
records) or one tiny network; the quick run is a slow module fixture.
"""

import os

import numpy as np
import pytest

from funcnet import data, studies
from funcnet.errors import ConfigError
from funcnet.studies import claims, regularisation, report


# --- hand-made numbers ------------------------------------------------------------

def _record(seed, train_acc, val_acc, test_acc, epochs=4, best_epoch=None):
  """One run's record as train_one returns it, with flat curves."""
  curves = {"epoch": list(range(1, epochs + 1)),
            "train_loss": [0.1] * epochs, "train_accuracy": [train_acc] * epochs,
            "val_loss": [2.0] * epochs, "val_accuracy": [val_acc] * epochs}
  train_loss, test_loss = 1.0 - train_acc + 0.01, 3.0 - 2 * test_acc
  return {"status": "done", "epochs_run": epochs, "best_epoch": best_epoch,
          "curves": curves, "n_train": 40, "n_val": 10, "n_test": 100,
          "train_accuracy": train_acc, "train_loss": train_loss,
          "val_accuracy": val_acc, "val_loss": 2.0 - val_acc,
          "test_accuracy": test_acc, "test_loss": test_loss,
          "gap_accuracy": train_acc - test_acc, "gap_loss": test_loss - train_loss}


def _fake_trainer(bad_l2_seed=None):
  """train_one's stand-in: numbers by variant, strength and seed. L2 at 0.01
  is best on validation, at 0.1 best on test (so choosing on test would pick
  0.1); ``bad_l2_seed`` lowers L2's test accuracy in that seed below none's."""
  def train_one(overrides, evaluate=None):
    o = dict(text.split("=", 1) for text in overrides)
    seed = int(o["seed"])
    base = 0.30 + 0.01 * seed
    if "train.patience" in o:                     # early_stopping, all
      return _record(seed, 0.8, 0.30, base + 0.02, best_epoch=2)
    if "optimizer.l2" in o:
      s = float(o["optimizer.l2"])
      test = base + {0.01: 0.03, 0.1: 0.08}.get(s, 0.0)
      if seed == bad_l2_seed:
        test = base - 0.01
      return _record(seed, 1.0, 0.30 + (0.05 if s == 0.01 else 0.0), test)
    if "optimizer.weight_decay" in o:
      return _record(seed, 1.0, 0.31, base + 0.002)
    if "model.mlp.dropout" in o:
      s = float(o["model.mlp.dropout"])
      return _record(seed, 0.98, 0.30 + s / 10, base + 0.04)
    return _record(seed, 1.0, 0.30, base)         # none
  return train_one


@pytest.fixture
def titles(monkeypatch):
  """Figure titles (suptitle and every panel's) instead of PNG files."""
  seen = {}

  def save(fig, out, name):
    seen[name] = [fig._suptitle.get_text() if fig._suptitle else ""] + \
        [ax.get_title() for ax in fig.axes]
    report.plt.close(fig)
    return name
  monkeypatch.setattr(report, "save", save)
  return seen


SMALL = ['l2=[0.01, 0.1]', 'weight_decay=[1.0]', 'dropout=[0.2, 0.5]']


@pytest.mark.parametrize("bad_l2_seed", [None, 2])
def test_readme_table_and_titles_follow_the_numbers(tmp_path, monkeypatch,
                                                    titles, bad_l2_seed):
  monkeypatch.setattr(regularisation, "train_one", _fake_trainer(bad_l2_seed))
  monkeypatch.setattr(regularisation, "_evaluator", lambda p: None)
  r = studies.run("regularisation", out=str(tmp_path), overrides=SMALL)
  # Chosen on validation, not test: 0.01 (0.1 is better on test).
  assert r["chosen"] == {"l2": "0.01", "weight_decay": "1", "dropout": "0.5"}
  assert r["variants"]["l2"]["strength"] == 0.01
  c = {x["clause"]: x for x in r["claims"]}
  raised = c["l2 raises test accuracy by at least 1 point"]
  # l2's paired gains: 0.03 in every seed, or (0.03, 0.03, -0.01).
  assert raised["holds"] is (bad_l2_seed is None)
  assert c["weight_decay raises test accuracy by at least 1 point"]["holds"] is False
  assert c["dropout raises test accuracy by at least 1 point"]["holds"] is True
  readme = (tmp_path / "README.md").read_text()
  table = (tmp_path / "table.md").read_text()
  word = "holds" if bad_l2_seed is None else "FAILS"
  assert f"**{word}**: l2 raises test accuracy" in readme
  assert f"| l2 raises test accuracy by at least 1 point | {word} |" in table
  assert "**FAILS**: weight_decay raises test accuracy" in readme
  raised_title = titles["gaps.png"][1].replace("\n", " ")  # test accuracy
  assert raised_title.endswith(
      "yes: dropout, early_stopping, all; NOT: l2, weight_decay" if bad_l2_seed
      else "yes: l2, dropout, early_stopping, all; NOT: weight_decay")
  assert set(titles) == {"curves.png", "gaps.png", "selection.png"}
  assert "funcnet study regularisation --set" in readme and "`seeds=[0, 1, 2]`" in readme


def _measured(none_train=1.0, seeds=3):
  def series(train, test):
    return {"train_accuracy": [train] * seeds,
            "test_accuracy": [test + 0.01 * s for s in range(seeds)],
            "gap_accuracy": [train - test - 0.01 * s for s in range(seeds)],
            "gap_loss": [2.0 - test] * seeds, "val_accuracy": [0.3] * seeds}
  return {"none": series(none_train, 0.30), "l2": series(none_train, 0.34),
          "early_stopping": series(0.7, 0.29)}


P = dict(regularisation.STUDY.defaults)


def test_decide_on_hand_made_numbers():
  c = {x["clause"]: x for x in regularisation.decide(_measured(), P)}
  assert c["without regularisation the net fits its training set (mean train "
           "accuracy >= 0.99)"]["holds"] is True
  assert c["l2 raises test accuracy by at least 1 point"]["holds"] is True
  assert c["l2 narrows the accuracy gap (train − test) by at least 2 points"]["holds"] is True
  assert c["early_stopping narrows the accuracy gap (train − test) by at least "
           "2 points"]["holds"] is True       # 0.69 - 0.41 in every seed
  assert c["early_stopping raises test accuracy by at least 1 point"]["holds"] is False


def test_an_underfit_regime_decides_no_gap_clause():
  c = regularisation.decide(_measured(none_train=0.66), P)
  assert c[0]["holds"] is False
  gap = [x for x in c if "gap" in x["clause"]]
  assert gap and all(x["holds"] is None for x in gap)
  assert all("underfitting" in x["evidence"] for x in gap)
  # Test accuracy is still decided: it does not rest on the regime.
  assert claims.find(c, "l2 raises")["holds"] is True


def test_too_few_seeds_decide_no_comparison():
  c = regularisation.decide(_measured(seeds=2), P)
  assert c[0]["holds"] is True
  assert all(x["holds"] is None and "2 seed(s) < 3" in x["evidence"] for x in c[1:])


def test_choose_reads_validation_only():
  good_val = [_record(s, 1, 0.5, 0.1) for s in range(3)]
  good_test = [_record(s, 1, 0.4, 0.9) for s in range(3)]
  assert regularisation.choose({"a": good_test, "b": good_val}) == "b"
  tie = [dict(r, val_loss=0.1) for r in good_test]
  tie = [dict(r, val_accuracy=0.5) for r in tie]
  assert regularisation.choose({"b": good_val, "c": tie}) == "c"  # lower val loss


# --- one tiny network -------------------------------------------------------------

TINY = ['data.name="digits"', "data.train_per_class=12", "data.validation=0.25",
        "model.mlp.hidden=[8]", "train.epochs=6", "train.batch_size=30",
        "optimizer.learning_rate=0.05", "train.patience=2",
        "train.restore_best=true", "seed=0", "run.plots=false"]


def test_early_stopping_reads_no_test_label(monkeypatch):
  """The same tiny early-stopped run with the test labels permuted: every
  choice (the stop, the restored epoch) and every train and validation
  number is unchanged; only the test numbers move."""
  plain = regularisation.train_one(TINY)
  hold_out = data.hold_out

  def permuted(ds, fraction, seed=0):
    out = hold_out(ds, fraction, seed)
    x, y = out.info["test"]
    return out._replace(info={**out.info,
                              "test": (x, np.random.default_rng(1).permutation(y))})
  monkeypatch.setattr(data, "hold_out", permuted)
  shuffled = regularisation.train_one(TINY)
  assert plain["n_train"] + plain["n_val"] == 120 and plain["n_val"] == 30
  for key in ("best_epoch", "epochs_run", "curves", "train_accuracy",
              "train_loss", "val_accuracy", "val_loss"):
    assert plain[key] == shuffled[key], key
  assert plain["test_loss"] != shuffled["test_loss"]
  # The gaps as the study defines them (train − test accuracy, test − train
  # loss), and on the test split: only they move with the test labels.
  for r in (plain, shuffled):
    assert r["gap_accuracy"] == pytest.approx(r["train_accuracy"] - r["test_accuracy"])
    assert r["gap_loss"] == pytest.approx(r["test_loss"] - r["train_loss"])
  assert plain["gap_loss"] != shuffled["gap_loss"]
  # The restored params are those of the epoch with the lowest validation loss.
  c = plain["curves"]
  best = int(np.argmin(c["val_loss"]))
  assert plain["best_epoch"] == c["epoch"][best]
  assert plain["train_accuracy"] == c["train_accuracy"][best]


def test_rejects_an_unknown_variant(tmp_path):
  with pytest.raises(ConfigError, match="variants"):
    studies.run("regularisation", out=str(tmp_path), quick=True,
                overrides=['variants=["none", "weight_noise"]'])
  with pytest.raises(ConfigError, match="none"):
    studies.run("regularisation", out=str(tmp_path), quick=True,
                overrides=['variants=["l2"]'])


# --- the quick run ----------------------------------------------------------------

@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("regularisation"))
  return studies.run("regularisation", out=out, quick=True)


@pytest.mark.slow
def test_quick_run(quick):
  for name in ("README.md", "table.md", "results.json", "curves.png", "gaps.png",
               "selection.png"):
    assert os.path.isfile(os.path.join(quick["out"], name)), name
  p, v = quick["params"], quick["variants"]
  n = data.load(p["data"]).n_classes * p["train_per_class"]
  none = v["none"]["seeds"][0]
  assert none["n_train"] + none["n_val"] == n
  assert none["n_val"] == round(p["validation"] * n)
  assert none["n_test"] == len(data.load(p["data"]).y_test)
  # The regime overfits: the plain net fits its training set, and says so.
  assert none["train_accuracy"] >= 0.99 and quick["claims"][0]["holds"] is True
  assert all(c["holds"] is None for c in quick["claims"][1:])  # one seed
  for r in (s for x in v.values() for s in x["seeds"]):
    assert r["gap_accuracy"] == pytest.approx(r["train_accuracy"] - r["test_accuracy"])
    assert r["gap_loss"] == pytest.approx(r["test_loss"] - r["train_loss"])
  assert none["train_accuracy"] == none["curves"]["train_accuracy"][-1]
  es = v["early_stopping"]["seeds"][0]
  c = es["curves"]
  assert es["best_epoch"] == c["epoch"][int(np.argmin(c["val_loss"]))]
  assert es["train_accuracy"] == c["train_accuracy"][es["best_epoch"] - 1]
