"""The learning rate in each epoch's record (``train.monitor.epoch_rates``):
every epoch's rate from one compiled call, equal to the schedule's formula
in plain numpy; a schedule that cannot be traced is still recorded."""

import math
import os

import jax
import numpy as np

from funcnet import schedules
from funcnet.train import monitor as monitor_lib, program_cache
from funcnet.train.step import EpochMetrics


def _warm_cosine_numpy(count, lr, decay, warm):
  """schedules.warmup(cosine_decay(lr, decay), warm) from their docstrings'
  equations, in float64."""
  if count < warm:
    return lr * count / warm
  t = min(count - warm, decay)
  return lr * 0.5 * (1 + math.cos(math.pi * t / decay))


def test_every_epochs_rate_is_the_schedules_formula():
  sched = schedules.warmup(schedules.cosine_decay(3e-3, 400), 100)
  got = monitor_lib.epoch_rates(sched, 40, 12)
  want = [_warm_cosine_numpy(40 * (e + 1), 3e-3, 400, 100) for e in range(12)]
  assert got.shape == (12,)
  # float32: 1 + cos(.) near -1 at the end of the decay cancels, so the
  # bound is absolute, on the scale of the peak rate
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7 * 3e-3)


def _record(mon, e):
  m = EpochMetrics(loss=np.float32(1.0), grad_norms=np.ones(1, np.float32),
                   param_norm=np.float32(1.0), update_norm=np.float32(0.1),
                   bad_step=np.int32(-1))
  return mon.after(e, m, None, 0.0)


def test_a_schedule_in_python_control_flow_is_recorded_per_epoch():
  def steps(count):  # `if` on the count: cannot be traced
    return 0.1 if count < 80 else 0.01
  assert monitor_lib.epoch_rates(steps, 40, 3).shape == (0,)
  mon = monitor_lib.Monitor(["layer 1"], 40, 3, lr_schedule=steps,
                            has_test=False)
  assert [_record(mon, e)["lr"] for e in range(3)] == [0.1, 0.01, 0.01]
  traced = monitor_lib.Monitor(["layer 1"], 40, 3, has_test=False,
                               lr_schedule=schedules.constant(0.25))
  assert [_record(traced, e)["lr"] for e in range(3)] == [0.25] * 3


def test_a_sweeps_rates_come_from_one_program_and_are_each_schedules(
    monkeypatch):
  scheds = [schedules.warmup(schedules.cosine_decay(lr, 400), 100)
            for lr in (1e-3, 3e-3, 1e-2)]
  compiled, jit = [], jax.jit

  def spy(fn, *args, **kwargs):
    compiled.append(getattr(fn, "__name__", "?"))
    return jit(fn, *args, **kwargs)

  monkeypatch.setattr(jax, "jit", spy)
  got = monitor_lib.rate_tables(scheds, 40, [12, 5, 9])
  monkeypatch.undo()
  assert compiled == ["rates"]
  assert [g.shape for g in got] == [(12,), (5,), (9,)]
  for g, lr, n in zip(got, (1e-3, 3e-3, 1e-2), (12, 5, 9)):
    want = [_warm_cosine_numpy(40 * (e + 1), lr, 400, 100) for e in range(n)]
    np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-7 * lr)


def test_one_untraceable_schedule_leaves_the_others_tabled():
  def steps(count):
    return 0.1 if count < 80 else 0.01
  got = monitor_lib.rate_tables([schedules.constant(0.25), steps], 40, [3, 3])
  np.testing.assert_array_equal(got[0], np.full(3, 0.25, np.float32))
  assert got[1].shape == (0,)


def test_with_an_identity_the_table_is_loaded_from_the_program_cache(
    monkeypatch, tmp_path):
  # funcnet's program cache on in a temporary folder; a peak rate new to
  # this process, so XLA compiles the table (a program JAX's own cache
  # already holds is not kept) and the cache keeps it
  monkeypatch.setattr(program_cache, "folder", lambda: str(tmp_path))
  monkeypatch.setattr(program_cache, "_LOADED", {})
  lr = float(np.random.default_rng().uniform(1e-3, 1e-2))
  inner = schedules.warmup(schedules.cosine_decay(lr, 400), 100)
  traced = []

  def sched(count):
    traced.append(1)  # runs only while tracing
    return inner(count)
  want = [_warm_cosine_numpy(40 * (e + 1), lr, 400, 100) for e in range(12)]
  first = monitor_lib.epoch_rates(sched, 40, 12, identity="run config")
  assert traced and [f.split("-")[0] for f in os.listdir(tmp_path)] == [
      "rates"]
  n = len(traced)
  program_cache._LOADED.clear()  # as a new process
  second = monitor_lib.epoch_rates(sched, 40, 12, identity="run config")
  assert len(traced) == n  # read from the file: nothing traced
  for got in (first, second):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7 * lr)


def test_a_constant_rates_table_is_made_without_a_program(monkeypatch):
  # lr at every epoch (the schedule's equation), in JAX's default float as
  # the compiled table is; nothing compiled, for one schedule or a sweep's
  def no_program(*a, **k):
    raise AssertionError("a program compiled for a constant rate")
  monkeypatch.setattr(program_cache, "compiled", no_program)
  tables = monitor_lib.rate_tables(
      [schedules.constant(3e-3), schedules.constant(0.5)], 40, [3, 5])
  assert [t.dtype for t in tables] == [np.float32, np.float32]
  assert tables[0].tolist() == [float(np.float32(3e-3))] * 3
  assert tables[1].tolist() == [0.5] * 5
  # with a warm-up it is no longer constant: its table needs the program
  with np.testing.assert_raises(AssertionError):
    monitor_lib.epoch_rates(schedules.warmup(schedules.constant(0.5), 100),
                            40, 3)
