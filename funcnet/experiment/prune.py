"""``funcnet prune``: a trained run's weights pruned by magnitude to a
target sparsity, fine-tuned with the masks held, written as a run folder.

  prune_run(run, sparsity, epochs, out, scope=, schedule=, ramp_epochs=)
      -> the report (also prune.json)

``scope``: ``"global"`` ranks every weight together, ``"layer"`` cuts each
layer to the sparsity (:func:`funcnet.prune.magnitude.masks`).
``schedule``: ``"oneshot"`` prunes to the target once, before fine-tuning;
``"gradual"`` recomputes the masks by magnitude at the start of each of the
first ``ramp_epochs`` fine-tuning epochs along Zhu & Gupta's cubic
(:mod:`funcnet.prune.schedule`), then holds them at the target.

The pruned run folder is an ordinary run folder (``config.json``,
``model.json``, ``stats.npz``, one orbax checkpoint of the pruned params at
the source run's epoch plus the fine-tuning epochs), so ``funcnet eval``,
``load_run`` and ``funcnet quantize`` read it as they read any run; it adds
``masks.npz`` (one 0/1 array per params leaf, keyed by its tree path) and
``prune.json`` (the report).

Fine-tuning: ``epochs`` passes over the training split in mini-batches of
the config's ``train.batch_size``, shuffled by :func:`funcnet.train.
batch_order`, with Adam at ``learning_rate`` (the source run's schedule
has ended); the gradient is the config's ``train.grads`` source (the
kind's hand-written backward or autodiff), and after each step the params
are multiplied by the masks again, so a pruned weight stays exactly zero
(Adam's moments would otherwise move it). The masks are an argument of
the compiled step, so the gradual schedule's new masks do not recompile it.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import autodiff, backprop, optimizers, tasks, train
from funcnet.errors import ConfigError
from funcnet.experiment.setup import build_dataset
from funcnet.prune import magnitude, schedule
from funcnet.run import checkpoints, rundir
from funcnet.train.evaluate import to_host

MASKS = "masks.npz"
REPORT = "prune.json"


def check_request(run, sparsity, epochs: int, learning_rate: float,
                  out, scope="global", sched="oneshot", ramp=None) -> str:
  """The output folder, or a one-line ConfigError before anything loads."""
  magnitude.check_sparsity(sparsity)
  magnitude.check_scope(scope)
  schedule.check_schedule(sched)
  if epochs < 0:
    raise ConfigError(f"--epochs {epochs}: expected >= 0")
  if sched == "gradual":
    if epochs < 1:
      raise ConfigError(f"--schedule gradual with --epochs {epochs}: "
                        "expected at least 1 epoch to prune over")
    ramp = epochs // 2 if ramp is None else ramp
    if not 0 <= ramp < epochs:
      raise ConfigError(f"--ramp-epochs {ramp}: expected 0 <= N < --epochs "
                        f"({epochs}), so the last epoch fine-tunes at the "
                        "target")
  if not learning_rate > 0:
    raise ConfigError(f"--learning-rate {learning_rate}: expected > 0")
  run = os.fspath(run)
  rundir.read_config(run, what="--run")
  suffix = "".join(f"-{w}" for w, d in ((scope, "global"),
                                         (sched, "oneshot")) if w != d)
  out = os.fspath(out) if out else (
      run.rstrip("/") + f"-pruned{round(100 * sparsity)}{suffix}")
  if os.path.abspath(out) == os.path.abspath(run):
    raise ConfigError(f"--out {out!r} is the run folder itself; expected a "
                      "new folder for the pruned run")
  if os.path.exists(os.path.join(out, "config.json")):
    raise ConfigError(f"--out {out!r} holds a run already; expected a new "
                      "folder")
  return out


def _finetune(trained, ds, plan, scope, learning_rate, dtype):
  """Adam over ``len(plan)`` epochs, the masks recomputed by magnitude (in
  ``scope``) at the start of an epoch whose sparsity ``plan[e]`` differs
  from the last; returns the masked params, the optimizer state and the
  masks in force at the end."""
  cfg, model = trained.cfg, trained.model
  loss = cfg["train"]["loss"]
  grad = (backprop.value_and_grad(model, loss)
          if cfg["train"]["grads"] == "manual"
          else autodiff.value_and_grad(model, loss))
  opt = optimizers.get("adam", learning_rate=learning_rate)
  params, state = trained.params, opt.init(trained.params)

  @jax.jit
  def step(params, state, mask, x, y, key):
    _, g = grad(params, x, y, key)
    updates, state = opt.update(g, state, params)
    params = jax.tree_util.tree_map(lambda p, u: p + u, params, updates)
    return magnitude.apply(params, mask), state

  def remask(params, s):
    mask = jax.tree_util.tree_map(jnp.asarray,
                                  magnitude.masks(params, s, scope))
    return magnitude.apply(params, mask), mask

  x_all, y_all = train.as_arrays(ds.x_train, ds.y_train, dtype)
  b = min(int(cfg["train"]["batch_size"]), int(x_all.shape[0]))
  key = jax.random.key(cfg["seed"] + 1)
  last = plan[0] if plan else None
  params, mask = remask(params, last if plan else 0.0)
  for e, s_e in enumerate(plan):
    if s_e != last:  # the gradual schedule's next step
      params, mask, last = *remask(params, s_e), s_e
    order = train.batch_order(key, e, int(x_all.shape[0]), b).reshape(-1, b)
    for s, idx in enumerate(order):
      params, state = step(params, state, mask, x_all[idx], y_all[idx],
                           jax.random.fold_in(jax.random.fold_in(key, e), s))
  return params, state, mask


def prune_run(run, sparsity: float, epochs: int = 10,
              learning_rate: float = 1e-3, out=None, log=print,
              scope: str = "global", sched: str = "oneshot",
              ramp_epochs=None) -> dict:
  """Prunes the newest intact checkpoint of ``run`` to ``sparsity`` (of its
  weights, by magnitude over all layers or per layer: ``scope``), at once
  or gradually (``sched``, over ``ramp_epochs``, default half the epochs),
  fine-tunes ``epochs`` with the masks held, writes the pruned run folder
  ``out`` (default ``<run>-pruned<percent>[-layer][-gradual]``) and returns
  the report: the test metrics ``dense``, ``pruned`` (pruned at once to the
  target, before fine-tuning) and ``finetuned``, the ``sparsity`` reached,
  the ``plan`` (sparsity per epoch) and the headline's ``delta``
  (finetuned - dense)."""
  out = check_request(run, sparsity, epochs, learning_rate, out, scope,
                      sched, ramp_epochs)
  if sched == "gradual":
    ramp_epochs = epochs // 2 if ramp_epochs is None else ramp_epochs
    plan = schedule.sparsities(epochs, sparsity, ramp_epochs)
  else:
    ramp_epochs, plan = 0, [float(sparsity)] * epochs
  trained = rundir.load_trained(os.fspath(run), "--run")
  cfg, model = trained.cfg, trained.model
  dtype = jnp.dtype(cfg["train"]["dtype"])
  ds = build_dataset(cfg, trained.stats)
  x, y = train.as_arrays(ds.x_test, ds.y_test, dtype)
  evaluate = train.make_evaluate(model, cfg["train"]["loss"], ds.task)
  cut_mask = jax.tree_util.tree_map(jnp.asarray, magnitude.masks(
      trained.params, sparsity, scope))
  pruned = magnitude.apply(trained.params, cut_mask)
  params, opt_state, mask = _finetune(trained, ds, plan, scope,
                                      learning_rate, dtype)
  if not plan:  # no fine-tuning: the one-shot cut is the result
    params, mask = pruned, cut_mask
  dense, cut, tuned = (to_host(evaluate(p, x, y))
                       for p in (trained.params, pruned, params))
  _write(out, trained, params, opt_state, mask, epochs)
  head, _ = tasks.headline(ds.task)
  k = head[len("test_"):]
  report = {"run": os.fspath(run), "out": out, "epoch": trained.epoch,
            "target_sparsity": sparsity, "scope": scope, "schedule": sched,
            "ramp_epochs": ramp_epochs, "plan": plan,
            "sparsity": magnitude.sparsity(params), "epochs": epochs,
            "learning_rate": learning_rate, "headline": head,
            **{name: {f"test_{m}": v for m, v in r.items()} for name, r in
               (("dense", dense), ("pruned", cut), ("finetuned", tuned))},
            "delta": tuned[k] - dense[k]}
  rundir.write_summary(out, {"prune": report})
  _json(os.path.join(out, REPORT), report)
  log(f"pruned {report['run']} (epoch {trained.epoch}) to "
      f"{report['sparsity']:.1%} of its weights ({scope}, {sched}) -> "
      f"{out}\n"
      f"{head:<16} dense {dense[k]:.4f}   pruned {cut[k]:.4f}   after "
      f"{epochs} epochs of fine-tuning {tuned[k]:.4f}   delta "
      f"{report['delta']:+.4f}")
  return report


def _write(out, trained, params, opt_state, mask, epochs) -> None:
  cfg = dict(trained.cfg, run=dict(trained.cfg["run"], checkpoint_dir=""))
  os.makedirs(out, exist_ok=True)
  rundir.write_config(out, cfg)
  rundir.write_model(out, trained.model)
  rundir.write_stats(out, trained.stats)
  saver = checkpoints.Saver(rundir.checkpoint_dir(out, cfg), keep=1)
  try:
    saver.save(train.TrainState(params, opt_state, trained.epoch + epochs))
  finally:
    saver.close()
  flat = jax.tree_util.tree_flatten_with_path(jax.device_get(mask))[0]
  with open(os.path.join(out, MASKS), "wb") as f:
    np.savez_compressed(f, **{jax.tree_util.keystr(p): np.asarray(m, bool)
                              for p, m in flat})


def _json(path, obj) -> None:
  import json
  with open(path, "w") as f:
    json.dump(obj, f, indent=2)
    f.write("\n")
