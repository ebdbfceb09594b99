"""Global magnitude pruning (Han et al. 2015; Zhu & Gupta 2017's baseline).

Over all weights (the floating leaves of rank >= 2, as
:func:`funcnet.quantize.weights.is_weight`: matrices and kernels; biases
and norms are never pruned), with ``N`` weights in all and sparsity ``p``,
the ``k = floor(p N)`` of smallest ``|w|`` are removed::

  mask_l = 1[|W_l| > t]   with t the k-th smallest |w| over every layer

Ties at ``t`` are broken by position (a stable sort), so exactly ``k``
weights go. Global rather than per layer: a layer whose weights are
small in magnitude (a wide dense layer) loses more than a small first
convolution, which the accuracy tolerates better than an equal cut.
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


def masks(params, sparsity: float):
  """The masks (float arrays of 0 and 1 shaped as each leaf; all ones for
  a leaf that is not a weight) removing ``floor(sparsity N)`` weights."""
  check_sparsity(sparsity, "sparsity =")
  params = jax.device_get(params)
  leaves, tree = jax.tree_util.tree_flatten(params)
  weights = [np.abs(np.asarray(a)).ravel() for a in leaves if is_weight(a)]
  flat = np.concatenate(weights) if weights else np.zeros(0)
  k = int(np.floor(sparsity * flat.size))
  keep = np.ones(flat.size, bool)
  keep[np.argsort(flat, kind="stable")[:k]] = False
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
