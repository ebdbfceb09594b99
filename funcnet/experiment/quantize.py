"""``funcnet quantize``: a trained run's weights as int8, written as a
quantized run folder, with accuracy, size and speed before and after.

  quantize_run(run, bits=8, out=None)   -> the report (also quantize.json)
  is_quantized(run)                     whether a folder holds quantized.npz
  load_quantized(run)                   a rundir.Trained whose model reads
                                        the int8 params (funcnet eval, load_run)

A quantized run folder holds what evaluation needs and nothing to train
with: ``config.json``, ``model.json`` and ``stats.npz`` as the run's own,
``quantized.npz`` (the int8 codes and float32 scales of every weight, the
float biases and norms: :func:`funcnet.quantize.weights.save`) and
``quantize.json`` (the report). No optimizer state and no checkpoint: its
evaluation runs on the int8 arrays through
:func:`funcnet.quantize.weights.model_on`.

Sizes compare like with like: the float params and the quantized params,
each as one uncompressed ``.npz`` of the same keys (the original checkpoint
also holds the optimizer's state, which a deployed model drops). Speed is
the median wall time of the jitted evaluation of the whole test split
(compiled first, ``repeats`` calls each, float and int8 interleaved so a
busy machine slows both alike).
"""

import io
import os
import time

import numpy as np

from funcnet import tasks, train
from funcnet.errors import ConfigError
from funcnet.experiment.setup import build_dataset
from funcnet.quantize import activations, weights
from funcnet.run import rundir
from funcnet.train.evaluate import to_host

QUANTIZED = "quantized.npz"
REPORT = "quantize.json"
MODES = ("weights", "weights+activations")
ACT_SCALES = "activations|scale"  # the calibrated scales in quantized.npz
CALIBRATION = (8, 128)  # training batches x examples each


def is_quantized(run) -> bool:
  """Whether ``run`` is a folder written by :func:`quantize_run`."""
  return os.path.isfile(os.path.join(os.fspath(run), QUANTIZED))


def load_quantized(run, what: str = "--run") -> rundir.Trained:
  """A quantized run folder as a :class:`funcnet.run.rundir.Trained`: its
  ``model`` reads ``params``, the quantized pytree (int8 ``QWeight`` codes
  and scales, float biases), ``epoch`` the source run's checkpoint's."""
  import jax
  import jax.numpy as jnp
  run = os.fspath(run)
  cfg = rundir.read_config(run, what=what)
  model = rundir.read_model(run, what)
  dtype = jnp.dtype(cfg["train"]["dtype"])
  template = jax.eval_shape(lambda k: model.init(k, dtype), jax.random.key(0))
  path = os.path.join(run, QUANTIZED)
  qparams = weights.load(path, template)
  with np.load(path) as f:
    act = f[ACT_SCALES] if ACT_SCALES in f.files else None
  qmodel = (weights.model_on(model, dtype) if act is None
            else activations.model_on(model, act, dtype))
  report = _read_report(run)
  return rundir.Trained(run, cfg, qmodel, qparams,
                        int(report.get("epoch", 0)), rundir.read_stats(run))


def _read_report(run: str) -> dict:
  import json
  try:
    with open(os.path.join(run, REPORT)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def check_request(run, bits: int, mode: str, out) -> str:
  """The output folder, or a one-line ConfigError for a bad request, before
  anything is loaded: bits, mode, a run that is not a trained run folder,
  an output folder that is the run itself."""
  weights.check_bits(bits)
  if mode not in MODES:
    raise ConfigError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
  run = os.fspath(run)
  rundir.read_config(run, what="--run")  # the folder and its config exist
  if is_quantized(run):
    raise ConfigError(f"--run {run!r} is a quantized run already; expected "
                      "the float run funcnet train wrote")
  out = os.fspath(out) if out else run.rstrip("/") + f"-int{bits}"
  if os.path.abspath(out) == os.path.abspath(run):
    raise ConfigError(f"--out {out!r} is the run folder itself; expected a "
                      "new folder for the quantized run")
  if (os.path.exists(os.path.join(out, "config.json"))
      and not is_quantized(out)):  # a quantized run is rewritten, a run never
    raise ConfigError(f"--out {out!r} holds a run; expected a new folder or "
                      "a quantized run to replace")
  return out


def _npz_bytes(arrays: dict) -> int:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  return buf.getbuffer().nbytes


def _float_npz_bytes(params) -> int:
  """The float params as :func:`weights.save` would store them unquantized."""
  import jax
  flat = jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]
  return _npz_bytes({jax.tree_util.keystr(p): np.asarray(a) for p, a in flat})


def _calibrate(model, qparams, ds, dtype) -> np.ndarray:
  """Per-tensor activation scales from the first ``CALIBRATION`` training
  batches (standardised as trained)."""
  n, b = CALIBRATION
  x = np.asarray(ds.x_train[:n * b])
  return activations.calibrate(
      model, qparams, [x[i:i + b].astype(dtype) for i in range(0, len(x), b)],
      dtype)


def _nbytes(tree) -> int:
  """The bytes of the arrays themselves (no file format around them)."""
  import jax
  return int(sum(np.asarray(a).nbytes for a in jax.tree_util.tree_leaves(tree)))


def _timed(fns, args_of, repeats: int) -> list:
  """Median seconds of each compiled ``fns[i](*args_of[i])``, interleaved."""
  import jax
  for f, a in zip(fns, args_of):
    jax.block_until_ready(f(*a))  # compile and warm up
  times = [[] for _ in fns]
  for _ in range(repeats):
    for t, f, a in zip(times, fns, args_of):
      t0 = time.perf_counter()
      jax.block_until_ready(f(*a))
      t.append(time.perf_counter() - t0)
  return [float(np.median(t)) for t in times]


def quantize_run(run, bits: int = 8, mode: str = "weights", out=None,
                 repeats: int = 20, log=print) -> dict:
  """Quantizes the newest intact checkpoint of ``run`` into the folder
  ``out`` (default ``<run>-int<bits>``) and returns the report.

  Report keys: ``run``, ``out``, ``epoch``, ``bits``, ``mode``,
  ``float`` / ``quantized`` (the test metrics, ``test_<metric>``), the
  headline's ``delta`` (quantized - float), ``params_bytes`` (float and
  quantized ``.npz`` sizes and their ``ratio``), ``array_bytes`` (the
  arrays' own bytes, no container), ``weights_quantized``
  (count of arrays) and ``eval_seconds`` (float, quantized: median seconds
  per evaluation of the test split) with ``test_examples``.
  """
  import jax.numpy as jnp
  out = check_request(run, bits, mode, out)
  trained = rundir.load_trained(os.fspath(run), "--run")
  cfg, model = trained.cfg, trained.model
  dtype = jnp.dtype(cfg["train"]["dtype"])
  ds = build_dataset(cfg, trained.stats)
  x, y = train.as_arrays(ds.x_test, ds.y_test, dtype)
  qparams = weights.quantize(trained.params, bits)
  act = _calibrate(model, qparams, ds, dtype) if mode != "weights" else None
  qmodel = (weights.model_on(model, dtype) if act is None
            else activations.model_on(model, act, dtype))
  ev_f = train.make_evaluate(model, cfg["train"]["loss"], ds.task)
  ev_q = train.make_evaluate(qmodel, cfg["train"]["loss"], ds.task)
  m_f, m_q = (to_host(e(p, x, y)) for e, p in
              ((ev_f, trained.params), (ev_q, qparams)))
  t_f, t_q = _timed((ev_f, ev_q), ((trained.params, x, y), (qparams, x, y)),
                    repeats)
  os.makedirs(out, exist_ok=True)
  rundir.write_config(out, cfg)
  rundir.write_model(out, model)
  rundir.write_stats(out, trained.stats)
  weights.save(os.path.join(out, QUANTIZED), qparams,
               {} if act is None else {ACT_SCALES: act})
  head, _ = tasks.headline(ds.task)
  key = head[len("test_"):]
  n_q = sum(isinstance(a, weights.QWeight) for a in _leaves(qparams))
  size_f = _float_npz_bytes(trained.params)
  size_q = os.path.getsize(os.path.join(out, QUANTIZED))
  report = {
      "run": os.fspath(run), "out": out, "epoch": trained.epoch, "bits": bits,
      "mode": mode, "headline": head,
      "float": {f"test_{k}": v for k, v in m_f.items()},
      "quantized": {f"test_{k}": v for k, v in m_q.items()},
      "delta": m_q[key] - m_f[key], "weights_quantized": n_q,
      "params_bytes": {"float": size_f, "quantized": size_q,
                       "ratio": size_f / size_q},
      "array_bytes": {"float": _nbytes(trained.params),
                      "quantized": _nbytes(qparams)},
      "eval_seconds": {"float": t_f, "quantized": t_q},
      "test_examples": int(x.shape[0]),
      "int8_matmuls": None if act is None else int(act.shape[0])}
  _write_report(out, report)
  log(_lines(report))
  return report


def _leaves(qparams) -> list:
  import jax
  return jax.tree_util.tree_leaves(
      qparams, is_leaf=lambda a: isinstance(a, weights.QWeight))


def _write_report(out: str, report: dict) -> None:
  import json
  with open(os.path.join(out, REPORT), "w") as f:
    json.dump(report, f, indent=2)
    f.write("\n")


def _lines(r: dict) -> str:
  """The report as the command prints it."""
  head = r["headline"]
  b, t = r["params_bytes"], r["eval_seconds"]
  return "\n".join([
      f"quantized {r['run']} (epoch {r['epoch']}) -> {r['out']}: "
      f"{r['weights_quantized']} weight arrays as int{r['bits']}, "
      f"per output channel" + ("" if r["int8_matmuls"] is None else
      f"; activations per tensor: {r['int8_matmuls']} int8 x int8 matmuls"),
      f"{head:<16} float {r['float'][head]:.4f}   int{r['bits']} "
      f"{r['quantized'][head]:.4f}   delta {r['delta']:+.4f}",
      f"{'params on disk':<16} float {b['float']:,} B   int{r['bits']} "
      f"{b['quantized']:,} B   {b['ratio']:.2f}x smaller (arrays alone "
      f"{r['array_bytes']['float'] / r['array_bytes']['quantized']:.2f}x)",
      f"{'eval (median)':<16} float {t['float'] * 1e3:.2f} ms   "
      f"int{r['bits']} {t['quantized'] * 1e3:.2f} ms   "
      f"({r['test_examples']} test examples)"])
