"""The summary record of a run: ``summary.json``, what ``funcnet train``
prints at the end and what sweeps and comparisons read.

  {"name", "status", "fit_status", "stopped", "epochs", "total_steps",
   "steps_per_s", "wall_time_s", "device_kind", "device_count", "task",
   "devices_used", "process_count", "device", "final", "best",
   "test_<metric>" (the last evaluation's), "compare_grads" (when asked),
   "compute"}

``compute`` (:mod:`funcnet.train.compute`): ``params``, ``param_bytes``,
``forward_flops_per_example``, ``train_step_flops`` (counted from the
layers at the config's batch size), ``total_train_flops`` (that x the
steps trained), ``achieved_flops_per_s`` (that x ``steps_per_s``, the
steps after the compiling first epoch), and ``energy_j`` only where the
machine reports it (Linux RAPL, the package counters' difference over the
run; None elsewhere, never estimated without a stated power figure).

``status`` is ``"finished"``, ``"diverged"`` or ``"preempted"``;
``fit_status`` is ``train.fit``'s (``"done"``, ``"early_stopped"``, ...).
"""

import os
import time
from typing import Optional

import jax

from funcnet import tasks


def default_workdir(cfg) -> str:
  return os.path.join("runs", f"{cfg['name']}-{time.strftime('%Y%m%d-%H%M%S')}")


def stopped_at(result, last_epoch: int) -> str:
  """Where a run stopped: ``"epoch 3"``, or ``"step 40 of epoch 4"`` inside
  a streamed epoch."""
  position = result.state.position
  return (f"step {position['step']} of epoch {last_epoch + 1}" if position
          else f"epoch {last_epoch}")


def _steps_per_s(result, elapsed: float, steps_per_epoch: int):
  """Steps per second after the first epoch of this process, which pays
  for compilation (the whole run when there is only one epoch)."""
  h = result.history
  timed = h[1:] if len(h) > 1 else h
  t_timed = h[-1]["time"] - h[0]["time"] if len(h) > 1 else elapsed
  return (len(timed) * steps_per_epoch / t_timed
          if t_timed > 0 and timed else None)


def record(setup, result, history: list, elapsed: float,
           signal_name=None) -> dict:
  """The summary of the run ``setup`` describes, trained into ``result``
  (this process's ``train.fit``) with ``history`` (every epoch's record,
  resumed ones too) in ``elapsed`` seconds; ``signal_name`` the signal
  that stopped it, or None."""
  cfg, ds = setup.cfg, setup.ds
  t = cfg["train"]
  steps_per_epoch = len(ds.y_train) // t["batch_size"]
  last_epoch = history[-1]["epoch"] if history else result.state.epoch
  final = history[-1] if history else {}
  status = ("diverged" if result.diverged
            else "preempted" if signal_name else "finished")
  summary = {
      "name": cfg["name"], "status": status,
      "fit_status": result.status, "stopped": result.reason,
      "epochs": last_epoch, "total_steps": last_epoch * steps_per_epoch,
      "steps_per_s": _steps_per_s(result, elapsed, steps_per_epoch),
      "wall_time_s": elapsed, "device_kind": jax.devices()[0].device_kind,
      "device_count": jax.device_count(), "task": ds.task,
      "devices_used": setup.plan.n_devices if setup.plan is not None else 1,
      "process_count": jax.process_count(), "device": setup.device(),
      "final": {k: v for k, v in final.items() if k != "grad_norms"},
      "best": tasks.best(history, ds.task),
  }
  if signal_name:
    summary["stopped"] = (f"{signal_name} after "
                          f"{stopped_at(result, last_epoch)} of {t['epochs']}; "
                          "resume with --resume")
  for k in tasks.evaluated_keys(ds.task):
    last = [h[k] for h in history if k in h]
    if last:
      summary[k] = last[-1]
  if "test" in ds.info and not result.diverged:
    summary["test"] = test_record(setup, result.state.params)
  if result.best_epoch is not None:
    summary["best_epoch"] = result.best_epoch  # the params restore_best kept
  summary["compute"] = compute_record(setup, summary)
  return summary


def test_record(setup, params) -> dict:
  """The test split's metrics at ``params``, for a run whose held-out split
  is a validation split carved from training (``data.validation``): the
  one read of the test split, after every choice was made."""
  from funcnet import train
  x, y = setup.ds.info["test"]
  evaluate = train.make_evaluate(setup.model, setup.loss, setup.ds.task)
  metrics = jax.device_get(evaluate(params, *train.as_arrays(x, y, setup.dtype)))
  return {k: float(v) for k, v in metrics.items()}


def compute_record(setup, summary: dict) -> Optional[dict]:
  """summary.json's ``compute``; None where the model cannot be traced
  abstractly (a user's kind that needs concrete arrays)."""
  try:
    c = setup.compute()
  except Exception:  # noqa: BLE001 - accounting must never fail a run
    return None
  record = c.record(summary["total_steps"])
  rate = summary.get("steps_per_s")
  record["achieved_flops_per_s"] = (c.train_step_flops * rate if rate
                                    else None)
  return record
