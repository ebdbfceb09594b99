"""Adversarial examples from the input gradient (:mod:`funcnet.inputgrad`).

  fgsm(grad_of, x, y, eps, lo, hi)                   one signed step
  pgd(grad_of, x, y, eps, lo, hi, step_size, steps, key)  projected steps

Both take the gradient as a function, ``grad_of(x, y) -> dC/dx``, so the
same attack runs on the hand-written input gradient or on autodiff's
(:func:`funcnet.inputgrad.value_and_input_grad`).
"""

from funcnet.attacks.linf import fgsm, pgd

__all__ = ["fgsm", "pgd"]
