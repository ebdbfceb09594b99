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
import os

from funcnet.run import rundir, sweep_figures


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


def figure_data(result) -> dict:
  """What ``curves.png`` and ``heatmap.png`` show, as plain JSON-ready data
  (the format :mod:`funcnet.run.sweep_figures` draws, in this process or
  the plotting process)."""
  m = result.metric
  return {"metric": m, "higher_is_better": bool(result.higher_is_better),
          "keys": list(result.keys),
          "variants": [{
              "assignment": dict(v.assignment),
              "history": [{k: h[k] for k in ("epoch", "train_loss", m) if k in h}
                          for h in v.history],
              "final": float(v.final.get(m, float("nan")))}
                       for v in result.variants]}


def write(result, grid: dict, log=print, plotter=None) -> list:
  """Writes the whole folder ``result.out``; returns the files written.

  ``plotter``: a started :class:`funcnet.run.plot_process.Plotter`, which
  draws the figures while the tables and ``variants/`` are written (None,
  or one that is gone: drawn here, after them)."""
  out = result.out
  os.makedirs(out, exist_ok=True)
  figures = None
  if result.variants[0].cfg["run"]["plots"]:
    figures = figure_data(result)
    if plotter is not None and not plotter.draw_sweep(figures, out):
      plotter = None
  write_csv(result, os.path.join(out, "results.csv"))
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(markdown(result))
  write_best(result, os.path.join(out, "best.toml"))
  write_json(result, grid, os.path.join(out, "sweep.json"))
  write_variants(result.variants, os.path.join(out, "variants"))
  files = ["results.csv", "results.md", "best.toml", "sweep.json", "variants/"]
  if figures is not None:
    if plotter is not None:
      plotter.wait()  # FuncnetError: its one line
      files += sweep_figures.files(figures)
    else:
      files += sweep_figures.draw(figures, out)
  best = result.best
  log(f"best variant {best.index}: "
      + ", ".join(f"{k}={json.dumps(v)}" for k, v in best.assignment.items())
      + f", final {result.metric} {best.final.get(result.metric, float('nan')):.4g}")
  log(f"sweep folder {out}: {', '.join(files)}")
  return files
