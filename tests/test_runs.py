"""The run folder (funcnet.run.rundir) through the command, in-process: eval and
fine-tuning read a run only through it, resume continues it, gradcheck runs
every shipped config, and TensorBoard events mirror metrics.jsonl.

In-process through ``funcnet.cli.main`` (what the console script runs) with
small runs, so these are fast; tests/test_cli.py runs the real command in
subprocesses."""

import glob
import json
import os
import pathlib
import sys

import jax
import numpy as np
import pytest

from funcnet import cli, config, data
from funcnet.errors import ConfigError
from funcnet.run import rundir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--set", "model.mlp.hidden=[8]", "--set", "run.plots=false",
        "--set", "run.progress=never"]


def _train(out, *sets, epochs=2):
  argv = ["train", "--out", str(out), "--set", f"train.epochs={epochs}", *TINY]
  for s in sets:
    argv += ["--set", s]
  assert cli.main(argv) == 0
  return str(out)


def _leaves(tree):
  return [np.asarray(a) for a in jax.tree_util.tree_leaves(tree)]


def test_eval_reads_checkpoints_where_run_checkpoint_dir_put_them(tmp_path, capsys):
  run = _train(tmp_path / "run", f"run.checkpoint_dir={str(tmp_path / 'ck')!r}")
  assert not os.path.exists(os.path.join(run, "checkpoints"))
  assert os.listdir(tmp_path / "ck") == ["2"]
  capsys.readouterr()
  assert cli.main(["eval", "--run", run]) == 0
  out = json.loads(capsys.readouterr().out)
  summary = rundir.read_summary(run)
  assert out["epoch"] == 2
  assert out["test_accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-7)
  assert out["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-6)


def test_eval_of_a_folder_that_is_no_run_is_one_line(tmp_path, capsys):
  assert cli.main(["eval", "--run", str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "has no config.json" in err


def test_fine_tuning_reads_the_saved_statistics_not_the_old_data(tmp_path,
                                                                 monkeypatch):
  from funcnet import config, experiment
  run = _train(tmp_path / "pre", "data.classes=[0, 1, 2, 3, 4]")
  # the statistics are those of the pre-training split, in numpy
  ds = data.select_classes(data.load("digits", standardize=False), [0, 1, 2, 3, 4])
  mean, std = rundir.read_stats(run)
  np.testing.assert_allclose(mean, ds.x_train.mean(0), rtol=1e-6, atol=1e-6)
  assert std.shape == mean.shape == ds.x_train.shape[1:]

  loaded = []
  real_load = data.load
  monkeypatch.setattr(data, "load", lambda *a, **k: loaded.append(a) or real_load(*a, **k))
  cfg = config.load(None, ["data.classes=[5, 6, 7, 8, 9]", "model.mlp.hidden=[8]",
                           f"finetune.from_run={run!r}"])
  setup = experiment.Setup(cfg)
  assert loaded == [("digits",)]          # this run's data, once; not the old run's
  np.testing.assert_array_equal(setup.pretrained.stats[0], mean)
  # this data is scaled with the old run's statistics, not its own
  new = data.select_classes(real_load("digits", standardize=False),
                            [5, 6, 7, 8, 9])
  np.testing.assert_allclose(setup.ds.x_train, (new.x_train - mean) / std,
                             rtol=1e-5, atol=1e-5)
  # and its body is the old run's last checkpoint
  trained = rundir.load_trained(run)
  params, _ = setup.init_state()
  for a, b in zip(_leaves(params[:-1]), _leaves(trained.params[:-1])):
    np.testing.assert_array_equal(a, b)


def test_resume_through_the_command_equals_an_uninterrupted_run(tmp_path):
  whole = _train(tmp_path / "whole", "run.checkpoint_every=1", epochs=4)
  part = _train(tmp_path / "part", "run.checkpoint_every=1", epochs=2)
  assert cli.main(["train", "--out", part, "--resume",
                   "--set", "train.epochs=4"]) == 0
  a, b = rundir.load_trained(whole), rundir.load_trained(part)
  assert a.epoch == b.epoch == 4
  for x, y in zip(_leaves(a.params), _leaves(b.params)):
    np.testing.assert_array_equal(x, y)
  strip = lambda rs: [{k: v for k, v in r.items() if k != "time"} for r in rs]
  assert strip(rundir.read_metrics(whole)) == strip(rundir.read_metrics(part))


def test_resume_of_a_folder_that_is_no_run_is_one_line(tmp_path, capsys):
  assert cli.main(["train", "--out", str(tmp_path), "--resume"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "has no config.json" in err


CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.toml")))


# test_applications.py trains every shipped config for an epoch and
# gradchecks it, at the model size it ships with but for its FAST_SIZED
# (the character GPT, narrower there) and helpers.py's CPU_SIZED (the GPU
# GPT, at the same CPU size in both). Here, the command as a user runs it
# on a config as shipped, for what that does not cover: the two that need
# something special (four examples; a pre-trained run first: fast), the
# distilled ones with the teacher run their config names, and the character
# GPT at its shipped width and depth. (It checked every config once: 98 s
# of CI checking again the models test_applications.py checks.)
FAST = ("xor_textbook.toml", "digits_finetune.toml")
SHIPPED = FAST + ("_distilled.toml", "text_gpt.toml")


@pytest.mark.parametrize("path", [
    pytest.param(p, marks=[] if p.endswith(FAST) else [pytest.mark.slow])
    for p in CONFIGS if p.endswith(SHIPPED)], ids=os.path.basename)
def test_gradcheck_passes_on_a_shipped_config(path, capsys, tmp_path,
                                               monkeypatch):
  if path.endswith("digits_finetune.toml"):
    # its documented first step: the pre-training run it starts from, in
    # runs/ of the working directory (one epoch is enough for a body)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--config", path.replace("finetune",
                                                       "pretrain_0to4"),
                     "--out", "runs/digits_pretrain_0to4", "--set",
                     "train.epochs=1", "--set", "run.plots=false"]) == 0
    capsys.readouterr()
  teacher = config.load(path)["distill"]["teacher"]
  if teacher:
    # likewise: the teacher run it distils from (one epoch of its config)
    monkeypatch.chdir(tmp_path)
    shipped = os.path.join(os.path.dirname(path),
                           os.path.basename(teacher) + ".toml")
    assert cli.main(["train", "--config", shipped, "--out", teacher, "--set",
                     "train.epochs=1", "--set", "run.plots=false"]) == 0
    capsys.readouterr()
  extra = []
  if config.load(path)["data"]["name"] == "text":
    # one example, block_size positions (the character GPT: 64, each a
    # float64 forward per entry checked); the hand-written backward across
    # a batch is tests/test_backward_gpt.py's (batch 2, against jax.grad)
    extra += ["--batch", "1"]
  assert cli.main(["gradcheck", "--config", path, *extra]) == 0
  out = capsys.readouterr().out
  assert "\nOK (tolerances" in out
  rows = [l for l in out.splitlines()[3:] if l and not l.startswith(("OK", "-"))]
  assert len(rows) >= 2           # a row per parameter array, at least W and b


def test_tensorboard_events_mirror_the_metrics(tmp_path):
  sys.path.insert(0, os.path.dirname(__file__))
  from test_tensorboard import _read_events
  run = _train(tmp_path / "run", "run.tensorboard=true", epochs=3)
  events = [f for f in os.listdir(run) if f.startswith("events.out.tfevents")]
  assert len(events) == 1
  got = {(v.tag, e.step): v.simple_value
         for e in _read_events(pathlib.Path(run, events[0]))
         for v in e.summary.value}
  records = rundir.read_metrics(run)
  assert len(records) == 3
  for r in records:
    assert got[("loss/train", r["step"])] == pytest.approx(r["train_loss"], rel=1e-6)
    assert got[("test/accuracy", r["step"])] == pytest.approx(r["test_accuracy"], rel=1e-6)
    for layer, norm in r["grad_norms"].items():
      assert got[("grad_norm/" + layer.replace(" ", "_"), r["step"])] == \
          pytest.approx(norm, rel=1e-6)


def test_tensorboard_without_the_extra_is_one_line(tmp_path, monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)
  assert cli.main(["train", "--out", str(tmp_path / "run"), *TINY,
                   "--set", "run.tensorboard=true"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and 'pip install -e ".[tensorboard]"' in err


def test_a_loss_that_climbs_but_stays_finite_exits_3_as_diverged(tmp_path,
                                                                  capsys):
  """A linear regression under SGD with eta above 2 / lambda_max: its loss
  grows by orders of magnitude each epoch, finite (before issue 22 such a
  run ended "finished" with a loss of 1e20). It stops at the first epoch
  past LOSS_GROWTH_LIMIT x max(first epoch's loss, 1), exit 3, and keeps
  the checkpoint before it."""
  from funcnet import train
  from funcnet.run import checkpoints
  run = str(tmp_path / "grows")
  assert cli.main(["train", "--set", "data.name=regression", "--set",
                   "train.loss=mse", "--set",
                   "model.mlp.output_activation=identity", "--set",
                   "model.mlp.hidden=[]", "--set", "optimizer.name=sgd",
                   "--set", "optimizer.learning_rate=2.2", "--set",
                   "train.epochs=30", "--set", "run.checkpoint_every=1",
                   "--progress", "never", "--out", run]) == 3
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "loss grew to" in err, err
  losses = [r["train_loss"] for r in rundir.read_metrics(run)]
  assert all(np.isfinite(losses))
  limit = train.LOSS_GROWTH_LIMIT * max(losses[0], 1.0)
  assert losses[-1] > limit and max(losses[:-1]) <= limit
  assert checkpoints.latest_epoch(os.path.join(run, "checkpoints")) == \
      len(losses) - 1
  with open(os.path.join(run, "summary.json")) as f:
    assert json.load(f)["status"] == "diverged"


def test_the_run_lock_is_exclusive_in_process(tmp_path):
  """flock locks belong to open files, so one process can test them: a
  second lock of the folder, and a shared lock another reader takes, are
  refused while the first is held (the command's test is slow)."""
  import fcntl
  run = str(tmp_path / "run")
  rundir.check_unlocked(run)  # nothing there yet: fine, nothing created
  assert not os.path.exists(run)
  with rundir.lock(run):
    with open(os.path.join(run, rundir.LOCK)) as f:
      assert f.read().startswith(f"pid {os.getpid()} on ")
    with pytest.raises(ConfigError, match=f"is being written by pid "
                                          f"{os.getpid()} on "):
      with rundir.lock(run):
        pass
    with pytest.raises(ConfigError, match="is being written by pid"):
      rundir.check_unlocked(run)
    fd = os.open(os.path.join(run, rundir.LOCK), os.O_RDONLY)
    try:
      with pytest.raises(BlockingIOError):
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    finally:
      os.close(fd)
  rundir.check_unlocked(run)  # released when the with ends
  with rundir.lock(run):
    pass
