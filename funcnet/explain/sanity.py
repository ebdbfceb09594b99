"""The model-randomisation sanity check of Adebayo et al. (2018), "Sanity
checks for saliency maps".

An explanation of what a model learned must change when what it learned is
destroyed. The check re-initialises the model's layers one at a time from
the top (the output layer) down, cascading: stage ``k`` has its top ``k``
layers drawn afresh from the model's own initialiser (explicit key), the
rest as trained; stage 0 is the trained model. At each stage every method
explains the same examples, for the same classes (the trained model's
predictions), and the maps are compared with the trained model's by the
Spearman rank correlation of their absolute values, per example:

  rho_i = pearson(rank |A_i^trained|, rank |A_i^stage k|)     (ties: mean ranks)

A method whose mean ``rho`` is still above ``threshold`` (0.5) once every
layer is random explains the input, not the model: it is flagged.
(gradient x input often is: the input's own pattern survives in it.)

Layers are the units of ``model.init``'s pytree in the order ``init`` builds
them (the forward's order in every funcnet kind): the entries of a
top-level list (an MLP's layers), and of a top-level dict each entry, a
list entry's elements one by one (a CNN's ``conv``/``dense``, a
Transformer's ``embed``, ``pos``, ``blocks[i]``, ``ln``, ``head``).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

THRESHOLD = 0.5


def layer_paths(params) -> list:
  """The layers of a freshly built ``params`` (``model.init``'s own dict
  order, input to output), each as a path of keys and indices."""
  if isinstance(params, (list, tuple)):
    return [(i,) for i in range(len(params))]
  if not isinstance(params, dict):
    return [()]
  out = []
  for k, v in params.items():
    if isinstance(v, (list, tuple)):
      out += [(k, i) for i in range(len(v))]
    else:
      out.append((k,))
  return out


def _get(tree, path):
  for p in path:
    tree = tree[p]
  return tree


def _set(tree, path, value):
  """A copy of ``tree`` with the subtree at ``path`` replaced (the rest
  shared)."""
  if not path:
    return value
  head, rest = path[0], path[1:]
  if isinstance(tree, dict):
    return {**tree, head: _set(tree[head], rest, value)}
  items = list(tree)
  items[head] = _set(items[head], rest, value)
  return type(tree)(items) if isinstance(tree, tuple) else items


def _name(path) -> str:
  """``(1,)`` -> ``"layer 2"`` (a list of layers), ``("blocks", 0)`` ->
  ``"blocks[0]"``, ``("head",)`` -> ``"head"``."""
  if len(path) == 1 and isinstance(path[0], int):
    return f"layer {path[0] + 1}"
  return "".join(f"[{p}]" if isinstance(p, int) else
                 ("." if i else "") + str(p) for i, p in enumerate(path)) or "all"


def cascade(model, params, key) -> list:
  """``[(name, params_k)]`` for ``k = 0..L``: the trained params, then the
  top ``k`` layers re-initialised (``model.init(key)`` in the params'
  dtype), cascading from the output down. ``name`` is the last layer
  randomised (``"trained"`` first)."""
  dtype = jax.tree_util.tree_leaves(params)[0].dtype
  order = []

  def init(k):
    p = model.init(k, dtype)
    order.append(layer_paths(p))     # init's own order, before jit sorts keys
    return p
  fresh = jax.jit(init)(key)
  # placed as the trained params are, so compiled maps are reused as they are
  fresh = jax.tree_util.tree_map(lambda f, p: jax.device_put(f, p.sharding),
                                 fresh, params)
  stages, current = [("trained", params)], params
  for path in reversed(order[0]):
    current = _set(current, path, _get(fresh, path))
    stages.append((_name(path), current))
  return stages


def spearman(a, b) -> np.ndarray:
  """The Spearman rank correlation of each row of ``a`` with the same row of
  ``b`` (``(m, ...)`` each, flattened per example): ``(m,)``, with mean
  ranks for ties and NaN for a constant row."""
  a = np.reshape(np.asarray(a, np.float64), (np.shape(a)[0], -1))
  b = np.reshape(np.asarray(b, np.float64), (np.shape(b)[0], -1))
  ra, rb = _ranks(a), _ranks(b)
  ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
  den = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1),
                    np.nan)


def _ranks(a):
  """Mean ranks (1-based) along each row: the rank of ``v`` is the mean of
  ``#{u < v} + 1`` and ``#{u <= v}``, which averages over ties."""
  below = (a[:, None, :] < a[:, :, None]).sum(-1)
  upto = (a[:, None, :] <= a[:, :, None]).sum(-1)
  return (below + 1 + upto) / 2.0


def _mean_finite(v):
  """The mean of each row's finite entries (NaN for a row with none: every
  map constant), without numpy's empty-slice warning."""
  ok = np.isfinite(v)
  n = ok.sum(axis=1)
  total = np.where(ok, v, 0.0).sum(axis=1)
  return np.where(n > 0, total / np.maximum(n, 1), np.nan)


class Sanity(NamedTuple):
  """What the check found.

  Attributes:
    stages: ``["trained", name of the top layer, ...]``, ``L + 1`` names:
      stage ``k`` has the layers named at ``1..k`` randomised.
    correlations: ``{method: (L + 1,)}``, the mean over the examples of the
      rank correlation of ``|map|`` with the trained model's (1 at stage 0).
    per_example: ``{method: (L + 1, m)}``, the same before the mean.
    flagged: the methods whose correlation at the last stage (every layer
      random) is above ``threshold``.
    threshold: the flag's bound.
  """
  stages: list
  correlations: dict
  per_example: dict
  flagged: list
  threshold: float


def check(model, params, x, methods: dict, *, key, threshold: float = THRESHOLD,
          target=None) -> Sanity:
  """Runs the cascading randomisation on examples ``x``.

  Args:
    model, params: the trained model.
    x: ``(m, *in_shape)`` examples, in the model's input units.
    methods: ``{name: fn}``, ``fn(params, x, target) -> (m, *in_shape)``
      maps (e.g. a jitted ``saliency`` with the model closed over; its key
      fixed, for SmoothGrad, so only the model changes from stage to stage).
    key: the re-initialisation's key.
    threshold: a method still correlated above this with every layer
      random is flagged.
    target: ``(m,)`` classes to explain; default the trained model's
      predictions, kept at every stage.
  """
  stages = cascade(model, params, key)
  if target is None:
    target = jax.jit(lambda p, x_: jnp.argmax(model.logits(p, x_), -1))(
        params, x)
  per = {}
  for name, fn in methods.items():
    ref = np.abs(np.asarray(fn(params, x, target)))
    per[name] = np.stack([spearman(ref, np.abs(np.asarray(fn(p, x, target))))
                          for _, p in stages])
  corr = {k: _mean_finite(v) for k, v in per.items()}
  flagged = [k for k, c in corr.items() if not c[-1] <= threshold]
  return Sanity([s for s, _ in stages], corr, per, flagged, threshold)

