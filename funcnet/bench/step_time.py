"""Benchmarks: how fast a training step runs, against the device's matmul peak.

``run(...)`` times one SGD step of a sigmoid MLP (``mse``, plain
:func:`funcnet.optimizers.sgd`) for each size, gradient source and mode:

  loop   a Python loop of jitted steps, one dispatch per step:
           params, state, C = step(params, state, x_s, y_s)   (params, state donated)
  scan   :func:`funcnet.train.fit` itself, the loop users run: one jitted
         :func:`funcnet.train.make_epoch` call per epoch of ``steps``
         mini-batches (a loop inside XLA), the next epoch's batches cut on
         the host meanwhile, and one host read of the epoch's metrics;
         with ``norms=False`` (loss, param norm and the NaN guard only)
  scan+norms  the same with ``fit``'s default metrics, which add the
         per-layer gradient norms and the update norm of every step

and the peak it is measured against: a chain of square ``n x n`` matmuls
``x := x @ Q`` (``Q`` orthogonal, so values neither overflow nor go
subnormal) in one jitted call on the same device and dtype.

FLOPs of one training step of an MLP with widths ``[n_0, ..., n_L]`` on a
batch of ``m`` rows (the usual convention, 2 FLOPs per multiply-add):

  forward   z_l = a_{l-1} @ W_l              2 m n_{l-1} n_l
  backward  dC/dW_l = a_{l-1}.T @ delta_l     2 m n_{l-1} n_l
            delta_{l-1} = delta_l @ W_l.T     2 m n_{l-1} n_l
  step      F = 6 m sum_l n_{l-1} n_l

Neither gradient source computes ``delta_0`` (nothing needs ``dC/dx``), so the
work actually done is ``F - 2 m n_0 n_1``; ``F`` is kept because it is the
number everyone quotes. Elementwise work (activations, the update) is
O(m sum n_l + sum n_{l-1} n_l) and is not counted.

Timing (:func:`measure`): the first call compiles and is discarded; the
number of units per repeat is then raised until one repeat takes at least
``min_time`` seconds (those calls are warm-up too); then ``repeats`` repeats
are timed, each ending in ``block_until_ready`` on the outputs it produced,
so every step's result is consumed and none of the measured work can be
dropped as dead code. Reported: the median seconds per unit and the fastest
and slowest repeat.
"""

import math
import os
import platform
import resource
import time
import types
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnet import optimizers, train
from funcnet.errors import ConfigError
from funcnet.models import mlp


class Size(NamedTuple):
  """A benchmark problem: MLP widths, batch, and mini-batches per scanned epoch."""
  sizes: tuple
  batch: int
  steps: int


# small and large are the sizes of issue 7; tiny exists to test the command
# in a second; medium sits between (dispatch and arithmetic both matter).
SIZES = {
    "tiny": Size((16, 8, 4), 8, 64),
    "small": Size((64, 32, 10), 32, 1000),
    "medium": Size((784, 256, 256, 10), 128, 64),
    "large": Size((784, 1024, 1024, 10), 512, 16),
}

GRADS = ("manual", "autodiff")
MODES = ("loop", "scan", "scan+norms")
LOSS = "mse"
LEARNING_RATE = 0.01

# The width and batch sweep around "large": [784, w, w, 10] at batch 512,
# and [784, 1024, 1024, 10] at each batch.
SWEEP_WIDTHS = (128, 256, 512, 1024, 2048)
SWEEP_BATCHES = (32, 64, 128, 256, 512, 1024)


class Sweep(NamedTuple):
  """The grid of :func:`run`'s width and batch sweep: ``[784, w, w, 10]``
  at batch 512 for each ``w`` in ``widths``, ``[784, 1024, 1024, 10]`` at
  each batch in ``batches``. ``Sweep()`` is the default grid."""
  widths: Sequence[int] = SWEEP_WIDTHS
  batches: Sequence[int] = SWEEP_BATCHES


def step_flops(sizes: Sequence[int], batch: int) -> float:
  """``F = 6 m sum_l n_{l-1} n_l``, the FLOPs of one training step."""
  return 6.0 * batch * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


class Timing(NamedTuple):
  """Seconds per unit of work: median, fastest and slowest of the repeats."""
  median: float
  low: float
  high: float
  units: int
  repeats: int


def _elapsed(run: Callable[[int], None], k: int) -> float:
  t0 = time.perf_counter()
  run(k)
  return time.perf_counter() - t0


def measure(run: Callable[[int], None], *, repeats: int = 5,
            min_time: float = 1.0) -> Timing:
  """Times ``run(k)``, which does ``k`` units of work and waits for them.

  Args:
    run: does ``k`` units and returns only after ``block_until_ready`` on
      everything they produced.
    repeats: timed repeats (after warm-up).
    min_time: each timed repeat runs enough units to take at least this.
  """
  run(1)                                  # compile; first touch of buffers
  k = 1
  while True:                             # calibration, also warm-up
    t = _elapsed(run, k)
    if t >= min_time:
      break
    # Aim 20% over min_time so that a slightly faster repeat still clears it.
    k = max(k + 1, min(k * 10, math.ceil(k * 1.2 * min_time / max(t, 1e-9))))
  per_unit = sorted(_elapsed(run, k) / k for _ in range(repeats))
  return Timing(float(np.median(per_unit)), per_unit[0], per_unit[-1], k,
                repeats)


# ---------------------------------------------------------------------------
# What is timed.


def matmul_peak(n: int, dtype=jnp.float32, *, chain: int = 8, repeats: int = 5,
                min_time: float = 1.0) -> dict:
  """GFLOP/s of ``n x n`` matmuls on the default device.

  One jitted call runs ``x := x @ Q`` ``chain`` times; each product feeds the
  next, so XLA can neither hoist nor drop any of them, and the chain makes
  one dispatch cheap next to the arithmetic even on a GPU.

  Returns:
    ``{"n", "gflops"`` (median), ``"gflops_low", "gflops_high"}`` (slowest
    and fastest repeat).
  """
  kx, kq = jax.random.split(jax.random.key(0))
  q, _ = jnp.linalg.qr(jax.random.normal(kq, (n, n), jnp.float32))
  q = q.astype(dtype)
  state = [jax.random.normal(kx, (n, n), jnp.float32).astype(dtype)]

  @jax.jit
  def product(x, q):
    return jax.lax.fori_loop(0, chain, lambda _, x: x @ q, x)

  def run(k):
    x = state[0]
    for _ in range(k):
      x = product(x, q)
    state[0] = x.block_until_ready()

  t = measure(run, repeats=repeats, min_time=min_time)
  flops = chain * 2.0 * n ** 3
  return {"n": n, "gflops": flops / t.median / 1e9,
          "gflops_low": flops / t.high / 1e9, "gflops_high": flops / t.low / 1e9}


def make_problem(size: Size, dtype=jnp.float32, key=None):
  """The model, and ``(x, y)`` of ``batch * steps`` random examples.

  ``x: (n, n_0)`` standard normal, ``y: (n, n_L)`` one-hot rows of random
  labels (``mse`` targets), both on the default device in ``dtype``.
  """
  key = jax.random.key(0) if key is None else key
  model = mlp(size.sizes, activation="sigmoid", output_activation="sigmoid",
              init="xavier")
  n = size.batch * size.steps
  kx, ky = jax.random.split(key)
  x = jax.random.normal(kx, (n, size.sizes[0]), jnp.float32).astype(dtype)
  labels = jax.random.randint(ky, (n,), 0, size.sizes[-1])
  y = jax.nn.one_hot(labels, size.sizes[-1], dtype=dtype)
  return model, x, y


def make_step(model, loss, optimizer, grads: str):
  """One jitted training step, what a hand-written Python loop would call.

  ``step(params, opt_state, x, y) -> (params, opt_state, C)`` with ``params``
  and ``opt_state`` donated; the same gradient function and update as one
  iteration of :func:`funcnet.train.make_epoch`.
  """
  vg = train.gradient_fn(model, loss, grads)

  def step(params, opt_state, x, y):
    c, g = vg(params, x, y)
    updates, opt_state = optimizer.update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, c

  return jax.jit(step, donate_argnums=(0, 1))


def _init(model, optimizer, dtype):
  params = model.init(jax.random.key(1), dtype)
  return params, optimizer.init(params)


def time_loop(size: Size, grads: str, dtype=jnp.float32, **kw) -> Timing:
  """Seconds per step of a Python loop of jitted steps (``make_step``)."""
  model, x, y = make_problem(size, dtype)
  optimizer = optimizers.sgd(LEARNING_RATE)
  step = make_step(model, LOSS, optimizer, grads)
  b = size.batch
  # Mini-batches sliced once, up front: the loop times dispatch and compute,
  # not the slicing (which would be one more dispatch per step).
  batches = [(x[i * b:(i + 1) * b], y[i * b:(i + 1) * b])
             for i in range(min(size.steps, 16))]
  state = list(_init(model, optimizer, dtype))

  def run(k):
    params, opt_state = state
    c = None
    for i in range(k):
      xs, ys = batches[i % len(batches)]
      params, opt_state, c = step(params, opt_state, xs, ys)
    jax.block_until_ready((params, opt_state, c))
    state[:] = params, opt_state

  return measure(run, **kw)


def time_scan(size: Size, grads: str, dtype=jnp.float32, *, norms: bool = True,
              repeats: int = 5, min_time: float = 1.0) -> Timing:
  """Seconds per step of :func:`funcnet.train.fit`, the loop users run.

  ``fit`` runs one jitted ``make_epoch`` call per epoch of ``size.steps``
  mini-batches, cuts the next epoch's batches on the host meanwhile, and
  reads the epoch's metrics back; its ``callback`` stamps the end of each
  epoch. The first epoch (compilation) is dropped, epochs are counted until
  ``min_time`` has passed (warm-up, and the calibration of ``k``), then
  ``repeats`` groups of ``k`` epochs are timed and ``fit`` is stopped.
  """
  model, x, y = make_problem(size, dtype)
  data = types.SimpleNamespace(x_train=np.asarray(x), y_train=np.asarray(y),
                               x_test=None, y_test=None, task="regression")
  clock = {"start": None, "count": 0, "k": None}
  per_epoch = []

  def on_epoch(record, state, status):
    now = time.perf_counter()
    if clock["start"] is None:            # epoch 1 compiled: start warm-up
      clock["start"] = now
      return False
    clock["count"] += 1
    elapsed = now - clock["start"]
    if clock["k"] is None:                # warm-up and calibration
      if elapsed >= min_time:
        clock["k"] = max(1, math.ceil(1.2 * clock["count"] * min_time / elapsed))
        clock["start"], clock["count"] = now, 0
      return False
    if clock["count"] == clock["k"]:
      per_epoch.append(elapsed / clock["k"])
      clock["start"], clock["count"] = now, 0
    return len(per_epoch) >= repeats

  res = train.fit(model, LOSS, optimizers.sgd(LEARNING_RATE), data,
                  options=train.FitOptions(
                      2 ** 62, size.batch, jax.random.key(2), grads=grads,
                      dtype=dtype, norms=norms),
                  callbacks=train.Callbacks(on_epoch))
  if len(per_epoch) < repeats:
    raise RuntimeError(f"fit stopped before the timing ended: {res.reason}")
  t = sorted(e / size.steps for e in per_epoch)
  return Timing(float(np.median(t)), t[0], t[-1], clock["k"] * size.steps,
                repeats)


def memory_report(size: Size, grads: str = "autodiff",
                  dtype=jnp.float32) -> dict:
  """Memory of ``size``'s scanned epoch: XLA's plan and what the device saw.

  ``xla_*`` come from the compiled epoch's memory analysis (arguments:
  params, state and the epoch's data; temp: everything else it allocates).
  ``peak_bytes`` is the device's ``peak_bytes_in_use`` on GPU/TPU; on CPU,
  where the device is host memory, it is the process's peak resident set
  (``ru_maxrss``), which includes the Python and JAX runtime.
  """
  model, x, y = make_problem(size, dtype)
  optimizer = optimizers.sgd(LEARNING_RATE)
  params, opt_state = _init(model, optimizer, dtype)
  epoch = train.make_epoch(model, LOSS, optimizer, size.batch, grads,
                           prebatched=True)
  rows = (size.steps, size.batch)
  x, y = x.reshape(rows + x.shape[1:]), y.reshape(rows + y.shape[1:])
  stats = epoch.lower(params, opt_state, jax.random.key(0), x, y).compile() \
      .memory_analysis()
  out = {"params_bytes": sum(p.nbytes for p in jax.tree_util.tree_leaves(params))}
  if stats is not None:
    out.update(xla_argument_bytes=int(stats.argument_size_in_bytes),
               xla_output_bytes=int(stats.output_size_in_bytes),
               xla_alias_bytes=int(stats.alias_size_in_bytes),
               xla_temp_bytes=int(stats.temp_size_in_bytes))
  device = jax.devices()[0]
  params, opt_state, m = epoch(params, opt_state, jax.random.key(0), x, y)
  jax.block_until_ready((params, m))
  dev = device.memory_stats() if hasattr(device, "memory_stats") else None
  if dev and "peak_bytes_in_use" in dev:
    out["peak_bytes"] = int(dev["peak_bytes_in_use"])
    out["peak_what"] = f"{device.platform} peak_bytes_in_use"
  else:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["peak_bytes"] = int(rss * (1 if platform.system() == "Darwin" else 1024))
    out["peak_what"] = "host peak RSS of the process"
  return out


# ---------------------------------------------------------------------------
# The whole benchmark.


def device_description() -> str:
  """The device in words, e.g. ``cpu: 2 cores, Intel(R) Xeon(R) Processor``."""
  d = jax.devices()[0]
  if d.platform != "cpu":
    return f"{d.platform}: {jax.device_count()} x {d.device_kind}"
  model = platform.processor() or ""
  try:
    with open("/proc/cpuinfo") as f:
      model = next(l.split(":", 1)[1].strip() for l in f
                   if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return f"cpu: {os.cpu_count()} cores, {model}".rstrip(", ")


def default_dtypes() -> tuple:
  """float32 everywhere, and bfloat16 too on a GPU."""
  return ("float32", "bfloat16") if jax.devices()[0].platform == "gpu" \
      else ("float32",)


def _parse_size(name: str) -> tuple[str, Size]:
  if name in SIZES:
    return name, SIZES[name]
  raise ConfigError(f"bench size {name!r}: expected one of "
                    f"{', '.join(SIZES)}")


def _against_peak(block: list, before: float, after: float) -> None:
  """Sets each record of a block against the mean of the peaks around it."""
  for r in block:
    r["peak_gflops"] = (before + after) / 2
    r["fraction_of_peak"] = r["gflops"] / r["peak_gflops"]


def _sweep_block(sweep: Sweep, dt_name: str, *, repeats: int,
                 min_time: float, log: Callable) -> list:
  """One dtype's sweep rows ``{"vary", "sizes", "batch", "flops",
  "ms_per_step", "gflops", "dtype"}``: the scanned autodiff step at each
  point of ``sweep``, with half the repeats (at least 3) and half the time
  of the main records; :func:`run` sets them against the peak."""
  dtype = jnp.dtype(dt_name)
  skw = {"repeats": max(3, repeats // 2), "min_time": min_time / 2}
  points = [("width", (784, w, w, 10), 512) for w in sweep.widths]
  points += [("batch", (784, 1024, 1024, 10), b) for b in sweep.batches]
  block = []
  for vary, sizes_, batch in points:
    # Enough mini-batches for ~1 MiB of x per epoch at least.
    steps = max(4, min(64, 2 ** 20 // (4 * batch * sizes_[0]) + 1))
    t = time_scan(Size(sizes_, batch, steps), "autodiff", dtype,
                  norms=False, **skw)
    flops = step_flops(sizes_, batch)
    block.append({
        "vary": vary, "sizes": list(sizes_), "batch": batch, "flops": flops,
        "ms_per_step": 1e3 * t.median, "gflops": flops / t.median / 1e9,
        "dtype": dt_name})
    log(f"sweep {vary} {list(sizes_)} batch {batch}: "
        f"{1e3 * t.median:.3f} ms/step")
  return block


def run(sizes=("small", "large"), grads=GRADS, modes=MODES, dtypes=None, *,
        repeats: int = 5, min_time: float = 1.0, peak_size: Optional[int] = None,
        sweep: Optional[Sweep] = None, log: Callable = print) -> dict:
  """Runs the benchmark; returns ``{"device", "records", "memory", "sweep"}``.

  Args:
    sizes: names in :data:`SIZES`.
    grads: ``"manual"`` and/or ``"autodiff"``.
    modes: of :data:`MODES`: ``"loop"``, ``"scan"`` (``fit`` with
      ``norms=False``), ``"scan+norms"`` (``fit``'s default metrics).
    dtypes: float dtype names (default: :func:`default_dtypes`).
    repeats, min_time: see :func:`measure`.
    peak_size: ``n`` of the peak matmul (default 2048 on CPU, 8192 else).
    sweep: a :class:`Sweep` (``Sweep()``: the default grid) to also time
      the scanned autodiff step of ``[784, w, w, 10]`` at batch 512 for
      each ``w`` in ``sweep.widths`` and of ``[784, 1024, 1024, 10]`` at
      each batch in ``sweep.batches``; ``None``: no sweep.
    log: called with a line of progress as each measurement ends.

  Returns:
    ``records``: one dict per (dtype, size, grads, mode) with ``size, grads,
    mode, dtype, batch, steps_per_s`` (median), ``steps_per_s_low/high``
    (slowest and fastest repeat), ``ms_per_step, gflops, peak_gflops``
    (the mean of the peaks measured just before and after the record's
    size), ``fraction_of_peak``. ``peaks``: per dtype, the median, range
    and list of the peak measurements. ``memory``: :func:`memory_report` of the largest
    size. ``sweep``: rows ``{"vary", "sizes", "batch", "flops",
    "ms_per_step", "gflops", "fraction_of_peak", "dtype"}``.
  """
  named = [_parse_size(s) for s in sizes]
  for g in grads:
    if g not in GRADS:
      raise ConfigError(f"bench grads {g!r}: expected one of {', '.join(GRADS)}")
  for m in modes:
    if m not in MODES:
      raise ConfigError(f"bench mode {m!r}: expected one of {', '.join(MODES)}")
  dtypes = tuple(dtypes or default_dtypes())
  platform_name = jax.devices()[0].platform
  peak_size = peak_size or (2048 if platform_name == "cpu" else 8192)
  kw = {"repeats": repeats, "min_time": min_time}
  # Memory first, while the process's peak (RSS on a CPU) is still this
  # epoch's and not the peak matmul's.
  biggest = max(named, key=lambda s: step_flops(s[1].sizes, s[1].batch))
  memory = {"size": biggest[0], **memory_report(biggest[1])}
  records, peaks, sweep_rows = [], {}, []
  for dt_name in dtypes:
    dtype = jnp.dtype(dt_name)
    # The peak is measured before and after every block of measurements,
    # and each block is set against the mean of the two: a shared machine's
    # speed drifts over minutes, and a peak taken once at the start would
    # turn that drift into a fraction of peak that is not the code's.
    measured = []

    def peak_now():
      p = matmul_peak(peak_size, dtype, **kw)
      measured.append(p)
      log(f"peak  {dt_name} {peak_size}^3 matmul: {p['gflops']:.1f} GFLOP/s")
      return p["gflops"]

    before = peak_now()
    for name, size in named:
      flops = step_flops(size.sizes, size.batch)
      block = []
      for g in grads:
        for mode in modes:
          if mode == "loop":
            t = time_loop(size, g, dtype, **kw)
          else:
            t = time_scan(size, g, dtype, norms=mode == "scan+norms", **kw)
          gflops = flops / t.median / 1e9
          block.append({
              "size": name, "grads": g, "mode": mode, "dtype": dt_name,
              "batch": size.batch, "layer_sizes": list(size.sizes),
              "steps_per_s": 1.0 / t.median, "steps_per_s_low": 1.0 / t.high,
              "steps_per_s_high": 1.0 / t.low, "ms_per_step": 1e3 * t.median,
              "gflops": gflops})
          log(f"{name:6s} {g:8s} {mode:10s} {dt_name}: {1 / t.median:,.0f} "
              f"steps/s, {gflops:.1f} GFLOP/s")
      after = peak_now()
      _against_peak(block, before, after)
      records += block
      before = after
    if sweep is not None:
      block = _sweep_block(sweep, dt_name, log=log, **kw)
      after = peak_now()
      _against_peak(block, before, after)
      sweep_rows += block
    g = [p["gflops"] for p in measured]
    peaks[dt_name] = {"n": peak_size, "gflops": float(np.median(g)),
                      "gflops_low": min(p["gflops_low"] for p in measured),
                      "gflops_high": max(p["gflops_high"] for p in measured),
                      "measured": g}
  return {"device": device_description(), "jax": jax.__version__,
          "repeats": repeats, "min_time": min_time, "peaks": peaks,
          "records": records, "memory": memory, "sweep": sweep_rows}


# ---------------------------------------------------------------------------
# Reports.


def _si(x: float) -> str:
  return f"{x / 1e3:.1f}k" if x >= 1e4 else f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def format_table(result: dict) -> str:
  """The records as a text table, then peaks, ratios and memory."""
  lines = [f"funcnet bench: {result['device']}, jax {result['jax']}; "
           f"{result['repeats']} repeats of >= {result['min_time']:g} s after "
           "warm-up; median [slowest, fastest]",
           "",
           f"{'size':7s}{'dtype':10s}{'grads':9s}{'mode':11s}"
           f"{'steps/s':>26s}{'ms/step':>10s}{'GFLOP/s':>9s}{'of peak':>9s}"]
  for r in result["records"]:
    sps = (f"{_si(r['steps_per_s'])} [{_si(r['steps_per_s_low'])}, "
           f"{_si(r['steps_per_s_high'])}]")
    lines.append(
        f"{r['size']:7s}{r['dtype']:10s}{r['grads']:9s}{r['mode']:11s}"
        f"{sps:>26s}{r['ms_per_step']:10.4f}{r['gflops']:9.1f}"
        f"{100 * r['fraction_of_peak']:8.1f}%")
  lines.append("")
  for dt, p in result["peaks"].items():
    lines.append(
        f"peak: {p['n']}x{p['n']} {dt} matmul {p['gflops']:.1f} GFLOP/s "
        f"[{p['gflops_low']:.1f}, {p['gflops_high']:.1f}]; measured before and "
        f"after each block ({', '.join(f'{v:.0f}' for v in p['measured'])}), "
        "each block against the mean of its two")
  by = {(r["size"], r["dtype"], r["grads"], r["mode"]): r["steps_per_s"]
        for r in result["records"]}
  def ratios(what, pairs):
    parts = [f"{name} {by[a] / by[b]:.3f}" for name, a, b in pairs
             if a in by and b in by]
    return [f"{what}: " + ", ".join(parts)] if parts else []

  for size, dt in dict.fromkeys((r["size"], r["dtype"]) for r in result["records"]):
    key = lambda g, m: (size, dt, g, m)
    lines += ratios(f"{size} {dt} scan/loop", [
        (g, key(g, "scan"), key(g, "loop")) for g in GRADS])
    lines += ratios(f"{size} {dt} manual/autodiff", [
        (m, key("manual", m), key("autodiff", m)) for m in MODES])
    lines += ratios(f"{size} {dt} (scan+norms)/scan", [
        (g, key(g, "scan+norms"), key(g, "scan")) for g in GRADS])
  mem = result.get("memory")
  if mem:
    mib = 2.0 ** 20
    xla = ""
    if "xla_argument_bytes" in mem:
      xla = (f"; XLA plan of the scanned epoch: arguments "
             f"{mem['xla_argument_bytes'] / mib:.1f} MiB (params, state, data), "
             f"temporaries {mem['xla_temp_bytes'] / mib:.1f} MiB")
    lines.append(f"memory ({mem['size']}): params {mem['params_bytes'] / mib:.1f} MiB"
                 f"{xla}; {mem['peak_what']} {mem['peak_bytes'] / mib:.0f} MiB")
  if result.get("sweep"):
    lines += ["", "sweep (scan, autodiff): time per step against width and batch",
              f"{'vary':7s}{'dtype':10s}{'sizes':24s}{'batch':>6s}"
              f"{'GFLOP/step':>11s}{'ms/step':>10s}{'GFLOP/s':>9s}{'of peak':>9s}"]
    for r in result["sweep"]:
      lines.append(f"{r['vary']:7s}{r['dtype']:10s}{str(r['sizes']):24s}"
                   f"{r['batch']:6d}{r['flops'] / 1e9:11.4f}{r['ms_per_step']:10.3f}"
                   f"{r['gflops']:9.1f}{100 * r['fraction_of_peak']:8.1f}%")
  return "\n".join(lines)


def records_json(result: dict) -> list:
  """The list written by ``--json``: one record per measured step."""
  return [dict(r, device=result["device"]) for r in result["records"]]


def plot_sweep(result: dict, path: str) -> str:
  """PNG of time per step against FLOPs per step (log-log), with the peak line."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  for dt in result["peaks"]:
    rows = [r for r in result["sweep"] if r["dtype"] == dt]
    if not rows:
      continue
    for vary, marker in (("width", "o"), ("batch", "s")):
      pts = sorted((r["flops"], r["ms_per_step"]) for r in rows
                   if r["vary"] == vary)
      if pts:
        ax.plot(*zip(*pts), marker=marker,
                label=f"{dt}: [784, w, w, 10] at batch 512" if vary == "width"
                else f"{dt}: [784, 1024, 1024, 10], batch varied")
    f = np.geomspace(min(r["flops"] for r in rows),
                     max(r["flops"] for r in rows), 20)
    peak = rows[0]["peak_gflops"]      # measured around the sweep
    ax.plot(f, 1e3 * f / (peak * 1e9), "k--", lw=1,
            label=f"{dt} matmul peak {peak:.0f} GFLOP/s")
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("FLOPs per step (6 m sum n_in n_out)")
  ax.set_ylabel("ms per step")
  ax.set_title(f"funcnet train.fit step (autodiff, norms=False), sigmoid "
               f"MLP\n{result['device']}",
               fontsize=9)
  ax.legend(fontsize=8)
  ax.grid(True, which="both", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
