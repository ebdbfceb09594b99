"""Symmetric per-output-channel weight quantization (AQT / Qwix's "weight
only" int8).

funcnet lays every weight out with its output channel last: a dense
``W (n_in, n_out)``, a convolution's ``W (*kernel, c_in, c_out)``. For such a
``W`` with ``b`` bits, ``q_max = 2^(b-1) - 1`` (127 for int8) and one scale
per output channel ``j``::

  s_j  = max_{i} |W[..., i, j]| / q_max            (max over all other axes)
  q    = clip(round(W / s), -q_max, q_max)         int8, round half to even
  W^   = q * s                                     |W - W^| <= s / 2

A channel that is all zeros gets ``s_j = 1`` (its codes are 0 anyway), so
nothing divides by zero. Symmetric: no zero point, and ``-128`` is never
used, so ``-q`` is always a code too.

Which leaves are weights: the floating arrays of rank >= 2 (matrices,
kernels, embedding tables). Biases, normalisation scales and shifts
(rank 1) and scalars stay float: they are a small part of the size and
quantizing them costs accuracy for nothing.

The quantized model computes ``z = x @ (q * s)``, which for a per-column
``s`` is ``(x @ q) * s``: :func:`model_on` gives a :class:`funcnet.Model`
whose ``logits`` take the quantized params and dequantise each weight
inside the traced program, next to the matmul that reads it, so what is
held in memory and on disk is the int8 codes.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.errors import CheckpointError, ConfigError

SUPPORTED_BITS = (8,)


class QWeight(NamedTuple):
  """One quantized weight: ``q`` int8 codes shaped like the weight, ``scale``
  float32 ``(n_out,)``, one per output channel (the last axis)."""
  q: object
  scale: object


def check_bits(bits, what: str = "--bits") -> int:
  """``bits`` if supported, else a one-line :class:`ConfigError`."""
  if bits not in SUPPORTED_BITS or isinstance(bits, bool):
    raise ConfigError(f"{what} {bits!r}: expected one of "
                      f"{', '.join(map(str, SUPPORTED_BITS))}")
  return bits


def is_weight(leaf) -> bool:
  """A floating array of rank >= 2 (a matrix, kernel or table)."""
  return (np.ndim(leaf) >= 2
          and jnp.issubdtype(jnp.result_type(leaf), jnp.floating))


def quantize_array(w, bits: int = 8) -> QWeight:
  """``W (..., n_out)`` -> ``QWeight(q int8 like W, scale float32 (n_out,))``.

  Computed in numpy in float64 (host side, once per model), so the codes do
  not depend on the device's float32 rounding of ``W / s``.
  """
  check_bits(bits, "bits =")
  q_max = 2 ** (bits - 1) - 1
  w = np.asarray(w, np.float64)
  amax = np.max(np.abs(w), axis=tuple(range(w.ndim - 1)))
  scale = np.where(amax > 0, amax / q_max, 1.0).astype(np.float32)
  q = np.clip(np.rint(w / scale.astype(np.float64)), -q_max, q_max)
  return QWeight(q.astype(np.int8), scale)


def dequantize_array(qw: QWeight, dtype=jnp.float32):
  """``q * scale`` in ``dtype`` (broadcast over the last axis)."""
  return qw.q.astype(dtype) * qw.scale.astype(dtype)


def _is_q(x) -> bool:
  return isinstance(x, QWeight)


def quantize(params, bits: int = 8):
  """``params`` with every weight (:func:`is_weight`) a :class:`QWeight`;
  the other leaves as numpy arrays of their own dtype."""
  check_bits(bits, "bits =")
  return jax.tree_util.tree_map(
      lambda a: quantize_array(a, bits) if is_weight(a) else np.asarray(a),
      jax.device_get(params))


def dequantize(qparams, dtype=jnp.float32):
  """The float params back: each :class:`QWeight` as ``q * scale`` in
  ``dtype``, other leaves unchanged. Traceable (call it inside jit)."""
  return jax.tree_util.tree_map(
      lambda a: dequantize_array(a, dtype) if _is_q(a) else a,
      qparams, is_leaf=_is_q)


def model_on(model, dtype=jnp.float32):
  """``model`` whose ``logits(qparams, x, ...)`` (and so ``apply``) read
  quantized params: the int8 codes are what goes into the jitted program,
  dequantised there next to the matmul that reads each weight. The fields
  that read float params (backward, trace, kinks, decoder, embed, refresh)
  are None: the quantized model is for inference."""
  float_logits = model.logits

  def logits(qparams, x, *args, **kwargs):
    return float_logits(dequantize(qparams, dtype), x, *args, **kwargs)
  return model._replace(logits=logits, backward=None, kinks=None, trace=None,
                        decoder=None, refresh=None, embed=None)


def _key(path) -> str:
  return jax.tree_util.keystr(path)


def save(path: str, qparams, extra=None) -> None:
  """One ``.npz`` (uncompressed, so its size is the arrays' bytes): a
  weight at tree path ``P`` as ``P|q`` (int8) and ``P|scale`` (float32),
  any other leaf as ``P``; ``extra``: more named arrays (a name with a
  ``|`` and no tree path, so :func:`load` passes it by)."""
  arrays = dict(extra or {})
  for p, leaf in jax.tree_util.tree_flatten_with_path(
      qparams, is_leaf=_is_q)[0]:
    if _is_q(leaf):
      arrays[_key(p) + "|q"] = np.asarray(leaf.q)
      arrays[_key(p) + "|scale"] = np.asarray(leaf.scale)
    else:
      arrays[_key(p)] = np.asarray(leaf)
  with open(path, "wb") as f:
    np.savez(f, **arrays)


def load(path: str, template):
  """The quantized params saved by :func:`save`, in the structure of
  ``template`` (the model's float params or their shapes,
  ``jax.eval_shape(model.init, ...)``).

  Raises:
    CheckpointError: the file is missing, or does not fit the template.
  """
  try:
    with np.load(path) as f:
      stored = {k: f[k] for k in f.files}
  except (OSError, ValueError) as e:
    raise CheckpointError(f"quantized params {path!r}: {e}; expected the "
                          ".npz that funcnet quantize wrote") from None

  def leaf(p, t):
    k = _key(p)
    if k + "|q" in stored:
      qw = QWeight(stored[k + "|q"], stored[k + "|scale"])
      if qw.q.shape != tuple(t.shape) or qw.q.dtype != np.int8:
        raise CheckpointError(f"quantized params {path!r}: {k} is "
                              f"{qw.q.dtype}{list(qw.q.shape)}; expected "
                              f"int8{list(t.shape)}")
      return qw
    if k not in stored or stored[k].shape != tuple(t.shape):
      raise CheckpointError(f"quantized params {path!r}: no {k} shaped "
                            f"{list(t.shape)}; expected one saved for this "
                            "model")
    return stored[k]
  return jax.tree_util.tree_map_with_path(leaf, template)
