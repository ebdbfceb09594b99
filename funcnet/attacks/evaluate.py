"""Accuracy under attack for a list of eps, stated in the data's own units.

  in_model_units(eps, mean, std, valid_range) -> Budget   eps and the range
                                                           as the model sees them
  make_sweep(model, loss, settings, keep) -> sweep        one jitted program
  sweep(params, x, y, target, budget, key) -> {method: (pred (E, m),
                                              x_adv (E, keep, *in_shape))},
                                              clean pred (m,)

A user states eps in the units of the data as they see it (digits' pixel
intensities, 0-16). A model trained on standardised inputs ``x_s = (x -
mean) / std`` sees a change of ``eps`` raw units in feature ``j`` as
``eps / std_j``, and the raw valid range ``[lo, hi]`` as ``[(lo - mean_j) /
std_j, (hi - mean_j) / std_j]``; so the L-infinity ball of radius eps in
raw units is, in model units, a box whose half-width differs per feature.
A run that did not standardise has ``mean = 0, std = 1``.

The sweep runs every eps of the list and every method inside ONE compiled
program: eps is a traced ``(E, *in_shape)`` array walked by ``lax.map``,
so a new list of the same length compiles nothing new and memory holds one
eps's attack at a time.
"""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import inputgrad
from funcnet.attacks.linf import fgsm, pgd
from funcnet.errors import ConfigError

METHODS = ("fgsm", "pgd")


class Budget(NamedTuple):
  """An attack's budget in the model's input units.

  Attributes:
    eps: ``(E, *in_shape)``, row ``e`` the half-width of the ball of the
      ``e``-th eps, per feature.
    lo, hi: ``in_shape`` arrays, the valid range (``-inf``/``inf``: none).
  """
  eps: np.ndarray
  lo: np.ndarray
  hi: np.ndarray


class Settings(NamedTuple):
  """What to run (static: a change compiles a new program).

  Attributes:
    methods: a tuple of :data:`METHODS`.
    steps: PGD's steps.
    step_size: PGD's step as a multiple of eps; None: ``2.5 / steps``
      (Madry et al. 2018), so the steps can cross the ball and back.
    random_start: PGD starts uniformly in the ball (else at ``x``).
    targeted: lower the loss of ``target`` instead of raising ``y``'s.
    source: the input gradient's, ``"manual"`` or ``"autodiff"``.
  """
  methods: tuple = METHODS
  steps: int = 20
  step_size: Optional[float] = None
  random_start: bool = True
  targeted: bool = False
  source: str = "manual"


def check(eps, settings: Settings) -> None:
  """One-line ``ConfigError`` for a negative eps, an unknown method, fewer
  than one step, a step size <= 0 or an unknown gradient source."""
  bad = [e for e in eps if not np.isfinite(e) or e < 0]
  if bad or not len(eps):
    raise ConfigError(f"attack eps {list(eps)}: expected one or more numbers "
                      ">= 0, in the data's own units")
  for m in settings.methods:
    if m not in METHODS:
      raise ConfigError(f"attack method {m!r}; expected one of "
                        f"{', '.join(METHODS)} (or a comma list)")
  if not settings.methods:
    raise ConfigError(f"no attack method; expected one of {', '.join(METHODS)}")
  if settings.steps < 1:
    raise ConfigError(f"attack steps {settings.steps}; expected >= 1")
  if settings.step_size is not None and not settings.step_size > 0:
    raise ConfigError(f"attack step size {settings.step_size}; expected > 0 "
                      "(a multiple of eps)")
  if settings.source not in inputgrad.SOURCES:
    raise ConfigError(f"input gradient source {settings.source!r}; expected "
                      f"one of {', '.join(inputgrad.SOURCES)}")


def in_model_units(eps, mean, std, valid_range, in_shape,
                   dtype=np.float32) -> Budget:
  """The raw-unit ``eps`` list and valid range in the model's units.

  Args:
    eps: ``(E,)`` radii in the data's own units.
    mean, std: ``in_shape`` arrays the run standardised with, or None (no
      standardisation: raw units are the model's).
    valid_range: ``(lo, hi)`` raw, or None (no clipping).
    in_shape: one example's shape.
    dtype: the model's input dtype.

  Returns:
    A :class:`Budget`: ``eps[e] / std``, ``(lo - mean) / std``, ``(hi -
    mean) / std``, computed in float64 and given in ``dtype``.
  """
  mean = np.zeros(in_shape) if mean is None else np.asarray(mean, np.float64)
  std = np.ones(in_shape) if std is None else np.asarray(std, np.float64)
  e = np.asarray(eps, np.float64).reshape((-1,) + (1,) * len(in_shape)) / std
  lo, hi = (-np.inf, np.inf) if valid_range is None else valid_range
  cast = lambda a: np.broadcast_to(a, in_shape).astype(dtype)
  return Budget(e.astype(dtype), cast((lo - mean) / std),
                cast((hi - mean) / std))


def predicted(z):
  """The predicted class of logits ``z (m, n_out)``, as the task's
  accuracy reads it: the argmax, or ``z > 0`` for one sigmoid unit."""
  if z.shape[-1] == 1:
    return (z[..., 0] > 0).astype(jnp.int32)
  return jnp.argmax(z, -1).astype(jnp.int32)


def make_sweep(model, loss, settings: Settings, keep: int = 8):
  """``sweep(params, x, y, target, budget, key)``, one jitted program, its
  results on the host (numpy).

  Args (of ``sweep``):
    params: the model's params.
    x: ``(m, *in_shape)`` clean inputs in model units; y: ``(m,)`` labels.
    target: ``(m,)`` the classes a targeted attack aims at (ignored
      untargeted).
    budget: a :class:`Budget`.
    key: a PRNG key (PGD's random starts, one per eps).

  Returns (of ``sweep``):
    ``(clean, {method: (pred, x_adv)})``: the clean predictions ``(m,)``;
    per method the predictions under attack ``(E, m)`` and the first
    ``keep`` adversarial inputs ``(E, keep, *in_shape)``, in model units.
  """
  value_and_dx = inputgrad.value_and_input_grad(model, loss, settings.source)
  alpha = (2.5 / settings.steps if settings.step_size is None
           else settings.step_size)

  def sweep(params, x, y, target, budget, key):
    labels = target if settings.targeted else y
    grad_of = lambda u, t: value_and_dx(params, u, t)[1]

    def attack(method, eps, k):
      if method == "fgsm":
        return fgsm(grad_of, x, labels, eps, budget.lo, budget.hi,
                    targeted=settings.targeted)
      return pgd(grad_of, x, labels, eps, budget.lo, budget.hi,
                 step_size=alpha * eps, steps=settings.steps,
                 key=k if settings.random_start else None,
                 targeted=settings.targeted)

    keys = jax.random.split(key, budget.eps.shape[0])
    out = {}
    for method in settings.methods:
      def one(args, method=method):
        x_adv = attack(method, *args)
        return predicted(model.logits(params, x_adv)), x_adv[:keep]
      out[method] = jax.lax.map(one, (budget.eps, keys))
    return predicted(model.logits(params, x)), out

  compiled = jax.jit(sweep)

  def on_host(params, x, y, target, budget, key):
    try:
      return jax.device_get(compiled(params, x, y, target, budget, key))
    except TypeError as exc:  # raised while tracing, before any work
      if "wrt_input" not in str(exc):
        raise
      raise ConfigError(
          f"the hand-written backward of model kind {model.kind!r} returns no "
          "input gradient yet; expected --source autodiff "
          "(source='autodiff')") from None
  on_host.compiled = compiled  # one program for every eps list of a length
  return on_host


def accuracies(pred, y, target=None) -> dict:
  """``{"accuracy": (E,)}`` of predictions ``(E, m)`` against labels ``y``
  and, with ``target``, ``"success"``: the share reaching their target
  among the examples whose label is not the target already."""
  pred, y = np.asarray(pred), np.asarray(y)
  out = {"accuracy": (pred == y).mean(axis=-1).tolist()}
  if target is not None:
    aim = np.asarray(target) != y
    hit = (pred == np.asarray(target)) & aim
    out["success"] = (hit.sum(axis=-1) / max(aim.sum(), 1)).tolist()
  return out
