"""PNG plots of a run's history: loss/accuracy curves and per-layer gradient norms.

The gradient-norm plot is where vanishing or exploding gradients show: one
line per layer, log scale; norms that shrink by orders of magnitude towards
the input layers mean vanishing gradients, growing ones exploding.
"""

import os

import matplotlib

from funcnet import tasks

matplotlib.use("Agg")  # no display on servers and CI
from matplotlib import ticker  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def __getattr__(name):
  """``plots.plt``: pyplot (Agg), for the sweep and comparison figures.

  Imported on first use: ``write`` draws on bare ``Figure`` objects, which
  need neither pyplot's import (0.15 s) nor its global figure registry.
  """
  if name == "plt":
    import matplotlib.pyplot as plt
    return plt
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def log_y(ax) -> None:
  """A log y axis labelled in plain text (``1e-02``, ``0.5``).

  Matplotlib's default log labels are mathtext (``$10^{-2}$``), and its
  first use builds the mathtext parser: 0.35 s of every run that plots.
  """
  ax.set_yscale("log")
  ax.yaxis.set_major_formatter(ticker.LogFormatter())
  ax.yaxis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False))


# A title at a fixed height above its axes: with the default (None), every
# draw measures the axes' tight bounding box to place it, a quarter of the
# drawing time of ``write`` (0.1 of 0.4 s).
TITLE_Y = 1.01


def _metric(test: list):
  """The right panel's metric: the task's headline (read off the
  evaluation's keys, :func:`funcnet.tasks.of_keys`), or, when that is the
  loss of the left panel, the task's next metric; None without one."""
  task = tasks.of_keys(test[0]) if test else None
  if task is None:
    return None
  shown = [k for k in tasks.evaluated_keys(task) if k != "test_loss"]
  return shown[0] if shown else None


FIGURES = ("loss.png", "grad_norms.png")


def write(history: list, workdir: str, title: str = "",
          figures=FIGURES) -> list[str]:
  """Writes ``loss.png`` and ``grad_norms.png`` (or those of them in
  ``figures``) into ``workdir``; returns their paths.

  Drawn on bare ``Figure`` objects with fixed margins and plain-text log
  labels: ``tight_layout`` draws each figure once more to measure it, and
  mathtext labels build a parser; the two were most of the plotting time of
  a one-epoch run (issue 15).
  """
  return _draw(history, title, lambda name: os.path.join(workdir, name),
               figures)


def warm_up() -> None:
  """Draws a one-epoch run's two figures into memory and forgets them.

  The first drawing in a process loads the font and fills matplotlib's
  text-layout and tick caches: 0.24 s against 0.16-0.18 s for the next
  ones. The plotting process (:mod:`funcnet.run.plot_process`) calls this
  while it waits for the run's history, on a core the run leaves idle."""
  import io
  record = {"epoch": 1, "train_loss": 1.5, "test_loss": 1.2,
            "test_accuracy": 0.5, "lr": 1e-3,
            "grad_norms": {"layer 1": 0.5, "layer 2": 1.5}}
  _draw([record], "warm-up", lambda name: io.BytesIO())


def _draw(history: list, title: str, target, figures=FIGURES) -> list:
  """The figures of :func:`write` named in ``figures``, each saved to
  ``target(name)`` (a path or a binary file); returns the targets."""
  epochs = [h["epoch"] for h in history]
  # One epoch is one point: a line of one point draws nothing.
  mark = {"marker": "o"} if len(epochs) == 1 else {}
  draw = {"loss.png": _draw_loss, "grad_norms.png": _draw_grad_norms}
  return [draw[name](history, epochs, mark, title, target(name))
          for name in figures]


def _draw_loss(history, epochs, mark, title, target):
  """``loss.png``: train and test loss, and the task's metric (or the
  learning rate) beside them."""
  fig = Figure(figsize=(10, 4))
  axes = fig.subplots(1, 2)
  fig.subplots_adjust(left=0.08, right=0.98, bottom=0.12, top=0.91, wspace=0.25)
  ax = axes[0]
  ax.plot(epochs, [h["train_loss"] for h in history], label="train", **mark)
  test = [h for h in history if "test_loss" in h]
  if test:
    ax.plot([h["epoch"] for h in test], [h["test_loss"] for h in test],
            label="test", **mark)
  ax.set_xlabel("epoch")
  ax.set_ylabel("loss")
  if all(h["train_loss"] > 0 for h in history):
    log_y(ax)
  ax.legend()
  ax.set_title(f"{title} loss", y=TITLE_Y)
  ax = axes[1]
  metric = _metric(test)
  if metric:
    ax.plot([h["epoch"] for h in test], [h[metric] for h in test], **mark)
    ax.set_ylabel(metric.replace("test_", "test "))
  else:
    ax.plot(epochs, [h.get("lr", float("nan")) for h in history])
    ax.set_ylabel("learning rate")
  ax.set_xlabel("epoch")
  ax.set_title(f"{title} {metric or 'learning rate'}", y=TITLE_Y)
  fig.savefig(target, dpi=100, format="png")
  return target


def _draw_grad_norms(history, epochs, mark, title, target):
  """``grad_norms.png``: each layer's mean gradient norm, log scale."""
  fig = Figure(figsize=(6, 4))
  ax = fig.subplots()
  fig.subplots_adjust(left=0.14, right=0.97, bottom=0.12, top=0.91)
  layers = list(history[0]["grad_norms"])
  for layer in layers:
    ax.plot(epochs, [h["grad_norms"][layer] for h in history], label=layer,
            **mark)
  log_y(ax)
  ax.set_xlabel("epoch")
  ax.set_ylabel("mean ||dC/dθ|| per step")
  ax.set_title(f"{title} per-layer gradient norms", y=TITLE_Y)
  ax.legend(fontsize="small")
  fig.savefig(target, dpi=100, format="png")
  return target
