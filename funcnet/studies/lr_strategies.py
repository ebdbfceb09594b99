"""Study ``lr-strategies``: the article's three learning-rate strategies side
by side on one task, each at its own tuned rate.

  fixed      sgd with a constant rate eta
  decayed    sgd with eta_t falling over the run (:mod:`funcnet.schedules`),
             each with and without a linear warm-up from 0
  adaptive   adagrad, rmsprop, adam at the constant rate eta: each scales the
             step per parameter by its gradients' history

An MLP (``hidden``) on ``data`` for ``epochs`` of ``batch_size``, so ``T =
epochs * (n_train // batch_size)`` steps, with a validation split of
``validation`` carved from training (``data.validation``). Every strategy
trains at every peak rate ``eta`` of ``learning_rates`` and every seed of
``seeds`` (one :mod:`funcnet.sweep` program per strategy). Its *tuned* rate
is the one with the lowest final validation loss, mean over seeds, among the
rates where no seed diverged (Choi et al. 2019 compare optimizers this
way); a run *diverged* when the divergence guard stopped it (a non-finite
loss) or its training loss grew: some epoch's mean above twice ``ln n_out``
(a uniform guess's loss), or the last epoch's above the first's. Only
then, at the tuned rates, is the test split read, once per run, for the
final numbers. The *shared-rate* view is every strategy at the one
rate ``shared_lr`` (from the same sweep).

The decays are set so that each ends at ``final_fraction * eta`` on the last
step; with warm-up the first ``W = round(warmup_fraction * T)`` steps ramp
from 0 to eta and the decay runs over the remaining ``T - W``:

  step_decay          eta r^floor(t / s),  s = ceil((T - W) / 3),  r = final_fraction^(1/2)
  exponential_decay   eta final_fraction^(t / (T - W))
  cosine_decay        eta [(1 - a) (1 + cos(pi t / (T - W))) / 2 + a],  a = final_fraction

(``W = 0`` without warm-up.) ``lr_curves`` in the results holds every
strategy's rate at each step ``t = 0..T-1`` for ``eta = shared_lr`` (the
optimizer's step ``t`` uses rate ``t``), as the schedule the optimizer runs
on computes it, for all of them, whether ``strategies`` trains them or not.

What the numbers say is decided by :func:`decide`, a pure function of them.
"""

import math

import jax.numpy as jnp
import numpy as np

from funcnet import config as config_lib
from funcnet.errors import ConfigError
from funcnet.experiment import Setup
from funcnet.experiment.summary import test_record
from funcnet.studies import claims, report
from funcnet.studies.registry import Study, register
from funcnet.sweep import grid as grid_lib, train_variants

CLAIM = ("Fixed, decayed and adaptive learning rates on one network, each "
         "strategy at its own tuned rate (and all at one shared rate): which "
         "trains faster and generalises better?")

DECAYS = ("step_decay", "exponential_decay", "cosine_decay")
ADAPTIVE = ("adagrad", "rmsprop", "adam")
STRATEGIES = (["sgd"] + [d + w for d in DECAYS for w in ("", "+warmup")]
              + list(ADAPTIVE))


def family(strategy: str) -> str:
  if strategy == "sgd":
    return "fixed"
  return "adaptive" if strategy in ADAPTIVE else "decayed"


def schedule_overrides(strategy: str, total: int, warmup: int,
                       final_fraction: float) -> list:
  """The ``[optimizer]`` and ``[schedule]`` keys of one strategy."""
  if strategy in ADAPTIVE:
    return [f'optimizer.name="{strategy}"']
  out = ['optimizer.name="sgd"']
  if strategy == "sgd":
    return out
  name, _, warm = strategy.partition("+")
  w = warmup if warm else 0
  horizon = total - w
  out.append(f'schedule.name="{name}"')
  if w:
    out.append(f"schedule.warmup_steps={w}")
  if name == "step_decay":
    out += [f"schedule.step_size={math.ceil(horizon / 3)}",
            f"schedule.decay_rate={final_fraction ** 0.5}"]
  elif name == "exponential_decay":
    out += [f"schedule.decay_steps={horizon}",
            f"schedule.decay_rate={final_fraction}"]
  else:
    out += [f"schedule.decay_steps={horizon}", f"schedule.alpha={final_fraction}"]
  return out


def _config(p, strategy, lr, seed, total, warmup) -> dict:
  return config_lib.load(None, [
      f'data.name="{p["data"]}"', f"data.validation={p['validation']}",
      f"model.mlp.hidden={p['hidden']}", f"train.epochs={p['epochs']}",
      f"train.batch_size={p['batch_size']}", f"optimizer.learning_rate={lr}",
      f"seed={seed}",
      *schedule_overrides(strategy, total, warmup, p["final_fraction"])])


def _steps(p) -> tuple:
  """``(steps_per_epoch, T, W)`` on the training split left after the
  validation split is carved out."""
  probe = Setup(config_lib.load(None, [f'data.name="{p["data"]}"',
                                       f"data.validation={p['validation']}"]))
  per_epoch = len(probe.ds.y_train) // p["batch_size"]
  total = p["epochs"] * per_epoch
  return per_epoch, total, round(p["warmup_fraction"] * total)


def _check(p):
  for s in p["strategies"]:
    if s not in STRATEGIES:
      raise ConfigError(f"study parameter 'strategies' names {s!r}; expected "
                        f"names from {', '.join(STRATEGIES)}")
  if not p["learning_rates"] or p["shared_lr"] not in p["learning_rates"]:
    raise ConfigError(f"study parameters 'learning_rates' = {p['learning_rates']!r} "
                      f"and 'shared_lr' = {p['shared_lr']!r}; expected a non-empty "
                      "list of rates that holds shared_lr, e.g. [0.01, 0.1] and 0.01")
  if not p["seeds"] or not 0 < p["validation"] < 1:
    raise ConfigError(f"study parameters 'seeds' = {p['seeds']!r} and 'validation' = "
                      f"{p['validation']!r}; expected at least one seed and a "
                      "fraction in (0, 1)")
  if not 0 < p["final_fraction"] <= 1 or not 0 <= p["warmup_fraction"] < 1:
    raise ConfigError("study parameters 'final_fraction' in (0, 1] and "
                      "'warmup_fraction' in [0, 1) expected; got "
                      f"{p['final_fraction']!r} and {p['warmup_fraction']!r}")


# --- measurement ------------------------------------------------------------------

def _train(p, total, warmup) -> dict:
  """Every (strategy, rate, seed), one sweep program per strategy:
  ``{strategy: {rate: [VariantResult per seed]}}``."""
  keys, vs = [], []
  for s in p["strategies"]:
    for lr in p["learning_rates"]:
      for seed in p["seeds"]:
        keys.append((s, lr))
        vs.append(grid_lib.Variant(len(vs), {"strategy": s, "lr": lr, "seed": seed},
                                   _config(p, s, lr, seed, total, warmup)))
  out = {}
  for (s, lr), r in zip(keys, train_variants(vs, log=lambda *a, **k: None)):
    out.setdefault(s, {}).setdefault(lr, []).append(r)
  return out


def diverged(v) -> bool:
  """Stopped by the divergence guard, or its training loss grew: some
  epoch's mean above twice ``ln n_out`` (a uniform guess's loss, about where
  a network starts), or the last epoch's above the first's."""
  h, chance = v.history, 2 * math.log(v.model.n_out)
  return (v.status == "diverged" or not h
          or any(not r["train_loss"] <= chance for r in h)
          or not h[-1]["train_loss"] < h[0]["train_loss"]
          or not math.isfinite(h[-1].get("test_loss", math.nan)))


def _mean_std(xs) -> tuple:
  return float(np.mean(xs)), float(np.std(xs))


def summarise(seeds_runs) -> dict:
  """One (strategy, rate) over its seeds: final validation loss and
  accuracy, final training loss (mean and std), the per-epoch means, and
  whether any seed diverged. Reads only the validation split (the history's
  ``test_*`` is the validation split under ``data.validation``)."""
  bad = any(diverged(v) for v in seeds_runs)
  row = {"diverged": bad, "seeds": len(seeds_runs)}
  if bad:
    return row
  for key, name in (("test_loss", "val_loss"), ("test_accuracy", "val_accuracy"),
                    ("train_loss", "train_loss")):
    row[name], row[name + "_std"] = _mean_std([v.history[-1][key] for v in seeds_runs])
  row["train_loss_curve"] = np.mean([[h["train_loss"] for h in v.history]
                                     for v in seeds_runs], 0).tolist()
  row["val_accuracy_curve"] = np.mean([[h["test_accuracy"] for h in v.history]
                                       for v in seeds_runs], 0).tolist()
  return row


def tune(by_lr: dict):
  """The rate with the lowest mean final validation loss among those where
  no seed diverged (the smaller on a tie); None when every rate diverged."""
  ok = [lr for lr, r in by_lr.items() if not r["diverged"]]
  return min(ok, key=lambda lr: (by_lr[lr]["val_loss"], lr)) if ok else None


def _test_numbers(seeds_runs) -> dict:
  """The test split's accuracy and loss (mean, std over seeds) of the runs
  at a tuned rate: the one read of the test split, after the choice."""
  setup = Setup(seeds_runs[0].cfg)  # seeds share the data and the model
  recs = [test_record(setup, v.params) for v in seeds_runs]
  acc, acc_sd = _mean_std([r["accuracy"] for r in recs])
  loss, loss_sd = _mean_std([r["loss"] for r in recs])
  return {"test_accuracy": acc, "test_accuracy_std": acc_sd,
          "test_loss": loss, "test_loss_std": loss_sd}


# --- the decision -----------------------------------------------------------------

def _acc(r) -> str:
  return f"{100 * r['test_accuracy']:.1f} ± {100 * r['test_accuracy_std']:.1f}% (lr {r['lr']:g})"


def _best(tuned, names):
  names = [n for n in names if n in tuned and tuned[n]["lr"] is not None]
  return max(names, key=lambda n: tuned[n]["test_accuracy"]) if names else None


def _beats(tuned, names, gain, spread, text):
  """Clause: the best of ``names`` beats fixed sgd's test accuracy by
  ``gain`` (and, with ``spread``, by more than the stds summed)."""
  b = _best(tuned, names)
  if b is None or tuned.get("sgd", {}).get("lr") is None:
    return claims.clause(text, None, "not run (or every rate diverged)")
  a, s = tuned[b], tuned["sgd"]
  diff = a["test_accuracy"] - s["test_accuracy"]
  ok = diff >= gain and (not spread or diff > a["test_accuracy_std"] + s["test_accuracy_std"])
  return claims.clause(text, ok, f"{b} {_acc(a)} vs sgd {_acc(s)}")


def decide(measured: dict, p: dict) -> list:
  """The clauses of the claim from ``measured = {"seeds": S, "shared":
  {strategy: {"train_loss", "train_loss_std", "diverged"}}, "tuned":
  {strategy: {"lr", "test_accuracy", "test_accuracy_std"}}}`` (``lr`` None
  where every rate diverged): a pure function of the numbers."""
  eta, tuned, shared = p["shared_lr"], measured["tuned"], measured["shared"]
  few = (f"{measured['seeds']} seed(s); a comparison over seeds needs >= 3"
         if measured["seeds"] < 3 else None)
  texts = [
      f"at the shared rate {eta:g}, every adaptive method ends with at most half "
      "fixed-rate sgd's training loss (mean over seeds)",
      "the tuned rates span at least a factor 10 across strategies (no one "
      "shared rate suits them all)",
      "at each one's tuned rate, the best adaptive method's test accuracy beats "
      "fixed-rate sgd's by at least 1 point",
      "at each one's tuned rate, the best decayed schedule's test accuracy beats "
      "fixed-rate sgd's by at least 0.5 points and by more than the seeds' stds summed",
      "at each one's tuned rate, every strategy's test accuracy lies within 2 "
      "points of the best one's",
      "at each one's tuned rate, warm-up changes no decay's test accuracy by 1 "
      "point or more"]
  if few:
    return [claims.clause(t, None, few) for t in texts]
  out = [_shared_clause(texts[0], shared), _span_clause(texts[1], tuned),
         _beats(tuned, ADAPTIVE, 0.01, False, texts[2]),
         _beats(tuned, [s for s in tuned if family(s) == "decayed"], 0.005, True, texts[3]),
         _within_clause(texts[4], tuned), _warmup_clause(texts[5], tuned)]
  return out


def _shared_clause(text, shared):
  ada = [s for s in ADAPTIVE if s in shared]
  if "sgd" not in shared or not ada:
    return claims.clause(text, None, "not run: needs sgd and an adaptive method")
  def loss(s):
    r = shared[s]
    return "diverged" if r["diverged"] else f"{r['train_loss']:.3g} ± {r['train_loss_std']:.2g}"
  sgd = shared["sgd"]
  ok = not sgd["diverged"] and all(
      not shared[s]["diverged"] and shared[s]["train_loss"] <= 0.5 * sgd["train_loss"]
      for s in ada)
  return claims.clause(text, ok, ", ".join(f"{s} {loss(s)}" for s in ["sgd"] + ada))


def _span_clause(text, tuned):
  lrs = {s: r["lr"] for s, r in tuned.items() if r["lr"] is not None}
  if len(lrs) < 2:
    return claims.clause(text, None, "fewer than two strategies tuned")
  lo, hi = min(lrs, key=lrs.get), max(lrs, key=lrs.get)
  return claims.clause(text, lrs[hi] >= 10 * lrs[lo],
                       f"from {lo} {lrs[lo]:g} to {hi} {lrs[hi]:g}")


def _within_clause(text, tuned):
  ok = {s: r for s, r in tuned.items() if r["lr"] is not None}
  if len(ok) < 2:
    return claims.clause(text, None, "fewer than two strategies tuned")
  hi, lo = max(ok, key=lambda s: ok[s]["test_accuracy"]), min(
      ok, key=lambda s: ok[s]["test_accuracy"])
  gap = ok[hi]["test_accuracy"] - ok[lo]["test_accuracy"]
  failed = [s for s in tuned if tuned[s]["lr"] is None]
  return claims.clause(text, gap <= 0.02 and not failed,
                       f"best {hi} {_acc(ok[hi])}, worst {lo} {_acc(ok[lo])}"
                       + (f"; every rate diverged: {', '.join(failed)}" if failed else ""))


def _warmup_clause(text, tuned):
  pairs = [(d, d + "+warmup") for d in DECAYS if d in tuned and d + "+warmup" in tuned]
  pairs = [(a, b) for a, b in pairs if tuned[a]["lr"] is not None and tuned[b]["lr"] is not None]
  if not pairs:
    return claims.clause(text, None, "not run: no decay with and without warm-up")
  diffs = {a: tuned[b]["test_accuracy"] - tuned[a]["test_accuracy"] for a, b in pairs}
  return claims.clause(text, all(abs(d) < 0.01 for d in diffs.values()),
                       ", ".join(f"{a} {100 * d:+.1f} points" for a, d in diffs.items()))


# --- the study ----------------------------------------------------------------------

def measure(runs: dict, p: dict) -> dict:
  """From the trained runs: every (strategy, rate) summarised on validation,
  the tuned rate per strategy with its test numbers, the shared-rate view."""
  grid = {s: {lr: summarise(rs) for lr, rs in by_lr.items()} for s, by_lr in runs.items()}
  tuned = {}
  for s, by_lr in grid.items():
    lr = tune(by_lr)
    tuned[s] = {"lr": lr}
    if lr is not None:
      tuned[s].update({k: v for k, v in by_lr[lr].items() if not k.endswith("curve")})
      tuned[s].update(_test_numbers(runs[s][lr]))
  shared = {s: by_lr[p["shared_lr"]] for s, by_lr in grid.items()}
  return {"seeds": len(p["seeds"]), "grid": grid, "tuned": tuned, "shared": shared}


def _run(out: str, p: dict) -> dict:
  _check(p)
  per_epoch, total, warmup = _steps(p)
  eta = p["shared_lr"]
  # Every schedule's rates, trained or not (building a Setup trains nothing).
  curves = {s: np.asarray(Setup(_config(p, s, eta, 0, total, warmup)).schedule(
      jnp.arange(total))).tolist() for s in STRATEGIES}
  m = measure(_train(p, total, warmup), p)
  results = {"steps_per_epoch": per_epoch, "total_steps": total,
             "warmup_steps": warmup, "lr_curves": curves, "lr_curves_eta": eta,
             **m, "claims": decide(m, p)}
  results["grid"] = {s: {f"{lr:g}": r for lr, r in by_lr.items()}
                     for s, by_lr in results["grid"].items()}
  results["shared"] = {s: {k: v for k, v in r.items() if not k.endswith("curve")}
                       for s, r in results["shared"].items()}
  figures = [plot_tuned(out, results, p), plot_sensitivity(out, results, p),
             plot_schedules(out, p, curves, total)]
  results["readme"] = {
      "title": "lr-strategies: fixed, decayed and adaptive learning rates, each "
               "at its own tuned rate",
      "measured": measured(results, p), "figures": figures,
      "table": table(results, p)}
  return results


# --- report: figures, table, summary ---------------------------------------------

_FAMILIES = (("decayed, no warm-up", lambda s: family(s) == "decayed" and "+" not in s),
             ("decayed, with warm-up", lambda s: s.endswith("+warmup")),
             ("adaptive", lambda s: family(s) == "adaptive"))


def _style(strategy: str) -> dict:
  fam = family(strategy)
  if fam == "fixed":
    return {"color": "k", "lw": 1.8}
  if fam == "adaptive":
    return {"color": ("C3", "C1", "C6")[ADAPTIVE.index(strategy)], "lw": 1.4}
  name, _, warm = strategy.partition("+")
  return {"color": ("C0", "C2", "C4")[DECAYS.index(name)], "lw": 1.4,
          "ls": "--" if warm else "-"}


def _members(results, keep):
  return [s for s in results["tuned"] if s == "sgd" or keep(s)]


def _title(results, prefix, short):
  return claims.title(claims.find(results["claims"], prefix), short)


def plot_tuned(out, results, p) -> str:
  """Top: test accuracy at each one's tuned rate, mean ± std over seeds.
  Bottom: mean training loss per epoch at the tuned rates, by family."""
  fig = report.plt.figure(figsize=(13, 8))
  top = fig.add_subplot(2, 1, 1)
  tuned = results["tuned"]
  names = list(tuned)
  for i, s in enumerate(names):
    r = tuned[s]
    if r["lr"] is None:
      top.annotate("every rate\ndiverged", (i, 0.05), xycoords=("data", "axes fraction"),
                   ha="center", fontsize=8)
      continue
    top.errorbar(i, 100 * r["test_accuracy"], yerr=100 * r["test_accuracy_std"],
                 fmt="o", color=_style(s)["color"], capsize=4,
                 label="mean ± std over seeds" if i == 0 else None)
  top.set_xticks(range(len(names)), [
      s.replace("+", "\n+") + ("\nevery lr diverged" if tuned[s]["lr"] is None
                               else f"\nlr {tuned[s]['lr']:g}") for s in names], fontsize=8)
  top.set(ylabel="test accuracy (%)", title=_title(
      results, "at each one's tuned rate, every strategy",
      "tuned rates: every strategy within 2 points of the best")
      + f"\n(mean ± std over seeds {p['seeds']}; rate chosen on validation loss)")
  top.title.set_fontsize(9)
  top.legend(fontsize=8, loc="upper left")
  for k, (name, keep) in enumerate(_FAMILIES):
    ax = fig.add_subplot(2, 3, 4 + k)
    for s in _members(results, keep):
      row = results["grid"][s].get(f"{tuned[s]['lr']:g}") if tuned[s]["lr"] else None
      if row is None or row["diverged"]:
        continue
      c = row["train_loss_curve"]
      ax.plot(range(1, len(c) + 1), c, label=f"{s} (lr {tuned[s]['lr']:g})", **_style(s))
    ax.set(yscale="log", xlabel="epoch", ylabel="training loss (cross-entropy)",
           title=f"{name} vs fixed sgd, each at its tuned rate")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
  return report.save(fig, out, "tuned.png")


def _sensitivity(ax, results, members, key, label):
  for s in members:
    by_lr = results["grid"][s]
    lrs = np.array([float(k) for k in by_lr])
    bad = np.array([r["diverged"] for r in by_lr.values()])
    y = np.array([np.nan if r["diverged"] else r[key] for r in by_lr.values()])
    e = np.array([0.0 if r["diverged"] else r[key + "_std"] for r in by_lr.values()])
    st = _style(s)
    ax.errorbar(lrs, y, yerr=e, marker="o", ms=3.5, capsize=2, label=s, **st)
    top = np.nanmax(y) if np.isfinite(y).any() else 1.0
    ax.plot(lrs[bad], np.full(bad.sum(), top * 1.5), "x", color=st["color"], ms=7)
  ax.plot([], [], "kx", label="diverged")
  ax.set(xscale="log", yscale="log", xlabel="peak learning rate", ylabel=label)
  ax.legend(fontsize=8)


def plot_sensitivity(out, results, p) -> str:
  """Final validation loss (top, what picks the tuned rate) and final
  training loss (bottom, the shared-rate clause) against the rate."""
  fig, axes = report.plt.subplots(2, 3, figsize=(14, 8), squeeze=False)
  shared = _title(results, "at the shared rate",
                  f"shared rate {p['shared_lr']:g}: adaptive at most half sgd's training loss")
  for k, (name, keep) in enumerate(_FAMILIES):
    members = _members(results, keep)
    _sensitivity(axes[0][k], results, members, "val_loss", "final validation loss")
    axes[0][k].set_title(f"{name}: validation loss (mean ± std over "
                         f"{len(p['seeds'])} seeds)", fontsize=9)
    _sensitivity(axes[1][k], results, members, "train_loss", "final training loss")
    axes[1][k].axvline(p["shared_lr"], color="0.5", ls=":", lw=0.8)
    axes[1][k].set_title(f"{name}: training loss" + (f"\n{shared}" if k == 2 else ""),
                         fontsize=9)
  return report.save(fig, out, "lr_sensitivity.png")


def plot_schedules(out, p, curves, total) -> str:
  eta = p["shared_lr"]
  fig, ax = report.plt.subplots(figsize=(7.5, 3.8))
  for s, c in curves.items():
    if family(s) == "adaptive":
      continue  # their eta is constant; the step per parameter is not
    ax.plot(range(total), [v / eta for v in c], label=s, **_style(s))
  ax.set(xlabel="step t", ylabel="eta_t / eta (peak)",
         title=f"The rate each schedule gives at each step ({total} steps; "
               f"adaptive methods: constant eta)")
  ax.title.set_fontsize(9)
  ax.legend(fontsize=8)
  return report.save(fig, out, "schedules.png")


def _pm(r, key, f="{:.3g}", scale=1.0):
  if r.get(key) is None:
    return "diverged"
  return f"{f.format(scale * r[key])} ± {f.format(scale * r[key + '_std'])}"


def table(results, p) -> str:
  rows = []
  for s, r in results["tuned"].items():
    sh = results["shared"][s]
    edge = " (grid edge)" if r["lr"] in (min(p["learning_rates"]), max(p["learning_rates"])) else ""
    rows.append([s, family(s), "every rate diverged" if r["lr"] is None else f"{r['lr']:g}{edge}",
                 _pm(r, "val_loss"), _pm(r, "train_loss"),
                 _pm(r, "test_accuracy", "{:.1f}", 100), _pm(sh, "train_loss")])
  return (f"Each strategy at its tuned rate (lowest mean validation loss over seeds "
          f"{p['seeds']}; rates {p['learning_rates']}), mean ± std; the last column "
          f"is the shared-rate view at {p['shared_lr']:g}:\n\n"
          + report.markdown_table(
              ["strategy", "family", "tuned lr", "val loss", "train loss",
               "test acc (%)", f"train loss at {p['shared_lr']:g}"], rows))


def measured(results, p) -> str:
  t = results["tuned"]
  parts = [f"{s} {_pm(r, 'test_accuracy', '{:.1f}', 100)}% at lr {r['lr']:g}"
           if r["lr"] is not None else f"{s}: every rate diverged"
           for s, r in t.items()]
  sh = results["shared"]
  return (f"{p['data']}, MLP {p['hidden']}, {p['epochs']} epochs of batch "
          f"{p['batch_size']} ({results['total_steps']} steps), validation "
          f"{p['validation']:g} of training. Test accuracy at each one's tuned rate "
          f"(mean ± std over seeds {p['seeds']}): " + "; ".join(parts) +
          f". At the shared rate {p['shared_lr']:g}, final training loss: " +
          "; ".join(f"{s} {_pm(r, 'train_loss')}" for s, r in sh.items()) + ".")


STUDY = register(Study(
    name="lr-strategies",
    claim=CLAIM,
    run=_run,
    defaults={"strategies": STRATEGIES,
              "learning_rates": [3e-4, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
              "shared_lr": 0.01, "data": "digits", "validation": 0.2,
              "hidden": [64], "epochs": 20, "batch_size": 32,
              "final_fraction": 0.1, "warmup_fraction": 0.1, "seeds": [0, 1, 2]},
    quick={"strategies": ["sgd", "cosine_decay", "adagrad"],
           "learning_rates": [0.01, 0.1], "epochs": 3, "seeds": [0]},
))
