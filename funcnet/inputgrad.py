"""Gradients with respect to the input: ``dF_i/dx_i`` for every example.

Backpropagation does not stop at the first layer's weights: one more step
of the delta equations gives the input's gradient, ``dC/dx = delta_1 @
W_1.T`` for a dense first layer, the full correlation of the error with the
kernel for a convolution, and for token inputs the gradient with respect
to the looked-up embedding vectors (a table row's gradient is the sum of
those over the positions that looked it up). Explanations (saliency,
Integrated Gradients) and attacks (FGSM, PGD) are built on it.

The score ``F_i`` of example ``i`` is one of

  of="loss"     C_i(z_i, y_i), the example's loss (its positions' mean
                for a per-position model): what an attack increases;
  of="logit"    z_i[t_i], the logit of class t_i (default: the predicted
                class), the usual target of an explanation;
  of="output"   a_i[t_i] = f(z_i)[t_i], the output after the output
                activation (a probability for softmax).

Examples do not interact in evaluation mode (``key=None``), so the gradient
of ``sum_i F_i`` with respect to ``x`` holds ``dF_i/dx_i`` in row ``i``.

Two sources, as for the parameters: ``"manual"`` runs the kind's
hand-written backward (``Model.backward``) asked for its input gradient
(``fn(params, x, y, key, wrt_input=True) -> (C, grads, dC/dx)``; no
autodiff in it), ``"autodiff"`` differentiates ``Model.logits`` with
``jax.grad``. :mod:`funcnet.gradcheck` sets both beside finite differences.
"""

import jax
import jax.numpy as jnp

from funcnet import activations, autodiff, backprop, losses
from funcnet.errors import ConfigError
from funcnet.model import Model

SCORES = ("loss", "logit", "output")
SOURCES = ("manual", "autodiff")


def _check(of: str, source: str) -> None:
  if of not in SCORES:
    raise ConfigError(f"input gradient of {of!r}; expected one of "
                      f"{', '.join(SCORES)}")
  if source not in SOURCES:
    raise ConfigError(f"input gradient source {source!r}; expected one of "
                      f"{', '.join(SOURCES)}")


def embedded(model: Model, params, x):
  """``(e, logits_of)``: what the input gradient is taken with respect to.

  ``e`` is ``x`` itself for real-valued inputs; for token or id inputs it
  is the looked-up embedding vectors (``Model.embed``), and ``logits_of(e,
  key=None)`` the rest of the model, so that ``logits_of(e) =
  model.logits(params, x)``.

  Raises:
    ConfigError: integer inputs of a kind that does not expose ``embed``.
  """
  if jnp.issubdtype(jnp.asarray(x).dtype, jnp.integer):
    if getattr(model, "embed", None) is None:
      raise ConfigError(
          f"model kind {model.kind!r} takes integer inputs (ids) and exposes "
          "no embedding (Model.embed); expected real-valued inputs for an "
          "input gradient")
    return model.embed(params, x)
  return x, lambda e, key=None: model.logits(params, e, key)


def _score_loss(of: str, output_activation, target):
  """A loss of one's own whose value is ``sum_i F_i`` and whose
  hand-written derivative is ``dF/dz`` (no 1/m: each row is its example's)."""
  act = activations.get(output_activation)

  def value(z, y):
    del y
    zt = jnp.take_along_axis(z, target[:, None], axis=-1)[:, 0]
    if of == "logit":
      return jnp.sum(zt)
    a = act.f(z)
    return jnp.sum(jnp.take_along_axis(a, target[:, None], axis=-1))

  def grad(z, y):
    del y
    onehot = jax.nn.one_hot(target, z.shape[-1], dtype=z.dtype)
    if of == "logit":
      return onehot
    a = act.f(z)
    if act.df is None:                     # softmax: J^T e_t = a (e_t - a_t)
      return a * (onehot - jnp.sum(onehot * a, axis=-1, keepdims=True))
    return onehot * act.df(z, a)

  return losses.from_function(value, grad, name=f"{of} score")


def input_grad(model: Model, params, x, y=None, *, of: str = "loss",
               loss="cross_entropy", target=None, source: str = "manual",
               key=None):
  """``dF_i/dx_i`` for every example ``i``, shaped like ``x`` (token inputs:
  like their embedding vectors, ``(m, T, d)``).

  Args:
    model, params: a model and its parameters.
    x: ``(m, *in_shape)`` inputs.
    y: the targets, for ``of="loss"`` (as the data holds them).
    of: ``"loss"``, ``"logit"`` or ``"output"`` (module docstring).
    loss: the loss for ``of="loss"`` (a name or one of one's own).
    target: ``(m,)`` class indices for ``"logit"``/``"output"``; default
      the model's predicted class.
    source: ``"manual"`` (the kind's hand-written backward) or
      ``"autodiff"`` (``jax.grad``).
    key: dropout on (training mode); None: evaluation.

  Raises:
    ConfigError: an unknown ``of`` or ``source``; ``of="loss"`` without
      ``y``; a manual source for a kind whose backward returns no input
      gradient.
  """
  _check(of, source)
  if of == "loss" and y is None:
    raise ConfigError("input gradient of the loss needs the targets y; "
                      "expected input_grad(model, params, x, y)")
  if of != "loss" and target is None:
    target = jnp.argmax(model.logits(params, x), axis=-1)
  score = loss if of == "loss" else _score_loss(
      of, model.output_activation, jnp.asarray(target))
  y_in = y if of == "loss" else jnp.zeros(jnp.shape(x)[0], jnp.int32)
  # of="loss": the batch mean's gradient is dC_i/dx_i / m, so times m
  scale = jnp.shape(x)[0] if of == "loss" else 1
  if source == "manual":
    return _manual(model, score, params, x, y_in, key) * scale

  e, logits_of = embedded(model, params, x)
  c_of = autodiff.loss_fn(model._replace(logits=lambda p, e_, k=None:
                                         logits_of(e_, k)), score)
  return jax.grad(lambda e_: c_of(params, e_, y_in, key))(e) * scale


def _manual(model: Model, score, params, x, y, key):
  fn = backprop.value_and_grad(model, score)
  try:
    out = fn(params, x, y, key, wrt_input=True)
  except TypeError as exc:
    if "wrt_input" not in str(exc):
      raise
    raise ConfigError(
        f"the hand-written backward of model kind {model.kind!r} returns no "
        "input gradient; expected fn(params, x, y, key, wrt_input=True) -> "
        "(C, grads, dC/dx), or source='autodiff'") from None
  return out[2]


def value_and_input_grad(model: Model, loss, source: str = "manual"):
  """``(params, x, y, key=None) -> (C, dC/dx)`` for the batch-mean loss
  (an attack's and adversarial training's gradient; jittable)."""
  _check("loss", source)
  if source == "manual":
    fn = backprop.value_and_grad(model, loss)

    def manual(params, x, y, key=None):
      c, _, dx = fn(params, x, y, key, wrt_input=True)
      return c, dx
    return manual
  c_of = autodiff.loss_fn(model, loss)

  def auto(params, x, y, key=None):
    return jax.value_and_grad(lambda x_: c_of(params, x_, y, key))(x)
  return auto

