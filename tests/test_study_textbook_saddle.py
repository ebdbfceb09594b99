"""The ``textbook`` study: run quick, its claim
asserted on the numbers it produced, against references written here (the
numpy equations, finite differences, closed forms of gradient descent)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import studies
from funcnet.models import mlp
from funcnet.studies import textbook_numpy
from funcnet.studies.textbook_numpy import SimpleNeuralNetwork


XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float64)
XOR_Y = np.array([[0], [1], [1], [0]], np.float64)


def _files(out, names):
  missing = [n for n in names if not os.path.isfile(os.path.join(out, n))]
  assert not missing, f"missing in {out}: {missing}"


# --- the numpy network, against finite differences ----------------------------

def _numeric_grad(loss, net, X, Y, h=1e-6):
  """Central differences of ``loss(net.forward(X), Y)`` in every weight."""
  grads = {}
  for name in textbook_numpy.PARAMS:
    w = getattr(net, name)
    g = np.zeros_like(w)
    for i in np.ndindex(w.shape):
      old = w[i]
      w[i] = old + h
      up = loss(net.forward(X), Y)
      w[i] = old - h
      down = loss(net.forward(X), Y)
      w[i] = old
      g[i] = (up - down) / (2 * h)
    grads[name] = g
  return grads


def test_numpy_backward_is_the_bce_gradient_and_not_the_mse_one():
  rng = np.random.default_rng(3)
  X = rng.standard_normal((7, 3))
  Y = (rng.random((7, 2)) < 0.5).astype(np.float64)
  net = SimpleNeuralNetwork(rng.standard_normal((3, 4)), rng.standard_normal(4),
                            rng.standard_normal((4, 2)), rng.standard_normal(2))
  fd_bce = _numeric_grad(textbook_numpy.bce, net, X, Y)
  fd_mse = _numeric_grad(textbook_numpy.mse, net, X, Y)
  net.forward(X)
  textbook = {k: v.copy() for k, v in net.backward(X, Y).items()}
  chain = net.backward_mse(X, Y)
  for name in textbook_numpy.PARAMS:
    np.testing.assert_allclose(textbook[name], fd_bce[name], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(chain[name], fd_mse[name], rtol=1e-6, atol=1e-9)
  # a2 - y is off the mse gradient by a factor 1 / (a2 (1 - a2)) >= 4 at the
  # output: nowhere near rounding.
  off = np.linalg.norm(textbook["W2"] - fd_mse["W2"]) / np.linalg.norm(fd_mse["W2"])
  assert off > 1.0


def test_gradient_descent_steps_against_the_gradient():
  net = SimpleNeuralNetwork(np.ones((2, 3)), np.zeros(3), np.ones((3, 1)), np.zeros(1))
  before = {k: v.copy() for k, v in net.params().items()}
  net.forward(XOR_X)
  g = net.backward(XOR_X, XOR_Y)
  net.gradient_descent(0.5)
  for name in textbook_numpy.PARAMS:
    np.testing.assert_array_equal(net.params()[name], before[name] - 0.5 * g[name])


# --- the textbook study ---------------------------------------------------------

def _reference_run(params, iterations, lr, delta):
  """Full-batch gradient descent on XOR written out here: returns the loss
  before the last step (bce for delta "bce", mse otherwise)."""
  W1, b1 = np.asarray(params[0]["W"]), np.asarray(params[0]["b"])
  W2, b2 = np.asarray(params[1]["W"]), np.asarray(params[1]["b"])
  sig = lambda z: 1 / (1 + np.exp(-z))
  m = len(XOR_X)
  for _ in range(iterations):
    a1 = sig(XOR_X @ W1 + b1)
    a2 = sig(a1 @ W2 + b2)
    if delta == "bce":
      cost = -np.mean(XOR_Y * np.log(a2) + (1 - XOR_Y) * np.log(1 - a2))
      dz2 = a2 - XOR_Y
    else:
      cost = np.mean(0.5 * (a2 - XOR_Y) ** 2)
      dz2 = (a2 - XOR_Y) if delta == "textbook" else (a2 - XOR_Y) * a2 * (1 - a2)
    dz1 = (dz2 @ W2.T) * a1 * (1 - a1)
    W2, b2 = W2 - lr * a1.T @ dz2 / m, b2 - lr * dz2.sum(0) / m
    W1, b1 = W1 - lr * XOR_X.T @ dz1 / m, b1 - lr * dz1.sum(0) / m
  return cost


def test_textbook_study_numpy_manual_and_autodiff_agree(tmp_path, x64):
  r = studies.run("textbook", out=str(tmp_path), quick=True)
  p = r["params"]
  n, lr = p["iterations"], p["learning_rate"]
  _files(tmp_path, ["README.md", "table.md", "results.json", "loss.png", "param_diff.png"])
  with open(tmp_path / "results.json") as f:
    assert json.load(f)["bce"]["iterations_compared"] == n

  # bce: after every one of the n steps, the three sets of weights agree.
  bce = r["bce"]
  assert bce["iterations_compared"] == n >= 10
  for pair in ("numpy_vs_manual", "numpy_vs_autodiff", "manual_vs_autodiff"):
    assert bce["max_param_diff"][pair] < 1e-10, pair
  assert bce["final_loss"]["numpy"] < bce["initial_loss"]["numpy"]

  # The same run written out in this test, from funcnet's init for the seed.
  model = mlp([2, p["hidden"], 1], activation="sigmoid",
              output_activation="sigmoid", init="normal")
  params = model.init(jax.random.key(p["seed"]), jnp.float64)
  want = _reference_run(params, n, lr, "bce")
  for way in ("numpy", "manual", "autodiff"):
    assert abs(bce["final_loss"][way] - want) < 1e-10, way

  # mse: the chain-rule delta matches funcnet's mse gradient; a2 - y does not.
  mse = r["mse"]
  g = mse["initial_gradient"]
  assert g["mse_delta_vs_manual"] < 1e-10
  assert g["mse_delta_vs_autodiff"] < 1e-10
  assert g["textbook_delta_vs_manual_rel"] > 0.5
  assert g["textbook_delta_vs_manual"] > 1e3 * g["mse_delta_vs_manual"] + 1e-6
  assert mse["max_param_diff"]["numpy_vs_manual"] < 1e-10
  assert mse["max_param_diff"]["numpy_vs_autodiff"] < 1e-10
  assert mse["max_param_diff"]["textbook_delta_vs_manual"] > 1e-3
  want = _reference_run(params, n, lr, "mse")
  for way in ("numpy", "manual", "autodiff"):
    assert abs(mse["final_loss"][way] - want) < 1e-10, way
  assert abs(mse["final_loss"]["textbook"] - _reference_run(params, n, lr, "textbook")) < 1e-10
