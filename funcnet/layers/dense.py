"""Dense (fully connected) layers: ``y = x @ W + b``, and an elementwise
activation ``a = f(z)``, each with its hand-written backward.

Layer contract of every family in :mod:`funcnet.layers` (the hand-written
path; no autodiff):

  y, cache  = foo_forward(params, x, ...)      the forward, keeping what the
                                               backward needs and no more
  dx, grads = foo_backward(params, cache, dy)  dy = dC/dy, dx = dC/dx,
                                               grads = dC/dparams (params' shape)

Parameter-free layers drop ``params`` (``foo_forward(x, ...)``,
``foo_backward(cache, dy) -> dx``). ``dy`` already carries the batch mean's
``1/m`` (:func:`funcnet.backprop.loss_and_delta`), so a backward sums over
the batch and never divides by ``m``. ``foo(params, x)`` is
``foo_forward(...)[0]``: one forward, and under ``jit`` the unused cache
costs nothing.
"""

import jax.numpy as jnp

from funcnet import initializers


def dense_init(key, n_in: int, n_out: int, dtype=jnp.float32, init="xavier"):
  """``{"W": (n_in, n_out), "b": (n_out,)}``; ``W`` by the named initialiser, ``b = 0``."""
  return {"W": initializers.get(init)(key, (n_in, n_out), dtype),
          "b": jnp.zeros((n_out,), dtype)}


def dense_forward(params, x):
  """``y = x @ W + b``, ``(..., n_in) -> (..., n_out)``; the cache is ``x``.

  The leading axes are one row axis for the product, ``(N, n_in) @ (n_in,
  n_out)`` with ``N`` their size, as :func:`dense_backward` takes ``dW``:
  ``jax.grad`` of ``(m, T, n_in) @ W`` contracts ``dW = x^T dy`` over two
  batch axes, which XLA:CPU compiled to a copy of ``dy`` transposed and a
  product outside its fast (YNNPACK) kernels; of the 2-D product it is one
  matrix product. A no-op for ``(m, n_in)``.
  """
  w = params["W"]
  y = x.reshape(-1, x.shape[-1]) @ w
  return y.reshape(x.shape[:-1] + w.shape[-1:]) + params["b"], x


def dense_backward(params, x, dy):
  """The dense layer's backward (BP2-BP4 of :mod:`funcnet.backprop`).

  With ``dy = dC/dy: (..., n_out)`` and every leading axis a batch axis:

    dx = dy @ W.T                         (..., n_in)      passed back (BP2)
    dW = sum over rows of x^T dy          (n_in, n_out)    (BP4)
    db = sum over rows of dy              (n_out,)         (BP3)

  Returns ``(dx, {"W": dW, "b": db})``.
  """
  x2 = x.reshape(-1, x.shape[-1])
  dy2 = dy.reshape(-1, dy.shape[-1])
  return (dy @ params["W"].T,
          {"W": x2.T @ dy2, "b": jnp.sum(dy2, axis=0)})


def dense(params, x):
  """``x @ W + b``: ``(..., n_in) -> (..., n_out)``."""
  return dense_forward(params, x)[0]


def activation_forward(act, z):
  """``a = f(z)`` for an elementwise :class:`funcnet.activations.Activation`;
  the cache is ``(z, a)`` (``f'`` is cheapest from either, by activation)."""
  a = act.f(z)
  return a, (z, a)


def activation_backward(act, cache, da):
  """``dz = da * f'(z)``, elementwise (the ``* f'(z_l)`` of BP2)."""
  z, a = cache
  return da * act.df(z, a)
