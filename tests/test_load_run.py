"""``funcnet.load_run``: a run folder in Python, checked against the files
it reads (orbax, stats.npz) and against ``funcnet eval``."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

import funcnet
from funcnet import cli, data
from funcnet.errors import CheckpointError, ConfigError
from funcnet.run import rundir
from test_readme import _block_after

TINY = ["train.epochs=1", "model.mlp.hidden=[8]", "data.train_per_class=8",
        "train.batch_size=40", "run.plots=false"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """One tiny digits MLP run, trained in process."""
  out = str(tmp_path_factory.mktemp("runs") / "tiny")
  argv = ["train", *[a for o in TINY for a in ("--set", o)],
          "--progress", "never", "--out", out]
  assert cli.main(argv) == 0
  return out


def test_the_names_are_at_the_top_level():
  from funcnet import experiment, train
  assert funcnet.fit is train.fit and funcnet.load_run is experiment.load_run
  assert {"fit", "load_run"} <= set(funcnet.__all__)


def test_params_are_the_checkpoints(run):
  loaded = funcnet.load_run(run)
  trained = rundir.load_trained(run)
  assert loaded.epoch == trained.epoch == 1
  for a, b in zip(jax.tree_util.tree_leaves(loaded.params),
                  jax.tree_util.tree_leaves(trained.params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with open(os.path.join(run, "config.json")) as f:
    assert loaded.config == json.load(f)
  assert loaded.model.kind == "mlp" and "LoadedRun" in repr(loaded)
  assert [r["epoch"] for r in loaded.metrics] == [1]


def test_predict_standardises_raw_inputs_with_the_runs_statistics(run):
  loaded = funcnet.load_run(run)
  raw = data.load("digits").x_test[:5]
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


def test_gradcheck_on_the_loaded_params(run):
  report = funcnet.load_run(run).gradcheck(batch=4)
  assert report.ok(), str(report)


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
  assert "test_accuracy" in capsys.readouterr().out
