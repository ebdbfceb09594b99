"""``funcnet bench models``: one training step of the application models,
hand-written gradients against ``jax.grad``, and the same models written in
Flax, Equinox and PyTorch (:mod:`funcnet.bench.peers`).

For each config (the MNIST-1D CNN, GRU and Transformer and the
character GPT by default) the step
is the config's model, loss and optimizer with dropout (a key split per
step), one jitted call with params, optimizer state and key donated
(:func:`funcnet.bench.peers.common.jax_runner`), on mini-batches of the
config's data:

  time     seconds per step (:func:`funcnet.bench.step_time.measure`) of
           each JAX contestant in two ``modes``: ``loop``, a Python loop of
           jitted steps, and ``scan``, the same steps ``lax.scan``-ned over
           the batches in one jitted call, as ``funcnet train`` runs an
           epoch; PyTorch eager in its loop. funcnet manual, funcnet
           autodiff and each peer measured in turn, each mode, ``rounds``
           times each, so that all meet the same load; a contestant's time
           is the median of its faster mode (both are in the record: a
           contestant is timed as it trains fastest, and the peers get the
           same choice: Flax's convolutions, for one, are 14x slower inside
           a loop, so its CNN's best is the Python loop). Against the
           peers, a contestant's speed ratio is ``t_peer / t_contestant``
           (above 1: faster than the peer), to the fastest JAX peer and to
           PyTorch (eager, at its best thread count)
  memory   XLA's temporary allocation of the compiled step without dropout
           (:func:`funcnet.bench.step_time.make_step`;
           ``memory_analysis().temp_size_in_bytes``): what the backward
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
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from funcnet import config as config_lib, experiment, train
from funcnet.bench import step_time
from funcnet.data import streamed
from funcnet.train import feed

CONFIGS = ("mnist1d_cnn", "mnist1d_gru", "mnist1d_transformer", "text_gpt")
GRADS = ("manual", "autodiff")
MODES = ("loop", "scan")
JAX_PEERS = ("flax", "equinox")
TORCH_PEER = "pytorch"


def _config_path(name: str) -> str:
  if os.path.exists(name):
    return name
  # funcnet/bench/model_steps.py -> the repository, which holds configs/
  root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  return os.path.join(root, "configs", f"{name}.toml")


def temp_bytes(setup, grads: str, batch) -> int:
  """XLA's temporary allocation of one compiled training step on ``batch``
  (an ``(x, y)`` of :func:`_numpy_batches`)."""
  step = step_time.make_step(setup.model, setup.loss, setup.optimizer, grads)
  params, opt_state = setup.init_state()
  x, y = feed.as_arrays(*batch, setup.dtype)
  stats = step.lower(params, opt_state, x, y).compile().memory_analysis()
  return int(stats.temp_size_in_bytes) if stats is not None else -1


def _numpy_batches(setup) -> list:
  """A few ``(x, y)`` mini-batches of the config's training data, numpy:
  floats in the config's dtype, token ids and labels as they are. A split
  read by rows (text windows, shards: :class:`funcnet.data.streamed.Rows`)
  is read for those rows alone."""
  b = setup.cfg["train"]["batch_size"]
  x, y = setup.ds.x_train, setup.ds.y_train
  n = min(len(y) // b, 8)
  by_rows = streamed.is_streamed(setup.ds)
  out = []
  for i in range(n):
    rows = np.arange(i * b, (i + 1) * b)
    xb, yb = x.read(rows) if by_rows else (x[rows], y[rows])
    out.append(feed.host_arrays(xb, yb, setup.dtype))
  return out


def contestants(setup, batches, peers=None, log: Callable = print,
                modes: Sequence[str] = MODES) -> tuple:
  """``({name: {mode: run}}, {name: Peer}, notes)``: funcnet's step with
  each gradient source and, unless ``peers`` is False, the peers of
  :mod:`funcnet.bench.peers` that import and can write the model.

  Every JAX contestant runs the same jitted step in each of ``modes``
  (:func:`peers.common.jax_runner`: a dropout key split per step, params,
  optimizer state and key donated; ``scan``: the steps scanned over the
  batches in one call), funcnet's with the config's own optimizer;
  PyTorch eager runs its ``loop``."""
  from funcnet.bench import peers as peers_lib
  from funcnet.bench.peers import common
  runners = {}
  for g in GRADS:  # params of their own: each runner donates its own
    vg = train.gradient_fn(setup.model, setup.loss, g)
    runners[g] = {m: common.jax_runner(vg, setup.init_state()[0],
                                       setup.optimizer, batches,
                                       scan=m == "scan")[0] for m in modes}
  if peers is False:
    return runners, {}, []
  built, notes = peers_lib.build_all(setup.model, setup.cfg, batches)
  for note in notes:
    log(note)
  for n, p in built.items():
    runners[n] = ({"loop": p.run} if p.scanned is None else
                  {m: p.scanned if m == "scan" else p.run for m in modes})
  return runners, built, notes


def medians(times: dict) -> dict:
  """``{name: {mode: ms}}``, the median in milliseconds of ``times = {name:
  {mode: [seconds per step, one a round]}}``."""
  return {k: {m: 1e3 * float(np.median(v)) for m, v in ms.items()}
          for k, ms in times.items()}


def fastest_modes(by_mode: dict) -> tuple[dict, dict]:
  """``({name: ms}, {name: mode})`` from :func:`medians`' ``{name: {mode:
  ms}}``: each contestant's time in its faster mode, and that mode."""
  mode = {k: min(v, key=v.get) for k, v in by_mode.items()}
  return {k: by_mode[k][m] for k, m in mode.items()}, mode


def run(configs: Sequence[str] = CONFIGS, *, rounds: int = 3, repeats: int = 3,
        min_time: float = 0.5, log: Callable = print,
        peak_size: int = 0, peers: Optional[bool] = None,
        modes: Sequence[str] = MODES) -> list:
  """One record per config: ms per step and temp bytes of each gradient
  source, and manual / autodiff ratios, its compute (see the module
  docstring; ``peak_size`` > 0 measures the peak with ``n x n`` matmuls);
  with the peers (``peers`` None or True; False: funcnet only), each
  peer's ms per step and the speed ratios of :func:`peer_ratios`. Each
  contestant's time is its faster of ``modes`` (``ms_by_mode`` holds
  every one, ``modes`` the one taken)."""
  records = []
  peak = (step_time.matmul_peak(peak_size, min_time=min_time)["gflops"]
          if peak_size else None)
  for name in configs:
    cfg = config_lib.load(_config_path(name))
    setup = experiment.Setup(cfg)
    batches = _numpy_batches(setup)
    mem = {g: temp_bytes(setup, g, batches[0]) for g in GRADS}
    runners, built, notes = contestants(setup, batches, peers, log, modes)
    times = {k: {m: [] for m in ways} for k, ways in runners.items()}
    for i in range(rounds):     # all alternate, so all meet the same load
      for k, ways in runners.items():
        if i and k in built and built[k].before_round is not None:
          built[k].before_round()   # PyTorch: its best threads for now
        for m, r in ways.items():
          t = step_time.measure(r, repeats=repeats, min_time=min_time).median
          times[k][m].append(t / getattr(r, "steps", 1))
    by_mode = medians(times)
    ms, mode = fastest_modes(by_mode)
    rec = {"config": name, "kind": setup.model.kind,
           "batch": cfg["train"]["batch_size"],
           "manual_ms": ms["manual"], "autodiff_ms": ms["autodiff"],
           "time_ratio": ms["manual"] / ms["autodiff"],
           "manual_temp_bytes": mem["manual"],
           "autodiff_temp_bytes": mem["autodiff"],
           "memory_ratio": mem["manual"] / max(mem["autodiff"], 1),
           "rounds": rounds, "device": step_time.device_description(),
           "modes": mode, "ms_by_mode": by_mode}
    rec.update(_compute(setup, {g: ms[g] for g in GRADS}, peak))
    if built or notes:
      rec.update(peer_ratios(ms))
      rec["peer_params"] = {n: p.params for n, p in built.items()}
      rec["peer_info"] = {n: p.info for n, p in built.items() if p.info}
      rec["peer_notes"] = notes
    log(json.dumps(rec))
    records.append(rec)
  return records


def peer_ratios(ms: dict) -> dict:
  """The peers' ms per step and every contestant's speed against the
  fastest JAX peer (Flax or Equinox) and against PyTorch: ``t_peer /
  t_contestant``, above 1 when the contestant is faster.

  ``ms``: ``{contestant: ms per step}``, funcnet's ``manual`` and
  ``autodiff`` and whichever peers ran. Returns ``{"peers_ms",
  "fastest_jax_peer", "over_fastest_jax_peer": {contestant: ratio},
  "over_pytorch": {...}}`` (a reference that did not run gives None).
  """
  jax_peers = {k: v for k, v in ms.items() if k in JAX_PEERS}
  fastest = min(jax_peers, key=jax_peers.get) if jax_peers else None
  torch_ms = ms.get(TORCH_PEER)
  return {
      "peers_ms": {k: v for k, v in ms.items() if k not in GRADS},
      "fastest_jax_peer": fastest,
      "over_fastest_jax_peer": {k: (ms[fastest] / v if fastest else None)
                                for k, v in ms.items()},
      "over_pytorch": {k: (torch_ms / v if torch_ms else None)
                       for k, v in ms.items()}}


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
  return "\n".join(rows + _peers_table(records))


def _peers_table(records: list) -> list:
  """Rows of the contestants' table, empty when no record has peers."""
  if not any("peers_ms" in r for r in records):
    return []
  rows = ["", "| config | contestant | ms/step | loop | scan "
          "| speed / fastest JAX peer | speed / PyTorch |",
          "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
  fmt = lambda v: "n/a" if v is None else f"{v:.2f}x"  # noqa: E731
  for r in records:
    if "peers_ms" not in r:
      continue
    ms = {"autodiff": r["autodiff_ms"], "manual": r["manual_ms"],
          **r["peers_ms"]}
    by_mode = r.get("ms_by_mode", {})
    for k, v in ms.items():
      name = k if k in r["peers_ms"] else f"funcnet {k}"
      each = [by_mode.get(k, {}).get(m) for m in MODES]
      each = [("-" if t is None else f"{t:.2f}") for t in each]
      rows.append(f"| {r['config']} | {name} | {v:.2f} | {' | '.join(each)} | "
                  f"{fmt(r['over_fastest_jax_peer'][k])} | "
                  f"{fmt(r['over_pytorch'][k])} |")
  return rows
