"""A sweep's two figures, ``curves.png`` and ``heatmap.png``, from plain data
(and an Optuna search's ``search.png``, :func:`search`).

The data is what :func:`funcnet.sweep.results.figure_data` makes of a
finished sweep, JSON-ready so that the plotting process
(:mod:`funcnet.run.plot_process`) can draw it::

  {"metric": "test_accuracy", "higher_is_better": true,
   "keys": ["optimizer.learning_rate", "seed"],          # the swept keys
   "variants": [{"assignment": {key: value},             # in grid order
                 "history": [{"epoch": 1, "train_loss": ..., metric: ...}],
                 "final": float}]}                       # NaN: none

Here and not in :mod:`funcnet.sweep`, whose import brings JAX: the plotting
process imports matplotlib and this, nothing of JAX's (a sweep's command
draws these beside its last work, as ``funcnet train`` draws a run's).
matplotlib is imported by the drawing functions only: :func:`files` is
called by a command whose plotting process draws.
"""

import json
import math
import os

import numpy as np

CURVES = "curves.png"
SUMMARY = "heatmap.png"
SEARCH = "search.png"


def files(data: dict) -> list[str]:
  """The figures :func:`draw` writes for ``data``: ``curves.png``, and
  ``heatmap.png`` unless no key but ``seed`` is swept (or more than two)."""
  return [CURVES] + ([SUMMARY] if _summary_keys(data) else [])


def draw(data: dict, folder: str, names=None) -> list[str]:
  """Writes the figures of ``data`` (those of :func:`files`, or of them the
  ones in ``names``) into ``folder``; returns their names."""
  wanted = [n for n in files(data) if names is None or n in names]
  for name in wanted:
    path = os.path.join(folder, name)
    if name == CURVES:
      curves(data, path)
    else:
      summary(data, path)
  return wanted


def curves(data: dict, path: str) -> None:
  """``curves.png``: every variant's training loss and headline metric by
  epoch. Drawn as ``funcnet.run.plots.write`` draws a run's (a bare
  ``Figure``, fixed margins, plain-text log labels: pyplot's import,
  ``tight_layout``'s second drawing and the mathtext parser were 0.8 of
  this figure's 1.25 s)."""
  from funcnet.run import plots  # matplotlib: only once there is a drawing
  metric, variants = data["metric"], data["variants"]
  fig = plots.Figure(figsize=(11, 4))
  axes = fig.subplots(1, 2)
  fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.91,
                      wspace=0.22)
  many = len(variants) > 12
  for v in variants:
    label = ", ".join(f"{k.rsplit('.', 1)[-1]}={x}" for k, x in v["assignment"].items())
    e = [h["epoch"] for h in v["history"]]
    loss = [h["train_loss"] for h in v["history"]]
    axes[0].plot(e, loss, lw=1, alpha=0.7, label=None if many else label)
    tests = [h for h in v["history"] if metric in h]
    axes[1].plot([h["epoch"] for h in tests], [h[metric] for h in tests],
                 lw=1, alpha=0.7, label=None if many else label)
  positive = all(h["train_loss"] > 0 for v in variants for h in v["history"]
                 if h["train_loss"] == h["train_loss"])
  if positive:
    plots.log_y(axes[0])
  axes[0].set_ylabel("training loss")
  axes[1].set_ylabel(metric.replace("test_", "test "))
  for ax in axes:
    ax.set_xlabel("epoch")
  axes[0].set_title(f"{len(variants)} variants: training loss",
                    y=plots.TITLE_Y)
  axes[1].set_title(metric.replace("test_", "test "), y=plots.TITLE_Y)
  if not many:
    axes[1].legend(fontsize="x-small")
  fig.savefig(path, dpi=100)


def _summary_keys(data: dict) -> list:
  """The swept keys but ``seed`` that take more than one value; the
  summary figure is drawn over one or two of them."""
  keys = [k for k in data["keys"] if k != "seed"
          and len({json.dumps(v["assignment"][k]) for v in data["variants"]}) > 1]
  return keys if 1 <= len(keys) <= 2 else []


def summary(data: dict, path: str) -> bool:
  """``heatmap.png`` over two swept keys, or a line over one (seeds
  averaged, their spread shown). False when no key but seed is swept."""
  keys = _summary_keys(data)
  if not keys:
    return False
  from funcnet.run import plots
  higher = data["higher_is_better"]
  score = {}
  for v in data["variants"]:
    cell = tuple(json.dumps(v["assignment"][k]) for k in keys)
    score.setdefault(cell, []).append(v["final"])
  values = [sorted({c[i] for c in score}, key=_sort_key) for i in range(len(keys))]
  name = data["metric"].replace("test_", "test ")
  if len(keys) == 2:
    mean = np.full((len(values[0]), len(values[1])), np.nan)
    spread = np.zeros_like(mean)
    for (a, b), xs in score.items():
      i, j = values[0].index(a), values[1].index(b)
      mean[i, j] = np.nanmean(xs) if not all(math.isnan(x) for x in xs) else np.nan
      spread[i, j] = np.nanstd(xs) if len(xs) > 1 and not np.isnan(mean[i, j]) else 0
    fig = plots.Figure(figsize=(1.3 * len(values[1]) + 3,
                                0.8 * len(values[0]) + 2))
    ax = fig.subplots()
    im = ax.imshow(mean, cmap="viridis" if higher else "viridis_r",
                   aspect="auto")
    fig.colorbar(im, ax=ax, label=name)
    for i in range(mean.shape[0]):
      for j in range(mean.shape[1]):
        text = "diverged" if np.isnan(mean[i, j]) else (
            f"{mean[i, j]:.3g}" + (f"\n±{spread[i, j]:.2g}" if spread[i, j] else ""))
        light = not np.isnan(mean[i, j]) and im.norm(mean[i, j]) > 0.5
        if not higher:  # viridis_r: light at low values
          light = not np.isnan(mean[i, j]) and im.norm(mean[i, j]) < 0.5
        ax.text(j, i, text, ha="center", va="center", fontsize=8,
                color="black" if light else "white")
    ax.set_xticks(range(len(values[1])), values[1])
    ax.set_yticks(range(len(values[0])), values[0])
    ax.invert_yaxis()  # the first value at the bottom, as on an axis
    ax.set_xlabel(keys[1])
    ax.set_ylabel(keys[0])
  else:
    fig = plots.Figure(figsize=(6, 4))
    ax = fig.subplots()
    xs = values[0]
    mean = [np.nanmean(score[(x,)]) if not all(math.isnan(s) for s in score[(x,)])
            else np.nan for x in xs]
    err = [np.nanstd(score[(x,)]) if len(score[(x,)]) > 1 else 0 for x in xs]
    ax.errorbar(range(len(xs)), mean, yerr=err, marker="o", capsize=3)
    ax.set_xticks(range(len(xs)), xs)
    ax.set_xlabel(keys[0])
    ax.set_ylabel(name)
  seeds = len({json.dumps(v["assignment"].get("seed")) for v in data["variants"]})
  ax.set_title(f"final {name}" + (f" (mean ± std over {seeds} seeds)"
                                  if "seed" in data["keys"] and seeds > 1 else ""))
  fig.tight_layout()  # its labels' sizes vary with the grid: measured
  fig.savefig(path, dpi=100)
  return True


def search(data: dict, path: str) -> None:
  """``search.png`` of an Optuna search (:mod:`funcnet.sweep.search`):
  each finished trial's final metric by its number, and the best so far.
  ``data``: ``{"metric", "higher_is_better", "finished": n, "trials":
  [[number, value], ...]}`` (the trials with a value, in order)."""
  from funcnet.run import plots
  xs = [n for n, _ in data["trials"]]
  ys = [v for _, v in data["trials"]]
  best = max if data["higher_is_better"] else min
  running = [best(ys[: i + 1]) for i in range(len(ys))]
  fig = plots.Figure(figsize=(6, 4))
  ax = fig.subplots()
  ax.plot(xs, ys, "o", ms=4, label="trial")
  ax.step(xs, running, where="post", label="best so far")
  ax.set_xlabel("trial")
  ax.set_ylabel(data["metric"].replace("test_", "test "))
  ax.set_title(f"Optuna search: {data['finished']} trials")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def _sort_key(text: str):
  v = json.loads(text)
  return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) \
      else (1, 0, text)
