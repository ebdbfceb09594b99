"""Per-layer and gradual magnitude pruning (funcnet.prune, ``funcnet prune
--scope layer --schedule gradual``): the per-layer mask rule against a numpy
sort of each layer, Zhu & Gupta's cubic against its values by hand, the
gradual fine-tuning's final masks against the per-layer counts the rule
implies, refusals. (The global rule and a run pruned through the command:
tests/test_quantize.py.)"""

import types

import jax
import numpy as np
import pytest

from funcnet import cli
from funcnet.model import DataSpec
from funcnet.models import registry
from funcnet.prune import magnitude, schedule


def test_layer_masks_remove_each_layers_own_k_smallest_weights():
  rng = np.random.default_rng(5)
  params = [{"W": rng.normal(size=(6, 5)), "b": rng.normal(size=5)},
            {"W": rng.normal(size=(3, 5, 2)) * 0.01, "b": np.zeros(2)}]
  params[0]["W"][1, :3] = 0.25  # a tie
  m = magnitude.masks(params, 0.7, scope="layer")
  for p, q in zip(params, m):
    # reference: a numpy sort of this layer's |w| alone
    w = np.abs(p["W"]).ravel()
    k = int(np.floor(0.7 * w.size))
    kept = q["W"].ravel()
    assert kept.sum() == w.size - k
    assert w[kept == 0].max() <= w[kept == 1].min()
    assert q["b"].tolist() == [1.0] * q["b"].size
  # the global rule would cut the tiny second layer almost whole; per
  # layer it keeps 30% of it
  g = magnitude.masks(params, 0.7, scope="global")
  assert g[1]["W"].mean() < m[1]["W"].mean() == pytest.approx(9 / 30)


def test_the_cubic_schedule_is_zhu_and_gupta_by_hand():
  # s_t = s_f + (s_i - s_f)(1 - t/n)^3, s_f = 0.8, s_i = 0, n = 4:
  # 0.8 (1 - (3/4)^3) = 0.8 * 37/64, 0.8 * 7/8, 0.8 * 63/64, then 0.8
  want = [0.0, 0.8 * 37 / 64, 0.8 * 7 / 8, 0.8 * 63 / 64, 0.8, 0.8]
  assert schedule.sparsities(6, 0.8, 4) == pytest.approx(want, abs=1e-15)
  assert schedule.cubic(1, 0.9, 2, initial=0.5) == pytest.approx(
      0.9 - 0.4 / 8)
  assert schedule.sparsities(3, 0.5, 0) == [0.5] * 3  # no ramp: one-shot


def test_gradual_finetuning_ends_at_the_per_layer_target_with_zeros():
  from funcnet.experiment import prune
  spec = DataSpec("signals", "classification", (6,), "float32", 3)
  model = registry.from_config(
      "mlp", {**registry.get("mlp").defaults, "hidden": [10]}, spec)
  params = model.init(jax.random.key(0))
  rng = np.random.default_rng(0)
  ds = types.SimpleNamespace(x_train=rng.normal(size=(16, 6)),
                             y_train=rng.integers(0, 3, 16))
  trained = types.SimpleNamespace(
      cfg={"train": {"loss": "cross_entropy", "grads": "manual",
                     "batch_size": 8}, "seed": 0},
      model=model, params=params)
  plan = schedule.sparsities(3, 0.6, 2)
  out, _, mask = prune._finetune(trained, ds, plan, "layer", 1e-2,
                                 np.float32)
  for p, q, p0 in zip(out, mask, params):
    w, keep = np.asarray(p["W"]), np.asarray(q["W"]).astype(bool)
    assert keep.sum() == w.size - int(np.floor(0.6 * w.size))
    assert np.all(w[~keep] == 0) and np.all(w[keep] != 0)
    assert not np.allclose(w[keep], np.asarray(p0["W"])[keep])  # it trained


@pytest.mark.parametrize("argv, words", [
    (["--schedule", "gradual", "--epochs", "4", "--ramp-epochs", "4"],
     "--ramp-epochs 4: expected 0 <= N < --epochs (4)"),
    (["--schedule", "gradual", "--epochs", "0"],
     "--schedule gradual with --epochs 0: expected at least 1 epoch"),
])
def test_a_ramp_without_an_epoch_at_the_target_is_one_line(argv, words,
                                                          tmp_path, capsys):
  assert cli.main(["prune", "--run", str(tmp_path / "none"), "--sparsity",
                   "0.5", *argv]) == 2
  err = capsys.readouterr().err
  assert words in err and err.count("\n") == 1
