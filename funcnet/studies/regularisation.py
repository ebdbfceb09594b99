"""Study ``regularisation``: do L2, decoupled weight decay, dropout and early
stopping narrow the gap between training and test performance, and raise
test accuracy, in a regime where the plain network overfits?

The regime: few training examples (``train_per_class`` per class of
``data``), of which the fraction ``validation`` is held out as a validation
split (``data.validation``), and a wide network (``hidden``) trained with
Adam (``lr``) for ``epochs``. The test split is read once per run, at its
final params, for the reported numbers; every choice reads the validation
split only. Variants, each trained from every seed of ``seeds`` (``seed``:
init, shuffling, dropout; the data and its split stay fixed):

  none             Adam, no regularisation
  l2               coupled L2: ``g + lambda w`` fed to Adam (``optimizer.l2``),
                   so Adam rescales the decay by ``1 / sqrt(nu_hat)``
  weight_decay     decoupled weight decay, AdamW (``optimizer.name = "adamw"``,
                   ``optimizer.weight_decay``): ``w -= eta lambda w`` beside the
                   Adam step, not rescaled
  dropout          each hidden unit dropped with probability ``p`` in training
                   (``model.mlp.dropout``)
  early_stopping   stop once the validation loss has not improved for
                   ``patience`` epochs and end with the params of its lowest
                   value (``train.patience``, ``train.restore_best``)
  all              the chosen L2 and dropout, with early stopping

The strength of ``l2``, ``weight_decay`` and ``dropout`` is chosen from its
grid (the parameters of the same names) by the highest validation accuracy,
mean over seeds (ties: the lower validation loss): :func:`choose`. The runs
at the chosen strength are the variant's reported runs.

Train metrics are measured on the whole training split without dropout
(``train.make_evaluate``). The generalisation gap is ``train accuracy - test
accuracy`` and ``test loss - train loss`` at the final params. The claim's
clauses (:func:`decide`) compare each variant with ``none`` seed by seed
(:mod:`funcnet.studies.spread`), and the gap clauses are decided only when
the unregularised net fits its training set (train accuracy >=
``fit_accuracy``): a gap that narrows because every net underfits is no
evidence of regularisation.
"""

import jax
import numpy as np

from funcnet import config as config_lib, train
from funcnet.errors import ConfigError
from funcnet.experiment import Setup
from funcnet.studies import claims, spread
from funcnet.studies import regularisation_report as figures
from funcnet.studies.registry import Study, register

CLAIM = ("Whether coupled L2, decoupled weight decay (AdamW), dropout, early "
         "stopping and their combination narrow the train-test gap and raise "
         "test accuracy where a wide MLP memorises few examples (3 seeds, "
         "strengths chosen on validation).")

VARIANTS = ("none", "l2", "weight_decay", "dropout", "early_stopping", "all")
TUNED = ("l2", "weight_decay", "dropout")  # their strength chosen on validation
SPLITS = ("train", "val", "test")


def _overrides(p: dict, variant: str, strengths: dict, seed: int) -> list:
  base = [f'data.name="{p["data"]}"', f"data.train_per_class={p['train_per_class']}",
          f"data.validation={p['validation']}", f"model.mlp.hidden={p['hidden']}",
          f"train.epochs={p['epochs']}", f"train.batch_size={p['batch_size']}",
          f"optimizer.learning_rate={p['lr']}", f"seed={seed}", "run.plots=false"]
  def l2(s): return [f"optimizer.l2={float(s)!r}"]
  def wd(s): return ['optimizer.name="adamw"', f"optimizer.weight_decay={float(s)!r}"]
  def dropout(s): return [f"model.mlp.dropout={float(s)!r}"]
  early = [f"train.patience={p['patience']}", "train.restore_best=true"]
  s = strengths
  return base + {
      "none": lambda: [], "l2": lambda: l2(s["l2"]),
      "weight_decay": lambda: wd(s["weight_decay"]),
      "dropout": lambda: dropout(s["dropout"]), "early_stopping": lambda: early,
      "all": lambda: l2(s["l2"]) + dropout(s["dropout"]) + early}[variant]()


def train_one(overrides: list, evaluate=None) -> dict:
  """Trains one config; its per-epoch curves (train split without dropout,
  validation split) and its final train, validation and test metrics.

  ``evaluate``: a ``train.make_evaluate`` of this architecture (evaluation
  draws no dropout, so every variant computes the same function of its
  params and one jitted evaluator serves them all); None makes one. The
  test split (``ds.info["test"]``) is read once, after training.
  """
  setup = Setup(config_lib.load(None, overrides))
  ds = setup.ds
  if evaluate is None:
    evaluate = train.make_evaluate(setup.model, setup.loss, ds.task)
  on = {"train": train.as_arrays(ds.x_train, ds.y_train, setup.dtype),
        "val": train.as_arrays(ds.x_test, ds.y_test, setup.dtype)}
  curves = {k: [] for k in ("epoch", "train_loss", "train_accuracy",
                            "val_loss", "val_accuracy")}

  def measure(record, state, status):
    m = jax.device_get(evaluate(state.params, *on["train"]))
    curves["epoch"].append(record["epoch"])
    curves["train_loss"].append(float(m["loss"]))
    curves["train_accuracy"].append(float(m["accuracy"]))
    # The held-out split fit evaluates is the validation split here.
    curves["val_loss"].append(record.get("test_loss"))
    curves["val_accuracy"].append(record.get("test_accuracy"))

  res = setup.fit(callbacks=train.Callbacks(measure), norms=False)
  on["test"] = train.as_arrays(*ds.info["test"], setup.dtype)  # read once, here
  out = {"status": res.status, "epochs_run": len(res.history),
         "best_epoch": res.best_epoch, "curves": curves,
         "n_train": int(len(ds.y_train)), "n_val": int(len(ds.y_test)),
         "n_test": int(len(ds.info["test"][1]))}
  for split in SPLITS:
    m = jax.device_get(evaluate(res.state.params, *on[split]))
    out[f"{split}_loss"], out[f"{split}_accuracy"] = float(m["loss"]), float(m["accuracy"])
  out["gap_accuracy"] = out["train_accuracy"] - out["test_accuracy"]
  out["gap_loss"] = out["test_loss"] - out["train_loss"]
  return out


def choose(candidates: dict):
  """The strength whose runs have the highest mean validation accuracy
  (ties: the lowest mean validation loss). ``candidates``: ``{strength:
  [per-seed records]}``; only their ``val_*`` numbers are read."""
  def score(s):
    rs = candidates[s]
    acc = np.mean([r["val_accuracy"] for r in rs])
    loss = np.mean([r["val_loss"] for r in rs])
    return (acc if np.isfinite(acc) else -np.inf,
            -loss if np.isfinite(loss) else -np.inf)
  return max(candidates, key=score)


# --- the decision -------------------------------------------------------------

def _series(runs: dict) -> dict:
  """``{variant: {quantity: [per seed]}}``: the numbers :func:`decide` reads."""
  keys = ("train_accuracy", "test_accuracy", "gap_accuracy", "gap_loss",
          "val_accuracy")
  return {v: {k: [s[k] for s in r["seeds"]] for k in keys}
          for v, r in runs.items()}


def decide(measured: dict, p: dict) -> list:
  """The claim's clauses from ``measured = {variant: {"train_accuracy",
  "test_accuracy", "gap_accuracy", "gap_loss": [per seed]}}`` (seeds
  paired across variants) and the thresholds in ``p``: ``fit_accuracy``,
  ``min_gap_points``, ``min_gain_points``, ``min_loss_gap``, ``min_seeds``."""
  none = measured["none"]
  n, k = len(none["test_accuracy"]), p["min_seeds"]
  fit = float(np.mean(none["train_accuracy"]))
  fits = fit >= p["fit_accuracy"]
  out = [claims.clause(
      f"without regularisation the net fits its training set (mean train "
      f"accuracy >= {p['fit_accuracy']:g})", fits,
      f"train accuracy {spread.pm(none['train_accuracy'])}, test "
      f"{spread.pm(none['test_accuracy'])} over {n} seed(s)")]
  rule = "mean over seeds, and in every seed"
  for v in (v for v in VARIANTS if v in measured and v != "none"):
    r = measured[v]
    tests = (
        ("narrows the accuracy gap (train − test) by at least "
         f"{spread.points(p['min_gap_points'])}", "gap_accuracy", -1,
         p["min_gap_points"], True),
        (f"narrows the loss gap (test − train) by at least {p['min_loss_gap']:g}",
         "gap_loss", -1, p["min_loss_gap"], True),
        (f"raises test accuracy by at least {spread.points(p['min_gain_points'])}",
         "test_accuracy", 1, p["min_gain_points"], False))
    for text, key, sign, threshold, is_gap in tests:
      d = [sign * x for x in spread.paired(none[key], r[key])]
      evidence = (f"{key} {spread.pm(r[key])} vs none {spread.pm(none[key])}; "
                  f"paired change {spread.pm(d)} ({rule})")
      if is_gap:  # a gap also narrows when the net stops fitting its training set
        evidence += f"; its train accuracy {spread.pm(r['train_accuracy'])}"
      holds = spread.effect(d, threshold, k)
      if holds is None:
        evidence += f"; {spread.why_untested(n, k)}"
      elif is_gap and not fits:
        holds = None
        evidence += (f"; not decided: the unregularised net does not fit its "
                     f"training set (train accuracy {fit:.3f}), so a narrower "
                     "gap would come from underfitting")
      out.append(claims.clause(f"{v} {text}", holds, evidence))
  if "l2" in measured and "weight_decay" in measured:
    d = spread.paired(measured["l2"]["test_accuracy"],
                      measured["weight_decay"]["test_accuracy"])
    holds = spread.effect(d, p["min_gain_points"], k)
    out.append(claims.clause(
        "decoupled weight decay (AdamW) reaches a higher test accuracy than "
        f"coupled L2 by at least {spread.points(p['min_gain_points'])}, each "
        "at its validation-chosen strength", holds,
        f"weight_decay {spread.pm(measured['weight_decay']['test_accuracy'])} vs "
        f"l2 {spread.pm(measured['l2']['test_accuracy'])}; paired {spread.pm(d)}"
        + ("" if holds is not None else f"; {spread.why_untested(n, k)}")))
  return out


# --- the study ----------------------------------------------------------------

def _check(p: dict) -> None:
  for v in p["variants"]:
    if v not in VARIANTS:
      raise ConfigError(f"study parameter 'variants' names {v!r}; expected "
                        f"names from {', '.join(VARIANTS)}")
  if "none" not in p["variants"]:
    raise ConfigError("study parameter 'variants' must include \"none\": "
                      "every clause compares with it")
  for key in ("seeds",) + TUNED:
    if not p[key] or len(set(p[key])) != len(p[key]):
      raise ConfigError(f"study parameter {key!r} = {p[key]!r}; expected a "
                        "non-empty list of distinct values")


def _evaluator(p: dict):
  """One jitted evaluator of the study's architecture, shared by its runs."""
  first = Setup(config_lib.load(None, _overrides(p, "none", {}, p["seeds"][0])))
  return train.make_evaluate(first.model, first.loss, first.ds.task)


def _measure(p: dict) -> dict:
  """Every variant's runs, the tuned ones at their chosen strength."""
  evaluate = _evaluator(p)

  def runs(variant, strengths):
    return [train_one(_overrides(p, variant, strengths, s), evaluate)
            for s in p["seeds"]]

  needed = {t for t in TUNED if t in p["variants"]}
  if "all" in p["variants"]:
    needed |= {"l2", "dropout"}
  out, chosen = {}, {}
  for t in TUNED:
    if t not in needed:
      continue
    grid = {f"{s:g}": runs(t, {t: s}) for s in p[t]}
    chosen[t] = choose(grid)
    if t in p["variants"]:
      out[t] = {"strength": float(chosen[t]), "seeds": grid[chosen[t]],
                "grid": {s: _summary(rs) for s, rs in grid.items()}}
  for v in ("none", "early_stopping", "all"):
    if v in p["variants"]:
      out[v] = {"strength": None, "seeds": runs(v, chosen)}
  return {v: out[v] for v in p["variants"]}, chosen


def _summary(records) -> dict:
  """Mean and std over seeds of each number of the runs."""
  keys = [f"{s}_{q}" for s in SPLITS for q in ("accuracy", "loss")] + [
      "gap_accuracy", "gap_loss", "epochs_run"]
  out = {}
  for k in keys:
    out[k], out[f"{k}_std"] = spread.mean_std([r[k] for r in records])
  return out


def _run(out: str, p: dict) -> dict:
  _check(p)
  runs, chosen = _measure(p)
  for r in runs.values():
    r.update(_summary(r["seeds"]))
  c = decide(_series(runs), p)
  pics = figures.draw(out, p, runs, c)
  return {"variants": runs, "chosen": chosen, "claims": c,
          "readme": {"title": "regularisation: which regularisers narrow the "
                              "generalisation gap, over seeds",
                     "measured": figures.measured(p, runs, chosen),
                     "figures": pics, "table": figures.table(runs)}}


STUDY = register(Study(
    name="regularisation",
    claim=CLAIM,
    run=_run,
    defaults={"variants": list(VARIANTS), "data": "mnist1d",
              "train_per_class": 50, "validation": 0.2, "hidden": [256, 256],
              "epochs": 100, "batch_size": 32, "lr": 0.001,
              "l2": [0.001, 0.01, 0.1], "weight_decay": [0.1, 1.0, 10.0],
              "dropout": [0.2, 0.5, 0.7], "patience": 10, "seeds": [0, 1, 2],
              "fit_accuracy": 0.99, "min_gap_points": 0.02,
              "min_loss_gap": 0.1, "min_gain_points": 0.01, "min_seeds": 3},
    quick={"variants": ["none", "l2", "weight_decay", "early_stopping"],
           "epochs": 25, "seeds": [0], "l2": [0.01], "weight_decay": [1.0]},
))
