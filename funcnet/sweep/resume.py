"""A sweep that can stop and resume: its plan, its lock, a checkpoint per group.

  OUT/sweep_plan.json           written once, before the first epoch
  OUT/checkpoints/group-GGG/    orbax steps of one compiled group, by epoch
  OUT/.lock                     the writer's lock (:func:`funcnet.run.rundir.lock`)

The plan is what decides every number the sweep computes: the base
config (and its sha256, without the keys that only say how to report or
how often to save, :data:`IGNORED`), the grid, each variant's values and
group, and the number of devices (which pads the variant axis). ``funcnet
sweep --out OUT --resume`` builds the plan again from the config and grid
it is given (by default the plan's own) and continues only when the two
are equal; anything else is one line naming what differs, and nothing in
OUT is touched.

A group's checkpoint is one :class:`funcnet.run.checkpoints.Saver` step,
the same module and format as ``funcnet train``'s (atomic, checksummed,
the damaged-step fallback): the arrays are the group's stacked params and
optimizer state (leaves ``(V_padded, ...)``) and its epoch; the step's
metadata holds, per variant, the monitor's snapshot (history, status,
early-stopping counters, first loss: :meth:`funcnet.train.Monitor.snapshot`),
the variants' key data, and the group's training wall time so far. A
group saves after every ``run.checkpoint_every`` epochs, after its last
epoch, and after the epoch a signal arrived in; a group whose last
checkpoint has every variant finished is not trained again (nor compiled).

Everything else a resumed group does follows from the plan and the epoch,
as in ``funcnet train``: epoch ``e``'s batch order is ``batch_order(key,
e)``, its dropout keys ``fold_in(key, e)``, its evaluation due by the
absolute epoch. So the resumed sweep's table equals the uninterrupted one's
bit for bit, but for the wall times (``group wall s``: the interrupted
sweep's time so far plus the resumed one's; each history record's
``time``).

SIGTERM and SIGINT (:mod:`funcnet.run.preemption`): the group finishes its
epoch, saves, and the command exits 75 or 130 (:data:`funcnet.errors.
SIGNAL_EXIT_CODES`), as ``funcnet train`` does; the table is written by the
resumed sweep.
"""

import contextlib
import hashlib
import json
import os
import shutil
import sys
from typing import Optional

import jax
import numpy as np

from funcnet import config as config_lib
from funcnet.errors import CheckpointError, ConfigError, Preempted
from funcnet.run import checkpoints, preemption, rundir
from funcnet.train import TrainState

PLAN = "sweep_plan.json"
FORMAT = "funcnet-sweep-plan-1"
CHECKPOINTS = "checkpoints"

# Keys that change no number of the sweep: a resume may change them.
IGNORED = ("name", "run.plots", "run.progress", "run.tensorboard",
           "run.compilation_cache", "run.power_watts", "run.checkpoint_every",
           "run.keep_checkpoints")


def _compared(cfg: dict) -> dict:
  """The flat config without :data:`IGNORED` keys, JSON-ready."""
  return {k: v for k, v in rundir.json_safe(config_lib.flatten(cfg)).items()
          if k not in IGNORED}


def config_hash(cfg: dict) -> str:
  """sha256 of the config's keys that decide the sweep's numbers."""
  text = json.dumps(_compared(cfg), sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()


def make_plan(cfg: dict, grid: dict, variants, groups, devices: int) -> dict:
  """The plan of a sweep: ``variants`` its :class:`funcnet.sweep.grid.Variant` s,
  ``groups`` a list of member index lists (positions in ``variants``), in
  the order they train; ``devices`` the devices the variant axis is split
  over."""
  group_of = {i: g for g, members in enumerate(groups) for i in members}
  return rundir.json_safe({
      "format": FORMAT, "config_sha256": config_hash(cfg), "config": cfg,
      # pairs, not an object: the keys' order is the variants' order
      "grid": [[k, v] for k, v in grid.items()], "devices": devices,
      "variants": [{"index": v.index, "assignment": v.assignment,
                    "group": group_of[i]} for i, v in enumerate(variants)],
      "groups": [[variants[i].index for i in members] for members in groups]})


def plan_path(out: str) -> str:
  return os.path.join(out, PLAN)


def read_plan(out: str) -> dict:
  """The plan in ``out``.

  Raises:
    CheckpointError: no folder or no plan in it (nothing to resume), or a
      plan that is not this format's JSON.
  """
  path = plan_path(out)
  if not os.path.isfile(path):
    what = "does not exist" if not os.path.isdir(out) else f"has no {PLAN}"
    raise CheckpointError(
        f"--resume: sweep folder {out!r} {what}; expected a folder written by "
        "funcnet sweep (it writes its plan before the first epoch), or no "
        "--resume")
  try:
    with open(path) as f:
      plan = json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"--resume: {path!r} cannot be read ({e}); expected "
                          "the JSON plan funcnet sweep wrote") from None
  if not isinstance(plan, dict) or plan.get("format") != FORMAT:
    raise CheckpointError(f"--resume: {path!r} is not a sweep plan of this "
                          f"version; expected format {FORMAT!r}")
  return plan


def differences(saved: dict, asked: dict) -> list:
  """One phrase per part of the plan that differs (empty: the same plan)."""
  out = []
  if saved["config_sha256"] != asked["config_sha256"]:
    a, b = _compared(saved["config"]), _compared(asked["config"])
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    out.append("config " + "; ".join(
        f"{k} = {a.get(k)!r} in the sweep, {b.get(k)!r} asked"
        for k in keys[:4]) + ("; ..." if len(keys) > 4 else ""))
  if saved["grid"] != asked["grid"]:
    out.append(f"--grid {_grid_text(saved['grid'])} in the sweep, "
               f"{_grid_text(asked['grid'])} asked")
  if saved["devices"] != asked["devices"]:
    out.append(f"devices {saved['devices']} in the sweep, {asked['devices']} "
               "now")
  if not out and (saved["variants"] != asked["variants"]
                  or saved["groups"] != asked["groups"]):
    out.append("its variants or groups")  # e.g. another funcnet's grouping
  return out


def _grid_text(pairs) -> str:
  return " ".join(f"{k}={','.join(json.dumps(x) for x in v)}" for k, v in pairs)


def saved_grid(plan: dict) -> dict:
  """The plan's grid as ``{key: [values]}``, in its order."""
  return {k: v for k, v in plan["grid"]}


def refuse_existing(out: str) -> None:
  """``funcnet sweep`` without ``--resume``: one line when ``out`` holds a
  sweep (its plan or its table), nothing touched.

  Raises:
    ConfigError: naming ``--resume``.
  """
  for name in (PLAN, "results.csv"):
    if os.path.isfile(os.path.join(out, name)):
      raise ConfigError(f"--out {out!r} already holds a sweep ({name}); "
                        "expected --resume to continue it, or a new folder")


class Folder:
  """A sweep's folder while the sweep runs: the plan checked or written,
  the lock held, signals watched, one :class:`GroupCheckpoint` per group.

  Made before anything is built (``check``: the lock probe and whether a
  plan is there, as ``funcnet train`` checks its folder first); ``open``
  once the groups are known; ``close`` at the end, however it ends.
  """

  def __init__(self, out: str, resume: bool, *, is_main: Optional[bool] = None):
    self.out, self.resume = os.fspath(out), resume
    self.is_main = jax.process_index() == 0 if is_main is None else is_main
    self.watch = None
    self._stack = contextlib.ExitStack()
    self.check()

  def check(self) -> None:
    """One line, nothing written, when the folder cannot be (re)started.

    (A folder with a plan and no ``--resume`` is refused by the command,
    :func:`refuse_existing`; the library's ``sweep.run`` replaces it, as a
    study run again into its folder does.)

    Raises:
      ConfigError: another process holds the folder's lock.
      CheckpointError: ``--resume`` without a folder or a plan.
    """
    if self.is_main:
      rundir.check_unlocked(self.out, "funcnet sweep")
    if self.resume:
      read_plan(self.out)

  def open(self, plan: dict) -> None:
    """Compares ``plan`` with the saved one (``--resume``), then takes the
    lock, writes the plan (a new sweep) and starts watching for signals.

    Raises:
      ConfigError: a resume whose plan differs; the folder taken meanwhile.
    """
    if self.resume:
      diff = differences(read_plan(self.out), plan)
      if diff:
        raise ConfigError(
            f"--resume {self.out!r}: the sweep's plan differs ("
            + "; ".join(diff) + "); expected the sweep's own config and "
            f"--grid (funcnet sweep --out {self.out} --resume alone reads "
            "them from its plan), or a new --out")
    if self.is_main:
      self._stack.enter_context(rundir.lock(self.out, "funcnet sweep"))
      if not self.resume:
        # A new sweep: an older one's checkpoints would be taken for its own.
        shutil.rmtree(os.path.join(self.out, CHECKPOINTS), ignore_errors=True)
        rundir.check_writable(os.path.join(self.out, CHECKPOINTS),
                              "sweep folder")
        rundir.write_json(plan_path(self.out), plan)
    if jax.process_count() > 1:  # the others wait for the plan and the rmtree
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices("funcnet sweep plan")
    self.watch = self._stack.enter_context(preemption.Watch("epoch"))

  def close(self) -> None:
    self._stack.close()

  def group(self, g: int, cfg: dict) -> "GroupCheckpoint":
    """Group ``g``'s checkpoints, at the cadence and count ``cfg`` says."""
    return GroupCheckpoint(self, g, cfg["run"]["checkpoint_every"],
                           cfg["run"]["keep_checkpoints"])


class GroupCheckpoint:
  """One group's checkpoints: restore where it stopped, save as it trains."""

  def __init__(self, folder: Folder, group: int, every: int, keep: int):
    self.folder, self.group, self.every = folder, group, every
    self.directory = os.path.join(folder.out, CHECKPOINTS, f"group-{group:03d}")
    self.saver = checkpoints.Saver(self.directory, keep)

  def restore(self, params, opt_state, key_data: np.ndarray, monitors):
    """``(epoch, params, opt_state, wall_s)`` from the newest good step,
    with every monitor restored; None when the group never saved.

    ``params``, ``opt_state``: the group's placed arrays, the templates
    (structure, shapes, shardings). Damaged steps are set aside and
    reported as ``funcnet train --resume`` does.

    Raises:
      CheckpointError: every step damaged; keys that differ from the
        saved ones (another PRNG implementation, e.g. a JAX upgrade).
    """
    if checkpoints.latest_epoch(self.directory) is None:
      return None
    r = checkpoints.restore_newest_good(
        self.directory, TrainState(params, opt_state), move_damaged=True,
        on_damaged=lambda line: self.folder.is_main and print(
            f"funcnet: warning: {line}", file=sys.stderr))
    extra = r.extra or {}
    if np.asarray(extra.get("key_data", []), np.int64).tolist() != \
        np.asarray(key_data, np.int64).tolist():
      raise CheckpointError(
          f"checkpoint of group {self.group} in {self.directory!r} holds "
          "other PRNG keys than this process draws from the plan's seeds; "
          "expected the JAX (and jax_default_prng_impl) it was saved with")
    for m, snap in zip(monitors, extra["monitors"]):
      m.restore(snap)
    return r.state.epoch, r.state.params, r.state.opt_state, extra["wall_s"]

  def after_epoch(self, epoch: int, params, opt_state, key_data, monitors,
                  wall_s: float, last: bool) -> None:
    """After epoch ``epoch`` (counted from 1): saves when it is a multiple
    of ``run.checkpoint_every``, the group's ``last``, or a signal came.

    Raises:
      Preempted: a signal came; the checkpoint is on disk.
    """
    signal_name = self.folder.watch.requested()
    if not (epoch % self.every == 0 or last or signal_name):
      return
    self.saver.save(
        TrainState(params, opt_state, epoch),
        {"monitors": [m.snapshot() for m in monitors], "wall_s": wall_s,
         "key_data": np.asarray(key_data).tolist()})
    if signal_name:
      self.close()
      out = self.folder.out
      raise Preempted(
          f"{signal_name}: stopped after epoch {epoch} of group "
          f"{self.group + 1}, "
          f"checkpoints saved in {os.path.join(out, CHECKPOINTS)}; continue "
          f"with: funcnet sweep --out {out} --resume",
          preemption.EXIT_CODES[signal_name])

  def close(self) -> None:
    """Returns once every save is on disk."""
    self.saver.close()
