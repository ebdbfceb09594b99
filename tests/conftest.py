"""Shared test setup: float64 on, and a fresh PRNG key per use."""

import itertools

import jax
import pytest

# Gradient comparisons need float64 (manual vs autodiff agree to ~1e-12
# there); set before any array is created.
jax.config.update("jax_enable_x64", True)


@pytest.fixture
def getkey():
  """``getkey()`` returns a new key each call, split from a fixed seed."""
  counter = itertools.count()
  base = jax.random.key(1234)
  return lambda: jax.random.fold_in(base, next(counter))
