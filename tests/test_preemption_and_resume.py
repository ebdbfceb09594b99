"""Issue 14 as a user meets it: ``funcnet train`` in a subprocess, stopped by
SIGTERM, resumed, run twice into one folder, resumed with a changed config,
pointed at folders it cannot write. Every answer is compared with what an
uninterrupted run wrote, or with the folder as it was before.

The SIGTERM runs use batches of 4 on digits (about 0.1-0.4 s an epoch here),
so the signal lands in the middle of the run; the test waits for a few
metrics lines before sending it, and asserts the run did stop early."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from funcnet.errors import ConfigError
from helpers import metrics_lines

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT}

# Early stopping at epoch 21 of 40 (measured), evaluated every 3 epochs: a
# resumed run must reproduce both the schedule and the counters.
STOPPING = ["--set", "train.epochs=40", "--set", "train.batch_size=4",
            "--set", "optimizer.learning_rate=0.001", "--set",
            "train.patience=2", "--set", "train.eval_every=3",
            "--set", "run.checkpoint_every=5", "--set", "run.plots=false",
            "--set", "run.progress=never"]
DEFAULT = ["--set", "train.epochs=2", "--set", "run.plots=false",
           "--set", "run.progress=never"]  # the default model: 56 KB saves
SMALL = ["--set", "train.epochs=2", "--set", "model.mlp.hidden=[8]",
         "--set", "run.plots=false", "--set", "run.progress=never"]


def funcnet(*args, **kw):
  return subprocess.run([sys.executable, "-m", "funcnet.cli", *args],
                        cwd=kw.pop("cwd", ROOT), env=kw.pop("env", ENV),
                        capture_output=True, text=True, timeout=300, **kw)


def start(*args):
  return subprocess.Popen([sys.executable, "-m", "funcnet.cli", *args],
                          cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def wait_for(pred, what, timeout=120):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if pred():
      return
    time.sleep(0.01)
  raise AssertionError(f"timed out waiting for {what}")


def one_line_error(r, code=2):
  assert r.returncode == code, (r.returncode, r.stderr[-3000:])
  assert r.stderr.count("\n") == 1, r.stderr[-3000:]
  assert r.stderr.startswith("funcnet: error: ") and "Traceback" not in r.stderr
  return r.stderr


def read(path):
  with open(path) as f:
    return f.read()


def tree_digest(folder):
  """sha256 of every file under ``folder`` (names and bytes)."""
  h = hashlib.sha256()
  for root, dirs, files in sorted(os.walk(folder)):
    dirs.sort()
    for name in sorted(files):
      p = os.path.join(root, name)
      h.update(os.path.relpath(p, folder).encode())
      with open(p, "rb") as f:
        h.update(f.read())
  return h.hexdigest()


def epochs_only(records):
  return [{k: v for k, v in r.items() if k != "time"} for r in records
          if "event" not in r]


NOT_NUMBERS_TO_COMPARE = {"wall_time_s", "steps_per_s", "status",
                          # compute: measured speed and energy, not results
                          "achieved_flops_per_s", "energy_j", "energy_estimate_j"}


def summary(run):
  with open(os.path.join(run, "summary.json")) as f:
    return json.load(f)


def _numbers(s, prefix=""):
  out = {}
  for k, v in s.items():
    if isinstance(v, dict):
      out.update(_numbers(v, f"{prefix}{k}."))
    elif isinstance(v, (int, float)) and not isinstance(v, bool) \
        and k not in NOT_NUMBERS_TO_COMPARE and k != "time":
      out[prefix + k] = v
  return out


@pytest.mark.slow
def test_sigterm_saves_and_resume_equals_an_uninterrupted_run(tmp_path):
  """With eval_every = 3 and patience = 2: the evaluation schedule and the
  early-stopping counters survive the stop (the uninterrupted run stops
  early at epoch 21)."""
  whole = str(tmp_path / "whole")
  r = funcnet("train", *STOPPING, "--out", whole)
  assert r.returncode == 0, r.stderr
  assert summary(whole)["fit_status"] == "early_stopped"
  stopped_at = summary(whole)["epochs"]
  assert 9 < stopped_at < 40

  cut = str(tmp_path / "cut")
  proc = start("train", *STOPPING, "--out", cut)
  try:
    wait_for(lambda: len(metrics_lines(cut)) >= 4, "four epochs")
    proc.send_signal(signal.SIGTERM)
  finally:
    out, err = proc.communicate(timeout=120)
  assert proc.returncode == 75, err[-3000:]
  # one line at the signal, at once; one when it has saved and stopped
  said, stopped = err.splitlines()
  assert said == ("funcnet: SIGTERM received: saving a checkpoint and "
                  "stopping after the current epoch (send it again to stop "
                  "at once, without saving)"), err
  assert stopped.startswith("funcnet: stopped: SIGTERM"), err
  assert "--resume" in err and "Traceback" not in err
  s = summary(cut)
  assert s["status"] == "preempted" and s["epochs"] < stopped_at, s
  # The epoch it stopped after is saved, not only every 5th.
  ckpts = os.listdir(os.path.join(cut, "checkpoints"))
  assert str(s["epochs"]) in ckpts, ckpts

  r = funcnet("train", "--out", cut, "--resume")
  assert r.returncode == 0, r.stderr
  assert f"from epoch {s['epochs']}" in r.stdout
  assert epochs_only(metrics_lines(cut)) == epochs_only(metrics_lines(whole))
  a, b = summary(whole), summary(cut)
  assert b["status"] == "finished" and b["fit_status"] == "early_stopped"
  assert _numbers(a) == _numbers(b)


@pytest.mark.parametrize("first", ["SIGTERM", "SIGINT"])
def test_the_first_signal_is_noted_and_the_next_gets_the_default_action(first):
  """In-process, the handlers themselves: the subprocess test below also
  accepts exit 75, which is what an ignored second signal gives."""
  from funcnet.run import preemption
  assert threading.current_thread() is threading.main_thread()
  kinds = (signal.SIGTERM, signal.SIGINT)
  before = {s: signal.getsignal(s) for s in kinds}
  with preemption.Watch() as watch:
    assert all(signal.getsignal(s) == watch._on_signal for s in kinds)
    os.kill(os.getpid(), getattr(signal, first))  # handled before kill returns
    assert watch.received == first and watch.requested() == first
    # the kernel's default action for both: the next one ends the process
    assert all(signal.getsignal(s) is signal.SIG_DFL for s in kinds)
    other = ({"SIGTERM", "SIGINT"} - {first}).pop()
    watch._on_signal(getattr(signal, other), None)  # as if it came
    assert watch.received == first  # the first one is what is reported
  assert {s: signal.getsignal(s) for s in kinds} == before
  assert preemption.EXIT_CODES == {"SIGTERM": 75, "SIGINT": 130}


@pytest.mark.slow
def test_a_second_signal_stops_at_once_and_checkpoints_stay_readable(tmp_path):
  run = str(tmp_path / "run")
  proc = start("train", *STOPPING, "--set", "run.checkpoint_every=1",
               "--set", "train.patience=0", "--out", run)
  try:
    wait_for(lambda: len(metrics_lines(run)) >= 3, "three epochs")
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
  finally:
    proc.communicate(timeout=120)
  # Either the kernel ended it (the second signal, default action), or the
  # first was handled before the second arrived and it saved and exited 75.
  assert proc.returncode in (-signal.SIGTERM, 75), proc.returncode
  r = funcnet("eval", "--run", run)
  assert r.returncode == 0, r.stderr
  assert json.loads(r.stdout)["epoch"] >= 2


def test_resume_with_a_changed_shape_leaves_the_run_as_it_was(tmp_path, capsys):
  # In-process (cli.main, what the console script runs) to stay in the fast
  # suite; the refusals below are subprocesses.
  from funcnet import cli
  run = str(tmp_path / "run")
  assert cli.main(["train", *SMALL, "--out", run]) == 0
  before = tree_digest(run)
  capsys.readouterr()
  assert cli.main(["train", "--out", run, "--resume", "--set",
                   "model.mlp.hidden=[16]"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("funcnet: error: ")
  assert "model.mlp.hidden" in err and "[8]" in err and "[16]" in err
  assert tree_digest(run) == before
  assert cli.main(["eval", "--run", run]) == 0
  assert cli.main(["train", "--out", run, "--resume"]) == 0  # still resumable


UNSAFE_ON_RESUME = ["train.batch_size=64", "train.patience=3",
                    'train.dtype="float64"', "train.eval_every=2",
                    'train.grads="manual"', "train.accumulate=2",
                    "optimizer.learning_rate=0.5", "seed=7", "data.seed=3",
                    "model.mlp.hidden=[8]", 'run.checkpoint_dir="elsewhere"']
SAFE_ON_RESUME = ["train.epochs=99", "train.chunk_steps=5",
                  "run.checkpoint_every=3", "run.plots=false",
                  'run.progress="never"', 'name="renamed"']


@pytest.mark.parametrize("change", UNSAFE_ON_RESUME)
def test_resume_check_refuses_each_key_that_changes_the_run(change):
  """resume.check as a unit, one key at a time (the command's tests above
  are slow): a train.* key other than epochs is not safe because it is
  under train."""
  from funcnet import config
  from funcnet.run import resume
  saved = config.load(None, [])
  requested = config.load(None, [change])
  key = change.split("=")[0]
  with pytest.raises(ConfigError) as e:
    resume.check("R", saved, requested)
  msg = str(e.value)
  assert "\n" not in msg and "keys a resume cannot change" in msg
  old = saved
  for part in key.split("."):
    old = old[part]
  assert f"{key} = {old!r} in the run" in msg, msg


@pytest.mark.parametrize("change", SAFE_ON_RESUME)
def test_resume_check_allows_and_returns_each_safe_change(change):
  from funcnet import config
  from funcnet.run import resume
  saved = config.load(None, [])
  requested = config.load(None, [change, "train.epochs=99"])
  diff = resume.check("R", saved, requested)
  key = change.split("=")[0]
  assert set(diff) == {key, "train.epochs"}
  assert diff["train.epochs"] == [saved["train"]["epochs"], 99]
  assert diff[key][0] != diff[key][1]
  assert resume.check("R", saved, saved) == {}
  # a device layout is safe, whatever the key under parallel
  assert all(resume.is_safe(k) for k in ("parallel.data", "parallel.fsdp"))


def test_resume_compares_a_relative_checkpoint_dir_as_absolute(tmp_path,
                                                              monkeypatch):
  from funcnet import config
  from funcnet.run import resume
  monkeypatch.chdir(tmp_path)
  saved = config.load(None, [f'run.checkpoint_dir="{tmp_path / "ck"}"'])
  assert resume.check("R", saved,
                      config.load(None, ['run.checkpoint_dir="ck"'])) == {}


@pytest.mark.slow
@pytest.mark.parametrize("change", [
    ["--set", "data.seed=1"], ["--set", "optimizer.learning_rate=0.1"],
    ["--set", "train.patience=3"],
    ["--config", os.path.join(ROOT, "configs", "digits_mlp.toml")]],
    ids=["data-seed", "learning-rate", "patience", "config-file"])
def test_resume_refuses_keys_that_change_the_run(tmp_path, change):
  run = str(tmp_path / "run")
  assert funcnet("train", *SMALL, "--out", run).returncode == 0
  before = tree_digest(run)
  err = one_line_error(funcnet("train", "--out", run, "--resume", *change))
  assert "differs in keys a resume cannot change" in err
  assert tree_digest(run) == before


@pytest.mark.slow
def test_resume_may_lengthen_a_run_and_records_it(tmp_path):
  run = str(tmp_path / "run")
  assert funcnet("train", *SMALL, "--out", run).returncode == 0
  r = funcnet("train", "--out", run, "--resume", "--set", "train.epochs=3",
              "--set", "run.checkpoint_every=2")
  assert r.returncode == 0, r.stderr
  recs = metrics_lines(run)
  assert [x["epoch"] for x in recs if "event" not in x] == [1, 2, 3]
  events = [x for x in recs if "event" in x]
  assert events == [{"event": "resume", "epoch": 2, "changed": {
      "run.checkpoint_every": [10, 2], "train.epochs": [2, 3]}}]
  with open(os.path.join(run, "config.json")) as f:
    assert json.load(f)["train"]["epochs"] == 3


@pytest.mark.slow
def test_resume_without_a_checkpoint_is_refused_and_deletes_nothing(tmp_path):
  run = str(tmp_path / "run")
  # A run stopped before its first save: config and metrics, no checkpoint.
  assert funcnet("train", *SMALL, "--out", run).returncode == 0
  import shutil
  shutil.rmtree(os.path.join(run, "checkpoints"))
  before = tree_digest(run)
  err = one_line_error(funcnet("train", "--out", run, "--resume"))
  assert "has no checkpoint" in err and "nothing was changed" in err
  assert tree_digest(run) == before


@pytest.mark.slow
def test_relative_checkpoint_dir_is_found_from_another_directory(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  run = str(tmp_path / "run")
  r = funcnet("train", *SMALL, "--set", "run.checkpoint_dir='ck'", "--out",
              run, cwd=str(tmp_path / "a"))
  assert r.returncode == 0, r.stderr
  r = funcnet("train", "--out", run, "--resume", "--set", "train.epochs=3",
              cwd=str(tmp_path / "b"))
  assert r.returncode == 0, r.stderr
  assert "from epoch 2" in r.stdout
  assert not os.path.exists(tmp_path / "b" / "ck")


@pytest.mark.slow
def test_a_second_training_into_the_same_folder_is_refused(tmp_path):
  run = str(tmp_path / "run")
  first = start("train", *STOPPING, "--set", "train.patience=0",
                "--set", "train.epochs=1000", "--out", run)  # SIGTERM ends it
  try:
    wait_for(lambda: len(metrics_lines(run)) >= 1, "the first run's first epoch")
    config_before = read(os.path.join(run, "config.json"))
    for again in (SMALL, ["--resume"]):
      err = one_line_error(funcnet("train", *again, "--out", run))
      assert "is being written by pid" in err, err
    assert read(os.path.join(run, "config.json")) == config_before
    first.send_signal(signal.SIGTERM)
  finally:
    first.communicate(timeout=120)
  assert first.returncode == 75


@pytest.mark.slow
def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  (run / ".lock").write_text("pid 999999 on some-host since 2026-01-01\n")
  r = funcnet("train", *SMALL, "--out", str(run))
  assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("case", ["parent-is-a-file", "read-only-out",
                                  "read-only-checkpoint-dir",
                                  "damaged-config-json"])
def test_filesystem_problems_are_one_line_and_exit_2(tmp_path, case):
  args = list(SMALL)
  if case == "parent-is-a-file":
    (tmp_path / "file").write_text("x")
    args += ["--out", str(tmp_path / "file" / "run")]
  elif case == "read-only-out":
    # /sys is mounted read-only: even root cannot create a folder there
    # (chmod is no test, root ignores it).
    args += ["--out", "/sys/funcnet-test-run"]
  elif case == "read-only-checkpoint-dir":
    args += ["--out", str(tmp_path / "run"), "--set",
             "run.checkpoint_dir='/sys/funcnet-test-ck'"]
  else:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"train": {"epochs": 3')
    args = ["--out", str(run), "--resume"]
  err = one_line_error(funcnet("train", *args))
  assert {"parent-is-a-file": "Not a directory",
          "read-only-out": "/sys/funcnet-test-run",
          "read-only-checkpoint-dir": "run.checkpoint_dir",
          "damaged-config-json": "config.json is damaged"}[case] in err


@pytest.mark.slow
@pytest.mark.parametrize("limit, what", [(2000, "config.json"),
                                         (10000, "checkpoint could not")],
                         ids=["config", "checkpoint"])
def test_a_full_disk_is_one_line_and_exit_2(tmp_path, limit, what):
  """A file-size limit (RLIMIT_FSIZE) makes every write past it fail with
  EFBIG, as a full disk fails with ENOSPC, without filling one: at 2000
  bytes config.json (2.7 KB) is the first write to fail; at 10000 it is
  the checkpoint's data file holding the first layer's 64 x 64 float32
  weights (16 KB), written by orbax's threads while the next epoch runs.
  (At 20000 the weights and optimizer moments sometimes went into files
  of under 20000 bytes each, and the run finished: about 1 run in 50.)"""
  from helpers import with_limits
  r = subprocess.run(with_limits([sys.executable, "-m", "funcnet.cli",
                                  "train", *DEFAULT, "--out",
                                  str(tmp_path / "run")], RLIMIT_FSIZE=limit),
                     cwd=ROOT, env=ENV, capture_output=True, text=True,
                     timeout=300)
  err = one_line_error(r)
  assert "File too large" in err or "space" in err, err
  assert what in err, err


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "flip-a-byte"])
def test_a_damaged_newest_checkpoint_falls_back_on_resume(tmp_path, damage):
  whole = str(tmp_path / "whole")
  assert funcnet("train", *SMALL, "--set", "train.epochs=4", "--out",
                 whole).returncode == 0
  run = str(tmp_path / "run")
  r = funcnet("train", *SMALL, "--set", "train.epochs=3", "--set",
              "run.checkpoint_every=1", "--out", run)
  assert r.returncode == 0, r.stderr
  step = os.path.join(run, "checkpoints", "3")
  files = [os.path.join(d, f) for d, _, fs in os.walk(step) for f in fs
           if "/d/" in os.path.join(d, f)]  # the arrays' data files
  target = max(files, key=os.path.getsize)
  with open(target, "r+b") as f:
    if damage == "truncate":
      f.truncate(os.path.getsize(target) // 2)
    else:
      f.seek(os.path.getsize(target) // 2)
      b = f.read(1)
      f.seek(-1, 1)
      f.write(bytes([b[0] ^ 0x01]))
  r = funcnet("train", "--out", run, "--resume", "--set", "train.epochs=4")
  assert r.returncode == 0, r.stderr
  assert "checkpoints/3 is damaged" in r.stderr and "falling back to epoch 2" \
      in r.stderr and r.stderr.count("\n") == 1, r.stderr
  assert "from epoch 2" in r.stdout
  assert any(n.startswith("3.damaged") for n in
             os.listdir(os.path.join(run, "checkpoints")))
  events = [x for x in metrics_lines(run) if "event" in x]
  assert [e["event"] for e in events] == ["damaged_checkpoint", "resume"]
  assert epochs_only(metrics_lines(run)) == epochs_only(metrics_lines(whole))
  ev = json.loads(funcnet("eval", "--run", run).stdout)
  assert ev["epoch"] == 4
  # (eval compiles its own program: equal up to float rounding)
  assert ev["test_loss"] == pytest.approx(summary(whole)["test_loss"], rel=1e-6)


@pytest.mark.slow
def test_auto_resume_starts_a_new_run_then_continues_it(tmp_path):
  run = str(tmp_path / "run")
  r = funcnet("train", *SMALL, "--out", run, "--auto-resume")
  assert r.returncode == 0 and "resuming" not in r.stdout, r.stderr
  r = funcnet("train", *SMALL, "--set", "train.epochs=3", "--out", run,
              "--auto-resume")
  assert r.returncode == 0, r.stderr
  assert f"resuming {run} from epoch 2" in r.stdout
  assert [x["epoch"] for x in metrics_lines(run) if "event" not in x] == [1, 2, 3]


@pytest.mark.slow
def test_a_cache_folder_that_cannot_be_written_is_a_note_not_a_failure(tmp_path):
  env = {k: v for k, v in ENV.items() if k != "FUNCNET_COMPILATION_CACHE"}
  env["FUNCNET_CACHE"] = "/sys/funcnet-test-cache"  # read-only, even for root
  r = funcnet("train", *SMALL, "--out", str(tmp_path / "run"), env=env)
  assert r.returncode == 0, r.stderr
  assert r.stderr.startswith("funcnet: note: compilation cache off")
  assert r.stderr.count("\n") == 1


@pytest.mark.parametrize("unit", ["epoch", "chunk"])
def test_the_first_signal_says_at_once_that_the_run_will_save_and_stop(
    capfd, unit):
  """Issue 22: Ctrl-C used to print nothing until the epoch ended (20 s on
  a large model). The handler itself writes the line, before training
  reads the flag; a second signal gets the default action back."""
  from funcnet.run import preemption
  before = signal.getsignal(signal.SIGINT)
  with preemption.Watch(unit) as watch:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)  # the handler runs between bytecodes of this thread
    err = capfd.readouterr().err
    assert err == (f"funcnet: SIGINT received: saving a checkpoint and "
                   f"stopping after the current {unit} (send it again to "
                   "stop at once, without saving)\n")
    assert watch.requested() == "SIGINT"
    assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL
  assert signal.getsignal(signal.SIGINT) is before
