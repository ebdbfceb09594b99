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

A per-position model (``z (m, T, n)``: gpt, rnn_lm) scores, for
"logit"/"output", its LAST position by default: ``t_i`` a class index
``(m,)`` is the token predicted after the whole window, ``F_i =
z_i[T-1, t_i]`` (what a reader of a next-token prediction asks about);
``t (m, T)``, one class per position, scores ``F_i = sum_t z_i[t,
t_{i,t}]`` instead.

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
from funcnet.errors import ConfigError, ShapeError
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
  model.logits(params, x)``. A kind that exposes ``embed`` takes ids
  whatever ``x``'s dtype (a recommender accepts whole-number floats), so
  its ``embed`` is used for any ``x``.

  Raises:
    ConfigError: integer inputs of a kind that does not expose ``embed``.
  """
  if getattr(model, "embed", None) is not None:
    return model.embed(params, x)
  if jnp.issubdtype(jnp.asarray(x).dtype, jnp.integer):
    raise ConfigError(
        f"model kind {model.kind!r} takes integer inputs (ids) and exposes "
        "no embedding (Model.embed); expected real-valued inputs for an "
        "input gradient")
  return x, lambda e, key=None: model.logits(params, e, key)


def _weights(z, target):
  """``w`` shaped like ``z (m, *T, n)``, ``F_i = sum w_i * z_i`` (a logit;
  ``w_i * a_i`` an output): one-hot rows at each term's ``target``
  (``target (m, *T)``), or only at the last position (``target (m,)`` of
  per-position logits).

  Raises:
    ShapeError: a target of another shape (the shapes are static: this is
      raised while tracing, before anything runs).
  """
  target = jnp.asarray(target)
  onehot = jax.nn.one_hot(target, z.shape[-1], dtype=z.dtype)
  if target.shape == z.shape[:-1]:
    return onehot
  if target.shape == z.shape[:1] and z.ndim > 2:
    w = jnp.zeros_like(z).reshape(z.shape[0], -1, z.shape[-1])
    return w.at[:, -1].set(onehot).reshape(z.shape)
  raise ShapeError(
      f"target has shape {tuple(target.shape)}; expected {z.shape[:1]} class "
      f"indices or {z.shape[:-1]}, one per position, for logits {z.shape}")


def _last_position(z):
  """``z (m, *T, n) -> (m, n)``: the last position's logits (``z`` itself
  for one output row per example)."""
  return z.reshape(z.shape[0], -1, z.shape[-1])[:, -1]


def _score_loss(of: str, output_activation, target):
  """A loss of one's own whose value is ``sum_i F_i`` and whose
  hand-written derivative is ``dF/dz`` (no 1/m: each row is its example's)."""
  act = activations.get(output_activation)

  def value(z, y):
    del y
    w = _weights(z, target)
    return jnp.sum(w * (z if of == "logit" else act.f(z)))

  def grad(z, y):
    del y
    w = _weights(z, target)
    if of == "logit":
      return w
    a = act.f(z)
    if act.df is None:                     # softmax: J^T w = a (w - sum w a)
      return a * (w - jnp.sum(w * a, axis=-1, keepdims=True))
    return w * act.df(z, a)

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
      the model's predicted class (per-position logits: at the last
      position; ``(m, T)`` scores every position, module docstring).
    source: ``"manual"`` (the kind's hand-written backward) or
      ``"autodiff"`` (``jax.grad``).
    key: dropout on (training mode); None: evaluation.

  Raises:
    ConfigError: an unknown ``of`` or ``source``; ``of="loss"`` without
      ``y``; a manual source for a kind whose backward returns no input
      gradient.
    ShapeError: a ``target`` neither ``(m,)`` nor one per position.
  """
  _check(of, source)
  if of == "loss" and y is None:
    raise ConfigError("input gradient of the loss needs the targets y; "
                      "expected input_grad(model, params, x, y)")
  if of != "loss" and target is None:
    target = jnp.argmax(_last_position(model.logits(params, x)), axis=-1)
  score = loss if of == "loss" else _score_loss(
      of, model.output_activation, jnp.asarray(target))
  y_in = y if of == "loss" else jnp.zeros(jnp.shape(x)[0], jnp.int32)
  # of="loss": the batch mean's gradient is dC_i/dx_i / m, so times m
  scale = jnp.shape(x)[0] if of == "loss" else 1
  if source == "manual":
    return _manual(model, score, params, x, y_in, key) * scale

  return _autodiff(model, score, params, x, y_in, key)[1] * scale


def _autodiff(model: Model, loss, params, x, y, key):
  """``(C, dC/de)`` by ``jax.value_and_grad``, ``e`` as :func:`embedded`
  gives it (``x`` itself for real-valued inputs)."""
  e, logits_of = embedded(model, params, x)
  c_of = autodiff.loss_fn(model._replace(logits=lambda p, e_, k=None:
                                         logits_of(e_, k)), loss)
  return jax.value_and_grad(lambda e_: c_of(params, e_, y, key))(e)


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
  (an attack's and adversarial training's gradient; jittable); token
  inputs: ``dC/de``, as :func:`input_grad`, by either source."""
  _check("loss", source)
  if source == "manual":
    fn = backprop.value_and_grad(model, loss)

    def manual(params, x, y, key=None):
      c, _, dx = fn(params, x, y, key, wrt_input=True)
      return c, dx
    return manual
  losses.check_pair(loss, model.output_activation)   # now, not when traced

  def auto(params, x, y, key=None):
    return _autodiff(model, loss, params, x, y, key)
  return auto

