"""Adversarial examples from the input gradient (:mod:`funcnet.inputgrad`).

  fgsm(grad_of, x, y, eps, lo, hi)                   one signed step
  pgd(grad_of, x, y, eps, lo, hi, step_size, steps, key)  projected steps

Both take the gradient as a function, ``grad_of(x, y) -> dC/dx``, so the
same attack runs on the hand-written input gradient or on autodiff's
(:func:`funcnet.inputgrad.value_and_input_grad`).

  evaluate.in_model_units(eps, mean, std, valid_range, in_shape)
      eps in the data's own units -> the model's (eps / std per feature)
  evaluate.make_sweep(model, loss, settings)
      accuracy under attack for every eps and method, one jitted program
  plots.accuracy_vs_eps, plots.examples     the pictures ``funcnet attack``
                                             draws

A run folder under attack (load_run, the dataset's valid range, the
report): :mod:`funcnet.experiment.attack`.
"""

from funcnet.attacks.linf import fgsm, pgd

__all__ = ["fgsm", "pgd"]
