"""Shared test setup: float64 for the tests that ask for it (``x64``), and a
fresh PRNG key per use.

JAX's default is float32, and that is the path users run, so the suite runs
in float32 too. A test that compares at float64 tolerances (manual vs autodiff
gradients to ~1e-12, optimizers vs optax to 1e-12, ``jnp.float64`` arrays)
requests the ``x64`` fixture, per test or per module with
``pytestmark = pytest.mark.usefixtures("x64")``. Without it ``jnp.float64``
silently becomes float32 with a UserWarning, which the ``filterwarnings =
["error"]`` in pyproject.toml turns into a failure.
"""

import itertools
import os

import jax
import pytest


def pytest_configure(config):
  """No persistent compilation cache in the suite (``funcnet.compile_cache``):
  ``cli.main`` called in-process would otherwise turn it on in the user's
  ``~/.cache/funcnet/xla`` for every later test of the worker, and the
  command's subprocesses inherit this too. ``tests/test_startup.py`` gives
  its subprocesses a temporary cache of their own.

  The fast loop (``-m "not slow"``) compiles at XLA's optimisation level
  0: most of this suite's time is XLA compiling small programs, and level 0
  halves it (measured: the backprop and attention tests 142 s -> 97 s).
  Numerics are the same up to the order of float sums, which every
  tolerance here allows. The full suite, which CI runs (``pytest -n 2``),
  keeps XLA's default level, what users run. Set before any JAX backend
  starts; pytest-xdist's workers inherit it, and so do the command's
  subprocesses."""
  os.environ["FUNCNET_COMPILATION_CACHE"] = "off"
  if (config.getoption("markexpr", "") or "").replace(" ", "") == "notslow":
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
      os.environ["XLA_FLAGS"] = (flags + " --xla_backend_optimization_level=0").strip()


@pytest.fixture
def x64():
  """64-bit JAX for the duration of one test, restored afterwards.

  ``jax.config.update`` rather than the ``jax.enable_x64`` context manager:
  the context manager is thread-local, so arrays made in any other thread
  would stay float32. Jit caches are keyed on the flag, so functions
  compiled in float32 elsewhere are recompiled here, and back.
  """
  before = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", before)


@pytest.fixture
def getkey():
  """``getkey()`` returns a new key each call, split from a fixed seed."""
  counter = itertools.count()
  base = jax.random.key(1234)
  return lambda: jax.random.fold_in(base, next(counter))
