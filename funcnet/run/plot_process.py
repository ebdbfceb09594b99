"""A run's plots (and a sweep's) drawn by a second process, started before JAX.

``funcnet train`` spends most of a one-epoch warm run outside training:
importing JAX (0.75 s) and, at the end, drawing ``loss.png`` and
``grad_norms.png`` (0.67 s: importing matplotlib 0.4 s, drawing 0.25 s).
Started first thing, a plotting process imports matplotlib on the other
core while the command imports JAX, then waits on its stdin; at the end the
command sends it the history (one JSON object) and goes on closing the last
checkpoint and writing the summary while it draws, and waits for it last.

On Linux it draws the two figures side by side: once the history
arrives it forks (matplotlib loaded and warmed up, no threads to break),
and the fork draws ``grad_norms.png`` while it draws ``loss.png`` (a cold
one-epoch run's wait for its plots 0.12 -> 0.03 s).

Why a process and not a thread: importing matplotlib is Python bytecode
holding the GIL; on a thread it competed with the main thread to the end of
a short run and made it slower (issue 15, second session). A process has
its own interpreter, and needs no JAX: ``import funcnet`` imports nothing.

It is an optimisation, never a requirement. :func:`start` returns None
when there is one core to run on or the process cannot start; a plotter
that died before the history reached it (it ignores SIGINT and SIGTERM, so
a Ctrl-C of the terminal's process group leaves it running) makes
:meth:`Plotter.draw` return False, and the caller draws in-process as
before. The process exits when its stdin closes, so it never outlives the
command: a command that fails or is killed closes that pipe.

Protocol, on the plotter's stdin, closed after it:
``{"history": [...], "workdir": DIR, "title": NAME}`` (a run's two
figures), ``{"sweep": DATA, "workdir": DIR}`` (a sweep's ``curves.png``
and ``heatmap.png``, :mod:`funcnet.run.sweep_figures`) or ``{"search":
DATA, "workdir": DIR}`` (an Optuna search's ``search.png``); an empty
stdin: exit without drawing. A drawing that fails exits 2 with one line on stderr (the
exception's type and message), which :meth:`Plotter.wait` raises as a
:class:`~funcnet.errors.FuncnetError`.
"""

import contextlib
import json
import os
import subprocess
import sys
from typing import Optional

# The funcnet being run, importable by the child whatever its sys.path.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_SERVE = ("import sys; sys.path.insert(0, sys.argv[1]); "
          "from funcnet.run.plot_process import main; main()")


def _cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # macOS
    return os.cpu_count() or 1


class Plotter:
  """A started plotting process; :meth:`draw` (or :meth:`draw_sweep`,
  :meth:`draw_search`) once, then :meth:`wait`."""

  def __init__(self, proc: subprocess.Popen):
    self._proc = proc
    self._drawing = False  # the request is sent

  def draw(self, history: list, workdir: str, title: str) -> bool:
    """Sends the history; False when the process is gone (draw here)."""
    return self._send({"history": history, "workdir": os.fspath(workdir),
                       "title": title})

  def _send(self, request: dict) -> bool:
    """Writes the one request and closes stdin; False when it is gone."""
    try:
      # default=float: numpy and JAX scalars; NaN and inf travel as JSON's
      # NaN and Infinity, which json.loads reads back.
      self._proc.stdin.write(json.dumps(request, default=float).encode())
      self._proc.stdin.close()
      self._drawing = True
    except (OSError, TypeError, ValueError):  # BrokenPipeError: it is gone
      self.close()
      return False
    return True

  def draw_sweep(self, figures: dict, folder: str) -> bool:
    """Sends a sweep's figure data (:mod:`funcnet.run.sweep_figures`);
    False when the process is gone (draw here)."""
    return self._send({"sweep": figures, "workdir": os.fspath(folder)})

  def draw_search(self, figure: dict, folder: str) -> bool:
    """Sends an Optuna search's figure data (``search.png``,
    :func:`funcnet.run.sweep_figures.search`); False when the process is
    gone (draw here)."""
    return self._send({"search": figure, "workdir": os.fspath(folder)})

  def _finish(self) -> bytes:
    """Waits for the process that is drawing; returns its stderr, read to
    the end first (one blocked writing a full pipe would never exit). Not
    ``communicate()``: it flushes stdin, which :meth:`draw` closed."""
    err = self._proc.stderr.read()
    self._proc.stderr.close()
    self._proc.wait()
    return err

  def wait(self) -> None:
    """Returns once the plots are written.

    Raises:
      FuncnetError: the drawing failed (its one line).
    """
    from funcnet.errors import FuncnetError
    err = self._finish()
    if self._proc.returncode != 0:
      lines = err.decode(errors="replace").strip().splitlines() or [
          f"the plotting process ended with status {self._proc.returncode}"]
      raise FuncnetError(f"the plots could not be drawn: {lines[-1]}")

  def close(self) -> None:
    """Ends the process (idempotent): one that is drawing is waited for (a
    killed one could leave half a PNG); any other is killed, not asked: it
    may still be importing matplotlib (0.5 s) and has written nothing, and a
    command that fails on a config mistake must not wait for it."""
    proc = self._proc
    if proc.returncode is None:
      if self._drawing:
        self._finish()
      else:
        proc.kill()
        proc.wait()
    for f in (proc.stdin, proc.stderr):
      with contextlib.suppress(OSError):
        f.close()


def start() -> Optional[Plotter]:
  """A plotting process, or None (one core; it could not be started)."""
  if _cores() < 2:  # it would compete with the command for the one core
    return None
  try:
    proc = subprocess.Popen([sys.executable, "-c", _SERVE, _ROOT],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
  except OSError:
    return None
  return Plotter(proc)


def main() -> None:
  """The plotting process's entry: :func:`serve`, then an immediate exit.

  Not ``sys.exit``: the interpreter's shutdown with matplotlib loaded
  (module teardown, garbage collection) took about 0.1 s, which the
  command waited for after the PNGs were written (issue 27). Everything
  this process writes is closed by then (``savefig`` closes its file);
  its stderr is flushed here."""
  code = serve()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


def serve() -> int:
  """The plotting process: import matplotlib, read one request, draw it."""
  import signal
  # The command decides when this ends (by closing stdin), not the
  # terminal: a Ctrl-C reaches the whole process group, and the command
  # still draws the plots of a run it stops (funcnet.run.preemption).
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  from funcnet.run import plots  # what this process is for, before the request
  try:  # the first drawing's caches, filled while the run goes on
    plots.warm_up()
  except Exception:  # pylint: disable=broad-except
    pass  # an optimisation: the real drawing reports what fails
  request = sys.stdin.buffer.read()
  if not request:
    return 0
  try:
    r = json.loads(request)
  except ValueError as e:
    return _failed(e)
  # The two figures side by side: a fork of this process (matplotlib
  # loaded and warmed up, no threads) draws the second while this one
  # draws the first. The command waits for the drawing last, when its
  # cores are idle: 0.2 s of drawing -> 0.12.
  if "sweep" in r:  # a sweep's curves.png and heatmap.png
    from funcnet.run import sweep_figures
    names = sweep_figures.files(r["sweep"])
    draw = lambda some: sweep_figures.draw(r["sweep"], r["workdir"], some)
  elif "search" in r:  # an Optuna search's search.png
    from funcnet.run import sweep_figures
    names = [sweep_figures.SEARCH]
    draw = lambda some: sweep_figures.search(
        r["search"], os.path.join(r["workdir"], sweep_figures.SEARCH))
  else:  # a run's loss.png and grad_norms.png
    names = list(plots.FIGURES)
    draw = lambda some: plots.write(r["history"], r["workdir"],
                                    title=r["title"], figures=some)
  child = _fork() if len(names) > 1 else None
  figures = names if child is None else (
      names[1:] if child == 0 else names[:1])
  try:
    draw(figures)
    code = 0
  except Exception as e:  # pylint: disable=broad-except
    code = _failed(e)
  if child == 0:  # the fork: its figure written, or its line printed
    sys.stderr.flush()
    os._exit(code)
  if child is not None:
    _, status = os.waitpid(child, 0)
    code = code or (2 if status else 0)
  return code


def _failed(e: BaseException) -> int:
  """Prints the one line :meth:`Plotter.wait` raises; returns 2."""
  print(f"{type(e).__name__}: {e}".replace("\n", " "), file=sys.stderr)
  return 2


def _fork() -> Optional[int]:
  """``os.fork()`` on Linux (0 in the child, its pid in the parent); None
  elsewhere, or when it fails: then one process draws both figures."""
  if not sys.platform.startswith("linux"):
    return None
  try:
    return os.fork()
  except OSError:
    return None
