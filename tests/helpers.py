"""Small helpers several test files share (imported as ``from helpers
import ...``: pytest puts tests/ on the path)."""

import json

import jax
import numpy as np


def rel(a, b):
  """``||a - b|| / (||a|| + ||b||)`` over the whole array, in float64."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b),
                                     1e-300)


def tree_rel(a, b):
  """The worst leaf's relative error (same structure asserted)."""
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  return max(rel(u, v) for u, v in zip(jax.tree_util.tree_leaves(a),
                                       jax.tree_util.tree_leaves(b)))


# The fast loop's XLA options (tests/conftest.py sets them as XLA_FLAGS for
# the whole loop), and compiler options for one program in the full suite:
# XLA:CPU's optimisation level 0, its older loop emitters for fusions, and
# LLVM's code generated as one module (XLA splits it in 32 for a thread
# pool, which two pytest workers already keep busy: the same kernels for
# a third less CPU; funcnet.train.program_cache.QUICK_TO_COMPILE).
QUICK_TO_COMPILE = {"xla_backend_optimization_level": 0,
                    "xla_cpu_use_fusion_emitters": False,
                    "xla_cpu_parallel_codegen_split_count": 1}


def quick_jit(fn, *args):
  """``jax.jit(fn)(*args)``, compiled with ``QUICK_TO_COMPILE`` on a CPU.

  For a test whose claim is about the math (manual vs autodiff in float64
  on many small programs), not about XLA's optimised code: most of such a
  test's time is XLA compiling, and these options cut it to a third
  (tests/test_backprop.py's 72 depth cases: 185 -> 58 s of CPU). What
  users run, XLA's defaults, keeps tests of its own beside each use."""
  options = QUICK_TO_COMPILE if jax.default_backend() == "cpu" else None
  return jax.jit(fn, compiler_options=options)(*args)


def read_json(path):
  with open(path) as f:
    return json.load(f)


def read_jsonl(path):
  """One JSON object per line (a run's metrics.jsonl)."""
  with open(path) as f:
    return [json.loads(line) for line in f]


def central_differences(f, a, h=1e-6):
  """``(f(a + h e_k) - f(a - h e_k)) / 2h`` for every entry ``k`` of the
  numpy array ``a``; ``f`` maps an array of ``a``'s shape to a number."""
  fd = np.zeros_like(a)
  for idx in np.ndindex(a.shape):
    ap, am = a.copy(), a.copy()
    ap[idx] += h
    am[idx] -= h
    fd[idx] = (f(ap) - f(am)) / (2 * h)
  return fd


def xla_pads(n, k, s, padding):
  """Output length and ``(low, high)`` padding of one axis of a conv or
  pool, spelled out as XLA defines them."""
  if padding == "VALID":
    return (n - k) // s + 1, (0, 0)
  out = -(-n // s)
  total = max((out - 1) * s + k - n, 0)
  return out, (total // 2, total - total // 2)


_LIMITS = (
    "import os, resource, signal, sys\n"
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a kill\n"
    "for k, v in eval(sys.argv[1]).items():\n"
    "  resource.setrlimit(getattr(resource, k), (v, v))\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "  os.execv(sys.argv[3], sys.argv[3:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "if sys.argv[2]:\n"
    "  with open(sys.argv[2], 'w') as f:\n"
    "    f.write(str(usage.ru_maxrss * 1024))\n"
    "code = os.waitstatus_to_exitcode(status)\n"
    "sys.exit(code if code >= 0 else 128 - code)\n")


def with_limits(argv, rss_file="", **limits):
  """``argv`` run under ``resource`` limits (``RLIMIT_FSIZE=2000``) set in
  a small ``python -c`` wrapper that forks and ``exec``s argv, with its exit
  status (128 + N for signal N). ``preexec_fn`` would fork the test's
  process, which has JAX's threads running (JAX warns, and pytest makes the
  warning an error). SIGXFSZ is ignored, so a write past ``RLIMIT_FSIZE``
  fails with EFBIG, as a full disk fails with ENOSPC. ``rss_file``: the
  command's peak RSS in bytes is written there; measured by the wrapper,
  since a child of the test's process would count the test's own RSS (at
  ``exec`` Linux keeps the larger of the old and new high-water marks)."""
  import sys
  return [sys.executable, "-c", _LIMITS, repr(limits), str(rss_file), *argv]


def metrics_lines(run):
  """The complete lines of ``run``'s metrics.jsonl so far (none if it is not
  there yet): for polling a run that is still writing it."""
  import os
  path = os.path.join(run, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(l) for l in f if l.endswith("\n")]


def free_port() -> int:
  """A TCP port free on 127.0.0.1 now, for a JAX coordinator."""
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start_processes(n, argv, *, cwd, env, cpu_devices=2, env_of=None):
  """``n`` processes of ``funcnet ARGV`` on one loopback coordinator, each
  with ``cpu_devices`` CPU devices and its ``--process-id`` (``env_of(i)``:
  process i's environment, default ``env``), in sessions of their own so
  that :func:`wait_all` can kill what they start."""
  import subprocess
  import sys
  port = free_port()
  return [subprocess.Popen(
      [sys.executable, "-m", "funcnet.cli", *argv, "--cpu-devices",
       str(cpu_devices), "--coordinator", f"127.0.0.1:{port}",
       "--num-processes", str(n), "--process-id", str(i)],
      cwd=cwd, env=env_of(i) if env_of else env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True, start_new_session=True)
      for i in range(n)]


def wait_all(procs, timeout):
  """Each process's ``(stdout, stderr)``, within ``timeout`` s for all;
  leftovers (a hang) are killed with their process group, never left
  running."""
  import os
  import signal
  import time
  deadline = time.time() + timeout
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=max(1.0, deadline - time.time())))
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
  return outs


# Shipped configs sized for an accelerator, and the overrides that let a CPU
# test train and gradient-check the same structure: a GPT at nanoGPT's
# one-GPU size is ~200 TFLOP of float64 finite differences at batch 8.
CPU_SIZED = {"text_gpt_large": ["model.gpt.n_layers=2", "model.gpt.d_model=48"]}


def cpu_sized(name: str) -> list[str]:
  """``--set`` values (``key=value``) for ``configs/<name>.toml`` on a CPU
  test (``name`` without the folder or ``.toml``); empty for most."""
  return list(CPU_SIZED.get(name, []))
