"""Hyperparameters that may be traced.

A sweep (:mod:`funcnet.sweep`) trains many variants in one compiled program
by passing their hyperparameters (learning rates, decay rates, dropout
rates, ...) as arrays, so the builders of optimizers, schedules and models
are also called with traced values. Such a value is used as an array, never
checked or branched on in Python: it was checked when each variant's config
was built with its concrete value.
"""

import jax


def is_traced(value) -> bool:
  """Whether ``value`` is traced (an array inside ``jit`` or ``vmap``)."""
  return isinstance(value, jax.core.Tracer)


def is_off(value) -> bool:
  """``value == 0`` for a number; a traced value is never off (a sweep keeps
  the variants whose value is 0, whose stage is left out of the program,
  apart from those whose value is not)."""
  return not is_traced(value) and value == 0
