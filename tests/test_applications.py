"""The shipped application configs, through the real code path.

Every ``configs/*.toml`` trains for one epoch with tiny overrides and passes
``funcnet gradcheck`` (both via :func:`funcnet.cli.main`, in process: the
same code the console script runs). The recommenders beat the global-mean
baseline on the generated ratings, and a user's ratings CSV trains, evaluates
and gradchecks end to end.
"""

import glob
import json
import os

import numpy as np
import pytest

from funcnet import cli, config, data, experiment
from helpers import cpu_sized, read_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.basename(p)[:-5]
                 for p in glob.glob(os.path.join(ROOT, "configs", "*.toml")))
# Over ~10 s each for one epoch plus the gradient check (MNIST-1D's
# recurrent, attention and wide models), or a second case of a path the
# fast ones cover (compare_grads and digits_pretrain_0to4 are MLPs on
# digits like digits_mlp; ratings_mf is the recommender path of ratings_ncf;
# mnist1d_logistic an MLP without hidden layers; digits_mlp_adversarial
# digits_mlp's MLP, its adversarial step tests/test_adversarial_training.py's;
# mnist1d_cnn_small and its distilled twin mnist1d_cnn's CNN, narrower;
# mnist1d_resnet: tests/test_resnet.py's fast tests check its backward,
# gradcheck rows and resume, and its epoch here took 187 s at the fast
# loop's XLA optimisation level 0, against 38 s at the default level).
SLOW = {"mnist1d_cnn", "mnist1d_gru", "mnist1d_mlp", "mnist1d_transformer",
        "compare_grads", "digits_pretrain_0to4", "ratings_mf",
        "mnist1d_logistic", "text_gpt_large", "digits_mlp_adversarial",
        "mnist1d_mlp_distilled", "mnist1d_cnn_small",
        "mnist1d_cnn_small_distilled", "mnist1d_cnn_pretrain_contrastive",
        "mnist1d_resnet"}
# Float64 finite differences cost a forward per entry checked: the CPU
# GPT's fast check runs at a quarter of its width and half its depth (the
# slow test_runs.py gradcheck checks it at full size).
FAST_SIZED = {"text_gpt": ["model.gpt.n_layers=2", "model.gpt.d_model=32"]}
TINY = ["train.epochs=1", "run.plots=false", "run.progress=never"]


def tiny(name) -> list[str]:
  """Overrides that make ``configs/<name>.toml`` train in a second or two:
  one epoch, for classification 8 labelled examples per class, for text
  two batches of windows and four windows of validation (a whole epoch of
  text_gpt is minutes: it once made CI time out)."""
  cfg = config.load(os.path.join(ROOT, "configs", f"{name}.toml"))
  out = list(TINY) + cpu_sized(name) + FAST_SIZED.get(name, [])
  if cfg["data"]["name"] == "text":
    block = cfg["data"]["block_size"]
    batch = min(cfg["train"]["batch_size"], 8)
    # the built-in text trains on ~418k tokens: a stride of a 16th of it
    # leaves 16 windows, two batches
    out += [f"data.stride={418_000 // (2 * batch)}",
            f"data.val_tokens={4 * block + 1}", f"train.batch_size={batch}"]
  if cfg["data"]["name"] in ("digits", "mnist1d"):
    per_class = cfg["data"]["train_per_class"] or 8
    n_classes = len(cfg["data"]["classes"]) or 10
    out += [f"data.train_per_class={per_class}",
            f"train.batch_size={min(cfg['train']['batch_size'], per_class * n_classes)}"]
  return out


def main(*argv) -> int:
  return cli.main([str(a) for a in argv])


def sets(overrides):
  return [x for o in overrides for x in ("--set", o)]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  """A pre-trained digits 0-4 run, for configs/digits_finetune.toml."""
  run = str(tmp_path_factory.mktemp("runs") / "pre")
  assert main("train", "--config", os.path.join(ROOT, "configs",
                                                "digits_pretrain_0to4.toml"),
              *sets(TINY), "--out", run) == 0
  return run


def test_every_config_is_in_the_table():
  for name in ("mnist1d_logistic", "mnist1d_mlp", "mnist1d_cnn", "mnist1d_gru",
               "mnist1d_transformer", "digits_pretrain_0to4",
               "digits_finetune", "ratings_mf", "ratings_ncf"):
    assert name in CONFIGS


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in CONFIGS])
def test_config_trains_one_epoch_manually_and_passes_gradcheck(name, tmp_path, pretrained,
                                                      capsys):
  path = os.path.join(ROOT, "configs", f"{name}.toml")
  overrides = tiny(name)
  if config.load(path)["finetune"]["from_run"]:
    overrides.append(f"finetune.from_run={pretrained!r}")
  if config.load(path)["distill"]["teacher"]:  # a tiny teacher of the same data
    teacher = str(tmp_path / "teacher")
    assert main("train", *sets(overrides + ["model.kind=mlp",
                                            "model.mlp.hidden=[8]"]),
                "--set", f"data.name={config.load(path)['data']['name']!r}",
                "--out", teacher) == 0
    overrides.append(f"distill.teacher={teacher!r}")
  run = tmp_path / "run"
  # trained with the hand-written backward: every shipped config trains
  # with train.grads = "manual" (autodiff training is every other test's)
  assert main("train", "--config", path, *sets(overrides + ["train.grads=manual"]),
              "--out", run) == 0
  summary = read_json(run / "summary.json")
  assert summary["status"] == "finished" and summary["epochs"] == 1
  loss = summary["final"]["train_loss"]
  assert np.isfinite(loss)
  capsys.readouterr()
  # a text example is block_size positions: one is as many terms as digits'
  # batch of 4 has pixels, and finite differences cost a forward each
  batch = 1 if config.load(path)["data"]["name"] == "text" else 4
  code = main("gradcheck", "--config", path, *sets(overrides), "--batch", batch)
  out = capsys.readouterr().out
  assert code == 0, out
  assert "OK" in out


def test_the_table_script_prints_every_row_with_the_references(capsys):
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      "mnist1d_table", os.path.join(ROOT, "scripts", "mnist1d_table.py"))
  table = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(table)
  assert {r[1] for r in table.ROWS} <= set(CONFIGS)
  assert table.main(["--only", "logistic", "--set", "train.epochs=1"]) == 0
  out = capsys.readouterr().out
  assert "| logistic | `configs/mnist1d_logistic.toml` |" in out
  assert "32.0%" in out and "96.0%" in out  # the benchmark's numbers


def global_mean_rmse(ds) -> float:
  return float(np.sqrt(np.mean((ds.y_test - ds.y_train.mean()) ** 2)))


@pytest.mark.parametrize("name, epochs", [
    ("ratings_mf", 15), pytest.param("ratings_ncf", 100, marks=pytest.mark.slow)])
def test_recommender_beats_the_global_mean(name, epochs, tmp_path):
  cfg = config.load(os.path.join(ROOT, "configs", f"{name}.toml"),
                    [f"train.epochs={epochs}", "run.plots=false"])
  summary = experiment.train_and_evaluate(cfg, str(tmp_path), progress="never",
                                          log=lambda *a, **k: None)
  ds = data.ratings()
  baseline, floor = global_mean_rmse(ds), ds.info["noise_std"]
  assert floor < summary["test_rmse"] < 0.8 * baseline
  assert summary["test_mae"] < summary["test_rmse"]


def test_ratings_csv_trains_evaluates_and_gradchecks(tmp_path, capsys):
  # The generated ratings written as a user's file: ids from 1 (as in
  # MovieLens) and an extra column that is not used.
  ds = data.ratings(n_users=60, n_items=40, density=0.5)
  x = np.concatenate([ds.x_train, ds.x_test]) + 1
  y = np.concatenate([ds.y_train, ds.y_test])
  path = tmp_path / "ratings.csv"
  path.write_text("user,item,rating,timestamp\n" + "".join(
      f"{u},{i},{r:.5f},0\n" for (u, i), r in zip(x, y)))
  overrides = [f"data.name={str(path)!r}", "data.task=ratings",
               "train.epochs=30", "run.plots=false"]
  run = tmp_path / "run"
  cfg_path = os.path.join(ROOT, "configs", "ratings_mf.toml")
  assert main("train", "--config", cfg_path, *sets(overrides), "--out", run) == 0
  saved = read_json(run / "config.json")
  setup = experiment.Setup(config.from_dict(saved))
  assert setup.ds.info["n_users"] == 61 and setup.ds.info["n_items"] == 41
  assert setup.model.spec["n_users"] == 61
  summary = read_json(run / "summary.json")
  assert summary["test_rmse"] < 0.9 * global_mean_rmse(setup.ds)
  capsys.readouterr()
  assert main("eval", "--run", run) == 0
  evaluated = json.loads(capsys.readouterr().out)
  assert evaluated["test_rmse"] == pytest.approx(summary["test_rmse"], rel=1e-5)
  assert main("gradcheck", "--config", cfg_path, *sets(overrides),
              "--batch", 4) == 0
