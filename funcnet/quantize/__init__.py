"""Post-training quantization (issue 26): a trained model's weights as
integers, its evaluation run on them.

  weights.quantize(params, bits=8)   every weight matrix / kernel as int8
                                     codes and per-output-channel scales
  weights.dequantize(qparams)        back to floats (inside jit, at the matmul)
  weights.model_on(model)            the Model whose logits read qparams
  weights.save(path, qparams) / load(path, template)   one .npz file
  activations.calibrate(model, qparams, batches)   per-tensor activation scales
  activations.model_on(model, scales)  every weight's matmul int8 x int8 -> int32
"""

from funcnet.quantize.weights import (SUPPORTED_BITS, QWeight, dequantize,
                                      dequantize_array, load, model_on,
                                      quantize, quantize_array, save)

__all__ = ["SUPPORTED_BITS", "QWeight", "dequantize", "dequantize_array",
           "load", "model_on", "quantize", "quantize_array", "save"]
