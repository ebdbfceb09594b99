"""A validation split carved from training, and early stopping that keeps
the best params: choices read the validation split, the test split is read
once."""

import json

import jax
import numpy as np
import pytest

from funcnet import config as config_lib, data, train
from funcnet.errors import ConfigError
from funcnet.experiment import Setup, train_and_evaluate


def test_hold_out_carves_the_permutations_first_rows_and_keeps_the_test_split():
  ds = data.load("digits", standardize=False)
  held = data.hold_out(ds, 0.2, seed=3)
  m = len(ds.y_train)
  order = np.random.default_rng(3).permutation(m)
  n = round(0.2 * m)
  np.testing.assert_array_equal(held.x_test, ds.x_train[np.sort(order[:n])])
  np.testing.assert_array_equal(held.y_train, ds.y_train[np.sort(order[n:])])
  np.testing.assert_array_equal(held.info["test"][0], ds.x_test)
  # Standardised with the (smaller) training split's statistics, all three.
  st = data.standardize(held)
  mean, std = held.x_train.mean(0), held.x_train.std(0)
  std = np.where(std > 0, std, 1.0)
  np.testing.assert_allclose(st.info["test"][0], (ds.x_test - mean) / std,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(st.x_test, (held.x_test - mean) / std,
                             rtol=1e-5, atol=1e-5)
  for bad in (0.0, 1.0):
    with pytest.raises(ConfigError, match="expected 0 < fraction < 1"):
      data.hold_out(ds, bad)


_TINY = ['data.name="digits"', "data.train_per_class=8", "data.validation=0.25",
         "model.mlp.hidden=[32]", "train.batch_size=16",
         "optimizer.learning_rate=0.05", 'optimizer.name="adam"']


def test_restore_best_ends_with_the_params_of_the_best_epoch():
  setup = Setup(config_lib.load(None, _TINY + [
      "train.epochs=12", "train.patience=3", "train.restore_best=true"]))
  res = setup.fit(norms=False)
  losses = [h["test_loss"] for h in res.history]
  assert res.best_epoch == 1 + int(np.argmin(losses))
  assert res.best_epoch < len(res.history)  # it overfits: the test is not void
  # The same run stopped at the best epoch: its params are the ones kept.
  short = Setup(config_lib.load(None, _TINY + [f"train.epochs={res.best_epoch}"]))
  ref = short.fit(norms=False).state.params
  for a, b in zip(jax.tree.leaves(res.state.params), jax.tree.leaves(ref)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_run_with_validation_reports_the_test_split_once(tmp_path):
  cfg = config_lib.load(None, _TINY + ["train.epochs=2"])
  summary = train_and_evaluate(cfg, str(tmp_path / "run"), progress="never",
                               log=lambda *a, **k: None)
  # Independently: the run's params on the raw test split, standardised
  # with the statistics of its (reduced) training split.
  raw = data.load("digits", standardize=False)
  held = data.hold_out(data.few_per_class(raw, 8, 0), 0.25, 0)
  stats = np.load(tmp_path / "run" / "stats.npz")
  mean = held.x_train.mean(0)
  np.testing.assert_allclose(stats["mean"], mean, rtol=1e-5, atol=1e-6)
  from funcnet import load_run
  run = load_run(str(tmp_path / "run"))
  z = np.asarray(run.predict(raw.x_test))  # standardised with stats.npz
  acc = float(np.mean(z.argmax(1) == raw.y_test))
  assert summary["test"]["accuracy"] == pytest.approx(acc, abs=1e-6)
  assert len(json.loads((tmp_path / "run" / "summary.json").read_text())[
      "test"]) >= 2
