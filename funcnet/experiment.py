"""From a resolved config to a trained run folder: ``train_and_evaluate``.

This is the library behind ``funcnet train``; the command line only parses
flags (see :mod:`funcnet.cli`). The run folder holds:

  config.json      the resolved config, every key
  metrics.jsonl    one JSON object per epoch (see :func:`funcnet.train.fit`)
  summary.json     final and best metrics, steps/s, device, status
  loss.png, grad_norms.png   curves (when ``run.plots``)
  checkpoints/     orbax checkpoints of {params, opt_state, epoch}, the
                   last ``run.keep_checkpoints`` kept

Resuming reads ``config.json`` and the latest checkpoint, drops the metrics
lines written after it, and continues; since epoch ``e`` draws its keys from
``fold_in(key, e)``, the resumed run ends with the same params as one never
interrupted.
"""

import inspect
import json
import math
import os
import shutil
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import checkpoints, config as config_lib, data, finetune, optimizers
from funcnet import losses, parallel, plots, schedules, train
from funcnet.errors import ConfigError, DivergenceError
from funcnet.mlp import mlp
from funcnet.progress import Progress

TASK_LOSSES = {"classification": ("cross_entropy", "bce"),
               "regression": ("mse",), "ratings": ("mse",)}


def build_dataset(cfg, stats=None) -> data.Dataset:
  """The dataset the config names: its classes (``data.classes``), few labels
  (``data.train_per_class``), then standardised when asked (not ratings),
  with the training split's statistics or the given ``(mean, std)``."""
  d = cfg["data"]
  kwargs = {}
  if d["name"] not in data.DATASETS:
    kwargs = {"label": d["label"], "task": d["task"]}
  ds = data.load(d["name"], seed=d["seed"], **kwargs)
  if d["classes"]:
    ds = data.select_classes(ds, d["classes"])
  if d["train_per_class"]:
    ds = data.few_per_class(ds, d["train_per_class"], d["seed"])
  if d["standardize"] and ds.task != "ratings":
    ds = data.standardize(ds, stats)
  return ds


def n_outputs(cfg, ds) -> int:
  """Output width: one unit for two classes under bce, else the data's width."""
  if cfg["train"]["loss"] == "bce" and ds.task == "classification" \
      and ds.n_classes == 2:
    return 1
  return data.n_outputs(ds)


def build_model(cfg, ds):
  """The model ``cfg["model"]`` describes, sized to the dataset."""
  kind = cfg["model"]["kind"]
  m = cfg["model"][kind]
  if kind == "mlp":
    if len(data.in_shape(ds)) != 1:
      raise ConfigError(f"model.kind = 'mlp' needs flat inputs; dataset "
                        f"{ds.name!r} has examples of shape {data.in_shape(ds)}")
    sizes = [data.n_features(ds), *m["hidden"], n_outputs(cfg, ds)]
    return mlp(sizes, activation=m["activation"],
               output_activation=m["output_activation"], init=m["init"],
               dropout=m["dropout"])
  from funcnet import models  # the application models (CNN, RNN, ...)
  kwargs = dict(m)
  if kind in ("mf", "ncf"):
    if ds.task != "ratings":
      raise ConfigError(f"model.kind = {kind!r} needs ratings data; "
                        f"{ds.name!r} is {ds.task}")
    return models.MODELS[kind](
        n_users=ds.info["n_users"], n_items=ds.info["n_items"],
        global_mean=float(np.mean(ds.y_train)), **kwargs)
  if ds.task != "classification":
    raise ConfigError(f"model.kind = {kind!r} is a classifier; {ds.name!r} "
                      f"is {ds.task} data; expected a classification dataset")
  if kind == "cnn":
    kwargs["image_shape"] = tuple(kwargs["image_shape"]) or None
    kwargs["conv_dims"] = kwargs["conv_dims"] or None
  return models.MODELS[kind](data.in_shape(ds), n_outputs(cfg, ds), **kwargs)


def build_schedule(cfg):
  """``count -> lr`` from ``[schedule]`` with peak ``optimizer.learning_rate``."""
  s, lr = cfg["schedule"], cfg["optimizer"]["learning_rate"]
  fn = schedules.SCHEDULES.get(s["name"])
  if fn is None or s["name"] == "warmup":
    raise ConfigError(
        f"config key 'schedule.name' = {s['name']!r}; expected one of "
        f"{', '.join(n for n in schedules.names() if n != 'warmup')} "
        "(warm-up is schedule.warmup_steps)")
  wanted = inspect.signature(fn).parameters
  kwargs = {k: v for k, v in s.items() if k in wanted}
  sched = fn(lr, **kwargs)
  if s["warmup_steps"]:
    sched = schedules.warmup(sched, s["warmup_steps"])
  return sched


def build_optimizer(cfg, schedule):
  """``[optimizer]`` as an optax chain: clip, L2 decay, the update rule."""
  o = cfg["optimizer"]
  name = o["name"]
  if name not in optimizers.OPTIMIZERS:
    raise ConfigError(f"config key 'optimizer.name' = {name!r}; expected one of "
                      f"{', '.join(optimizers.names())}")
  wanted = inspect.signature(optimizers.OPTIMIZERS[name]).parameters
  hyper = {k: v for k, v in o.items() if k in wanted and k != "learning_rate"}
  if name == "adamw":
    if o["l2"]:
      raise ConfigError("config key 'optimizer.l2' does not apply to adamw; "
                        "expected optimizer.weight_decay (decoupled) instead")
    decay = hyper.pop("weight_decay")
  else:
    decay = o["l2"] or None
  return optimizers.build(name, schedule, impl=o["impl"],
                          clip_norm=o["clip_norm"] or None, weight_decay=decay,
                          **hyper)


def check(cfg, ds, model) -> None:
  """Cross-key checks that need the data: loss vs task, batch size."""
  t = cfg["train"]
  losses.get(t["loss"])  # an unknown name lists the known ones
  allowed = TASK_LOSSES[ds.task]
  if t["loss"] not in allowed:
    raise ConfigError(f"config key 'train.loss' = {t['loss']!r} does not suit "
                      f"the {ds.task} data {ds.name!r}; expected one of "
                      f"{', '.join(allowed)}")
  n = len(ds.y_train)
  if t["batch_size"] > n:
    raise ConfigError(f"config key 'train.batch_size' = {t['batch_size']} is "
                      f"larger than the {n} training examples; expected 1..{n}")
  if t["grads"] == "manual" and model.kind != "mlp":
    raise ConfigError(f"config key 'train.grads' = 'manual' needs model.kind = "
                      f"'mlp' (hand-written backprop); got {model.kind!r}; "
                      "expected 'autodiff'")
  if t["batch_size"] % t["accumulate"]:
    raise ConfigError(f"config key 'train.accumulate' = {t['accumulate']} does "
                      f"not divide train.batch_size = {t['batch_size']}; "
                      "expected equal micro-batches")
  if t["dtype"] == "float64" and not jax.config.jax_enable_x64:
    raise ConfigError("config key 'train.dtype' = 'float64' needs 64-bit JAX; "
                      "expected JAX_ENABLE_X64=1 in the environment")


class Setup:
  """Everything built from a config: data, model, schedule, optimizer."""

  def __init__(self, cfg):
    self.cfg = cfg
    ft = cfg["finetune"]
    # Fine-tuning: the trained run first, since its input statistics scale
    # this data (see funcnet.finetune).
    self.pretrained = finetune.load_run(ft["from_run"]) if ft["from_run"] else None
    self.ds = build_dataset(cfg, self.pretrained and self.pretrained.stats)
    self.model = build_model(cfg, self.ds)
    check(cfg, self.ds, self.model)
    self.schedule = build_schedule(cfg)
    self.optimizer = build_optimizer(cfg, self.schedule)
    if self.pretrained is not None:
      self.optimizer = finetune.optimizer(self.optimizer, self.model,
                                          ft["freeze_body"], ft["body_lr_scale"])
    self.loss = cfg["train"]["loss"]
    self.dtype = jnp.dtype(cfg["train"]["dtype"])
    self.key = jax.random.key(cfg["seed"])
    cd = cfg["train"]["compute_dtype"]
    # None keeps the plain step (bit-identical to a run without the key).
    self.compute_dtype = None if cd in ("same", self.dtype.name) else jnp.dtype(cd)
    # None on one device: the single-device path, unchanged.
    self.plan = parallel.plan_from_config(cfg)
    if self.plan is not None:
      self.plan.check_batch(cfg["train"]["batch_size"], cfg["train"]["accumulate"])

  def init_state(self):
    """Params and optimizer state exactly as ``train.fit`` would make them.

    Laid out on the plan's mesh when there is one (so a checkpoint restores
    straight into that layout).
    """
    k_init, _ = jax.random.split(self.key)
    params = self.model.init(k_init, self.dtype)
    if self.pretrained is not None:  # the run's body, this init's new head
      params = finetune.replace_head(self.model, self.pretrained.params, params)
    state = params, self.optimizer.init(params)
    return state if self.plan is None else self.plan.place(state)

  def fit(self, **kwargs):
    t = self.cfg["train"]
    if self.pretrained is not None and kwargs.get("params") is None:
      kwargs["params"], kwargs["opt_state"] = self.init_state()
    return train.fit(
        self.model, self.loss, self.optimizer, self.ds, epochs=t["epochs"],
        batch_size=t["batch_size"], key=self.key,
        grads=kwargs.pop("grads", t["grads"]),
        patience=t["patience"] or None, eval_every=t["eval_every"],
        lr_schedule=self.schedule, dtype=self.dtype, plan=self.plan,
        compute_dtype=self.compute_dtype, accumulate=t["accumulate"], **kwargs)

  def device(self) -> str:
    """``"cpu"``, or e.g. ``"8 x TPU v4 (mesh data=8 fsdp=1, 2 processes)"``."""
    return (self.plan.describe() if self.plan is not None
            else jax.devices()[0].device_kind)


def _truncate_metrics(path, last_epoch):
  """Keeps the metrics lines of epochs ``<= last_epoch`` (after a crash)."""
  if not os.path.exists(path):
    return []
  kept = []
  with open(path) as f:
    for line in f:
      try:
        rec = json.loads(line)
      except json.JSONDecodeError:
        break  # a line cut short by a kill
      if rec.get("epoch", math.inf) <= last_epoch:
        kept.append(rec)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in kept)
  os.replace(tmp, path)
  return kept


def json_safe(obj):
  """``obj`` with NaN and inf floats as ``None``: strict JSON for any reader."""
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if isinstance(obj, dict):
    return {k: json_safe(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [json_safe(v) for v in obj]
  return obj


def _write_json(path, obj):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(json_safe(obj), f, indent=2, sort_keys=True, allow_nan=False)
    f.write("\n")
  os.replace(tmp, path)


def _best(history, task):
  tests = [h for h in history if "test_loss" in h]
  if not tests:
    return {}
  if task == "classification":
    b = max(tests, key=lambda h: h["test_accuracy"])
  else:
    b = min(tests, key=lambda h: h["test_loss"])
  return {k: v for k, v in b.items() if k.startswith("test_") or k == "epoch"}


def default_workdir(cfg) -> str:
  return os.path.join("runs", f"{cfg['name']}-{time.strftime('%Y%m%d-%H%M%S')}")


def train_and_evaluate(cfg, workdir, *, resume=False, progress="auto",
                       log=print, is_main=None):
  """Trains the run ``cfg`` describes into ``workdir``; returns the summary.

  With several processes every process calls this with the same arguments:
  all of them train and write checkpoints (collectively, each its own
  shards); only the main process (``is_main``, default: process 0) writes
  ``config.json``, metrics, plots and the summary, and logs.

  Raises:
    ConfigError: a config that does not fit its data, or a workdir that
      already holds another run (pass ``resume``).
    DivergenceError: the loss became NaN/inf (exit status 3); the run
      folder keeps its last good checkpoint, metrics, summary and plots.
  """
  if is_main is None:
    is_main = parallel.is_main()
  if not is_main:
    log, progress = (lambda *a, **k: None), "never"
  setup = Setup(cfg)
  ds, model = setup.ds, setup.model
  ckpt_dir = cfg["run"]["checkpoint_dir"] or os.path.join(workdir, "checkpoints")
  has_ckpt = checkpoints.latest_epoch(ckpt_dir) is not None
  if has_ckpt and not resume:
    raise ConfigError(f"run folder {workdir!r} already holds checkpoints; "
                      "expected --resume to continue it or a new --out folder")
  os.makedirs(workdir, exist_ok=True)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  if is_main:
    _write_json(os.path.join(workdir, "config.json"), cfg)

  params, opt_state = setup.init_state()
  start, history = 0, []
  if has_ckpt:
    start, params, opt_state = checkpoints.restore(ckpt_dir, params, opt_state)
    history = _truncate_metrics(metrics_path, start) if is_main else []
    log(f"resuming {workdir} from epoch {start}")
  elif is_main and os.path.exists(metrics_path):
    os.remove(metrics_path)

  t = cfg["train"]
  steps_per_epoch = len(ds.y_train) // t["batch_size"]
  log(f"data   {data.summary(ds)}")
  log(f"model  {model.kind} {json.dumps({k: v for k, v in model.spec.items() if k != 'kind'})}")
  log(f"train  {t['epochs']} epochs x {steps_per_epoch} steps, "
      f"{cfg['optimizer']['name']} ({cfg['optimizer']['impl']}), "
      f"grads {t['grads']}, device {setup.device()}"
      + (f", compute {setup.compute_dtype.name}" if setup.compute_dtype else "")
      + (f", {t['accumulate']} micro-batches" if t["accumulate"] > 1 else ""))
  bar = Progress(t["epochs"], start, mode=progress)
  saver = checkpoints.Saver(ckpt_dir, cfg["run"]["keep_checkpoints"])
  every = cfg["run"]["checkpoint_every"]
  metrics_file = open(metrics_path, "a") if is_main else None

  def on_epoch(record, params, opt_state):
    if metrics_file:
      metrics_file.write(json.dumps(json_safe(record)) + "\n")
      metrics_file.flush()
    bar.update(record)
    e = record["epoch"]
    if e % every == 0 and e < t["epochs"] and math.isfinite(record["train_loss"]):
      saver.save(e, params, opt_state)

  t0 = time.perf_counter()
  try:
    result = setup.fit(params=params, opt_state=opt_state, start_epoch=start,
                       callback=on_epoch)
  finally:
    bar.close()
    if metrics_file:
      metrics_file.close()
  elapsed = time.perf_counter() - t0
  history = history + result.history
  diverged = bool(result.stopped and result.stopped.startswith("loss became"))
  last_epoch = history[-1]["epoch"] if history else start
  if not diverged:
    saver.save(last_epoch, result.params, result.opt_state)
  saver.close()

  # Steps per second after the first epoch of this process, which pays
  # for compilation (the whole run when there is only one epoch).
  timed = result.history[1:] if len(result.history) > 1 else result.history
  t_timed = (timed[-1]["time"] - result.history[0]["time"]
             if len(result.history) > 1 else elapsed)
  final = history[-1] if history else {}
  summary = {
      "name": cfg["name"], "status": "diverged" if diverged else "finished",
      "stopped": result.stopped, "epochs": last_epoch,
      "total_steps": last_epoch * steps_per_epoch,
      "steps_per_s": (len(timed) * steps_per_epoch / t_timed
                      if t_timed > 0 and timed else None),
      "wall_time_s": elapsed, "device_kind": jax.devices()[0].device_kind,
      "device_count": jax.device_count(), "task": ds.task,
      "devices_used": setup.plan.n_devices if setup.plan is not None else 1,
      "process_count": jax.process_count(), "device": setup.device(),
      "final": {k: v for k, v in final.items() if k != "grad_norms"},
      "best": _best(history, ds.task),
  }
  for k in ("test_accuracy", "test_loss", "test_rmse", "test_mae"):
    last = [h[k] for h in history if k in h]
    if last:
      summary[k] = last[-1]
  if t["compare_grads"] and not diverged:
    summary["compare_grads"] = compare_training(setup, result.params, log)
  if is_main:
    _write_json(os.path.join(workdir, "summary.json"), summary)
    if cfg["run"]["plots"] and history:
      plots.write(history, workdir, title=cfg["name"])
  if diverged:
    last = checkpoints.latest_epoch(ckpt_dir)
    where = (f"the last good checkpoint (epoch {last}) is in {ckpt_dir}"
             if last is not None else "no checkpoint had been written yet")
    raise DivergenceError(f"{result.stopped}; {where}; try a smaller "
                          "optimizer.learning_rate or optimizer.clip_norm")
  return summary


def compare_training(setup: Setup, params, log=print) -> dict:
  """Trains again with the other gradient source, same seed; compares params."""
  other = "autodiff" if setup.cfg["train"]["grads"] == "manual" else "manual"
  res = setup.fit(grads=other)
  a = jax.tree_util.tree_leaves(params)
  b = jax.tree_util.tree_leaves(res.params)
  diff = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(a, b))
  scale = max(float(jnp.max(jnp.abs(x))) for x in a)
  out = {"other_grads": other, "max_abs_param_diff": diff,
         "max_rel_param_diff": diff / max(scale, 1e-30),
         "other_final": {k: v for k, v in res.history[-1].items()
                         if k.startswith("test_") or k == "train_loss"}}
  log(f"compare  {setup.cfg['train']['grads']} vs {other}: max |Δparam| = "
      f"{diff:.3e} (relative {out['max_rel_param_diff']:.3e})")
  return out
