"""L-infinity attacks: FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018).

With ``g = dC/dx`` the loss's input gradient at ``x`` and ``s = +1``
(untargeted: raise the loss of the true label) or ``s = -1`` (targeted:
lower the loss of the target label ``y``):

  FGSM   x' = clip(x + s eps sign(g), lo, hi)
  PGD    x_0 = x + U(-eps, eps)                     (random start), or x
         x_{k+1} = P(x_k + s alpha sign(g(x_k)))    k = 0..steps-1
         P(u) = clip(clip(u, x - eps, x + eps), lo, hi)

``eps``, ``alpha``, ``lo`` and ``hi`` are in the model's input units and
broadcast against ``x``: a caller whose model reads standardised inputs
passes ``eps / std`` per feature and the valid range standardised (what
``funcnet attack`` does, so that eps is in the data's own units). The
sign makes each step the steepest ascent within the L-infinity ball; PGD
from the same point with ``steps = 1``, ``alpha = eps`` and no random start
is FGSM.

Everything here is pure and jittable; ``steps`` is static (one
``lax.fori_loop``).
"""

from typing import Callable

import jax
import jax.numpy as jnp


def _project(u, x, eps, lo, hi):
  return jnp.clip(jnp.clip(u, x - eps, x + eps), lo, hi)


def fgsm(grad_of: Callable, x, y, eps, lo=-jnp.inf, hi=jnp.inf, *,
         targeted: bool = False):
  """One signed gradient step of size ``eps``, clipped to ``[lo, hi]``.

  Args:
    grad_of: ``(x, y) -> dC/dx``, shaped like ``x``.
    x: ``(m, *in_shape)`` clean inputs; y: their labels (targeted: the
      labels to reach).
    eps: the L-infinity radius (a number, or an array broadcasting to x).
    lo, hi: the valid input range (broadcasting to x).
    targeted: step down the loss of ``y`` instead of up.
  """
  s = -1.0 if targeted else 1.0
  g = grad_of(x, y)
  return _project(x + s * eps * jnp.sign(g), x, eps, lo, hi).astype(x.dtype)


def pgd(grad_of: Callable, x, y, eps, lo=-jnp.inf, hi=jnp.inf, *,
        step_size, steps: int, key=None, targeted: bool = False):
  """Projected gradient descent on the loss in the L-infinity ball.

  Args:
    grad_of, x, y, eps, lo, hi, targeted: as :func:`fgsm`.
    step_size: ``alpha``, each step's size (Madry et al.: 2.5 eps / steps).
    steps: the number of steps (static).
    key: a PRNG key for the random start, uniform in the ball; None: start
      at ``x``.
  """
  s = -1.0 if targeted else 1.0
  start = x
  if key is not None:
    start = _project(x + jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
                     * eps, x, eps, lo, hi)

  def step(_, u):
    return _project(u + s * step_size * jnp.sign(grad_of(u, y)), x, eps,
                    lo, hi).astype(x.dtype)
  return jax.lax.fori_loop(0, steps, step, start)
