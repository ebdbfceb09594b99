"""``funcnet compare``: the curves of several run folders in one figure and
one table.

  funcnet compare RUN RUN ... [--out DIR]

A run is any folder :mod:`funcnet.run.rundir` reads: what ``funcnet train``
writes, or one variant of a sweep (``SWEEP/variants/NNN``). Each is read
through :mod:`funcnet.run.rundir` only (``metrics.jsonl``, and ``summary.json``
when there is one), and :func:`compare` writes into ``out``:

  compare.png   per epoch, one colour per run: the training loss (the
                epoch's mean over its steps), the test metric (the headline of
                the first run's task, :func:`funcnet.tasks.headline`: accuracy
                for classification, else the test loss) and the gradient norm of
                every layer (one line style per layer)
  compare.md    one row per run: its name, path, status, epochs, final
                training loss and final test metrics (the last evaluation's)

A diverged epoch's training loss is NaN (``null`` in ``metrics.jsonl``):
the table shows ``nan`` and the curves stop before it.
"""

import math
import os
from typing import NamedTuple, Optional

from funcnet import tasks
from funcnet.run import rundir as runs_lib
from funcnet.errors import ConfigError


class Run(NamedTuple):
  """One run folder, as read.

  Attributes:
    path: the folder, as given.
    name: its config's name (a sweep variant adds its index and values).
    status: ``summary.json``'s status, or ``"no summary"`` (still running,
      or killed before the end).
    history: its ``metrics.jsonl`` records, one per epoch.
  """
  path: str
  name: str
  status: str
  history: list

  @property
  def epochs(self) -> int:
    return self.history[-1].get("epoch", len(self.history))

  @property
  def final_train_loss(self) -> float:
    x = self.history[-1].get("train_loss")
    return float("nan") if x is None else float(x)

  @property
  def final_test(self) -> dict:
    """The last evaluation's ``test_*`` metrics (``{}`` when none ran)."""
    for h in reversed(self.history):
      tests = {k: v for k, v in h.items() if k.startswith("test_")}
      if tests:
        return tests
    return {}

  @property
  def task(self) -> Optional[str]:
    """The task whose metrics its evaluations hold (None: not evaluated)."""
    return tasks.of_keys(self.final_test)


def _headlines(runs) -> list:
  """The runs' tasks' headline keys, in run order, each once."""
  found = [tasks.headline(r.task)[0] for r in runs if r.task is not None]
  return list(dict.fromkeys(found))


def read(path: str) -> Run:
  """The run folder ``path``.

  Raises:
    ConfigError: ``path`` is not a folder, or has no metrics.
  """
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise ConfigError(f"run folder {path!r} does not exist; expected a folder "
                      "written by funcnet train or a sweep's variants/NNN")
  history = runs_lib.read_metrics(path)
  if not history and os.path.isdir(os.path.join(path, "variants")):
    raise ConfigError(f"{path!r} is a sweep folder; expected its run folders, "
                      f"e.g. {os.path.join(path, 'variants', '000')!r}")
  if not history:
    raise ConfigError(f"run folder {path!r} has no metrics ({runs_lib.METRICS}); "
                      "expected a folder written by funcnet train or a sweep's "
                      "variants/NNN")
  try:
    summary = runs_lib.read_summary(path)
  except ConfigError:
    summary = {}
  name = summary.get("name") or os.path.basename(os.path.normpath(path))
  if "sweep_variant" in summary:
    values = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}"
                       for k, v in summary.get("assignment", {}).items())
    name = f"{name} #{summary['sweep_variant']:03d}" + (f" ({values})" if values else "")
  return Run(path, name, summary.get("status", "no summary"), history)


def _metric_order(names, runs) -> list:
  """The headlines first, then the loss, then the rest by name."""
  first = [m for m in dict.fromkeys(_headlines(runs) + ["test_loss"])
           if m in names]
  return first + sorted(set(names) - set(first))


def _cell(x) -> str:
  if x is None:
    return "–"
  if isinstance(x, float):
    return f"{x:.6g}"
  return str(x)


def table(runs: list) -> str:
  """``compare.md``'s table: one row per run, numbers to 6 significant
  digits."""
  metrics = _metric_order({k for r in runs for k in r.final_test}, runs)
  header = (["run", "path", "status", "epochs", "final train loss"]
            + [f"final {m}" for m in metrics])
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in runs:
    row = [r.name, f"`{r.path}`", r.status, r.epochs, r.final_train_loss] + [
        r.final_test.get(m) for m in metrics]
    lines.append("| " + " | ".join(_cell(x).replace("|", "\\|") for x in row) + " |")
  return "\n".join(lines)


def _finite(xs, ys, positive: bool = False):
  pts = [(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)
         and (y > 0 or not positive)]
  return tuple(zip(*pts)) if pts else ((), ())


def plot(runs: list, path: str) -> None:
  """``compare.png``: training loss, test metric, per-layer gradient norms."""
  from matplotlib.ticker import MaxNLocator
  from funcnet.run import plots
  plt = plots.plt
  metric = next((m for m in _headlines(runs) + ["test_loss"]
                 if any(m in h for r in runs for h in r.history)), None)
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
  styles = ["-", "--", ":", "-."]
  layers_seen = []
  for i, r in enumerate(runs):
    color = f"C{i % 10}"
    label = r.name + (f" ({r.status})" if r.status == "diverged" else "")
    epochs = [h.get("epoch") for h in r.history]
    xs, ys = _finite(epochs, [h.get("train_loss") for h in r.history], positive=True)
    axes[0].plot(xs, ys, color=color, marker=".", lw=1.3, label=label)
    if metric:
      xs, ys = _finite(epochs, [h.get(metric) for h in r.history])
      axes[1].plot(xs, ys, color=color, marker=".", lw=1.3, label=label)
    layers = [k for h in r.history for k in (h.get("grad_norms") or {})]
    for layer in dict.fromkeys(layers):
      if layer not in layers_seen:
        layers_seen.append(layer)
      ls = styles[layers_seen.index(layer) % len(styles)]
      xs, ys = _finite(epochs, [(h.get("grad_norms") or {}).get(layer)
                                for h in r.history], positive=True)
      axes[2].plot(xs, ys, ls, color=color, lw=1.2)
  for j, layer in enumerate(layers_seen):
    axes[2].plot([], [], styles[j % len(styles)], color="0.3", label=layer)
  for ax in (axes[0], axes[2]):   # only positive values were plotted there
    if any(len(line.get_xdata()) for line in ax.lines):
      ax.set_yscale("log")
  axes[0].set(xlabel="epoch", ylabel="training loss (mean over the epoch)",
              title="training loss")
  axes[1].set(xlabel="epoch", ylabel=(metric or "no evaluations").replace("_", " "),
              title=(metric or "no test metric").replace("_", " "))
  axes[2].set(xlabel="epoch", ylabel="gradient norm",
              title="per-layer gradient norm (colour: run, style: layer)"
              if layers_seen else "no gradient norms recorded")
  axes[0].legend(fontsize=7)
  if layers_seen:
    axes[2].legend(fontsize=7, ncol=1 + len(layers_seen) // 8)
  for ax in axes:
    ax.title.set_fontsize(9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def compare(paths, out: str) -> dict:
  """Reads the run folders ``paths`` and writes ``compare.png`` and
  ``compare.md`` into ``out``; every folder is read before anything is
  written.

  Returns:
    ``{"runs": [Run, ...], "table": str, "files": [png, md]}``.

  Raises:
    ConfigError: a folder is missing or has no metrics, or ``out`` cannot
      be created.
  """
  runs = [read(p) for p in paths]
  try:
    os.makedirs(out, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"--out {out!r} cannot be created: {e.strerror}") from None
  text = table(runs)
  md = os.path.join(out, "compare.md")
  with open(md, "w") as f:
    f.write(f"# {len(runs)} runs compared\n\n![compare](compare.png)\n\n{text}\n")
  png = os.path.join(out, "compare.png")
  plot(runs, png)
  return {"runs": runs, "table": text, "files": [png, md]}


def default_out(now: Optional[str] = None) -> str:
  """``compare-<time>`` in the working directory."""
  import time
  return f"compare-{now or time.strftime('%Y%m%d-%H%M%S')}"
