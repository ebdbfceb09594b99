"""The contract every funcnet model keeps, and the helpers that check inputs.

A model is a :class:`Model`, a named tuple of pure functions and static facts:

  params = model.init(key)                      # a plain pytree (dicts, lists, arrays)
  z      = model.logits(params, x, key=None)    # (m, *in_shape) -> (m, n_out), pre-activation
  a      = model.apply(params, x, key=None)     # output_activation(z)

``key`` switches on the model's randomness (dropout) for training; ``None``
means evaluation, which is deterministic. Losses are computed from ``z`` and
the output activation (see :mod:`funcnet.losses`), which keeps
``bce``/``cross_entropy`` finite however confident the model is.

The training loop, the gradient check and the parallel runner use only this
contract, so any model that keeps it (MLP, CNN, RNN, Transformer,
recommender) trains unchanged.
"""

from typing import Any, Callable, NamedTuple

import jax.numpy as jnp

from funcnet import activations
from funcnet.errors import ShapeError


class Model(NamedTuple):
  """A model as pure functions.

  Attributes:
    init: ``(key, dtype=jnp.float32) -> params``.
    logits: ``(params, x, key=None) -> z``, ``x: (m, *in_shape)``,
      ``z: (m, n_out)``.
    output_activation: the name of the activation that maps ``z`` to the
      output ``a``.
    in_shape: the shape of one example.
    n_out: the width of the output.
    spec: the hyperparameters that built the model (``spec["kind"]`` names
      the builder), for saving and for the manual backprop of MLPs.
  """
  init: Callable
  logits: Callable
  output_activation: str
  in_shape: tuple
  n_out: int
  spec: dict

  def apply(self, params, x, key=None):
    """``a = f(z)``: the model's output, ``(m, n_out)``."""
    return activations.get(self.output_activation).f(self.logits(params, x, key))

  @property
  def kind(self) -> str:
    return self.spec.get("kind", "model")


def check_input(x, in_shape: tuple, what: str = "model") -> None:
  """Raises a one-line ``ShapeError`` unless ``x`` is ``(m, *in_shape)``."""
  shape = tuple(jnp.shape(x))
  if len(shape) != 1 + len(in_shape) or shape[1:] != tuple(in_shape):
    if len(in_shape) == 1 and len(shape) == 2:
      raise ShapeError(
          f"x has {shape[1]} features per example; this {what} expects "
          f"{in_shape[0]}")
    raise ShapeError(
        f"x has shape {shape}; this {what} expects (batch, "
        f"{', '.join(map(str, in_shape))})")


Params = Any
