"""Learning-rate schedules: pure functions ``count -> eta``.

A schedule maps the number of updates already applied, ``t = count``
(``0`` on the first step), to a learning rate ``eta_t``. Every schedule here
is a closure over its hyperparameters, is jittable, and works elementwise:
``count`` is an integer array of any shape (a scalar ``()`` inside an
optimizer, or ``(T,)`` to tabulate a whole run) and the result is a float
array of the same shape, in the default float dtype. With ``eta_0`` the
initial rate:

  ``constant``            eta_t = eta_0
  ``step_decay``          eta_t = eta_0 r^floor(t / s)
  ``exponential_decay``   eta_t = eta_0 r^(t / T)
  ``inverse_time_decay``  eta_t = eta_0 / (1 + r t / T)
  ``cosine_decay``        eta_t = eta_0 [(1 - alpha) (1 + cos(pi min(t, T) / T)) / 2 + alpha]
  ``warmup``              eta_t = v_0 + (S(0) - v_0) t / W    for t < W
                          eta_t = S(t - W)                    for t >= W

``step_decay`` and ``exponential_decay`` are optax's ``exponential_decay``
with and without ``staircase=True`` (one deliberate difference: the drops
of ``step_decay`` come from integer division of the count, so they fall
exactly at multiples of ``s``; optax's ``floor(count / s)`` in floating point
may be compiled to ``floor(count * (1 / s))``, which drops one step late at
some multiples, e.g. ``s = 41``); ``cosine_decay`` is optax's
``cosine_decay_schedule``; ``warmup`` ramps linearly from ``v_0`` to the
wrapped schedule's first value ``S(0)`` and then runs ``S`` with its clock
shifted by ``W``, as ``optax.join_schedules([linear_schedule(v_0, S(0), W),
S], [W])`` does. ``inverse_time_decay`` has no optax counterpart (it is
Keras's ``InverseTimeDecay`` without the staircase).

Rates are computed in the default float dtype whatever the count's integer
dtype (optax's ``exponential_decay`` and ``linear_schedule`` compute in
float32 for an int32 count even with ``jax_enable_x64`` on).

A schedule's hyperparameters are checked when it is built; a value out of
range raises :class:`funcnet.errors.ConfigError`, an unknown name in
:func:`get` raises :class:`funcnet.errors.UnknownNameError`.
"""

import inspect
import math
from typing import Callable

import jax
import jax.numpy as jnp

from funcnet.errors import ConfigError, unknown
from funcnet.tracing import is_off, is_traced

Schedule = Callable[[jax.Array], jax.Array]


def _check(where: str, name: str, value, ok: Callable[[float], bool],
           expected: str):
  """Raises a one-line ``ConfigError`` unless ``value`` is a finite number with ``ok(value)``.

  Traced values (hyperparameters fed through ``jit``) cannot be inspected and
  are let through unchecked.
  """
  if is_traced(value):
    return value
  try:
    if isinstance(value, (bool, str)):
      raise TypeError
    v = float(value)
  except (TypeError, ValueError):
    raise ConfigError(
        f"{where}: {name}={value!r} is not a number; expected {expected}"
    ) from None
  # NaN fails every comparison in ``ok``, so only infinities need a test.
  if math.isinf(v) or not ok(v):
    raise ConfigError(
        f"{where}: {name}={value!r} is out of range; expected {expected}")
  return value


def _check_steps(where: str, name: str, value, minimum: int) -> int:
  """An integer step count ``>= minimum`` (integral floats from configs are accepted)."""
  expected = f"an integer {name} >= {minimum}"
  _check(where, name, value, lambda v: v >= minimum and v == int(v), expected)
  return value if is_traced(value) else int(value)



def _check_lr(where: str, lr):
  return _check(where, "lr", lr, lambda v: v >= 0, "a number >= 0")


def _t(count):
  """The step count as a float array (true division would promote anyway)."""
  return jnp.asarray(count, dtype=float)


def constant(lr) -> Schedule:
  """``eta_t = lr`` for every ``t``.

  The function carries its rate as ``schedule.constant``: a table of its
  values (``train.monitor.rate_tables``, the rate each epoch's record
  holds) is then made without compiling a program for it."""
  _check_lr("constant", lr)

  def schedule(count):
    return jnp.full(jnp.shape(count), lr, dtype=float)

  schedule.constant = lr
  return schedule


def step_decay(lr, decay_rate, step_size) -> Schedule:
  """``eta_t = lr * decay_rate^floor(t / step_size)``: a drop every ``step_size`` steps.

  Args:
    lr: ``eta_0 >= 0``.
    decay_rate: ``r`` in ``(0, 1]``, the factor applied at each drop.
    step_size: ``s >= 1``, steps between drops.
  """
  _check_lr("step_decay", lr)
  _check("step_decay", "decay_rate", decay_rate, lambda v: 0 < v <= 1,
         "0 < decay_rate <= 1")
  step_size = _check_steps("step_decay", "step_size", step_size, 1)

  def schedule(count):
    # Integer division of the count: XLA may turn t / s into t * (1 / s),
    # and floor(103 * (1 / 103)) = 0.
    drops = jnp.floor_divide(jnp.asarray(count), step_size)
    return lr * decay_rate ** _t(drops)

  return schedule


def exponential_decay(lr, decay_rate, decay_steps) -> Schedule:
  """``eta_t = lr * decay_rate^(t / decay_steps)``: ``decay_rate`` per ``decay_steps``.

  Args:
    lr: ``eta_0 >= 0``.
    decay_rate: ``r`` in ``(0, 1]``.
    decay_steps: ``T >= 1``, steps over which the rate falls by ``r``.
  """
  _check_lr("exponential_decay", lr)
  _check("exponential_decay", "decay_rate", decay_rate, lambda v: 0 < v <= 1,
         "0 < decay_rate <= 1")
  decay_steps = _check_steps("exponential_decay", "decay_steps", decay_steps, 1)

  def schedule(count):
    return lr * decay_rate ** (_t(count) / decay_steps)

  return schedule


def inverse_time_decay(lr, decay_rate, decay_steps) -> Schedule:
  """``eta_t = lr / (1 + decay_rate * t / decay_steps)``, the ``1/t`` decay of SGD theory.

  Args:
    lr: ``eta_0 >= 0``.
    decay_rate: ``r >= 0``.
    decay_steps: ``T >= 1``; after ``T / r`` steps the rate has halved.
  """
  _check_lr("inverse_time_decay", lr)
  _check("inverse_time_decay", "decay_rate", decay_rate, lambda v: v >= 0,
         "decay_rate >= 0")
  decay_steps = _check_steps("inverse_time_decay", "decay_steps", decay_steps, 1)

  def schedule(count):
    return lr / (1 + decay_rate * _t(count) / decay_steps)

  return schedule


def cosine_decay(lr, decay_steps, alpha=0.0) -> Schedule:
  """Half a cosine from ``lr`` down to ``alpha * lr`` over ``decay_steps``, then flat.

  ``eta_t = lr [(1 - alpha) (1 + cos(pi min(t, T) / T)) / 2 + alpha]``
  (Loshchilov & Hutter, SGDR, without restarts).

  Args:
    lr: ``eta_0 >= 0``.
    decay_steps: ``T >= 1``.
    alpha: the final rate as a fraction of ``lr``, in ``[0, 1]``.
  """
  _check_lr("cosine_decay", lr)
  decay_steps = _check_steps("cosine_decay", "decay_steps", decay_steps, 1)
  _check("cosine_decay", "alpha", alpha, lambda v: 0 <= v <= 1, "0 <= alpha <= 1")

  def schedule(count):
    t = jnp.minimum(_t(count), decay_steps)
    cosine = 0.5 * (1 + jnp.cos(jnp.pi * t / decay_steps))
    return lr * ((1 - alpha) * cosine + alpha)

  return schedule


def warmup(schedule: Schedule, warmup_steps, init_value=0.0) -> Schedule:
  """A linear ramp from ``init_value`` to ``schedule(0)`` over ``warmup_steps``, then ``schedule``.

  ``eta_t = v_0 + (S(0) - v_0) t / W`` for ``t < W`` and ``S(t - W)`` after:
  the wrapped schedule starts its own clock when the warm-up ends, as in
  ``optax.join_schedules``. ``warmup_steps = 0`` returns ``schedule`` itself.

  Args:
    schedule: ``S``, a schedule ``count -> eta``.
    warmup_steps: ``W >= 0``.
    init_value: ``v_0 >= 0``, the rate on the first step.
  """
  if not callable(schedule):
    raise ConfigError(
        f"warmup: schedule={schedule!r} is not callable; expected a schedule "
        "count -> lr")
  warmup_steps = _check_steps("warmup", "warmup_steps", warmup_steps, 0)
  _check("warmup", "init_value", init_value, lambda v: v >= 0,
         "init_value >= 0")
  if is_off(warmup_steps):
    return schedule

  def warmed(count):
    t = _t(count)
    peak = schedule(jnp.zeros_like(count))
    ramp = init_value + (peak - init_value) * (t / warmup_steps)
    # Clamp the shifted clock at 0 so that the branch jnp.where discards is
    # still evaluated at a valid step (inverse_time_decay has a pole at t < 0).
    after = schedule(jnp.maximum(count - warmup_steps, 0))
    return jnp.where(t < warmup_steps, ramp, after)

  return warmed


SCHEDULES = {
    "constant": constant,
    "step_decay": step_decay,
    "exponential_decay": exponential_decay,
    "inverse_time_decay": inverse_time_decay,
    "cosine_decay": cosine_decay,
    "warmup": warmup,
}


def _bind(kind: str, name: str, fn: Callable, kwargs: dict) -> None:
  """Raises ``ConfigError`` when ``kwargs`` are not ``fn``'s keyword arguments."""
  params = inspect.signature(fn).parameters
  extra = sorted(set(kwargs) - set(params))
  if extra:
    raise ConfigError(
        f"{kind} {name!r} got unexpected hyperparameter(s) {', '.join(extra)}; "
        f"expected some of: {', '.join(params)}")
  missing = [p for p, v in params.items()
             if v.default is inspect.Parameter.empty and p not in kwargs]
  if missing:
    raise ConfigError(
        f"{kind} {name!r} is missing hyperparameter(s) {', '.join(missing)}; "
        f"expected all of: {', '.join(params)}")


def get(name: str, **kwargs) -> Schedule:
  """The schedule ``SCHEDULES[name](**kwargs)``.

  Raises:
    UnknownNameError: ``name`` is not in :data:`SCHEDULES`.
    ConfigError: a missing, unexpected or out-of-range hyperparameter.
  """
  try:
    fn = SCHEDULES[name]
  except (KeyError, TypeError):
    raise unknown("schedule", name, SCHEDULES) from None
  _bind("schedule", name, fn, kwargs)
  return fn(**kwargs)


def names() -> list[str]:
  return sorted(SCHEDULES)


__all__ = ["Schedule", "SCHEDULES", "constant", "step_decay",
           "exponential_decay", "inverse_time_decay", "cosine_decay", "warmup",
           "get", "names"]
