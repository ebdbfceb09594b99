"""Pre-flight: does the run fit in memory? Answered before anything is allocated.

  estimate(cfg, model, ds, optimizer, plan)   bytes per part, per device
  available(device)                           (free bytes or None, where)
  check_memory(cfg, model, ds, optimizer)     a one-line ConfigError when the
                                              estimate exceeds what is free

Everything is shapes: ``jax.eval_shape`` and ``jax.make_jaxpr`` trace
``model.init``, ``optimizer.init`` and one gradient step on abstract values
(``jax.ShapeDtypeStruct``), so nothing is allocated and nothing compiled:
tens of milliseconds for the shipped configs, as little for a model with two
10**7-wide layers (400 TB of params), which before this check grew past 14
GB before anything stopped it (issue 14). :class:`funcnet.experiment.Setup`
calls :func:`check_memory` last, after the config checks, before the run
folder is written.

The estimate, per device, in the dtypes the run uses (``train.dtype``):

  params       sum of the leaves of ``eval_shape(model.init)``
  gradients    = params (one gradient tree per step; two, the sum and a
               micro-batch's, with ``train.accumulate > 1``)
  opt_state    the leaves of ``eval_shape(optimizer.init, params)``: exact
               for any optax chain (adam: mu, nu and a count)
  activations  what reverse-mode autodiff keeps from the forward pass for
               the backward pass on one (micro-)batch: the residuals of
               ``jax.vjp`` of the batch-mean loss, read from the traced
               jaxpr (the params and inputs it keeps are not counted twice)
  batches      two epochs of mini-batches, ``2 x (n // b) x b`` rows of x
               (streamed from shards: the chunks in flight instead,
               ``train.CHUNKS_IN_FLIGHT x chunk x b`` rows)
               and y: ``fit`` ships epoch ``e + 1``'s while the device runs
               epoch ``e``
  test         the test split, on the device for the whole run

Under a data-parallel plan (:mod:`funcnet.parallel`) each part is what one
device holds: params and optimizer state per ``plan.sharding_of`` (whole when
replicated, a 1/fsdp slice under FSDP), a batch's rows split over the
devices, the test split replicated.

It is an estimate, not a bound. It counts what a training step must hold
and leaves out the backward pass's own temporaries, the optimizer's update
tree, evaluation's forward pass on the test split and XLA's workspace; XLA
may also fuse away some of the residuals counted as activations. The
refusals it is for are off by orders of magnitude, where the exact parts
(params, gradients, optimizer state) decide. The autodiff residuals stand in
for the hand-written backward (``train.grads = "manual"``) too, which keeps
the same forward trace.
"""

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import autodiff, config as config_lib, data as data_lib, paths
from funcnet.train import precision
from funcnet.train.feed import device_dtype
from funcnet.errors import ConfigError
from funcnet.models import registry

PARTS = ("params", "gradients", "opt_state", "activations", "batches", "test")


def _nbytes(shape, dtype) -> int:
  # Python ints: a 10**7 x 10**7 layer is 4e14 bytes, past int32 and exact.
  return math.prod(int(d) for d in shape) * jnp.dtype(dtype).itemsize


def _tree_bytes(tree, plan=None) -> int:
  """Bytes of the array leaves of ``tree`` (shapes), as one device holds them."""
  total = 0
  for leaf in jax.tree_util.tree_leaves(tree):
    shape = tuple(leaf.shape)
    if plan is not None:
      shape = plan.sharding_of(shape).shard_shape(shape)
    total += _nbytes(shape, leaf.dtype)
  return total


def _residual_bytes(model, loss, params, x, y, key, compute_dtype) -> int:
  """Bytes of the arrays ``jax.vjp`` keeps for the backward pass of the
  batch-mean loss at ``params`` on ``(x, y)`` (all abstract).

  The residuals are the outputs of the traced ``vjp`` function's closure;
  those that are inputs (the params, ``x``) are already counted elsewhere.
  """
  if compute_dtype is not None:
    model = precision.compute_in(model, compute_dtype)
  f = autodiff.loss_fn(model, loss)

  def residuals(p, x, y, k):
    return jax.vjp(lambda p: f(p, x, y, k), p)[1]

  jaxpr = jax.make_jaxpr(residuals)(params, x, y, key).jaxpr
  inputs, seen, total = set(jaxpr.invars), set(), 0
  for v in jaxpr.outvars:
    # A literal is the one outvar with a ``val``. Not isinstance against
    # jax.extend.core.Literal: importing jax.extend brings Pallas with it,
    # 22 ms of every ``funcnet train``'s start (issue 27).
    if hasattr(v, "val") or v in inputs or v in seen:
      continue  # a literal, an argument, or one array kept twice
    seen.add(v)
    total += _nbytes(v.aval.shape, v.aval.dtype)
  return total


def estimate(cfg, model, ds, optimizer, plan=None) -> dict:
  """Bytes one device needs to train ``model`` on ``ds`` as ``cfg`` says.

  Args:
    cfg: a resolved config (``train.batch_size``, ``dtype``,
      ``compute_dtype``, ``accumulate``, ``loss`` are read).
    model: the :class:`funcnet.model.Model` (built, not initialised).
    ds: the :class:`funcnet.data.Dataset`, ``x_train: (n, *in_shape)``.
    optimizer: the run's ``GradientTransformation`` (funcnet's or optax's).
    plan: a :class:`funcnet.parallel.Plan`, or None for one device.

  Returns:
    ``{part: bytes}`` for each of :data:`PARTS` and ``"total"`` (their sum),
    per device; see the module docstring for each part's rule. Nothing is
    allocated or compiled.
  """
  t = cfg["train"]
  dtype = jnp.dtype(t["dtype"])
  cd = t["compute_dtype"]
  compute_dtype = None if cd in ("same", dtype.name) else jnp.dtype(cd)
  b, k = t["batch_size"], t["accumulate"]
  n_dev = 1 if plan is None else plan.n_devices

  key = jax.eval_shape(jax.random.key, 0)  # a key's shape; no program runs
  params = jax.eval_shape(lambda key: model.init(key, dtype), key)
  opt_state = jax.eval_shape(optimizer.init, params)
  p_bytes = _tree_bytes(params, plan)

  # One micro-batch on one device: b / (accumulate x devices) rows, the
  # check_batch rules make it whole (at least one row, for the estimate).
  rows = max(b // (k * n_dev), 1)
  x_dt = device_dtype(ds.x_train, dtype)
  y_dt = device_dtype(ds.y_train, dtype)
  x_in, y_in = np.shape(ds.x_train)[1:], np.shape(ds.y_train)[1:]
  activations = _residual_bytes(
      model, t["loss"], params, jax.ShapeDtypeStruct((rows, *x_in), x_dt),
      jax.ShapeDtypeStruct((rows, *y_in), y_dt), key, compute_dtype)

  steps = len(ds.y_train) // b
  # In memory: two epochs of batches (fit ships the next one early);
  # streamed from shards: the chunks in flight, however large the split.
  from funcnet.data import streamed
  batches = 2 * steps
  if streamed.is_streamed(ds):
    from funcnet import train
    batches = train.CHUNKS_IN_FLIGHT * train.chunk_length(
        x_in, x_dt, b, steps, t["chunk_steps"])
  per_row = _nbytes(x_in, x_dt) + _nbytes(y_in, y_dt)
  batch_rows = -(-b // n_dev)  # the device's share of each step's rows
  test = 0
  if getattr(ds, "x_test", None) is not None:
    test = (_nbytes(np.shape(ds.x_test), device_dtype(ds.x_test, dtype))
            + _nbytes(np.shape(ds.y_test), device_dtype(ds.y_test, dtype)))

  out = {"params": p_bytes,
         "gradients": p_bytes * (2 if k > 1 else 1),
         "opt_state": _tree_bytes(opt_state, plan),
         "activations": activations,
         "batches": batches * batch_rows * per_row,
         "test": test}
  out["total"] = sum(out.values())
  return out


# --- what is free -------------------------------------------------------------

def available(device=None) -> tuple:
  """``(bytes, where)``: the memory free for a run on ``device``.

  Args:
    device: a ``jax.Device``; None: the first local device.

  Returns:
    On a CPU, the host's available memory (``MemAvailable``, or the
    container's limit less its usage when that is smaller), ``where`` =
    ``"the host"`` / ``"the container"``. On a GPU or TPU, the device's
    ``memory_stats()["bytes_limit"]`` less ``bytes_in_use``, ``where`` e.g.
    ``"gpu:0 (NVIDIA H100)"``. ``bytes`` is None when unknown (no
    ``/proc/meminfo``, a backend without memory statistics).
  """
  device = device if device is not None else jax.local_devices()[0]
  if device.platform == "cpu":
    return paths.host_memory()
  where = f"{device.platform}:{device.id} ({device.device_kind})"
  try:
    stats = device.memory_stats() or {}
  except Exception:  # a backend without it raises (XLA's Unimplemented): unknown
    stats = {}
  if "bytes_limit" not in stats:
    return None, where
  return stats["bytes_limit"] - stats.get("bytes_in_use", 0), where


# --- the check ----------------------------------------------------------------

def _model_keys(cfg, model, ds, need_if_fits) -> list:
  """The ``model.<kind>.*`` keys that make the model large, for the message.

  Each integer (or integer-list) key set away from its default is tried at
  its default: ``need_if_fits(model)`` is another estimate's bytes, or None
  when that would not fit either (on the refusal path only). Named: the keys
  whose default alone would make the run fit, within 10x of the best of
  them. A key that only changes the model's form (a CNN's ``image_shape``,
  read as 1-D at its default) shrinks it a few times; the keys that made it
  large shrink it by orders of magnitude. Else every such key; else the
  whole table.
  """
  kind = cfg["model"]["kind"]
  table, defaults = cfg["model"][kind], registry.get(kind).defaults

  def sizing(v):
    items = v if isinstance(v, list) else [v]
    return all(isinstance(i, int) and not isinstance(i, bool) for i in items)
  changed = [k for k, v in table.items() if sizing(v) and v != defaults.get(k)]
  fit, spec = {}, data_lib.spec(ds, model.n_out)
  for k in changed:
    try:
      smaller = registry.from_config(kind, {**table, k: defaults[k]}, spec)
      fit[k] = need_if_fits(smaller)
    except Exception:  # a default that does not suit this data or model: the
      continue         # message names fewer keys rather than failing
  fit = {k: v for k, v in fit.items() if v is not None}
  keys = [k for k in changed if k in fit and fit[k] <= 10 * min(fit.values())]
  return [f"model.{kind}.{k}" for k in keys or changed] or [f"model.{kind}.*"]


def _sources(cfg, model_keys) -> dict:
  """``{part: [config keys]}``: what sets each part's size, the key a user
  would change first (named in the message's "from ...") first."""
  data = ["the dataset (data.name)"]
  return {"params": model_keys, "gradients": model_keys,
          "opt_state": model_keys,
          "activations": ["train.batch_size", *model_keys],
          "batches": data, "test": data}


def _listed(items, word: str) -> str:
  """``"a"``, ``"a or b"``, ``"a, b or c"``."""
  return (", ".join(items[:-1]) + f" {word} " if len(items) > 1 else "") \
      + items[-1]


def _label(cfg, part: str) -> str:
  return {"opt_state": f"{cfg['optimizer']['name']} state",
          "batches": "training batches", "test": "test split"}.get(part, part)


def check_memory(cfg, model, ds, optimizer=None, plan=None,
                 device=None, estimator=None) -> Optional[dict]:
  """Raises a one-line ``ConfigError`` when the run will not fit in memory.

  Args:
    cfg, model, ds, plan: as for :func:`estimate`.
    optimizer: the run's optimizer; None: built from ``[optimizer]`` and
      ``[schedule]`` (a fine-tuning run's wrapper is left out: pass it).
    device: where to compare; None: the plan's first device, else the first
      local one.
    estimator: called as :func:`estimate` (default: it); ``Setup`` passes
      one that remembers the estimate of a config it has seen
      (:func:`funcnet.train.program_cache.remembered`).

  Returns:
    The estimate (:func:`estimate`), or None when the free memory is unknown
    (nothing is refused then).

  Raises:
    ConfigError: e.g. ``the run needs about 1.6 PB (adam state 800 TB, params
      400 TB from model.mlp.hidden, gradients 400 TB) but the host has 12.3
      GB available; expected a smaller model.mlp.hidden``.
  """
  if device is None:
    device = (plan.mesh.local_devices[0] if plan is not None
              else jax.local_devices()[0])
  free, where = available(device)
  if free is None:
    return None
  if optimizer is None:
    optimizer = config_lib.optimizer_from_config(
        cfg, config_lib.schedule_from_config(cfg))
  est = (estimator or estimate)(cfg, model, ds, optimizer, plan)
  # Fake CPU devices (--cpu-devices) all live in the host's memory.
  share = (len(plan.mesh.local_devices)
           if plan is not None and device.platform == "cpu" else 1)
  need = est["total"] * share
  # No safety factor: the estimate leaves things out (module docstring), so
  # a factor > 1 would not make it safe, only refuse some runs that fit.
  if need <= free:
    return est
  def need_if_fits(m):
    n = estimate(cfg, m, ds, optimizer, plan)["total"] * share
    return n if n <= free else None
  sources = _sources(cfg, _model_keys(cfg, model, ds, need_if_fits))
  top = sorted((p for p in PARTS if est[p]), key=lambda p: -est[p])[:3]
  parts, keys = [], []
  for p in top:
    origin = {"params": _listed(sources[p], "and"),
              "activations": sources[p][0]}.get(p)
    parts.append(f"{_label(cfg, p)} {paths.human(est[p] * share)}"
                 + (f" from {origin}" if origin else ""))
    keys += [k for k in sources[p] if k not in keys]
  if cfg["train"]["dtype"] == "float64":
    keys.append("train.dtype")  # float32 halves every float part
  per = f" on {share} CPU devices" if share > 1 else (
      " per device" if plan is not None else "")
  raise ConfigError(
      f"the run needs about {paths.human(need)}{per} ({', '.join(parts)}) but "
      f"{where} has {paths.human(free)} available; expected a smaller "
      f"{_listed(keys, 'or')}")


__all__ = ["PARTS", "available", "check_memory", "estimate"]
