"""``funcnet bench sweep``: a vectorised sweep against the same variants
trained one at a time, measured in one run, with a warm compile cache.

For each case (a config and a number of variants ``V``) the grid is 4
learning rates (the config's, x3, /3, /10) times ``V / 4`` seeds, trained
for ``epochs`` epochs by :func:`funcnet.sweep.run` (one vectorised program
per group) and with ``sequential=True`` (``train.fit`` per variant, as
``funcnet train`` would). Cases named in the issue: ``digits_mlp:16``,
``mnist1d_cnn:16``, ``mnist1d_gru:16``, ``mnist1d_transformer:16``; the
default list (:data:`CASES`) is the cheap MLP alone.

The compile cache is warm on both sides, so the ratio is what the
vectorised program saves beyond compilations (what a user who has run the
config before meets):

1. JAX's persistent compilation cache (:mod:`funcnet.run.compile_cache`)
   is pointed at a temporary folder before this process's first
   compilation (or left where the user's ``JAX_COMPILATION_CACHE_DIR`` /
   an earlier ``enable`` put it), and a first, untimed pass of both modes
   with the same config, grid and epochs fills it. Every later pass builds
   (traces, lowers) its programs and loads them from the folder instead of
   compiling them.
2. In-process times: ``sweep.run`` and ``sweep.run(sequential=True)`` in
   this process (the dataset loaded once beforehand, no output folder):
   building each variant, initialising, loading the compiled programs,
   training and evaluating.
3. Whole-command times (``commands=True``): ``funcnet sweep ... --out DIR``
   and the same with ``--sequential`` as subprocesses with the same cache
   folder (``FUNCNET_COMPILATION_CACHE``), wall clock from start to exit:
   Python and JAX imports, the data, the results folder. Their
   ``FUNCNET_TIMINGS`` records say how many programs XLA compiled (0 when
   the cache is warm; recorded as ``*_compiled``).

If this process compiled anything before :func:`run` (a test), JAX's cache
is already settled: the in-process pass then runs with whatever it had.
"""

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from funcnet import config as config_lib, experiment, sweep
from funcnet.bench import model_steps

CASES = ("digits_mlp:16", "mnist1d_cnn:16", "digits_mlp:64", "mnist1d_cnn:64")
#: the cases of issue 27's done-when (16 variants of every kind)
ISSUE_CASES = ("digits_mlp:16", "mnist1d_cnn:16", "mnist1d_gru:16",
               "mnist1d_transformer:16")


def _grid(cfg, n: int) -> dict:
  if n % 4:
    raise ValueError(f"{n} variants: expected a multiple of 4")
  lr = cfg["optimizer"]["learning_rate"]
  return {"optimizer.learning_rate": [lr * 3, lr, lr / 3, lr / 10],
          "seed": list(range(n // 4))}


def _cache_folder() -> str:
  """The persistent cache this process uses: JAX's setting if any, else a
  new temporary folder set before the first compilation and removed when
  the process exits (JAX writes to it until then)."""
  import jax
  if jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir
  where = tempfile.mkdtemp(prefix="funcnet-bench-sweep-xla-")
  atexit.register(shutil.rmtree, where, True)
  jax.config.update("jax_compilation_cache_dir", where)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  return where


def _command(name: str, grid: dict, epochs: int, sequential: bool,
             cache: str) -> tuple:
  """``(wall seconds, programs XLA compiled)`` of ``funcnet sweep`` as a
  subprocess with the compile cache in ``cache``."""
  out = tempfile.mkdtemp(prefix="funcnet-bench-sweep-out-")
  timings = os.path.join(out, "timings.json")
  argv = [sys.executable, "-m", "funcnet.cli", "sweep", "--config",
          model_steps._config_path(name), "--out", os.path.join(out, "s"),
          "--set", f"train.epochs={epochs}", "--set", "run.plots=false"]
  for key, values in grid.items():
    argv += ["--grid", f"{key}=" + ",".join(repr(v) for v in values)]
  if sequential:
    argv.append("--sequential")
  env = dict(os.environ, FUNCNET_COMPILATION_CACHE=cache,
             FUNCNET_TIMINGS=timings)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the cache given, no other
  try:
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
      raise RuntimeError(f"funcnet sweep exited {done.returncode}: "
                         f"{done.stderr.strip().splitlines()[-1:]}")
    with open(timings) as f:
      compiled = json.load(f).get("compiled")
  finally:
    shutil.rmtree(out, ignore_errors=True)
  return wall, compiled


def _in_process(cfg, grid, sequential: bool) -> tuple:
  """``(wall seconds, result)`` of ``sweep.run`` in this process."""
  quiet = lambda *a, **k: None  # noqa: E731
  t0 = time.perf_counter()
  res = sweep.run(cfg, grid, sequential=sequential, log=quiet)
  return time.perf_counter() - t0, res


def run(cases: Sequence[str] = CASES, epochs: int = 5, sequential: bool = True,
        commands: bool = False, log=print) -> list:
  """One record per case: ``config, variants, epochs, steps_per_epoch,
  groups, vectorised_s, sequential_s, speedup, vectorised_steps_per_s,
  sequential_steps_per_s`` (steps per second per variant; in this
  process, warm cache) and with ``commands``: ``command_vectorised_s,
  command_sequential_s, command_speedup, command_vectorised_compiled,
  command_sequential_compiled`` (whole ``funcnet sweep`` commands)."""
  cache = _cache_folder()
  records = []
  for case in cases:
    name, _, n = case.partition(":")
    cfg = config_lib.load(model_steps._config_path(name),
                          [f"train.epochs={epochs}", "run.plots=false"])
    grid = _grid(cfg, int(n))
    # Warm-up outside the timings: the data's first load (and its imports)
    # would otherwise be charged to whichever mode runs first; then every
    # program of both modes into the cache.
    experiment.build_dataset(cfg)
    for seq in (False, True)[:1 + sequential]:
      if commands:
        _command(name, grid, epochs, seq, cache)
      _in_process(cfg, grid, seq)
    vec, res = _in_process(cfg, grid, False)
    steps = res.variants[0].history[0]["step"]
    rec = {"config": name, "variants": int(n), "epochs": epochs,
           "steps_per_epoch": steps, "groups": res.groups, "vectorised_s": vec,
           "vectorised_steps_per_s": steps * epochs / vec}
    if sequential:
      seq, _ = _in_process(cfg, grid, True)
      rec.update(sequential_s=seq, speedup=seq / vec,
                 sequential_steps_per_s=steps * epochs / seq)
    if commands:
      cv, cv_n = _command(name, grid, epochs, False, cache)
      rec.update(command_vectorised_s=cv, command_vectorised_compiled=cv_n)
      if sequential:
        cs, cs_n = _command(name, grid, epochs, True, cache)
        rec.update(command_sequential_s=cs, command_speedup=cs / cv,
                   command_sequential_compiled=cs_n)
    log(f"{name} x {n}: vectorised {vec:.1f} s"
        + (f", sequential {rec['sequential_s']:.1f} s, {rec['speedup']:.1f}x"
           if sequential else "")
        + (f"; whole commands {rec['command_vectorised_s']:.1f} s"
           if commands else "")
        + (f", {rec['command_sequential_s']:.1f} s, "
           f"{rec['command_speedup']:.1f}x" if commands and sequential else ""))
    records.append(rec)
  return records


def format_table(records) -> str:
  lines = ["| config | variants | epochs | vectorised s | sequential s | speed-up "
           "| steps/s per variant, vectorised | sequential "
           "| command vectorised s | command sequential s | command speed-up |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]

  def cell(r, key, fmt):
    return fmt.format(r[key]) if key in r else ""

  for r in records:
    lines.append(" | ".join([
        f"| {r['config']}", str(r["variants"]), str(r["epochs"]),
        cell(r, "vectorised_s", "{:.1f}"), cell(r, "sequential_s", "{:.1f}"),
        cell(r, "speedup", "{:.1f}x"),
        cell(r, "vectorised_steps_per_s", "{:.0f}"),
        cell(r, "sequential_steps_per_s", "{:.0f}"),
        cell(r, "command_vectorised_s", "{:.1f}"),
        cell(r, "command_sequential_s", "{:.1f}"),
        cell(r, "command_speedup", "{:.1f}x")]) + " |")
  return "\n".join(lines)
