"""A Flax module (NNX or linen) as a funcnet :class:`~funcnet.model.Model`.

  model = from_flax(MyNNXModule(rngs=nnx.Rngs(0)), in_shape=(64,))
  model = from_flax(lambda key: MyNNXModule(rngs=nnx.Rngs(key)),
                    in_shape=(64,))          # init(key) draws fresh params
  model = from_flax(MyLinenModule(), in_shape=(64,))

NNX: the module is split once, ``nnx.split(module, nnx.Param,
nnx.RngState)``: the ``nnx.Param`` values become funcnet's plain params
(``{"layers": [{"kernel": (64, 32), "bias": (32,)}, ...]}``, see
:mod:`.plain`); the graph (sizes, activations, classes) and the RNG streams
are closed over. So

  model.logits(params, x, key) = nnx.merge(graphdef, params, rng_state)(x)

is a pure function of ``params``. Linen: ``params`` is the module's
``"params"`` collection and ``logits = module.apply({"params": params},
x)``; ``init(key)`` is ``module.init``'s, on a zero batch of ``in_shape``.
Either way ``funcnet.fit``, ``jax.grad`` and ``funcnet.gradcheck.compare``
use it like any other model (no hand-written backward: the gradient
check's manual column is empty). Flax modules take the whole batch,
``x: (m, *in_shape) -> z: (m, n_out)``.

Randomness: funcnet passes ``key`` while training and ``None`` to evaluate.
NNX: training runs the module's ``train()`` form with every RNG stream
(``nnx.Rngs`` held by ``nnx.Dropout`` and the like) reseeded from the key,
stream ``i`` at ``fold_in(key, i)``, count 0; evaluation runs its
``eval()`` form (dropout off). Linen: the key is the ``"dropout"`` RNG of
``apply``, and a ``__call__`` with a ``train`` (or ``deterministic``)
argument gets ``train=key is not None`` (``deterministic=key is None``).

``init(key)``: an NNX module returns its own params whatever the key (it
was initialised when it was built); a function ``key -> nnx.Module``
builds a fresh one from funcnet's key (so ``FitOptions.key`` seeds it).

Out of scope: mutable state (``nnx.BatchNorm``'s ``BatchStat``, linen's
``batch_stats`` collection, caches) is refused with one line; funcnet's
models are pure functions of params.
"""

import inspect

import jax
import jax.numpy as jnp

from funcnet.adapters import plain as plain_
from funcnet.adapters.wrap import is_factory, model_of, require
from funcnet.errors import ConfigError
from funcnet.model import Model

WHAT = "funcnet.adapters.from_flax"


def _typed(key):
  """A typed PRNG key (``jax.random.key``) from either kind."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return key
  return jax.random.wrap_key_data(key)


def _nnx_keys(path) -> tuple:
  """An ``nnx.State`` leaf path without its trailing ``.value``."""
  ks = plain_.components(path)
  return ks[:-1] if ks and ks[-1] == "value" else ks


def _refuse(what: str, name: str):
  raise ConfigError(
      f"flax module {name} holds mutable state ({what}); the adapter takes "
      "modules whose only state is their params (and RNG streams): batch "
      "statistics are not supported")


def _from_nnx(nnx, module, factory, in_shape, **kw) -> Model:
  name = type(module).__name__
  train, evaluate = nnx.clone(module), nnx.clone(module)
  train.train()
  evaluate.eval()
  graph_train, tree, rngs, rest = nnx.split(train, nnx.Param, nnx.RngState, ...)
  graph_eval = nnx.split(evaluate, nnx.Param, nnx.RngState, ...)[0]
  extra = jax.tree_util.tree_flatten_with_path(rest)[0]
  if extra:
    _refuse("/".join(map(str, _nnx_keys(extra[0][0]))), name)
  params, plain = plain_.plain_of(tree, _nnx_keys)
  rng_leaves, rng_def = jax.tree_util.tree_flatten(rngs)

  def reseeded(key):
    key = _typed(key)
    return jax.tree_util.tree_unflatten(rng_def, [
        jax.random.fold_in(key, i) if jnp.issubdtype(v.dtype, jax.dtypes.prng_key)
        else jnp.zeros_like(v) for i, v in enumerate(rng_leaves)])

  def forward(p, x, key):
    graph, r = (graph_eval, rngs) if key is None else (graph_train, reseeded(key))
    return nnx.merge(graph, plain.from_plain(p), r)(x)

  def init(key):
    fresh = nnx.split(factory(_typed(key)), nnx.Param, ...)[1]
    p, again = plain_.plain_of(fresh, _nnx_keys)
    if again.paths != plain.paths:
      raise ConfigError(f"{WHAT}: the function built modules of two "
                        "structures for two keys")
    return p

  return model_of("flax", forward, params, init if factory else None,
                  in_shape, name=name, **kw)


def _from_linen(module, in_shape, *, x_dtype, **kw) -> Model:
  name = type(module).__name__
  args = inspect.signature(type(module).__call__).parameters

  def flags(training: bool) -> dict:
    out = {"train": training} if "train" in args else {}
    if "deterministic" in args:
      out["deterministic"] = not training
    return out

  def variables(key):
    x0 = jnp.zeros((1, *in_shape), x_dtype)
    return module.init({"params": key}, x0, **flags(False))

  shapes = jax.eval_shape(variables, jax.random.key(0))
  other = sorted(set(shapes) - {"params"})
  if other:
    _refuse(f"the {other[0]!r} collection", name)
  shapes, plain = plain_.plain_of(shapes["params"])

  def forward(p, x, key):
    rngs = None if key is None else {"dropout": _typed(key)}
    return module.apply({"params": plain.from_plain(p)}, x, rngs=rngs,
                        **flags(key is not None))

  def init(key):
    return plain.to_plain(jax.tree_util.tree_leaves(
        variables(_typed(key))["params"]))

  return model_of("flax", forward, shapes, init, in_shape, x_dtype=x_dtype,
                  name=name, **kw)


def from_flax(module, in_shape, *, output_activation: str = "softmax",
              kinked: bool = False, x_dtype=jnp.float32) -> Model:
  """A funcnet ``Model`` running a Flax module (see the module docstring).

  Args:
    module: an ``nnx.Module``, a function ``key -> nnx.Module`` that builds
      one (then ``init(key)`` draws fresh params), or a ``linen.Module``.
    in_shape: the shape of one example, e.g. ``(64,)``.
    output_activation: the activation funcnet applies to the module's
      output ``z`` (``"softmax"`` for ``cross_entropy``; see
      :mod:`funcnet.losses`).
    kinked: the module has a kinked activation (relu): the gradient check
      then skips finite differences that straddle a kink.
    x_dtype: the inputs' dtype (an integer dtype for token ids).

  Raises:
    ConfigError: flax is not installed (one line naming the extra), the
      module holds mutable state, or ``module`` is none of the above.
  """
  require("flax", WHAT, "flax")
  from flax import linen, nnx
  kw = dict(output_activation=output_activation, kinked=kinked)
  if isinstance(module, linen.Module):
    return _from_linen(module, in_shape, x_dtype=x_dtype, **kw)
  factory = None
  if not isinstance(module, nnx.Module):
    if not is_factory(module):
      raise ConfigError(f"{WHAT} takes an nnx.Module, a function key -> "
                        f"nnx.Module or a linen.Module; got "
                        f"{type(module).__name__}")
    factory, module = module, module(jax.random.key(0))
    if not isinstance(module, nnx.Module):
      raise ConfigError(f"{WHAT}: the function returned "
                        f"{type(module).__name__}; expected an nnx.Module")
  return _from_nnx(nnx, module, factory, in_shape, x_dtype=x_dtype, **kw)
