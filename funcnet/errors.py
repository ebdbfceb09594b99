"""The kinds of user mistake funcnet reports, one error type each.

Every error here is a ``ValueError`` whose message is one line saying what is
wrong and what was expected. The command line turns them into that line on
stderr and an exit status (see ``funcnet.cli``), never a traceback.
"""


class FuncnetError(ValueError):
  """Base of every user-facing error funcnet raises."""

  exit_code = 2
  label = "error"  # the command prints "funcnet: <label>: <message>"


class UnknownNameError(FuncnetError):
  """An activation, loss, initialiser, optimizer, dataset or model name that does not exist."""


class ShapeError(FuncnetError):
  """An array whose shape or values do not fit the model or the loss."""


class ConfigError(FuncnetError):
  """A config key, value or type that is wrong."""


class DataError(FuncnetError):
  """A data file or array that cannot be used (missing arrays, NaN, bad labels)."""


class CheckpointError(FuncnetError):
  """A checkpoint that is missing, truncated or corrupted."""


class DivergenceError(FuncnetError):
  """Training produced a NaN or infinite loss."""

  exit_code = 3


# Exit status of a command stopped by each signal (README, "Exit status").
# 75 is sysexits.h's EX_TEMPFAIL: a temporary failure, the caller is
# invited to retry -- which is what a retry loop around a preemptible
# machine should do.
SIGNAL_EXIT_CODES = {"SIGTERM": 75, "SIGINT": 130}


class Preempted(FuncnetError):
  """A command stopped by SIGTERM or SIGINT, having cleaned up: training
  after saving a checkpoint and the summary (:mod:`funcnet.run.preemption`),
  ``funcnet data`` after removing its partial folder. Not a mistake, so the
  command prints it without "error:". ``exit_code`` is the signal's
  (:data:`SIGNAL_EXIT_CODES`: 75 or 130)."""

  label = "stopped"

  def __init__(self, message: str, exit_code: int):
    super().__init__(message)
    self.exit_code = exit_code


def needs_extra(what: str, extra: str, packages: str) -> ConfigError:
  """The error for ``what`` run without the optional ``extra`` (pyproject's
  ``[project.optional-dependencies]``) that installs ``packages``.

  funcnet is installed from its checkout, not from a package index, so the
  command to give is the editable install with the extra.
  """
  return ConfigError(f"{what} needs the [{extra}] extra ({packages}); "
                     f'expected pip install -e ".[{extra}]" in the funcnet '
                     "checkout")


def unknown(kind: str, name, known) -> UnknownNameError:
  """The error for an unknown ``name`` of ``kind``, listing the known ones."""
  return UnknownNameError(
      f"unknown {kind} {name!r}; expected one of: {', '.join(sorted(known))}")


def lookup(kind: str, name, table: dict):
  """``table[name]``, or the :func:`unknown` error for ``kind`` listing the keys."""
  try:
    return table[name]
  except (KeyError, TypeError):
    raise unknown(kind, name, table) from None
