"""Study ``architecture``: width x depth of an MLP on one task, where depth
helps and where it stops helping.

Every MLP with ``depth`` hidden layers of ``width`` relu units, for each
``width`` of ``widths`` and ``depth`` of ``depths`` (depth 0, softmax on the
inputs, is logistic regression: one model whatever the width), on ``data``,
trained with ``optimizer`` at ``learning_rate`` for ``epochs`` epochs of
``batch_size``, every seed of ``seeds``, by :func:`funcnet.sweep.run`. Each
architecture is one compiled program (its shapes differ), its seeds trained
together in it.

The fraction ``validation`` of the training split is held out
(``data.validation``): it is the split the sweep evaluates, and every
choice (the best depth per width, the best architecture: :func:`choose`)
reads it only. The test split is read once per variant, at its final
params, for the reported numbers.

A dense layer ``n_in -> n_out`` holds ``(n_in + 1) n_out`` parameters (the
weights and the bias), so the network ``n_0 -> h_1 -> ... -> h_d -> n_out``
holds their sum; the study counts them in the trained params. Reported per
architecture, mean ± std (``ddof = 1``) over seeds: that count, the final
validation and test accuracy and loss, the final training loss (the last
epoch's mean over its steps), and the seconds per step of one variant: the
program's time from the end of its first epoch (which pays for compilation)
to the end of its last, over the steps in between and the seeds it trains
together. The claim's clauses (:func:`decide`) compare architectures seed by
seed (:mod:`funcnet.studies.spread`).
"""

import json
import os

import jax
import numpy as np

from funcnet import config as config_lib, experiment, sweep, tasks, train
from funcnet.errors import ConfigError
from funcnet.studies import architecture_report as figures
from funcnet.studies import claims, spread
from funcnet.studies.registry import Study, register

CLAIM = ("Whether, on MNIST-1D, a first hidden layer lifts an MLP far above "
         "logistic regression and a second adds less, further layers change "
         "test accuracy by a few points at most while the training loss keeps "
         "falling, and width helps at every depth (3 seeds, depth chosen on "
         "validation).")

HIDDEN, SEED = "model.mlp.hidden", "seed"


def hidden_layers(widths, depths) -> list:
  """The grid's ``model.mlp.hidden`` values: ``[w] * d`` for each width and
  depth, depth 0 (``[]``) once."""
  out = [[]] if 0 in depths else []
  return out + [[w] * d for w in widths for d in depths if d > 0]


def _config(p: dict) -> dict:
  return config_lib.load(None, [
      f'data.name="{p["data"]}"', f"data.validation={p['validation']}",
      f'optimizer.name="{p["optimizer"]}"',
      f"optimizer.learning_rate={p['learning_rate']}",
      f"train.epochs={p['epochs']}", f"train.batch_size={p['batch_size']}",
      "run.plots=false"])  # the sweep's own figures; the study draws its own


def _sweep(out: str, p: dict):
  grid = {HIDDEN: hidden_layers(p["widths"], p["depths"]), SEED: p["seeds"]}
  return sweep.run(_config(p), grid, os.path.join(out, "sweep") if p["runs"] else None,
                   log=lambda *a: None)


def _seconds_per_step(group: list) -> float:
  """Seconds per step of one variant of a group trained in one program."""
  h = max((v.history for v in group), key=len)
  if len(h) > 1:
    seconds, steps = h[-1]["time"] - h[0]["time"], h[-1]["step"] - h[0]["step"]
  else:
    seconds, steps = group[0].group_wall_s, h[0]["step"]
  return seconds / steps / len(group)


def _final_test(vs, ds) -> list:
  """Each variant's test metrics at its final params (NaN where it
  diverged): the one read of the test split."""
  setup = experiment.Setup(vs[0].cfg, ds=ds)
  evaluate = train.make_evaluate(setup.model, setup.loss, ds.task)
  x, y = train.as_arrays(*ds.info["test"], setup.dtype)
  out = []
  for v in vs:
    if v.status == "diverged":
      out.append({"loss": np.nan, "accuracy": np.nan})
    else:
      out.append({k: float(m) for k, m in
                  jax.device_get(evaluate(v.params, x, y)).items()})
  return out


def _per_seed(v, test: dict) -> dict:
  ok = v.status != "diverged"
  val = v.final if ok else {}
  return {"seed": v.assignment[SEED], "status": v.status,
          "val_accuracy": val.get("test_accuracy", np.nan),
          "val_loss": val.get("test_loss", np.nan),
          "train_loss": v.history[-1]["train_loss"] if ok else np.nan,
          "test_accuracy": test["accuracy"], "test_loss": test["loss"]}


def _measure(result, p: dict) -> dict:
  """Per architecture its per-seed numbers and their mean ± std."""
  by_hidden = {}
  for v in result.variants:
    by_hidden.setdefault(json.dumps(v.assignment[HIDDEN]), []).append(v)
  ds = experiment.build_dataset(result.variants[0].cfg)
  archs = []
  for key, vs in by_hidden.items():
    hidden = json.loads(key)
    seeds = [_per_seed(v, t) for v, t in zip(vs, _final_test(vs, ds))]
    a = {"hidden": hidden, "depth": len(hidden),
         "width": hidden[0] if hidden else 0,
         "params": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(vs[0].params))),
         "seeds": seeds, "seconds_per_step": _seconds_per_step(vs),
         "group_wall_s": vs[0].group_wall_s}
    for k in ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "train_loss"):
      a[k], a[f"{k}_std"] = spread.mean_std([s[k] for s in seeds])
    archs.append(a)
  best_depth, best = choose(archs, p["widths"], p["depths"])
  return {"task": p["data"], "architectures": archs, "best_depth": best_depth,
          "best": best, "groups": result.groups, "sweep_wall_s": result.wall_s,
          "n_test": int(len(ds.info["test"][1])), "n_val": int(len(ds.y_test)),
          "n_train": int(len(ds.y_train))}


def choose(archs: list, widths, depths) -> tuple:
  """``({width: depth}, hidden)``: per width the depth with the highest mean
  validation accuracy, and the best architecture overall; only the
  architectures' ``val_accuracy`` is read (NaN: never chosen)."""
  def score(a):
    return a["val_accuracy"] if np.isfinite(a["val_accuracy"]) else -np.inf
  find = {(a["width"], a["depth"]): a for a in archs}
  best_depth = {}
  for w in widths:
    line = [find[(0 if d == 0 else w, d)] for d in depths]
    best_depth[w] = max(line, key=score)["depth"]
  return best_depth, max(archs, key=score)["hidden"]


# --- the decision -------------------------------------------------------------

def _series(m: dict, p: dict) -> dict:
  """``{"acc"|"train_loss": {(width, depth): [per seed]}, "best_depth"}``:
  the numbers :func:`decide` reads."""
  out = {"acc": {}, "train_loss": {}, "best_depth": m["best_depth"],
         "widths": list(p["widths"]), "depths": list(p["depths"])}
  for a in m["architectures"]:
    for w in (p["widths"] if a["depth"] == 0 else [a["width"]]):
      out["acc"][w, a["depth"]] = [s["test_accuracy"] for s in a["seeds"]]
      out["train_loss"][w, a["depth"]] = [s["train_loss"] for s in a["seeds"]]
  return out


def _all(results: list):
  """A clause over widths/depths: False if any part fails, else None if
  any is untested, else True."""
  if any(r is not None and not r for r in results):  # numpy bools too
    return False
  return None if any(r is None for r in results) else True


def decide(s: dict, p: dict) -> list:
  """The claim's clauses from ``s`` (:func:`_series`: per ``(width, depth)``
  the per-seed test accuracy and final training loss, seeds paired; per
  width the depth chosen on validation) and the thresholds in ``p``:
  ``min_first_layer``, ``max_later_change``, ``min_seeds``."""
  acc, tl, W, D, k = s["acc"], s["train_loss"], s["widths"], s["depths"], p["min_seeds"]
  n = len(next(iter(acc.values())))
  note = "" if n >= k else f"; {spread.why_untested(n, k)}"
  out = []

  def gains(w, d):  # per seed, acc(w, d) - acc(w, d - 1)
    return spread.paired(acc[w, d - 1], acc[w, d])

  if {0, 1} <= set(D):
    r = [spread.effect(gains(w, 1), p["min_first_layer"], k) for w in W]
    out.append(claims.clause(
        f"a first hidden layer lifts test accuracy above logistic regression by "
        f"at least {spread.points(p['min_first_layer'])} at every width "
        "(mean, and in every seed)", _all(r),
        "; ".join(f"width {w}: {spread.pm(gains(w, 1))}" for w in W) + note))
  if {0, 1, 2} <= set(D):
    d = {w: spread.paired(gains(w, 2), gains(w, 1)) for w in W}
    r = [spread.effect(d[w], 0.0, k) for w in W]
    out.append(claims.clause(
        "a second hidden layer adds less test accuracy than the first at every "
        "width (in every seed)", _all(r), "; ".join(
            f"width {w}: first {spread.pm(gains(w, 1))}, second "
            f"{spread.pm(gains(w, 2))}" for w in W) + note))
  later = [d for d in D if d > 2]
  if 2 in D and later:
    change = {(w, d): spread.paired(acc[w, 2], acc[w, d]) for w in W for d in later}
    r = [None if n < k else bool(abs(np.mean(c)) <= p["max_later_change"])
         for c in change.values()]
    out.append(claims.clause(
        f"layers beyond the second change mean test accuracy by at most "
        f"{spread.points(p['max_later_change'])} at every width", _all(r),
        "change from depth 2: " + "; ".join(
            f"width {w} depth {d}: {spread.pm(c)}" for (w, d), c in change.items())
        + note))
    drops = {(w, d): spread.paired(tl[w, d], tl[w, d - 1]) for w in W for d in later}
    r = [spread.effect(c, 0.0, k) for c in drops.values()]
    out.append(claims.clause(
        "the final training loss keeps falling with each layer beyond the "
        "second at every width (in every seed)", _all(r),
        "fall per added layer: " + "; ".join(
            f"width {w} depth {d}: {spread.pm(c, '{:.3g}')}"
            for (w, d), c in drops.items()) + note))
  if len(W) > 1:
    pairs = [(a, b, d) for a, b in zip(W, W[1:]) for d in D if d > 0]
    r = [spread.effect(spread.paired(acc[a, d], acc[b, d]), 0.0, k) for a, b, d in pairs]
    out.append(claims.clause(
        "width helps at every depth: each wider net has a higher test accuracy "
        "(in every seed)", _all(r), "; ".join(
            f"depth {d} width {a}->{b}: {spread.pm(spread.paired(acc[a, d], acc[b, d]))}"
            for a, b, d in pairs) + note))
  if max(D) >= 2:
    bd = s["best_depth"]
    out.append(claims.clause(
        "the depth chosen on validation is at least 2 at every width",
        all(bd[w] >= 2 for w in W),
        "best depth by mean validation accuracy: " + ", ".join(
            f"width {w}: {bd[w]}" for w in W)))
  return out


# --- the study ------------------------------------------------------------------

def _check(p: dict) -> None:
  for key in ("widths", "depths", "seeds"):
    if not p[key] or len(set(p[key])) != len(p[key]):
      raise ConfigError(f"study parameter {key!r} = {p[key]!r}; expected a "
                        "non-empty list of distinct values")
  if any(not isinstance(w, int) or w < 1 for w in p["widths"]):
    raise ConfigError(f"study parameter 'widths' = {p['widths']!r}; expected "
                      "positive integers")
  if any(not isinstance(d, int) or d < 0 for d in p["depths"]) or \
      list(p["depths"]) != sorted(p["depths"]):
    raise ConfigError(f"study parameter 'depths' = {p['depths']!r}; expected "
                      "integers >= 0 in increasing order")


def _run(out: str, p: dict) -> dict:
  _check(p)
  result = _sweep(out, p)
  if "accuracy" not in tasks.get(result.variants[0].task).metric_names:
    raise ConfigError(f"study parameter 'data' = {p['data']!r}; expected a "
                      "classification set (the study reads test accuracy)")
  m = _measure(result, p)
  c = decide(_series(m, p), p)
  return {**m, "claims": c,
          "readme": {"title": "architecture: where depth and width help, over seeds",
                     "measured": figures.measured(m, p),
                     "figures": [figures.plot(out, m, p, c)],
                     "table": figures.table(m)}}


STUDY = register(Study(
    name="architecture",
    claim=CLAIM,
    run=_run,
    defaults={
        "data": "mnist1d",
        "widths": [32, 128, 256],
        "depths": [0, 1, 2, 3, 4],
        "seeds": [0, 1, 2],
        "validation": 0.2,           # of the training split, for every choice
        "epochs": 20,
        "batch_size": 64,
        "optimizer": "adam",
        "learning_rate": 0.001,
        "runs": False,               # also write the sweep, every variant a run folder
        "min_seeds": 3,              # fewer: the clauses are not decided
        "min_first_layer": 0.10,     # a first layer's gain over logistic regression
        "max_later_change": 0.03,    # "a few points at most"
    },
    quick={"widths": [128], "depths": [0, 1, 2, 3], "seeds": [0]},
))
