"""Pictures of an attack: accuracy against eps, and inputs before and after.

  accuracy_vs_eps(eps, curves, units, path)
      one line per method (accuracy under attack, %), the clean accuracy
      dashed
  examples(x, x_adv, y, pred_clean, pred_adv, eps, path, title)
      clean inputs against their adversarial versions with the predicted
      class of each: images when one example's size is a square (digits'
      8x8), signals as lines otherwise (MNIST-1D)

Everything is drawn in the data's own units. matplotlib is imported only
here (``funcnet attack``).
"""

import math

import numpy as np


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def accuracy_vs_eps(eps, curves: dict, clean: float, units: str,
                    path: str) -> None:
  """``curves``: ``{method: (E,) accuracies in [0, 1]}`` at ``eps (E,)``;
  ``clean``: the accuracy without attack."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5.2, 3.6))
  for method, acc in curves.items():
    ax.plot(eps, 100 * np.asarray(acc), "o-", label=method.upper())
  ax.axhline(100 * clean, color="gray", ls="--", lw=1, label="clean")
  ax.set_xlabel(f"eps ({units})")
  ax.set_ylabel("test accuracy under attack (%)")
  ax.set_ylim(-2, 102)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _side(n: int):
  """The side of a square image of ``n`` values, or None."""
  s = math.isqrt(n)
  return s if s * s == n and s >= 4 else None


def examples(x, x_adv, y, pred_clean, pred_adv, eps, path: str,
             title: str = "") -> None:
  """Draws ``k`` examples, clean and under attack at each eps.

  Args:
    x: ``(k, *in_shape)`` clean inputs (raw units); y, pred_clean: ``(k,)``.
    x_adv: ``(E, k, *in_shape)`` adversarial inputs; pred_adv ``(E, k)``.
    eps: ``(E,)`` the radii (raw units), one row (images) or line each.
    title: the figure's title.
  """
  x = np.asarray(x).reshape(len(x), -1)
  x_adv = np.asarray(x_adv).reshape(x_adv.shape[0], x_adv.shape[1], -1)
  side = _side(x.shape[1])
  plt = _pyplot()
  if side is not None:
    fig = _images(plt, x, x_adv, y, pred_clean, pred_adv, eps, side)
  else:
    fig = _signals(plt, x, x_adv, y, pred_clean, pred_adv, eps)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _images(plt, x, x_adv, y, pred_clean, pred_adv, eps, side):
  """Row 0 the clean images, row ``e + 1`` those at ``eps[e]``, each row one
  mosaic (one axes per row, not per image: 8x less to draw); one shared
  grey scale over everything drawn, so a change reads as a change."""
  k, rows = len(x), 1 + len(eps)
  lo, hi = min(x.min(), x_adv.min()), max(x.max(), x_adv.max())
  fig, axes = plt.subplots(rows, 1, squeeze=False,
                           figsize=(1.1 * k + 0.6, 1.3 * rows + 0.4))
  gap = np.full((side, 1), np.nan)
  cmap = plt.get_cmap("gray_r").with_extremes(bad="steelblue")  # the gaps
  for r in range(rows):
    imgs = x if r == 0 else x_adv[r - 1]
    preds = pred_clean if r == 0 else pred_adv[r - 1]
    tiles = [t for i in range(k) for t in (imgs[i].reshape(side, side), gap)]
    ax = axes[r, 0]
    ax.imshow(np.hstack(tiles[:-1]), cmap=cmap, vmin=lo, vmax=hi)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_ylabel("clean" if r == 0 else f"eps {eps[r - 1]:g}", fontsize=7)
    for i in range(k):
      head = f"y={y[i]} " if r == 0 else ""
      ax.text(i * (side + 1) + side / 2 - 0.5, -0.8, f"{head}pred {preds[i]}",
              ha="center", fontsize=7,
              color="black" if preds[i] == y[i] else "crimson")
  return fig


def _signals(plt, x, x_adv, y, pred_clean, pred_adv, eps):
  """One panel per example: the clean signal and one line per eps."""
  k = len(x)
  cols = min(k, 4)
  rows = -(-k // cols)
  fig, axes = plt.subplots(rows, cols, squeeze=False,
                           figsize=(3.0 * cols, 2.2 * rows + 0.4))
  colors = plt.cm.viridis(np.linspace(0.15, 0.9, max(len(eps), 1)))
  for i in range(rows * cols):
    ax = axes[i // cols, i % cols]
    if i >= k:
      ax.axis("off")
      continue
    ax.plot(x[i], color="black", lw=1.4, label=f"clean: {pred_clean[i]}")
    for e in range(len(eps)):
      ax.plot(x_adv[e, i], color=colors[e], lw=0.9,
              label=f"eps {eps[e]:g}: {pred_adv[e, i]}")
    ax.set_title(f"label {y[i]} (legend: predicted class)", fontsize=8)
    ax.legend(fontsize=5.5, loc="best")
    ax.tick_params(labelsize=6)
  return fig
