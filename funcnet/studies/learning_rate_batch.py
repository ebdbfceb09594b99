"""Study ``learning-rate-batch``: at a fixed number of epochs the learning
rate a network needs grows with the batch size, about in proportion (the
linear scaling rule of Goyal et al. 2017), until the stability limit caps it.

An MLP (``hidden``) on ``data``, trained with plain ``optimizer`` (sgd) for
``epochs`` epochs at every batch size ``B`` of ``batch_sizes``, learning rate
``eta`` of ``learning_rates`` and ``seed`` of ``seeds``, by
:func:`funcnet.sweep.run`: one compiled program per batch size, its rates
and seeds trained together. An epoch is ``n_train // B`` steps. ``k`` sgd
steps of batch ``B`` at rate ``eta`` move the weights by about ``k eta``
times the mean gradient when the gradient changes little over them, as one
step of batch ``kB`` at rate ``k eta`` does: hence ``eta ∝ B`` (Goyal et al.
2017, section 2.1). It stops holding once ``eta`` nears the stability limit
of about ``2 / lambda_max`` (the loss's largest curvature), whatever ``B``.

Per cell ``(B, eta)``, over the seeds:

  final test accuracy   the mean of the last evaluation's; None ("diverged")
                        when any seed's loss became non-finite
  steps to target       the mean over seeds of the first evaluated step (the
                        end of an epoch) whose test accuracy >= ``target``;
                        None when a seed never reaches it or diverged
  time to target        those steps x the seconds per step of one variant:
                        its program's time per step after the first epoch
                        (which pays for compilation), over the variants it
                        trains together

Per batch size: the best rate (highest final test accuracy), the rate
needed (the smallest that reaches ``target`` within the epochs) and the
largest finite rate (whose loss stayed finite in every seed; it may still
grow without bound, short of float32's overflow). ``scaling_slope``, the least-squares
slope of ``log(rate needed)`` against ``log B``, is 1 under the linear rule.
The loss curves show, at batch size ``curve_batch``, a too-small rate (the
grid's nearest to ``best / curve_factor``), the best, the largest finite
and the smallest diverging one.
"""

import math
import os

import numpy as np

from funcnet import config as config_lib, sweep, tasks
from funcnet.errors import ConfigError
from funcnet.studies import report
from funcnet.studies.registry import Study, register

CLAIM = ("At a fixed number of epochs of plain SGD, the learning rate a "
         "network needs grows in proportion to the batch size (Goyal et al.'s "
         "lr ∝ batch), and the best rate grows with the batch too, until it "
         "meets the stability limit: above it the loss blows up.")

LR, BATCH, SEED = "optimizer.learning_rate", "train.batch_size", "seed"


# --- the sweep and what it measured ---------------------------------------------

def _sweep(out: str, p: dict):
  cfg = config_lib.load(None, [
      f'data.name="{p["data"]}"', f"model.mlp.hidden={p['hidden']}",
      f'optimizer.name="{p["optimizer"]}"', f"train.epochs={p['epochs']}",
      "run.plots=false"])  # the sweep's own figures; the study draws its own
  grid = {BATCH: p["batch_sizes"], LR: p["learning_rates"], SEED: p["seeds"]}
  return sweep.run(cfg, grid, os.path.join(out, "sweep") if p["runs"] else None,
                   log=lambda *a: None)


def steps_to(history: list, target: float):
  """The first evaluated step whose test accuracy is ``>= target``, or None."""
  for h in history:
    if h.get("test_accuracy") is not None and h["test_accuracy"] >= target:
      return h["step"]
  return None


def seconds_per_step(group: list) -> float:
  """Seconds per training step of one variant of a group (its variants
  train in one program, so each costs its share): the program's time from
  the end of its first epoch (which pays for compilation) to the end of its
  last, over the steps in between, over the number of variants; with one
  epoch, the group's wall time, compilation included."""
  h = max((v.history for v in group), key=len)
  if len(h) > 1:
    seconds, steps = h[-1]["time"] - h[0]["time"], h[-1]["step"] - h[0]["step"]
  else:
    seconds, steps = group[0].group_wall_s, h[0]["step"]
  return seconds / steps / len(group)


def _mean(xs):
  return None if any(x is None for x in xs) else float(np.mean(xs))


def _measure(result, p: dict) -> dict:
  """The grids ``[batch][lr]`` and the per-batch summaries."""
  bs, lrs, target = p["batch_sizes"], p["learning_rates"], p["target"]
  cells = {}
  for v in result.variants:
    cells.setdefault((v.assignment[BATCH], v.assignment[LR]), []).append(v)
  groups = {}
  for v in result.variants:
    groups.setdefault(v.group, []).append(v)
  sps = {b: seconds_per_step(groups[cells[b, lrs[0]][0].group]) for b in bs}

  def cell(b, lr):
    """``(seeds diverged, accuracy, steps to target, seconds to target)``."""
    vs = cells[b, lr]
    n_div = sum(v.status == "diverged" for v in vs)
    if n_div:
      return n_div, None, None, None
    s = _mean([steps_to(v.history, target) for v in vs])
    return (0, _mean([v.final.get("test_accuracy") for v in vs]), s,
            None if s is None else s * sps[b])

  grid = [[cell(b, lr) for lr in lrs] for b in bs]
  diverged, acc, steps, seconds = ([[c[k] for c in row] for row in grid]
                                   for k in range(4))

  def best(row):
    ok = [(a, j) for j, a in enumerate(row) if a is not None]
    return lrs[max(ok)[1]] if ok else None

  best_lr = [best(row) for row in acc]
  needed = [next((lr for lr, s in zip(lrs, row) if s is not None), None)
            for row in steps]
  finite = [max((lr for lr, d in zip(lrs, row) if d == 0), default=None)
            for row in diverged]
  pts = [(math.log(b), math.log(lr)) for b, lr in zip(bs, needed) if lr is not None]
  slope = (float(np.polyfit(*zip(*pts), 1)[0])
           if len({x for x, _ in pts}) > 1 else None)
  return {"batch_sizes": bs, "learning_rates": lrs, "seeds": p["seeds"],
          "target": target,
          "steps_per_epoch": [cells[b, lrs[0]][0].history[0]["step"] for b in bs],
          "final_test_accuracy": acc, "seeds_diverged": diverged,
          "steps_to_target": steps, "time_to_target_s": seconds,
          "seconds_per_step": [sps[b] for b in bs],
          "best_lr": best_lr,
          "best_test_accuracy": [max((a for a in row if a is not None), default=None)
                                 for row in acc],
          "lr_needed": needed, "largest_finite_lr": finite,
          "scaling_slope": slope, "groups": result.groups,
          "sweep_wall_s": result.wall_s}


def _curves(result, m: dict, p: dict) -> dict:
  """Four rates at ``curve_batch``: ``too_small`` (the grid's nearest to
  ``best / curve_factor`` in log), ``good`` (the best), ``too_large`` (the
  largest above the best that no seed diverged at) and ``diverging`` (the
  smallest that a seed diverged at); a kind the grid lacks is left out.
  ``history`` holds the first seed's records, ``final_test_accuracy`` the
  mean over seeds (None: diverged)."""
  b = p["curve_batch"]
  i = m["batch_sizes"].index(b)
  lrs, good = m["learning_rates"], m["best_lr"][i]
  out = {"batch": b, "lrs": {}, "history": {}, "final_test_accuracy": {},
         "status": {}}
  if good is None:
    return out
  below = [lr for lr in lrs if lr < good]
  finite = [lr for lr, d in zip(lrs, m["seeds_diverged"][i]) if lr > good and not d]
  diverging = [lr for lr, d in zip(lrs, m["seeds_diverged"][i]) if d]
  pick = {"too_small": min(below, default=None,
                           key=lambda lr: abs(math.log(lr * p["curve_factor"] / good))),
          "good": good,
          "too_large": max(finite, default=None),
          "diverging": min(diverging, default=None)}
  pick = {k: lr for k, lr in pick.items() if lr is not None}
  first = {v.assignment[LR]: v for v in result.variants
           if v.assignment[BATCH] == b and v.assignment[SEED] == p["seeds"][0]}
  keys = ("epoch", "step", "train_loss", "test_loss", "test_accuracy")
  out["lrs"] = pick
  for kind, lr in pick.items():
    out["history"][kind] = [{k: h.get(k) for k in keys} for h in first[lr].history]
    out["final_test_accuracy"][kind] = m["final_test_accuracy"][i][lrs.index(lr)]
    out["status"][kind] = first[lr].status
  return out


# --- the study ------------------------------------------------------------------

def _check(p: dict) -> None:
  for key in ("batch_sizes", "learning_rates", "seeds"):
    if not p[key] or len(set(p[key])) != len(p[key]):
      raise ConfigError(f"study parameter {key!r} = {p[key]!r}; expected a "
                        "non-empty list of distinct values")
  if any(not lr > 0 for lr in p["learning_rates"]) or \
      list(p["learning_rates"]) != sorted(p["learning_rates"]):
    raise ConfigError(f"study parameter 'learning_rates' = {p['learning_rates']!r}; "
                      "expected positive rates in increasing order")
  if any(not isinstance(b, int) or b < 1 for b in p["batch_sizes"]) or \
      list(p["batch_sizes"]) != sorted(p["batch_sizes"]):
    raise ConfigError(f"study parameter 'batch_sizes' = {p['batch_sizes']!r}; "
                      "expected positive integers in increasing order")
  if p["curve_batch"] not in p["batch_sizes"]:
    raise ConfigError(f"study parameter 'curve_batch' = {p['curve_batch']}; "
                      f"expected one of batch_sizes {p['batch_sizes']}")
  if not 0 < p["target"] <= 1 or not p["curve_factor"] > 1 or p["epochs"] < 1:
    raise ConfigError("study parameters 'target' in (0, 1], 'curve_factor' > 1 "
                      f"and 'epochs' >= 1 expected; got {p['target']!r}, "
                      f"{p['curve_factor']!r}, {p['epochs']!r}")


def _run(out: str, p: dict) -> dict:
  _check(p)
  result = _sweep(out, p)
  if "accuracy" not in tasks.get(result.variants[0].task).metric_names:
    raise ConfigError(f"study parameter 'data' = {p['data']!r}; expected a "
                      "classification set (the study reads test accuracy)")
  m = _measure(result, p)
  m["curves"] = _curves(result, m, p)
  figures = [_plot_heatmaps(out, m, p), _plot_curves(out, m, p)]
  table = _table(m)
  report.write_readme(
      out, "learning-rate-batch: the rate a network needs grows with the batch "
      "(lr ∝ batch), up to the stability limit", CLAIM, _measured(m, p),
      figures, table,
      command="funcnet study learning-rate-batch --out docs/studies/learning-rate-batch")
  return m


# --- report ---------------------------------------------------------------------

def _edges(values):
  """Cell edges, geometric midpoints, for values on a log axis."""
  v = np.log(np.asarray(values, np.float64))
  if len(v) == 1:
    return np.exp([v[0] - 0.35, v[0] + 0.35])
  mid = (v[1:] + v[:-1]) / 2
  return np.exp(np.concatenate([[v[0] - (mid[0] - v[0])], mid,
                                [v[-1] + (v[-1] - mid[-1])]]))


def _grid(rows):
  """``[batch][lr]`` with None -> a masked ``[lr][batch]`` array."""
  a = np.array([[np.nan if x is None else x for x in row] for row in rows],
               np.float64).T
  return np.ma.masked_invalid(a)


def _ink(mesh, value) -> str:
  """Black on a light cell, white on a dark one."""
  if value is None:
    return "0.3"
  r, g, b, _ = mesh.cmap(mesh.norm(value))
  return "k" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "w"


def _plot_heatmaps(out: str, m: dict, p: dict) -> str:
  from matplotlib.colors import LogNorm
  bs, lrs = m["batch_sizes"], m["learning_rates"]
  xe, ye = _edges(bs), _edges(lrs)
  panels = [("final test accuracy", m["final_test_accuracy"], None, "{:.2f}"),
            (f"steps to test accuracy ≥ {m['target']:g}", m["steps_to_target"],
             "log", "{:.0f}"),
            (f"seconds to test accuracy ≥ {m['target']:g} (one variant)",
             m["time_to_target_s"], "log", "{:.2g}")]
  fig, axes = report.plt.subplots(1, 3, figsize=(17, 6.2))
  b0 = bs[0]
  x_line = np.array([xe[0], xe[-1]])
  for ax, (title, rows, scale, fmt) in zip(axes, panels):
    z = _grid(rows)
    cmap = report.plt.get_cmap("viridis" if scale is None else "viridis_r"
                               ).with_extremes(bad="0.85")
    norm = (LogNorm(vmin=z.min(), vmax=max(z.max(), z.min() * 1.01))
            if scale == "log" and z.count() else None)
    mesh = ax.pcolormesh(xe, ye, z, cmap=cmap, norm=norm, shading="flat")
    if z.count():
      fig.colorbar(mesh, ax=ax)
    for i, b in enumerate(bs):
      for j, lr in enumerate(lrs):
        value = rows[i][j]
        text = (fmt.format(value) if value is not None else
                "div" if m["seeds_diverged"][i][j] else "–")
        ax.text(b, lr, text, ha="center", va="center", fontsize=6.5,
                color=_ink(mesh, value))
    best = [(b, lr) for b, lr in zip(bs, m["best_lr"]) if lr is not None]
    if best:
      ax.plot(*zip(*best), "o", mfc="none", mec="r", ms=13, mew=1.5,
              label="best rate per batch")
    if m["best_lr"][0] is not None:
      ax.plot(x_line, m["best_lr"][0] * x_line / b0, "r-", lw=1.5,
              label=f"lr ∝ batch through the best rate at batch {b0}")
    if m["lr_needed"][0] is not None:
      ax.plot(x_line, m["lr_needed"][0] * x_line / b0, "--", color="C1", lw=1.5,
              label=f"lr ∝ batch through the rate needed at batch {b0}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set(xlim=(xe[0], xe[-1]), ylim=(ye[0], ye[-1]), xlabel="batch size",
           ylabel="learning rate", title=title)
    ax.set_xticks(bs, [str(b) for b in bs])
    ax.set_yticks(lrs, [f"{lr:.3g}" for lr in lrs])
    ax.minorticks_off()
  # Below the middle panel, one entry a line: as wide as the panel, so the
  # layout keeps the three panels the same width.
  axes[1].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1))
  fig.suptitle(f"{p['optimizer']}, {p['epochs']} epochs of {p['data']}, MLP "
               f"hidden {p['hidden']}, mean of {len(m['seeds'])} seed(s); grey: "
               "diverged (div) or target not reached (–)", fontsize=10)
  return report.save(fig, out, "heatmaps.png")


def _finite(h, key):
  return [(r["epoch"], r[key]) for r in h
          if r[key] is not None and math.isfinite(r[key]) and r[key] > 0]


def _plot_curves(out: str, m: dict, p: dict) -> str:
  from matplotlib.transforms import blended_transform_factory
  c = m["curves"]
  fig, axes = report.plt.subplots(1, 2, figsize=(11, 4.2))
  colors = {"too_small": "C0", "good": "C2", "too_large": "C1", "diverging": "C3"}
  # The loss axis spans the runs that stayed finite; a diverging run's loss
  # leaves it (its first epochs can reach 1e20 before the NaN).
  kept = [y for kind, h in c["history"].items() if c["status"][kind] != "diverged"
          for key in ("train_loss", "test_loss") for _, y in _finite(h, key)]
  top = blended_transform_factory(axes[0].transData, axes[0].transAxes)
  for kind, lr in c["lrs"].items():
    h = c["history"][kind]
    label = f"{kind.replace('_', ' ')}: lr {lr:g}"
    if c["status"][kind] == "diverged":
      label += f" (diverged in epoch {h[-1]['epoch']})"
      axes[0].plot([h[-1]["epoch"]], [0.95], "x", color=colors[kind], ms=10,
                   mew=2, transform=top, label=label)
    for key, ls in (("train_loss", "-"), ("test_loss", "--")):
      pts = _finite(h, key)
      if pts:
        axes[0].plot(*zip(*pts), ls, marker=".", color=colors[kind], lw=1.4,
                     label=label if key == "train_loss" and "diverged" not in label
                     else None)
    pts = [(r["epoch"], r["test_accuracy"]) for r in h if r["test_accuracy"] is not None]
    if pts:
      axes[1].plot(*zip(*pts), marker=".", color=colors[kind], lw=1.4, label=label)
  axes[0].set_yscale("log")
  if kept:
    axes[0].set_ylim(min(kept) / 2, max(kept) * 3)
  axes[0].set(xlabel="epoch", ylabel="loss (solid: train, dashed: test)",
              title=f"batch {c['batch']}: too small, best, largest finite and "
                    "diverging rate (x: diverged)")
  axes[1].set(xlabel="epoch", ylabel="test accuracy",
              title=f"batch {c['batch']}, seed {m['seeds'][0]}")
  for ax in axes:
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
  return report.save(fig, out, "curves.png")



def _table(m: dict) -> str:
  bs, lrs = m["batch_sizes"], m["learning_rates"]
  acc = [[f"{lr:g}"] + [report.fmt(m["final_test_accuracy"][i][j], "{:.3f}")
                        if not m["seeds_diverged"][i][j] else "diverged"
                        for i in range(len(bs))] for j, lr in enumerate(lrs)]
  steps = [[f"{lr:g}"] + [report.fmt(m["steps_to_target"][i][j], "{:.0f}")
                          for i in range(len(bs))] for j, lr in enumerate(lrs)]
  per_batch = []
  for i, b in enumerate(bs):
    j = lrs.index(m["best_lr"][i]) if m["best_lr"][i] is not None else None
    per_batch.append([b, m["steps_per_epoch"][i], report.fmt(m["best_lr"][i], "{:g}"),
                      report.fmt(m["best_test_accuracy"][i], "{:.3f}"),
                      report.fmt(m["lr_needed"][i], "{:g}"),
                      report.fmt(None if j is None else m["steps_to_target"][i][j], "{:.0f}"),
                      report.fmt(None if j is None else m["time_to_target_s"][i][j]),
                      report.fmt(m["largest_finite_lr"][i], "{:g}"),
                      report.fmt(m["seconds_per_step"][i])])
  return "\n\n".join([
      "Per batch size:",
      report.markdown_table(
          ["batch", "steps/epoch", "best lr", "best test acc",
           f"lr needed for {m['target']:g}", "steps to target at best lr",
           "s to target at best lr", "largest lr with finite loss", "s/step (one variant)"],
          per_batch),
      "Final test accuracy (rows: learning rate, columns: batch size):",
      report.markdown_table(["lr \\ batch"] + bs, acc),
      f"Steps to test accuracy ≥ {m['target']:g}:",
      report.markdown_table(["lr \\ batch"] + bs, steps)])


def _measured(m: dict, p: dict) -> str:
  bs = m["batch_sizes"]
  c = m["curves"]
  slope = m["scaling_slope"]
  parts = [
      f"{len(bs) * len(m['learning_rates']) * len(m['seeds'])} runs of "
      f"{p['optimizer']} for {p['epochs']} epochs in {m['groups']} compiled "
      f"programs ({m['sweep_wall_s']:.0f} s). Best rate per batch size: " +
      ", ".join(f"{b}: {report.fmt(lr, '{:g}')} ({report.fmt(a, '{:.3f}')})" for b, lr, a in
                zip(bs, m["best_lr"], m["best_test_accuracy"])) + ".",
      f"Smallest rate reaching test accuracy {m['target']:g}: " +
      ", ".join(f"{b}: {report.fmt(lr, '{:g}')}" for b, lr in zip(bs, m["lr_needed"])) +
      (f"; slope of log(rate) against log(batch) {slope:.2f} (linear rule: 1)."
       if slope is not None else "."),
      "Largest rate whose loss stayed finite: " + ", ".join(
          f"{b}: {report.fmt(lr, '{:g}')}" for b, lr in zip(bs, m["largest_finite_lr"])) + "."]
  if c["lrs"]:
    parts.append(f"At batch {c['batch']}, final test accuracy: " + ", ".join(
        f"{k.replace('_', ' ')} lr {lr:g} "
        + ("diverged" if c["final_test_accuracy"][k] is None
           else f"{c['final_test_accuracy'][k]:.3f}")
        for k, lr in c["lrs"].items()) + ".")
  return " ".join(parts)


STUDY = register(Study(
    name="learning-rate-batch",
    claim=CLAIM,
    run=_run,
    defaults={
        "data": "digits",
        "hidden": [64],
        "optimizer": "sgd",
        "epochs": 10,
        "batch_sizes": [8, 16, 32, 64, 128, 256, 512],
        "learning_rates": [2.0 ** k for k in range(-8, 3)],
        "seeds": [0, 1],
        "target": 0.9,               # the test accuracy "steps to target" waits for
        "curve_batch": 32,
        "curve_factor": 16.0,        # the too-small rate: the best / this
        "runs": False,               # also write the sweep, every variant a run folder
    },
    quick={"epochs": 3, "batch_sizes": [16, 256],
           "learning_rates": [4.0 ** k for k in range(-4, 2)], "seeds": [0],
           "curve_batch": 16},
))
