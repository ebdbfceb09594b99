"""SIGTERM and SIGINT during training: finish the epoch, save, say so, exit.

Spot and preemptible cloud machines (Cloud TPU spot VMs, GCE preemptible,
AWS spot) are stopped with SIGTERM and a grace period (30 s on GCE), and a
person stops a run with Ctrl-C (SIGINT). Either way the work since the last
checkpoint would be lost. Inside :class:`Watch` the first signal sets a
flag and says at once, in one line on stderr, that the run will save and
stop (an epoch can take minutes: silence until then reads as a hang);
``train_and_evaluate`` reads the flag after each epoch, or after each chunk
of a run streamed from shards (a compiled call cannot be cut short),
stops, saves a checkpoint there and writes the summary with ``status =
"preempted"``; the command then exits with :data:`EXIT_CODES` (75 for
SIGTERM, "try again", 130 for SIGINT).
``funcnet train --out R --resume`` ends exactly as a run never stopped.

A second signal stops the process at once: the first one puts the
operating system's default action back, so it is the kernel that ends the
process, even in the middle of a compiled call that would not return to
Python for minutes. Checkpoints already written stay readable (orbax renames
a checkpoint into place only once complete).

Several processes (a pod slice): each host gets its own SIGTERM, not at the
same instant. All of them must stop after the same epoch, or the ones that
go on wait forever in the next epoch's collectives; :meth:`Watch.requested`
therefore agrees across processes (one small all-gather per epoch, only when
there are several).
"""

import os
import signal
import threading
from typing import Optional

# Exit status of a run stopped by each signal, after its checkpoint and
# summary are written: the table every command stopped by a signal uses.
from funcnet.errors import SIGNAL_EXIT_CODES as EXIT_CODES


class Watch:
  """Context manager: while inside, SIGTERM and SIGINT are noted, not obeyed.

  Only the main thread can install signal handlers; elsewhere (a library
  caller's worker thread) the watch is inert and signals keep their
  handlers.

  ``unit``: what the run finishes before it stops (``"epoch"``, or
  ``"chunk"`` for a run streamed from shards), named in the line printed
  at the first signal.
  """

  def __init__(self, unit: str = "epoch", signals=("SIGTERM", "SIGINT")):
    self.unit = unit
    self.signals = [getattr(signal, s) for s in signals]
    self.received: Optional[str] = None
    self._before = {}

  def _on_signal(self, signum, frame):
    del frame
    if self.received is None:
      self.received = signal.Signals(signum).name
      # os.write, not print: a handler may run inside another print.
      os.write(2, (f"funcnet: {self.received} received: saving a checkpoint "
                   f"and stopping after the current {self.unit} (send it "
                   "again to stop at once, without saving)\n").encode())
    # The next one of either kind ends the process at once (see above).
    for s in self.signals:
      signal.signal(s, signal.SIG_DFL)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in self.signals:
        self._before[s] = signal.signal(s, self._on_signal)
    return self

  def __exit__(self, *exc):
    for s, handler in self._before.items():
      signal.signal(s, handler)
    self._before = {}

  def requested(self) -> Optional[str]:
    """The first signal's name (``"SIGTERM"``), or None; the same answer in
    every process of a multi-process run (the first signal any of them got,
    ordered by process index)."""
    import jax
    if jax.process_count() == 1:
      return self.received
    import numpy as np
    from jax.experimental import multihost_utils
    mine = np.int32(0 if self.received is None
                    else signal.Signals[self.received].value)
    every = np.asarray(multihost_utils.process_allgather(mine)).ravel()
    got = [int(v) for v in every if v]
    return signal.Signals(got[0]).name if got else None
