"""A per-epoch progress bar on a terminal, silent elsewhere.

It is updated between jitted epochs from the metrics already on the host,
so it never adds a device sync or slows the scanned loop.
"""

import sys
import time


class Progress:
  """``Progress(total, start, mode)``; ``update(record)`` after each epoch.

  ``mode``: ``"auto"`` draws only when stderr is a terminal, ``"always"``
  and ``"never"`` force it.
  """

  def __init__(self, total: int, start: int = 0, mode: str = "auto",
               stream=None):
    self.stream = stream or sys.stderr
    self.total, self.start = total, start
    self.on = mode == "always" or (mode == "auto" and self.stream.isatty())
    self.t0 = time.perf_counter()
    self._last = 0.0

  def update(self, record: dict) -> None:
    if not self.on:
      return
    now = time.perf_counter()
    e = record["epoch"]
    if e < self.total and now - self._last < 0.1:
      return  # at most ten redraws a second
    self._last = now
    done = (e - self.start) / max(self.total - self.start, 1)
    width = 30
    bar = "#" * int(done * width) + "-" * (width - int(done * width))
    rate = (e - self.start) / max(now - self.t0, 1e-9)
    extra = f" loss {record['train_loss']:.4g}"
    if "test_accuracy" in record:
      extra += f" acc {record['test_accuracy']:.3f}"
    self.stream.write(f"\r[{bar}] epoch {e}/{self.total} {rate:.1f} ep/s{extra}  ")
    self.stream.flush()

  def close(self) -> None:
    if self.on:
      self.stream.write("\n")
      self.stream.flush()
