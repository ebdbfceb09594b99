"""Gradient descent ``w := w - eta dC/dw`` and its variants, written from their equations.

Every optimizer is a pure pair ``(init, update)`` packed in a
:class:`GradientTransformation` (optax's protocol: the same two fields, so
it composes with ``optax.chain`` and optax's other combinators) and is
applied with :func:`apply_updates` (``optax.apply_updates``'s rule):

  state = opt.init(params)
  updates, state = opt.update(grads, state, params)
  params = apply_updates(params, updates)            # w_{t+1} = w_t + u_t

``params``, ``grads`` ``g``, ``updates`` ``u`` and every moment below are
pytrees of the same structure (each leaf an array of any shape, e.g. a
``(n_in, n_out)`` weight matrix and an ``(n_out,)`` bias); all arithmetic is
elementwise per leaf, except the global norm in ``clip_by_global_norm``,
which runs over all leaves. Each state is a named tuple whose ``count`` is
an int32 scalar ``()``: the number of updates already applied, ``t - 1`` on
step ``t``. The learning rate is ``eta_t = learning_rate`` for a float, or
``eta_t = learning_rate(count)`` for a schedule (see :mod:`funcnet.schedules`),
so a schedule sees ``0`` on the first step.

The update rules, for step ``t = 1, 2, ...`` (all moments start at ``0``
unless stated):

  ``sgd``        u = -eta g
  ``momentum``   v := beta v + g;                       u = -eta v
  ``nesterov``   v := beta v + g;                       u = -eta (g + beta v)
  ``adagrad``    G := G + g^2     (G_0 = initial_accumulator_value)
                                                        u = -eta g / sqrt(G + eps)
  ``rmsprop``    nu := decay nu + (1 - decay) g^2;     u = -eta g / sqrt(nu + eps)
  ``adam``       mu := b1 mu + (1 - b1) g;   nu := b2 nu + (1 - b2) g^2
                 mu_hat = mu / (1 - b1^t);   nu_hat = nu / (1 - b2^t)
                                                        u = -eta mu_hat / (sqrt(nu_hat) + eps)
  ``adamw``      as adam, then                          u = -eta (mu_hat / (sqrt(nu_hat) + eps) + lambda w)

and two stateless transforms meant to run before an optimizer:

  ``clip_by_global_norm``  g := g if ||g|| < max_norm, else (g / ||g||) max_norm,
                           with ||g||^2 = sum over leaves of sum g^2
  ``add_weight_decay``     g := g + lambda w          (L2: the gradient of C + lambda ||w||^2 / 2)

Conventions, all those of optax 0.2 (each rule here matches the optax alias
named in :func:`get` to rounding, which the tests check to 1e-12 in float64):

* ``momentum`` is the heavy ball without dampening, ``v := beta v + g``, not
  an average ``beta v + (1 - beta) g``: ``optax.trace``, as in PyTorch.
* ``nesterov`` is Sutskever et al.'s reformulation used by
  ``optax.sgd(momentum=beta, nesterov=True)``: the gradient is taken at the
  current ``w`` (not at a look-ahead point) and the step uses ``g + beta v``
  with the already updated ``v``.
* ``adagrad`` starts its sum at ``initial_accumulator_value = 0.1`` (as
  TensorFlow and optax do), not ``0``, and puts ``eps`` inside the square
  root. Optax also guards ``G > 0``; with ``eps > 0`` enforced here that
  guard never changes a value, so it is left out.
* ``rmsprop`` puts ``eps`` inside the square root (optax's default
  ``eps_in_sqrt=True``; Keras and PyTorch put it outside), starts ``nu`` at
  ``0`` and has no bias correction.
* ``adam`` puts ``eps`` outside the square root, after bias correction, and
  computes ``1 - b^t`` in the default float dtype before dividing, so that a
  low-precision moment does not round ``1 - b2^t`` to ``0``.
* ``adamw`` adds the decoupled decay ``lambda w`` to the Adam direction
  *before* the learning rate, so the decay is scaled by ``eta_t`` (optax and
  PyTorch; Loshchilov & Hutter scale it by the schedule multiplier only).
  ``add_weight_decay`` chained before ``adam`` is instead Adam with an L2
  term, whose decay is rescaled by ``1 / sqrt(nu_hat)``.
* ``clip_by_global_norm`` leaves ``g`` bit-for-bit unchanged when
  ``||g|| < max_norm`` and computes ``(g / ||g||) max_norm`` in that order
  otherwise, as optax does.
* ``count`` saturates at the int32 maximum instead of wrapping
  (``optax.safe_increment``).

The one structural difference from optax: every state here carries its own
``count`` (optax keeps one only for Adam and for a scheduled learning rate),
and an optimizer's state is one named tuple rather than a chain of partial
states.

Hyperparameters are checked when an optimizer is built: a value out of range
raises :class:`funcnet.errors.ConfigError` naming it, an unknown optimizer
name in :func:`get` or :func:`build` raises
:class:`funcnet.errors.UnknownNameError`.

References: Polyak 1964 (momentum); Sutskever et al. 2013 (Nesterov form);
Duchi et al. 2011 (Adagrad); Tieleman & Hinton 2012 (RMSprop); Kingma & Ba
2015 (Adam); Loshchilov & Hutter 2019 (AdamW).
"""

import functools
import inspect
import operator
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from funcnet.errors import ConfigError, unknown
from funcnet.schedules import Schedule, _bind, _check
from funcnet.tracing import is_off


class GradientTransformation(NamedTuple):
  """An optimizer or a gradient transform: optax's protocol, not its class.

    init(params) -> state
    update(updates, state, params=None) -> (updates, state)

  The fields of ``optax.GradientTransformation``, so optax's combinators
  (``chain``, ``multi_transform``, ...) take it as they take their own;
  only ``isinstance(t, optax.GradientTransformation)`` tells them apart.
  Not optax's own class: importing optax (its ``contrib``, ``losses``,
  absl) costs 0.11-0.13 s, a tenth of a warm one-epoch ``funcnet train``,
  and a run whose optimizer is funcnet's uses none of it (issue 27; optax
  is imported when a config asks for ``impl = "optax"``, and by the tests
  that check each rule against it).
  """
  init: Callable
  update: Callable


ScalarOrSchedule = Union[float, Schedule]
tree_map = jax.tree_util.tree_map


# ---------------------------------------------------------------------------
# States. ``count`` is an int32 scalar; every other field is a pytree shaped
# like the params.


class SgdState(NamedTuple):
  """State of :func:`sgd`: only the step ``count`` (it drives a schedule)."""
  count: jax.Array


class MomentumState(NamedTuple):
  """State of :func:`momentum`: ``count`` and the velocity ``v`` (like params)."""
  count: jax.Array
  velocity: Any


class NesterovState(NamedTuple):
  """State of :func:`nesterov`: ``count`` and the velocity ``v`` (like params)."""
  count: jax.Array
  velocity: Any


class AdagradState(NamedTuple):
  """State of :func:`adagrad`: ``count`` and the running ``G = G_0 + sum g^2``."""
  count: jax.Array
  sum_of_squares: Any


class RmspropState(NamedTuple):
  """State of :func:`rmsprop`: ``count`` and the average ``nu`` of ``g^2``."""
  count: jax.Array
  nu: Any


class AdamState(NamedTuple):
  """State of :func:`adam`: ``count``, first moment ``mu``, second moment ``nu``."""
  count: jax.Array
  mu: Any
  nu: Any


class AdamWState(NamedTuple):
  """State of :func:`adamw`: ``count``, first moment ``mu``, second moment ``nu``."""
  count: jax.Array
  mu: Any
  nu: Any


class EmptyState(NamedTuple):
  """State of the stateless transforms :func:`clip_by_global_norm` and :func:`add_weight_decay`."""


# ---------------------------------------------------------------------------
# Hyperparameter checks, one rule per name, shared by every optimizer and by
# the optax builds in ``get`` so both implementations refuse the same values.

_UNIT = (lambda v: 0 <= v < 1)
_RULES = {
    "learning_rate": (lambda v: v >= 0,
                      "learning_rate >= 0 or a schedule count -> lr"),
    "beta": (_UNIT, "0 <= beta < 1"),
    "b1": (_UNIT, "0 <= b1 < 1"),
    "b2": (_UNIT, "0 <= b2 < 1"),
    "decay": (_UNIT, "0 <= decay < 1"),
    "eps": (lambda v: v > 0, "eps > 0"),
    "initial_accumulator_value": (lambda v: v >= 0,
                                  "initial_accumulator_value >= 0"),
    "weight_decay": (lambda v: v >= 0, "weight_decay >= 0"),
    "max_norm": (lambda v: v > 0, "max_norm > 0"),
    "clip_norm": (lambda v: v > 0, "clip_norm > 0 or None"),
}


def _validate(where: str, **hyperparams) -> None:
  for name, value in hyperparams.items():
    if name == "learning_rate" and callable(value):
      continue
    ok, expected = _RULES[name]
    _check(where, name, value, ok, expected)


# ---------------------------------------------------------------------------
# Shared arithmetic.


def _zeros(params):
  return tree_map(jnp.zeros_like, params)


def _start():
  return jnp.zeros([], jnp.int32)


def _increment(count):
  # Saturate rather than wrap: a wrapped count would restart a schedule and
  # blow up Adam's bias correction 1 / (1 - b^t) at t <= 0.
  top = jnp.iinfo(jnp.int32).max
  return jnp.where(count < top, count + 1, count).astype(jnp.int32)


def _eta(learning_rate, count):
  """``eta_t``: the float itself, or the schedule at the count before this step."""
  return learning_rate(count) if callable(learning_rate) else learning_rate


def _descend(eta, direction):
  """``u = -eta d`` leaf by leaf, with ``eta`` cast to each leaf's dtype."""
  return tree_map(lambda d: jnp.asarray(-eta, dtype=d.dtype) * d, direction)


def _need_params(where, params):
  if params is None:
    raise ConfigError(
        f"{where} needs the params; expected update(grads, state, params)")


def chain(*transforms) -> GradientTransformation:
  """The transforms applied in order: ``optax.chain``'s composition and
  state layout (a tuple of the transforms' states, in order), so a
  checkpoint's optimizer state is the same whichever built the chain.

    init(params)            = (t_1.init(params), ..., t_n.init(params))
    update(g, (s_1..s_n), w): g := t_k.update(g, s_k, w) for k = 1..n

  Keyword arguments to ``update`` (optax's "extra args") are not passed
  on: no funcnet transform takes any (use ``optax.chain`` for those that
  do)."""
  inits = tuple(t.init for t in transforms)
  updates_fns = tuple(t.update for t in transforms)

  def init(params):
    return tuple(fn(params) for fn in inits)

  def update(updates, state, params=None, **extra_args):
    del extra_args
    if len(state) != len(updates_fns):
      raise ValueError(f"a chain of {len(updates_fns)} transforms got "
                       f"{len(state)} states; expected its own init's state")
    new_state = []
    for s, fn in zip(state, updates_fns):
      updates, s = fn(updates, s, params)
      new_state.append(s)
    return updates, tuple(new_state)

  return GradientTransformation(init, update)


def apply_updates(params, updates):
  """``w := w + u`` leaf by leaf, each result in its param's dtype (a
  float32 update does not promote a bfloat16 weight): optax's
  ``apply_updates``, op for op, so the programs are the same."""
  return jax.tree_util.tree_map(
      lambda p, u: (None if p is None
                    else jnp.asarray(p + u).astype(jnp.asarray(p).dtype)),
      params, updates, is_leaf=lambda x: x is None)


def global_norm(tree):
  """``||w|| = sqrt(sum over leaves of sum w^2)``, in optax's order of
  operations (``optax.tree.norm``: each leaf's sum, added left to right
  from 0), so the recorded norms are the ones optax gives."""
  sums = [jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree)]
  return jnp.sqrt(functools.reduce(operator.add, sums, 0))


# ---------------------------------------------------------------------------
# Optimizers.


def sgd(learning_rate: ScalarOrSchedule) -> GradientTransformation:
  """Plain gradient descent, ``u = -eta g``.

  Args:
    learning_rate: ``eta >= 0``, or a schedule ``count -> eta``.

  Example:
    >>> opt = sgd(0.1)
    >>> state = opt.init({"w": jnp.ones(3)})
    >>> updates, state = opt.update({"w": jnp.ones(3)}, state)   # -0.1 each
  """
  _validate("sgd", learning_rate=learning_rate)

  def init(params):
    del params
    return SgdState(count=_start())

  def update(grads, state, params=None):
    del params
    eta = _eta(learning_rate, state.count)
    return _descend(eta, grads), SgdState(count=_increment(state.count))

  return GradientTransformation(init, update)


def momentum(learning_rate: ScalarOrSchedule, beta=0.9) -> GradientTransformation:
  """Heavy-ball momentum: ``v := beta v + g``, ``u = -eta v``.

  The velocity is a sum, not an average, so in a steady gradient field the
  step approaches ``eta g / (1 - beta)``.

  Args:
    learning_rate: ``eta >= 0``, or a schedule ``count -> eta``.
    beta: the momentum coefficient, ``0 <= beta < 1``.
  """
  _validate("momentum", learning_rate=learning_rate, beta=beta)

  def init(params):
    return MomentumState(count=_start(), velocity=_zeros(params))

  def update(grads, state, params=None):
    del params
    v = tree_map(lambda v, g: beta * v + g, state.velocity, grads)
    eta = _eta(learning_rate, state.count)
    return _descend(eta, v), MomentumState(_increment(state.count), v)

  return GradientTransformation(init, update)


def nesterov(learning_rate: ScalarOrSchedule, beta=0.9) -> GradientTransformation:
  """Nesterov momentum: ``v := beta v + g``, ``u = -eta (g + beta v)``.

  This is the look-ahead step rewritten so that the gradient is taken at the
  current params (Sutskever et al. 2013), as in optax and PyTorch.

  Args:
    learning_rate: ``eta >= 0``, or a schedule ``count -> eta``.
    beta: the momentum coefficient, ``0 <= beta < 1``.
  """
  _validate("nesterov", learning_rate=learning_rate, beta=beta)

  def init(params):
    return NesterovState(count=_start(), velocity=_zeros(params))

  def update(grads, state, params=None):
    del params
    v = tree_map(lambda v, g: beta * v + g, state.velocity, grads)
    direction = tree_map(lambda v, g: g + beta * v, v, grads)
    eta = _eta(learning_rate, state.count)
    return _descend(eta, direction), NesterovState(_increment(state.count), v)

  return GradientTransformation(init, update)


def adagrad(learning_rate: ScalarOrSchedule, initial_accumulator_value=0.1,
            eps=1e-7) -> GradientTransformation:
  """Adagrad: ``G := G + g^2``, ``u = -eta g / sqrt(G + eps)``.

  Each coordinate's step shrinks with the total squared gradient it has
  seen, so rarely-updated coordinates keep large steps.

  Args:
    learning_rate: ``eta >= 0``, or a schedule ``count -> eta``.
    initial_accumulator_value: ``G_0 >= 0``, the starting sum (0.1 as optax).
    eps: ``> 0``, added inside the square root.
  """
  _validate("adagrad", learning_rate=learning_rate,
            initial_accumulator_value=initial_accumulator_value, eps=eps)

  def init(params):
    return AdagradState(
        count=_start(),
        sum_of_squares=tree_map(
            lambda p: jnp.full_like(p, initial_accumulator_value), params))

  def update(grads, state, params=None):
    del params
    G = tree_map(lambda G, g: G + g * g, state.sum_of_squares, grads)
    direction = tree_map(lambda g, G: g / jnp.sqrt(G + eps), grads, G)
    eta = _eta(learning_rate, state.count)
    return _descend(eta, direction), AdagradState(_increment(state.count), G)

  return GradientTransformation(init, update)


def rmsprop(learning_rate: ScalarOrSchedule, decay=0.9,
            eps=1e-8) -> GradientTransformation:
  """RMSprop: ``nu := decay nu + (1 - decay) g^2``, ``u = -eta g / sqrt(nu + eps)``.

  Adagrad with a leaky average in place of the sum, so steps do not shrink
  forever. No bias correction: ``nu`` starts at 0, so early steps are large.

  Args:
    learning_rate: ``eta >= 0``, or a schedule ``count -> eta``.
    decay: ``0 <= decay < 1``, the average's forgetting factor.
    eps: ``> 0``, added inside the square root (optax's convention).
  """
  _validate("rmsprop", learning_rate=learning_rate, decay=decay, eps=eps)

  def init(params):
    return RmspropState(count=_start(), nu=_zeros(params))

  def update(grads, state, params=None):
    del params
    nu = tree_map(lambda nu, g: decay * nu + (1 - decay) * g * g, state.nu,
                  grads)
    direction = tree_map(lambda g, nu: g / jnp.sqrt(nu + eps), grads, nu)
    eta = _eta(learning_rate, state.count)
    return _descend(eta, direction), RmspropState(_increment(state.count), nu)

  return GradientTransformation(init, update)


def _adam_direction(grads, state, b1, b2, eps):
  """Adam's moment updates and its direction ``mu_hat / (sqrt(nu_hat) + eps)``."""
  mu = tree_map(lambda mu, g: b1 * mu + (1 - b1) * g, state.mu, grads)
  nu = tree_map(lambda nu, g: b2 * nu + (1 - b2) * g * g, state.nu, grads)
  t = _increment(state.count)
  # 1 - b^t in the default float dtype, cast only after, so that a bfloat16
  # moment does not see b2^t round to 1 and divide by zero.
  c1 = 1 - b1 ** t
  c2 = 1 - b2 ** t
  direction = tree_map(
      lambda mu, nu: (mu / c1.astype(mu.dtype))
      / (jnp.sqrt(nu / c2.astype(nu.dtype)) + eps), mu, nu)
  return direction, t, mu, nu


def adam(learning_rate: ScalarOrSchedule, b1=0.9, b2=0.999,
         eps=1e-8) -> GradientTransformation:
  """Adam: bias-corrected averages of ``g`` and ``g^2``.

  ``mu := b1 mu + (1 - b1) g``, ``nu := b2 nu + (1 - b2) g^2``,
  ``u = -eta [mu / (1 - b1^t)] / (sqrt(nu / (1 - b2^t)) + eps)`` on step
  ``t = count + 1``.

  Args:
    learning_rate: ``eta >= 0``, or a schedule ``count -> eta``.
    b1: ``0 <= b1 < 1``, decay of the first moment.
    b2: ``0 <= b2 < 1``, decay of the second moment.
    eps: ``> 0``, added outside the square root.
  """
  _validate("adam", learning_rate=learning_rate, b1=b1, b2=b2, eps=eps)

  def init(params):
    return AdamState(count=_start(), mu=_zeros(params), nu=_zeros(params))

  def update(grads, state, params=None):
    del params
    direction, t, mu, nu = _adam_direction(grads, state, b1, b2, eps)
    eta = _eta(learning_rate, state.count)
    return _descend(eta, direction), AdamState(t, mu, nu)

  return GradientTransformation(init, update)


def adamw(learning_rate: ScalarOrSchedule, b1=0.9, b2=0.999, eps=1e-8,
          weight_decay=1e-4) -> GradientTransformation:
  """AdamW: Adam with decoupled weight decay, ``u = -eta (adam direction + lambda w)``.

  The decay ``lambda w`` bypasses Adam's ``1 / sqrt(nu_hat)`` rescaling but
  is multiplied by ``eta_t`` (optax's convention). ``update`` needs params.

  Args:
    learning_rate: ``eta >= 0``, or a schedule ``count -> eta``.
    b1: ``0 <= b1 < 1``, decay of the first moment.
    b2: ``0 <= b2 < 1``, decay of the second moment.
    eps: ``> 0``, added outside the square root.
    weight_decay: ``lambda >= 0`` (1e-4 as optax).
  """
  _validate("adamw", learning_rate=learning_rate, b1=b1, b2=b2, eps=eps,
            weight_decay=weight_decay)

  def init(params):
    return AdamWState(count=_start(), mu=_zeros(params), nu=_zeros(params))

  def update(grads, state, params=None):
    _need_params("adamw", params)
    direction, t, mu, nu = _adam_direction(grads, state, b1, b2, eps)
    direction = tree_map(lambda d, w: d + weight_decay * w, direction, params)
    eta = _eta(learning_rate, state.count)
    return _descend(eta, direction), AdamWState(t, mu, nu)

  return GradientTransformation(init, update)


# ---------------------------------------------------------------------------
# Gradient pre-processing.


def clip_by_global_norm(max_norm) -> GradientTransformation:
  """Rescales ``g`` to global norm at most ``max_norm``: ``(g / ||g||) max_norm`` when larger.

  ``||g||`` is the 2-norm of all leaves together, so the direction of the
  whole update is kept. Gradients already within the norm pass unchanged.

  Args:
    max_norm: ``> 0``.
  """
  _validate("clip_by_global_norm", max_norm=max_norm)

  def init(params):
    del params
    return EmptyState()

  def update(grads, state, params=None):
    del params
    norm = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree_util.tree_leaves(grads)))
    # (g / ||g||) max_norm in optax's order of operations; the max() only
    # keeps the branch jnp.where discards finite (and its gradient) when
    # ||g|| = 0.
    inside = norm < max_norm
    denom = jnp.maximum(norm, max_norm)
    return tree_map(
        lambda g: jnp.where(inside, g, (g / denom.astype(g.dtype)) * max_norm),
        grads), state

  return GradientTransformation(init, update)


def add_weight_decay(weight_decay) -> GradientTransformation:
  """L2 regularisation as a gradient term, ``g := g + lambda w``; ``update`` needs params.

  Chained before an optimizer this is the gradient of
  ``C + (lambda / 2) ||w||^2``; unlike :func:`adamw`'s decay it is rescaled
  by adaptive optimizers.

  Args:
    weight_decay: ``lambda >= 0``.
  """
  _validate("add_weight_decay", weight_decay=weight_decay)

  def init(params):
    del params
    return EmptyState()

  def update(grads, state, params=None):
    _need_params("add_weight_decay", params)
    return tree_map(lambda g, w: g + weight_decay * w, grads, params), state

  return GradientTransformation(init, update)


# ---------------------------------------------------------------------------
# By name: funcnet's rules, or optax's with the same hyperparameters.

OPTIMIZERS = {
    "sgd": sgd,
    "momentum": momentum,
    "nesterov": nesterov,
    "adagrad": adagrad,
    "rmsprop": rmsprop,
    "adam": adam,
    "adamw": adamw,
}

def _optax():
  """optax, imported by the first caller (see GradientTransformation)."""
  import optax
  return optax


# optax's counterpart of each rule; called with every hyperparameter spelled
# out (funcnet's defaults filled in), so no optax default is ever relied on.
_OPTAX = {
    "sgd": lambda learning_rate: _optax().sgd(learning_rate),
    "momentum": lambda learning_rate, beta: _optax().sgd(learning_rate,
                                                         momentum=beta),
    "nesterov": lambda learning_rate, beta: _optax().sgd(
        learning_rate, momentum=beta, nesterov=True),
    "adagrad": lambda learning_rate, initial_accumulator_value, eps:
        _optax().adagrad(learning_rate,
                         initial_accumulator_value=initial_accumulator_value,
                         eps=eps),
    "rmsprop": lambda learning_rate, decay, eps: _optax().rmsprop(
        learning_rate, decay=decay, eps=eps),
    "adam": lambda learning_rate, b1, b2, eps: _optax().adam(
        learning_rate, b1=b1, b2=b2, eps=eps),
    "adamw": lambda learning_rate, b1, b2, eps, weight_decay: _optax().adamw(
        learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay),
}

IMPLS = ("funcnet", "optax")


def _check_impl(impl: str) -> None:
  if impl not in IMPLS:
    raise unknown("optimizer implementation", impl, IMPLS)


def get(name: str, impl: str = "funcnet", **hyperparams) -> GradientTransformation:
  """The optimizer ``name`` built with ``hyperparams``, from funcnet or optax.

  Args:
    name: a key of :data:`OPTIMIZERS`.
    impl: ``"funcnet"`` for the rules in this module, ``"optax"`` for the
      matching optax alias with the same hyperparameters (and funcnet's
      defaults for those not given).
    **hyperparams: the keyword arguments of ``OPTIMIZERS[name]``;
      ``learning_rate`` is required.

  Raises:
    UnknownNameError: an unknown ``name`` or ``impl``.
    ConfigError: a missing, unexpected or out-of-range hyperparameter.
  """
  try:
    fn = OPTIMIZERS[name]
  except (KeyError, TypeError):
    raise unknown("optimizer", name, OPTIMIZERS) from None
  _check_impl(impl)
  _bind("optimizer", name, fn, hyperparams)
  if impl == "funcnet":
    return fn(**hyperparams)
  args = inspect.signature(fn).bind(**hyperparams)
  args.apply_defaults()
  _validate(name, **args.arguments)
  return _OPTAX[name](**args.arguments)


def build(name: str, learning_rate: ScalarOrSchedule, *, impl: str = "funcnet",
          clip_norm: Optional[float] = None,
          weight_decay: Optional[float] = None,
          **hyperparams) -> GradientTransformation:
  """``chain(clip, L2 decay, optimizer)``, each stage only when asked for.

  The chain is always a chain (its state a tuple whose last entry is the
  optimizer's; :func:`chain`, or ``optax.chain`` for ``impl="optax"``), in
  this order:

  1. ``clip_by_global_norm(clip_norm)`` when ``clip_norm`` is given;
  2. ``add_weight_decay(weight_decay)`` when ``weight_decay > 0``, except
     for ``"adamw"``, whose ``weight_decay`` is its own decoupled decay
     (passed to :func:`adamw`; ``None`` keeps its default ``1e-4``);
  3. ``get(name, impl, learning_rate=learning_rate, **hyperparams)``.

  With ``impl="optax"`` the stages are ``optax.clip_by_global_norm``,
  ``optax.add_decayed_weights`` and the optax optimizer.

  Raises:
    UnknownNameError: an unknown ``name`` or ``impl``.
    ConfigError: a missing, unexpected or out-of-range hyperparameter
      (``clip_norm <= 0``, ``weight_decay < 0``, ...).
  """
  _check_impl(impl)
  if clip_norm is not None:
    _validate("build", clip_norm=clip_norm)
  if weight_decay is not None:
    _validate("build", weight_decay=weight_decay)
  if name == "adamw" and weight_decay is not None:
    hyperparams["weight_decay"] = weight_decay
    weight_decay = None
  stages = []
  if clip_norm is not None:
    stages.append(clip_by_global_norm(clip_norm) if impl == "funcnet"
                  else _optax().clip_by_global_norm(clip_norm))
  if weight_decay is not None and not is_off(weight_decay):
    stages.append(add_weight_decay(weight_decay) if impl == "funcnet"
                  else _optax().add_decayed_weights(weight_decay))
  stages.append(get(name, impl, learning_rate=learning_rate, **hyperparams))
  return chain(*stages) if impl == "funcnet" else _optax().chain(*stages)


def names() -> list[str]:
  return sorted(OPTIMIZERS)


__all__ = [
    "AdagradState", "AdamState", "AdamWState", "EmptyState",
    "GradientTransformation", "IMPLS", "MomentumState", "NesterovState",
    "OPTIMIZERS", "RmspropState", "SgdState", "adagrad", "adam", "adamw",
    "add_weight_decay", "apply_updates", "build", "chain",
    "clip_by_global_norm", "get", "global_norm", "momentum", "names",
    "nesterov", "rmsprop", "sgd",
]
