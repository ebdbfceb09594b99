"""Where a command's time goes: wall-clock phases and XLA's programs.

``FUNCNET_TIMINGS=FILE`` makes the ``funcnet`` command write one JSON object
to FILE as it ends (:func:`write`):

  start_unix, end_unix   wall clock when ``cli.main`` began and ended
  phases                 seconds per phase, in order: imports, config,
                         data, init, train, save, plots, ... (a phase met
                         twice adds up)
  programs               programs JAX built (compiled, or loaded from the
                         persistent cache)
  names                  their names, in order (``jit(epoch)``, ...)
  cache_hits             of them, loaded from a cache (JAX's persistent
                         one, or :mod:`funcnet.train.program_cache`, which
                         skips tracing and lowering too)
  compiled               programs - cache_hits: XLA compilations
  compile_s              seconds JAX spent building them (compiling or
                         loading), inside the phases
  trace_s, lower_s       seconds tracing to jaxprs and lowering to MLIR
  traced                 functions traced to jaxprs (jitted, evaluated for
                         shapes, or made into jaxprs)

``funcnet bench startup`` (:mod:`funcnet.bench.startup`) and
``tests/test_startup.py`` read it. The counts come from JAX's public
``jax.monitoring`` events: every program goes through one
``/jax/core/compile/backend_compile_duration`` event, and a program loaded
from the persistent cache also records ``/jax/compilation_cache/cache_hits``.
Phases cost two ``perf_counter`` calls each and are always kept; the JAX
listeners are installed only when the file is asked for.
"""

import contextlib
import json
import os
import time

ENV = "FUNCNET_TIMINGS"

_BACKEND = "/jax/core/compile/backend_compile_duration"
_TRACE = "/jax/core/compile/jaxpr_trace_duration"
_LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
_HIT = "/jax/compilation_cache/cache_hits"

_state = {"start_unix": time.time(), "phases": {}, "counts": {}, "programs": 0,
          "names": [], "cache_hits": 0, "compile_s": 0.0, "trace_s": 0.0,
          "lower_s": 0.0, "traced": 0}
_listening = False


def start() -> None:
  """Marks the start of the command (``cli.main``)."""
  _state["start_unix"] = time.time()


@contextlib.contextmanager
def phase(name: str):
  """Adds the wall time of the ``with`` block to phase ``name``."""
  t0 = time.perf_counter()
  try:
    yield
  finally:
    phases = _state["phases"]
    phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0


def count(name: str, n: int = 1) -> None:
  """Adds ``n`` to counter ``name`` (e.g. ``rows_read``: the training rows
  this process read from shards, which a multi-process test checks is its
  share only)."""
  counts = _state["counts"]
  counts[name] = counts.get(name, 0) + int(n)


def listen() -> None:
  """Counts JAX's programs from now on, when :data:`ENV` asks for the file.

  Call before the first compilation (it imports JAX)."""
  global _listening
  if _listening or not os.environ.get(ENV):
    return
  import jax.monitoring

  def on_duration(event, duration, **kwargs):
    if event == _BACKEND:
      _state["programs"] += 1
      _state["names"].append(str(kwargs.get("fun_name", "?")))
      _state["compile_s"] += duration
    elif event == _TRACE:
      _state["trace_s"] += duration
      _state["traced"] += 1
    elif event == _LOWER:
      _state["lower_s"] += duration

  def on_event(event, **kwargs):
    del kwargs
    if event == _HIT:
      _state["cache_hits"] += 1

  jax.monitoring.register_event_duration_secs_listener(on_duration)
  jax.monitoring.register_event_listener(on_event)
  _listening = True


def loaded(name: str, seconds: float) -> None:
  """Counts a program :mod:`funcnet.train.program_cache` loaded (JAX reports
  none: it neither traced nor compiled it)."""
  _state["programs"] += 1
  _state["cache_hits"] += 1
  _state["names"].append(name)
  _state["compile_s"] += seconds


def snapshot(command: str = "") -> dict:
  """The record :func:`write` writes, as it stands now."""
  out = dict(_state, command=command, end_unix=time.time(),
             phases=dict(_state["phases"]), counts=dict(_state["counts"]),
             names=list(_state["names"]))
  out["compiled"] = out["programs"] - out["cache_hits"]
  return out


def write(command: str) -> None:
  """Writes :func:`snapshot` to ``$FUNCNET_TIMINGS``, when set."""
  path = os.environ.get(ENV)
  if path:
    with open(path, "w") as f:
      json.dump(snapshot(command), f, indent=2)
      f.write("\n")
