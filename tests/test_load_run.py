"""``funcnet.load_run``: a run folder in Python, checked against the files
it reads (orbax, stats.npz) and against ``funcnet eval``."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

import funcnet
from funcnet import cli, config, data, experiment
from funcnet.errors import CheckpointError, ConfigError
from funcnet.run import checkpoints, rundir
from test_checkpoint_integrity import DAMAGES
from test_readme import _block_after

TINY = ["train.epochs=2", "run.checkpoint_every=1", "model.mlp.hidden=[8]",
        "data.train_per_class=8", "train.batch_size=40", "run.plots=false"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """One tiny digits MLP run (two epochs, a checkpoint each), trained in
  process."""
  out = str(tmp_path_factory.mktemp("runs") / "tiny")
  argv = ["train", *[a for o in TINY for a in ("--set", o)],
          "--progress", "never", "--out", out]
  assert cli.main(argv) == 0
  return out


def test_the_names_are_at_the_top_level():
  from funcnet import experiment, train
  assert funcnet.fit is train.fit and funcnet.load_run is experiment.load_run
  assert {"fit", "load_run"} <= set(funcnet.__all__)


def test_params_are_the_newest_checkpoints(run):
  loaded = funcnet.load_run(run)
  # read independently: the whole training state, as a resume restores it
  with open(os.path.join(run, "config.json")) as f:
    cfg = json.load(f)
  params, opt_state = experiment.Setup(config.from_dict(cfg)).init_state()
  epoch, want, _ = checkpoints.restore(os.path.join(run, "checkpoints"),
                                          params, opt_state)
  assert loaded.epoch == epoch == 2
  for a, b in zip(jax.tree_util.tree_leaves(loaded.params),
                  jax.tree_util.tree_leaves(want), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert loaded.config == cfg
  assert loaded.model.kind == "mlp" and "LoadedRun" in repr(loaded)
  assert [r["epoch"] for r in loaded.metrics] == [1, 2]
  assert funcnet.load_run(run, epoch=1).epoch == 1


def test_a_damaged_newest_checkpoint_falls_back_and_nothing_moves(run,
                                                                  tmp_path,
                                                                  capsys):
  copy = tmp_path / "damaged"
  shutil.copytree(run, copy)
  DAMAGES["truncated"](str(copy / "checkpoints" / "2"))
  before = sorted(os.listdir(copy / "checkpoints"))
  loaded = funcnet.load_run(copy)
  assert loaded.epoch == 1
  err = capsys.readouterr().err
  assert "is damaged" in err and "falling back to epoch 1" in err
  assert sorted(os.listdir(copy / "checkpoints")) == before
  np.testing.assert_array_equal(
      np.asarray(jax.tree_util.tree_leaves(loaded.params)[0]),
      np.asarray(jax.tree_util.tree_leaves(
          funcnet.load_run(run, epoch=1).params)[0]))


def test_predict_standardises_raw_inputs_with_the_runs_statistics(run):
  loaded = funcnet.load_run(run)
  raw = data.load("digits", standardize=False).x_test[:5]
  with np.load(os.path.join(run, "stats.npz")) as f:
    x = ((raw - f["mean"].astype(np.float64)) / f["std"]).astype(np.float32)
  want = loaded.model.apply(loaded.params, x)
  np.testing.assert_allclose(np.asarray(loaded.predict(raw)), np.asarray(want),
                             rtol=1e-6, atol=1e-7)
  # the dataset is standardised the same way
  np.testing.assert_allclose(loaded.dataset.x_test[:5], x, rtol=1e-6, atol=1e-6)


def test_evaluate_is_what_funcnet_eval_prints(run, capsys):
  loaded = funcnet.load_run(run)
  assert cli.main(["eval", "--run", run]) == 0
  printed = json.loads(capsys.readouterr().out)
  assert loaded.evaluate() == printed
  summary = rundir.read_summary(run)
  assert printed["test_accuracy"] == pytest.approx(summary["test_accuracy"])
  assert loaded.evaluate("train")["train_loss"] > 0
  with pytest.raises(ConfigError, match="expected 'test' or 'train'"):
    loaded.evaluate("valid")


def test_what_is_missing_is_one_line(run, tmp_path):
  with pytest.raises(ConfigError, match="no such run folder") as e:
    funcnet.load_run(tmp_path / "nope")
  assert "\n" not in str(e.value)
  for name in ("model.json", "config.json"):
    bad = tmp_path / name
    shutil.copytree(run, bad)
    os.remove(bad / name)
    with pytest.raises(ConfigError, match=f"has no {name}") as e:
      funcnet.load_run(bad)
    assert "\n" not in str(e.value)
  bad = tmp_path / "no_checkpoints"
  shutil.copytree(run, bad)
  shutil.rmtree(bad / "checkpoints")
  with pytest.raises(CheckpointError, match="no checkpoint") as e:
    funcnet.load_run(bad)
  assert "\n" not in str(e.value)


def test_the_readme_section_runs_as_written(run, capsys):
  code = _block_after("## Loading a run in Python")
  code = code.replace('"runs/digits_mlp"', repr(run))
  exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})
  out = capsys.readouterr().out
  assert "mlp 2 adam" in out and "'test_accuracy'" in out
  # its last line, the gradient check at the trained params, passes
  assert out.rstrip().splitlines()[-1].startswith("OK "), out


def test_a_float64_run_in_32_bit_jax_is_one_line(run, tmp_path):
  copy = tmp_path / "f64"
  shutil.copytree(run, copy)
  with open(copy / "config.json") as f:
    cfg = json.load(f)
  cfg["train"]["dtype"] = "float64"
  with open(copy / "config.json", "w") as f:
    json.dump(cfg, f)
  with pytest.raises(ConfigError, match="needs 64-bit JAX") as e:
    funcnet.load_run(copy)
  assert "\n" not in str(e.value)
