"""Training from shards (issue 16): the same run as from memory, chunk by
chunk, resumable inside an epoch, each process reading only its rows.

The reference is always the in-memory path on the same data, standardised
with the shards' statistics: params, optimizer state and every metrics line
must be equal bit for bit (the chunked epoch carries the metric sums and
the dropout step index across calls, see ``train.make_chunk``)."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from funcnet import config, experiment, train
from funcnet.run import rundir
from funcnet.data import shard_writer, streamed
from funcnet.data.shards import Shards
from funcnet.errors import ConfigError, DataError
from helpers import metrics_lines, read_jsonl, start_processes, wait_all

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
for _k in ("JAX_ENABLE_X64", "XLA_FLAGS", "JAX_NUM_CPU_DEVICES"):
  ENV.pop(_k, None)


@pytest.fixture(scope="module")
def digits_shards(tmp_path_factory):
  dst = str(tmp_path_factory.mktemp("shards") / "digits")
  shard_writer.convert("digits", dst)
  return dst


def _both(shards, *sets):
  """(in-memory, streamed) fits of the default config with ``sets``."""
  sh = Shards(shards)
  out = []
  for name in ("digits", shards):
    cfg = config.load(None, [f"data.name={name!r}", *sets])
    ds = experiment.build_dataset(cfg, stats=(sh.mean, sh.std))
    assert streamed.is_streamed(ds) == (name == shards)
    out.append(experiment.Setup(cfg, ds=ds).fit())
  return out


def _equal(a, b):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _no_time(records):
  return [{k: v for k, v in r.items() if k != "time"} for r in records
          if "event" not in r]


@pytest.mark.parametrize("sets", [
    ["train.chunk_steps=7", "model.mlp.dropout=0.2"],   # 44 = 6 x 7 + 2
    ["train.chunk_steps=0", "train.accumulate=2", "model.mlp.dropout=0.2"],
], ids=["chunks-of-7-dropout", "whole-epoch-accumulate"])
def test_shards_train_exactly_as_memory(digits_shards, sets):
  mem, sh = _both(digits_shards, "train.epochs=3", *sets)
  assert sh.status == mem.status == "done"
  _equal(mem.state.params, sh.state.params)
  _equal(mem.state.opt_state, sh.state.opt_state)
  assert _no_time(mem.history) == _no_time(sh.history)


def test_the_streamed_training_split_is_never_read_whole(digits_shards):
  ds = streamed.load(digits_shards)
  assert len(ds.y_train) == 1437 and ds.x_train.shape == (1437, 64)
  with pytest.raises(DataError, match="streamed from shards"):
    np.asarray(ds.x_train)
  x, y = ds.x_train.read([5, 0, 5])
  raw = Shards(digits_shards)
  want = raw.read("train", np.array([5, 0, 5]))
  np.testing.assert_array_equal(x, want[0])
  np.testing.assert_array_equal(y, want[1])


def test_given_statistics_standardise_instead_of_the_shards_own(digits_shards):
  """Fine-tuning passes the statistics of the run it starts from: here a
  mean and std unlike the shards' own, applied as numpy would."""
  raw = Shards(digits_shards)
  rng = np.random.default_rng(0)
  mean = rng.normal(size=64) + 3.0
  std = rng.uniform(0.5, 2.0, size=64)
  ds = streamed.load(digits_shards, stats=(mean, std))
  rows = np.array([7, 1, 1436])
  x, y = ds.x_train.read(rows)
  x_raw, y_raw = raw.read("train", rows, standardize=False)
  assert x.dtype == np.float32
  np.testing.assert_array_equal(
      x, ((np.asarray(x_raw, np.float64) - mean) / std).astype(np.float32))
  np.testing.assert_array_equal(y, y_raw)
  xt_raw, _ = raw.read("test", np.arange(raw.n_test), standardize=False)
  np.testing.assert_array_equal(
      ds.x_test,
      ((np.asarray(xt_raw, np.float64) - mean) / std).astype(np.float32))
  np.testing.assert_array_equal(ds.info["mean"], mean.astype(np.float32))
  np.testing.assert_array_equal(ds.info["std"], std.astype(np.float32))
  # without standardisation: the stored values, as stored
  plain = streamed.load(digits_shards, standardize=False)
  assert "mean" not in plain.info
  np.testing.assert_array_equal(plain.x_train.read(rows)[0], x_raw)


def test_selecting_examples_of_shards_is_one_line(digits_shards):
  cfg = config.load(None, [f"data.name={digits_shards!r}",
                           "data.classes=[0, 1]"])
  with pytest.raises(ConfigError, match="data.classes.*before funcnet data "
                     "convert"):
    experiment.build_dataset(cfg)


def test_fit_stopped_inside_an_epoch_resumes_its_position_and_sums(
    digits_shards):
  """In-process (the command's SIGTERM/SIGKILL test is slow): a fit its
  chunk_callback stops at step 20 of epoch 2, resumed from that position,
  ends as the fit never stopped: the same params, and epoch 2's record,
  whose train loss is the mean over the steps before the stop (their
  sums carried over) and after."""
  cfg = config.load(None, [f"data.name={digits_shards!r}", "train.epochs=2",
                           "train.batch_size=32", "train.chunk_steps=10",
                           "model.mlp.hidden=[16]", "model.mlp.dropout=0.1"])
  setup = experiment.Setup(cfg)
  whole = setup.fit()
  seen = []

  def stop(state):
    seen.append((state.epoch, state.position["step"]))
    return (state.epoch, state.position["step"]) == (1, 20)

  cut = setup.fit(callbacks=train.Callbacks(on_chunk=stop))
  assert seen == [(0, 10), (0, 20), (0, 30), (0, 40), (1, 10), (1, 20)]
  position = cut.state.position
  assert cut.status == "stopped" and position["step"] == 20
  assert len(cut.history) == 1 and any(np.any(np.asarray(s) != 0)
                                       for s in position["sums"])
  # as a resume would read it back: JSON
  rest = setup.fit(state=cut.state._replace(
      position=json.loads(json.dumps(position))))
  assert rest.status == "done"
  _equal(whole.state.params, rest.state.params)
  assert _no_time(cut.history + rest.history) == _no_time(whole.history)


@pytest.mark.slow
def test_mnist1d_mlp_from_shards_equals_memory(tmp_path):
  """The issue's case: the MNIST-1D MLP config (3 x 1024, dropout 0.5,
  adamw, cosine schedule), float32, the same seed."""
  dst = str(tmp_path / "mnist1d")
  shard_writer.convert("mnist1d", dst)
  sh = Shards(dst)
  res = []
  for name in ("mnist1d", dst):
    cfg = config.load(os.path.join(ROOT, "configs", "mnist1d_mlp.toml"),
                      [f"data.name={name!r}", "train.epochs=2"])
    ds = experiment.build_dataset(cfg, stats=(sh.mean, sh.std))
    res.append(experiment.Setup(cfg, ds=ds).fit())
  _equal(res[0].state.params, res[1].state.params)
  assert _no_time(res[0].history) == _no_time(res[1].history)


def _funcnet(*args, timeout=300):
  return subprocess.run([sys.executable, "-m", "funcnet.cli", *args],
                        cwd=ROOT, env=ENV, capture_output=True, text=True,
                        timeout=timeout)


# 359 steps an epoch (batch 4), chunks of 20: a signal lands inside an epoch
# almost surely, and the run is long enough (300 epochs) to be stopped.
STREAM = ["--set", "train.epochs=300", "--set", "train.batch_size=4",
          "--set", "train.chunk_steps=20", "--set", "model.mlp.dropout=0.1",
          "--set", "run.plots=false", "--set", "run.progress=never"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_stopped_inside_an_epoch_then_resumed_equals_uninterrupted(
    digits_shards, tmp_path, how):
  sets = ["--set", f"data.name={digits_shards!r}", *STREAM,
          "--set", "train.epochs=20", "--set", "run.checkpoint_every_steps=300"]
  whole = str(tmp_path / "whole")
  r = _funcnet("train", *sets, "--out", whole)
  assert r.returncode == 0, r.stderr

  cut = str(tmp_path / "cut")
  proc = subprocess.Popen([sys.executable, "-m", "funcnet.cli", "train",
                           *sets, "--out", cut], cwd=ROOT, env=ENV,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  try:
    deadline = time.time() + 200
    ckpt = os.path.join(cut, "checkpoints")
    # After 3 epochs, at the checkpoint inside the 4th (global step 1217,
    # the first chunk's end past 1200): the signal lands about 220 steps
    # from the epoch's end. Waiting for the 3rd epoch's metrics line
    # instead sent it at that epoch's end, now and then before the run had
    # looked at its stop flag, and the run stopped "after epoch 3".
    while time.time() < deadline and not (
        os.path.isdir(ckpt) and any(
            int(s) > 3 * 359 and int(s) % 359
            for s in os.listdir(ckpt) if s.isdigit())):
      time.sleep(0.01)
    proc.send_signal(getattr(signal, how))
  finally:
    out, err = proc.communicate(timeout=120)
  if how == "SIGTERM":
    assert proc.returncode == 75, err[-2000:]
    assert "stopped after step" in err, err  # inside an epoch
  else:
    assert proc.returncode == -signal.SIGKILL
  assert len(metrics_lines(cut)) < 20

  r = _funcnet("train", "--out", cut, "--resume")
  assert r.returncode == 0, r.stderr
  assert ", step " in r.stdout, r.stdout  # resumed inside an epoch
  assert _no_time(metrics_lines(cut)) == _no_time(metrics_lines(whole))
  a, b = rundir.load_trained(whole), rundir.load_trained(cut)
  _equal(a.params, b.params)


@pytest.mark.slow
def test_two_processes_read_only_their_rows_and_train_like_one(
    digits_shards, tmp_path):
  sets = ["--set", f"data.name={digits_shards!r}", "--set", "train.epochs=2",
          "--set", "train.batch_size=32", "--set", "train.chunk_steps=10",
          "--set", "model.mlp.hidden=[16]", "--set", "optimizer.name=sgd",
          "--set", "optimizer.learning_rate=0.1", "--set", "run.plots=false"]
  one = str(tmp_path / "one")
  r = subprocess.run([sys.executable, "-m", "funcnet.cli", "train", *sets,
                      "--out", one], cwd=ROOT, env=ENV, capture_output=True,
                     text=True, timeout=300)
  assert r.returncode == 0, r.stderr

  mp = str(tmp_path / "mp")
  procs = start_processes(
      2, ["train", *sets, "--out", mp, "--set", "parallel.heartbeat_timeout=10"],
      cwd=ROOT, env=ENV,
      env_of=lambda i: {**ENV, "FUNCNET_TIMINGS": str(tmp_path / f"t{i}.json")})
  outs = wait_all(procs, timeout=400)
  assert [p.returncode for p in procs] == [0, 0], outs
  steps = 1437 // 32
  for i in range(2):
    with open(tmp_path / f"t{i}.json") as f:
      counts = json.load(f)["counts"]
    # its half of each step's 32 rows, for 2 epochs: never the other half
    assert counts["train_rows_read"] == 2 * steps * 16, counts
  a = read_jsonl(os.path.join(one, "metrics.jsonl"))
  b = read_jsonl(os.path.join(mp, "metrics.jsonl"))
  np.testing.assert_allclose([l["train_loss"] for l in a],
                             [l["train_loss"] for l in b], rtol=1e-5)
  pa, pb = rundir.load_trained(one).params, rundir.load_trained(mp).params
  for x, y in zip(jax.tree_util.tree_leaves(pa), jax.tree_util.tree_leaves(pb)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=2e-5)
