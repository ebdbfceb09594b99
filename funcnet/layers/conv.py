"""Strided convolutions over channels-last signals and images, 1-D to 3-D.

Spatial output sizes follow XLA (see :func:`out_size`).
"""

import jax
import jax.numpy as jnp

from funcnet import initializers
from funcnet.layers.checks import per_axis

PADDINGS = ("SAME", "VALID")

# lax dimension numbers for channels-last inputs and (*kernel, c_in, c_out)
# kernels, by the number of spatial axes.
_CONV_DIMS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"),
              3: ("NDHWC", "DHWIO", "NDHWC")}


def out_size(n: int, k: int, stride: int, padding: str) -> int:
  """The length of one spatial axis after a conv or pool (may be < 1 when
  ``k > n`` with ``"VALID"``: the caller reports that)."""
  if padding == "SAME":
    return -(-n // stride)
  return (n - k) // stride + 1


def conv_init(key, kernel_size, c_in: int, c_out: int, dtype=jnp.float32,
              init="he"):
  """``{"W": (*kernel_size, c_in, c_out), "b": (c_out,)}``.

  ``kernel_size`` is a tuple with one entry per spatial axis (``(k,)`` for
  1-D, ``(kh, kw)`` for 2-D); the initialiser's fans include the receptive
  field (see :mod:`funcnet.initializers`).
  """
  shape = tuple(int(k) for k in kernel_size) + (c_in, c_out)
  return {"W": initializers.get(init)(key, shape, dtype),
          "b": jnp.zeros((c_out,), dtype)}


def conv(params, x, stride=1, padding="SAME"):
  """A strided convolution (cross-correlation, as in every DL library).

  Args:
    params: ``{"W": (*kernel, c_in, c_out), "b": (c_out,)}``; the number of
      spatial axes (1 or 2, or 3) is read from ``W``.
    x: ``(m, *spatial, c_in)``, channels last.
    stride: an int for every spatial axis, or one per axis.
    padding: ``"SAME"`` or ``"VALID"``.

  Returns:
    ``(m, *spatial', c_out)`` with ``spatial'`` given by :func:`out_size`.
  """
  w = params["W"]
  nd = w.ndim - 2
  # lax wants both operands in one dtype (float32 data may meet float64
  # params): promote as a matmul would.
  dtype = jnp.result_type(x, w)
  x, w = jnp.asarray(x, dtype), jnp.asarray(w, dtype)
  y = jax.lax.conv_general_dilated(
      x, w, window_strides=per_axis(stride, nd), padding=padding,
      dimension_numbers=_CONV_DIMS[nd])
  return y + params["b"]
