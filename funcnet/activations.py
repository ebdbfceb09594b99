"""Activation functions, each beside its hand-written derivative.

Every activation is an :class:`Activation` holding the forward rule ``f(z)``
and the derivative ``f'(z)`` written out by hand (never ``jax.grad``), so the
manual backprop in :mod:`funcnet.backprop` uses only these formulas while
:mod:`funcnet.autodiff` differentiates the forward rule alone. The two agree
only if each derivative below is right.

Shapes: ``z`` and ``a = f(z)`` are arrays of any shape, ``(batch, n)`` in an
MLP; ``df(z, a)`` returns ``f'(z)`` with the same shape. It receives ``a``
too because several derivatives are cheapest in terms of the output
(``sigmoid' = a (1 - a)``, ``tanh' = 1 - a^2``).

``softmax`` is not elementwise: its derivative is a Jacobian, so it has no
``df`` and is only allowed as an output activation, where
:mod:`funcnet.backprop` applies the Jacobian-vector product
``J^T g = a * (g - sum(g * a))`` directly.

An activation of one's own is a pair of functions ``(f, f_prime)``, each
``z -> array`` of ``z``'s shape, accepted wherever a name is (the MLP's
``activation`` and ``output_activation``, ``Model.output_activation``):
:func:`from_functions` registers it under ``f.__name__``, so a model's
``spec`` still holds a name (that process can rebuild it; another process
must define the pair again).

Conventions at kinks (``relu``, ``leaky_relu`` at ``z = 0``) follow the
forward rule's ``jnp.where(z > 0, ...)``, so autodiff and the manual
derivative pick the same one-sided value.
"""

import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from funcnet.errors import lookup, UnknownNameError

LEAKY_SLOPE = 0.01
ELU_ALPHA = 1.0


class Activation(NamedTuple):
  """An activation ``a = f(z)`` and its derivative ``f'(z)``.

  Attributes:
    name: the name used in configs and in :func:`get`.
    f: ``z -> a``.
    df: ``(z, a) -> f'(z)``, elementwise; ``None`` for ``softmax``.
    kink: whether ``f'`` jumps at ``z = 0`` (finite differences must not
      straddle it; see :mod:`funcnet.gradcheck`).
  """
  name: str
  f: Callable
  df: Optional[Callable]
  kink: bool = False


def _sigmoid(z):
  return jax.nn.sigmoid(z)


def _phi(z):
  """Standard normal density."""
  return jnp.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _Phi(z):
  """Standard normal CDF."""
  return 0.5 * (1.0 + jax.lax.erf(z / math.sqrt(2.0)))


def _softmax(z):
  # Subtracting the row max changes nothing mathematically and keeps exp finite.
  e = jnp.exp(z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True)))
  return e / jnp.sum(e, axis=-1, keepdims=True)


ACTIVATIONS = {
    # f(z) = z;                      f'(z) = 1
    "identity": Activation("identity", lambda z: z, lambda z, a: jnp.ones_like(z)),
    # f(z) = 1 / (1 + e^-z);         f'(z) = a (1 - a)
    "sigmoid": Activation("sigmoid", _sigmoid, lambda z, a: a * (1 - a)),
    # f(z) = tanh z;                 f'(z) = 1 - a^2
    "tanh": Activation("tanh", jnp.tanh, lambda z, a: 1 - a * a),
    # f(z) = max(z, 0);              f'(z) = [z > 0]
    "relu": Activation(
        "relu", lambda z: jnp.where(z > 0, z, 0.0),
        lambda z, a: jnp.where(z > 0, 1.0, 0.0).astype(z.dtype), kink=True),
    # f(z) = z if z > 0 else 0.01 z; f'(z) = 1 if z > 0 else 0.01
    "leaky_relu": Activation(
        "leaky_relu", lambda z: jnp.where(z > 0, z, LEAKY_SLOPE * z),
        lambda z, a: jnp.where(z > 0, 1.0, LEAKY_SLOPE).astype(z.dtype),
        kink=True),
    # f(z) = z if z > 0 else e^z - 1; f'(z) = 1 if z > 0 else e^z  (= a + 1)
    "elu": Activation(
        "elu",
        lambda z: jnp.where(z > 0, z, ELU_ALPHA * jnp.expm1(jnp.minimum(z, 0.0))),
        lambda z, a: jnp.where(z > 0, 1.0, a + ELU_ALPHA).astype(z.dtype)),
    # f(z) = log(1 + e^z);           f'(z) = sigmoid(z)
    "softplus": Activation("softplus", lambda z: jnp.logaddexp(z, 0.0),
                           lambda z, a: _sigmoid(z)),
    # f(z) = z Phi(z) (exact erf form); f'(z) = Phi(z) + z phi(z)
    "gelu": Activation("gelu", lambda z: z * _Phi(z),
                       lambda z, a: _Phi(z) + z * _phi(z)),
    # f(z) = z sigmoid(z);           f'(z) = s (1 + z (1 - s)),  s = sigmoid(z)
    "silu": Activation(
        "silu", lambda z: z * _sigmoid(z),
        lambda z, a: _sigmoid(z) * (1 + z * (1 - _sigmoid(z)))),
    # f(z)_i = e^{z_i} / sum_j e^{z_j}; Jacobian handled in funcnet.backprop.
    "softmax": Activation("softmax", _softmax, None),
}

# Activations that make sense only on the output layer.
OUTPUT_ONLY = frozenset({"softmax"})


_BUILT_IN = frozenset(ACTIVATIONS)
_OWN: dict = {}  # (f, f_prime) -> its Activation


def from_functions(f: Callable, f_prime: Callable, name: Optional[str] = None,
                   kink: bool = False) -> Activation:
  """An activation of one's own, ``a = f(z)`` with ``f'(z) = f_prime(z)``,
  registered under ``name`` (default ``f.__name__``) so that :func:`get`
  finds it by name too. The same name given anew (a notebook cell run
  again) replaces it; a built-in name is refused.

  Args:
    f, f_prime: elementwise ``z -> array``, ``z``'s shape.
    kink: whether ``f_prime`` jumps at ``z = 0`` (the gradient check then
      avoids finite differences that straddle it).
  """
  if (f, f_prime) in _OWN:
    return _OWN[f, f_prime]
  name = name or getattr(f, "__name__", "activation")
  if name in _BUILT_IN:
    raise UnknownNameError(f"activation {name!r} is a built-in name; expected "
                           "another name for your own (name=...)")
  act = Activation(name, f, lambda z, a: f_prime(z), kink)
  _OWN[f, f_prime] = ACTIVATIONS[name] = act
  return act


def get(name) -> Activation:
  """The activation called ``name``, or one of one's own given as ``(f,
  f_prime)`` (:func:`from_functions`); an ``UnknownNameError`` names the
  known ones."""
  if isinstance(name, Activation):
    return name
  if isinstance(name, (tuple, list)) and len(name) == 2 \
      and all(callable(g) for g in name):
    return from_functions(*name)
  return lookup("activation", name, ACTIVATIONS)


def names() -> list[str]:
  return sorted(ACTIVATIONS)


__all__ = ["Activation", "ACTIVATIONS", "OUTPUT_ONLY", "from_functions", "get", "names",
           "UnknownNameError"]
