"""Damaged checkpoints: checksums at save, verification and fallback on restore.

One set of three checkpoints (params and an optax adam state, different
values each epoch) is saved once per module and copied for every test;
each test damages copies the way disks and people do, and checks that the
restore returns the previous epoch's arrays exactly, reports each skipped
step in one line, and fails in one line when nothing is left.
"""

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from funcnet.run import checkpoints, manifest, orbax_noise
from funcnet.train import TrainState
from funcnet.errors import CheckpointError

EPOCHS = (1, 2, 3)
# What the trainer saves with each epoch (inf: nothing evaluated yet).
EARLY_STOPPING = {e: {"best_test_loss": 1.0 / (e - 1) if e > 1 else np.inf,
                      "evaluations_since_best": e - 1} for e in EPOCHS}


def _state(epoch):
  """``(params, opt_state)`` of one epoch: random, different for each."""
  rng = np.random.default_rng(epoch)
  params = {"w": jnp.asarray(rng.standard_normal((32, 64)), jnp.float32),
            "b": jnp.asarray(rng.standard_normal(64), jnp.float32)}
  opt = optax.adam(1e-3)
  grads = jax.tree_util.tree_map(
      lambda a: jnp.asarray(rng.standard_normal(a.shape), a.dtype), params)
  _, opt_state = opt.update(grads, opt.init(params), params)
  return params, opt_state


def _templates():
  params, opt_state = _state(0)
  return (jax.tree_util.tree_map(jnp.zeros_like, params),
          jax.tree_util.tree_map(jnp.zeros_like, opt_state))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
  """A folder with checkpoints of EPOCHS, each with its manifest, and the
  arrays saved, as numpy, per epoch."""
  where = str(tmp_path_factory.mktemp("pristine") / "ck")
  saver = checkpoints.Saver(where, keep=len(EPOCHS))
  saved = {}
  for epoch in EPOCHS:
    params, opt_state = _state(epoch)
    saved[epoch] = jax.tree_util.tree_map(np.asarray, (params, opt_state))
    saver.save(TrainState(params, opt_state, epoch,
                          early_stopping=EARLY_STOPPING[epoch]))
  saver.close()
  return where, saved


@pytest.fixture
def ck(pristine, tmp_path):
  """A fresh copy of the pristine folder, and the saved arrays."""
  where, saved = pristine
  copy = str(tmp_path / "ck")
  shutil.copytree(where, copy)
  return copy, saved


def _data_file(step_dir):
  """The largest array data file of a step (tensorstore's OCDBT layout)."""
  files = glob.glob(os.path.join(step_dir, "default", "ocdbt.process_*",
                                 "d", "*"))
  return max(files, key=os.path.getsize)


def _rewrite(path, change):
  with open(path, "rb") as f:
    data = bytearray(f.read())
  with open(path, "wb") as f:
    f.write(change(data))


def _rewrite_new(path, data):
  with open(path, "wb") as f:
    f.write(data)


def _flip(step_dir):
  """One bit of one byte in the middle of the array data: there the bytes
  are the arrays' own (zstd stores random floats as they are)."""
  def flip(data):
    data[len(data) // 2] ^= 0x01
    return bytes(data)
  _rewrite(_data_file(step_dir), flip)


DAMAGES = {
    "truncated": lambda s: _rewrite(_data_file(s),
                                    lambda d: bytes(d[:len(d) // 2])),
    "zeroed": lambda s: _rewrite(_data_file(s), lambda d: bytes(len(d))),
    "garbage": lambda s: _rewrite(
        _data_file(s),
        lambda d: np.random.default_rng(0).bytes(len(d))),
    "step metadata deleted": lambda s: os.remove(
        os.path.join(s, "_CHECKPOINT_METADATA")),
    "item metadata deleted": lambda s: os.remove(
        os.path.join(s, "default", "_METADATA")),
    "one byte flipped": _flip,
    # a file that was not there at the save (a stray copy, another writer)
    "file added": lambda s: _rewrite_new(os.path.join(s, "default", "extra"),
                                         b"not saved"),
}


def _assert_state(got, want):
  got_leaves, want_leaves = (jax.tree_util.tree_leaves(t) for t in (got, want))
  assert len(got_leaves) == len(want_leaves)
  for a, b in zip(got_leaves, want_leaves):
    np.testing.assert_array_equal(np.asarray(a), b)


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(ck, damage):
  where, saved = ck
  DAMAGES[damage](os.path.join(where, "3"))
  lines = []
  epoch, params, opt_state = checkpoints.restore(where, *_templates(),
                                                 on_damaged=lines.append)
  assert epoch == 2
  _assert_state((params, opt_state), saved[2])
  assert len(lines) == 1 and "\n" not in lines[0], lines
  assert lines[0].startswith(f"checkpoint {os.path.abspath(where)}/3 is "
                             "damaged (")
  assert lines[0].endswith("); falling back to epoch 2")


@pytest.mark.parametrize("damage", DAMAGES)
def test_every_checkpoint_damaged_is_one_line(ck, damage):
  where, _ = ck
  for epoch in EPOCHS:
    DAMAGES[damage](os.path.join(where, str(epoch)))
  lines = []
  with pytest.raises(CheckpointError) as e:
    checkpoints.restore(where, *_templates(), on_damaged=lines.append)
  msg = str(e.value)
  assert "\n" not in msg and "pybind11" not in msg and e.value.exit_code == 2
  assert msg.startswith(f"no intact checkpoint in {where!r}: the newest, "
                        "epoch 3, is damaged (")
  assert "and so are the 2 older ones" in msg
  assert [line.split(" is damaged")[0] for line in lines] == [
      f"checkpoint {os.path.abspath(where)}/{s}" for s in (3, 2)]


def test_the_skipped_steps_are_returned_and_params_alone_fall_back_too(ck):
  where, saved = ck
  _flip(os.path.join(where, "3"))
  DAMAGES["truncated"](os.path.join(where, "2"))
  lines = []
  r = checkpoints.restore_newest_good(where, TrainState(_templates()[0]),
                                      on_damaged=lines.append)
  assert r.state.epoch == 1 and r.state.opt_state is None
  assert r.state.early_stopping == EARLY_STOPPING[1]
  _assert_state(r.state.params, saved[1][0])
  assert [d.epoch for d in r.damaged] == [3, 2]
  assert r.damaged[0].reason.startswith("sha256 of default/")
  assert r.damaged[0].path == os.path.join(os.path.abspath(where), "3")
  assert r.damaged[0].moved_to is None and os.path.isdir(r.damaged[0].path)
  assert [line[-len("epoch 2"):] for line in lines] == ["epoch 2", "epoch 1"]
  epoch, params = checkpoints.restore_params(where, _templates()[0],
                                             on_damaged=lambda line: None)
  assert epoch == 1
  _assert_state(params, saved[1][0])


def test_a_resume_moves_the_damaged_steps_aside(ck):
  where, saved = ck
  DAMAGES["zeroed"](os.path.join(where, "3"))
  r = checkpoints.restore_newest_good(where, TrainState(*_templates()),
                                      move_damaged=True,
                                      on_damaged=lambda line: None)
  assert r.state.epoch == 2 and r.state.early_stopping == EARLY_STOPPING[2]
  _assert_state((r.state.params, r.state.opt_state), saved[2])
  (d,) = r.damaged
  assert not os.path.exists(d.path) and os.path.isdir(d.moved_to)
  assert os.path.basename(d.moved_to).startswith("3.damaged-")
  assert checkpoints.latest_epoch(where) == 2


def test_a_given_damaged_epoch_fails_without_falling_back(ck):
  where, _ = ck
  _flip(os.path.join(where, "3"))
  lines = []
  with pytest.raises(CheckpointError, match=r"/3' is damaged \(sha256 of "):
    checkpoints.restore(where, *_templates(), epoch=3, on_damaged=lines.append)
  assert lines == []
  assert checkpoints.restore(where, *_templates(), epoch=2)[0] == 2


def test_an_intact_checkpoint_of_another_model_is_not_called_damaged(ck):
  # A changed width must not make a resume discard good checkpoints.
  where, _ = ck
  params, opt_state = _templates()
  params["w"] = jnp.zeros((32, 65))
  lines = []
  with pytest.raises(CheckpointError, match="is intact but does not fit"):
    checkpoints.restore(where, params, opt_state, on_damaged=lines.append)
  assert lines == []


def test_without_its_manifest_a_flipped_byte_goes_unnoticed(ck):
  # What the checksum is for: orbax alone restores the damaged arrays.
  where, saved = ck
  os.remove(os.path.join(where, "3", manifest.MANIFEST))
  _flip(os.path.join(where, "3"))
  lines = []
  epoch, params, opt_state = checkpoints.restore(where, *_templates(),
                                                 on_damaged=lines.append)
  assert epoch == 3 and lines == []
  got = jax.tree_util.tree_leaves((params, opt_state))
  want = jax.tree_util.tree_leaves(saved[3])
  assert any(not np.array_equal(a, b) for a, b in zip(got, want))


def test_without_manifests_orbax_errors_still_fall_back(ck):
  where, saved = ck
  for epoch in EPOCHS:
    os.remove(os.path.join(where, str(epoch), manifest.MANIFEST))
  DAMAGES["truncated"](os.path.join(where, "3"))
  lines = []
  epoch, params, opt_state = checkpoints.restore(where, *_templates(),
                                                 on_damaged=lines.append)
  assert epoch == 2
  _assert_state((params, opt_state), saved[2])
  assert len(lines) == 1 and "pybind11" not in lines[0]
  assert "is damaged (OUT_OF_RANGE: Error reading" in lines[0]


def test_manifests_follow_the_async_saves_and_orbax_ignores_them(tmp_path):
  where = str(tmp_path / "ck")
  saver = checkpoints.Saver(where, keep=2)

  def manifest_of(step):
    return os.path.join(where, str(step), manifest.MANIFEST)

  for epoch in (1, 2, 3, 4):
    saver.save(TrainState(*_state(epoch), epoch))
    if epoch > 1:  # the previous save is done once the next one starts
      assert os.path.exists(manifest_of(epoch - 1))
  saver.close()
  # max_to_keep deletes folders holding our extra file, and counts right.
  assert sorted(os.listdir(where)) == ["3", "4"]
  for s in (3, 4):
    assert manifest.check(os.path.dirname(manifest_of(s))) is None
  assert checkpoints.latest_epoch(where) == 4
  checkpoints.restore(where, *_templates())
  # Restoring reads only: the manifest still matches afterwards.
  assert manifest.check(os.path.join(where, "4")) is None


def test_a_step_set_aside_is_ignored_and_can_be_written_again(ck):
  import orbax.checkpoint as ocp
  where, saved = ck
  _flip(os.path.join(where, "3"))
  moved = checkpoints.set_aside(where, 3)
  assert os.path.basename(moved).startswith("3.damaged-")
  with ocp.CheckpointManager(os.path.abspath(where)) as mgr:
    assert list(mgr.all_steps()) == [1, 2] and mgr.latest_step() == 2
  shutil.copytree(moved, os.path.join(where, "3"))
  again = checkpoints.set_aside(where, 3)  # within a second: its own name
  assert again != moved and os.path.isdir(moved) and os.path.isdir(again)
  shutil.rmtree(again)
  # A resumed run writes epoch 3 again; keep=2 then deletes 1 and 2 but
  # leaves the set-aside folder alone.
  saver = checkpoints.Saver(where, keep=2)
  saver.save(TrainState(*_state(3), 3))
  saver.save(TrainState(*_state(4), 4))
  saver.close()
  assert sorted(os.listdir(where)) == ["3", os.path.basename(moved), "4"]
  epoch, params, opt_state = checkpoints.restore(where, *_templates(),
                                                 epoch=3)
  _assert_state((params, opt_state), saved[3])
  with pytest.raises(CheckpointError, match="no checkpoint of epoch 7"):
    checkpoints.set_aside(where, 7)


SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import jax.numpy as jnp
    from test_checkpoint_integrity import _templates
    from funcnet.run import checkpoints
    from funcnet.errors import CheckpointError
    print("epoch", checkpoints.restore({one!r}, *_templates())[0])
    params, opt_state = _templates()
    for where, params["w"] in [({every!r}, params["w"]),
                               ({wide!r}, jnp.zeros((32, 65)))]:
      try:
        checkpoints.restore(where, params, opt_state)
      except CheckpointError as e:
        print("error", e)
""")


def test_no_noise_on_stderr_from_a_damaged_checkpoint(pristine, tmp_path):
  # Without manifests, so that orbax and tensorstore meet the damage: a
  # truncated array (unretrieved asyncio errors, "Exception ignored in")
  # and a deleted OCDBT manifest ("Event loop is closed" tracebacks); and
  # an intact checkpoint of a wider model, whose failed read leaves
  # tensorstore reads in flight to be finalised at exit.
  where, _ = pristine
  one, every, wide = (str(tmp_path / n) for n in ("one", "every", "wide"))
  for copy in (one, every, wide):
    shutil.copytree(where, copy)
  for copy in (one, every):
    for epoch in EPOCHS:
      os.remove(os.path.join(copy, str(epoch), manifest.MANIFEST))
  DAMAGES["truncated"](os.path.join(one, "3"))
  for epoch in EPOCHS:
    os.remove(os.path.join(every, str(epoch), "default", "manifest.ocdbt"))
  script = SCRIPT.format(tests=os.path.dirname(__file__), one=one,
                         every=every, wide=wide)
  r = subprocess.run([sys.executable, "-c", script], capture_output=True,
                     text=True, timeout=120)
  assert r.returncode == 0, r.stderr
  lines = r.stdout.splitlines()
  assert lines[0] == "epoch 2" and len(lines) == 3, r.stdout
  assert lines[1].startswith(f"error no intact checkpoint in {every!r}")
  assert lines[2].startswith(f"error checkpoint '{wide}/3' is intact but")
  patterns = [
      rf"funcnet: checkpoint {re.escape(one)}/3 is damaged \(OUT_OF_RANGE: "
      r"Error reading [^\n]*\); falling back to epoch 2",
  ] + [
      rf"funcnet: checkpoint {re.escape(every)}/{s} is damaged \(NOT_FOUND: "
      rf"Error opening [^\n]*\); falling back to epoch {s - 1}"
      for s in (3, 2)
  ]
  got = r.stderr.splitlines()
  assert len(got) == len(patterns), r.stderr
  for line, pattern in zip(got, patterns):
    assert re.fullmatch(pattern, line), line
    assert "pybind11" not in line and "tensorstore_spec" not in line


@pytest.mark.parametrize("how", ["itself", "wrapped"])
def test_a_failed_collective_during_a_save_is_not_called_a_disk_error(
    tmp_path, how, monkeypatch):
  """With several processes orbax's save waits for every one; a peer that
  died meanwhile fails a collective, which must reach cli's multi-process
  path (naming the failed process) as it is, not become "a checkpoint
  could not be written ... expected a folder with space" (seen in the
  2-process test where one process is killed)."""
  collective = jax.errors.JaxRuntimeError(
      "UNKNOWN: Gloo AllGather failed: Connection reset by peer")
  # (the pytest worker's own stderr stays open at its exit)
  monkeypatch.setattr(orbax_noise, "silence_stderr_at_exit", lambda: None)
  saver = checkpoints.Saver(str(tmp_path / "ck"), keep=2)
  with pytest.raises(Exception) as e:
    with saver._writing():
      if how == "itself":
        raise collective
      try:
        raise collective
      except Exception as inner:
        raise ValueError("orbax's wrapper") from inner
  assert not isinstance(e.value, CheckpointError)
  # while a disk error still is one line
  with pytest.raises(CheckpointError, match="could not be written.*No space"):
    with saver._writing():
      raise OSError(28, "No space left on device")


def test_the_manifest_names_a_file_changed_missing_or_added(tmp_path):
  """check_manifest on a plain folder, each damage against the file list
  and sha256 sums written down here (no orbax needed)."""
  step = tmp_path / "7"
  (step / "d").mkdir(parents=True)
  (step / "a").write_bytes(b"alpha")
  (step / "d" / "b").write_bytes(b"beta")
  manifest.write(str(step))
  with open(step / manifest.MANIFEST) as f:
    assert json.load(f)["sha256"] == {
        "a": hashlib.sha256(b"alpha").hexdigest(),
        "d/b": hashlib.sha256(b"beta").hexdigest()}
  assert manifest.check(str(step)) is None
  (step / "d" / "c").write_bytes(b"")
  assert (manifest.check(str(step))
          == "d/c was not in the checkpoint when it was saved")
  (step / "d" / "c").unlink()
  (step / "d" / "b").write_bytes(b"betA")
  assert manifest.check(str(step)) == "sha256 of d/b differs"
  (step / "d" / "b").unlink()
  assert manifest.check(str(step)) == "d/b is missing"
  (step / manifest.MANIFEST).write_text("{")
  assert (manifest.check(str(step))
          == f"its manifest {manifest.MANIFEST} cannot be read")
