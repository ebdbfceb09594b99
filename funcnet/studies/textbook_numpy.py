"""The article's two-layer sigmoid network in plain numpy, as the article writes it.

This is the reference the ``textbook`` study runs beside funcnet: no JAX, one
class holding its weights, a forward pass that caches what the backward pass
needs, and full-batch gradient descent. For ``m`` examples (row vectors):

  z1 = X @ W1 + b1     a1 = s(z1)       X: (m, n_in),  W1: (n_in, n_h),  b1: (n_h,)
  z2 = a1 @ W2 + b2    a2 = s(z2)       W2: (n_h, n_out),  b2: (n_out,),  a2: (m, n_out)

with ``s(z) = 1 / (1 + e^{-z})`` and ``s'(z) = s(z) (1 - s(z))``. The
backward pass is the chain rule written out, one line per equation:

  dz2 = dC_i/dz2                       output error, (m, n_out)
  dW2 = a1.T @ dz2 / m    db2 = sum_i dz2 / m
  dz1 = (dz2 @ W2.T) * a1 (1 - a1)     error passed back, (m, n_h)
  dW1 = X.T @ dz1 / m     db1 = sum_i dz1 / m

The article takes ``dz2 = a2 - y`` without naming a loss. That is the output
error of binary cross-entropy, ``C_i = -[y log a2 + (1 - y) log(1 - a2)]``,
whose ``dC_i/da2 = (a2 - y) / (a2 (1 - a2))`` cancels the sigmoid's
``s'(z2) = a2 (1 - a2)`` exactly (:meth:`SimpleNeuralNetwork.backward`). For
the squared error ``C_i = ||a2 - y||^2 / 2`` (funcnet's ``mse``, see
:mod:`funcnet.losses`) nothing cancels and the output error is
``dz2 = (a2 - y) a2 (1 - a2)`` (:meth:`SimpleNeuralNetwork.backward_mse`).

Unlike the article, ``backward`` returns the gradients instead of applying
them, so that a gradient can be compared before the step; the step is
:meth:`SimpleNeuralNetwork.gradient_descent`, ``w := w - eta dw``.
"""

import numpy as np

PARAMS = ("W1", "b1", "W2", "b2")
"""The weights of :class:`SimpleNeuralNetwork`, in funcnet's layer order."""


def sigmoid(z):
  return 1 / (1 + np.exp(-z))


def bce(a2, y) -> float:
  """``C = (1/m) sum_i -sum_j [y log a2 + (1 - y) log(1 - a2)]``."""
  return float(-np.mean(np.sum(y * np.log(a2) + (1 - y) * np.log(1 - a2), axis=1)))


def mse(a2, y) -> float:
  """``C = (1/m) sum_i ||a2 - y||^2 / 2``, funcnet's ``mse`` convention."""
  return float(np.mean(0.5 * np.sum((a2 - y) ** 2, axis=1)))


LOSSES = {"bce": bce, "mse": mse}


class SimpleNeuralNetwork:
  """Two sigmoid layers, trained by full-batch gradient descent.

  Args:
    W1, b1, W2, b2: the initial weights (copied), shapes as in the module
      docstring; the ``textbook`` study passes funcnet's ``mlp`` init.
  """

  def __init__(self, W1, b1, W2, b2):
    self.W1, self.b1 = np.array(W1, np.float64), np.array(b1, np.float64)
    self.W2, self.b2 = np.array(W2, np.float64), np.array(b2, np.float64)
    self.grads = None

  def forward(self, X):
    """``a2 (m, n_out)``; keeps ``a1`` and ``a2`` for the backward pass."""
    self.z1 = X @ self.W1 + self.b1
    self.a1 = sigmoid(self.z1)
    self.z2 = self.a1 @ self.W2 + self.b2
    self.a2 = sigmoid(self.z2)
    return self.a2

  def _backward(self, X, dz2):
    # Everything below the output error is the same for every loss.
    m = X.shape[0]
    dW2 = self.a1.T @ dz2 / m
    db2 = np.sum(dz2, axis=0) / m
    dz1 = (dz2 @ self.W2.T) * self.a1 * (1 - self.a1)    # s'(z1) from the cached a1
    dW1 = X.T @ dz1 / m
    db1 = np.sum(dz1, axis=0) / m
    self.grads = {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}
    return self.grads

  def backward(self, X, y):
    """The article's backward pass, ``dz2 = a2 - y``: the gradient of
    ``bce`` (sigmoid and cross-entropy cancel). Call :meth:`forward` first.
    Returns ``{"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}``."""
    return self._backward(X, self.a2 - y)

  def backward_mse(self, X, y):
    """The backward pass for ``mse``: ``dz2 = (a2 - y) s'(z2)``, the
    chain rule through the output sigmoid that ``a2 - y`` skips."""
    return self._backward(X, (self.a2 - y) * self.a2 * (1 - self.a2))

  def gradient_descent(self, learning_rate: float) -> None:
    """One step ``w := w - eta dw`` with the gradients of the last backward."""
    for name in PARAMS:
      setattr(self, name, getattr(self, name) - learning_rate * self.grads[name])

  def params(self) -> dict:
    """The current weights, ``{"W1": ..., "b1": ..., "W2": ..., "b2": ...}``."""
    return {name: getattr(self, name) for name in PARAMS}
