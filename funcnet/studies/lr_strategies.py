"""Study ``lr-strategies``: the article's three learning-rate strategies side
by side on one task.

  fixed      sgd with a constant rate eta
  decayed    sgd with eta_t falling over the run (:mod:`funcnet.schedules`),
             each with and without a linear warm-up from 0
  adaptive   adagrad, rmsprop, adam at the constant rate eta: each scales the
             step per parameter by its gradients' history

An MLP (``hidden``) on ``data`` for ``epochs`` of ``batch_size``, so ``T =
epochs * (n_train // batch_size)`` steps, once for each peak rate ``eta`` of
``learning_rates`` (every strategy shares it). The decays are set so that
each ends at ``final_fraction * eta`` on the last step; with warm-up the
first ``W = round(warmup_fraction * T)`` steps ramp from 0 to eta and the
decay runs over the remaining ``T - W``:

  step_decay          eta r^floor(t / s),  s = ceil((T - W) / 3),  r = final_fraction^(1/2)
  exponential_decay   eta final_fraction^(t / (T - W))
  cosine_decay        eta [(1 - a) (1 + cos(pi t / (T - W))) / 2 + a],  a = final_fraction

(``W = 0`` without warm-up.) ``lr_curves`` in the results holds every
strategy's rate at each step ``t = 0..T-1`` for the first ``eta`` (the
optimizer's step ``t`` uses rate ``t``), as the schedule the optimizer runs
on computes it, for all of them, whether ``strategies`` trains them or not.
"""

import math

import jax.numpy as jnp
import numpy as np

from funcnet import config as config_lib
from funcnet.errors import ConfigError
from funcnet.experiment import Setup
from funcnet.studies import report
from funcnet.studies.registry import Study, register

CLAIM = ("Same network, same peak rate: at a small rate the adaptive "
         "methods (AdaGrad, RMSprop, Adam) reach a far lower training loss "
         "than fixed-rate SGD; at a ten times larger one SGD closes most of "
         "the gap and RMSprop's and Adam's losses swing; on this short, easy "
         "task decaying SGD's rate only slows it, and warm-up changes little.")

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


def _setup(p, strategy, lr, total, warmup):
  return Setup(config_lib.load(None, [
      f'data.name="{p["data"]}"', f"model.mlp.hidden={p['hidden']}",
      f"train.epochs={p['epochs']}", f"train.batch_size={p['batch_size']}",
      f"optimizer.learning_rate={lr}", f"seed={p['seed']}",
      *schedule_overrides(strategy, total, warmup, p["final_fraction"])]))


def _steps(p) -> tuple:
  """``(steps_per_epoch, T, W)``."""
  probe = Setup(config_lib.load(None, [f'data.name="{p["data"]}"']))
  per_epoch = len(probe.ds.y_train) // p["batch_size"]
  total = p["epochs"] * per_epoch
  return per_epoch, total, round(p["warmup_fraction"] * total)


def _check(p):
  for s in p["strategies"]:
    if s not in STRATEGIES:
      raise ConfigError(f"study parameter 'strategies' names {s!r}; expected "
                        f"names from {', '.join(STRATEGIES)}")
  if not p["learning_rates"]:
    raise ConfigError("study parameter 'learning_rates' is empty; expected "
                      "at least one rate, e.g. [0.01]")
  if not 0 < p["final_fraction"] <= 1 or not 0 <= p["warmup_fraction"] < 1:
    raise ConfigError("study parameters 'final_fraction' in (0, 1] and "
                      "'warmup_fraction' in [0, 1) expected; got "
                      f"{p['final_fraction']!r} and {p['warmup_fraction']!r}")


def _run(out: str, p: dict) -> dict:
  _check(p)
  per_epoch, total, warmup = _steps(p)
  # Every schedule's rates, trained or not (building a Setup trains nothing).
  eta = p["learning_rates"][0]
  curves = {s: np.asarray(_setup(p, s, eta, total, warmup).schedule(
      jnp.arange(total))).tolist() for s in STRATEGIES}
  runs = {}
  for s in p["strategies"]:
    runs[s] = {}
    for lr in p["learning_rates"]:
      res = _setup(p, s, lr, total, warmup).fit(norms=False)  # a faster step
      h = res.history
      runs[s][f"{lr:g}"] = {
          "family": family(s), "status": res.status,
          "train_loss": [r["train_loss"] for r in h],
          "test_accuracy": [r.get("test_accuracy") for r in h],
          "lr_at_epoch_end": [r["lr"] for r in h],
          "final_train_loss": h[-1]["train_loss"],
          "final_test_accuracy": h[-1].get("test_accuracy"),
          "best_test_accuracy": max((r["test_accuracy"] for r in h
                                     if "test_accuracy" in r), default=None)}
  figures = [_plot_runs(out, p, runs), _plot_schedules(out, p, curves, total)]
  table = report.markdown_table(
      ["strategy", "family", "eta", "final train loss", "final test acc",
       "best test acc"],
      [[s, family(s), lr, r["final_train_loss"], r["final_test_accuracy"],
        r["best_test_accuracy"]] for s, by_lr in runs.items()
       for lr, r in by_lr.items()], fmt="{:.4g}")
  report.write_readme(
      out, "lr-strategies: fixed, decayed and adaptive learning rates on one "
      "task", CLAIM, _measured(p, runs, total), figures, table,
      command="funcnet study lr-strategies --out docs/studies/lr-strategies")
  return {"steps_per_epoch": per_epoch, "total_steps": total,
          "warmup_steps": warmup, "runs": runs, "lr_curves": curves,
          "lr_curves_eta": p["learning_rates"][0]}


def _measured(p, runs, total) -> str:
  parts = []
  for lr in p["learning_rates"]:
    k = f"{lr:g}"
    got = {s: r[k] for s, r in runs.items()}
    parts.append(f"At eta = {k} ({total} steps), final train loss / test "
                 "accuracy: " + ", ".join(
                     f"{s} {r['final_train_loss']:.3g} / {r['final_test_accuracy']:.3f}"
                     for s, r in got.items()) + ".")
  return " ".join(parts)


def _style(strategy: str):
  fam = family(strategy)
  if fam == "fixed":
    return {"color": "k", "lw": 1.8}
  if fam == "adaptive":
    return {"color": ("C3", "C1", "C6")[ADAPTIVE.index(strategy)], "lw": 1.4}
  name, _, warm = strategy.partition("+")
  return {"color": ("C0", "C2", "C4")[DECAYS.index(name)], "lw": 1.2,
          "ls": "--" if warm else "-"}


def _plot_runs(out, p, runs) -> str:
  lrs = [f"{lr:g}" for lr in p["learning_rates"]]
  fig, axes = report.plt.subplots(len(lrs), 2, figsize=(11, 3.9 * len(lrs)),
                                  squeeze=False)
  for row, k in enumerate(lrs):
    for s, by_lr in runs.items():
      r = by_lr[k]
      epochs = list(range(1, len(r["train_loss"]) + 1))
      pts = [(e, v) for e, v in zip(epochs, r["train_loss"]) if v > 0]
      axes[row][0].plot(*zip(*pts), label=s, **_style(s))
      axes[row][1].plot(epochs, r["test_accuracy"], label=s, **_style(s))
    axes[row][0].set(yscale="log", xlabel="epoch", ylabel="training loss",
                     title=f"eta = {k}: mean training loss per epoch")
    axes[row][1].set(xlabel="epoch", ylabel="test accuracy",
                     title=f"eta = {k}: test accuracy ({p['data']}, hidden "
                           f"{p['hidden']})")
    for ax in axes[row]:
      ax.title.set_fontsize(9)
      ax.legend(fontsize=6, ncol=2)
  return report.save(fig, out, "strategies.png")


def _plot_schedules(out, p, curves, total) -> str:
  eta = p["learning_rates"][0]
  fig, ax = report.plt.subplots(figsize=(7.5, 3.8))
  for s, c in curves.items():
    if family(s) == "adaptive":
      continue  # their eta is constant; the step per parameter is not
    ax.plot(range(total), [v / eta for v in c], label=s, **_style(s))
  ax.set(xlabel="step t", ylabel="eta_t / eta",
         title=f"The rate each schedule gives at each step ({total} steps; "
               f"adaptive methods: constant eta)")
  ax.title.set_fontsize(9)
  ax.legend(fontsize=7)
  return report.save(fig, out, "schedules.png")


STUDY = register(Study(
    name="lr-strategies",
    claim=CLAIM,
    run=_run,
    defaults={"strategies": STRATEGIES, "learning_rates": [0.01, 0.1],
              "data": "digits", "hidden": [64], "epochs": 20, "batch_size": 32,
              "final_fraction": 0.1, "warmup_fraction": 0.1, "seed": 0},
    quick={"strategies": ["sgd", "adagrad", "rmsprop"], "learning_rates": [0.01],
           "epochs": 3},
))
