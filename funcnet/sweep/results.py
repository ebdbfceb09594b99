"""A sweep's output folder.

  results.csv      one row per variant: the swept keys, final and best test
                   metrics, the epoch of the best, status, its group and the
                   group's wall time
  results.md       the same, sorted by the main metric (best first)
  best.toml        the best variant's whole config: ``funcnet train --config
                   DIR/best.toml`` trains it again
  sweep.json       the grid, and per variant its values, status and
                   per-epoch metrics
  heatmap.png      the main metric over two swept keys (mean over seeds when
                   ``seed`` is swept, the spread written in each cell); over
                   one key, a line with the seeds' spread as error bars
  curves.png       every variant's training loss and main metric per epoch
  variants/NNN/    each variant as a run folder (config.json, model.json,
                   stats.npz, metrics.jsonl, summary.json): ``funcnet
                   compare`` and any tool that reads runs read them
"""

import csv
import json
import math
import os

import numpy as np

from funcnet.run import rundir


def _fmt(v) -> str:
  if isinstance(v, float):
    return f"{v:.4g}"
  return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def rows(result) -> tuple:
  """``(header, rows)`` of the results table, in grid order."""
  metrics = sorted({k for v in result.variants for k in v.final})
  header = (["variant"] + result.keys + [f"final {m}" for m in metrics]
            + [f"best {m}" for m in metrics]
            + ["best epoch", "epochs", "status", "group", "group wall s"])
  out = []
  for v in result.variants:
    best = v.best_epoch
    out.append([v.index] + [v.assignment[k] for k in result.keys]
               + [v.final.get(m, float("nan")) for m in metrics]
               + [best.get(m, float("nan")) for m in metrics]
               + [best.get("epoch", ""), v.history[-1]["epoch"] if v.history else 0,
                  v.status, v.group, round(v.group_wall_s, 3)])
  return header, out


def write_csv(result, path: str) -> None:
  header, table = rows(result)
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    for r in table:
      w.writerow([json.dumps(x) if isinstance(x, (list, dict)) else x
                  for x in r])


def markdown(result) -> str:
  """The results table sorted by the final main metric, best first."""
  header, table = rows(result)
  order = {v.index: i for i, v in enumerate(result.ranked())}
  table = sorted(table, key=lambda r: order[r[0]])
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(_fmt(x) for x in r) + " |" for r in table]
  return "\n".join(lines) + "\n"


def config_toml(cfg: dict, comment: str) -> str:
  """A config as TOML: the keys that differ from the defaults (every other
  key is the default, and a key the chosen optimizer or model kind does
  not use would be refused), under a comment."""
  import tomli_w
  from funcnet import config as config_lib
  defaults = config_lib.flatten(config_lib.DEFAULTS)
  tree = {}
  for key, value in config_lib.flatten(cfg).items():
    if key == "name" or value != defaults.get(key):
      node = tree
      parts = key.split(".")
      for p in parts[:-1]:
        node = node.setdefault(p, {})
      node[parts[-1]] = value
  lines = "".join(f"# {line}\n" for line in comment.splitlines())
  return lines + tomli_w.dumps(rundir.json_safe(tree))


def write_best(result, path: str) -> None:
  """``best.toml``: the best variant's config."""
  best = result.best
  with open(path, "w") as f:
    f.write(config_toml(best.cfg, (
        f"The best variant ({best.index}) of the sweep in this folder: "
        + ", ".join(f"{k} = {json.dumps(v)}" for k, v in best.assignment.items())
        + f"\nfinal {result.metric} = {best.final.get(result.metric)}; train "
        "it again with: funcnet train --config <this file>")))


def write_json(result, grid: dict, path: str) -> None:
  doc = {"grid": grid, "metric": result.metric, "groups": result.groups,
         "wall_s": result.wall_s,
         "variants": [{"index": v.index, "assignment": v.assignment,
                       "status": v.status, "reason": v.reason,
                       "group": v.group, "group_wall_s": v.group_wall_s,
                       "history": v.history} for v in result.variants]}
  with open(path, "w") as f:
    json.dump(rundir.json_safe(doc), f, indent=1)
    f.write("\n")


def write_variants(variants, folder: str) -> None:
  """Each :class:`funcnet.sweep.VariantResult` as a run folder (no
  checkpoints: ``best.toml`` retrains)."""
  for v in variants:
    run = os.path.join(folder, f"{v.index:03d}")
    os.makedirs(run, exist_ok=True)
    rundir.write_config(run, v.cfg)
    rundir.write_model(run, v.model)
    rundir.write_stats(run, v.stats)
    rundir.reset_metrics(run, v.history)
    rundir.write_summary(run, {"name": v.cfg["name"], "status": v.status,
                             "fit_status": v.status, "stopped": v.reason,
                             "sweep_variant": v.index,
                             "assignment": v.assignment,
                             "final": v.final, "best": v.best_epoch,
                             **v.final})


def _summary_plot(result, path: str) -> bool:
  """``heatmap.png`` over two swept keys, or a line over one (seeds
  averaged, their spread shown). False when no key but seed is swept."""
  from funcnet.run import plots
  keys = [k for k in result.keys if k != "seed"
          and len({json.dumps(v.assignment[k]) for v in result.variants}) > 1]
  if not keys or len(keys) > 2:
    return False
  score = {}
  for v in result.variants:
    cell = tuple(json.dumps(v.assignment[k]) for k in keys)
    x = v.final.get(result.metric, float("nan"))
    score.setdefault(cell, []).append(x)
  values = [sorted({c[i] for c in score}, key=_sort_key) for i in range(len(keys))]
  name = result.metric.replace("test_", "test ")
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
    im = ax.imshow(mean, cmap="viridis" if result.higher_is_better else "viridis_r",
                   aspect="auto")
    fig.colorbar(im, ax=ax, label=name)
    for i in range(mean.shape[0]):
      for j in range(mean.shape[1]):
        text = "diverged" if np.isnan(mean[i, j]) else (
            f"{mean[i, j]:.3g}" + (f"\n±{spread[i, j]:.2g}" if spread[i, j] else ""))
        light = not np.isnan(mean[i, j]) and im.norm(mean[i, j]) > 0.5
        if not result.higher_is_better:  # viridis_r: light at low values
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
  seeds = len({v.assignment.get("seed") for v in result.variants})
  ax.set_title(f"final {name}" + (f" (mean ± std over {seeds} seeds)"
                                  if "seed" in result.keys and seeds > 1 else ""))
  fig.tight_layout()  # its labels' sizes vary with the grid: measured
  fig.savefig(path, dpi=100)
  return True


def _sort_key(text: str):
  v = json.loads(text)
  return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) \
      else (1, 0, text)


def _curves(result, path: str) -> None:
  """``curves.png``: every variant's training loss and headline metric by
  epoch. Drawn as ``funcnet.run.plots.write`` draws a run's (a bare
  ``Figure``, fixed margins, plain-text log labels: pyplot's import,
  ``tight_layout``'s second drawing and the mathtext parser were 0.8 of
  this figure's 1.25 s)."""
  from funcnet.run import plots
  fig = plots.Figure(figsize=(11, 4))
  axes = fig.subplots(1, 2)
  fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.91,
                      wspace=0.22)
  many = len(result.variants) > 12
  for v in result.variants:
    label = ", ".join(f"{k.rsplit('.', 1)[-1]}={x}" for k, x in v.assignment.items())
    e = [h["epoch"] for h in v.history]
    loss = [h["train_loss"] for h in v.history]
    axes[0].plot(e, loss, lw=1, alpha=0.7, label=None if many else label)
    tests = [h for h in v.history if result.metric in h]
    axes[1].plot([h["epoch"] for h in tests], [h[result.metric] for h in tests],
                 lw=1, alpha=0.7, label=None if many else label)
  positive = all(h["train_loss"] > 0 for v in result.variants for h in v.history
                 if h["train_loss"] == h["train_loss"])
  if positive:
    plots.log_y(axes[0])
  axes[0].set_ylabel("training loss")
  axes[1].set_ylabel(result.metric.replace("test_", "test "))
  for ax in axes:
    ax.set_xlabel("epoch")
  axes[0].set_title(f"{len(result.variants)} variants: training loss",
                    y=plots.TITLE_Y)
  axes[1].set_title(result.metric.replace("test_", "test "), y=plots.TITLE_Y)
  if not many:
    axes[1].legend(fontsize="x-small")
  fig.savefig(path, dpi=100)


def write(result, grid: dict, log=print) -> list:
  """Writes the whole folder ``result.out``; returns the files written."""
  out = result.out
  os.makedirs(out, exist_ok=True)
  write_csv(result, os.path.join(out, "results.csv"))
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(markdown(result))
  write_best(result, os.path.join(out, "best.toml"))
  write_json(result, grid, os.path.join(out, "sweep.json"))
  write_variants(result.variants, os.path.join(out, "variants"))
  files = ["results.csv", "results.md", "best.toml", "sweep.json", "variants/"]
  if result.variants[0].cfg["run"]["plots"]:
    _curves(result, os.path.join(out, "curves.png"))
    files.append("curves.png")
    if _summary_plot(result, os.path.join(out, "heatmap.png")):
      files.append("heatmap.png")
  best = result.best
  log(f"best variant {best.index}: "
      + ", ".join(f"{k}={json.dumps(v)}" for k, v in best.assignment.items())
      + f", final {result.metric} {best.final.get(result.metric, float('nan')):.4g}")
  log(f"sweep folder {out}: {', '.join(files)}")
  return files
