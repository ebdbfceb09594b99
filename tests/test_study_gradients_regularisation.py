"""The ``regularisation`` and ``lr-strategies``
studies: each run once, quick, and its claim asserted on the numbers it
produced, against references written here (the
schedule equations in plain Python, the data's own sizes).

Each quick run spends most of its time compiling one small XLA program per
network or optimizer (a few seconds each on a loaded 2-core CPU), so the
runs are module fixtures shared by the tests that read them, and marked
slow; the tests that train nothing stay in the fast loop.
"""

import math
import os

import numpy as np
import pytest

from funcnet import config as config_lib, data, studies
from funcnet.errors import ConfigError
from funcnet.studies import lr_strategies


def _files(out, names):
  missing = [n for n in names if not os.path.isfile(os.path.join(out, n))]
  assert not missing, f"missing in {out}: {missing}"


def _common_files(out):
  _files(out, ["README.md", "table.md", "results.json"])
  with open(os.path.join(out, "README.md")) as f:
    readme = f.read()
  assert "**Claim.**" in readme and "**Measured.**" in readme


# --- regularisation ---------------------------------------------------------------

@pytest.fixture(scope="module")
def regularisation(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("regularisation"))
  return studies.run("regularisation", out=out, quick=True)


@pytest.mark.slow
def test_regularisation_narrows_the_gap(regularisation):
  _common_files(regularisation["out"])
  _files(regularisation["out"], ["curves.png", "gaps.png"])
  p, v = regularisation["params"], regularisation["variants"]
  n_classes = data.load(p["data"]).n_classes
  assert v["none"]["n_train"] == p["train_per_class"] * n_classes
  # The regime overfits: the plain network memorises its training set.
  assert v["none"]["train_accuracy"] >= 0.99
  assert v["none"]["test_accuracy"] < 0.6
  single = [v[k] for k in ("l2", "dropout") if k in v]
  assert single, "quick runs l2 or dropout alone"
  for gap in ("gap_accuracy", "gap_loss"):
    assert v["all"][gap] < v["none"][gap], gap
    assert min(r[gap] for r in single) < v["none"][gap], gap
  # The gap is what it says: train minus test accuracy, test minus train loss.
  for r in v.values():
    assert r["gap_accuracy"] == pytest.approx(r["train_accuracy"] - r["test_accuracy"])
    assert r["gap_loss"] == pytest.approx(r["test_loss"] - r["train_loss"])


def test_regularisation_numbers_are_those_of_its_own_curves(tmp_path):
  """Fast: one small variant (digits, 5 examples a class, 8 epochs), its
  reported numbers recomputed from its per-epoch curves. The parameters are
  chosen so that the best test accuracy is not the last epoch's."""
  r = studies.run("regularisation", out=str(tmp_path), quick=True, overrides=[
      'variants=["none"]', 'data="digits"', "train_per_class=5",
      "hidden=[16]", "epochs=8", "lr=0.05", "batch_size=16"])
  v = r["variants"]["none"]
  c = v["curves"]
  assert c["epoch"] == list(range(1, 9)) and v["epochs_run"] == 8
  assert v["n_train"] == 50
  assert max(c["test_accuracy"]) > c["test_accuracy"][-1]  # the case's point
  assert v["best_test_accuracy"] == max(c["test_accuracy"])
  assert v["test_accuracy"] == c["test_accuracy"][-1]
  assert v["test_loss"] == c["test_loss"][-1]
  assert v["train_accuracy"] == c["train_accuracy"][-1]
  assert v["train_loss"] == c["train_loss"][-1]
  assert v["gap_accuracy"] == v["train_accuracy"] - v["test_accuracy"]
  assert v["gap_loss"] == v["test_loss"] - v["train_loss"]
  with open(os.path.join(r["out"], "table.md")) as f:
    row = [line for line in f if line.startswith("| none")][0]
  assert f"{v['best_test_accuracy']:.3f}" in row.split("|")[5]


def test_regularisation_rejects_an_unknown_variant(tmp_path):
  with pytest.raises(ConfigError, match="variants"):
    studies.run("regularisation", out=str(tmp_path), quick=True,
                overrides=['variants=["none", "weight_noise"]'])


# --- lr-strategies ----------------------------------------------------------------

@pytest.fixture(scope="module")
def strategies(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("lr-strategies"))
  return studies.run("lr-strategies", out=out, quick=True)


def _cosine_with_warmup(t, eta, T, W, alpha):
  """Linear warm-up from 0 over W steps, then half a cosine from eta to
  alpha * eta over the remaining T - W steps, then flat."""
  if t < W:
    return eta * t / W
  s = min(t - W, T - W)
  return eta * ((1 - alpha) * (1 + math.cos(math.pi * s / (T - W))) / 2 + alpha)


@pytest.mark.slow
def test_adaptive_rates_train_faster_than_fixed_sgd(strategies):
  _common_files(strategies["out"])
  _files(strategies["out"], ["strategies.png", "schedules.png"])
  (eta,) = strategies["params"]["learning_rates"]
  k = f"{eta:g}"
  runs = strategies["runs"]
  sgd = runs["sgd"][k]["final_train_loss"]
  for name in ("adagrad", "rmsprop"):
    assert runs[name][k]["final_train_loss"] < 0.7 * sgd, name


@pytest.mark.slow
def test_recorded_learning_rates_follow_the_equations(strategies):
  p = strategies["params"]
  eta, alpha = p["learning_rates"][0], p["final_fraction"]
  per_epoch = len(data.load(p["data"]).y_train) // p["batch_size"]
  T = p["epochs"] * per_epoch
  W = round(p["warmup_fraction"] * T)
  assert strategies["total_steps"] == T and strategies["warmup_steps"] == W
  curve = strategies["lr_curves"]["cosine_decay+warmup"]
  assert len(curve) == T
  want = [_cosine_with_warmup(t, eta, T, W, alpha) for t in range(T)]
  np.testing.assert_allclose(curve, want, rtol=1e-5, atol=1e-9)
  assert curve[0] == 0.0
  assert curve[-1] == pytest.approx(alpha * eta, rel=0.01)
  assert all(v == pytest.approx(eta) for v in strategies["lr_curves"]["sgd"])
  # What fit recorded after each epoch of the sgd run: the fixed rate.
  assert strategies["runs"]["sgd"][f"{eta:g}"]["lr_at_epoch_end"] == \
      pytest.approx([eta] * p["epochs"])


@pytest.mark.parametrize("strategy", ["step_decay", "exponential_decay",
                                      "cosine_decay", "step_decay+warmup",
                                      "exponential_decay+warmup"])
def test_every_decay_ends_at_the_final_fraction(strategy):
  T, W, eta, frac = 200, 20, 0.05, 0.1
  cfg = config_lib.load(None, [f"optimizer.learning_rate={eta}"]
                        + lr_strategies.schedule_overrides(strategy, T, W, frac))
  sched = config_lib.schedule_from_config(cfg)
  rates = [float(sched(t)) for t in (0, W, T - 1)]
  w = W if strategy.endswith("+warmup") else 0
  if w:
    assert rates[0] == 0.0 and rates[1] == pytest.approx(eta)
  else:
    assert rates[0] == pytest.approx(eta)
  name = strategy.partition("+")[0]
  H = T - w
  last = {"step_decay": eta * frac,                    # two drops of sqrt(frac)
          "exponential_decay": eta * frac ** ((T - 1 - w) / H),
          "cosine_decay": eta * ((1 - frac) * (1 + math.cos(math.pi * (T - 1 - w) / H)) / 2
                                 + frac)}[name]
  assert rates[2] == pytest.approx(last, rel=1e-5)
  assert rates[2] == pytest.approx(eta * frac, rel=0.03)


def test_lr_strategies_rejects_an_unknown_strategy(tmp_path):
  with pytest.raises(ConfigError, match="strategies"):
    studies.run("lr-strategies", out=str(tmp_path), quick=True,
                overrides=['strategies=["sgd", "newton"]'])
