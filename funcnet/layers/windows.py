"""A kernel's windows over channels-last arrays, and their adjoint: what a
convolution (as im2col) and a pool read, and where their gradients go.

Per spatial axis: window ``k``, stride ``s``, padding ``(lo, hi)``, ``xp``
the padded input, ``P`` output positions. Window ``p`` holds ``xp[s p +
q]`` for the offsets ``q < k`` (multi-indices in 2-D and 3-D, taken in
row-major order).

  windows(x)[q][m, p, c]  = xp[m, s p + q, c]                    (K, m, *P, c)
  unwindow(parts)[m, t, c] = sum_{p, q: s p + q = t + lo} parts[q][m, p, c]

``K = prod(window)``. ``unwindow`` is the adjoint (transpose) of
``windows`` with ``fill = 0``: the backward of every layer that reads
windows.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np


def offsets(window) -> list:
  """The window's offsets ``q`` in row-major order (``K`` tuples)."""
  return list(itertools.product(*map(range, window)))


def windows(x, window, stride, pad, fill, axis: int = 0):
  """Every window's entries, offset by offset, stacked on ``axis`` of the
  result: ``(K, m, *P, c)`` for ``axis=0``, entry ``q`` being ``xp[:, s p +
  q, :]`` at every output position ``p`` (``xp``: ``x``, ``(m, *spatial,
  c)``, padded with ``fill``; ``pad``: ``(lo, hi)`` per spatial axis)."""
  xp = jax.lax.pad(x, np.array(fill, x.dtype),
                   [(0, 0, 0), *((lo, hi, 0) for lo, hi in pad), (0, 0, 0)])
  out = [(n + lo + hi - k) // s + 1
         for n, k, s, (lo, hi) in zip(x.shape[1:-1], window, stride, pad)]
  parts = [jax.lax.slice(
      xp, (0, *q, 0),
      (x.shape[0], *((o - 1) * s + qq + 1 for o, s, qq in zip(out, stride, q)),
       x.shape[-1]), (1,) + tuple(stride) + (1,))
           for q in offsets(window)]
  return jnp.stack(parts, axis=axis)


def unwindow(parts, shape, window, stride, pad):
  """The adjoint of :func:`windows`: ``dx[t] = sum_{p, q: s p + q = t +
  lo} parts[q][p]``, each part put back at its strided places in the padded
  input (``lax.pad``'s interior padding leaves the stride's gaps) and the
  padding cropped. ``parts``: ``K`` arrays ``(m, *P, c)`` in the order of
  :func:`offsets`; ``shape``: the input's ``(m, *spatial, c)``."""
  dxp = 0
  for part, q in zip(parts, offsets(window)):
    # After-padding: the padded length n + lo + hi, less what precedes and
    # what the part covers ((P - 1) s + 1).
    dxp = dxp + jax.lax.pad(part, np.array(0, part.dtype), [
        (0, 0, 0),
        *((qq, n + lo + hi - qq - (o - 1) * s - 1, s - 1)
          for n, o, s, qq, (lo, hi) in zip(shape[1:-1], part.shape[1:-1],
                                           stride, q, pad)),
        (0, 0, 0)])
  return jax.lax.slice(dxp, (0, *(lo for lo, _ in pad), 0),
                       (shape[0], *(lo + n for n, (lo, _) in
                                    zip(shape[1:-1], pad)), shape[-1]))
