"""A sweep over shards gives the table of the same sweep over memory.

A sweep reads its shards' training split into memory
(:func:`funcnet.data.streamed.in_memory`, through the reader ``fit``
streams with), so the reference is the sweep of the in-memory dataset the
shards were written from: the table (``results.csv`` but the wall times),
every history (but ``time``) and the final params must be equal bit for bit.
"""

import csv
import os

import jax
import numpy as np
import pytest

from funcnet import config, paths, sweep
from funcnet.data import shard_writer, streamed
from funcnet.errors import DataError

SETS = ["train.epochs=2", "model.mlp.hidden=[8]", "train.batch_size=64",
        "model.mlp.dropout=0.2", "run.plots=false"]
GRID = {"optimizer.learning_rate": [0.01, 0.002]}


def _table(out):
  with open(os.path.join(out, "results.csv")) as f:
    rows = list(csv.reader(f))
  assert rows[0][-1] == "group wall s"
  return [r[:-1] for r in rows]


def _no_time(v):
  return [{k: x for k, x in h.items() if k != "time"} for h in v.history]


def test_a_sweep_over_shards_equals_the_sweep_over_memory(tmp_path):
  shards = str(tmp_path / "digits")
  shard_writer.convert("digits", shards)
  cache = {}  # one program: the same shapes, what differs is the data path
  mem = sweep.run(config.load(None, SETS), GRID, out=str(tmp_path / "mem"),
                  cache=cache, log=lambda *a: None)
  lines = []
  sh = sweep.run(config.load(None, SETS + [f"data.name={shards!r}"]), GRID,
                 out=str(tmp_path / "sh"), cache=cache, log=lines.append)
  assert len({v.final["test_loss"] for v in mem.variants}) == 2
  assert _table(str(tmp_path / "sh")) == _table(str(tmp_path / "mem"))
  for a, b in zip(mem.variants, sh.variants):
    assert b.cfg["data"]["name"] == shards
    assert _no_time(a) == _no_time(b)
    for x, y in zip(jax.tree_util.tree_leaves(a.params),
                    jax.tree_util.tree_leaves(b.params)):
      np.testing.assert_array_equal(x, y)
  # the statistics the shards stored, as the in-memory path computed them
  np.testing.assert_array_equal(mem.variants[0].stats[0], sh.variants[0].stats[0])
  np.testing.assert_array_equal(mem.variants[0].stats[1], sh.variants[0].stats[1])


def test_shards_too_large_for_memory_are_one_line(tmp_path, monkeypatch):
  shards = str(tmp_path / "digits")
  shard_writer.convert("digits", shards)
  ds = streamed.load(shards)
  monkeypatch.setattr(paths, "host_memory", lambda: (100_000, "the host"))
  # 1437 rows x (64 float32 + one int32 label) = 373,620 bytes
  with pytest.raises(DataError, match=r"reads its shards' training split into "
                     r"memory, and 'digits' takes 374 kB of the 100 kB the "
                     r"host has available; expected a split that fits in half"):
    streamed.in_memory(ds)
  assert streamed.is_streamed(ds)  # nothing read
  monkeypatch.setattr(paths, "host_memory", lambda: (10**9, "the host"))
  x, y = streamed.in_memory(ds)[:2]
  assert x.shape == (1437, 64) and y.shape == (1437,)
