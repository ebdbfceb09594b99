"""The ``vanishing-exploding`` claim as clauses, decided by the study's numbers.

:func:`decide` is a pure function of the measurements (the dict
:func:`funcnet.studies.vanishing_exploding.measure` returns) and the study's
parameters, so a test can feed it perturbed numbers. The thresholds:

  VANISH, EXPLODE   rho_1 = ||delta_1|| / ||delta_L|| below 1e-2 vanishes,
                    above 1e2 explodes (a hundredfold either way)
  LEVEL             every rho_l within [1/10, 10] keeps the gradient level
  EXACT             hand-written backprop vs jax.grad per layer, float64
  CHANCE, LEARNS    test accuracy below 0.2 is chance (10 classes), at or
                    above 0.5 the net learns (mean over seeds)
  CONSTANT, LN10    a constant output puts >= 99% of predictions in one class;
                    its loss is near ln 10, a uniform guess
  REACH             ||dC/dh_1|| / ||dC/dh_T|| >= 1e-2: the gradient reaches
                    the first step
"""

import math

import numpy as np

from funcnet.studies import claims as claims_lib

VANISH, EXPLODE, LEVEL = 1e-2, 1e2, 10.0
EXACT = 1e-10
CHANCE, LEARNS, GRU_LEARNS = 0.2, 0.5, 0.7
CONSTANT = 0.99
LN10 = math.log(10)
REACH = 1e-2
SEEDS = 3
"""Clauses about trained nets need this many seeds (untested below it)."""


def choose(rows: list, key: str = "val_accuracy") -> dict:
  """The row with the highest mean ``key`` over its seeds: every choice of
  the study (the clip setting, the RNN's rate) reads validation numbers,
  never the test split."""
  return max(rows, key=lambda r: np.mean(r[key]))


def _first(rho):
  return [r[0] for r in rho]


def _g(xs) -> str:
  return ", ".join("–" if x is None else f"{x:.2g}" for x in xs)


def _mean(xs):
  xs = [x for x in xs if x is not None]
  return float(np.mean(xs)) if xs else None


def _mean_sd(xs) -> str:
  xs = [x for x in xs if x is not None]
  return f"{np.mean(xs):.3f} ± {np.std(xs):.3f}" if xs else "–"


def _missing(text, names):
  return claims_lib.clause(text, None, f"{', '.join(names)} not in this run's configs")


def _layers(m, p) -> list:
  L, n = m["per_layer"], len(p["seeds"])
  out = []
  sig = [k for k in ("sigmoid/xavier", "sigmoid/normal") if k in L]
  text = (f"with sigmoid the error vanishes towards the input: ||δ_1||/||δ_L|| "
          f"< {VANISH:g} at init on every seed")
  out.append(claims_lib.clause(
      text, all(max(_first(L[k]["rho"])) < VANISH for k in sig),
      "; ".join(f"{k}: {_g(_first(L[k]['rho']))}" for k in sig) + f" ({n} seeds)")
      if sig else _missing(text, ["sigmoid/xavier", "sigmoid/normal"]))
  text = (f"relu with N(0, 1) weights explodes: ||δ_1||/||δ_L|| > {EXPLODE:g} at "
          f"init on every seed")
  e = L.get("relu/normal")
  out.append(claims_lib.clause(
      text, min(_first(e["rho"])) > EXPLODE, f"{_g(_first(e['rho']))} ({n} seeds)")
      if e else _missing(text, ["relu/normal"]))
  level = [k for k in ("relu/he", "tanh/xavier") if k in L]
  text = (f"He init (relu) and Xavier (tanh) keep every layer's ||δ_l||/||δ_L|| "
          f"within [{1 / LEVEL:g}, {LEVEL:g}] on every seed")

  def span(k):
    r = np.asarray(L[k]["rho"])
    return float(np.min(r)), float(np.max(r))
  out.append(claims_lib.clause(
      text, all(1 / LEVEL <= span(k)[0] and span(k)[1] <= LEVEL for k in level),
      "; ".join(f"{k}: {span(k)[0]:.2g}–{span(k)[1]:.2g}" for k in level))
      if level else _missing(text, ["relu/he", "tanh/xavier"]))
  text = (f"the weight-gradient ratio ||dC/dθ_1||/||dC/dθ_L|| hides relu/normal's "
          f"explosion: below {LEVEL:g} on every seed")
  out.append(claims_lib.clause(
      text, max(_first(e["weight_ratio"])) < LEVEL,
      f"{_g(_first(e['weight_ratio']))}; its last-layer weight gradient "
      f"{_g(e['last_weight_grad'])}") if e else _missing(text, ["relu/normal"]))
  d = m["max_rel_diff_manual_autodiff"]
  out.append(claims_lib.clause(
      f"the hand-written backprop and jax.grad agree per layer to <= {EXACT:g} "
      "(float64, relative)", d <= EXACT, f"largest difference {d:.2g}"))
  return out


def _clipping(m, p) -> list:
  c = m["clipping"]
  if c is None:
    return [claims_lib.clause("clipping", None, "clip_epochs = 0: not run")]
  rows = c["grid"]
  row = lambda lr, clip: next(r for r in rows if r["lr"] == lr and r["clip_norm"] == clip)
  lr, clip = p["clip_lr"], p["clip_norm"]
  bare, clipped = row(lr, 0.0), row(lr, clip)
  trained = len(p["seeds"]) >= SEEDS and p["clip_epochs"] >= 5
  why = "" if trained else f" (--quick: {len(p['seeds'])} seed(s), {p['clip_epochs']} epoch(s))"
  n_div = sum(s == "diverged" for s in bare["status"])
  out = [claims_lib.clause(
      f"under SGD at lr {lr:g}, clip_norm {clip:g} keeps relu/normal's loss finite "
      "on every seed, where without clipping it diverges on at least one",
      n_div > 0 and all(s != "diverged" for s in clipped["status"]),
      f"unclipped diverged on {n_div} of {len(bare['status'])} seeds; clipped "
      f"final train loss {_g(clipped['train_loss'])}")]
  acc = _mean(clipped["accuracy"])
  out.append(claims_lib.clause(
      f"but the clipped net does not learn: mean test accuracy < {CHANCE:g} "
      "(chance 0.1)", (acc is not None and acc < CHANCE) if trained else None,
      f"test accuracy {_mean_sd(clipped['accuracy'])}; share of predictions in "
      f"one class {_g(clipped['constant'])}; test loss {_g(clipped['loss'])} "
      f"vs ln 10 = {LN10:.3f}" + why))
  cands = [r for r in rows if r["clip_norm"] > 0]
  best = choose(cands)
  acc = _mean(best["accuracy"])
  out.append(claims_lib.clause(
      f"some clip_norm and rate of the grid let it learn: the best on validation "
      f"reaches mean test accuracy >= {LEARNS:g}",
      (acc is not None and acc >= LEARNS) if trained else None,
      f"best on validation: lr {best['lr']:g}, clip_norm {best['clip_norm']:g}, "
      f"test accuracy {_mean_sd(best['accuracy'])}, one class "
      f"{_g(best['constant'])}; grid lr {p['clip_lrs']} x clip {p['clip_norms']}" + why))
  return out


def _time(m, p) -> list:
  R, out = m["recurrent"], []
  rnn = R.get("tanh RNN")
  gated = [r for r in R.values() if r["update_bias"] is not None]   # the GRUs
  gru0 = next((r for r in gated if r["update_bias"] == 0), None)
  grub = max((r for r in gated if r["update_bias"] > 0),
             key=lambda r: r["update_bias"], default=None)
  first = lambda r: [x[0] if x else 0.0 for x in r["init"]]
  if rnn and gru0:
    out.append(claims_lib.clause(
        "at init the GRU with zero gate biases passes less of the gradient back "
        "to t = 1 than the tanh RNN (||dC/dh_1||/||dC/dh_T||, every seed)",
        max(first(gru0)) < min(first(rnn)),
        f"GRU {_g(first(gru0))} vs tanh RNN {_g(first(rnn))}"))
  if grub:
    out.append(claims_lib.clause(
        f"a positive update-gate bias (b_u = {grub['update_bias']:g}) lets the "
        f"GRU's gradient reach t = 1 at init: ratio >= {REACH:g} on every seed",
        min(first(grub)) >= REACH,
        f"{_g(first(grub))}" + (f" vs {_g(first(gru0))} with b_u = 0" if gru0 else "")))
  trained = len(p["seeds"]) >= SEEDS and p["rnn_epochs"] >= 3
  why = "" if trained else f" (--quick: {len(p['seeds'])} seed(s), {p['rnn_epochs']} epoch(s))"
  if rnn and rnn["rates"]:
    acc = {r["lr"]: _mean(r["accuracy"]) for r in rnn["rates"]}
    best = choose(rnn["rates"])
    reach = [x for x in best["first_over_last"] if x is not None]
    out.append(claims_lib.clause(
        f"the tanh RNN learns at the rate chosen on validation (mean test "
        f"accuracy >= {LEARNS:g}) and there its trained gradient reaches t = 1 "
        f"(ratio >= {REACH:g} on every seed)",
        (acc[best["lr"]] is not None and acc[best["lr"]] >= LEARNS
         and len(reach) == len(best["first_over_last"]) and min(reach) >= REACH)
        if trained else None,
        f"Adam lr {best['lr']:g}: test accuracy {_mean_sd(best['accuracy'])}, "
        f"ratio {_g(best['first_over_last'])}" + why))
    top = max(acc)
    out.append(claims_lib.clause(
        f"at the largest rate, Adam {top:g}, the tanh RNN does not learn "
        f"(mean test accuracy < {LEARNS:g})",
        (acc[top] is not None and acc[top] < LEARNS) if trained else None,
        "mean test accuracy by rate: " + ", ".join(
            f"{lr:g}: {'–' if a is None else f'{a:.3f}'}" for lr, a in acc.items()) + why))
  elif rnn:
    out += [claims_lib.clause(t, None, f"not trained (rnn_epochs = {p['rnn_epochs']})")
            for t in (f"the tanh RNN learns at the rate chosen on validation (mean "
                      f"test accuracy >= {LEARNS:g}) and there its trained gradient "
                      f"reaches t = 1 (ratio >= {REACH:g} on every seed)",
                      f"at the largest rate the tanh RNN does not learn (mean test "
                      f"accuracy < {LEARNS:g})")]
  grus = [(k, r) for k, r in R.items() if r["update_bias"] is not None]
  if grus and not any(r["rates"] for _, r in grus):
    out.append(claims_lib.clause(
        f"the GRU learns at every rate of the range with every bias (mean test "
        f"accuracy >= {GRU_LEARNS:g})", None,
        f"not trained (rnn_epochs = {p['rnn_epochs']})"))
  elif grus:
    accs = {(k, x["lr"]): _mean(x["accuracy"]) for k, r in grus for x in r["rates"]}
    out.append(claims_lib.clause(
        f"the GRU learns at every rate of the range with every bias (mean test "
        f"accuracy >= {GRU_LEARNS:g})",
        all(a is not None and a >= GRU_LEARNS for a in accs.values()) if trained else None,
        "; ".join(f"{k} lr {lr:g}: {'–' if a is None else f'{a:.3f}'}"
                  for (k, lr), a in accs.items()) + why))
  return out


def decide(m: dict, p: dict) -> list:
  """The clauses of the claim, each with ``holds`` and its evidence."""
  return _layers(m, p) + _clipping(m, p) + _time(m, p)
