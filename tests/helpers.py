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
    "os.execv(sys.argv[2], sys.argv[2:])\n")


def with_limits(argv, **limits):
  """``argv`` run under ``resource`` limits (``RLIMIT_FSIZE=2000``) set in
  the child itself: a ``python -c`` that sets them, then ``exec``s argv (the
  same pid, so ``os.wait4`` still measures the command). ``preexec_fn``
  would fork the test's process, which has JAX's threads running (JAX warns,
  and pytest makes the warning an error). SIGXFSZ is ignored, so a write
  past ``RLIMIT_FSIZE`` fails with EFBIG, as a full disk fails with ENOSPC."""
  import sys
  return [sys.executable, "-c", _LIMITS, repr(limits), *argv]
