"""The ``regularisation`` study's figures, table and measured paragraph.

Every figure holds one quantity per axis (accuracy, or cross-entropy in
nats, never both), a legend on each panel, mean ± std over seeds (bands and
error bars), and titles written from the decided clauses.
"""

import textwrap

import numpy as np

from funcnet.studies import claims, report, spread

STRENGTH_NAME = {"l2": "λ (coupled L2)", "weight_decay": "λ (AdamW decay)",
                 "dropout": "drop probability"}


def _label(name: str, r: dict) -> str:
  return name if r.get("strength") is None else f"{name} ({r['strength']:g})"


def _band(ax, epochs, series, color, ls, label):
  """Mean ± std over seeds of per-epoch ``series`` (lists of per-seed
  curves), over the epochs every seed reached."""
  n = min(len(s) for s in series)
  a = np.asarray([s[:n] for s in series], dtype=np.float64)
  m, sd = a.mean(0), a.std(0, ddof=1) if len(a) > 1 else np.zeros(n)
  ax.plot(epochs[:n], m, color=color, ls=ls, lw=1.3, label=label)
  ax.fill_between(epochs[:n], m - sd, m + sd, color=color, alpha=0.2, lw=0)


def _curves(out, p, runs, regime) -> str:
  names = list(runs)
  fig, axes = report.plt.subplots(2, len(names), figsize=(3.1 * len(names), 6.2),
                                  sharey="row", squeeze=False)
  for j, name in enumerate(names):
    r = runs[name]
    longest = max(r["seeds"], key=lambda s: len(s["curves"]["epoch"]))
    epochs = longest["curves"]["epoch"]
    for row, (q, unit) in enumerate((("accuracy", "accuracy"),
                                     ("loss", "cross-entropy (nats)"))):
      ax = axes[row, j]
      for split, color, ls, text in (("train", "C0", "-", "train (no dropout)"),
                                     ("val", "C1", "--", "validation")):
        _band(ax, epochs, [s["curves"][f"{split}_{q}"] for s in r["seeds"]],
              color, ls, text)
      best = [s["best_epoch"] for s in r["seeds"] if s["best_epoch"]]
      for k, e in enumerate(best):
        ax.axvline(e, color="0.4", ls=":", lw=1,
                   label="restored epoch (per seed)" if k == 0 else None)
      ax.set_xlabel("epoch", fontsize=9)
      if q == "loss":
        ax.set_yscale("log")
      if j == 0:
        ax.set_ylabel(unit, fontsize=9)
      ax.set_title(_label(name, r), fontsize=9)
      ax.legend(fontsize=8)
  fig.suptitle(claims.title(regime) + f" — mean ± std over {len(p['seeds'])} "
               "seed(s)", fontsize=10)
  return report.save(fig, out, "curves.png")


def _verdicts(cs, suffix: str) -> str:
  """Which variants' clause ``"<variant> <suffix>..."`` holds, fails, or
  is untested, for a panel title."""
  mine = [c for c in cs if c["clause"].split(" ", 1)[-1].startswith(suffix)]
  parts = []
  for word, status in (("yes", claims.HOLDS), ("NOT", claims.FAILS),
                       ("untested", claims.UNTESTED)):
    names = [c["clause"].split(" ", 1)[0] for c in mine
             if claims.status(c) == status]
    if names:
      parts.append(f"{word}: {', '.join(names)}")
  return textwrap.fill("; ".join(parts) or "no variant", 60)


def _gaps(out, p, runs, cs) -> str:
  names = list(runs)
  idx = np.arange(len(names))
  fig, axes = report.plt.subplots(1, 3, figsize=(16, 5.2))
  for k, (split, text) in enumerate((("train", "train"), ("val", "validation"),
                                     ("test", "test"))):
    axes[0].bar(idx + (k - 1) * 0.27, [runs[n][f"{split}_accuracy"] for n in names],
                0.27, yerr=[runs[n][f"{split}_accuracy_std"] for n in names],
                capsize=2, color=f"C{k}", label=text)
  axes[0].set(ylabel="accuracy", title="test accuracy raised over none?\n"
              f"{_verdicts(cs, 'raises test')}")
  for ax, key, unit, suffix in (
      (axes[1], "gap_accuracy", "train − test accuracy", "accuracy"),
      (axes[2], "gap_loss", "test − train cross-entropy (nats)", "loss")):
    ax.bar(idx, [runs[n][key] for n in names], 0.6,
           yerr=[runs[n][f"{key}_std"] for n in names], capsize=3,
           color=["0.55" if n == "none" else "C4" for n in names],
           label="mean ± std over seeds")
    ax.axhline(runs["none"][key], color="k", ls="--", lw=1, label="none")
    ax.set(ylabel=unit, title=f"{suffix} gap narrower than none?\n"
           f"{_verdicts(cs, f'narrows the {suffix}')}")
  for ax in axes:
    ax.set_xticks(idx, [_label(n, runs[n]) for n in names], fontsize=8,
                  rotation=20)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
  fig.suptitle(claims.title(cs[0]), fontsize=10)
  return report.save(fig, out, "gaps.png")


def _selection(out, p, runs) -> str:
  tuned = [n for n in runs if "grid" in runs[n]]
  fig, axes = report.plt.subplots(1, len(tuned), figsize=(4.4 * len(tuned), 3.8),
                                  squeeze=False)
  for ax, name in zip(axes[0], tuned):
    grid = runs[name]["grid"]
    xs = [float(s) for s in grid]
    ax.errorbar(xs, [g["val_accuracy"] for g in grid.values()],
                yerr=[g["val_accuracy_std"] for g in grid.values()], marker="o",
                capsize=3, color="C1", label="validation accuracy")
    ax.plot([runs[name]["strength"]], [runs[name]["val_accuracy"]], "*",
            ms=14, color="C3", label="chosen")
    ax.axhline(runs["none"]["val_accuracy"], color="k", ls="--", lw=1,
               label="none")
    if name != "dropout":
      ax.set_xscale("log")
    ax.set(xlabel=STRENGTH_NAME[name], ylabel="validation accuracy",
           title=f"{name}: strength chosen on validation")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
  return report.save(fig, out, "selection.png")


def draw(out: str, p: dict, runs: dict, cs: list) -> list:
  pics = [_curves(out, p, runs, cs[0]), _gaps(out, p, runs, cs)]
  if any("grid" in r for r in runs.values()):
    pics.append(_selection(out, p, runs))
  return pics


def table(runs: dict) -> str:
  def cell(r, k):
    return f"{r[k]:.3f} ± {r[k + '_std']:.3f}"
  return report.markdown_table(
      ["variant", "strength", "epochs run", "train acc", "val acc", "test acc",
       "gap (acc)", "train loss", "test loss", "gap (loss)"],
      [[n, "–" if r["strength"] is None else f"{r['strength']:g}",
        f"{r['epochs_run']:.0f}"] + [cell(r, k) for k in (
            "train_accuracy", "val_accuracy", "test_accuracy", "gap_accuracy",
            "train_loss", "test_loss", "gap_loss")] for n, r in runs.items()])


def measured(p: dict, runs: dict, chosen: dict) -> str:
  r0 = runs["none"]["seeds"][0]
  head = (f"{r0['n_train']} training examples of {p['data']} ({r0['n_val']} more "
          f"held out for validation; test {r0['n_test']}), hidden {p['hidden']}, "
          f"Adam lr {p['lr']:g}, {p['epochs']} epochs of batch {p['batch_size']}, "
          f"seeds {p['seeds']} (mean ± std). Strengths chosen on validation: "
          + (", ".join(f"{k} {float(v):g}" for k, v in chosen.items()) or "none")
          + f"; early stopping patience {p['patience']}, best params restored. ")
  body = "; ".join(
      f"{n}: test accuracy {spread.pm([s['test_accuracy'] for s in r['seeds']])}, "
      f"gap {spread.pm([s['gap_accuracy'] for s in r['seeds']])} (accuracy) / "
      f"{spread.pm([s['gap_loss'] for s in r['seeds']])} (loss)"
      for n, r in runs.items())
  return head + body + "."
