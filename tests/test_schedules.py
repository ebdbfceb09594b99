"""funcnet.schedules against optax's schedules and against the formulas in numpy.

Each schedule is tabulated over a few hundred steps twice, once on a vector
of counts and once one int32 scalar count at a time under ``jit`` (as an
optimizer calls it), and both must match every independent reference given
for it to 1e-12 relative.
"""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from funcnet import schedules
from funcnet.errors import ConfigError, UnknownNameError

T = 400
t = np.arange(T, dtype=np.float64)
RTOL = 1e-12


def _optax(schedule):
  """An optax schedule tabulated on int64 counts 0..T-1.

  Not int32: optax's ``exponential_decay`` and ``linear_schedule`` compute
  ``count / steps``, which JAX evaluates in float32 for an int32 count even
  with x64 on, so they would be no reference at 1e-12.
  """
  return lambda: np.broadcast_to(
      np.asarray(schedule(jnp.arange(T, dtype=jnp.int64)), np.float64), (T,))


def _numpy(values):
  return lambda: values


def _join(first, then, boundary):
  """numpy's version of a schedule that switches at ``boundary``, clock shifted."""
  return np.where(t < boundary, first, then(np.maximum(t - boundary, 0)))


# (name, kwargs for schedules.get, [independent references]).
CASES = [
    ("constant", dict(lr=0.3),
     [_optax(optax.schedules.constant_schedule(0.3)),
      _numpy(np.full(T, 0.3))]),
    ("step_decay", dict(lr=0.5, decay_rate=0.7, step_size=25),
     [_optax(optax.schedules.exponential_decay(0.5, 25, 0.7, staircase=True)),
      _numpy(0.5 * 0.7 ** np.floor(t / 25))]),
    ("exponential_decay", dict(lr=0.5, decay_rate=0.9, decay_steps=40),
     [_optax(optax.schedules.exponential_decay(0.5, 40, 0.9)),
      _numpy(0.5 * 0.9 ** (t / 40))]),
    ("inverse_time_decay", dict(lr=0.5, decay_rate=0.5, decay_steps=10),
     [_numpy(0.5 / (1 + 0.5 * t / 10))]),
    ("cosine_decay", dict(lr=0.5, decay_steps=300, alpha=0.1),
     [_optax(optax.schedules.cosine_decay_schedule(0.5, 300, alpha=0.1)),
      _numpy(0.5 * (0.9 * 0.5 * (1 + np.cos(np.pi * np.minimum(t, 300) / 300))
                    + 0.1))]),
    ("cosine_decay", dict(lr=2.0, decay_steps=150),
     [_optax(optax.schedules.cosine_decay_schedule(2.0, 150)),
      _numpy(2.0 * 0.5 * (1 + np.cos(np.pi * np.minimum(t, 150) / 150)))]),
    # warm-up into a cosine: optax has the pair as one schedule.
    ("warmup", dict(schedule=schedules.cosine_decay(1.0, 250, alpha=0.05),
                    warmup_steps=50, init_value=0.1),
     [_optax(optax.schedules.warmup_cosine_decay_schedule(
         0.1, 1.0, 50, 300, end_value=0.05)),
      _numpy(_join(0.1 + 0.9 * t / 50,
                   lambda s: 0.95 * 0.5 * (1 + np.cos(np.pi * np.minimum(s, 250)
                                                      / 250)) + 0.05, 50))]),
    # warm-up into an exponential decay, as optax.join_schedules builds it.
    ("warmup", dict(schedule=schedules.exponential_decay(0.4, 0.5, 100),
                    warmup_steps=30),
     [_optax(optax.schedules.join_schedules(
         [optax.schedules.linear_schedule(0.0, 0.4, 30),
          optax.schedules.exponential_decay(0.4, 100, 0.5)], [30])),
      _numpy(_join(0.4 * t / 30, lambda s: 0.4 * 0.5 ** (s / 100), 30))]),
    # warm-up into a schedule with a pole at negative counts.
    ("warmup", dict(schedule=schedules.inverse_time_decay(0.2, 2.0, 10),
                    warmup_steps=20, init_value=0.02),
     [_numpy(_join(0.02 + 0.18 * t / 20,
                   lambda s: 0.2 / (1 + 2.0 * s / 10), 20))]),
    ("warmup", dict(schedule=schedules.step_decay(0.3, 0.5, 100),
                    warmup_steps=0),
     [_numpy(0.3 * 0.5 ** np.floor(t / 100))]),
]


def _case_id(case):
  name, kwargs, _ = case
  return name + "-" + "-".join(
      f"{k}={v}" for k, v in kwargs.items() if k != "schedule")


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_schedule_matches_references(case, x64):
  name, kwargs, references = case
  built = [schedules.get(name, **kwargs), getattr(schedules, name)(**kwargs)]
  assert set(schedules.SCHEDULES) >= {name}
  counts = jnp.arange(T, dtype=jnp.int32)
  for schedule in built:
    vectorised = np.asarray(schedule(counts))
    # One scalar count per call, under jit: how an optimizer uses it.
    scalar = np.asarray(jax.jit(lambda c: jax.lax.map(schedule, c))(counts))
    assert vectorised.shape == scalar.shape == (T,)
    for reference in references:
      expected = reference()
      np.testing.assert_allclose(vectorised, expected, rtol=RTOL, atol=0)
      np.testing.assert_allclose(scalar, expected, rtol=RTOL, atol=0)


def test_scalar_count_gives_scalar_float():
  for name, kwargs, _ in CASES:
    value = schedules.get(name, **kwargs)(jnp.asarray(7, jnp.int32))
    assert jnp.shape(value) == ()
    assert jnp.issubdtype(value.dtype, jnp.floating)


# x64 is function-scoped, so it stays on across every example of one run:
# what the health check warns about is exactly what is wanted here.
@hypothesis.settings(max_examples=25, deadline=None, suppress_health_check=[
    hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(
    lr=st.floats(0.0, 10.0),
    rate=st.floats(0.01, 1.0),
    steps=st.integers(1, 500),
)
def test_decays_match_numpy_for_any_hyperparameters(x64, lr, rate, steps):
  counts = jnp.arange(T, dtype=jnp.int32)
  expected = {
      "step_decay": lr * rate ** np.floor(t / steps),
      "exponential_decay": lr * rate ** (t / steps),
      "inverse_time_decay": lr / (1 + rate * t / steps),
  }
  got = {
      "step_decay": schedules.step_decay(lr, rate, steps),
      "exponential_decay": schedules.exponential_decay(lr, rate, steps),
      "inverse_time_decay": schedules.inverse_time_decay(lr, rate, steps),
  }
  for name, schedule in got.items():
    np.testing.assert_allclose(np.asarray(schedule(counts)), expected[name],
                               rtol=RTOL, atol=1e-300, err_msg=name)


@pytest.mark.parametrize("step_size", [7, 41, 47, 49, 97, 103])
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.int64])
def test_step_decay_drops_exactly_at_multiples(step_size, dtype, request):
  """Each drop lands on a multiple of ``step_size``, vectorised and jitted.

  (Not optax as the reference here: its staircase drops one step late at
  some multiples, e.g. 41, on a vector of counts.) int32 counts run in the
  default float32; int64 counts need x64.
  """
  if dtype == jnp.int64:
    request.getfixturevalue("x64")
  schedule = schedules.step_decay(1.0, 0.5, step_size)
  counts = jnp.arange(3 * step_size + 1, dtype=dtype)
  expected = 0.5 ** (np.arange(3 * step_size + 1) // step_size)
  np.testing.assert_array_equal(np.asarray(schedule(counts)), expected)
  np.testing.assert_array_equal(np.asarray(jax.jit(schedule)(counts)), expected)


BAD = [
    (lambda: schedules.get("linear", lr=0.1), UnknownNameError,
     ["schedule", "'linear'", "cosine_decay"]),
    (lambda: schedules.get(None), UnknownNameError, ["schedule", "None"]),
    (lambda: schedules.constant(-0.1), ConfigError, ["lr", "-0.1", ">= 0"]),
    (lambda: schedules.constant("fast"), ConfigError, ["lr", "'fast'", "number"]),
    (lambda: schedules.step_decay(0.1, 1.5, 10), ConfigError,
     ["decay_rate", "1.5", "0 < decay_rate <= 1"]),
    (lambda: schedules.step_decay(0.1, 0.5, 0), ConfigError,
     ["step_size", "0", ">= 1"]),
    (lambda: schedules.step_decay(0.1, 0.5, 2.5), ConfigError,
     ["step_size", "2.5", "integer"]),
    (lambda: schedules.exponential_decay(float("nan"), 0.5, 10), ConfigError,
     ["lr", "nan"]),
    (lambda: schedules.exponential_decay(0.1, 0.0, 10), ConfigError,
     ["decay_rate", "0.0"]),
    (lambda: schedules.inverse_time_decay(0.1, -1.0, 10), ConfigError,
     ["decay_rate", "-1.0", ">= 0"]),
    (lambda: schedules.cosine_decay(0.1, 100, alpha=2.0), ConfigError,
     ["alpha", "2.0", "0 <= alpha <= 1"]),
    (lambda: schedules.cosine_decay(0.1, float("inf")), ConfigError,
     ["decay_steps", "inf"]),
    (lambda: schedules.warmup(schedules.constant(0.1), -1), ConfigError,
     ["warmup_steps", "-1", ">= 0"]),
    (lambda: schedules.warmup(0.1, 10), ConfigError,
     ["schedule", "0.1", "callable"]),
    (lambda: schedules.warmup(schedules.constant(0.1), 10, init_value=-1.0),
     ConfigError, ["init_value", "-1.0"]),
    (lambda: schedules.get("cosine_decay", lr=0.1), ConfigError,
     ["cosine_decay", "missing", "decay_steps"]),
    (lambda: schedules.get("constant", lr=0.1, decay_rate=0.5), ConfigError,
     ["constant", "unexpected", "decay_rate"]),
]


@pytest.mark.parametrize("make, error, words", BAD,
                         ids=[" ".join(w) for _, _, w in BAD])
def test_bad_names_and_hyperparameters_raise(make, error, words):
  with pytest.raises(error) as info:
    make()
  message = str(info.value)
  assert "\n" not in message
  for word in words:
    assert word in message
