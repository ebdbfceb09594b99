"""Pictures of explanations, for a person to look at (matplotlib, Agg).

  attributions(raw, maps, titles, path, image_shape=None)
      one row per example, the input then one column per method: images as
      pictures beside their maps (red: raises the score, blue: lowers it),
      signals as a line coloured by the attribution with its bars beneath
  attention(maps, path, title)
      a grid of blocks x heads of one example's attention weights
  sanity(stages, correlations, path, threshold)
      the rank correlation with the trained model's maps vs the layers
      randomised, one line per method

Inputs are drawn in the data's own units (``raw``: the caller undoes the
standardisation); the maps are on the model's inputs as computed.
"""

import numpy as np


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def image_shape_of(in_shape, declared=None):
  """The ``(H, W)`` an example is drawn as, or None for a signal.

  ``declared`` (a model's ``image_shape``) first; then ``(H, W)`` or ``(H,
  W, C)`` inputs; a flat input whose length is a square of at least 16
  (digits' 64 = 8 x 8) is read as a square image; anything else is a
  signal (MNIST-1D's 40 steps)."""
  if declared:
    return tuple(int(s) for s in declared)[:2]
  in_shape = tuple(in_shape)
  if len(in_shape) in (2, 3) and min(in_shape[:2]) > 1 and (
      len(in_shape) == 2 or in_shape[2] <= 4):
    return in_shape[:2]
  if len(in_shape) == 1:
    side = int(round(np.sqrt(in_shape[0])))
    if side * side == in_shape[0] and side >= 4:
      return (side, side)
  return None


def _as_image(a, shape):
  """One example as ``(H, W)``: channels averaged (inputs) or summed (maps)
  by the caller's choice of ``a``."""
  a = np.asarray(a, np.float64)
  if a.size != shape[0] * shape[1]:
    a = np.reshape(a, (shape[0], shape[1], -1)).mean(-1)
  return np.reshape(a, shape)


def _signal(a):
  """One example as ``(L, channels)``."""
  a = np.asarray(a, np.float64)
  return np.reshape(a, (a.shape[0], -1))


def _bound(m):
  b = float(np.max(np.abs(m))) if np.size(m) else 0.0
  return b if b > 0 else 1.0


def attributions(raw, maps: dict, labels, path: str, image_shape=None) -> None:
  """Draws every example's input and its maps into ``path``.

  Args:
    raw: ``(m, *in_shape)`` inputs in the data's units.
    maps: ``{title: (m, *in_shape)}``, one column each.
    labels: ``m`` strings, each row's label ("#12: 3 -> 3").
    image_shape: ``(H, W)`` to draw images, None for signals.
  """
  plt = _pyplot()
  m, names = len(raw), list(maps)
  cols = len(names) + (1 if image_shape else 0)
  if image_shape:
    fig, axes = plt.subplots(m, cols, squeeze=False,
                             figsize=(1.7 * cols + 0.8, 1.7 * m + 0.6))
  else:
    fig, axes = plt.subplots(2 * m, cols, squeeze=False,
                             figsize=(max(6.0, 3.2 * cols + 0.8), 1.9 * m + 0.8),
                             gridspec_kw={"height_ratios": [3, 1] * m})
  for i in range(m):
    if image_shape:
      _image_row(axes[i], raw[i], [maps[k][i] for k in names], image_shape)
      axes[i, 0].set_ylabel(labels[i], fontsize=7)
    else:
      _signal_row(axes[2 * i], axes[2 * i + 1], raw[i],
                  [maps[k][i] for k in names])
      axes[2 * i, 0].set_ylabel(labels[i], fontsize=7)
  heads = (["input"] if image_shape else []) + names
  for j, name in enumerate(heads):
    axes[0, j].set_title(name, fontsize=9)
  fig.suptitle("attributions\n(red: raises the explained score, blue: "
               "lowers it)", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _image_row(axes, x, maps, shape):
  axes[0].imshow(_as_image(x, shape), cmap="gray_r")
  for ax, a in zip(axes[1:], maps):
    img = _as_image(np.reshape(a, -1) if np.size(a) == shape[0] * shape[1]
                    else np.reshape(a, (shape[0], shape[1], -1)).sum(-1),
                    shape)
    b = _bound(img)
    ax.imshow(img, cmap="bwr", vmin=-b, vmax=b)
    # the input's outline over its map: half its range
    xi = _as_image(x, shape)
    if np.ptp(xi) > 0:
      ax.contour(xi, levels=[float(xi.min() + np.ptp(xi) / 2)],
                 colors="k", linewidths=0.7)
  for ax in axes:
    ax.set_xticks([]), ax.set_yticks([])


def _signal_row(top, bottom, x, maps):
  s = _signal(x)
  t = np.arange(s.shape[0])
  for ax_top, ax_bar, a in zip(top, bottom, maps):
    a = _signal(a).sum(-1)
    b = _bound(a)
    for c in range(s.shape[1]):
      ax_top.plot(t, s[:, c], color="0.6", lw=0.8)
      ax_top.scatter(t, s[:, c], c=a, cmap="bwr", vmin=-b, vmax=b, s=10,
                     zorder=3)
    ax_bar.bar(t, a, color=np.where(a >= 0, "tab:red", "tab:blue"), width=0.8)
    ax_bar.axhline(0, color="0.3", lw=0.5)
    ax_top.set_xticks([])
    ax_bar.tick_params(labelsize=6)
    ax_top.tick_params(labelsize=6)


def attention(maps, path: str, title: str = "") -> None:
  """Draws one example's attention weights ``(n_blocks, n_heads, T, T)``,
  a panel per (block, head), rows queries and columns keys."""
  maps = np.asarray(maps)
  n_blocks, n_heads = maps.shape[:2]
  plt = _pyplot()
  fig, axes = plt.subplots(n_blocks, n_heads, squeeze=False,
                           figsize=(2.2 * n_heads + 1, 2.2 * n_blocks + 0.8))
  for l in range(n_blocks):
    for h in range(n_heads):
      ax = axes[l, h]
      ax.imshow(maps[l, h], cmap="viridis", vmin=0, vmax=float(maps.max()))
      ax.set_title(f"block {l + 1}, head {h + 1}", fontsize=8)
      ax.tick_params(labelsize=6)
  fig.supxlabel("key token (attended to)", fontsize=8)
  fig.supylabel("query token", fontsize=8)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def sanity(stages, correlations: dict, path: str, threshold: float) -> None:
  """Draws each method's mean rank correlation with the trained model's
  maps against the stage of cascading randomisation."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(stages) + 2), 3.6))
  x = np.arange(len(stages))
  for name, corr in correlations.items():
    ax.plot(x, np.asarray(corr), marker="o", label=name)
  ax.axhline(threshold, color="0.4", ls="--", lw=0.8,
             label=f"flag above {threshold:g}")
  ax.set_xticks(x, ["trained"] + [f"+{s}" for s in stages[1:]],
                rotation=35, ha="right", fontsize=7)
  ax.set_ylim(-0.25, 1.05)
  ax.set_xlabel("layers re-initialised, from the output down (cumulative)")
  ax.set_ylabel("Spearman rank corr. of |map|")
  ax.set_title("model-randomisation sanity check (Adebayo et al. 2018)",
               fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
