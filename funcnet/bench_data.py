"""``funcnet bench --data DIR``: examples/s of the shards loader alone.

Random mini-batches of the training split, in the order training takes
them (:func:`funcnet.train.batch_order`, epoch after epoch), read and
standardised with :meth:`funcnet.data.stream.Shards.read`; the consumer
does nothing with them, so this is the most the loader can feed a step:

  memory      numpy's gather from the split held in memory (read once,
              standardised): the in-memory path's cost, for scale
  read        ``Shards.read`` in the consumer's thread
  prefetch T  the same through :class:`funcnet.data.stream.Prefetcher`
              on T threads, ``depth = max(2, T)`` batches ahead (so every
              thread has a batch to work on)

Each mode runs ``rounds`` times over ``steps`` batches, alternating so
that all meet the same load; the record keeps the median.

``consumer_s > 0`` makes the consumer wait that long per batch with the GIL
released (``time.sleep``), a stand-in for a device step: without prefetch a
batch then costs read + step, with it about max(read, step). With
``consumer_s = 0`` prefetch can only add its hand-over cost (and, on a
machine with few cores, thread contention).
"""

import json
import time
from typing import Callable

import numpy as np

from funcnet.data import stream

THREADS = (1, 2, 3, 4)

# The bits of the training key batch_order takes: any fixed value will do,
# the order only has to be a real shuffle.
_KEY = np.array([0, 0], np.uint32)


def _batches(n: int, batch_size: int, steps: int) -> list:
  """``steps`` row arrays of ``batch_size``, epoch after epoch."""
  from funcnet.train import batch_order
  out, epoch = [], 0
  while len(out) < steps:
    perm = batch_order(_KEY, epoch, n, batch_size).astype(np.int64)
    out += list(perm.reshape(-1, batch_size))
    epoch += 1
  return out[:steps]


def _time(consume) -> float:
  t = time.perf_counter()
  consume()
  return time.perf_counter() - t


def run(path, batch_size: int = 128, steps: int = 300, *, rounds: int = 3,
        threads=THREADS, consumer_s: float = 0.0,
        log: Callable = print) -> list:
  """One record per mode: ``{"mode", "threads", "depth", "batch_size",
  "steps", "consumer_s", "examples_per_s", "batches_per_s"}`` (medians of
  ``rounds``)."""
  sh = stream.Shards(path)
  if sh.n_train < batch_size:
    from funcnet.errors import ConfigError
    raise ConfigError(f"batch size {batch_size} exceeds the {sh.n_train} "
                      f"training examples of {path}")
  batches = _batches(sh.n_train, batch_size, steps)
  read = lambda rows: sh.read("train", rows)

  def drain(it):
    for x, y in it:
      if consumer_s:
        time.sleep(consumer_s)

  modes = {"read": lambda: drain(map(read, batches))}
  for t in threads:
    def prefetch(t=t):
      with stream.Prefetcher(read, batches, depth=max(2, t), threads=t) as p:
        drain(p)
    modes[f"prefetch {t}"] = prefetch
  # The in-memory reference only when the split is small enough to hold.
  if sh.n_train * sh.meta["record_bytes"] < 2**28:
    x_all, y_all = sh.read("train", np.arange(sh.n_train))
    modes = {"memory": lambda: drain((x_all[r], y_all[r]) for r in batches),
             **modes}
  read(batches[0])              # open the shards before timing
  times = {m: [] for m in modes}
  for _ in range(rounds):
    for m, fn in modes.items():
      times[m].append(_time(fn))
  records = []
  for m, ts in times.items():
    s = float(np.median(ts))
    t = int(m.split()[1]) if m.startswith("prefetch") else 0
    rec = {"mode": m, "threads": t, "depth": max(2, t) if t else 0,
           "batch_size": batch_size, "steps": steps, "consumer_s": consumer_s,
           "examples_per_s": steps * batch_size / s,
           "batches_per_s": steps / s, "dataset": sh.name,
           "record_bytes": sh.meta["record_bytes"]}
    log(json.dumps(rec))
    records.append(rec)
  sh.close()
  return records


def format_table(records: list) -> str:
  rows = ["| loader | threads | depth | batch | examples/s | batches/s |",
          "| --- | ---: | ---: | ---: | ---: | ---: |"]
  for r in records:
    rows.append(f"| {r['mode']} | {r['threads'] or '-'} | "
                f"{r['depth'] or '-'} | {r['batch_size']} | "
                f"{r['examples_per_s']:,.0f} | {r['batches_per_s']:,.0f} |")
  return "\n".join(rows)
