"""Magnitude pruning (Han et al. 2015; Zhu & Gupta 2017's baseline), global
or per layer.

Global (``scope="global"``): over all weights (the floating leaves of rank >= 2, as
:func:`funcnet.quantize.weights.is_weight`: matrices and kernels; biases
and norms are never pruned), with ``N`` weights in all and sparsity ``p``,
the ``k = floor(p N)`` of smallest ``|w|`` are removed::

  mask_l = 1[|W_l| > t]   with t the k-th smallest |w| over every layer

Ties at ``t`` are broken by position (a stable sort), so exactly ``k``
weights go. Global rather than per layer: a layer whose weights are
small in magnitude (a wide dense layer) loses more than a small first
convolution, which the accuracy tolerates better than an equal cut.

Per layer (``scope="layer"``): each weight leaf ``l`` of ``N_l`` weights
loses its own ``k_l = floor(p N_l)`` smallest ``|w|``, against its own
threshold ``t_l``, so every layer ends at sparsity ``p`` (up to the floor),
the first convolution's few weights as much as the wide dense layer's.
"""

import jax
import numpy as np

from funcnet.errors import ConfigError
from funcnet.quantize.weights import is_weight


def check_sparsity(p, what: str = "--sparsity") -> float:
  """``p`` in ``[0, 1)``, else a one-line ConfigError."""
  if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
    raise ConfigError(f"{what} {p!r}: expected a fraction in [0, 1)")
  return float(p)


SCOPES = ("global", "layer")


def check_scope(scope: str) -> str:
  """``scope`` one of :data:`SCOPES`, else a one-line ConfigError."""
  if scope not in SCOPES:
    raise ConfigError(f"--scope {scope!r}: expected one of "
                      f"{', '.join(SCOPES)}")
  return scope


def _keep(w, sparsity: float):
  """Bool keep-flags over the flat magnitudes ``w``: all but the
  ``floor(sparsity w.size)`` smallest (ties by position)."""
  keep = np.ones(w.size, bool)
  keep[np.argsort(w, kind="stable")[:int(np.floor(sparsity * w.size))]] = False
  return keep


def masks(params, sparsity: float, scope: str = "global"):
  """The masks (float arrays of 0 and 1 shaped as each leaf; all ones for
  a leaf that is not a weight) removing ``floor(sparsity N)`` weights over
  all layers (``scope="global"``), or ``floor(sparsity N_l)`` from each
  layer (``scope="layer"``)."""
  check_sparsity(sparsity, "sparsity =")
  check_scope(scope)
  params = jax.device_get(params)
  leaves, tree = jax.tree_util.tree_flatten(params)
  weights = [np.abs(np.asarray(a)).ravel() for a in leaves if is_weight(a)]
  if scope == "layer":
    keep = np.concatenate([_keep(w, sparsity) for w in weights] or
                          [np.ones(0, bool)])
  else:
    keep = _keep(np.concatenate(weights) if weights else np.zeros(0), sparsity)
  out, start = [], 0
  for a in leaves:
    a = np.asarray(a)
    if is_weight(a):
      out.append(keep[start:start + a.size].reshape(a.shape).astype(a.dtype))
      start += a.size
    else:
      out.append(np.ones(a.shape, a.dtype))
  return jax.tree_util.tree_unflatten(tree, out)


def apply(params, mask):
  """``params * mask``, leaf by leaf (traceable)."""
  return jax.tree_util.tree_map(lambda a, m: a * m, params, mask)


def sparsity(params) -> float:
  """The fraction of the weights (not biases) that are exactly zero."""
  ws = [np.asarray(a) for a in jax.tree_util.tree_leaves(
      jax.device_get(params)) if is_weight(a)]
  n = sum(w.size for w in ws)
  return float(sum(np.count_nonzero(w == 0) for w in ws) / max(n, 1))
