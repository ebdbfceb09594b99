"""Explanations of a trained model's decisions, from the input gradient
(:func:`funcnet.input_grad`, hand-written or autodiff), in Captum's
functional form: every method is ``method(model, params, x, target=None,
source="manual", ...) -> (m, *in_shape)`` maps.

  saliency, grad_times_input, smoothgrad      maps (:mod:`.methods`)
  integrated_gradients -> IG                  maps, completeness gap, F(x) - F(b)
  ig_until_complete                           m doubled until the gap <= 1%
  attention_maps                              (blocks, m, heads, T, T) weights
  sanity_check -> Sanity                      Adebayo et al.'s randomisation test
  explain                                     all of it for chosen examples,
                                              PNGs, explain.md, results.json
"""

from funcnet.explain.attention import attention_maps, has_attention
from funcnet.explain.methods import (IG, grad_times_input, ig_until_complete,
                                     integrated_gradients, quadrature,
                                     saliency, score, smoothgrad)
from funcnet.explain.report import METHODS, Settings, explain
from funcnet.explain.sanity import Sanity, cascade, spearman
from funcnet.explain.sanity import check as sanity_check

__all__ = ["IG", "METHODS", "Sanity", "Settings", "attention_maps", "cascade", "explain",
           "grad_times_input", "has_attention", "ig_until_complete",
           "integrated_gradients", "quadrature", "saliency", "sanity_check",
           "score", "smoothgrad", "spearman"]
