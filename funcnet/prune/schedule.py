"""Gradual pruning's sparsity schedule (Zhu & Gupta 2017, eq. 1).

The sparsity rises from ``s_i`` to ``s_f`` over ``n`` pruning steps, fast
at first (the network has many redundant weights) and slowly near the
end (the few left matter), along a cubic::

  s_t = s_f + (s_i - s_f) (1 - t / n)^3    for 0 <= t <= n,  s_t = s_f after

Here a pruning step is a fine-tuning epoch: at the start of epoch ``t`` the
masks are recomputed by magnitude at ``s_t`` (:func:`sparsities`), so the
last ``epochs - n`` epochs fine-tune at ``s_f`` with the masks fixed.
"""

from funcnet.errors import ConfigError

SCHEDULES = ("oneshot", "gradual")


def check_schedule(schedule: str) -> str:
  """``schedule`` one of :data:`SCHEDULES`, else a one-line ConfigError."""
  if schedule not in SCHEDULES:
    raise ConfigError(f"--schedule {schedule!r}: expected one of "
                      f"{', '.join(SCHEDULES)}")
  return schedule


def cubic(t: int, final: float, n: int, initial: float = 0.0) -> float:
  """``s_t = s_f + (s_i - s_f)(1 - t/n)^3``, held at ``s_f`` for ``t >= n``
  (``n = 0``: ``s_f`` at once)."""
  if n <= 0 or t >= n:
    return float(final)
  return float(final + (initial - final) * (1.0 - t / n) ** 3)


def sparsities(epochs: int, final: float, ramp: int,
               initial: float = 0.0) -> list:
  """The sparsity at the start of each of ``epochs`` fine-tuning epochs,
  ``[s_0, ..., s_{epochs-1}]``, the cubic over the first ``ramp``."""
  if not 0 <= ramp <= epochs:
    raise ConfigError(f"--ramp-epochs {ramp}: expected 0 <= N <= --epochs "
                      f"({epochs})")
  return [cubic(t, final, ramp, initial) for t in range(epochs)]
