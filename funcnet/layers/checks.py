"""Hyperparameter checks shared by the model builders; each raises a
one-line ``ConfigError``."""

import math

from funcnet import activations
from funcnet.errors import ConfigError
from funcnet.tracing import is_traced


def per_axis(v, n):
  """``v`` as one entry per spatial axis: a sequence as is, an int ``n`` times."""
  return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * n


def require_positive(name: str, value) -> int:
  """``value`` as an int, or a one-line ``ConfigError`` unless it is a positive integer."""
  try:
    ok = not isinstance(value, bool) and int(value) == value and value >= 1
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ConfigError(f"{name} {value!r} must be a positive integer")
  return int(value)


def require_positive_number(name: str, value) -> float:
  """``value`` as a float > 0, else a one-line ``ConfigError``."""
  try:
    ok = not isinstance(value, bool) and 0.0 < float(value) < math.inf
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ConfigError(f"{name} {value!r} must be a number > 0")
  return float(value)


def require_rate(name: str, value) -> float:
  """``value`` as a float in [0, 1), else a one-line ``ConfigError`` (a
  traced rate, see :mod:`funcnet.tracing`, passes unchecked)."""
  if is_traced(value):
    return value
  try:
    ok = not isinstance(value, bool) and 0.0 <= float(value) < 1.0
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ConfigError(f"{name} {value!r} must be in [0, 1)")
  return float(value)


def require_choice(name: str, value, choices) -> str:
  """``value`` if it is one of ``choices``, else a one-line ``ConfigError``."""
  if value not in choices:
    raise ConfigError(f"{name} {value!r} must be one of: "
                      f"{', '.join(map(repr, choices))}")
  return value


def hidden_activation(name):
  """The activation ``name`` for a hidden layer (``softmax`` is output-only)."""
  act = activations.get(name)
  if act.name in activations.OUTPUT_ONLY:
    raise ConfigError(f"activation {act.name!r} is allowed only on the output "
                      "layer; choose another hidden activation")
  return act


def require_sizes(name: str, value, empty_ok: bool = False) -> tuple:
  """``value`` (an int or a sequence of them) as a tuple of positive ints."""
  seq = value if isinstance(value, (tuple, list)) else (value,)
  if not seq and not empty_ok:
    raise ConfigError(f"{name} {value!r} must list at least one positive size")
  return tuple(require_positive(f"{name} entry", v) for v in seq)
