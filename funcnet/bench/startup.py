"""``funcnet bench startup``: time to first result against starting JAX.

Each measurement is a fresh process, as a user's is:

  floor   ``python -c "import jax, jax.numpy as jnp;
          jnp.ones(3).block_until_ready()"``: importing JAX and running one
          op, the least a JAX program pays
  cold    ``funcnet train --set train.epochs=1`` (the default config) with an
          empty compilation cache (a new temporary folder each time)
  warm    the same command again on the cache the cold run filled

The three are interleaved (floor, cold, warm, floor, ...) so that a change in
the machine's load meets all of them, and the medians are compared. Each
training run writes ``FUNCNET_TIMINGS`` (:mod:`funcnet.timings`), which
breaks its time down: ``start`` (the interpreter, up to ``cli.main``), the
command's phases (imports, config, data, init, train, save, plots), the
part of them JAX spent compiling or loading programs, and ``exit`` (after
``cli.main``). Targets (issue 27): warm <= 1.3x the floor, cold <= 2.0x
(issue 15's were 2.5x and 5x).
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

FLOOR = "import jax, jax.numpy as jnp; jnp.ones(3).block_until_ready()"
TRAIN = ["train", "--set", "train.epochs=1", "--progress", "never"]
PHASES = ("start", "imports", "config", "data", "init", "train", "save",
          "plots", "other", "exit")
TARGETS = {"warm": 1.3, "cold": 2.0}


def _env(**extra) -> dict:
  env = {k: v for k, v in os.environ.items()
         if k not in ("FUNCNET_TIMINGS", "FUNCNET_COMPILATION_CACHE",
                      "JAX_COMPILATION_CACHE_DIR", "JAX_LOG_COMPILES")}
  env.update(extra)
  return env


def _floor() -> float:
  t0 = time.time()
  subprocess.run([sys.executable, "-c", FLOOR], env=_env(), check=True,
                 stdout=subprocess.DEVNULL)
  return time.time() - t0


def _train(cache: str, work: str, name: str, args=()) -> dict:
  """One ``funcnet train`` in a subprocess: its wall time and breakdown."""
  record = os.path.join(work, f"{name}.json")
  out = os.path.join(work, name)
  t0 = time.time()
  r = subprocess.run(
      [sys.executable, "-m", "funcnet.cli", *TRAIN, *args, "--out", out],
      env=_env(FUNCNET_TIMINGS=record, FUNCNET_COMPILATION_CACHE=cache),
      capture_output=True, text=True)
  t1 = time.time()
  if r.returncode != 0:
    raise RuntimeError(f"funcnet train failed ({r.returncode}): "
                       f"{r.stderr.strip()[-500:]}")
  with open(record) as f:
    t = json.load(f)
  phases = dict(t["phases"])
  main = t["end_unix"] - t["start_unix"]
  breakdown = {"start": t["start_unix"] - t0,
               **{k: phases.get(k, 0.0) for k in PHASES[1:-2]},
               "other": main - sum(phases.values()), "exit": t1 - t["end_unix"]}
  shutil.rmtree(out, ignore_errors=True)
  return {"wall_s": t1 - t0, "breakdown": breakdown, "programs": t["programs"],
          "compiled": t["compiled"], "cache_hits": t["cache_hits"],
          "compile_s": t["compile_s"], "trace_s": t["trace_s"],
          "lower_s": t["lower_s"]}


def run(repeats: int = 3, args=(), log=print) -> dict:
  """Measures floor, cold and warm ``repeats`` times each, interleaved.

  Args:
    repeats: rounds of (floor, cold, warm).
    args: extra ``funcnet train`` arguments (e.g. ``["--config", FILE]``).
    log: called with one line per measurement.

  Returns:
    ``{"floor": [s...], "cold": [record...], "warm": [record...], "load":
    (before, after), "ratios": {"cold": x, "warm": x}}`` where a record is
    :func:`_train`'s and the ratios are medians against the median floor.
  """
  load0 = os.getloadavg()
  out = {"floor": [], "cold": [], "warm": [], "args": list(args)}
  work = tempfile.mkdtemp(prefix="funcnet-startup-")
  try:
    for i in range(repeats):
      out["floor"].append(_floor())
      log(f"round {i + 1}: floor {out['floor'][-1]:.2f} s")
      cache = os.path.join(work, f"xla-{i}")  # empty: a cold cache
      for mode in ("cold", "warm"):
        rec = _train(cache, work, f"{mode}-{i}", args)
        out[mode].append(rec)
        log(f"round {i + 1}: {mode} {rec['wall_s']:.2f} s, "
            f"{rec['compiled']} compiled, {rec['cache_hits']} from the cache")
  finally:
    shutil.rmtree(work, ignore_errors=True)
  out["load"] = (load0, os.getloadavg())
  floor = statistics.median(out["floor"])
  out["ratios"] = {m: statistics.median(r["wall_s"] for r in out[m]) / floor
                   for m in ("cold", "warm")}
  return out


def format_table(result: dict) -> str:
  """The medians: wall time against the floor, then where the time went."""
  floor = statistics.median(result["floor"])

  def med(mode, get):
    return statistics.median(get(r) for r in result[mode])

  lines = [f"floor (import jax, one op): {floor:.2f} s "
           f"[{min(result['floor']):.2f}, {max(result['floor']):.2f}]", "",
           f"{'':6s}{'wall s':>8s}{'x floor':>9s}{'target':>9s}{'':>8s}"
           f"{'compiled':>10s}{'cached':>8s}"]
  for mode in ("cold", "warm"):
    wall = med(mode, lambda r: r["wall_s"])
    ok = "met" if wall / floor <= TARGETS[mode] else "missed"
    lines.append(f"{mode:6s}{wall:8.2f}{wall / floor:9.2f}"
                 f"{'<= ' + str(TARGETS[mode]):>9s}{ok:>8s}"
                 f"{med(mode, lambda r: r['compiled']):10.0f}"
                 f"{med(mode, lambda r: r['cache_hits']):8.0f}")
  extra = ("compile_s", "trace_s", "lower_s")
  lines += ["", f"{'s':6s}" + "".join(f"{p:>8s}" for p in PHASES)
            + "  |" + "".join(f"{e[:-2]:>8s}" for e in extra)]
  for mode in ("cold", "warm"):
    lines.append(f"{mode:6s}" + "".join(
        f"{med(mode, lambda r, p=p: r['breakdown'][p]):8.2f}" for p in PHASES)
        + "  |" + "".join(f"{med(mode, lambda r, e=e: r[e]):8.2f}"
                          for e in extra))
  (a, b) = result["load"]
  spread = ", ".join(f"{m} [{min(r['wall_s'] for r in result[m]):.2f}, "
                     f"{max(r['wall_s'] for r in result[m]):.2f}]"
                     for m in ("cold", "warm"))
  lines += ["", f"{len(result['floor'])} rounds, medians; wall s [min, max]: "
            f"{spread}; load average {a[0]:.2f} before, {b[0]:.2f} after "
            f"({os.cpu_count()} CPUs)",
            "start: the interpreter up to cli.main; exit: after it; other: "
            "the rest of cli.main; compile, trace, lower: JAX building "
            "programs (compiling or loading them), inside init and train; "
            "compile sums each program's time, and a cold run compiles "
            "three side by side"]
  return "\n".join(lines)
