"""A trained run, checked: its test metrics, its gradients, the other source.

  evaluate(run)                  a run's latest checkpoint on its test split
  evaluate_params(trained, ds)   given params on a split of a dataset
  gradcheck(cfg, batch)          manual vs autodiff vs finite differences
  compare_training(setup, p)     train again with the other gradient source
"""

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import train
from funcnet.data import streamed
from funcnet.errors import ConfigError
from funcnet.experiment.setup import Setup, build_dataset
from funcnet.run import rundir


def evaluate(run) -> dict:
  """The latest checkpoint of the run folder ``run`` on its test split.

  The model comes from the run's ``model.json`` and its params from its
  checkpoints (wherever ``run.checkpoint_dir`` put them), or for a quantized
  run folder (``funcnet quantize``) its int8 params; the test split is
  the config's, standardised with the run's saved training statistics.

  Returns:
    ``{"run", "epoch", "test_<metric>": ...}`` (the metrics of
    :func:`funcnet.train.make_evaluate`).
  """
  from funcnet.experiment import quantize
  trained = (quantize.load_quantized(run) if quantize.is_quantized(run)
             else rundir.load_trained(run, "--run"))
  ds = build_dataset(trained.cfg, trained.stats)
  return {"run": run, "epoch": trained.epoch,
          **evaluate_params(trained, ds, "test", f"--run {run!r}")}


def evaluate_params(trained, ds, split: str = "test",
                    what: str = "run") -> dict:
  """``{"<split>_<metric>": ...}``: ``trained.params`` (a
  :class:`funcnet.run.rundir.Trained`) on ``ds``'s ``"test"`` or
  ``"train"`` split, in the run's dtype; ``what`` starts the errors."""
  if split not in ("test", "train"):
    raise ConfigError(f"{what}: split {split!r}; expected 'test' or 'train'")
  x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
  if x is None:
    raise ConfigError(f"{what}: its data {ds.name!r} has no {split} split; "
                      f"expected a dataset with x_{split}")
  if streamed.is_streamed(ds) and split == "train":
    raise ConfigError(f"{what}: the training split of {ds.name!r} is streamed "
                      "from shards; expected split='test'")
  dtype = jnp.dtype(trained.cfg["train"]["dtype"])
  x, y = train.as_arrays(x, y, dtype)
  metrics = train.make_evaluate(trained.model, trained.cfg["train"]["loss"],
                                ds.task)(trained.params, x, y)
  return {f"{split}_{k}": float(v)
          for k, v in jax.device_get(metrics).items()}


def gradcheck(cfg, batch=None):
  """The gradient check of ``cfg``'s model at its initial params, in float64.

  Args:
    cfg: a resolved config.
    batch: examples to check on, drawn from the training split with
      ``cfg["seed"]``; None: 8, or all of them when there are fewer.

  Returns:
    ``(report, heading)``: a :class:`funcnet.gradcheck.Report` and one line
    saying what was checked.
  """
  from funcnet import gradcheck as gradcheck_lib
  setup = Setup(cfg)
  ds = setup.ds
  x, y = sample_batch(ds, batch, cfg["seed"])
  params, _ = setup.init_state()
  report = gradcheck_lib.compare(setup.model, setup.loss, params, x, y,
                                 key=jax.random.key(cfg["seed"]))
  heading = (f"gradient check of {cfg['name']}: {setup.model.kind}, loss "
             f"{getattr(setup.loss, 'name', setup.loss)}, {len(y)} examples "
             f"of {ds.name}, float64")
  return report, heading


def sample_batch(ds, batch=None, seed: int = 0, what: str = "--batch"):
  """``(x, y)``: ``batch`` training examples of ``ds`` drawn without
  replacement with ``seed``, in index order; None: 8, or all of them when
  there are fewer. ``what`` names ``batch`` in the error."""
  n = len(ds.y_train)
  batch = min(8, n) if batch is None else batch
  if not 1 <= batch <= n:
    raise ConfigError(f"{what} {batch}: expected 1..{n}, the training "
                      f"examples of {ds.name!r}")
  rng = np.random.default_rng(seed)
  idx = np.sort(rng.choice(n, batch, replace=False))
  return (ds.x_train.read(idx) if streamed.is_streamed(ds)
          else (ds.x_train[idx], ds.y_train[idx]))


def compare_training(setup: Setup, params, log=print) -> dict:
  """Trains again with the other gradient source, same seed; compares params."""
  other = "autodiff" if setup.cfg["train"]["grads"] == "manual" else "manual"
  res = setup.fit(grads=setup.gradient(other))  # adversarial too, if set
  a = jax.tree_util.tree_leaves(params)
  b = jax.tree_util.tree_leaves(res.state.params)
  diff = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(a, b))
  scale = max(float(jnp.max(jnp.abs(x))) for x in a)
  out = {"other_grads": other, "max_abs_param_diff": diff,
         "max_rel_param_diff": diff / max(scale, 1e-30),
         "other_final": {k: v for k, v in res.history[-1].items()
                         if k.startswith("test_") or k == "train_loss"}}
  log(f"compare  {setup.cfg['train']['grads']} vs {other}: max |Δparam| = "
      f"{diff:.3e} (relative {out['max_rel_param_diff']:.3e})")
  return out
