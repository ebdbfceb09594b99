"""A per-epoch progress bar on a terminal, silent elsewhere.

It is updated between jitted epochs from the metrics already on the host,
so it never adds a device sync or slows the scanned loop.
"""

import sys
import time

from funcnet import tasks

# Short labels that keep the bar on one line; other metrics show as
# "test <name>" to 4 significant digits.
_SHORT = {"test_accuracy": ("acc", "{:.3f}")}


class Progress:
  """``Progress(total, start, mode)``; ``update(record)`` after each epoch.

  ``mode``: ``"auto"`` draws only when stderr is a terminal, ``"always"``
  and ``"never"`` force it. ``task``: the bar shows the training loss and
  the task's headline metric (:func:`funcnet.tasks.headline`).
  """

  def __init__(self, total: int, start: int = 0, mode: str = "auto",
               stream=None, task: str = tasks.DEFAULT):
    self.stream = stream or sys.stderr
    self.metric = tasks.headline(task)[0]
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
    if self.metric in record:
      label, fmt = _SHORT.get(self.metric, (self.metric.replace("_", " "),
                                            "{:.4g}"))
      extra += f" {label} {fmt.format(record[self.metric])}"
    self.stream.write(f"\r[{bar}] epoch {e}/{self.total} {rate:.1f} ep/s{extra}  ")
    self.stream.flush()

  def close(self) -> None:
    if self.on:
      self.stream.write("\n")
      self.stream.flush()
