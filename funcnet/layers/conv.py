"""Strided convolutions over channels-last signals and images, 1-D to 3-D,
with the hand-written backward.

Spatial output sizes and SAME padding follow XLA (see :func:`out_size` and
:func:`pads`). Notation, per spatial axis (a multi-index in 2-D and 3-D):
input length ``n``, kernel ``k``, stride ``s``, output length ``P``, padding
``(lo, hi)``; ``xp`` is ``x`` with ``lo`` zeros before and ``hi`` after.

  y[m, p, o] = b[o] + sum_{q < k, i} W[q, i, o] xp[m, s p + q, i]    (forward)

computed as im2col: the windows ``X[m, p, q, i] = xp[m, s p + q, i]``
(:mod:`funcnet.layers.windows`) contracted with ``W`` over ``(q, i)`` in
one matrix product, ``(m P, K c_in) @ (K c_in, c_out)``. Its backward is two
more products and the windows' adjoint (no autodiff):

  dW[q, i, o] = sum_{m, p} X[m, p, q, i] dy[m, p, o]        X^T dy
  dX[m, p, q, i] = sum_o dy[m, p, o] W[q, i, o]             dy W^T
  dx[m, t, i] = sum_{p, q: s p + q = t + lo} dX[m, p, q, i] (unwindow)
  db[o]       = sum_{m, p} dy[m, p, o]

Why not ``lax.conv_general_dilated``: XLA's CPU backend runs a convolution
fast (Eigen) only in its canonical layout, and it canonicalises only the
convolutions of the program's top level. Inside a loop (every epoch is a
``fori_loop`` over steps) the gradient's convolutions, with their batch
and feature axes exchanged, fall to a naive loop nest: 20-30x slower than
the same convolution at the top level (the MNIST-1D CNN's second layer,
forward and backward: 40-75 ms in a loop, 2-5 ms outside; as im2col 2-9 ms
in either). Matrix products run at GEMM speed anywhere, and under
``jax.vmap`` (a sweep's variants) they become batched products rather than
grouped convolutions. The cost: the windows take ``K`` times the input's
memory.
"""

import jax
import jax.numpy as jnp

from funcnet import initializers
from funcnet.layers.checks import per_axis
from funcnet.layers.windows import unwindow, windows

PADDINGS = ("SAME", "VALID")

# The name scope of the convolution's products (jax.named_scope): it names
# them in profiles and XLA dumps, and lets a program's reader find them in
# a jaxpr (funcnet.sweep.engine.variant_loop), autodiff's transposes of
# them included.
SCOPE = "funcnet_conv"

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


def _im2col(x, kernel, strides, pad):
  """``X[m, *p, *q, i] = xp[m, s p + q, i]``: ``(m, *P, *kernel, c_in)``."""
  cols = windows(x, kernel, strides, pad, 0, axis=-2)   # (m, *P, K, c_in)
  return cols.reshape(cols.shape[:-2] + tuple(kernel) + cols.shape[-1:])


def _contract(nd):
  """The dot_general dimension numbers of ``X`` (``(m, *P, *kernel, c_in)``)
  with ``W`` (``(*kernel, c_in, c_out)``) over ``(*kernel, c_in)``."""
  return ((tuple(range(nd + 1, 2 * nd + 2)), tuple(range(nd + 1))), ((), ()))


def conv_forward(params, x, stride=1, padding="SAME"):
  """A strided convolution (cross-correlation, as in every DL library).

  ``y[m, p, o] = b[o] + sum_{q, i} W[q, i, o] xp[m, s p + q, i]`` with ``xp``
  the padded input, computed as ``X @ W`` over ``X``'s windows (module
  docstring).

  Args:
    params: ``{"W": (*kernel, c_in, c_out), "b": (c_out,)}``; the number of
      spatial axes (1 or 2, or 3) is read from ``W``.
    x: ``(m, *spatial, c_in)``, channels last.
    stride: an int for every spatial axis, or one per axis.
    padding: ``"SAME"`` or ``"VALID"``.

  Returns:
    ``(y, cache)``: ``y: (m, *spatial', c_out)`` with ``spatial'`` given by
    :func:`out_size`; the cache is ``(x, strides, pads)``, what
    :func:`conv_backward` needs besides ``W`` (it takes the windows again:
    under ``jit`` the forward's are reused, not K copies kept twice).
  """
  w = params["W"]
  nd = w.ndim - 2
  strides = per_axis(stride, nd)
  pad = tuple(pads(n, k, s, padding)
              for n, k, s in zip(x.shape[1:-1], w.shape[:nd], strides))
  # one dtype for both operands (float32 data may meet float64 params):
  # promote as a matmul would.
  dtype = jnp.result_type(x, w)
  with jax.named_scope(SCOPE):
    cols = _im2col(jnp.asarray(x, dtype), w.shape[:nd], strides, pad)
    # W itself is the product's right operand (not a reshape of it), so
    # that funcnet.quantize finds the weight's integer site.
    y = jax.lax.dot_general(cols, jnp.asarray(w, dtype), _contract(nd))
  return y + params["b"], (x, strides, pad)


def conv_backward(params, cache, dy):
  """The convolution's backward: ``dy = dC/dy: (m, *spatial', c_out)`` to

    dW[q, i, o] = sum_{m, p} X[m, p, q, i] dy[m, p, o]   (*kernel, c_in, c_out)
    dX[m, p, q, i] = sum_o dy[m, p, o] W[q, i, o]        (m, *P, *kernel, c_in)
    dx[m, t, i] = sum_{p, q: s p + q = t + lo} dX[m, p, q, i]
                                                         (m, *spatial, c_in)
    db[o]       = sum_{m, p} dy[m, p, o]                 (c_out,)

  per spatial axis (multi-indices ``p, q, t`` in 2-D and 3-D), ``X`` the
  forward's windows of the padded input. ``dx`` puts each offset's slice
  ``dX[..., q, :]`` back at the input positions ``s p + q - lo`` it was
  read from and sums (:func:`funcnet.layers.windows.unwindow`): entries no
  window read (VALID with leftover, stride > k) get 0, padding's share is
  cropped.

  Returns ``(dx, {"W": dW, "b": db})``, each in its primal's dtype.
  """
  with jax.named_scope(SCOPE):
    return _conv_backward(params, cache, dy)


def _conv_backward(params, cache, dy):
  x, strides, pad = cache
  w = params["W"]
  nd = w.ndim - 2
  kernel = w.shape[:nd]
  dtype = jnp.result_type(x, w)
  dy = jnp.asarray(dy, dtype)
  cols = _im2col(jnp.asarray(x, dtype), kernel, strides, pad)
  batch = tuple(range(dy.ndim - 1))                      # (m, *p)

  # X^T dy, computed as (dy^T X)^T: XLA:CPU's GEMM wants its contracting
  # axis last on the lhs, so it copies the lhs transposed; dy is K times
  # smaller than the windows X, and (c_out, *kernel, c_in) is the weight's
  # size (docs/performance.md, "The CNN's step").
  dw = jax.lax.dot_general(dy, cols, ((batch, batch), ((), ())))
  dw = jnp.moveaxis(dw, 0, -1)                             # (*kernel, c_in, c_out)
  d_cols = jax.lax.dot_general(dy, jnp.asarray(w, dtype),         # dy W^T
                               (((dy.ndim - 1,), (nd + 1,)), ((), ())))
  # (m, *P, *kernel, c_in) -> the K offsets' (m, *P, c_in), row-major.
  d_cols = d_cols.reshape(dy.shape[:-1] + (-1, x.shape[-1]))
  dx = unwindow([d_cols[..., q, :] for q in range(d_cols.shape[-2])],
                x.shape, kernel, strides, pad)
  db = jnp.sum(dy, axis=batch)
  return dx.astype(x.dtype), {"W": dw.astype(w.dtype),
                              "b": db.astype(params["b"].dtype)}


def conv(params, x, stride=1, padding="SAME"):
  """A strided convolution: ``(m, *spatial, c_in) -> (m, *spatial', c_out)``
  (see :func:`conv_forward`)."""
  return conv_forward(params, x, stride, padding)[0]
