"""Magnitude pruning (issue 26): the smallest weights set to zero, to a
target sparsity, with masks that fine-tuning keeps.

  magnitude.masks(params, sparsity)   global masks over every weight
  magnitude.apply(params, masks)      params * masks
  magnitude.sparsity(params)          the zero fraction of the weights
"""

from funcnet.prune.magnitude import apply, masks, sparsity

__all__ = ["apply", "masks", "sparsity"]
