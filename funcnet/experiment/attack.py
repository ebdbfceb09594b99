"""A trained run under attack: accuracy on its test split for a list of eps.

  attack_run(run, eps, settings, target=None, examples=None, out=None)
      loads the run (:func:`funcnet.load_run`), attacks its test split
      (:mod:`funcnet.attacks.evaluate`: every eps and method in one
      compiled program) and writes into ``out``:
        attack.md             eps | clean accuracy | accuracy under each method
        results.json          the same numbers, the settings and the units
        accuracy_vs_eps.png   the curves
        examples.png          clean vs adversarial inputs, their predictions

eps is in the data's own units (digits' pixel intensities, before
standardisation), converted per feature to the model's standardised units
with the run's own statistics (``stats.npz``); adversarial inputs are
clipped to the range the dataset states (:func:`funcnet.data.valid_range`),
or not at all when it states none. Both facts are written in the report.
"""

import json
import os
from typing import Optional

import jax
import numpy as np

from funcnet import data, tasks
from funcnet.attacks import evaluate, plots
from funcnet.errors import ConfigError
from funcnet.experiment.loaded import load_run

KEEP = 8  # examples drawn in examples.png


def attack_run(run, eps, settings: evaluate.Settings, *, target=None,
               examples: Optional[int] = None, out: Optional[str] = None,
               seed: int = 0, imports=()) -> dict:
  """Attacks ``run``'s test split; writes the report into ``out``.

  Args:
    run: a run folder (``funcnet train --out``) of a classifier on
      real-valued inputs.
    eps: the radii, in the data's own units (>= 0).
    settings: an :class:`funcnet.attacks.evaluate.Settings`.
    target: with ``settings.targeted``: a class index, or ``"next"`` (each
      example's label + 1, modulo the classes; the default).
    examples: attack the first ``examples`` test examples; None: all.
    out: the report's folder; None: ``<run>/attack``.
    seed: PGD's random starts.
    imports: as :func:`funcnet.load_run`.

  Returns:
    The record written to ``results.json``.

  Raises:
    ConfigError: a bad eps, method, step count or target; a run whose
      inputs are ids (ratings, tokens) or whose task has no classes;
      no such run folder.
  """
  evaluate.check(eps, settings)
  if examples is not None and examples < 1:
    raise ConfigError(f"attack examples {examples}; expected >= 1")
  loaded = load_run(run, imports=imports)
  ds = loaded.dataset
  task = tasks.get(ds.task)
  if task.inputs != "features" or not task.classes:
    raise ConfigError(
        f"attack of run {os.fspath(run)!r}: its data {ds.name!r} is a "
        f"{ds.task} set with {task.inputs} as inputs; expected a classifier "
        "of real-valued inputs (an attack perturbs numbers, not ids)")
  if ds.x_test is None or not len(ds.y_test):
    raise ConfigError(f"attack of run {os.fspath(run)!r}: its data "
                      f"{ds.name!r} has no test split; expected one to attack")
  x, y = np.asarray(ds.x_test[:examples]), np.asarray(ds.y_test[:examples])
  aim = _targets(target, y, ds.n_classes) if settings.targeted else None
  mean, std = loaded.stats if loaded.stats is not None else (None, None)
  valid = data.valid_range(loaded.config["data"]["name"])
  dtype = np.dtype(loaded.config["train"]["dtype"])
  budget = evaluate.in_model_units(eps, mean, std, valid,
                                   loaded.model.in_shape, dtype)
  sweep = evaluate.make_sweep(loaded.model, loaded.config["train"]["loss"],
                              settings, KEEP)
  clean, adv = sweep(loaded.params, x.astype(dtype), y,
                     y if aim is None else aim, budget, jax.random.key(seed))
  scores = {"clean_accuracy": float(np.mean(np.asarray(clean) == y)),
            "methods": {m: evaluate.accuracies(adv[m][0], y, aim)
                        for m in settings.methods}}
  record = _record(loaded, ds, eps, settings, budget, valid, len(y), target,
                   scores)
  out = os.path.join(os.fspath(run), "attack") if out is None else out
  _write(out, record, x[:KEEP], y, clean, adv, mean, std)
  return record


def _targets(target, y, n_classes):
  """The ``(m,)`` classes a targeted attack aims at."""
  if target is None or target == "next":
    return ((y + 1) % n_classes).astype(np.int32)
  if not (isinstance(target, (int, np.integer)) and 0 <= target < n_classes):
    raise ConfigError(f"attack target class {target!r}; expected 0.."
                      f"{n_classes - 1} or 'next'")
  return np.full_like(y, target, dtype=np.int32)


def units(valid, standardised: bool) -> str:
  """What eps is measured in, for the report."""
  where = ("before standardisation, as the data is loaded" if standardised
           else "the model's inputs as they are")
  clip = (f"valid range [{valid[0]:g}, {valid[1]:g}], which adversarial "
          "inputs are clipped to" if valid is not None
          else "the dataset states no valid range: no clipping")
  return f"the data's own units ({where}); {clip}"


def _record(loaded, ds, eps, settings, budget, valid, n, target,
            scores) -> dict:
  per_eps = budget.eps.reshape(len(eps), -1)
  steps = settings.steps
  return {
      "run": loaded.run, "epoch": loaded.epoch, "data": ds.name,
      "split": "test", "examples": int(n),
      "units": units(valid, loaded.stats is not None),
      "valid_range": None if valid is None else list(valid),
      "eps": [float(e) for e in eps],
      "eps_model_units": [[float(r.min()), float(r.max())] for r in per_eps],
      "settings": {
          "methods": list(settings.methods), "steps": steps,
          "step_size": (2.5 / steps if settings.step_size is None
                        else settings.step_size),
          "step_size_is": "a multiple of eps",
          "random_start": settings.random_start,
          "targeted": settings.targeted,
          "target": (target or "next") if settings.targeted else None,
          "source": settings.source},
      **scores,
  }


def markdown(record: dict) -> str:
  """attack.md: the settings, the units, then eps | clean | each method."""
  methods = list(record["methods"])
  s = record["settings"]
  lines = [
      f"# Accuracy under attack: {record['run']}",
      "",
      f"{record['examples']} test examples of {record['data']}, epoch "
      f"{record['epoch']}; L-infinity "
      + ", ".join(m.upper() for m in methods)
      + (f" (PGD: {s['steps']} steps of {s['step_size']:g} eps, "
         f"{'random' if s['random_start'] else 'no random'} start)"
         if "pgd" in methods else "")
      + (f", targeted at {s['target']}" if s["targeted"] else ", untargeted")
      + f"; input gradient: {s['source']}.",
      "",
      f"eps is in {record['units']}.",
      "",
      "| eps | clean acc | " + " | ".join(
          f"{m.upper()} acc" + (f" | {m.upper()} success" if s["targeted"]
                                else "") for m in methods) + " |",
      "|" + " --- |" * (2 + len(methods) * (2 if s["targeted"] else 1)),
  ]
  rows = []
  for i, e in enumerate(record["eps"]):
    cells = [f"{e:g}", f"{100 * record['clean_accuracy']:.1f}%"]
    for m in methods:
      r = record["methods"][m]
      cells.append(f"{100 * r['accuracy'][i]:.1f}%")
      if s["targeted"]:
        cells.append(f"{100 * r['success'][i]:.1f}%")
    rows.append("| " + " | ".join(cells) + " |")
  lo, hi = record["eps_model_units"][-1]
  note = ("" if not s["targeted"] else
          "\nsuccess: the share of examples (their label not the target) "
          "predicted as the target.\n")
  return "\n".join(lines + rows) + (
      f"\n\nIn the model's standardised inputs eps is eps / std per feature: "
      f"{lo:.3g} to {hi:.3g} at eps = {record['eps'][-1]:g}.\n" + note)


def _write(out, record, x, y, clean, adv, mean, std) -> None:
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(record, f, indent=2)
    f.write("\n")
  with open(os.path.join(out, "attack.md"), "w") as f:
    f.write(markdown(record))
  curves = {m: r["accuracy"] for m, r in record["methods"].items()}
  plots.accuracy_vs_eps(record["eps"], curves, record["clean_accuracy"],
                        "data units", os.path.join(out, "accuracy_vs_eps.png"))
  shown = "pgd" if "pgd" in adv else next(iter(adv))
  raw = (lambda a: a) if mean is None else (
      lambda a: np.asarray(a, np.float64) * std + mean)
  k = len(x)
  plots.examples(raw(x), raw(adv[shown][1]), y[:k], clean[:k],
                 adv[shown][0][:, :k], record["eps"],
                 os.path.join(out, "examples.png"),
                 f"{shown.upper()}: clean and adversarial inputs (data "
                 "units) with their predicted class")
