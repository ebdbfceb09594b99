"""What orbax and tensorstore print that a run cannot act on, kept quiet.

:mod:`funcnet.run.checkpoints` reports a failed save or restore in one
line; orbax and tensorstore would add tracebacks of threads and tasks
around it (40-100 lines each). Four measures, each for one source:

  _SaveThreadErrors        a failed asynchronous save's ERROR records
  quiet()                  what a failing read prints while it fails
  drop_late_noise()        what its abandoned reads print later
  silence_stderr_at_exit() what they print while the interpreter shuts down
"""

import atexit
import contextlib
import logging
import os
import sys
import warnings

# orbax logs every save at INFO through absl; a training script's output
# should be its own.
logging.getLogger("absl").setLevel(logging.WARNING)


class _SaveThreadErrors(logging.Filter):
  """Drops orbax's ERROR records with a traceback (40 lines each, two or
  three per failure) of an asynchronous save that failed on its threads:
  orbax raises the failure again where training waits for the save
  (``wait_until_finished``), and
  :class:`funcnet.run.checkpoints.Saver` turns that into one line."""

  def filter(self, record) -> bool:
    return not (record.levelno >= logging.ERROR and record.exc_info
                and _from_orbax(record))


def _from_orbax(record) -> bool:
  """Whether ``record`` was logged by orbax, or carries an exception raised
  in orbax. The record's ``pathname`` names orbax only when the ``absl``
  logger is absl's own class, which skips absl's frames; when this module
  made that logger first (absl imported later, by orbax), it names
  ``absl/logging/__init__.py``, and the exception's traceback tells."""
  where = f"{os.sep}orbax{os.sep}"
  if where in record.pathname:
    return True
  tb = record.exc_info[2] if isinstance(record.exc_info, tuple) else None
  while tb is not None:
    if where in tb.tb_frame.f_code.co_filename:
      return True
    tb = tb.tb_next
  return False


logging.getLogger("absl").addFilter(_SaveThreadErrors())

@contextlib.contextmanager
def quiet():
  """Silences what orbax and tensorstore print while failing to read.

  A failed read leaves asyncio tasks whose errors nobody retrieved and
  coroutines never awaited; when they are collected, asyncio logs "Task
  exception was never retrieved" with a tensorstore spec (~100 lines),
  Python prints "Exception ignored in" tracebacks and RuntimeWarnings, and
  tensorstore's late callbacks into a closed loop add "Event loop is
  closed" tracebacks. The error itself reaches the caller as a one-line
  reason, who then collects the rest (``gc.collect``) inside the silence.
  """
  loggers = [logging.getLogger(n) for n in ("absl", "asyncio")]
  levels = [lg.level for lg in loggers]
  hook = sys.unraisablehook
  try:
    for lg in loggers:
      lg.setLevel(logging.CRITICAL + 1)
    sys.unraisablehook = lambda unraisable: None
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      yield
  finally:
    sys.unraisablehook = hook
    for lg, level in zip(loggers, levels):
      lg.setLevel(level)


class _LateOrbaxNoise(logging.Filter):
  """Drops what orbax's abandoned reads print after a failed restore.

  orbax closes its event loop as soon as one read of a damaged checkpoint
  fails, abandoning the reads still in flight. Those finish later on
  tensorstore's threads, or never and are collected at exit, well after
  :func:`quiet` has ended (in about one failed restore in five): their
  callbacks into the closed loop raise "Event loop is closed", their
  coroutines are finalised with "Exception ignored in", and asyncio logs
  "exception was never retrieved" with the whole tensorstore spec. None of
  it can be acted on, so exactly that is dropped, as an unraisable-error
  hook and a filter of the ``asyncio`` logger installed at the first
  restore or save; every other error reaches the hook that was there
  before. What is printed once the interpreter is shutting down is beyond
  any hook: see :func:`silence_stderr_at_exit`.
  """

  def __init__(self, previous_hook):
    super().__init__()
    self.previous_hook = previous_hook
    import orbax.checkpoint as ocp  # (imported by then: a save or restore runs)
    self.orbax_dir = os.path.dirname(ocp.__file__)

  def _is_orbax_coroutine(self, obj) -> bool:
    code = getattr(obj, "cr_code", None)
    return code is not None and code.co_filename.startswith(self.orbax_dir)

  def unraisable_hook(self, unraisable):
    tb = unraisable.exc_traceback
    while tb is not None and tb.tb_next is not None:
      tb = tb.tb_next
    closed_loop = (isinstance(unraisable.exc_value, RuntimeError)
                   and str(unraisable.exc_value) == "Event loop is closed"
                   and tb is not None
                   and tb.tb_frame.f_code.co_name == "_check_closed")
    if not (closed_loop or self._is_orbax_coroutine(unraisable.object)):
      self.previous_hook(unraisable)

  def filter(self, record) -> bool:
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
      text += str(record.exc_info[1])
    return not (("never retrieved" in text or "destroyed but it is pending"
                 in text) and (self.orbax_dir in text or "tensorstore" in text))


_late_noise = []  # the one _LateOrbaxNoise of this process, once installed


def drop_late_noise() -> None:
  """Installs :class:`_LateOrbaxNoise`, once per process."""
  if _late_noise:
    return
  noise = _LateOrbaxNoise(sys.unraisablehook)
  sys.unraisablehook = noise.unraisable_hook
  logging.getLogger("asyncio").addFilter(noise)
  _late_noise.append(noise)


def silence_stderr_at_exit() -> None:
  """After a failed orbax read or write, nothing more on stderr once the
  program has finished (from ``atexit``).

  The failed operation's abandoned tensorstore callbacks can still run
  while the interpreter shuts down, after ``sys.unraisablehook`` is gone
  from ``sys``: CPython then prints their "Event loop is closed" as a bare
  six-line traceback with its built-in hook, which no Python-level hook or
  filter can reach (about one failed save in three, so the one-line error
  would gain 6-60 lines). Everything the program meant to say is said by
  then, so stderr's descriptor is pointed at /dev/null at exit. Handlers
  registered later run earlier (atexit is last-in, first-out) and are
  unaffected; stdout is untouched.
  """
  if silence_stderr_at_exit.registered:
    return
  silence_stderr_at_exit.registered = True

  def silence():
    with contextlib.suppress(Exception):
      sys.stderr.flush()
      devnull = os.open(os.devnull, os.O_WRONLY)
      os.dup2(devnull, 2)
      os.close(devnull)

  atexit.register(silence)


silence_stderr_at_exit.registered = False
