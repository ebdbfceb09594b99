"""Losses, each beside its hand-written derivative with respect to the output.

Every loss is a per-example sum over outputs, averaged over the batch:

  C = (1/m) sum_i C_i,   with, for an output row ``a`` and target row ``y``:

  ``"mse"``            C_i = 0.5 ||a - y||^2              dC_i/da = a - y
  ``"bce"``            C_i = -sum[y log a + (1-y) log(1-a)]   dC_i/da = (a - y) / (a (1 - a))
  ``"cross_entropy"``  C_i = logsumexp(z) - y . z = -sum y log softmax(z)

Shapes: ``a``, ``z`` and the prepared target ``y`` are ``(m, n_out)``.
Targets may also be given as integer class labels ``(m,)`` for
``cross_entropy`` (turned into one-hot rows) or as ``(m,)`` when
``n_out == 1``.

Each loss has a *canonical* output activation (identity for mse, sigmoid for
bce, softmax for cross-entropy). With it, the output error reduces to
``delta_L = a - y`` and the loss is computed stably from the pre-activation
``z`` (``bce = softplus(z) - y z``, ``ce = logsumexp(z) - y . z``) instead of
taking the log of a rounded probability.

``cross_entropy`` is softmax cross-entropy of the output layer's ``z``, so it
is allowed with a ``softmax`` output (the usual case, canonical) or an
``identity`` output, whose ``a = z`` are then the logits and whose
derivative is ``dC_i/da = softmax(a) - y``; ``bce`` needs outputs in (0, 1).
"""

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import activations
from funcnet.errors import ShapeError, lookup


class Loss(NamedTuple):
  """A loss by name with its derivative.

  Attributes:
    name: the config name.
    value: ``(a, y) -> (m,)`` per-example loss from the output ``a`` of a
      non-canonical output activation.
    grad: ``(a, y) -> (m, n)`` per-example ``dC_i/da``, likewise.
    canonical: the output activation for which ``delta_L = a - y``.
    from_logits: ``(z, y) -> (m,)`` the same loss computed stably from the
      output pre-activation, valid only with the canonical activation.
    outputs: the output activations this loss accepts (``None``: any).
  """
  name: str
  value: Callable
  grad: Callable
  canonical: str
  from_logits: Callable
  outputs: Optional[frozenset] = None


def _mse(a, y):
  return 0.5 * jnp.sum((a - y) ** 2, axis=-1)


def _bce(a, y):
  return -jnp.sum(y * jnp.log(a) + (1 - y) * jnp.log1p(-a), axis=-1)


def _bce_from_logits(z, y):
  # -[y log s(z) + (1-y) log(1-s(z))] = softplus(z) - y z. logaddexp(z, 0)
  # never overflows, and its derivative is sigmoid(z) everywhere; the usual
  # max(z, 0) + log1p(e^{-|z|}) form has kinks that cancel in value but not
  # under autodiff, which gets the gradient wrong at exactly z = 0.
  return jnp.sum(jnp.logaddexp(z, 0.0) - y * z, axis=-1)


def _ce_from_logits(z, y):
  return jax.nn.logsumexp(z, axis=-1) - jnp.sum(y * z, axis=-1)


LOSSES = {
    "mse": Loss("mse", _mse, lambda a, y: a - y, "identity",
                lambda z, y: _mse(z, y)),
    "bce": Loss("bce", _bce, lambda a, y: (a - y) / (a * (1 - a)), "sigmoid",
                _bce_from_logits, frozenset({"sigmoid", "softmax"})),
    "cross_entropy": Loss("cross_entropy", _ce_from_logits,
                          lambda a, y: jax.nn.softmax(a, axis=-1) - y, "softmax",
                          _ce_from_logits, frozenset({"softmax", "identity"})),
}


def get(name) -> Loss:
  """The loss called ``name``; an ``UnknownNameError`` names the known ones."""
  if isinstance(name, Loss):
    return name
  return lookup("loss", name, LOSSES)


def names() -> list[str]:
  return sorted(LOSSES)


def check_pair(loss, output_activation: str) -> None:
  """Raises ``ShapeError`` when ``loss`` cannot follow ``output_activation``."""
  loss = get(loss)
  if loss.outputs is not None and output_activation not in loss.outputs:
    raise ShapeError(
        f"loss {loss.name!r} cannot follow output activation "
        f"{output_activation!r}; expected output_activation in "
        f"{sorted(loss.outputs)}")


def _concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def prepare_targets(loss, y, n_out: int, batch: int, dtype):
  """Targets as ``(m, n_out)`` rows of ``dtype``, checked against the output.

  Args:
    loss: a loss name or :class:`Loss`.
    y: ``(m,)`` integer labels (cross-entropy, or any loss when
      ``n_out == 1``) or ``(m, n_out)`` target rows.
    n_out: the model's output width.
    batch: ``m``, the number of inputs.
    dtype: the dtype of the returned rows.

  Raises:
    ShapeError: mismatched batch sizes, wrong target width, or labels out of
      ``[0, n_out)`` (checked when ``y`` is concrete, i.e. outside ``jit``).
  """
  loss = get(loss)
  y = jnp.asarray(y)
  if y.ndim == 0 or y.shape[0] != batch:
    raise ShapeError(
        f"x has {batch} examples but y has "
        f"{y.shape[0] if y.ndim else 'a scalar'}; expected the same batch size")
  if y.ndim == 1 and loss.name == "cross_entropy":
    if not jnp.issubdtype(y.dtype, jnp.integer):
      raise ShapeError(
          f"cross_entropy labels of shape {y.shape} must be integers "
          f"(class indices) or one-hot rows of shape ({batch}, {n_out})")
    if _concrete(y) and y.size:
      yn = np.asarray(y)
      lo, hi = int(yn.min()), int(yn.max())
      if lo < 0 or hi >= n_out:
        raise ShapeError(
            f"labels range over [{lo}, {hi}] but the model has {n_out} "
            f"outputs; expected labels in [0, {n_out - 1}]")
    return jax.nn.one_hot(y, n_out, dtype=dtype)
  if y.ndim == 1 and n_out == 1:
    y = y[:, None]
  if y.ndim != 2 or y.shape[1] != n_out:
    raise ShapeError(
        f"targets have shape {tuple(y.shape)}; expected ({batch}, {n_out}) "
        f"to match the model's {n_out} outputs")
  return y.astype(dtype)


def per_example(loss, output_activation: str, z, y):
  """Per-example loss ``(m,)`` from the output pre-activation ``z (m, n)``.

  Uses the stable from-logits form when ``output_activation`` is the loss's
  canonical one, else the loss of ``a = f(z)``. ``y`` is prepared.
  """
  loss = get(loss)
  if output_activation == loss.canonical:
    return loss.from_logits(z, y)
  return loss.value(activations.get(output_activation).f(z), y)


def mean(loss, output_activation: str, z, y):
  """The batch-mean loss ``C`` (a scalar) from ``z (m, n)`` and prepared ``y``."""
  return jnp.mean(per_example(loss, output_activation, z, y))
