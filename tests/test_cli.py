"""The real ``funcnet`` command in a subprocess: run folders, resume after
SIGKILL, divergence, gradcheck and eval."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from funcnet import config
from funcnet.run import checkpoints
from helpers import read_json, read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
ENV.pop("JAX_ENABLE_X64", None)


SMALL = ["--set", "train.epochs=4", "--set", "model.mlp.hidden=[16]",
         "--set", "run.checkpoint_every=2", "--set", "run.keep_checkpoints=2"]


def funcnet(*args, timeout=240):
  return subprocess.run([sys.executable, "-m", "funcnet.cli", *args], cwd=ROOT,
                        env=ENV, capture_output=True, text=True, timeout=timeout)


def _params(run):
  from funcnet import experiment
  with open(os.path.join(run, "config.json")) as f:
    setup = experiment.Setup(config.from_dict(json.load(f)))
  with jax.enable_x64(False):
    p, s = setup.init_state()
    return checkpoints.restore(os.path.join(run, "checkpoints"), p, s)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
  run = str(tmp_path_factory.mktemp("runs") / "small")
  r = funcnet("train", *SMALL, "--out", run)
  assert r.returncode == 0, r.stderr
  return run, r


def test_train_writes_every_file_of_the_run_folder(small_run):
  run, r = small_run
  assert f"run folder {run}" in r.stdout
  assert "Traceback" not in r.stderr
  names = set(os.listdir(run))
  assert {"config.json", "metrics.jsonl", "summary.json", "loss.png",
          "grad_norms.png", "checkpoints"} <= names

  cfg = read_json(os.path.join(run, "config.json"))
  assert set(config.flatten(cfg)) == set(config.flatten(config.DEFAULTS))
  assert cfg["train"]["epochs"] == 4 and cfg["model"]["mlp"]["hidden"] == [16]

  lines = read_jsonl(os.path.join(run, "metrics.jsonl"))
  assert [l["epoch"] for l in lines] == [1, 2, 3, 4]
  steps = 1437 // 32
  assert [l["step"] for l in lines] == [steps * e for e in (1, 2, 3, 4)]
  for l in lines:
    assert {"train_loss", "test_loss", "test_accuracy", "lr", "grad_norms",
            "time"} <= set(l)
    assert set(l["grad_norms"]) == {"layer 1", "layer 2"}
    assert all(v > 0 for v in l["grad_norms"].values())
  assert lines[-1]["train_loss"] < lines[0]["train_loss"]

  s = read_json(os.path.join(run, "summary.json"))
  assert s["status"] == "finished" and s["total_steps"] == 4 * steps
  assert s["test_accuracy"] == lines[-1]["test_accuracy"] > 0.6
  assert s["device_kind"] and s["steps_per_s"] > 0
  assert s["best"]["test_accuracy"] == max(l["test_accuracy"] for l in lines)
  # compute: a [64, 16, 10] MLP at batch 32 (products by hand; the first
  # layer's twice in a step, no dC/dx), XLA's count within 10%.
  c = s["compute"]
  assert (c["params"], c["param_bytes"]) == (1210, 4 * 1210)
  products = 32 * (2 * 2 * 64 * 16 + 3 * 2 * 16 * 10)
  assert 2 * (64 * 16 + 16 * 10) < c["forward_flops_per_example"] < 2600
  assert products < c["train_step_flops"] < 1.2 * products
  assert c["total_train_flops"] == c["train_step_flops"] * 4 * steps
  assert abs(c["train_step_flops"] / c["xla_train_step_flops"] - 1) < 0.1
  assert "compute params 1,210" in r.stdout

  for png in ("loss.png", "grad_norms.png"):
    with open(os.path.join(run, png), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  # Checkpoints at epochs 2 and 4, the last two kept.
  assert checkpoints.latest_epoch(os.path.join(run, "checkpoints")) == 4


def test_eval_reproduces_the_final_test_metrics(small_run):
  run, _ = small_run
  r = funcnet("eval", "--run", run)
  assert r.returncode == 0, r.stderr
  out = json.loads(r.stdout)
  s = read_json(os.path.join(run, "summary.json"))
  assert out["epoch"] == 4
  assert out["test_accuracy"] == pytest.approx(s["test_accuracy"], abs=1e-6)


def test_existing_run_needs_resume(small_run):
  run, _ = small_run
  r = funcnet("train", *SMALL, "--out", run)
  assert r.returncode == 2
  assert "already holds checkpoints" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
  args = ["--set", "train.epochs=30", "--set", "train.batch_size=8",
          "--set", "model.mlp.hidden=[32]", "--set", "run.checkpoint_every=1",
          "--set", "run.plots=false"]
  whole = str(tmp_path / "whole")
  r = funcnet("train", *args, "--out", whole)
  assert r.returncode == 0, r.stderr

  cut = str(tmp_path / "cut")
  proc = subprocess.Popen([sys.executable, "-m", "funcnet.cli", "train", *args,
                           "--out", cut], cwd=ROOT, env=ENV,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + 200
  ckpt = os.path.join(cut, "checkpoints")
  while time.time() < deadline:
    e = checkpoints.latest_epoch(ckpt) if os.path.isdir(ckpt) else None
    if e is not None and e >= 3:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  proc.stderr.close()
  killed_at = checkpoints.latest_epoch(ckpt)
  assert killed_at is not None and 3 <= killed_at < 30, killed_at

  r = funcnet("train", "--out", cut, "--resume")
  assert r.returncode == 0, r.stderr
  assert f"resuming {cut} from epoch {killed_at}" in r.stdout
  e1, p1, s1 = _params(whole)
  e2, p2, s2 = _params(cut)
  assert e1 == e2 == 30
  for a, b in zip(jax.tree_util.tree_leaves((p1, s1)),
                  jax.tree_util.tree_leaves((p2, s2))):
    np.testing.assert_array_equal(a, b)
  lines = read_jsonl(os.path.join(cut, "metrics.jsonl"))
  assert [l["epoch"] for l in lines] == list(range(1, 31))


def test_divergence_exits_3_and_keeps_the_last_good_checkpoint(tmp_path):
  run = str(tmp_path / "nan")
  r = funcnet("train", "--set", "data.name=regression", "--set", "train.loss=mse",
              "--set", "model.mlp.output_activation=identity",
              "--set", "model.mlp.activation=tanh",
              "--set", "optimizer.name=sgd", "--set", "optimizer.learning_rate=20.0",
              "--set", "schedule.warmup_steps=2000", "--set", "train.epochs=20",
              "--set", "run.checkpoint_every=1", "--out", run)
  assert r.returncode == 3, r.stderr
  assert "loss became non-finite at epoch" in r.stderr
  assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
  last = checkpoints.latest_epoch(os.path.join(run, "checkpoints"))
  assert last is not None and last >= 1
  epoch, params, _ = _params(run)
  assert all(np.all(np.isfinite(p)) for p in jax.tree_util.tree_leaves(params))
  s = read_json(os.path.join(run, "summary.json"))
  assert s["status"] == "diverged"


def test_textbook_xor_config_classifies_all_four_points(tmp_path):
  run = str(tmp_path / "xor")
  r = funcnet("train", "--config", "configs/xor_textbook.toml", "--out", run)
  assert r.returncode == 0, r.stderr
  lines = read_jsonl(os.path.join(run, "metrics.jsonl"))
  assert len(lines) == 3000
  assert lines[-1]["train_loss"] < 0.1 * lines[0]["train_loss"]
  assert lines[-1]["test_accuracy"] == 1.0


# In a subprocess; tests/test_runs.py checks the same command in-process,
# for every shipped config, in the fast suite.
@pytest.mark.slow
def test_gradcheck_command_prints_the_table(tmp_path):
  r = funcnet("gradcheck", "--config", "configs/compare_grads.toml")
  assert r.returncode == 0, r.stdout + r.stderr
  assert "layer 1 W" in r.stdout and "layer 3 b" in r.stdout
  assert "OK" in r.stdout


def test_help_lists_the_commands():
  r = funcnet("--help")
  assert r.returncode == 0
  for cmd in ("train", "gradcheck", "eval"):
    assert cmd in r.stdout
  r = funcnet("train", "--help")
  assert "--resume" in r.stdout and "--set" in r.stdout


def test_every_command_module_is_in_the_table_once():
  # a new command is one module in funcnet/cli/ plus its entry in COMMANDS
  from funcnet import cli
  folder = os.path.dirname(cli.__file__)
  modules = {f[:-3] for f in os.listdir(folder) if f.endswith(".py")}
  modules -= {"__init__", "__main__", "common", "parser"}
  assert {c.__name__.rsplit(".", 1)[1] for c in cli.COMMANDS} == modules
  names = [c.NAME for c in cli.COMMANDS]
  assert len(set(names)) == len(names)
  for c in cli.COMMANDS:
    assert c.HELP and c.DESCRIPTION and callable(c.add_arguments) \
        and callable(c.run)
