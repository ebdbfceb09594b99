"""The gradient check itself: it passes on correct gradients, catches a
wrong derivative in the layer where it is, and skips entries at kinks."""

import jax
import jax.numpy as jnp
import numpy as np

import funcnet
from funcnet import activations, gradcheck


def _setup(getkey, hidden="tanh", sizes=(4, 6, 5, 3)):
  model = funcnet.mlp(list(sizes), activation=hidden, output_activation="softmax")
  params = model.init(getkey())
  x = jax.random.normal(getkey(), (7, sizes[0]))
  y = jnp.arange(7) % sizes[-1]
  return model, params, x, y


def test_passes_on_correct_gradients_in_float64_from_float32_inputs(getkey):
  # No x64 fixture: float32 params and inputs, as users have them, and x64
  # off. The tolerances below (manual vs autodiff to 1e-12, finite
  # differences with h = 1e-6 to 1e-6) hold only in float64: a compare left
  # in float32 gets ~1e-7 and ~0.5 here, and fails. They pass because
  # compare switches to float64 itself; and it switches back.
  assert not jax.config.jax_enable_x64
  model, params, x, y = _setup(getkey)
  assert params[0]["W"].dtype == x.dtype == jnp.float32
  report = gradcheck.compare(model, "cross_entropy", params, x, y)
  assert not jax.config.jax_enable_x64
  assert report.ok(), str(report)
  assert [r.name for r in report.rows] == [
      "layer 1 W", "layer 1 b", "layer 2 W", "layer 2 b", "layer 3 W", "layer 3 b"]
  for r in report.rows:
    assert r.manual_autodiff_rel <= 1e-12
    assert r.fd_checked == min(32, int(np.prod(r.shape)))
  text = str(report)
  assert "layer 2 W" in text and text.rstrip().splitlines()[-1].startswith("OK")


def test_catches_a_wrong_derivative_and_names_the_layers(getkey, monkeypatch):
  model, params, x, y = _setup(getkey)
  act = activations.ACTIVATIONS["tanh"]
  # A classic slip: tanh' written as 1 - a instead of 1 - a^2.
  monkeypatch.setitem(activations.ACTIVATIONS, "tanh",
                      act._replace(df=lambda z, a: 1 - a))
  report = gradcheck.compare(model, "cross_entropy", params, x, y)
  assert not report.ok()
  bad = report.failures()
  # The output layer's gradient does not involve f'(z) of a hidden layer.
  assert not any(b.startswith("layer 3") for b in bad)
  assert any(b.startswith("layer 1 W: manual vs autodiff") for b in bad)
  assert any("manual vs finite differences" in b for b in bad)
  # autodiff differentiates the forward rule only, so it stays right.
  assert not any("autodiff vs finite" in b for b in bad)
  assert "FAILED" in str(report)


def test_relu_entries_straddling_a_kink_are_skipped(getkey, x64):
  model = funcnet.mlp([2, 3, 2], activation="relu", output_activation="softmax")
  params = model.init(getkey(), jnp.float64)
  # Place the first hidden unit's pre-activation within h of zero for the
  # first example: z = x W + b with b chosen to cancel x W.
  x = jnp.array([[1.0, 2.0], [0.3, -0.7], [-1.2, 0.4]])
  z0 = float((x[0] @ params[0]["W"])[0])
  params[0]["b"] = params[0]["b"].at[0].set(-z0 + 1e-9)
  y = jnp.array([0, 1, 1])
  report = gradcheck.compare(model, "cross_entropy", params, x, y, eps=1e-6)
  skipped = {r.name: r.fd_skipped for r in report.rows}
  assert skipped["layer 1 b"] >= 1 and skipped["layer 1 W"] >= 1
  assert report.ok(), str(report)
  assert "straddled a kink" in str(report)


def test_a_model_without_a_hand_written_backward_gets_autodiff_vs_fd_only(getkey):
  from funcnet import models
  model = models.cnn((12,), 3, channels=[2], kernel_size=3)._replace(backward=None)
  params = model.init(getkey())
  x = jax.random.normal(getkey(), (4, 12))
  report = gradcheck.compare(model, "cross_entropy", params, x, jnp.array([0, 1, 2, 0]))
  assert report.ok(), str(report)
  assert all(r.manual_autodiff_rel is None for r in report.rows)
  assert all(r.autodiff_fd_rel <= 1e-6 or r.autodiff_fd_abs <= 1e-9
             for r in report.rows)
