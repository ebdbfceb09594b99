"""The input gradient of the sequence kinds' hand-written backward
(transformer, gpt, rnn_lm), against independent references.

``fn(params, x, y, key, wrt_input=True) -> (C, grads, dC/dx)``: for the
Transformer ``dC/dx`` is shaped like its real-valued signals; for the token
models it is ``dC/de``, the gradient with respect to the looked-up token
vectors ``e = E[x] (m, T, d)`` (``Model.embed``). Each is compared with
``jax.grad`` or ``jax.vjp`` of scores written here (a cross-entropy from
``jax.nn.log_softmax``, a logit, a softmax probability), through
``model.logits`` or ``Model.embed``'s ``logits_of``; the Transformer's
also with central finite differences, and :func:`funcnet.inputgrad.
input_grad` by both sources. Per-position ``of="logit"`` scores the last
position (``target (m,)``) or every position (``target (m, T)``).

Float64, tiny shapes, one jit per test: XLA compiling each backward graph
is most of the time (about 0.5 s of CPU each), so the references of one
test share one ``vmap``-ed ``jax.vjp``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import backprop
from funcnet.errors import ShapeError
from funcnet.inputgrad import input_grad, value_and_input_grad
from funcnet.models.gpt import gpt
from funcnet.models.rnn_lm import rnn_lm
from funcnet.models.transformer import transformer
from helpers import rel

pytestmark = pytest.mark.usefixtures("x64")

M = 3


def _params(model, rng, scale=0.5):
  """Params shaped as ``model.init`` makes them, drawn N(0, scale^2) in
  numpy (non-zero biases, scales != 1): no compile for the init."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.float64))
  return jax.tree_util.tree_map(
      lambda s: jnp.asarray(scale * rng.normal(size=s.shape)), shapes)


def _xent(z, y):
  """The mean cross-entropy over every term of ``z (m, *T, n)``, written
  here (integer labels ``y (m, *T)``)."""
  logp = jax.nn.log_softmax(z, axis=-1)
  return -jnp.mean(jnp.take_along_axis(logp, y[..., None], axis=-1))


def _vjps(f, e, cotangents_of):
  """``(z, [J^T c for c in cotangents_of(z)])`` of ``z = f(e)``, one
  backward graph for them all (``jax.vmap`` over the stacked cotangents)."""
  z, pull = jax.vjp(f, e)
  return z, jax.vmap(lambda ct: pull(ct)[0])(jnp.stack(cotangents_of(z)))


# --- the Transformer: real-valued signals ---------------------------------------

def _transformer(in_shape, seed=0, **options):
  model = transformer(in_shape, 4, d_model=4, n_heads=2, n_layers=1, d_ff=5,
                      **options)
  rng = np.random.default_rng(seed)
  params = _params(model, rng)
  x = jnp.asarray(rng.normal(size=(M,) + tuple(in_shape)))
  y = jnp.asarray(rng.integers(0, 4, M), jnp.int32)
  return model, params, x, y


def test_transformer_input_gradient_equals_jax_grad_and_finite_differences():
  """Patch 1, mean pooling, learned positions, no stem (dC/dx is the token
  embedding's ``dtokens``): the manual ``(C, dC/dx)`` against ``jax.grad``
  of :func:`_xent` and against ``(C(x + h e_j) - C(x - h e_j)) / 2h`` at
  every entry of ``x`` (the shifted losses vmapped, in the same jit)."""
  model, params, x, y = _transformer((6,))
  fn = backprop.value_and_grad(model, "cross_entropy")
  h = 1e-5
  basis = np.eye(x.size).reshape((x.size,) + x.shape)
  shifted = jnp.concatenate([x + h * basis, x - h * basis])

  def c_of(x_):
    return _xent(model.logits(params, x_), y)

  @jax.jit
  def run(x, shifted):
    c, _, dx = fn(params, x, y, None, wrt_input=True)
    return c, dx, jax.value_and_grad(c_of)(x), jax.vmap(c_of)(shifted)
  c, dx, (ref_c, ref), cs = run(x, shifted)
  fd = ((cs[:x.size] - cs[x.size:]) / (2 * h)).reshape(x.shape)
  assert dx.shape == x.shape
  assert abs(float(c) - float(ref_c)) <= 1e-12
  assert rel(dx, ref) <= 1e-10
  assert np.max(np.abs(np.asarray(dx) - np.asarray(fd))) <= 1e-6
  assert np.max(np.abs(fd)) > 1e-4       # not a comparison of zeros


def test_transformer_with_stem_patches_and_cls_loss_logit_and_output():
  """Through the cls token, patches of 2, sinusoids and the stem's
  convolution (its ``dx``), ``in_shape (L, F)``: the manual ``input_grad``
  of the loss, of the predicted class's logit and of a chosen class's
  softmax probability, per example, against ``jax.vjp``
  of ``model.logits`` with the cotangents ``m dC/dz``, ``e_pred`` and
  ``d softmax(z)[t] / dz``."""
  model, params, x, y = _transformer((6, 2), patch=2, pool="cls",
                                     pos="sinusoidal", stem_channels=(3,),
                                     stem_kernel=3)
  target = jnp.asarray([1, 0, 3])
  rows = jnp.arange(M)

  @jax.jit
  def run(params, x):
    def cotangents(z):
      pred = jnp.argmax(z, axis=-1)
      return [M * jax.grad(_xent)(z, y), jax.nn.one_hot(pred, 4),
              jax.grad(lambda z_: jnp.sum(jax.nn.softmax(z_)[rows, target]))(z)]
    _, refs = _vjps(lambda x_: model.logits(params, x_), x, cotangents)
    got = [input_grad(model, params, x, y),
           input_grad(model, params, x, of="logit"),
           input_grad(model, params, x, of="output", target=target)]
    return refs, got
  refs, got = run(params, x)
  for g, ref in zip(got, refs):
    assert g.shape == x.shape
    assert rel(g, ref) <= 1e-10


# --- the token models: dC/de, e = E[x] -------------------------------------------

def _tokens(model, vocab, seed=0, t=4):
  rng = np.random.default_rng(seed)
  params = _params(model, rng)
  x = jnp.asarray(rng.integers(0, vocab, (M, t)), jnp.int32)
  y = jnp.asarray(rng.integers(0, vocab, (M, t)), jnp.int32)
  return params, x, y


def test_gpt_input_gradient_is_the_token_vectors_and_equals_jax_grad():
  """With dropout on (a key, which also drops units of ``e + P``): the
  manual ``(C, dC/de)`` against ``jax.grad`` of :func:`_xent` through
  ``logits_of(e, key)``, which draws the same masks (the two ``C`` agree:
  ``logits_of(E[x], key) = logits(x, key)``), and ``input_grad`` by
  autodiff."""
  model = gpt(5, 6, n_layers=1, n_heads=2, d_model=4, d_ff=5, dropout=0.2)
  params, x, y = _tokens(model, 6)
  fn = backprop.value_and_grad(model, "cross_entropy")

  @jax.jit
  def run(params, x, y, key):
    c, _, de = fn(params, x, y, key, wrt_input=True)
    e, logits_of = model.embed(params, x)
    ref = jax.value_and_grad(lambda e_: _xent(logits_of(e_, key), y))(e)
    auto = input_grad(model, params, x, y, source="autodiff", key=key)
    return c, de, ref, auto
  c, de, (ref_c, ref), auto = run(params, x, y, jax.random.key(3))
  assert de.shape == (M, 4, 4)           # (m, T, d_model)
  assert abs(float(c) - float(ref_c)) <= 1e-12
  assert rel(de, ref) <= 1e-10
  assert rel(auto, M * ref) <= 1e-10


def test_rnn_lm_loss_and_per_position_logits():
  """An LSTM language model's manual ``input_grad`` with respect to ``e =
  E[x]`` against ``jax.vjp`` of ``logits_of``: of the loss (cotangent ``m
  dC/dz``), of the logit of the token predicted after the window
  (``target (m,)``, the default: ``z_i[T-1, t_i]``) and of one target per
  position (``target (m, T)``: ``sum_t z_i[t, y_{i,t}]``); and
  ``value_and_input_grad`` by autodiff, also through ``Model.embed``."""
  model = rnn_lm((4,), 5, cell="lstm", n_hidden=3, d_embed=2)
  params, x, y = _tokens(model, 5)

  @jax.jit
  def run(params, x, y):
    e, logits_of = model.embed(params, x)

    def cotangents(z):
      last = jnp.zeros_like(z).at[:, -1].set(
          jax.nn.one_hot(jnp.argmax(z[:, -1], axis=-1), 5))
      return [M * jax.grad(_xent)(z, y), last, jax.nn.one_hot(y, 5)]
    z, refs = _vjps(logits_of, e, cotangents)
    got = [input_grad(model, params, x, y),
           input_grad(model, params, x, of="logit"),
           input_grad(model, params, x, of="logit", target=y)]
    auto = value_and_input_grad(model, "cross_entropy", "autodiff")(
        params, x, y)
    return refs, got, auto, _xent(z, y)
  refs, got, (c, auto), ref_c = run(params, x, y)
  for g, ref in zip(got, refs):
    assert g.shape == (M, 4, 2)          # (m, T, d_embed)
    assert rel(g, ref) <= 1e-10
  assert rel(auto, refs[0] / M) <= 1e-10
  assert abs(float(c) - float(ref_c)) <= 1e-12


def test_a_target_of_another_shape_is_one_line():
  model = rnn_lm((4,), 5, n_hidden=3, d_embed=2)
  params, x, _ = _tokens(model, 5)
  with pytest.raises(ShapeError, match=r"target has shape \(3, 2\); "
                     r"expected \(3,\) class indices or \(3, 4\)") as err:
    jax.jit(lambda p, x: input_grad(model, p, x, of="logit", target=x[:, :2],
                                    source="autodiff"))(params, x)
  assert "\n" not in str(err.value)
