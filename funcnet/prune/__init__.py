"""Magnitude pruning (issue 26): the smallest weights set to zero, to a
target sparsity, with masks that fine-tuning keeps.

  magnitude.masks(params, sparsity, scope)   masks over every weight
                                             ("global") or each layer ("layer")
  magnitude.apply(params, masks)             params * masks
  magnitude.sparsity(params)                 the zero fraction of the weights
  schedule.sparsities(epochs, final, ramp)   gradual pruning's cubic schedule
"""

from funcnet.prune.magnitude import apply, masks, sparsity
from funcnet.prune.schedule import cubic, sparsities

__all__ = ["apply", "cubic", "masks", "sparsities", "sparsity"]
