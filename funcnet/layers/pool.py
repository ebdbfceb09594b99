"""Pooling: max and average over windows, the global average and max, each
with its hand-written backward.

Notation, per spatial axis (multi-indices in 2-D and 3-D): window ``k``,
stride ``s``, padding ``(lo, hi)`` (:func:`funcnet.layers.conv.pads`), ``xp``
the padded input, output ``P`` long. Window ``p`` holds ``xp[s p + q]``,
``q < k``; windows overlap when ``s < k``, and then an input entry receives
gradient from every window that holds it (the sums over ``p`` below).

  max_pool  y[p] = max_q xp[s p + q]
            dx[t] = sum_{p: s p + q*_p = t + lo} dy[p]
  avg_pool  y[p] = sum_q xp[s p + q] / N_p
            dx[t] = sum_{p, q: s p + q = t + lo} dy[p] / N_p

``q*_p`` is the offset of window ``p``'s maximum: the FIRST maximal entry,
in row-major order of the window, when several tie (a relu that zeroes a
whole window, say): the whole ``dy[p]`` goes to that one entry. ``N_p``
counts window ``p``'s in-bounds entries (padding does not dilute a mean).
"""

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.layers.checks import per_axis
from funcnet.layers.conv import pads
from funcnet.layers.windows import unwindow, windows


def _geometry(x, window, stride, padding):
  """Per-axis windows, strides and ``(lo, hi)`` pads of a pool over ``x``'s
  spatial axes; ``stride`` defaults to ``window``."""
  nd = x.ndim - 2
  window = per_axis(window, nd)
  stride = window if stride is None else per_axis(stride, nd)
  pad = tuple(pads(n, k, s, padding)
              for n, k, s in zip(x.shape[1:-1], window, stride))
  return window, stride, pad


def _full(t):
  # A window (or stride) of 1 on the batch and channel axes.
  return (1,) + t + (1,)


def _tiled(shape, window, stride, pad) -> bool:
  """Whether the windows tile the input: stride = window, no padding, and
  every spatial size a multiple of its window."""
  return (stride == window and all(p == (0, 0) for p in pad)
          and all(n % k == 0 for n, k in zip(shape[1:-1], window)))


def _tiles(x, window):
  """The windows of a tiled pool as an axis: ``(m, *spatial, c) -> (m, *P,
  K, c)``, entry ``q`` of the ``K = prod(window)`` in row-major window order
  (that of :func:`funcnet.layers.windows.windows`). A reshape and a
  transpose: no copies of overlapping slices."""
  nd = len(window)
  split = [x.shape[0]]
  for n, k in zip(x.shape[1:-1], window):
    split += [n // k, k]
  t = x.reshape(split + [x.shape[-1]])     # (m, P_1, k_1, ..., P_d, k_d, c)
  order = [0] + [1 + 2 * i for i in range(nd)] + [2 + 2 * i for i in range(nd)]
  t = t.transpose(order + [2 * nd + 1])    # (m, P_1..P_d, k_1..k_d, c)
  return t.reshape(t.shape[:1 + nd] + (-1, x.shape[-1]))


def _untile(t, shape, window):
  """The inverse of :func:`_tiles`: ``(m, *P, K, c) -> shape``."""
  nd = len(window)
  t = t.reshape(t.shape[:1 + nd] + tuple(window) + (shape[-1],))
  order = [0]
  for i in range(nd):
    order += [1 + i, 1 + nd + i]
  return t.transpose(order + [2 * nd + 1]).reshape(shape)


def _first_argmax(t):
  """``argmax(t, axis=-2)`` (``t``: ``(..., K, c)``, ``K`` small), by
  ``jnp.argmax``'s rules: the first maximum wins a tie, and a NaN counts as
  above every number (the first NaN wins, so a NaN in a window reaches
  ``y`` as ``reduce_window``'s max would pass it on).

  Unrolled as ``K - 1`` compares and selects, one elementwise loop for
  XLA: ``jnp.argmax`` is a variadic reduce, which XLA:CPU runs as a slow
  loop nest. Measured on the MNIST-1D CNN's step (three pools of 2,
  interleaved in one process, docs/performance.md "The CNN's step"): the
  hand-written step 3.06 -> 2.85 ms, autodiff's 2.86 -> 2.75 ms (p25).
  Returning the chain's running maximum as ``y`` too was slower for
  autodiff (3.34 ms): XLA fused the selects into each of the next
  convolution's windows."""
  best = t[..., 0, :]
  q_star = jnp.zeros(best.shape, jnp.int32)
  for q in range(1, t.shape[-2]):
    v = t[..., q, :]
    wins = (v > best) | (jnp.isnan(v) & ~jnp.isnan(best))
    best = jnp.where(wins, v, best)
    q_star = jnp.where(wins, q, q_star)
  return q_star


def max_pool_forward(x, window, stride=None, padding="VALID"):
  """Max over each window: ``(m, *spatial, c) -> (m, *spatial', c)``.

  ``stride`` defaults to ``window`` (non-overlapping windows). ``"SAME"``
  pads with ``-inf``, so padding never wins the max (every SAME window holds
  at least one real entry).

  Returns ``(y, cache)``; the cache is the offset ``q*`` of each window's
  first maximal entry (an index into the row-major window, ``(m, *P, c)``
  ints) with the geometry and ``x``'s shape.
  """
  window, stride, pad = _geometry(x, window, stride, padding)
  if _tiled(x.shape, window, stride, pad):
    # Tiled windows (the CNN's pool): the windows as an axis, the first
    # maximum picked and y read through that one-hot pick, so jax.grad
    # sends dy to the same entry as the backward below, by a select
    # instead of reduce_window's select-and-scatter (slower on CPU).
    t = _tiles(x, window)                              # (m, *P, K, c)
    q_star = _first_argmax(t)
    hit = jnp.arange(t.shape[-2])[:, None] == q_star[..., None, :]
    y = jnp.sum(jnp.where(hit, t, jnp.zeros((), x.dtype)), axis=-2)
    return y, (q_star, x.shape, window, stride, pad)
  # y by reduce_window, as before the backward existed, so the autodiff
  # path (jax.grad through logits) differentiates the same primitive. A
  # numpy (not jnp) init value: lax differentiates reduce_window only when it
  # can see a constant -inf and so knows this is a max-pool.
  y = jax.lax.reduce_window(x, np.array(-np.inf, x.dtype), jax.lax.max,
                            _full(window), _full(stride),
                            [(0, 0), *pad, (0, 0)])
  # argmax returns the first maximum: the documented tie rule.
  q_star = jnp.argmax(windows(x, window, stride, pad, -np.inf), axis=0)
  return y, (q_star, x.shape, window, stride, pad)


def max_pool_backward(cache, dy):
  """``dx[t] = sum_{p: s p + q*_p = t + lo} dy[p]``: each window's gradient
  goes whole to its (first) maximal entry, summed where windows overlap.
  ``dy: (m, *P, c) -> dx: (m, *spatial, c)``."""
  q_star, shape, window, stride, pad = cache
  k = int(np.prod(window))
  zero = jnp.zeros((), dy.dtype)
  if _tiled(shape, window, stride, pad):         # no overlaps: one select
    hit = jnp.arange(k)[:, None] == q_star[..., None, :]
    return _untile(jnp.where(hit, dy[..., None, :], zero), shape, window)
  parts = [jnp.where(q_star == q, dy, zero) for q in range(k)]
  return unwindow(parts, shape, window, stride, pad)


def max_pool(x, window, stride=None, padding="VALID"):
  """Max over each window (see :func:`max_pool_forward`)."""
  return max_pool_forward(x, window, stride, padding)[0]


def avg_pool_forward(x, window, stride=None, padding="VALID"):
  """Mean over each window's in-bounds entries: ``(m, *spatial, c) -> (m,
  *spatial', c)``.

  With ``"SAME"`` padding the edge windows are divided by the number of real
  entries they hold (``N_p``), not the window size, so padding does not
  dilute them. Returns ``(y, cache)``; the cache is ``N_p`` (``(*P, 1)``)
  with the geometry and ``x``'s shape.
  """
  window, stride, pad = _geometry(x, window, stride, padding)
  dims, strides, full_pad = _full(window), _full(stride), [(0, 0), *pad, (0, 0)]
  zero = np.array(0, x.dtype)  # a constant, as in max_pool
  total = jax.lax.reduce_window(x, zero, jax.lax.add, dims, strides, full_pad)
  count = jax.lax.reduce_window(jnp.ones(x.shape[1:-1], x.dtype), zero,
                                jax.lax.add, dims[1:-1], strides[1:-1], pad)
  count = count[..., None]
  return total / count, (count, x.shape, window, stride, pad)


def avg_pool_backward(cache, dy):
  """``dx[t] = sum_{p, q: s p + q = t + lo} dy[p] / N_p``: each window's
  gradient spread evenly over its in-bounds entries (padding's share is
  cropped), summed where windows overlap. ``dy: (m, *P, c) -> dx: (m,
  *spatial, c)``."""
  count, shape, window, stride, pad = cache
  share = dy / count
  return unwindow([share] * int(np.prod(window)), shape, window, stride, pad)


def avg_pool(x, window, stride=None, padding="VALID"):
  """Mean over each window's in-bounds entries (:func:`avg_pool_forward`)."""
  return avg_pool_forward(x, window, stride, padding)[0]


def global_avg_pool_forward(x):
  """``y[m, c] = (1/S) sum_t x[m, t, c]`` over the ``S`` spatial positions:
  ``(m, *spatial, c) -> (m, c)``. The cache is ``x``'s shape."""
  return jnp.mean(x, axis=tuple(range(1, x.ndim - 1))), x.shape


def global_avg_pool_backward(shape, dy):
  """``dx[m, t, c] = dy[m, c] / S`` at every position ``t``: ``(m, c) ->
  (m, *spatial, c)``."""
  s = int(np.prod(shape[1:-1]))
  one_position = (shape[0],) + (1,) * (len(shape) - 2) + (shape[-1],)
  return jnp.broadcast_to((dy / s).reshape(one_position), shape)


def global_avg_pool(x):
  """Mean over every spatial axis: ``(m, *spatial, c) -> (m, c)``."""
  return global_avg_pool_forward(x)[0]


def global_max_pool_forward(x):
  """``y[m, c] = max_t x[m, t, c]`` over every spatial position: ``(m,
  *spatial, c) -> (m, c)``. The cache is ``t*[m, c]``, the row-major flat
  index of the FIRST maximal position (the tie rule of :func:`max_pool`),
  with ``x``'s shape."""
  flat = x.reshape(x.shape[0], -1, x.shape[-1])
  return jnp.max(flat, axis=1), (jnp.argmax(flat, axis=1), x.shape)


def global_max_pool_backward(cache, dy):
  """``dx[m, t, c] = dy[m, c]`` if ``t = t*[m, c]`` else 0: ``(m, c) ->
  (m, *spatial, c)``."""
  t_star, shape = cache
  positions = jnp.arange(int(np.prod(shape[1:-1])))[None, :, None]
  dx = jnp.where(positions == t_star[:, None, :], dy[:, None, :],
                 jnp.zeros((), dy.dtype))
  return dx.reshape(shape)


def global_max_pool(x):
  """Max over every spatial axis: ``(m, *spatial, c) -> (m, c)``."""
  return global_max_pool_forward(x)[0]
