"""Strided convolutions over channels-last signals and images, 1-D to 3-D,
with the hand-written backward.

Spatial output sizes and SAME padding follow XLA (see :func:`out_size` and
:func:`pads`). Notation, per spatial axis (a multi-index in 2-D and 3-D):
input length ``n``, kernel ``k``, stride ``s``, output length ``P``, padding
``(lo, hi)``; ``xp`` is ``x`` with ``lo`` zeros before and ``hi`` after.

  y[m, p, o] = b[o] + sum_{q < k, i} W[q, i, o] xp[m, s p + q, i]    (forward)

Its backward is three convolutions, each a forward ``conv_general_dilated``
(the dilations place the stride's gaps; no autodiff):

  dx[m, t, i] = sum_{p, q: s p + q = t + lo} sum_o dy[m, p, o] W[q, i, o]
              = full correlation of dy, dilated by s, with W flipped in space
                and its in/out channels swapped
  dW[q, i, o] = sum_{m, p} xp[m, s p + q, i] dy[m, p, o]
              = correlation of xp with dy dilated by s (batch m contracted)
  db[o]       = sum_{m, p} dy[m, p, o]
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
# The same arrays read for dW: x's channels i act as the batch, its batch m
# as the contracted feature; dy is the kernel (in = m, out = o); the result
# is laid out (*kernel, i, o) like W.
_GRAD_W_DIMS = {1: ("CWN", "IWO", "WNC"), 2: ("CHWN", "IHWO", "HWNC"),
                3: ("CDHWN", "IDHWO", "DHWNC")}


def out_size(n: int, k: int, stride: int, padding: str) -> int:
  """The length of one spatial axis after a conv or pool (may be < 1 when
  ``k > n`` with ``"VALID"``: the caller reports that)."""
  if padding == "SAME":
    return -(-n // stride)
  return (n - k) // stride + 1


def pads(n: int, k: int, stride: int, padding: str) -> tuple:
  """``(lo, hi)``, the padding of one axis, as XLA splits it: ``"VALID"``
  none; ``"SAME"`` ``total = max((P - 1) s + k - n, 0)`` with ``lo = total
  // 2`` and ``hi`` the rest (so an even ``k`` pads one more after)."""
  if padding == "VALID":
    return (0, 0)
  total = max((out_size(n, k, stride, padding) - 1) * stride + k - n, 0)
  return (total // 2, total - total // 2)


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


def conv_forward(params, x, stride=1, padding="SAME"):
  """A strided convolution (cross-correlation, as in every DL library).

  ``y[m, p, o] = b[o] + sum_{q, i} W[q, i, o] xp[m, s p + q, i]`` with ``xp``
  the padded input (module docstring).

  Args:
    params: ``{"W": (*kernel, c_in, c_out), "b": (c_out,)}``; the number of
      spatial axes (1 or 2, or 3) is read from ``W``.
    x: ``(m, *spatial, c_in)``, channels last.
    stride: an int for every spatial axis, or one per axis.
    padding: ``"SAME"`` or ``"VALID"``.

  Returns:
    ``(y, cache)``: ``y: (m, *spatial', c_out)`` with ``spatial'`` given by
    :func:`out_size`; the cache is ``(x, strides, pads)``, what
    :func:`conv_backward` needs besides ``W``.
  """
  w = params["W"]
  nd = w.ndim - 2
  strides = per_axis(stride, nd)
  pad = tuple(pads(n, k, s, padding)
              for n, k, s in zip(x.shape[1:-1], w.shape[:nd], strides))
  # lax wants both operands in one dtype (float32 data may meet float64
  # params): promote as a matmul would.
  dtype = jnp.result_type(x, w)
  y = jax.lax.conv_general_dilated(
      jnp.asarray(x, dtype), jnp.asarray(w, dtype), window_strides=strides,
      padding=pad, dimension_numbers=_CONV_DIMS[nd])
  return y + params["b"], (x, strides, pad)


def conv_backward(params, cache, dy):
  """The convolution's backward: ``dy = dC/dy: (m, *spatial', c_out)`` to

    dx[m, t, i] = sum_{p, q: s p + q = t + lo} sum_o dy[m, p, o] W[q, i, o]
                                                   (m, *spatial, c_in)
    dW[q, i, o] = sum_{m, p} xp[m, s p + q, i] dy[m, p, o]
                                                   (*kernel, c_in, c_out)
    db[o]       = sum_{m, p} dy[m, p, o]           (c_out,)

  per spatial axis (multi-indices ``p, q, t`` in 2-D and 3-D). Both sums are
  convolutions:

  * ``dx``: insert ``s - 1`` zeros between the entries of ``dy``
    (``lhs_dilation = s``), pad it by ``k - 1 - lo`` before and ``n + lo -
    (P - 1) s - 1`` after, and correlate at stride 1 with the kernel
    ``W[k - 1 - q, o, i]`` (flipped in space, channels swapped). Input
    entries no window reached (VALID with leftover, stride > k) get 0.
  * ``dW``: correlate ``xp`` (its channels as the batch, the batch
    contracted) with ``dy`` dilated by ``s`` (``rhs_dilation = s``); the
    after-padding is ``hi`` minus the ``r = n + lo + hi - (P - 1) s - k``
    trailing entries no window reached, so the output is exactly ``k`` long.

  Returns ``(dx, {"W": dW, "b": db})``, each in its primal's dtype.
  """
  x, strides, pad = cache
  w = params["W"]
  nd = w.ndim - 2
  kernel = w.shape[:nd]
  dtype = jnp.result_type(x, w)
  dy = jnp.asarray(dy, dtype)
  spatial = x.shape[1:-1]
  out = dy.shape[1:-1]

  # Per axis: input n, kernel k, stride s, output P, low padding lo.
  axes = list(zip(spatial, kernel, strides, out, (lo for lo, _ in pad)))

  # dx: dy dilated by s and padded, correlated with W flipped in space and
  # transposed in its channels.
  w_flip = jnp.swapaxes(jnp.flip(w, axis=tuple(range(nd))), -1, -2)
  dx = jax.lax.conv_general_dilated(
      dy, jnp.asarray(w_flip, dtype), window_strides=(1,) * nd,
      padding=[(k - 1 - lo, n + lo - (p - 1) * s - 1)
               for n, k, s, p, lo in axes],
      lhs_dilation=strides, dimension_numbers=_CONV_DIMS[nd])

  # dW: xp correlated with dy dilated by s; after-padding hi - r.
  dw = jax.lax.conv_general_dilated(
      jnp.asarray(x, dtype), dy, window_strides=(1,) * nd,
      padding=[(lo, k - n - lo + (p - 1) * s) for n, k, s, p, lo in axes],
      rhs_dilation=strides, dimension_numbers=_GRAD_W_DIMS[nd])

  db = jnp.sum(dy, axis=tuple(range(dy.ndim - 1)))
  return dx.astype(x.dtype), {"W": dw.astype(w.dtype),
                              "b": db.astype(params["b"].dtype)}


def conv(params, x, stride=1, padding="SAME"):
  """A strided convolution: ``(m, *spatial, c_in) -> (m, *spatial', c_out)``
  (see :func:`conv_forward`)."""
  return conv_forward(params, x, stride, padding)[0]
