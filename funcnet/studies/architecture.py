"""Study ``architecture``: width x depth of an MLP on one task, where depth
helps and where it stops helping.

Every MLP with ``depth`` hidden layers of ``width`` relu units, for each
``width`` of ``widths`` and ``depth`` of ``depths`` (depth 0, softmax on the
inputs, is logistic regression: one model whatever the width), on ``data``,
trained with ``optimizer`` at ``learning_rate`` for ``epochs`` epochs of
``batch_size``, every seed of ``seeds``, by :func:`funcnet.sweep.run`. Each
architecture is one compiled program (its shapes differ), its seeds trained
together in it.

A dense layer ``n_in -> n_out`` holds ``(n_in + 1) n_out`` parameters (the
weights and the bias), so the network ``n_0 -> h_1 -> ... -> h_d -> n_out``
holds their sum; the study counts them in the trained params. Reported per
architecture: that count, the final test accuracy (mean and standard
deviation over seeds), the final training loss (the last epoch's mean over
its steps), and the seconds per step of one variant: the program's time from
the end of its first epoch (which pays for compilation) to the end of its
last, over the steps in between and the seeds it trains together. Per width:
the gain in test accuracy of each added layer.
"""

import json
import os

import jax
import numpy as np

from funcnet import config as config_lib, sweep, tasks
from funcnet.errors import ConfigError
from funcnet.studies import report
from funcnet.studies.learning_rate_batch import seconds_per_step
from funcnet.studies.registry import Study, register

CLAIM = ("On MNIST-1D a first hidden layer lifts an MLP far above logistic "
         "regression and a second adds less; further layers change test "
         "accuracy by a few points at most while the training loss keeps "
         "falling, and width helps at every depth.")

HIDDEN, SEED = "model.mlp.hidden", "seed"


def hidden_layers(widths, depths) -> list:
  """The grid's ``model.mlp.hidden`` values: ``[w] * d`` for each width and
  depth, depth 0 (``[]``) once."""
  out = [[]] if 0 in depths else []
  return out + [[w] * d for w in widths for d in depths if d > 0]


def _sweep(out: str, p: dict):
  cfg = config_lib.load(None, [
      f'data.name="{p["data"]}"', f'optimizer.name="{p["optimizer"]}"',
      f"optimizer.learning_rate={p['learning_rate']}",
      f"train.epochs={p['epochs']}", f"train.batch_size={p['batch_size']}",
      "run.plots=false"])  # the sweep's own figures; the study draws its own
  grid = {HIDDEN: hidden_layers(p["widths"], p["depths"]), SEED: p["seeds"]}
  return sweep.run(cfg, grid, os.path.join(out, "sweep") if p["runs"] else None,
                   log=lambda *a: None)


def _measure(result, p: dict) -> dict:
  """Per architecture its numbers (means over seeds); per width its line."""
  by_hidden = {}
  for v in result.variants:
    by_hidden.setdefault(json.dumps(v.assignment[HIDDEN]), []).append(v)
  archs = []
  for key, vs in by_hidden.items():
    hidden = json.loads(key)
    acc = [v.final.get("test_accuracy", np.nan) if v.status != "diverged"
           else np.nan for v in vs]
    archs.append({
        "hidden": hidden, "depth": len(hidden),
        "width": hidden[0] if hidden else 0,
        "params": int(sum(np.size(a) for a in jax.tree_util.tree_leaves(vs[0].params))),
        "test_accuracy": float(np.mean(acc)), "test_accuracy_std": float(np.std(acc)),
        "test_loss": float(np.mean([v.final.get("test_loss", np.nan) for v in vs])),
        "train_loss": float(np.mean([v.history[-1]["train_loss"] for v in vs])),
        "statuses": [v.status for v in vs],
        "seconds_per_step": seconds_per_step(vs),
        "group_wall_s": vs[0].group_wall_s})
  find = {(a["width"], a["depth"]): a for a in archs}
  lines = []
  for w in p["widths"]:
    depths = list(p["depths"])
    acc = [find[(0 if d == 0 else w, d)]["test_accuracy"] for d in depths]
    lines.append({"width": w, "depths": depths, "test_accuracy": acc,
                  "gains": [b - a for a, b in zip(acc, acc[1:])],
                  "best_depth": depths[int(np.argmax(acc))]})
  return {"task": p["data"], "architectures": archs, "by_width": lines,
          "groups": result.groups, "sweep_wall_s": result.wall_s}


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
  figures = [_plot(out, m, p)]
  table = report.markdown_table(
      ["width", "depth", "hidden", "params", "test acc", "± std (seeds)",
       "test loss", "final train loss", "s/step (one variant)",
       "program wall s (compile incl.)"],
      [[a["width"] if a["depth"] else "–", a["depth"], json.dumps(a["hidden"]),
        a["params"], a["test_accuracy"], a["test_accuracy_std"], a["test_loss"],
        a["train_loss"], a["seconds_per_step"], a["group_wall_s"]]
       for a in sorted(m["architectures"], key=lambda a: (a["depth"], a["width"]))],
      fmt="{:.3g}")
  report.write_readme(
      out, "architecture: depth helps up to a point, width keeps helping",
      CLAIM, _measured(m, p), figures, table,
      command="funcnet study architecture --out docs/studies/architecture")
  return m


# --- report ---------------------------------------------------------------------

def _plot(out: str, m: dict, p: dict) -> str:
  fig, axes = report.plt.subplots(1, 3, figsize=(16, 4.6))
  find = {(a["width"], a["depth"]): a for a in m["architectures"]}
  for i, line in enumerate(m["by_width"]):
    w = line["width"]
    arch = [find[(0 if d == 0 else w, d)] for d in line["depths"]]
    axes[0].errorbar(line["depths"], line["test_accuracy"],
                     yerr=[a["test_accuracy_std"] for a in arch], marker="o",
                     capsize=3, color=f"C{i}", label=f"width {w}")
    axes[1].plot([a["params"] for a in arch], line["test_accuracy"], "-",
                 color=f"C{i}", lw=0.8, alpha=0.6)
    axes[2].plot([a["params"] for a in arch], [a["seconds_per_step"] for a in arch],
                 "-", color=f"C{i}", lw=0.8, alpha=0.6)
    for a in arch:
      for ax, y in ((axes[1], a["test_accuracy"]), (axes[2], a["seconds_per_step"])):
        ax.plot(a["params"], y, marker="os^vDP*"[min(a["depth"], 6)],
                color="k" if a["depth"] == 0 else f"C{i}", ls="none", ms=6)
  for d in sorted({a["depth"] for a in m["architectures"]}):
    axes[1].plot([], [], marker="os^vDP*"[min(d, 6)], color="0.4", ls="none",
                 label=f"depth {d}" + (" (logistic regression)" if d == 0 else ""))
  axes[0].set(xlabel="hidden layers (0: logistic regression)",
              ylabel="final test accuracy",
              title="test accuracy against depth, per width (mean ± std over seeds)")
  axes[0].set_xticks(sorted({a["depth"] for a in m["architectures"]}))
  axes[1].set(xscale="log", xlabel="parameters", ylabel="final test accuracy",
              title="test accuracy against parameter count (colour: width)")
  axes[2].set(xscale="log", yscale="log", xlabel="parameters",
              ylabel="seconds per step (one variant)",
              title="time per step after compilation")
  for ax in axes:
    ax.title.set_fontsize(9)
  axes[0].legend(fontsize=7)
  axes[1].legend(fontsize=7)
  fig.suptitle(f"MLPs on {p['data']}: {p['optimizer']} (lr {p['learning_rate']:g}), "
               f"{p['epochs']} epochs of batch {p['batch_size']}, "
               f"{len(p['seeds'])} seed(s)", fontsize=10)
  return report.save(fig, out, "architecture.png")


def _measured(m: dict, p: dict) -> str:
  find = {(a["width"], a["depth"]): a for a in m["architectures"]}
  parts = [f"{len(m['architectures'])} architectures x {len(p['seeds'])} seed(s) "
           f"in {m['groups']} compiled programs ({m['sweep_wall_s']:.0f} s)."]
  if (0, 0) in find:
    parts.append(f"Logistic regression ({find[0, 0]['params']} parameters): "
                 f"test accuracy {find[0, 0]['test_accuracy']:.3f}.")
  for line in m["by_width"]:
    w = line["width"]
    parts.append(
        f"Width {w}: " + ", ".join(
            f"depth {d} {acc:.3f}" for d, acc in zip(line["depths"], line["test_accuracy"])
            if d > 0) +
        " (gains per added layer " + ", ".join(f"{g:+.3f}" for g in line["gains"]) +
        f"; best depth {line['best_depth']}).")
  deepest = max(m["architectures"], key=lambda a: a["params"])
  parts.append(f"The largest net ({json.dumps(deepest['hidden'])}, "
               f"{deepest['params']} parameters) ends with training loss "
               f"{deepest['train_loss']:.3g} against test loss "
               f"{deepest['test_loss']:.3g}.")
  return " ".join(parts)


STUDY = register(Study(
    name="architecture",
    claim=CLAIM,
    run=_run,
    defaults={
        "data": "mnist1d",
        "widths": [32, 128, 256],
        "depths": [0, 1, 2, 3, 4],
        "seeds": [0, 1],
        "epochs": 20,
        "batch_size": 64,
        "optimizer": "adam",
        "learning_rate": 0.001,
        "runs": False,               # also write the sweep, every variant a run folder
    },
    quick={"widths": [128], "depths": [0, 1, 2, 3], "seeds": [0]},
))
