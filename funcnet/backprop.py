"""Backpropagation written out by hand, equation by equation.

Notation (row vectors, one row per example; Nielsen's book with the indices
transposed for batches):

  a_0 = x                                   (m, n_0)
  z_l = a_{l-1} @ W_l + b_l                 (m, n_l)       l = 1..L
  a_l = f(z_l)                              (m, n_l)
  C   = (1/m) sum_i C_i(a_L[i], y[i])

The error of layer ``l`` is ``delta_l = dC_i/dz_l``, one row per example
(the 1/m of the batch mean is applied in the parameter gradients, as in the
textbook two-layer example ``dW2 = a1.T @ dz2 / m``):

  (BP1) delta_L = dC/da_L * f'(z_L)                     output error
        (= a_L - y for sigmoid+bce, softmax+cross_entropy, identity+mse;
         for a softmax output, f'(z_L) is a Jacobian: J^T g = a (g - sum(g a)))
  (BP2) delta_l = (delta_{l+1} @ W_{l+1}.T) * f'(z_l)   error passed back
  (BP3) dC/db_l = sum_i delta_l[i] / m                  bias gradient
  (BP4) dC/dW_l = a_{l-1}.T @ delta_l / m               weight gradient

Only the derivatives in :mod:`funcnet.activations` and :mod:`funcnet.losses`
are used: no ``jax.grad`` anywhere here. :mod:`funcnet.autodiff` computes the
same gradient with ``jax.grad`` and :mod:`funcnet.gradcheck` compares them.

With dropout (a key and ``dropout > 0``), ``a_l = f(z_l) * r_l`` and BP2
becomes ``delta_l = (delta_{l+1} @ W_{l+1}.T) * r_l * f'(z_l)`` with the same
masks the forward pass drew.
"""

from typing import NamedTuple, Optional

import jax.numpy as jnp

from funcnet import activations, losses
from funcnet.errors import ConfigError
from funcnet.model import Model


class Trace(NamedTuple):
  """The forward pass, kept for the backward one.

  Attributes:
    zs: ``[z_1, ..., z_L]``, ``z_l: (m, n_l)``.
    activations: ``[a_0 = x, a_1, ..., a_L]``, ``a_l: (m, n_l)`` (after
      dropout for hidden layers).
    masks: the dropout masks ``[r_1, ..., r_{L-1}]`` or ``None``.
  """
  zs: list
  activations: list
  masks: Optional[list]


class Backward(NamedTuple):
  """What the backward pass computes, per layer ``l = 1..L``.

  Attributes:
    loss: the batch-mean loss ``C`` (scalar).
    deltas: ``[delta_1, ..., delta_L]``, ``delta_l: (m, n_l)``.
    grads: ``[{"W": dC/dW_l, "b": dC/db_l}, ...]``, the shape of params.
  """
  loss: jnp.ndarray
  deltas: list
  grads: list


def _check_mlp(model: Model) -> None:
  # The trace functions below read an MLP's spec (its sizes and activation);
  # other kinds carry their own backward (Model.backward).
  if model.backward is not mlp_value_and_grad:
    raise ConfigError(
        f"backprop.forward/backward/deltas trace an MLP; this model is a "
        f"{model.kind!r}; expected funcnet.backprop.value_and_grad for it")


def forward(model: Model, params, x, key=None) -> Trace:
  """Runs the MLP forward, keeping every ``z_l`` and ``a_l``: the model's
  own forward (``model.trace``, :mod:`funcnet.models.mlp`), the one its
  logits come from, so the trace and the logits cannot drift apart."""
  _check_mlp(model)
  return model.trace(params, x, key)


def output_delta(model: Model, loss, z_L, a_L, y):
  """(BP1) ``delta_L = dC_i/dz_L``, ``(m, n_L)``, from prepared targets ``y``."""
  loss = losses.get(loss)
  out = model.output_activation
  losses.check_pair(loss, out)
  if loss.batch is not None:  # one's own: its dC/dz, per term (as BP1's)
    return (z_L.size // z_L.shape[-1]) * _own_grad(loss)(z_L, y)
  if out == loss.canonical:
    return a_L - y                                   # the canonical reduction
  g = loss.grad(a_L, y)                              # dC_i/da_L
  if out == "softmax":                               # f'(z_L) is a Jacobian
    return a_L * (g - jnp.sum(g * a_L, axis=-1, keepdims=True))
  return g * activations.get(out).df(z_L, a_L)       # dC/da_L * f'(z_L)


def loss_and_delta(model: Model, loss, z, y):
  """``(C, dC/dz)`` for any model: the loss of the batch and the delta of
  its output layer, where every model's hand-written backward starts.

  ``C = (1/n) sum_t C_t`` over the ``n`` loss terms of ``z (m, *T, n_out)``
  (``n = m`` for ``z (m, n_out)``; ``m * prod(T)`` with positions), so
  ``dC/dz = delta_L / n`` with ``delta_L`` of BP1 (:func:`output_delta`);
  ``y`` raw or prepared targets (:func:`funcnet.losses.prepare_targets`).
  The ``1/n`` is taken here, once, so the layers' backward passes
  (``funcnet.layers``) pass plain ``dC/d(output)`` and sum over the batch.
  """
  n_terms = z.size // z.shape[-1]
  y = losses.prepare_targets(loss, y, z.shape, z.dtype)
  a = activations.get(model.output_activation).f(z)
  c = losses.mean(loss, model.output_activation, z, y)
  return c, output_delta(model, loss, z, a, y) / n_terms


def backward(model: Model, loss, params, trace: Trace, y) -> Backward:
  """BP1 to BP4 on a stored forward trace; ``y`` raw or prepared targets."""
  _check_mlp(model)
  act = activations.get(model.spec["activation"])
  x = trace.activations[0]
  m = x.shape[0]
  zs, acts = trace.zs, trace.activations
  y = losses.prepare_targets(loss, y, zs[-1].shape, x.dtype)
  n_layers = len(params)

  delta = output_delta(model, loss, zs[-1], acts[-1], y)          # BP1
  deltas = [delta]
  for l in range(n_layers - 2, -1, -1):                           # layer l+1 in 1-based terms
    fprime = act.df(zs[l], act.f(zs[l]) if trace.masks is not None else acts[l + 1])
    if trace.masks is not None:
      fprime = fprime * trace.masks[l]
    delta = (delta @ params[l + 1]["W"].T) * fprime               # BP2
    deltas.insert(0, delta)

  grads = [{"W": acts[l].T @ deltas[l] / m,                       # BP4
            "b": jnp.sum(deltas[l], axis=0) / m}                  # BP3
           for l in range(n_layers)]
  value = losses.mean(loss, model.output_activation, zs[-1], y)
  return Backward(value, deltas, grads)


def mlp_value_and_grad(model: Model, loss):
  """BP1-BP4 for an MLP: ``(params, x, y, key=None) -> (C, grads)``;
  with ``wrt_input=True``, ``(C, grads, dC/dx)``, ``dC/dx = delta_1 W_1^T``
  over the batch (``(m, n_0)``, the input's gradient).

  Every MLP's ``Model.backward``; call it through :func:`value_and_grad`.
  """
  losses.get(loss)
  losses.check_pair(loss, model.output_activation)

  def fn(params, x, y, key=None, wrt_input=False):
    result = backward(model, loss, params, forward(model, params, x, key), y)
    if not wrt_input:
      return result.loss, result.grads
    # One more step of BP2, to the input: dC/dx = delta_1 W_1^T / m
    dx = result.deltas[0] @ params[0]["W"].T / x.shape[0]
    return result.loss, result.grads, dx.astype(x.dtype)
  return fn


def value_and_grad(model: Model, loss):
  """The hand-written ``(params, x, y, key=None) -> (C, grads)``.

  Same signature and result as :func:`funcnet.autodiff.value_and_grad`;
  pure and jittable. ``grads`` has the structure of ``params``. Each model
  kind brings its own (``model.backward``); the MLP's is BP1-BP4 above.

  Raises:
    ConfigError: the model's kind has no hand-written backward.
  """
  if model.backward is None:
    raise ConfigError(
        f"the hand-written backprop does not cover model kind {model.kind!r} "
        "yet; expected grads = 'autodiff' (funcnet.autodiff) for it")
  if losses.get(loss).batch is not None:
    _own_grad(losses.get(loss))  # before anything is traced
  return model.backward(model, loss)


def _own_grad(loss: losses.Loss):
  """A loss of one's own's hand-written ``dC/dz``, or a one-line error."""
  if loss.batch_grad is None:
    raise ConfigError(
        f"loss {loss.name!r} has no hand-written derivative, which the manual "
        "gradient needs; expected (fn, grad) with grad(z, y) = dC/dz, or "
        "grads = 'autodiff'")
  return loss.batch_grad


def deltas(model: Model, loss, params, x, y, key=None) -> list:
  """The per-layer errors ``[delta_1, ..., delta_L]`` for inspection."""
  return backward(model, loss, params, forward(model, params, x, key), y).deltas
