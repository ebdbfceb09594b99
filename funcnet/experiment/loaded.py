"""A trained run in Python: ``funcnet.load_run(dir)``, for a notebook or a script.

  run = funcnet.load_run("runs/digits_mlp")
  run.model, run.params, run.config, run.stats, run.epoch   read at once
  run.dataset                       the config's data, built on first use
  run.predict(x)                    raw inputs -> model.apply
  run.evaluate()                    what ``funcnet eval --run DIR`` prints
  run.gradcheck(batch=8)            manual vs autodiff vs finite differences

Loading reads the run folder through :mod:`funcnet.run.rundir` only, as
``funcnet eval`` does: the model from ``model.json`` (the registry's kinds;
no module is imported that the user did not name: a run of a kind of
one's own needs ``imports=[module]``, the module imported first, or an
installed entry point), the params from the
newest intact checkpoint (a damaged newer one is reported in one line and
skipped; nothing on disk moves), no optimizer state. The data is built only
when asked for, standardised with the run's own training statistics
(``stats.npz``), never recomputed from the data.
"""

import functools
import os
from typing import Optional

from funcnet.errors import ConfigError
from funcnet.experiment import verify
from funcnet.experiment.setup import build_dataset
from funcnet.run import rundir


def load_run(run, epoch: Optional[int] = None, imports=()) -> "LoadedRun":
  """The run folder ``run`` (``funcnet train --out``), loaded.

  Args:
    run: the run folder (a path).
    epoch: the checkpoint to load; None: the newest intact one.
    imports: modules to import first (names on ``sys.path`` or paths to
      ``.py`` files), e.g. the one that registers the run's kind of your
      own (:func:`funcnet.register_kind`). The run's saved config may name
      one; it is never imported unless listed here.

  Raises:
    ConfigError: no such folder, or one without ``config.json`` or
      ``model.json`` (one line naming what is missing); a float64 run
      while JAX is 32-bit; a kind that is not registered (naming the
      module its config records).
    CheckpointError: no checkpoint, or none intact.
  """
  import jax
  from funcnet.models import user
  user.import_all(imports, what="load_run imports")
  run = os.fspath(run)
  dtype = rundir.read_config(run, what="load_run")["train"]["dtype"]
  if dtype == "float64" and not jax.config.jax_enable_x64:
    raise ConfigError(f"load_run {run!r}: the run trained in float64, which "
                      "needs 64-bit JAX; expected JAX_ENABLE_X64=1 in the "
                      "environment (or jax.config.update('jax_enable_x64', "
                      "True) before loading)")
  from funcnet.experiment import quantize
  if quantize.is_quantized(run):  # funcnet quantize's folder: int8 params
    return LoadedRun(quantize.load_quantized(run, "load_run"))
  return LoadedRun(rundir.load_trained(run, "load_run", epoch))


class LoadedRun:
  """A run folder's model, params, config, statistics and (lazily) data.

  Attributes:
    run: the run folder.
    model: the :class:`funcnet.Model`, rebuilt from ``model.json``.
    params: its params at checkpoint ``epoch`` (a pytree of arrays).
    config: the resolved config (a dict, ``config.json``).
    stats: ``(mean, std)`` the training inputs were standardised with
      (``stats.npz``, each of one example's shape), or None when the run
      did not standardise.
    epoch: the checkpoint's epoch.
  """

  def __init__(self, trained: rundir.Trained):
    self._trained = trained
    self.run, self.model, self.params = trained.run, trained.model, trained.params
    self.config, self.stats, self.epoch = trained.cfg, trained.stats, trained.epoch

  def __repr__(self):
    return (f"LoadedRun({self.run!r}, kind={self.model.kind!r}, "
            f"epoch={self.epoch})")

  @property
  def metrics(self) -> list:
    """The per-epoch records of ``metrics.jsonl`` up to ``epoch``."""
    return rundir.read_metrics(self.run, self.epoch)

  @functools.cached_property
  def dataset(self):
    """The config's :class:`funcnet.data.Dataset`, as the run trained on it:
    standardised with ``stats`` when the run standardised. Built on first
    access (loading the data costs more than loading the run)."""
    return build_dataset(self.config, self.stats)

  def predict(self, x, key=None):
    """``model.apply(params, x)``: the outputs for raw inputs ``x``.

    ``x``: ``(m, *in_shape)`` inputs as the data gives them before
    standardisation (digits' 0-16 pixel values, say). When the run
    standardised (``stats`` is not None) they become ``(x - mean) / std``
    first, in float32 as the dataset's are; otherwise (ids of a ratings
    model, or ``data.standardize = false``) they go in as they are. Inputs
    from ``dataset`` are standardised already: use ``model.apply`` on them.

    Returns:
      ``(m, n_outputs)``: the output activation of the logits (class
      probabilities for a classifier).
    """
    import jax.numpy as jnp
    import numpy as np
    from funcnet import train
    if self.stats is not None:
      mean, std = (np.asarray(a, np.float64) for a in self.stats)
      x = ((np.asarray(x, np.float64) - mean) / std).astype(np.float32)
    x, _ = train.as_arrays(x, np.zeros(0), jnp.dtype(self.config["train"]["dtype"]))
    return self.model.apply(self.params, x, key=key)

  def evaluate(self, split: str = "test") -> dict:
    """The metrics on ``split`` (``"test"`` or ``"train"``) of ``dataset``.

    Returns:
      ``{"run", "epoch", "<split>_<metric>": ...}``: for the test split the
      numbers ``funcnet eval --run DIR`` prints.
    """
    return {"run": self.run, "epoch": self.epoch,
            **verify.evaluate_params(self._trained, self.dataset, split,
                                     f"run {self.run!r}")}

  def gradcheck(self, batch: Optional[int] = None, seed: Optional[int] = None):
    """Manual vs autodiff vs finite differences at the loaded params.

    Args:
      batch: training examples of ``dataset`` to check on (standardised as
        trained); None: 8, or all when there are fewer.
      seed: draws the examples and the checked entries; None: the config's.

    Returns:
      A :class:`funcnet.gradcheck.Report` (``print`` it; ``.ok()``).
    """
    import jax
    from funcnet import gradcheck
    seed = self.config["seed"] if seed is None else seed
    x, y = verify.sample_batch(self.dataset, batch, seed, "batch =")
    return gradcheck.compare(self.model, self.config["train"]["loss"],
                             self.params, x, y, key=jax.random.key(seed))
