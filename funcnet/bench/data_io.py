"""``funcnet bench data shards DIR``: examples/s of the shards loader alone.

Random mini-batches of the training split, in the order training takes
them (:func:`funcnet.train.batch_order`, epoch after epoch), read and
standardised with :meth:`funcnet.data.shards.Shards.read`; the consumer
does nothing with them, so this is the most the loader can feed a step:

  memory      numpy's gather from the split held in memory (read once,
              standardised): the in-memory path's cost, for scale
  read        ``Shards.read`` in the consumer's thread
  prefetch T  the same through :class:`funcnet.data.prefetch.Prefetcher`
              on T threads, ``depth = max(2, T)`` batches ahead (so every
              thread has a batch to work on)

Each mode runs ``rounds`` times over ``steps`` batches, alternating so
that all meet the same load; the record keeps the median.

``consumer_s > 0`` makes the consumer wait that long per batch with the GIL
released (``time.sleep``), a stand-in for a device step: without prefetch a
batch then costs read + step, with it about max(read, step). With
``consumer_s = 0`` prefetch can only add its hand-over cost (and, on a
machine with few cores, thread contention).

Two more measurements of issue 16 (docs/performance.md, "Data from
shards"):

  train(DIR)    ``funcnet bench data shards DIR --train [CONFIG]``: the
                config (default ``mnist1d_mlp``) trained from memory and from
                the shards in DIR, alternately, ``rounds`` times each; the
                steps/s of each from the second epoch to the one before the
                last (the first compiles, the last evaluates), their ratio,
                the host's cost of one chunk, and whether every run ends
                with the same params, bit for bit
  memory(CAP)   ``funcnet bench data memory-cap CAP_MB``: a generated set of
                at least ``factor`` (3) times CAP on disk, trained for one
                epoch by ``funcnet train`` in a subprocess whose own peak
                RSS is measured, against CAP
"""

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable, NamedTuple, Sequence

import numpy as np

from funcnet.data import shard_writer
from funcnet.data.prefetch import Prefetcher
from funcnet.data.shards import Shards

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
  sh = Shards(path)
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
      with Prefetcher(read, batches, depth=max(2, t), threads=t) as p:
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


# --- training from shards against training from memory ----------------------

TRAIN_CONFIG = "mnist1d_mlp"


def _params_equal(a, b) -> bool:
  import jax
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  return len(la) == len(lb) and all(
      np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(la, lb))


def _chunk_cost(ds, batch_size: int, k: int, rounds: int = 5) -> dict:
  """Host seconds of one chunk of ``k`` steps as the streamed epoch makes
  it (``train.StreamedFeed``'s ``_load``): the rows read and
  standardised (``Rows.read``), then shaped ``(k, b, ...)`` and copied to
  the device. Medians of ``rounds``."""
  import jax
  rows = _batches(len(ds.y_train), batch_size, k)
  order = np.concatenate(rows)
  read, put = [], []
  for _ in range(rounds):
    t0 = time.perf_counter()
    x, y = ds.x_train.read(order)
    t1 = time.perf_counter()
    jax.block_until_ready(jax.device_put(
        (x.reshape((k, batch_size) + x.shape[1:]),
         y.reshape((k, batch_size) + y.shape[1:]))))
    read.append(t1 - t0)
    put.append(time.perf_counter() - t1)
  return {"read_s": float(np.median(read)), "put_s": float(np.median(put))}


def train(path, config: str = TRAIN_CONFIG, *, epochs: int = 8,
          rounds: int = 2, overrides: Sequence[str] = (),
          log: Callable = print) -> dict:
  """The config trained from memory and from the shards in ``path``.

  Args:
    path: shards of the config's dataset (``funcnet data convert NAME
      path`` for the config's ``data.name = NAME``).
    config: a config name in ``configs/`` or a TOML path.
    epochs: epochs per run, at least 3: epoch 1 compiles and the last
      evaluates (``train.eval_every = epochs``), so the rate is of epochs
      ``2 .. epochs - 1``, training alone.
    rounds: runs of each, alternating memory, shards, memory, shards...
    overrides: further ``KEY=VALUE`` for both (``train.chunk_steps=10``).

  The in-memory dataset is the config's own, standardised with the shards'
  statistics, so both runs see the same numbers
  (``experiment.build_dataset(cfg, stats=(mean, std))``); the streamed
  one is the same config with ``data.name = path``. Each run is
  ``experiment.Setup(cfg, ds=ds).fit()``, the training ``funcnet train``
  runs, compilation included (every Setup compiles its own).

  Returns:
    ``{"config", "dataset", "epochs", "steps_per_epoch", "batch_size",
    "chunk_steps", "chunks_per_epoch", "runs": [{"data", "round",
    "steps_per_s", "epoch_s"}], "memory_steps_per_s",
    "shards_steps_per_s"`` (medians over rounds), ``"ratio"`` (shards /
    memory), the same of the fastest timed epoch of all rounds
    (``"memory_best_steps_per_s"``, ..., ``"best_ratio"``: the least
    disturbed by other jobs on a shared machine), ``"identical"`` (every
    run's final params equal the first's, bit for bit), ``"chunk_read_s",
    "chunk_put_s"`` (the host's cost of one chunk, :func:`_chunk_cost`),
    ``"device"}``.
  """
  from funcnet import config as config_lib, experiment, train as tr
  from funcnet.bench import step_time
  from funcnet.bench.model_steps import _config_path
  from funcnet.errors import ConfigError
  if epochs < 3:
    raise ConfigError(f"epochs={epochs}; expected >= 3 (the first compiles, "
                      "the last evaluates)")
  sh = Shards(path)
  sets = [f"train.epochs={epochs}", f"train.eval_every={epochs}",
          *overrides]
  cfg_file = _config_path(config)
  cfg_mem = config_lib.load(cfg_file, sets)
  cfg_sh = config_lib.load(cfg_file, sets + [
      f"data.name={json.dumps(os.fspath(path))}"])
  # The shapes first (loaded raw: the shards' statistics would not
  # broadcast over another dataset's inputs).
  raw = experiment.build_dataset(
      config_lib.load(cfg_file, sets + ["data.standardize=false"]))
  name = cfg_mem["data"]["name"]
  if (len(raw.y_train), raw.x_train.shape[1:]) != (sh.n_train, sh.x_shape):
    raise ConfigError(
        f"shards {os.fspath(path)} hold {sh.n_train} training examples of "
        f"shape {sh.x_shape}, config data.name {name!r} {len(raw.y_train)} "
        f"of {raw.x_train.shape[1:]}; expected the shards of the config's "
        f"dataset (funcnet data convert {name} DIR)")
  del raw
  ds_mem = experiment.build_dataset(cfg_mem, stats=(sh.mean, sh.std))
  ds_sh = experiment.build_dataset(cfg_sh)
  t = cfg_mem["train"]
  b, steps = t["batch_size"], len(ds_mem.y_train) // t["batch_size"]
  k = tr.chunk_length(sh.x_shape, t["dtype"], b, steps, t["chunk_steps"])
  runs, first = [], None
  identical = True
  for r in range(rounds):
    for data, cfg, ds in (("memory", cfg_mem, ds_mem),
                          ("shards", cfg_sh, ds_sh)):
      result = experiment.Setup(cfg, ds=ds).fit()
      h = result.history
      ends = [0.0] + [e["time"] for e in h]
      epoch_s = [b_ - a for a, b_ in zip(ends, ends[1:])]
      run = {"data": data, "round": r,
             "steps_per_s": (epochs - 2) * steps / sum(epoch_s[1:-1]),
             "best_steps_per_s": steps / min(epoch_s[1:-1]),
             "epoch_s": epoch_s}
      if first is None:
        first = result.state.params
      else:
        identical &= _params_equal(first, result.state.params)
      log(json.dumps(run))
      runs.append(run)
  rate = {d: float(np.median([x["steps_per_s"] for x in runs
                              if x["data"] == d]))
          for d in ("memory", "shards")}
  best = {d: max(x["best_steps_per_s"] for x in runs if x["data"] == d)
          for d in ("memory", "shards")}
  cost = _chunk_cost(ds_sh, b, k)
  rec = {"config": config, "dataset": sh.name, "shards": os.fspath(path),
         "epochs": epochs, "steps_per_epoch": steps, "batch_size": b,
         "chunk_steps": k, "chunks_per_epoch": -(-steps // k),
         "runs": runs, "memory_steps_per_s": rate["memory"],
         "shards_steps_per_s": rate["shards"],
         "ratio": rate["shards"] / rate["memory"],
         "memory_best_steps_per_s": best["memory"],
         "shards_best_steps_per_s": best["shards"],
         "best_ratio": best["shards"] / best["memory"],
         "identical": identical,
         "chunk_read_s": cost["read_s"], "chunk_put_s": cost["put_s"],
         "device": step_time.device_description()}
  sh.close()
  return rec


def format_train(rec: dict) -> str:
  rows = ["| data | round | steps/s | fastest epoch, steps/s | "
          "ms per epoch (min, median, max of the timed) |",
          "| --- | ---: | ---: | ---: | ---: |"]
  for r in rec["runs"]:
    ms = [1e3 * f(r["epoch_s"][1:-1]) for f in (np.min, np.median, np.max)]
    rows.append(f"| {r['data']} | {r['round'] + 1} | {r['steps_per_s']:.1f} "
                f"| {r['best_steps_per_s']:.1f} | {ms[0]:.0f}, {ms[1]:.0f}, "
                f"{ms[2]:.0f} |")
  ratio = rec["ratio"]
  rows += [
      "",
      f"{rec['config']} on {rec['dataset']}: {rec['steps_per_epoch']} steps "
      f"of {rec['batch_size']} an epoch, {rec['chunks_per_epoch']} chunk(s) "
      f"of {rec['chunk_steps']} steps; epochs 2..{rec['epochs'] - 1} timed",
      f"steps/s (medians): memory {rec['memory_steps_per_s']:.1f}, shards "
      f"{rec['shards_steps_per_s']:.1f}; shards/memory {ratio:.3f} "
      f"(target >= 0.90: {'met' if ratio >= 0.9 else 'missed'})",
      f"fastest epochs: memory {rec['memory_best_steps_per_s']:.1f}, shards "
      f"{rec['shards_best_steps_per_s']:.1f} steps/s; shards/memory "
      f"{rec['best_ratio']:.3f}",
      f"host cost of one chunk: read {1e3 * rec['chunk_read_s']:.1f} ms, "
      f"to the device {1e3 * rec['chunk_put_s']:.1f} ms",
      f"final params bit-identical across all runs: "
      f"{'yes' if rec['identical'] else 'NO'}"]
  return "\n".join(rows)


# --- peak memory of a run on a set larger than the cap -----------------------

# Runs argv (from sys.argv[2]) in a child and writes the child's own peak
# RSS in bytes to sys.argv[1]. A child of the bench process itself would
# not do: at exec Linux keeps the larger of the old and new high-water
# marks, and RUSAGE_CHILDREN takes the largest child, this wrapper included
# (whose mark at its exec is the bench's RSS). This wrapper's own child
# starts from the wrapper's few MB.
_PEAK = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "  os.execv(sys.argv[2], sys.argv[2:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "  f.write(str(usage.ru_maxrss * 1024))\n"
    "code = os.waitstatus_to_exitcode(status)\n"
    "sys.exit(code if code >= 0 else 128 - code)\n")


def peak_rss(argv: Sequence[str], env=None) -> tuple:
  """``(returncode, peak RSS bytes, wall s, stdout, stderr)`` of ``argv``
  run in a fresh process (see ``_PEAK``)."""
  fd, rss_file = tempfile.mkstemp(suffix=".rss")
  os.close(fd)
  try:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _PEAK, rss_file, *argv],
                       capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    with open(rss_file) as f:
      text = f.read().strip()
    return r.returncode, int(text) if text else 0, wall, r.stdout, r.stderr
  finally:
    os.remove(rss_file)


def _folder_bytes(path) -> int:
  return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


class Generated(NamedTuple):
  """The shape of :func:`memory`'s generated set (one argument, not three,
  so that ``memory`` keeps to issue 22's ten parameters).

  Attributes:
    features: float32 values per training row.
    classes: the number of labels of the linear teacher.
    n_test: rows of the test split.
  """
  features: int = 1024
  classes: int = 10
  n_test: int = 5000


def memory(cap_mb: float = 1024, *, factor: float = 3.0,
           data: Generated = Generated(), batch_size: int = 1000,
           hidden: Sequence[int] = (256,), overrides: Sequence[str] = (),
           workdir=None, keep: bool = False, log: Callable = print) -> dict:
  """One epoch of ``funcnet train`` on a generated set of at least
  ``factor x cap_mb`` MiB of shards; its peak RSS against the cap.

  The set is :func:`funcnet.data.shard_writer.generate`'s linear teacher
  of ``data.classes`` classes (:class:`Generated`): ``n_train`` rows of
  ``data.features`` float32 (a record is ``4 * features + 4`` bytes with
  its int32 label), ``n_train`` the least multiple of ``batch_size`` that
  makes ``factor x cap`` of records, and ``data.n_test`` rows (held in
  memory by the run, as every test split). It is written
  into a new folder of ``workdir`` (default: the system's temporary
  folder) and removed afterwards with the run folder, unless ``keep``.

  The run: ``funcnet train`` with the built-in MLP config, ``data.name``
  the shards, ``model.mlp.hidden = hidden``, ``train.batch_size``, one
  epoch, ``run.plots = false``, its chunks at their default size
  (``train.CHUNK_BYTES``) unless ``overrides`` (further ``KEY=VALUE``,
  e.g. ``train.chunk_steps=1``) say otherwise. The run makes its own
  pre-flight (a refusal is an error here); its estimate is reported.

  Returns:
    ``{"cap_bytes", "n_train", "n_test", "features", "dataset_bytes",
    "generate_s", "peak_rss_bytes", "under_cap", "wall_s", "epoch_s",
    "examples_per_s", "steps", "chunk_steps", "preflight_bytes",
    "test_accuracy", "device"}``.
  """
  from funcnet import config as config_lib, experiment, train as tr
  from funcnet.bench import step_time
  from funcnet.run import preflight
  features, classes, n_test = data
  cap = int(cap_mb * 2**20)
  record = 4 * features + 4
  n_train = -(-math.ceil(factor * cap / record) // batch_size) * batch_size
  root = tempfile.mkdtemp(prefix="funcnet-bench-memory-", dir=workdir)
  data_dir, run_dir = os.path.join(root, "shards"), os.path.join(root, "run")
  try:
    t0 = time.perf_counter()
    meta = shard_writer.generate(data_dir, n_train, n_test, (features,), classes)
    generate_s = time.perf_counter() - t0
    size = _folder_bytes(data_dir)
    log(json.dumps({"generated": data_dir, "bytes": size,
                    "n_train": n_train, "seconds": round(generate_s, 1)}))
    sets = [f"data.name={json.dumps(data_dir)}",
            f"model.mlp.hidden={list(hidden)}",
            f"train.batch_size={batch_size}", "train.epochs=1",
            "run.plots=false", *overrides]
    # The pre-flight's estimate, as the run will make it (shapes only).
    setup = experiment.Setup(config_lib.load(None, sets))
    est = preflight.estimate(setup.cfg, setup.model, setup.ds,
                             setup.optimizer)["total"]
    steps = n_train // batch_size
    k = tr.chunk_length((features,), "float32", batch_size, steps,
                        setup.cfg["train"]["chunk_steps"])
    del setup
    argv = [sys.executable, "-m", "funcnet.cli", "train", "--progress",
            "never", "--out", run_dir]
    for s in sets:
      argv += ["--set", s]
    code, rss, wall, out, err = peak_rss(argv)
    if code != 0:
      raise RuntimeError(f"funcnet train failed ({code}): "
                         f"{err.strip()[-800:]}")
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
      epoch = json.loads(f.readline())
    rec = {"cap_bytes": cap, "n_train": n_train, "n_test": n_test,
           "features": features, "batch_size": batch_size,
           "hidden": list(hidden), "dataset_bytes": size,
           "dataset_over_cap": size / cap, "generate_s": generate_s,
           "peak_rss_bytes": rss, "under_cap": rss < cap, "wall_s": wall,
           "epoch_s": epoch["time"],
           "examples_per_s": steps * batch_size / epoch["time"],
           "steps": steps, "chunk_steps": k, "preflight_bytes": est,
           "test_accuracy": epoch.get("test_accuracy"),
           "shards_bytes_meta": meta["bytes"],
           "device": step_time.device_description()}
    log(json.dumps(rec))
    return rec
  finally:
    if not keep:
      shutil.rmtree(root, ignore_errors=True)


def format_memory(rec: dict) -> str:
  mib = lambda n: f"{n / 2**20:,.0f} MiB"
  return "\n".join([
      "| cap | dataset on disk | x cap | peak RSS | under cap | pre-flight "
      "estimate | examples/s | epoch s | wall s |",
      "| ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
      f"| {mib(rec['cap_bytes'])} | {mib(rec['dataset_bytes'])} | "
      f"{rec['dataset_over_cap']:.2f} | {mib(rec['peak_rss_bytes'])} | "
      f"{'yes' if rec['under_cap'] else 'NO'} | "
      f"{mib(rec['preflight_bytes'])} | {rec['examples_per_s']:,.0f} | "
      f"{rec['epoch_s']:.1f} | {rec['wall_s']:.1f} |",
      "",
      f"{rec['n_train']:,} train x {rec['features']} float32 (+ "
      f"{rec['n_test']:,} test), generated in {rec['generate_s']:.0f} s; MLP "
      f"{rec['hidden']}, batch {rec['batch_size']}, {rec['steps']} steps in "
      f"chunks of {rec['chunk_steps']}; test accuracy "
      f"{rec['test_accuracy'] or float('nan'):.3f}"])
