"""The ``learning-rate-batch`` study: the slope and its interval against
numpy and a t table, the per-cell and per-batch numbers against made-up run
records, the claim's clauses on hand-made numbers (and a figure title that
follows a failed clause), the batch sizes that must divide the training
split, and (slow) one --quick run: its numbers recomputed from the run
folders, every epoch seeing every example, and its choices unchanged when
the test labels are permuted."""

import json
import math
import os

import numpy as np
import pytest

from funcnet import data, sweep
from funcnet import studies
from funcnet.errors import ConfigError
from funcnet.studies import claims
from funcnet.studies import learning_rate_batch as lrb

# t(0.975, df) from a printed t table (Student's t, two-sided 95%).
T975 = {1: 12.7062047362, 4: 2.7764451052, 16: 2.1199052992,
        100: 1.9839715185}


# --- the slope and its interval -------------------------------------------------

def test_fit_slope_against_polyfit_and_a_t_table():
  x = np.log2([8.0, 16, 32, 64, 128, 256])
  y = np.array([-4.1, -3.4, -3.0, -2.2, -1.9, -1.0])
  got = lrb.fit_slope(x, y)
  (b, a), cov = np.polyfit(x, y, 1, cov=True)  # cov scaled by the residuals
  assert got["slope"] == pytest.approx(b, rel=1e-12)
  assert got["intercept"] == pytest.approx(a, rel=1e-12)
  assert got["se"] == pytest.approx(math.sqrt(cov[0, 0]), rel=1e-10)
  half = T975[4] * math.sqrt(cov[0, 0])
  assert got["lo"] == pytest.approx(b - half, rel=1e-9)
  assert got["hi"] == pytest.approx(b + half, rel=1e-9)
  assert got["n"] == 6
  for df, t in T975.items():
    assert lrb.t_quantile(0.975, df) == pytest.approx(t, abs=1e-9)
  assert lrb.t_quantile(0.5, 7) == pytest.approx(0.0, abs=1e-12)
  # two points: a slope, no interval; one x: no slope
  two = lrb.fit_slope([1.0, 3.0], [0.0, 1.0])
  assert two["slope"] == pytest.approx(0.5) and two["lo"] is None
  assert lrb.fit_slope([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])["slope"] is None


# --- per cell and per batch, from run records ------------------------------------

def _variant(index, b, lr, seed, val, diverged=False, grow=False):
  """A sweep variant with validation (held-out) loss and accuracy per epoch
  ``val = [(loss, acc), ...]``; 1024 training examples, so ``1024 / b``
  steps an epoch; a training loss that falls, or grows when ``grow``."""
  steps = 1024 // b
  history = [{"epoch": e + 1, "step": steps * (e + 1), "time": float(e + 1),
              "train_loss": (1.0 + e if grow else 1.0 / (e + 1)),
              "test_loss": loss, "test_accuracy": acc}
             for e, (loss, acc) in enumerate(val)]
  if diverged:
    history[-1] = {"epoch": len(val), "step": steps * len(val),
                   "time": float(len(val)), "train_loss": float("nan")}
  return sweep.VariantResult(
      index, {"train.batch_size": b, "optimizer.learning_rate": lr,
              "seed": seed}, {}, "diverged" if diverged else "done",
      "non-finite loss" if diverged else None, history, None, 0, 3.0,
      "classification")


def test_measure_from_made_up_records():
  """Batch 8: the best rate by mean loss (0.1) is not seed 1's best (1.0),
  and at 0.01 the mean accuracy reaches 0.9 at epoch 2 though seed 0 never
  does (the mean is the criterion); the training loss grows at 1.0 without
  diverging, so the stability limit is 1.0. Batch 32: 1.0 diverges."""
  bs, lrs, seeds = [8, 32], [0.01, 0.1, 1.0], [0, 1]
  val = {(8, 0.01): [[(0.9, 0.5), (0.7, 0.88)], [(0.8, 0.6), (0.6, 0.94)]],
         (8, 0.1): [[(0.5, 0.9), (0.2, 0.95)], [(0.5, 0.9), (0.4, 0.95)]],
         (8, 1.0): [[(0.6, 0.9), (0.5, 0.96)], [(0.6, 0.9), (0.3, 0.97)]],
         (32, 0.01): [[(2.0, 0.2), (1.9, 0.3)], [(2.0, 0.2), (1.8, 0.3)]],
         (32, 0.1): [[(1.0, 0.6), (0.5, 0.8)], [(1.0, 0.6), (0.7, 0.8)]],
         (32, 1.0): [[(0.1, 0.9), (0.1, 0.9)], [(0.1, 0.9), (0.1, 0.9)]]}
  variants = []
  for b in bs:
    for lr in lrs:
      for seed in (1, 0):  # not in seed order: measure sorts them
        variants.append(_variant(len(variants), b, lr, seed, val[b, lr][seed],
                                 diverged=(b, lr) == (32, 1.0),
                                 grow=(b, lr) == (8, 1.0)))
  result = sweep.SweepResult(variants, ["train.batch_size",
                                        "optimizer.learning_rate", "seed"],
                             "test_accuracy", True, 2, 9.0)
  m = lrb.measure(result, {"batch_sizes": bs, "learning_rates": lrs,
                           "seeds": seeds, "target": 0.9})
  last = {k: [s[-1] for s in v] for k, v in val.items()}
  for i, b in enumerate(bs):
    for j, lr in enumerate(lrs):
      if (b, lr) == (32, 1.0):
        assert m["val_loss"][i][j] is None and m["diverged"][i][j] == 2
        continue
      losses = [l for l, _ in last[b, lr]]
      assert m["val_loss"][i][j] == pytest.approx(np.mean(losses))
      assert m["val_loss_std"][i][j] == pytest.approx(np.std(losses, ddof=1))
      assert m["val_accuracy"][i][j] == pytest.approx(
          np.mean([a for _, a in last[b, lr]]))
  assert m["unstable"][0] == [0, 0, 2] and m["unstable"][1] == [0, 0, 2]
  assert m["best_lr"] == [0.1, 0.1]            # 0.3 < 0.4 (mean loss)
  assert m["best_lr_per_seed"] == [[0.1, 1.0], [0.1, 0.1]]
  assert m["best_lr_by_accuracy"] == [1.0, 0.1]
  assert m["stability_limit"] == [1.0, 1.0]
  assert m["largest_stable_lr"] == [0.1, 0.1]
  assert m["lr_needed"] == [0.01, None]        # mean 0.91 at epoch 2
  assert m["steps_to_target"][0] == [256, 128, 128]
  assert m["steps_per_epoch"] == [128, 32]
  # best rate per (batch, seed) against log2 batch, by numpy
  x = np.log2([8, 8, 32, 32])
  y = np.log2([0.1, 1.0, 0.1, 0.1])
  assert m["slopes"]["best"]["slope"] == pytest.approx(np.polyfit(x, y, 1)[0])
  # both batches capped (best one grid step under the largest stable rate)
  assert m["slopes"]["below_break_batches"] == []


def test_unstable_is_loss_growth_not_finiteness():
  rise = [{"train_loss": 2.0}, {"train_loss": 1.0}, {"train_loss": 2.5}]
  fall = [{"train_loss": 2.0}, {"train_loss": 1.0}, {"train_loss": 1.9}]
  assert lrb.unstable(rise, "done") and not lrb.unstable(fall, "done")
  assert lrb.unstable(fall, "diverged")
  assert lrb.unstable([{"train_loss": 2.0}, {"train_loss": 1e20}], "done")


# --- the claim -------------------------------------------------------------------

def _numbers(slope, seeds=(0, 1, 2), acc_last=0.955):
  """Made-up measurements: 6 batch sizes on a half-octave grid, each seed's
  best rate 2^(slope log2 B) rounded to the grid and jittered by a step;
  at batch 1024 the best rate one step under the largest stable one."""
  bs = [8, 16, 32, 64, 128, 1024]
  lrs = [2.0 ** (k / 2) for k in range(-30, 12)]
  snap = lambda e: lrs[int(round(2 * e)) + 30]  # noqa: E731
  per_seed = [[snap(slope * (math.log2(b) - 7) + 0.5 * ((s + i) % 3 - 1))
               for s in seeds] for i, b in enumerate(bs)]
  best = [snap(slope * (math.log2(b) - 7)) for b in bs]
  stable = [lrs[lrs.index(q) + (1 if b == 1024 else 4)] for b, q in zip(bs, best)]
  batches = [{"best_lr": q, "best_lr_per_seed": ps, "largest_stable_lr": st,
              "lr_needed": snap(math.log2(b) - 10)}
             for q, ps, st, b in zip(best, per_seed, stable, bs)]
  m = {"batch_sizes": bs, "learning_rates": lrs, "seeds": list(seeds),
       "target": 0.9, "best_lr": best, "largest_stable_lr": stable,
       "best_lr_per_seed": per_seed, "lr_needed": [q["lr_needed"] for q in batches],
       "test_accuracy": [0.96] * 5 + [acc_last], "test_accuracy_std": [0.004] * 6,
       "slopes": lrb.slopes(bs, lrs, batches)}
  return m


def _holds(m):
  c = lrb.decide(m, {})
  return {k: c[k]["holds"] for k in range(len(c))}, c


def test_decide_on_hand_made_numbers():
  lin, _ = _holds(_numbers(1.0))
  assert lin == {0: True, 1: True, 2: False, 3: True, 4: True, 5: True, 6: True}
  sub, c = _holds(_numbers(0.5, acc_last=0.94))
  # sublinear, so not linear; batch 1024 ends 2 points under batch 8
  assert sub == {0: True, 1: False, 2: True, 3: False, 4: True, 5: False, 6: True}
  assert "1024: 0.940" in c[5]["evidence"] and "below: [1024]" in c[5]["evidence"]
  m = _numbers(0.5)
  pairs = [(b, lr) for b, ps in zip(m["batch_sizes"], m["best_lr_per_seed"])
           for lr in ps]
  (b, _), cov = np.polyfit(*np.log2(pairs).T, 1, cov=True)
  half = T975[16] * math.sqrt(cov[0, 0])
  assert f"[{b - half:.2f}, {b + half:.2f}]" in c[2]["evidence"]
  flat, _ = _holds(_numbers(0.0))
  assert flat[0] is False
  # two seeds: every seed-dependent clause untested, and says why
  few, c = _holds(_numbers(1.0, seeds=(0, 1)))
  assert [few[k] for k in (0, 1, 2, 3, 5, 6)] == [None] * 6
  assert all("untested: 2 seed(s)" in c[k]["evidence"] for k in (0, 1, 2, 3, 5))


def test_a_failed_clause_titles_the_figure(tmp_path, monkeypatch):
  titles = []

  def save(fig, out, name):
    titles.extend(ax.get_title() for ax in fig.axes)
    lrb.report.plt.close(fig)
    return name
  monkeypatch.setattr(lrb.report, "save", save)
  m = _numbers(0.5, acc_last=0.94)
  lrb._plot_scaling(str(tmp_path), m, lrb.decide(m, {}))
  assert titles[0] == "sublinear: slope below 1"
  assert titles[1] == "NOT: tuned, large batches match small"


# --- parameters --------------------------------------------------------------------

def test_batch_sizes_must_divide_the_training_examples(tmp_path):
  with pytest.raises(ConfigError, match=r"\[48\] do not divide train_examples = 1024"):
    studies.run("learning-rate-batch", out=str(tmp_path), quick=True,
                overrides=["batch_sizes=[16, 48]"])


def test_the_validation_fraction_leaves_exactly_n():
  x = np.zeros((1437, 2), np.float32)
  y = np.arange(1437) % 10
  ds = data.Dataset(x, y, x[:5], y[:5], "classification", 10, "toy", {})
  for n in (1024, 1000, 7, 1436):
    held = data.hold_out(ds, lrb.validation_fraction(1437, n), seed=3)
    assert len(held.y_train) == n and len(held.y_test) == 1437 - n
  with pytest.raises(ConfigError, match="train_examples"):
    lrb.validation_fraction(1437, 1437)


# --- one --quick run -----------------------------------------------------------------

def _runs(sweep_dir):
  """Every variant folder's config and metrics records, read with json."""
  root = os.path.join(sweep_dir, "variants")
  out = []
  for name in sorted(os.listdir(root)):
    with open(os.path.join(root, name, "config.json")) as f:
      cfg = json.load(f)
    with open(os.path.join(root, name, "metrics.jsonl")) as f:
      out.append((cfg, [json.loads(line) for line in f]))
  return out


@pytest.mark.slow
def test_quick_run_numbers_and_the_test_split_read_last(tmp_path, monkeypatch):
  # Two --quick runs of 3 batch sizes (3 compiled programs each): 30-50 s
  # on the 2-core machine.
  r = studies.run("learning-rate-batch", out=str(tmp_path / "a"), quick=True,
                  overrides=["runs=true"])
  p = r["params"]
  for name in ("README.md", "table.md", "results.json", "heatmaps.png",
               "scaling.png"):
    assert (tmp_path / "a" / name).is_file(), name
  bs, lrs, seeds = p["batch_sizes"], p["learning_rates"], p["seeds"]
  loss = {}
  for cfg, records in _runs(tmp_path / "a" / "sweep"):
    b = cfg["train"]["batch_size"]
    # 1437 digits training examples: 1024 train, 413 validate, so every
    # epoch of every batch size is 1024 / b steps (no example dropped)
    assert cfg["data"]["validation"] == pytest.approx(413 / 1437)
    assert records[0]["step"] == 1024 // b
    ev = [x for x in records if "test_loss" in x]
    if ev and all(math.isfinite(x["train_loss"]) for x in records):
      loss.setdefault((b, cfg["optimizer"]["learning_rate"]), []).append(
          ev[-1]["test_loss"])
  for i, b in enumerate(bs):
    for j, lr in enumerate(lrs):
      if r["diverged"][i][j] == 0:
        assert r["val_loss"][i][j] == pytest.approx(np.mean(loss[b, lr]), rel=1e-6)
    means = {lr: np.mean(loss[b, lr]) for j, lr in enumerate(lrs)
             if r["diverged"][i][j] == 0}
    assert r["best_lr"][i] == min(means, key=means.get)
  assert r["best_lr"][-1] > r["best_lr"][0]
  assert all(0.85 < a <= 1 for a in r["test_accuracy"])
  results = json.loads((tmp_path / "a" / "results.json").read_text())
  assert len(results["claims"]) == 7 and results["quick"] is True
  readme = (tmp_path / "a" / "README.md").read_text()
  assert "--quick" in readme and "not tested" in readme

  # The same run with the test split's labels permuted: every choice is the
  # same (they read validation only), the final test accuracy falls.
  hold_out = data.hold_out

  def permuted(ds, fraction, seed=0):
    out = hold_out(ds, fraction, seed)
    x, y = out.info["test"]
    y = np.random.default_rng(0).permutation(y)
    return out._replace(info={**out.info, "test": (x, y)})
  monkeypatch.setattr(data, "hold_out", permuted)
  q = studies.run("learning-rate-batch", out=str(tmp_path / "b"), quick=True)
  for key in ("best_lr", "best_lr_per_seed", "largest_stable_lr", "val_loss",
              "lr_needed"):
    assert q[key] == r[key], key
  assert all(a < 0.3 for a in q["test_accuracy"])
