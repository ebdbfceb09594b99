"""``funcnet bench models``: one training step of the application models,
hand-written gradients against ``jax.grad``.

For each config (the MNIST-1D CNN, GRU and Transformer by default) the step
is :func:`funcnet.bench.step_time.make_step` with the config's model, loss and
optimizer, on mini-batches of the config's data:

  time     seconds per step of a Python loop of jitted steps
           (:func:`funcnet.bench.step_time.measure`), manual and autodiff measured
           alternately, ``rounds`` times each, so that both meet the same
           load; the ratio is of the medians
  memory   XLA's temporary allocation of the compiled step
           (``memory_analysis().temp_size_in_bytes``): what the backward
           keeps alive besides params, optimizer state and the batch

  compute  parameters and their bytes, FLOPs of one training step counted
           from the layers and XLA's count of the compiled step
           (:mod:`funcnet.train.compute`), and the GFLOP/s each source
           achieves with it; with ``peak_size``, set against the matmul peak
           (:func:`funcnet.bench.step_time.matmul_peak`) measured once
           before the configs

A hand-written backward chooses what to keep (its caches), so its step
should need no more temporary memory than autodiff's, and should run as
fast (the issue's bar: within 10%).
"""

import json
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import config as config_lib, experiment
from funcnet.bench import step_time

CONFIGS = ("mnist1d_cnn", "mnist1d_gru", "mnist1d_transformer")


def _config_path(name: str) -> str:
  if os.path.exists(name):
    return name
  # funcnet/bench/model_steps.py -> the repository, which holds configs/
  root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  return os.path.join(root, "configs", f"{name}.toml")


def _step_and_batches(setup, grads: str):
  """The jitted step and a few mini-batches of the config's training data."""
  t = setup.cfg["train"]
  step = step_time.make_step(setup.model, setup.loss, setup.optimizer, grads)
  b = t["batch_size"]
  x, y = setup.ds.x_train, setup.ds.y_train
  n = min(len(y) // b, 8)
  batches = [(jnp.asarray(x[i * b:(i + 1) * b], setup.dtype),
              jnp.asarray(y[i * b:(i + 1) * b])) for i in range(n)]
  return step, batches


def temp_bytes(setup, grads: str) -> int:
  """XLA's temporary allocation of one compiled training step."""
  step, batches = _step_and_batches(setup, grads)
  params, opt_state = setup.init_state()
  stats = step.lower(params, opt_state, *batches[0]).compile().memory_analysis()
  return int(stats.temp_size_in_bytes) if stats is not None else -1


def time_step(setup, grads: str, *, repeats: int, min_time: float) -> step_time.Timing:
  step, batches = _step_and_batches(setup, grads)
  state = list(setup.init_state())

  def run(k):
    params, opt_state = state
    c = None
    for i in range(k):
      params, opt_state, c = step(params, opt_state, *batches[i % len(batches)])
    jax.block_until_ready((params, opt_state, c))
    state[:] = params, opt_state

  return step_time.measure(run, repeats=repeats, min_time=min_time)


def run(configs: Sequence[str] = CONFIGS, *, rounds: int = 3, repeats: int = 3,
        min_time: float = 0.5, log: Callable = print,
        peak_size: int = 0) -> list:
  """One record per config: ms per step and temp bytes of each gradient
  source, and manual / autodiff ratios, its compute (see the module
  docstring; ``peak_size`` > 0 measures the peak with ``n x n`` matmuls)."""
  records = []
  peak = (step_time.matmul_peak(peak_size, min_time=min_time)["gflops"]
          if peak_size else None)
  for name in configs:
    cfg = config_lib.load(_config_path(name))
    setup = experiment.Setup(cfg)
    mem = {g: temp_bytes(setup, g) for g in ("manual", "autodiff")}
    times = {"manual": [], "autodiff": []}
    for _ in range(rounds):             # alternate, so both meet the same load
      for g in times:
        times[g].append(time_step(setup, g, repeats=repeats,
                                  min_time=min_time).median)
    ms = {g: 1e3 * float(np.median(v)) for g, v in times.items()}
    rec = {"config": name, "kind": setup.model.kind,
           "batch": cfg["train"]["batch_size"],
           "manual_ms": ms["manual"], "autodiff_ms": ms["autodiff"],
           "time_ratio": ms["manual"] / ms["autodiff"],
           "manual_temp_bytes": mem["manual"],
           "autodiff_temp_bytes": mem["autodiff"],
           "memory_ratio": mem["manual"] / max(mem["autodiff"], 1),
           "device": step_time.device_description()}
    rec.update(_compute(setup, ms, peak))
    log(json.dumps(rec))
    records.append(rec)
  return records


def _compute(setup, ms: dict, peak) -> dict:
  """The compute fields of one record: counts, XLA's, GFLOP/s by source."""
  c = setup.compute("compiled")
  out = {"params": c.params, "param_bytes": c.param_bytes,
         "forward_flops_per_example": c.forward_flops_per_example,
         "train_step_flops": c.train_step_flops,
         "xla_train_step_flops": c.xla_train_step_flops,
         "peak_gflops": peak}
  for g, t in ms.items():
    out[f"{g}_gflops"] = c.train_step_flops / (t * 1e-3) / 1e9
    out[f"{g}_fraction_of_peak"] = (out[f"{g}_gflops"] / peak if peak
                                    else None)
  return out


def format_table(records: list) -> str:
  rows = ["| config | batch | manual ms/step | autodiff ms/step | manual/autodiff "
          "| manual temp | autodiff temp | manual/autodiff |",
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for r in records:
    rows.append(
        f"| {r['config']} | {r['batch']} | {r['manual_ms']:.3f} | "
        f"{r['autodiff_ms']:.3f} | {r['time_ratio']:.2f} | "
        f"{r['manual_temp_bytes'] / 1024:.0f} KiB | "
        f"{r['autodiff_temp_bytes'] / 1024:.0f} KiB | {r['memory_ratio']:.2f} |")
  rows += ["", "| config | params | step FLOPs (layers) | step FLOPs (XLA) | "
           "manual GFLOP/s | autodiff GFLOP/s | of peak (manual) |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for r in records:
    if "train_step_flops" not in r:
      continue
    xla, frac = r["xla_train_step_flops"], r["manual_fraction_of_peak"]
    rows.append(
        f"| {r['config']} | {r['params']:,} | {r['train_step_flops']:.4g} | "
        + (f"{xla:.4g} | " if xla else "n/a | ")
        + f"{r['manual_gflops']:.3g} | {r['autodiff_gflops']:.3g} | "
        + (f"{frac:.1%} |" if frac else "n/a |"))
  return "\n".join(rows)
