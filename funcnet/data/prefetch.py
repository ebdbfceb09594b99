"""Reading ahead on threads: ``fn(item)`` computed before the consumer asks.

  Prefetcher(fn, items)             fn(item) ahead of the consumer, in order

``train.fit`` reads a streamed run's next chunk of batches with it while
the device trains on this one; ``funcnet bench data`` measures it. It knows
nothing of the shards format (:mod:`funcnet.data.shards`).
"""

import collections
import concurrent.futures
from typing import Callable, Iterable

from funcnet.errors import ConfigError


class Prefetcher:
  """``fn(item)`` for each of ``items``, computed on ``threads`` threads
  ahead of the consumer, yielded in the order of ``items``.

  At most ``depth`` results are computed or waiting beyond the one the
  consumer holds, so memory is bounded by ``depth + 1`` results. ``items``
  is consumed lazily (an endless generator is fine). An exception raised by
  ``fn`` is re-raised, the same object, where its result would have been
  yielded, and stops the prefetcher. :meth:`close` (also on leaving a
  ``with`` block, or a ``for`` loop's ``break`` followed by garbage
  collection) cancels what has not started and waits for what has.

  ``threads`` above ``depth`` would wait idle: give ``depth >= threads``.
  Threads suffice: the work is reading files and numpy copies, which
  release the GIL for most of their time, and the results need no
  pickling.
  """

  def __init__(self, fn: Callable, items: Iterable, depth: int = 2,
               threads: int = 1):
    if depth < 1 or threads < 1:
      raise ConfigError(f"Prefetcher depth={depth}, threads={threads}; "
                        "expected both >= 1")
    self._fn, self._items = fn, iter(items)
    self._depth = depth
    self._pool = concurrent.futures.ThreadPoolExecutor(
        threads, thread_name_prefix="funcnet-prefetch")
    self._ahead = collections.deque()
    self._closed = False

  def _fill(self) -> None:
    while len(self._ahead) < self._depth:
      try:
        item = next(self._items)
      except StopIteration:
        return
      self._ahead.append(self._pool.submit(self._fn, item))

  def __iter__(self):
    return self

  def __next__(self):
    if self._closed:
      raise StopIteration
    self._fill()
    if not self._ahead:
      self.close()
      raise StopIteration
    head = self._ahead.popleft()
    self._fill()               # keep depth in flight while the consumer works
    try:
      return head.result()
    except BaseException:
      self.close()
      raise

  def close(self) -> None:
    """Stops: pending items are cancelled, running ones finish first."""
    if self._closed:
      return
    self._closed = True
    for f in self._ahead:
      f.cancel()
    self._ahead.clear()
    self._pool.shutdown(wait=True, cancel_futures=True)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def __del__(self):
    # Not during interpreter teardown, when the pool's module may be gone.
    if not getattr(self, "_closed", True):
      self._pool.shutdown(wait=False, cancel_futures=True)
