"""The run folder: what ``funcnet train`` writes, and the one place that reads it.

A run folder holds:

  config.json      the resolved config, every key
  model.json       the model's ``spec`` (its kind and builder arguments):
                   rebuilds the model without loading the data
  stats.npz        ``mean``, ``std`` (each of one example's shape) that the
                   training inputs were standardised with; absent when the
                   run did not standardise
  metrics.jsonl    one JSON object per epoch (see :func:`funcnet.train.fit`)
  summary.json     final and best metrics, steps/s, device, status
  loss.png, grad_norms.png     curves (``run.plots``)
  events.out.tfevents.*        TensorBoard scalars (``run.tensorboard``)
  checkpoints/     orbax checkpoints of ``{params, opt_state, epoch}``, or
                   wherever ``run.checkpoint_dir`` says (:func:`checkpoint_dir`)

``funcnet eval``, ``--resume`` and fine-tuning (``finetune.from_run``) read
a run through this module only. Writes are atomic (a temporary file, then
``os.replace``), so a process killed mid-write leaves the previous file.
"""

import json
import math
import os
from typing import Any, NamedTuple, Optional

import numpy as np

from funcnet import checkpoints, config as config_lib
from funcnet.errors import ConfigError

CONFIG, MODEL, STATS = "config.json", "model.json", "stats.npz"
METRICS, SUMMARY = "metrics.jsonl", "summary.json"


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


def _write_json(path: str, obj) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(json_safe(obj), f, indent=2, sort_keys=True, allow_nan=False)
    f.write("\n")
  os.replace(tmp, path)


def _require(run: str, name: str, what: str) -> str:
  path = os.path.join(run, name)
  if not os.path.isfile(path):
    raise ConfigError(f"{what} {run!r} has no {name}; expected a run folder "
                      "written by funcnet train")
  return path


# --- config, model, statistics: written once, at the start ----------------

def write_config(run: str, cfg: dict) -> None:
  _write_json(os.path.join(run, CONFIG), cfg)


def read_config(run: str, overrides=(), what: str = "run folder") -> dict:
  """The run's resolved config, checked, with ``overrides`` (``--set``)."""
  with open(_require(run, CONFIG, what)) as f:
    return config_lib.from_dict(json.load(f), overrides)


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
  np.savez(tmp, mean=np.asarray(stats[0]), std=np.asarray(stats[1]))
  os.replace(tmp, path)


def read_stats(run: str) -> Optional[tuple]:
  """``(mean, std)`` the run standardised its inputs with, or None."""
  path = os.path.join(run, STATS)
  if not os.path.exists(path):
    return None
  with np.load(path, allow_pickle=False) as f:
    return f["mean"], f["std"]


# --- metrics and summary ----------------------------------------------------

def read_metrics(run: str, last_epoch: Optional[int] = None) -> list:
  """The metrics records, those of epochs ``<= last_epoch`` when given; a
  last line cut short by a kill ends the list."""
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
      if last_epoch is None or rec.get("epoch", math.inf) <= last_epoch:
        kept.append(rec)
  return kept


def reset_metrics(run: str, records=()) -> None:
  """``metrics.jsonl`` holding ``records`` only (on resume: those up to
  the checkpoint; on a fresh start: none)."""
  path = os.path.join(run, METRICS)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(json.dumps(json_safe(r)) + "\n" for r in records)
  os.replace(tmp, path)


class MetricsWriter:
  """Appends one line per epoch to ``metrics.jsonl``, flushed each time."""

  def __init__(self, run: str):
    self._f = open(os.path.join(run, METRICS), "a")

  def write(self, record: dict) -> None:
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
      jax.eval_shape(lambda k: model.init(k, dtype), jax.random.key(0)))
  epoch, params = checkpoints.restore_params(checkpoint_dir(run, cfg),
                                             template, epoch)
  return Trained(run, cfg, model, params, epoch, read_stats(run))
