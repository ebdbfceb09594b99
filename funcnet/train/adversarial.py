"""Adversarial training: each step's batch mixed with attacks on itself.

With ``k = round(ratio b)`` of a step's ``b`` examples replaced (the first
``k`` rows: batches are shuffled every epoch, so these are a random ``k``),

  x'_i = attack(x_i)   i < k         FGSM or PGD (:mod:`funcnet.attacks`),
                                     from the current params, in the
                                     L-infinity ball of radius eps
  x'_i = x_i           i >= k
  C, g = vg(params, x', y, key)      the step's gradient on the mixed batch

(Goodfellow et al. 2015 mix clean and FGSM examples; Madry et al. 2018
train on PGD alone, ``ratio = 1``.) The attack is made inside the jitted
step, so every step attacks the params it is about to update; by
Danskin's theorem the parameter gradient at the attack's point is what
min-max training takes, so nothing is differentiated through the attack.

The attack's input gradient ``dC/dx`` comes from the run's gradient
source (:func:`funcnet.inputgrad.value_and_input_grad`: the kind's
hand-written backward asked for it, or ``jax.grad``), in evaluation mode
(no dropout: the model as it will be attacked), and in the params' dtype
under mixed precision. PGD's random start draws from ``fold_in(key,
ATTACK_STREAM)``, ``key`` the step's own (``fold_in(k_drop, s)``), so a
resumed run draws the same starts as an uninterrupted one. Under gradient
accumulation each micro-batch mixes its own ``round(ratio b / k)`` rows.

``eps``, ``lo``, ``hi`` and ``step_size`` are in the model's input units
(each a number or an ``in_shape`` array, broadcasting against a batch):
:func:`from_raw` converts them from the data's raw units (a digit's pixel
intensity 0..16), ``eps / std`` per feature for standardised inputs.
They are constants of the compiled step, which compiles once per run.
"""

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import attacks, inputgrad
from funcnet.errors import ConfigError
from funcnet.model import Model

METHODS = ("fgsm", "pgd")

# fold_in(step key, ATTACK_STREAM): PGD's random start, a stream apart from
# the step's dropout (which splits the step key itself).
ATTACK_STREAM = 0x61647600


class Adversarial(NamedTuple):
  """The gradient a step takes in adversarial training (module docstring).

  Attributes:
    method: ``"fgsm"`` or ``"pgd"``.
    eps: the L-infinity radius, in model input units (number or array
      broadcasting to one example, ``in_shape``).
    ratio: the fraction of each batch replaced by its attack, in [0, 1].
    lo, hi: the valid input range, model units (``-inf``/``inf``: none).
    steps: PGD's steps (FGSM: unused).
    step_size: PGD's step, model units; None: ``2.5 eps / steps``.
    source: the gradient source, ``"manual"`` or ``"autodiff"``, of both
      the attack's input gradient and the step's parameter gradient.
  """
  method: str
  eps: Any
  ratio: float = 1.0
  lo: Any = -np.inf
  hi: Any = np.inf
  steps: int = 1
  step_size: Any = None
  source: str = "autodiff"


def check(adv: Adversarial) -> None:
  """One-line :class:`ConfigError` for a method, ratio, steps or source
  out of range, or a negative ``eps`` or step."""
  if adv.method not in METHODS:
    raise ConfigError(f"adversarial method {adv.method!r}; expected one of "
                      f"{', '.join(METHODS)}")
  if not 0.0 <= adv.ratio <= 1.0:
    raise ConfigError(f"adversarial ratio {adv.ratio!r} is out of range; "
                      "expected in [0, 1]")
  if adv.steps < 1:
    raise ConfigError(f"adversarial steps {adv.steps!r}; expected >= 1")
  for name in ("eps", "step_size"):
    value = getattr(adv, name)
    if value is not None and np.any(np.asarray(value) < 0):
      raise ConfigError(f"adversarial {name} < 0; expected >= 0")
  if adv.source not in inputgrad.SOURCES:
    raise ConfigError(f"adversarial source {adv.source!r}; expected one of "
                      f"{', '.join(inputgrad.SOURCES)}")


def from_raw(method: str, eps: float, ratio: float, *, stats=None,
             valid_range=None, steps: int = 1, step_size=None,
             source: str = "autodiff") -> Adversarial:
  """An :class:`Adversarial` from values in the data's raw units.

  Inputs standardised as ``x = (r - mean) / std`` (``stats = (mean, std)``,
  each ``in_shape``) give per feature

    eps_x = eps / std,   lo_x = (lo - mean) / std,   hi_x = (hi - mean) / std

  and ``step_size / std`` (None: ``2.5 eps / steps``, Madry et al.'s rule);
  ``stats`` None keeps them as they are. ``valid_range = (lo, hi)`` raw,
  or None: no clipping.
  """
  step = 2.5 * eps / steps if step_size is None else step_size
  mean, std = (0.0, 1.0) if stats is None else (
      np.asarray(a, np.float64) for a in stats)
  lo, hi = (-np.inf, np.inf) if valid_range is None else valid_range
  adv = Adversarial(method, eps / std, ratio, (lo - mean) / std,
                    (hi - mean) / std, steps, step / std, source)
  check(adv)
  return adv


def n_adversarial(b: int, ratio: float) -> int:
  """``round(ratio b)``: the rows of a ``b``-example batch that are attacked."""
  return int(round(ratio * b))


def examples(adv: Adversarial, input_vg, params, x, y, key=None):
  """``x`` attacked: FGSM or PGD by ``adv`` on every row of ``x``.

  Args:
    adv: an :class:`Adversarial`.
    input_vg: ``(params, x, y, key) -> (C, dC/dx)``
      (:func:`funcnet.inputgrad.value_and_input_grad`).
    params, x, y: the current params and a batch ``(k, *in_shape)``.
    key: the step's key (PGD's random start from ``fold_in(key,
      ATTACK_STREAM)``); None: PGD starts at ``x``.
  """
  def cast(a):
    return jnp.asarray(a, x.dtype)

  def grad_of(u, t):
    return input_vg(params, u, t, None)[1]

  eps, lo, hi = cast(adv.eps), cast(adv.lo), cast(adv.hi)
  if adv.method == "fgsm":
    out = attacks.fgsm(grad_of, x, y, eps, lo, hi)
  else:
    step = 2.5 * eps / adv.steps if adv.step_size is None else cast(adv.step_size)
    start = None if key is None else jax.random.fold_in(key, ATTACK_STREAM)
    out = attacks.pgd(grad_of, x, y, eps, lo, hi, step_size=step,
                      steps=adv.steps, key=start)
  # The step's gradient is taken at the attack's point (Danskin).
  return jax.lax.stop_gradient(out)


def input_gradient(model: Model, loss, source: str):
  """``(params, x, y, key=None) -> (C, dC/dx)`` by ``source``
  (:func:`funcnet.inputgrad.value_and_input_grad`), with a manual source
  whose kind's backward returns no ``dC/dx`` a one-line
  :class:`ConfigError` when traced, not a ``TypeError``."""
  input_vg = inputgrad.value_and_input_grad(model, loss, source)

  def fn(params, x, y, key=None):
    try:
      return input_vg(params, x, y, key)
    except TypeError as exc:
      if "wrt_input" not in str(exc):
        raise
      raise ConfigError(
          f"the hand-written backward of model kind {model.kind!r} returns no "
          "input gradient, which adversarial training with train.grads = "
          "'manual' needs; expected train.grads = 'autodiff'") from None
  return fn


def check_traces(model: Model, loss, source: str, x, y, dtype) -> None:
  """The attack's input gradient traced on shapes only (``x``, ``y``:
  ``jax.ShapeDtypeStruct`` s of a batch; nothing allocated or compiled),
  so that a kind without a hand-written ``dC/dx`` is a one-line error
  before a run writes anything."""
  key = jax.eval_shape(jax.random.key, 0)
  params = jax.eval_shape(lambda k: model.init(k, dtype), key)
  jax.eval_shape(input_gradient(model, loss, source), params, x, y)


def value_and_grad(vg, model: Model, loss, adv: Optional[Adversarial]):
  """``vg(params, x, y, key) -> (C, g)`` taken on the batch with its first
  ``round(ratio b)`` rows attacked (module docstring); the same signature.
  ``adv`` None or a ratio that rounds to no row: ``vg`` itself, so the
  step is the standard one bit for bit."""
  if adv is None:
    return vg
  check(adv)
  input_vg = input_gradient(model, loss, adv.source)

  def fn(params, x, y, key=None):
    k = n_adversarial(x.shape[0], adv.ratio)  # static: x's shape
    if k == 0:
      return vg(params, x, y, key)
    x_adv = examples(adv, input_vg, params, x[:k], y[:k], key)
    return vg(params, jnp.concatenate([x_adv, x[k:]]), y, key)
  return fn


__all__ = ["ATTACK_STREAM", "Adversarial", "METHODS", "check",
           "check_traces", "examples", "from_raw", "input_gradient",
           "n_adversarial", "value_and_grad"]
