"""Numbers over seeds: mean and spread, and paired effects a clause decides.

A study trains every compared variant from the same seeds (the same init
and data order for seed ``s`` whatever the variant), so a comparison is
*paired*: ``d_s = b_s - a_s`` per seed. An effect "holds" here when

  mean_s d_s >= threshold   and   d_s > 0 for every seed s

(the sign in every seed is the spread criterion: with 3 seeds it is what a
reader checks in the table). With fewer than ``min_seeds`` seeds the effect
is not decided (None): one seed shows no spread.

The standard deviation is the sample one (``ddof = 1``; 0 for one seed).
"""

import math
from typing import Optional

import numpy as np


def mean_std(xs) -> tuple:
  """``(mean, std)`` of a list of numbers, std with ``ddof = 1``."""
  a = np.asarray(xs, dtype=np.float64)
  return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def pm(xs, f: str = "{:.3f}") -> str:
  """``"0.512 ± 0.010"``: the mean ± std of ``xs`` (the one value alone
  for one seed: it has no spread)."""
  m, s = mean_std(xs)
  return f.format(m) if len(xs) == 1 else f"{f.format(m)} ± {f.format(s)}"


def paired(a, b) -> list:
  """Per-seed differences ``b_s - a_s``."""
  if len(a) != len(b):
    raise ValueError(f"paired numbers of {len(a)} and {len(b)} seeds")
  return [float(y) - float(x) for x, y in zip(a, b)]


def effect(diffs, threshold: float, min_seeds: int) -> Optional[bool]:
  """Whether the paired differences show an effect of at least
  ``threshold`` (mean) that has the same sign in every seed; None with
  fewer than ``min_seeds`` seeds or a non-finite difference."""
  if len(diffs) < min_seeds:
    return None
  if not all(math.isfinite(d) for d in diffs):
    return False
  return float(np.mean(diffs)) >= threshold and min(diffs) > 0


def points(x: float) -> str:
  """An accuracy difference in points: ``0.01 -> "1 point"``."""
  n = f"{100 * x:g}"
  return f"{n} point" + ("" if n == "1" else "s")


def why_untested(n: int, min_seeds: int) -> str:
  return f"{n} seed(s) < {min_seeds}: no spread to decide on"
