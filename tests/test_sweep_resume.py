"""A sweep stopped after an epoch and resumed ends as one never stopped.

The reference is the same sweep run through without a stop: its table
(``results.csv`` but the wall times), every variant's history (but each
record's ``time``) and final params must be equal bit for bit, since a
resumed group restores its stacked params, optimizer states and monitors
from its checkpoint and draws epoch ``e``'s order and keys from ``(key,
e)`` (funcnet.sweep.resume). The stop is a real SIGTERM to this process,
sent from the sweep's progress line after epoch 1, so the group saves
after epoch 2 (the epoch it arrived in), with ``run.checkpoint_every``
left at 10: the signal's own save, not the cadence's.

One compiled program serves every sweep of this module (``cache``): each
of them is the same group, and what is under test is the state around it.
"""

import csv
import hashlib
import json
import os
import signal

import jax
import numpy as np
import pytest

from funcnet import config, sweep
from funcnet.errors import Preempted
from funcnet.run import rundir
from funcnet.sweep import engine, resume

BASE = ["train.epochs=3", "model.mlp.hidden=[8]", "train.batch_size=64",
        "run.plots=false"]
GRID = {"optimizer.learning_rate": [0.01, 0.002], "seed": [0, 1]}
CACHE = {}  # the group's compiled program, shared by this module's sweeps


def _table(out):
  """results.csv without its wall-time column."""
  with open(os.path.join(out, "results.csv")) as f:
    rows = list(csv.reader(f))
  assert rows[0][-1] == "group wall s"
  return [r[:-1] for r in rows]


def _histories(out):
  with open(os.path.join(out, "sweep.json")) as f:
    doc = json.load(f)
  return [[{k: v for k, v in h.items() if k != "time"} for h in v["history"]]
          for v in doc["variants"]]


def _digest(folder):
  """sha256 of every file's name and bytes but the lock's (which holds the
  last holder's pid: this test takes it too)."""
  h = hashlib.sha256()
  for root, dirs, files in sorted(os.walk(folder)):
    dirs.sort()
    for name in sorted(set(files) - {rundir.LOCK}):
      p = os.path.join(root, name)
      h.update(os.path.relpath(p, folder).encode())
      with open(p, "rb") as f:
        h.update(f.read())
  return h.hexdigest()


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
  """``(folder, result)`` of the sweep never stopped."""
  out = str(tmp_path_factory.mktemp("whole") / "whole")
  ref = sweep.run(config.load(None, BASE), GRID, out=out, cache=CACHE,
                  log=lambda *a: None)
  assert len({v.final["test_loss"] for v in ref.variants}) == 4
  return out, ref


def _stop_after_epoch_1(line, signum=signal.SIGTERM):
  if "epoch 1/3" in line:
    os.kill(os.getpid(), signum)  # handled by the sweep's Watch


def test_a_sweep_stopped_by_sigterm_resumes_to_the_uninterrupted_table(
    tmp_path, monkeypatch, whole):
  whole, ref = whole
  base = config.load(None, BASE)
  cut = str(tmp_path / "cut")
  with pytest.raises(Preempted, match="after epoch 2 of group 1") as e:
    sweep.run(base, GRID, out=cut, cache=CACHE, log=_stop_after_epoch_1)
  assert e.value.exit_code == 75
  assert f"funcnet sweep --out {cut} --resume" in str(e.value)
  assert not os.path.exists(os.path.join(cut, "results.csv"))
  steps = os.listdir(os.path.join(cut, "checkpoints", "group-000"))
  assert sorted(s for s in steps if s.isdigit()) == ["2"]  # the signal's save

  lines = []
  got = sweep.run(base, GRID, out=cut, resume=True, cache=CACHE,
                  log=lines.append)
  assert "  resumed from epoch 2" in lines
  assert _table(cut) == _table(whole)
  assert _histories(cut) == _histories(whole)
  for a, b in zip(ref.variants, got.variants):
    for x, y in zip(jax.tree_util.tree_leaves(a.params),
                    jax.tree_util.tree_leaves(b.params)):
      np.testing.assert_array_equal(x, y)

  # Resumed again, the finished group is neither compiled nor trained.
  def no_compile(*a, **k):
    raise AssertionError("a finished group was compiled again")
  monkeypatch.setattr(engine, "_compile_group", no_compile)
  lines.clear()
  sweep.run(base, GRID, out=cut, resume=True, log=lines.append)
  assert "  resumed from epoch 3 (finished)" in lines
  assert _table(cut) == _table(whole)


def test_resume_mistakes_are_one_line_and_touch_nothing(tmp_path, capsys):
  """Through the command's ``main`` (in-process, no start-up): a missing
  folder, another config or grid than the plan's, a new sweep into an old
  folder, a folder held by a live sweep; and ``--resume`` alone reads the
  plan's config and grid."""
  from funcnet import cli

  def err(*args):
    assert cli.main(["sweep", *args]) == 2
    e = capsys.readouterr().err
    assert e.count("\n") == 1 and e.startswith("funcnet: error: "), e
    return e

  out = str(tmp_path / "s")
  sets = [x for k in BASE + ["train.epochs=1"] for x in ("--set", k)]
  grid = ["--grid", "optimizer.learning_rate=0.01,0.002"]
  assert "does not exist" in err("--out", str(tmp_path / "none"), "--resume")
  assert cli.main(["sweep", *sets, *grid, "--out", out]) == 0
  before = _digest(out)
  capsys.readouterr()

  e = err(*sets, "--set", "train.batch_size=32", *grid, "--out", out,
          "--resume")
  assert "plan differs" in e and "train.batch_size = 64 in the sweep, 32 asked" in e
  e = err("--grid", "optimizer.learning_rate=0.1,0.002", "--out", out,
          "--resume")
  assert "--grid optimizer.learning_rate=0.01,0.002 in the sweep" in e
  assert "--resume" in err(*sets, *grid, "--out", out)  # not a new sweep
  with rundir.lock(out, "funcnet sweep"):  # as a live sweep holds it
    assert "is being written by" in err("--out", out, "--resume")
  assert _digest(out) == before

  # --resume alone: the plan's config and grid; the group is finished.
  assert cli.main(["sweep", "--out", out, "--resume"]) == 0
  assert "resumed from epoch 1 (finished)" in capsys.readouterr().out
  with open(os.path.join(out, resume.PLAN)) as f:
    plan = json.load(f)
  assert plan["grid"] == [["optimizer.learning_rate", [0.01, 0.002]]]
  assert [v["group"] for v in plan["variants"]] == [0, 0]


def test_a_damaged_newest_group_checkpoint_falls_back_to_the_one_before(
    tmp_path, capsys, whole):
  """Saved after epochs 1 and 2 (stopped by SIGINT, Ctrl-C: exit 130),
  the newest damaged (a data file emptied): the resume restores epoch 1's
  params, optimizer states and monitors, sets the damaged step aside, and
  still ends with the uninterrupted table."""
  whole, _ = whole
  base = config.load(None, BASE + ["run.checkpoint_every=1"])
  cut = str(tmp_path / "cut")
  with pytest.raises(Preempted, match="^SIGINT: stopped after epoch 2") as e:
    sweep.run(base, GRID, out=cut, cache=CACHE, log=lambda line:
              _stop_after_epoch_1(line, signal.SIGINT))
  assert e.value.exit_code == 130
  group = os.path.join(cut, "checkpoints", "group-000")
  assert sorted(os.listdir(group)) == ["1", "2"]
  data = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(group, "2"))
          for f in fs if "/d/" in os.path.join(r, f)]
  with open(max(data, key=os.path.getsize), "wb"):
    pass  # emptied: the manifest's sha256 no longer matches
  capsys.readouterr()
  lines = []
  sweep.run(base, GRID, out=cut, resume=True, cache=CACHE, log=lines.append)
  assert "  resumed from epoch 1" in lines
  err = capsys.readouterr().err
  assert "funcnet: warning: checkpoint" in err and "falling back to epoch 1" in err
  assert any(".damaged-" in n for n in os.listdir(group))
  assert _table(cut) == _table(whole)
  assert _histories(cut) == _histories(whole)


@pytest.mark.slow
def test_the_command_killed_by_sigterm_exits_75_and_resumes_to_the_same_table(
    tmp_path):
  """``funcnet sweep`` as a user meets it, in a subprocess: SIGTERM after
  its first epoch's line, exit 75 with the resume command on stderr, then
  ``--resume`` alone; the table equals an uninterrupted command's."""
  import subprocess
  import sys
  import threading
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {**os.environ, "PYTHONPATH": root, "PYTHONUNBUFFERED": "1",
         "JAX_PLATFORMS": "cpu"}
  args = ["sweep", "--set", "train.epochs=6", "--set", "train.batch_size=4",
          "--set", "model.mlp.hidden=[8]", "--set", "run.plots=false",
          "--grid", "optimizer.learning_rate=0.01,0.002", "--grid", "seed=0,1"]

  def funcnet(*more):
    return subprocess.run([sys.executable, "-m", "funcnet.cli", *args, *more],
                          cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)

  whole = str(tmp_path / "whole")
  assert funcnet("--out", whole).returncode == 0
  cut = str(tmp_path / "cut")
  proc = subprocess.Popen([sys.executable, "-m", "funcnet.cli", *args,
                           "--out", cut], cwd=root, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  seen = threading.Event()

  def watch():
    for line in proc.stdout:
      if "epoch 1/6" in line:
        seen.set()
  threading.Thread(target=watch, daemon=True).start()
  try:
    assert seen.wait(240), "no first epoch"
    proc.send_signal(signal.SIGTERM)
  finally:
    err = proc.communicate(timeout=240)[1]
  assert proc.returncode == 75, err[-3000:]
  assert err.splitlines()[-1].startswith("funcnet: stopped: SIGTERM: stopped "
                                         "after epoch"), err
  assert f"funcnet sweep --out {cut} --resume" in err and "Traceback" not in err
  assert not os.path.exists(os.path.join(cut, "results.csv"))
  r = subprocess.run([sys.executable, "-m", "funcnet.cli", "sweep", "--out",
                      cut, "--resume"], cwd=root, env=env, capture_output=True,
                     text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "resumed from epoch" in r.stdout
  assert _table(cut) == _table(whole)
  assert _histories(cut) == _histories(whole)
