"""Attribution maps from the input gradient, one call shape for every method
(Captum's functional form): ``method(model, params, x, target=None,
source="manual", ...) -> (m, *in_shape)``.

With ``F_i(x) = z_i[t_i]`` the logit of class ``t_i`` of example ``i``
(``target``; default the predicted class; ``of="output"``: the softmax
probability instead) and ``g(x) = dF/dx`` from :func:`funcnet.input_grad`
(``source="manual"``: the kind's hand-written backward, ``"autodiff"``:
``jax.grad``):

  saliency            g(x)                                   Simonyan et al. 2014
  grad_times_input    x * g(x)                               Shrikumar et al. 2016
  smoothgrad          (1/n) sum_k g(x + eps_k),              Smilkov et al. 2017
                      eps_k ~ N(0, (sigma (max x_i - min x_i))^2)
  integrated_gradients  (x - b) * int_0^1 g(b + a (x - b)) da  Sundararajan et al. 2017

all in the model's input units (standardised inputs where the run
standardised them). Each is pure and jittable (close over ``model``:
``jax.jit(lambda p, x: saliency(model, p, x))``); the ``n`` noise samples
and the ``m`` integration points of every example are one batch, never a
Python loop.

Integrated Gradients comes with its own sanity number, as Captum's
``return_convergence_delta``: by completeness ``sum_j IG_j = F(x) - F(b)``
exactly, so the quadrature's error shows as the relative gap

  gap_i = |sum_j IG_ij - (F_i(x) - F_i(b))| / |F_i(x) - F_i(b)|

and :func:`ig_until_complete` doubles ``m`` until every example's gap is at
most 1% (the paper's rule: "raise m until it holds").
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import inputgrad
from funcnet.errors import ConfigError

RULES = ("gausslegendre", "trapezoid")
STEPS = 50           # Captum's default n_steps
TOLERANCE = 0.01     # the completeness gap IG must reach, of |F(x) - F(b)|


def _targets(model, params, x, target):
  """The class each example is explained for: ``target`` or the predicted."""
  if target is None:
    return jnp.argmax(model.logits(params, x), axis=-1)
  return jnp.broadcast_to(jnp.asarray(target, jnp.int32), (jnp.shape(x)[0],))


def score(model, params, x, target, of: str = "logit"):
  """``F_i(x) = z_i[t_i]`` (``of="logit"``) or ``f(z_i)[t_i]``
  (``of="output"``): ``(m,)``, the number each method explains."""
  out = (model.logits(params, x) if of == "logit"
         else model.apply(params, x))
  return jnp.take_along_axis(out, jnp.asarray(target)[:, None], axis=-1)[:, 0]


def _grad(model, params, x, target, source, of):
  return inputgrad.input_grad(model, params, x, of=of, target=target,
                              source=source)


def _grads_at(model, params, points, target, source, of):
  """``dF/dx`` at ``points (K, m, *in_shape)``, the ``m`` examples' targets
  at every one of the ``K`` points: one batch of ``K m`` examples (they do
  not interact in evaluation), one forward and one backward, no Python
  loop. (The same as ``jax.vmap`` over ``K``, which in float32 gave the
  Transformer's hand-written gradient of a logit wrong at ``K = 50``
  while right at ``K = 8``: jax 0.10 on CPU, params traced; a batch is
  what the backward is tested on.)"""
  k, m = points.shape[:2]
  flat = jnp.reshape(points, (k * m,) + points.shape[2:])
  g = _grad(model, params, flat, jnp.tile(target, k), source, of)
  return jnp.reshape(g, points.shape)


def saliency(model, params, x, target=None, source: str = "manual", *,
             of: str = "logit", absolute: bool = False):
  """The vanilla gradient ``dF_i/dx_i``, ``(m, *in_shape)``.

  Args:
    model, params: the model and its parameters.
    x: ``(m, *in_shape)`` real-valued inputs (the model's units).
    target: ``(m,)`` (or one) class index; None: the predicted class.
    source: ``"manual"`` (hand-written backward) or ``"autodiff"``.
    of: ``"logit"`` or ``"output"`` (the probability).
    absolute: ``|dF/dx|`` (Captum's ``Saliency`` default); the signed
      gradient otherwise.
  """
  g = _grad(model, params, x, _targets(model, params, x, target), source, of)
  return jnp.abs(g) if absolute else g


def grad_times_input(model, params, x, target=None, source: str = "manual", *,
                     of: str = "logit"):
  """``x * dF/dx``, ``(m, *in_shape)``: the first-order Taylor term of
  ``F(x) - F(0)`` that each input contributes."""
  return x * _grad(model, params, x, _targets(model, params, x, target),
                   source, of)


def smoothgrad(model, params, x, target=None, source: str = "manual", *,
               key, sigma: float = 0.15, n: int = 50, of: str = "logit"):
  """SmoothGrad: the gradient averaged over ``n`` noisy copies of ``x``.

  ``eps_k ~ N(0, s_i^2)`` with ``s_i = sigma (max_j x_ij - min_j x_ij)``,
  the noise a fraction ``sigma`` of each example's own input range (the
  paper finds 10-20% best). The target stays the class of the clean
  ``x``. ``sigma = 0`` is :func:`saliency`. The ``n`` samples are one
  batch: ``(n, m, *in_shape)`` gradients at once.

  Args:
    key: the noise's key (explicit: the same key, the same map).
    sigma: the noise level as a fraction of the input range, ``>= 0``.
    n: noise samples, ``>= 1``.
  """
  if n < 1:
    raise ConfigError(f"smoothgrad n = {n}; expected at least 1 sample")
  target = _targets(model, params, x, target)
  axes = tuple(range(1, jnp.ndim(x)))
  spread = jnp.max(x, axis=axes, keepdims=True) - jnp.min(x, axis=axes,
                                                          keepdims=True)
  noise = jax.random.normal(key, (n,) + jnp.shape(x), jnp.result_type(x))
  grads = _grads_at(model, params, x + sigma * spread * noise, target,
                    source, of)                              # (n, m, ...)
  return jnp.mean(grads, axis=0)


@functools.lru_cache(maxsize=None)
def quadrature(steps: int, rule: str = "gausslegendre"):
  """Points ``a_k`` in [0, 1] and weights ``w_k`` with ``int_0^1 h(a) da ~
  sum_k w_k h(a_k)``, as numpy float64 ``(K,)`` arrays.

  ``"gausslegendre"``: ``steps`` Gauss-Legendre nodes (exact for
  polynomials of degree ``2 steps - 1``; Captum's default);
  ``"trapezoid"``: ``a_k = k / steps``, ``k = 0..steps`` (``steps + 1``
  points), weights ``1/steps`` halved at both ends.
  """
  if not isinstance(steps, (int, np.integer)) or steps < 1:
    raise ConfigError(f"integrated gradients steps = {steps!r}; expected a "
                      "positive integer")
  if rule == "gausslegendre":
    nodes, weights = np.polynomial.legendre.leggauss(int(steps))
    return (nodes + 1) / 2, weights / 2
  if rule == "trapezoid":
    a = np.arange(steps + 1) / steps
    w = np.full(steps + 1, 1.0 / steps)
    w[[0, -1]] /= 2
    return a, w
  raise ConfigError(f"integration rule {rule!r}; expected one of "
                    f"{', '.join(RULES)}")


class IG(NamedTuple):
  """Integrated Gradients with its completeness check.

  Attributes:
    attributions: ``(m, *in_shape)``, ``IG_ij``.
    gap: ``(m,)``, ``|sum_j IG_ij - (F_i(x) - F_i(b))| / |F_i(x) - F_i(b)|``.
    delta: ``(m,)``, ``F_i(x) - F_i(b)``, what the attributions share out.
    steps: the step count used (``(m,)`` per example from
      :func:`ig_until_complete`).
  """
  attributions: jnp.ndarray
  gap: jnp.ndarray
  delta: jnp.ndarray
  steps: object


def integrated_gradients(model, params, x, target=None,
                         source: str = "manual", *, baseline=None,
                         steps: int = STEPS, rule: str = "gausslegendre",
                         of: str = "logit") -> IG:
  """Integrated Gradients along the straight line from ``baseline`` to ``x``.

    IG_ij = (x_ij - b_ij) sum_k w_k dF_i/dx_ij (b + a_k (x - b))

  with the points and weights of :func:`quadrature`: the ``K`` points of
  all ``m`` examples are one batch of ``K m``.

  Args:
    baseline: ``b``, broadcasting against ``x``, in the model's input units;
      None: zeros, which for standardised inputs is the training mean.
    steps: ``m``, the quadrature's step count.
    rule: ``"gausslegendre"`` or ``"trapezoid"``.

  Returns:
    :class:`IG`: the attributions, the completeness gap per example and
    ``F(x) - F(b)``.
  """
  target = _targets(model, params, x, target)
  b = jnp.zeros_like(x) if baseline is None else jnp.broadcast_to(
      jnp.asarray(baseline, jnp.result_type(x)), jnp.shape(x))
  alphas, weights = quadrature(steps, rule)
  dtype = jnp.result_type(x)
  alphas, weights = jnp.asarray(alphas, dtype), jnp.asarray(weights, dtype)
  shape = (-1,) + (1,) * jnp.ndim(x)
  grads = _grads_at(model, params, b + jnp.reshape(alphas, shape) * (x - b),
                    target, source, of)                       # (K, m, ...)
  avg = jnp.tensordot(weights, grads, axes=1)
  attr = (x - b) * avg
  delta = score(model, params, x, target, of) - score(model, params, b,
                                                      target, of)
  total = jnp.sum(jnp.reshape(attr, (attr.shape[0], -1)), axis=1)
  gap = jnp.abs(total - delta) / jnp.maximum(jnp.abs(delta),
                                              jnp.finfo(dtype).tiny)
  return IG(attr, gap, delta, steps)


def ig_until_complete(model, params, x, target=None, source: str = "manual",
                      *, steps: int = STEPS, tol: float = TOLERANCE,
                      max_steps: int = 3200, **options) -> IG:
  """:func:`integrated_gradients` with ``m`` doubled from ``steps`` until
  each example's gap is at most ``tol`` (or ``m`` would pass
  ``max_steps``): the attributions and gap of each example at the first
  ``m`` that reached it, and that ``m`` per example in ``steps``.

  ``options``: ``baseline``, ``rule``, ``of`` of
  :func:`integrated_gradients`. A Python loop over step counts (each
  compiled once), never over examples.
  """
  ig = compiled_ig(model, source, **options)
  target = _targets(model, params, x, target)
  return double_until_complete(ig, params, x, target, steps, tol, max_steps)


def double_until_complete(ig, params, x, target, steps: int = STEPS,
                          tol: float = TOLERANCE, max_steps: int = 3200) -> IG:
  """The loop of :func:`ig_until_complete` for ``ig(params, x, target, m)
  -> IG`` (a :func:`compiled_ig`, shared with other calls)."""
  res = ig(params, x, target, steps)
  attr, gap = np.asarray(res.attributions), np.asarray(res.gap)
  used = np.full(gap.shape, steps)
  m = steps
  while np.any(gap > tol) and 2 * m <= max_steps:
    m *= 2
    more = ig(params, x, target, m)
    redo = gap > tol                      # not yet complete: take the new m
    attr = np.where(redo.reshape((-1,) + (1,) * (attr.ndim - 1)),
                    np.asarray(more.attributions), attr)
    gap = np.where(redo, np.asarray(more.gap), gap)
    used = np.where(redo, m, used)
  return IG(attr, gap, np.asarray(res.delta), used)


def compiled_ig(model, source: str = "manual", **kwargs):
  """``ig(params, x, target, steps) -> IG``: :func:`integrated_gradients`
  with ``model`` and ``kwargs`` closed over, compiled once per step count."""
  @functools.lru_cache(maxsize=None)
  def at(steps):
    return jax.jit(lambda p, x, t: integrated_gradients(
        model, p, x, t, source, steps=steps, **kwargs))
  return lambda p, x, t, steps: at(steps)(p, x, t)


def check_source(source: str) -> str:
  """``source`` if it names a gradient source, else a one-line ConfigError."""
  if source not in inputgrad.SOURCES:
    raise ConfigError(f"gradient source {source!r}; expected one of "
                      f"{', '.join(inputgrad.SOURCES)}")
  return source


__all__ = ["IG", "RULES", "STEPS", "TOLERANCE", "compiled_ig",
           "double_until_complete", "grad_times_input",
           "ig_until_complete", "integrated_gradients", "quadrature",
           "saliency", "score", "smoothgrad", "check_source"]

