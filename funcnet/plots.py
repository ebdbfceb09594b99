"""PNG plots of a run's history: loss/accuracy curves and per-layer gradient norms.

The gradient-norm plot is where vanishing or exploding gradients show: one
line per layer, log scale; norms that shrink by orders of magnitude towards
the input layers mean vanishing gradients, growing ones exploding.
"""

import os

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402


def write(history: list, workdir: str, title: str = "") -> list[str]:
  """Writes ``loss.png`` and ``grad_norms.png`` into ``workdir``; returns paths."""
  epochs = [h["epoch"] for h in history]
  paths = []

  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  ax = axes[0]
  ax.plot(epochs, [h["train_loss"] for h in history], label="train")
  test = [h for h in history if "test_loss" in h]
  if test:
    ax.plot([h["epoch"] for h in test], [h["test_loss"] for h in test],
            label="test")
  ax.set_xlabel("epoch")
  ax.set_ylabel("loss")
  if all(h["train_loss"] > 0 for h in history):
    ax.set_yscale("log")
  ax.legend()
  ax.set_title(f"{title} loss")
  ax = axes[1]
  metric = next((k for k in ("test_accuracy", "test_rmse") if test and k in test[0]),
                None)
  if metric:
    ax.plot([h["epoch"] for h in test], [h[metric] for h in test])
    ax.set_ylabel(metric.replace("test_", "test "))
  else:
    ax.plot(epochs, [h.get("lr", float("nan")) for h in history])
    ax.set_ylabel("learning rate")
  ax.set_xlabel("epoch")
  ax.set_title(f"{title} {metric or 'learning rate'}")
  fig.tight_layout()
  paths.append(os.path.join(workdir, "loss.png"))
  fig.savefig(paths[-1], dpi=100)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(6, 4))
  layers = list(history[0]["grad_norms"])
  for layer in layers:
    ax.plot(epochs, [h["grad_norms"][layer] for h in history], label=layer)
  ax.set_yscale("log")
  ax.set_xlabel("epoch")
  ax.set_ylabel("mean ||dC/dθ|| per step")
  ax.set_title(f"{title} per-layer gradient norms")
  ax.legend(fontsize="small")
  fig.tight_layout()
  paths.append(os.path.join(workdir, "grad_norms.png"))
  fig.savefig(paths[-1], dpi=100)
  plt.close(fig)
  return paths
