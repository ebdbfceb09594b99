"""The ``lr-strategies`` study: its decision on hand-made numbers (a
strategy whose every rate diverged included), its pieces against numpy and
the schedule equations, one quick run, and a check that every choice reads
the validation split, never the test split."""

import math
import pathlib
from typing import NamedTuple

import numpy as np
import pytest

from funcnet import config as config_lib, data, studies
from funcnet.errors import ConfigError
from funcnet.studies import claims, lr_strategies as ls, report

P = {"shared_lr": 0.01}


def _t(lr, acc, sd=0.002):
  return {"lr": lr, "test_accuracy": acc, "test_accuracy_std": sd}


def _measured(**change):
  tuned = {"sgd": _t(0.3, 0.966), "cosine_decay": _t(0.3, 0.964),
           "cosine_decay+warmup": _t(0.3, 0.962), "adam": _t(0.01, 0.968),
           "rmsprop": _t(0.003, 0.969)}
  tuned.update(change.pop("tuned", {}))
  shared = {"sgd": {"train_loss": 0.3, "train_loss_std": 0.01, "diverged": False},
            "adam": {"train_loss": 1e-3, "train_loss_std": 1e-4, "diverged": False},
            "rmsprop": {"train_loss": 1e-5, "train_loss_std": 1e-6, "diverged": False}}
  shared.update(change.pop("shared", {}))
  return {"seeds": 3, "tuned": tuned, "shared": shared, **change}


def test_decide_on_hand_made_numbers():
  got = ls.decide(_measured(), P)
  assert [c["holds"] for c in got] == [True, True, False, False, True, True]
  assert got[2]["evidence"] == "rmsprop 96.9 ± 0.2% (lr 0.003) vs sgd 96.6 ± 0.2% (lr 0.3)"
  # A decayed schedule 1 point above sgd but within the seeds' spread: no.
  wide = ls.decide(_measured(tuned={"cosine_decay": _t(0.3, 0.976, 0.009)}), P)
  assert wide[3]["holds"] is False
  tight = ls.decide(_measured(tuned={"cosine_decay": _t(0.3, 0.976, 0.001)}), P)
  assert tight[3]["holds"] is True
  warm = ls.decide(_measured(tuned={"cosine_decay+warmup": _t(0.3, 0.950)}), P)
  assert warm[5]["holds"] is False and "cosine_decay -1.4 points" in warm[5]["evidence"]
  assert all(c["holds"] is None for c in ls.decide(_measured(seeds=1), P))


def test_a_strategy_that_diverged_at_every_rate_fails_the_clauses_about_it():
  got = ls.decide(_measured(tuned={"adam": {"lr": None}},
                            shared={"adam": {"diverged": True}}), P)
  assert got[0]["holds"] is False and "adam diverged" in got[0]["evidence"]
  assert got[4]["holds"] is False and "every rate diverged: adam" in got[4]["evidence"]
  assert got[2]["holds"] is False   # rmsprop still compared


class _Model(NamedTuple):
  n_out: int = 10


class _Run(NamedTuple):
  status: str
  history: list
  model: _Model = _Model()


def _hist(train, val_loss, val_acc):
  return [{"train_loss": a, "test_loss": b, "test_accuracy": c}
          for a, b, c in zip(train, val_loss, val_acc)]


def test_diverged_summarise_and_tune():
  ok1 = _Run("done", _hist([1.0, 0.5], [0.9, 0.4], [0.7, 0.9]))
  ok2 = _Run("done", _hist([1.2, 0.3], [0.8, 0.6], [0.6, 0.8]))
  grew = _Run("done", _hist([1.0, 3.0], [0.9, 0.1], [0.7, 0.95]))
  guard = _Run("diverged", _hist([1.0], [0.9], [0.7]))
  spike = _Run("done", _hist([5.0, 0.5], [0.9, 0.4], [0.7, 0.9]))  # above ln 10 once
  assert not ls.diverged(ok1) and ls.diverged(grew) and ls.diverged(guard)
  assert ls.diverged(spike) and not ls.diverged(spike._replace(model=_Model(1000)))
  row = ls.summarise([ok1, ok2])
  assert row["val_loss"] == pytest.approx(np.mean([0.4, 0.6]))
  assert row["val_loss_std"] == pytest.approx(np.std([0.4, 0.6]))
  assert row["train_loss_curve"] == pytest.approx([1.1, 0.4])
  assert ls.summarise([ok1, grew]) == {"diverged": True, "seeds": 2}
  # The lowest validation loss wins, even against a diverged rate that
  # showed a lower one before it grew.
  grid = {0.01: ls.summarise([ok2]), 0.1: ls.summarise([ok1]), 1.0: ls.summarise([grew])}
  assert ls.tune(grid) == 0.1
  assert ls.tune({1.0: ls.summarise([guard])}) is None


def test_a_failed_clause_titles_the_figure_as_failed(tmp_path, monkeypatch):
  titles = []
  monkeypatch.setattr(report, "save",
                      lambda fig, out, name: titles.append(fig.axes[0].get_title()))
  m = _measured(tuned={"adam": _t(0.01, 0.90), "rmsprop": {"lr": None}})
  results = {"claims": ls.decide(m, P), "tuned": m["tuned"],
             "grid": {s: {f"{r['lr'] or 1:g}": {"diverged": r["lr"] is None,
                                                "train_loss_curve": [1.0, 0.5]}}
                      for s, r in m["tuned"].items()}}
  ls.plot_tuned(str(tmp_path), results, {"seeds": [0, 1, 2]})
  assert titles[0].startswith("NOT: tuned rates: every strategy within 2 points")


# --- the schedules ------------------------------------------------------------------

def _cosine_with_warmup(t, eta, T, W, alpha):
  """Linear warm-up from 0 over W steps, then half a cosine from eta to
  alpha * eta over the remaining T - W steps, then flat."""
  if t < W:
    return eta * t / W
  s = min(t - W, T - W)
  return eta * ((1 - alpha) * (1 + math.cos(math.pi * s / (T - W))) / 2 + alpha)


@pytest.mark.parametrize("strategy", ["step_decay", "exponential_decay",
                                      "cosine_decay", "step_decay+warmup",
                                      "exponential_decay+warmup"])
def test_every_decay_ends_at_the_final_fraction(strategy):
  T, W, eta, frac = 200, 20, 0.05, 0.1
  cfg = config_lib.load(None, [f"optimizer.learning_rate={eta}"]
                        + ls.schedule_overrides(strategy, T, W, frac))
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


@pytest.mark.parametrize("override", ['strategies=["sgd", "newton"]', "shared_lr=0.5",
                                      "seeds=[]", "validation=0.0"])
def test_lr_strategies_rejects_bad_parameters(tmp_path, override):
  with pytest.raises(ConfigError, match="expected"):
    studies.run("lr-strategies", out=str(tmp_path), quick=True, overrides=[override])


# --- one quick run, and the test split ------------------------------------------------

@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  return studies.run("lr-strategies", out=str(tmp_path_factory.mktemp("lrs")), quick=True)


@pytest.mark.slow
def test_lr_strategies_quick_run(quick):
  p, r = quick["params"], quick
  m = len(data.load(p["data"]).y_train)
  T = p["epochs"] * ((m - round(p["validation"] * m)) // p["batch_size"])
  W = round(p["warmup_fraction"] * T)
  assert r["total_steps"] == T and r["warmup_steps"] == W
  eta, alpha = p["shared_lr"], p["final_fraction"]
  want = [_cosine_with_warmup(t, eta, T, W, alpha) for t in range(T)]
  np.testing.assert_allclose(r["lr_curves"]["cosine_decay+warmup"], want, rtol=1e-5, atol=1e-9)
  assert all(v == pytest.approx(eta) for v in r["lr_curves"]["sgd"])
  for s, by_lr in r["grid"].items():
    ok = {lr: row["val_loss"] for lr, row in by_lr.items() if not row["diverged"]}
    assert f"{r['tuned'][s]['lr']:g}" == min(ok, key=ok.get)
    assert 0.5 < r["tuned"][s]["test_accuracy"] <= 1
  text = pathlib.Path(r["out"], "README.md").read_text()
  assert "--quick" in text and "`seeds=[0]`" in text and "not tested" in text
  assert all(c["holds"] is None for c in r["claims"])   # one seed


@pytest.mark.slow
def test_the_choices_do_not_read_the_test_split(quick, tmp_path, monkeypatch):
  # The test labels permuted: every validation number and every choice is
  # the same, only the final test numbers move.
  load = data.load

  def permuted(*a, **k):
    ds = load(*a, **k)
    return ds._replace(y_test=np.random.default_rng(0).permutation(ds.y_test))
  monkeypatch.setattr(data, "load", permuted)
  r = studies.run("lr-strategies", out=str(tmp_path), quick=True,
                  overrides=['strategies=["sgd"]'])
  assert r["grid"]["sgd"] == quick["grid"]["sgd"]
  assert r["tuned"]["sgd"]["lr"] == quick["tuned"]["sgd"]["lr"]
  assert r["tuned"]["sgd"]["test_accuracy"] < quick["tuned"]["sgd"]["test_accuracy"] - 0.3
