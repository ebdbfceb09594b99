"""The run folder: what ``funcnet train`` writes, and the one place that reads it.

A run folder holds:

  config.json      the resolved config, every key
  model.json       the model's ``spec`` (its kind and builder arguments):
                   rebuilds the model without loading the data
  stats.npz        ``mean``, ``std`` (each of one example's shape) that the
                   training inputs were standardised with; absent when the
                   run did not standardise
  tokenizer.json   a language model's tokenizer (text data), what
                   ``funcnet sample`` encodes prompts and decodes with;
                   absent for other data
  metrics.jsonl    one JSON object per epoch (see :func:`funcnet.train.fit`)
  summary.json     final and best metrics, steps/s, device, status
  loss.png, grad_norms.png     curves (``run.plots``)
  events.out.tfevents.*        TensorBoard scalars (``run.tensorboard``)
  checkpoints/     orbax checkpoints of ``{params, opt_state, epoch,
                   early_stopping}``, or wherever ``run.checkpoint_dir`` says
                   (:func:`checkpoint_dir`)
  .lock            who is writing the run (:func:`lock`): one writer at a time

``funcnet eval``, ``--resume`` and fine-tuning (``finetune.from_run``) read
a run through this module only. Writes are atomic (a temporary file, then
``os.replace``), so a process killed mid-write leaves the previous file.
"""

import contextlib
import json
import math
import os
import socket
import time
from typing import Any, NamedTuple, Optional

import numpy as np

from funcnet import config as config_lib
from funcnet.run import checkpoints
from funcnet.errors import ConfigError

CONFIG, MODEL, STATS = "config.json", "model.json", "stats.npz"
TOKENIZER = "tokenizer.json"
METRICS, SUMMARY, LOCK = "metrics.jsonl", "summary.json", ".lock"


@contextlib.contextmanager
def lock(run: str, writer: str = "funcnet train"):
  """Holds ``run``'s writer lock (creating the folder) while inside.

  An ``fcntl.flock`` on ``<run>/.lock``, which holds the holder's pid, host
  and start time for the message a second writer gets. The kernel drops the
  lock when its process ends, however it ends, so a lock left by a killed
  run is simply taken over; the file itself stays (removing it would let a
  third process lock a file the second one has already opened). On a
  shared filesystem (NFS) flock is as good as the filesystem's locking.
  ``writer`` names the command in the message (``funcnet sweep`` locks its
  sweep folder the same way).

  Raises:
    ConfigError: another process holds the lock.
    OSError: the folder cannot be created (the command's one-line
      filesystem error).
  """
  import fcntl
  os.makedirs(run, exist_ok=True)
  path = os.path.join(run, LOCK)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise _in_use(run, fd, writer) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, (f"pid {os.getpid()} on {socket.gethostname()} since "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n").encode(), 0)
    yield
  finally:
    os.close(fd)  # closing drops the lock


def _in_use(run: str, fd: int, writer: str) -> ConfigError:
  holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
  folder = "sweep folder" if writer == "funcnet sweep" else "run folder"
  return ConfigError(f"{folder} {run!r} is being written by "
                     f"{holder or 'another process'}; expected one {writer} "
                     f"per {folder} (wait for it to end, or choose "
                     "another --out)")


def check_unlocked(run: str, writer: str = "funcnet train") -> None:
  """Raises :func:`lock`'s error now if another process holds ``run``'s
  lock; creates nothing. (A second writer is told so first, not that the
  folder holds checkpoints; :func:`lock` is still what guarantees it.)"""
  import fcntl
  try:
    fd = os.open(os.path.join(run, LOCK), os.O_RDONLY)
  except OSError:
    return  # no lock file (or no folder): nobody has ever locked it
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
      raise _in_use(run, fd, writer) from None
  finally:
    os.close(fd)


def check_writable(directory: str, what: str) -> None:
  """Creates ``directory`` and writes and removes a file in it, so that a
  folder the run cannot write is one line before training, not an error
  after it. (``os.access`` is no test: it says yes to root on a read-only
  mount.) URLs (``gs://``) are left to orbax.

  Raises:
    ConfigError: naming ``what`` (a config key or flag) and the OS's reason.
  """
  if "://" in directory:
    return
  probe = os.path.join(directory, f".funcnet-write-test-{os.getpid()}")
  try:
    os.makedirs(directory, exist_ok=True)
    with open(probe, "w") as f:
      f.write("ok\n")
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f"{what} {directory!r} cannot be written "
                      f"({e.strerror or e}); expected a folder this process "
                      "can create and write") from None


def checkpoint_dir(run: str, cfg: dict) -> str:
  """Where the run's checkpoints are: ``run.checkpoint_dir``, or
  ``<run>/checkpoints``."""
  return cfg["run"]["checkpoint_dir"] or os.path.join(run, "checkpoints")


def json_safe(obj):
  """``obj`` with NaN and inf floats as ``None``: strict JSON for any reader."""
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if isinstance(obj, dict):
    return {k: json_safe(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [json_safe(v) for v in obj]
  return obj


@contextlib.contextmanager
def _writing(path: str, tmp: Optional[str] = None):
  """A failed write names ``path``: the OS's error for a failed ``write``
  carries no file name ("File too large" alone), and the command prints
  the error's file name (``funcnet.cli._os_error``). ``tmp``, half written, goes."""
  try:
    yield
  except OSError as e:
    if tmp is not None:
      with contextlib.suppress(OSError):
        os.remove(tmp)
    if e.filename is None:
      raise OSError(e.errno, e.strerror or str(e), path) from None
    raise


def write_json(path: str, obj) -> None:
  """``obj`` as strict JSON (NaN and inf as null) into ``path``, atomically
  (a temporary file, then ``os.replace``)."""
  _write_json(path, obj)


def _write_json(path: str, obj) -> None:
  tmp = path + ".tmp"
  with _writing(path, tmp):
    with open(tmp, "w") as f:
      json.dump(json_safe(obj), f, indent=2, sort_keys=True, allow_nan=False)
      f.write("\n")
    os.replace(tmp, path)


def _require(run: str, name: str, what: str) -> str:
  path = os.path.join(run, name)
  if not os.path.isdir(run):
    raise ConfigError(f"{what} {run!r}: no such run folder; expected a run "
                      "folder written by funcnet train")
  if not os.path.isfile(path):
    raise ConfigError(f"{what} {run!r} has no {name}; expected a run folder "
                      "written by funcnet train")
  return path


# --- config, model, statistics: written once, at the start ----------------

def write_config(run: str, cfg: dict) -> None:
  _write_json(os.path.join(run, CONFIG), cfg)


def read_config(run: str, overrides=(), what: str = "run folder") -> dict:
  """The run's resolved config, checked, with ``overrides`` (``--set``).

  Raises:
    ConfigError: no ``config.json``, or one that is not a JSON config.
  """
  path = _require(run, CONFIG, what)
  try:
    with open(path) as f:
      saved = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ConfigError(f"{what} {run!r}: {CONFIG} is damaged ({e}); expected "
                      "the JSON config funcnet train wrote") from None
  if not isinstance(saved, dict):
    raise ConfigError(f"{what} {run!r}: {CONFIG} holds a "
                      f"{type(saved).__name__}; expected a JSON object")
  try:  # a user's kind: its module is imported by the user, never here
    config_lib.require_kind(saved)
  except ConfigError as e:
    raise ConfigError(f"{what} {run!r}: {e}") from None
  return config_lib.from_dict(saved, overrides)


def resumable(run: str) -> bool:
  """Whether ``run`` holds a config and a checkpoint to resume from
  (``funcnet train --auto-resume``); a damaged ``config.json`` is its
  one-line error."""
  if not os.path.isfile(os.path.join(run, CONFIG)):
    return False
  return checkpoints.latest_epoch(checkpoint_dir(run, read_config(run))) \
      is not None


def write_model(run: str, model) -> None:
  _write_json(os.path.join(run, MODEL), model.spec)


def read_model(run: str, what: str = "run folder"):
  """The run's model, rebuilt from ``model.json`` (no data needed)."""
  from funcnet.models import registry
  with open(_require(run, MODEL, what)) as f:
    return registry.rebuild(json.load(f))


def write_stats(run: str, stats: Optional[tuple]) -> None:
  """``stats = (mean, std)`` of the training inputs, or None (none used)."""
  path = os.path.join(run, STATS)
  if stats is None:
    if os.path.exists(path):
      os.remove(path)
    return
  tmp = path + ".tmp.npz"
  with _writing(path, tmp):
    np.savez(tmp, mean=np.asarray(stats[0]), std=np.asarray(stats[1]))
    os.replace(tmp, path)


def read_stats(run: str) -> Optional[tuple]:
  """``(mean, std)`` the run standardised its inputs with, or None."""
  path = os.path.join(run, STATS)
  if not os.path.exists(path):
    return None
  with np.load(path, allow_pickle=False) as f:
    return f["mean"], f["std"]


def write_tokenizer(run: str, tokenizer_json: Optional[str]) -> None:
  """The data's tokenizer (its JSON, ``Dataset.info["tokenizer"]``), or
  None for data without one."""
  path = os.path.join(run, TOKENIZER)
  if tokenizer_json is None:
    if os.path.exists(path):
      os.remove(path)
    return
  tmp = path + ".tmp"
  with _writing(path, tmp):
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(tokenizer_json)
    os.replace(tmp, path)


def read_tokenizer(run: str, what: str = "run folder") -> str:
  """The run's tokenizer JSON; a one-line error for a run without one."""
  path = os.path.join(run, TOKENIZER)
  if os.path.isdir(run) and os.path.isfile(os.path.join(run, MODEL)) \
      and not os.path.isfile(path):
    raise ConfigError(f"{what} {run!r} has no {TOKENIZER}: it is not a "
                      "language model's run; expected a run trained on text")
  with open(_require(run, TOKENIZER, what), encoding="utf-8") as f:
    return f.read()


# --- metrics and summary ----------------------------------------------------

def read_metrics(run: str, last_epoch: Optional[int] = None,
                 events: bool = False) -> list:
  """The per-epoch metrics records, those of epochs ``<= last_epoch`` when
  given; a last line cut short by a kill ends the list. ``events``: also
  the event lines (``{"event": ...}``: a resume that changed safe keys, a
  fallback from a damaged checkpoint), in file order."""
  path = os.path.join(run, METRICS)
  if not os.path.exists(path):
    return []
  kept = []
  with open(path) as f:
    for line in f:
      try:
        rec = json.loads(line)
      except json.JSONDecodeError:
        break
      if "event" in rec and not events:
        continue
      if last_epoch is None or rec.get("epoch", math.inf) <= last_epoch:
        kept.append(rec)
  return kept


def reset_metrics(run: str, records=()) -> None:
  """``metrics.jsonl`` holding ``records`` only (on resume: those up to
  the checkpoint; on a fresh start: none)."""
  path = os.path.join(run, METRICS)
  tmp = path + ".tmp"
  with _writing(path, tmp):
    with open(tmp, "w") as f:
      f.writelines(json.dumps(json_safe(r)) + "\n" for r in records)
    os.replace(tmp, path)


class MetricsWriter:
  """Appends one line per epoch to ``metrics.jsonl``, flushed each time."""

  def __init__(self, run: str):
    self._path = os.path.join(run, METRICS)
    self._f = open(self._path, "a")

  def write(self, record: dict) -> None:
    """One epoch's record, or an event (``{"event": ..., "epoch": ...}``)."""
    with _writing(self._path):
      self._f.write(json.dumps(json_safe(record)) + "\n")
      self._f.flush()

  def close(self) -> None:
    self._f.close()


def write_summary(run: str, summary: dict) -> None:
  _write_json(os.path.join(run, SUMMARY), summary)


def read_summary(run: str) -> dict:
  with open(_require(run, SUMMARY, "run folder")) as f:
    return json.load(f)


# --- the trained model ------------------------------------------------------

class Trained(NamedTuple):
  """A trained run, as evaluation and fine-tuning need it.

  Attributes:
    run: the run folder.
    cfg: its resolved config.
    model: its model, rebuilt from ``model.json``.
    params: the params at the latest (or asked for) checkpoint.
    epoch: that checkpoint's epoch.
    stats: ``(mean, std)`` its inputs were standardised with, or None.
  """
  run: str
  cfg: dict
  model: Any
  params: Any
  epoch: int
  stats: Optional[tuple]


def load_trained(run: str, what: str = "run folder", epoch=None) -> Trained:
  """The run's params at its latest checkpoint, with its model and
  statistics; neither the data nor the optimizer is rebuilt.

  Raises:
    ConfigError: ``run`` is not a run folder.
    CheckpointError: it has no readable checkpoint.
  """
  import jax
  import jax.numpy as jnp
  run = os.fspath(run)
  cfg = read_config(run, what=what)
  model = read_model(run, what)
  dtype = jnp.dtype(cfg["train"]["dtype"])
  # Shapes and dtypes only (nothing computed), restored onto one device.
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  template = jax.tree_util.tree_map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=one),
      jax.eval_shape(lambda k: model.init(k, dtype),
                     jax.eval_shape(jax.random.key, 0)))
  epoch, params = checkpoints.restore_params(checkpoint_dir(run, cfg),
                                             template, epoch)
  return Trained(run, cfg, model, params, epoch, read_stats(run))
