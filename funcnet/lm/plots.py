"""Seeing a language model work on a prompt: a GPT's attention weights per
head, and the gradient's norm through a recurrent model's time steps.

  attention(model, params, ids, labels, path)
      one panel per (block, head): row q the weights query q puts on keys
      0..q (:func:`funcnet.models.gpt.attention_maps`)
  time_grad_norms(model, params, ids, path)
      ||dC/dh_t|| for each layer and step t of the prompt, C the mean
      next-token loss over the prompt, from the hand-written BPTT
      (:func:`funcnet.models.rnn_lm.time_step_grad_norms`): the
      vanishing-gradient study's picture, on text

matplotlib is imported only here (``funcnet sample --plot-attention``,
``--plot-grad-norms``).
"""

import numpy as np

from funcnet.errors import ConfigError


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def attention(model, params, ids, labels, path: str) -> None:
  """Draws each head's attention weights for the token ids ``ids (T,)``,
  the axes labelled with ``labels`` (one string per token), into ``path``."""
  from funcnet.models import gpt
  maps = np.asarray(gpt.attention_maps(model, params, np.asarray(ids)[None]))
  n_layers, _, n_heads, T, _ = maps.shape
  plt = _pyplot()
  fig, axes = plt.subplots(n_layers, n_heads, squeeze=False,
                           figsize=(2.2 * n_heads + 1, 2.2 * n_layers + 0.6))
  ticks = [repr(c)[1:-1] for c in labels]
  for l in range(n_layers):
    for h in range(n_heads):
      ax = axes[l, h]
      ax.imshow(maps[l, 0, h], cmap="viridis", vmin=0, vmax=1)
      ax.set_title(f"block {l + 1}, head {h + 1}", fontsize=8)
      if T <= 32:
        ax.set_xticks(range(T), ticks, fontsize=6)
        ax.set_yticks(range(T), ticks, fontsize=6)
      else:
        ax.set_xticks([]), ax.set_yticks([])
  fig.supxlabel("key (attended to)")
  fig.supylabel("query")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def time_grad_norms(model, params, ids, path: str) -> np.ndarray:
  """Draws ``||dC/dh_t||`` per layer over the prompt's steps into ``path``
  (``x = ids[:-1]``, labels ``ids[1:]``); returns the ``(n_layers, T)``
  norms."""
  from funcnet.models import rnn_lm
  ids = np.asarray(ids, np.int32)
  if len(ids) < 2:
    raise ConfigError("--plot-grad-norms needs a prompt of at least two "
                      "characters (inputs and their next characters)")
  norms = np.asarray(rnn_lm.time_step_grad_norms(model, params, ids[None, :-1],
                                                 ids[None, 1:]))
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(7, 3.5))
  for l, row in enumerate(norms):
    ax.semilogy(np.arange(len(row)), row, label=f"layer {l + 1}")
  ax.set_xlabel("time step t")
  ax.set_ylabel("||dC/dh_t||")
  ax.set_title("the gradient through time (hand-written BPTT)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return norms
