"""An Equinox module as a funcnet :class:`~funcnet.model.Model`.

  model = from_equinox(eqx.nn.MLP(64, 10, 32, 2, key=key), in_shape=(64,))
  model = from_equinox(lambda key: eqx.nn.MLP(64, 10, 32, 2, key=key),
                       in_shape=(64,))       # init(key) draws fresh params

The module is split once with ``eqx.partition(module, eqx.is_inexact_array)``:
its floating arrays become funcnet's plain params (``{"layers": [{"weight":
(32, 64), "bias": (32,)}, ...]}`` for an MLP, see :mod:`.plain`); everything
else (activations, sizes, integer arrays, the module's classes) is closed
over statically. So

  model.logits(params, x, key) = vmap(eqx.combine(params, static))(x)

is a pure function of ``params`` that ``funcnet.fit``, ``jax.grad`` and
``funcnet.gradcheck.compare`` use like any other model's (there is no
hand-written backward, so the gradient check's manual column is empty).

Shapes: Equinox layers act on one example, so the adapter maps the module
over the batch axis, ``x: (m, *in_shape) -> z: (m, n_out)``; pass
``batched=True`` for a module that takes the whole batch itself.

Randomness: funcnet passes ``key`` while training and ``None`` to evaluate.
When the module's ``__call__`` takes a ``key`` keyword (Equinox's
convention, e.g. ``eqx.nn.Dropout`` inside), training calls it with
``jax.random.split(key, m)[i]`` for example ``i`` (the whole ``key`` when
``batched``), in ``eqx.nn.inference_mode(module, False)``; evaluation calls
it without a key in ``inference_mode(module, True)``, so dropout is off. A
module without a ``key`` keyword is deterministic and the key is unused.

``init(key)``: given a module, returns its own params whatever the key (it
was initialised when it was built); given a function ``key -> module``,
builds a fresh module from funcnet's key (so ``FitOptions.key`` seeds it).

Out of scope: mutable state (``eqx.nn.BatchNorm`` and other modules made
with ``eqx.nn.make_with_state``) is refused with one line; funcnet's models
are pure functions of params.
"""

import inspect

import jax
import jax.numpy as jnp

from funcnet.adapters import plain as plain_
from funcnet.adapters.wrap import is_factory, model_of, require
from funcnet.errors import ConfigError
from funcnet.model import Model

WHAT = "funcnet.adapters.from_equinox"


def _refuse_state(eqx, module, name):
  def is_index(leaf):
    return isinstance(leaf, eqx.nn.StateIndex)
  if any(map(is_index, jax.tree_util.tree_leaves(module, is_leaf=is_index))):
    raise ConfigError(
        f"equinox module {name} holds mutable state (eqx.nn.StateIndex, e.g. "
        "BatchNorm); the adapter takes modules that are pure functions of "
        "their arrays")


def from_equinox(module, in_shape, *, output_activation: str = "softmax",
                 batched: bool = False, kinked: bool = False,
                 x_dtype=jnp.float32) -> Model:
  """A funcnet ``Model`` running an Equinox module (see the module docstring).

  Args:
    module: an ``eqx.Module``, or a function ``key -> eqx.Module`` that
      builds one (then ``init(key)`` draws fresh params).
    in_shape: the shape of one example, e.g. ``(64,)``.
    output_activation: the activation funcnet applies to the module's
      output ``z`` (``"softmax"`` for ``cross_entropy``; see
      :mod:`funcnet.losses`).
    batched: the module takes ``(m, *in_shape)`` itself (default: one
      example, mapped over the batch).
    kinked: the module has a kinked activation (relu): the gradient check
      then skips finite differences that straddle a kink.
    x_dtype: the inputs' dtype (an integer dtype for token ids).

  Raises:
    ConfigError: equinox is not installed (one line naming the extra), the
      module holds mutable state, or ``module`` is neither a module nor
      callable.
  """
  eqx = require("equinox", WHAT, "equinox")
  factory = None
  if not isinstance(module, eqx.Module):
    if not is_factory(module):
      raise ConfigError(f"{WHAT} takes an eqx.Module or a function key -> "
                        f"eqx.Module; got {type(module).__name__}")
    factory, module = module, module(jax.random.key(0))
    if not isinstance(module, eqx.Module):
      raise ConfigError(f"{WHAT}: the function returned "
                        f"{type(module).__name__}; expected an eqx.Module")
  name = type(module).__name__
  _refuse_state(eqx, module, name)
  tree, static_train = eqx.partition(eqx.nn.inference_mode(module, False),
                                     eqx.is_inexact_array)
  static_eval = eqx.partition(eqx.nn.inference_mode(module, True),
                              eqx.is_inexact_array)[1]
  params, plain = plain_.plain_of(tree)
  takes_key = "key" in inspect.signature(type(module).__call__).parameters

  def forward(p, x, key):
    m = eqx.combine(plain.from_plain(p),
                    static_eval if key is None else static_train)
    if key is None or not takes_key:
      return m(x) if batched else jax.vmap(m)(x)
    if batched:
      return m(x, key=key)
    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(lambda xi, ki: m(xi, key=ki))(x, keys)

  def init(key):
    fresh = eqx.filter(factory(key), eqx.is_inexact_array)
    p, again = plain_.plain_of(fresh)
    if again.treedef != plain.treedef:
      raise ConfigError(f"{WHAT}: the function built modules of two "
                        "structures for two keys")
    return p

  return model_of("equinox", forward, params, init if factory else None,
                  in_shape, output_activation=output_activation,
                  kinked=kinked, x_dtype=x_dtype, name=name)
