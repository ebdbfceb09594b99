"""The hand-written backprop against jax.grad and finite differences, and
the textbook two-layer sigmoid example written out in plain numpy."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet
from funcnet import activations, backprop, autodiff
from funcnet.errors import ConfigError, ShapeError, UnknownNameError
from helpers import quick_jit

HIDDEN = [n for n in activations.names() if n not in activations.OUTPUT_ONLY]
SMOOTH = [n for n in HIDDEN if not activations.get(n).kink]

# (loss, output activation) pairs that make sense: each loss with its
# canonical output, and the non-canonical ones that take the general
# delta_L = dC/da * f'(z) (or the softmax Jacobian) path.
PAIRS = [("mse", "identity"), ("mse", "sigmoid"), ("mse", "tanh"),
         ("mse", "softmax"), ("bce", "sigmoid"), ("bce", "softmax"),
         ("cross_entropy", "softmax"), ("cross_entropy", "identity")]


def _rel(a, b):
  a, b = np.ravel(a), np.ravel(b)
  return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300)


def _problem(key, depth, loss, out, hidden):
  """A random MLP of ``depth`` layers with random widths and batch size."""
  k_sizes, k_init, k_x, k_y = jax.random.split(key, 4)
  rng = np.random.default_rng(np.asarray(jax.random.key_data(k_sizes))[-1])
  sizes = [int(n) for n in rng.integers(1, 7, depth + 1)]
  if loss == "cross_entropy" or out == "softmax":
    sizes[-1] = max(sizes[-1], 2)
  m = int(rng.integers(1, 9))
  model = funcnet.mlp(sizes, activation=hidden, output_activation=out,
                      init="xavier")
  params = model.init(k_init, jnp.float64)
  # Perturb the zero biases so bias gradients are exercised off the origin.
  params = [{"W": p["W"], "b": p["b"] + 0.1 * jnp.arange(p["b"].size)}
            for p in params]
  x = jax.random.normal(k_x, (m, sizes[0]), jnp.float64)
  if loss == "cross_entropy":
    y = jax.random.randint(k_y, (m,), 0, sizes[-1])
  else:
    y = jax.random.uniform(k_y, (m, sizes[-1]), jnp.float64, 0.05, 0.95)
  return model, params, x, y


def _fd(model, loss, params, x, y, n_entries, h=1e-6):
  """Central differences of C on the first ``n_entries`` of every array."""
  f = autodiff.loss_fn(model, loss)
  out = []
  for l, layer in enumerate(params):
    row = {}
    for name, arr in layer.items():
      flat = np.asarray(arr).ravel()
      vals = []
      for k in range(min(n_entries, flat.size)):
        def shifted(d):
          p = [dict(q) for q in params]
          g = flat.copy()
          g[k] += d
          p[l][name] = jnp.asarray(g.reshape(arr.shape))
          return float(f(p, x, y))
        vals.append((shifted(h) - shifted(-h)) / (2 * h))
      row[name] = np.array(vals)
    out.append(row)
  return out


def _diagonal(hiddens, pairs, *extra):
  """The cross product of ``hiddens`` and ``pairs`` (and each of ``extra``),
  all but a diagonal marked slow: the fast suite still meets every
  activation and every (loss, output) pair, the full run every combination."""
  fast = {(h, pairs[i % len(pairs)]) for i, h in enumerate(hiddens)}
  fast |= {(hiddens[j % len(hiddens)], p) for j, p in enumerate(pairs)}
  cases = []
  for h in hiddens:
    for p in pairs:
      for e in (itertools.product(*extra) if extra else [()]):
        slow = (h, p) not in fast or (extra and e != tuple(x[-1] for x in extra))
        cases.append(pytest.param(h, *p, *e,
                                  marks=[pytest.mark.slow] if slow else []))
  return cases


@pytest.mark.parametrize("hidden, loss, out", _diagonal(HIDDEN, PAIRS))
def test_manual_equals_autodiff_every_activation_loss_and_depth(
    hidden, loss, out, getkey, x64):
  problems = [_problem(getkey(), depth, loss, out, hidden)
               for depth in range(1, 6)]

  def both(args):
    return [(backprop.value_and_grad(m, loss)(*a),
             autodiff.value_and_grad(m, loss)(*a))
            for (m, *_), a in zip(problems, args)]

  # One program for the five depths, manual and autodiff side by side:
  # eager float64 ops on random shapes dominated the suite's time, then a
  # compilation per depth and source did (10 per case, 68 cases in the
  # full suite; one each cuts the case's CPU time by a quarter to a third).
  # The eager path is the finite-difference test's jit=False cases. That
  # one program compiles quick (the fast loop's options, in the full suite
  # too: 117 -> 48 s for the 72 cases in one process); the same check at
  # XLA's defaults is test_manual_equals_autodiff_under_jit, every activation.
  results = quick_jit(both, [p[1:] for p in problems])
  for depth, ((c_m, g_m), (c_a, g_a)) in enumerate(results, 1):
    np.testing.assert_allclose(c_m, c_a, rtol=1e-13)
    for l, (gm, ga) in enumerate(zip(g_m, g_a)):
      for name in ("W", "b"):
        assert _rel(gm[name], ga[name]) <= 1e-10, (depth, l, name)


@pytest.mark.parametrize("hidden, loss, out, jit",
                         _diagonal(SMOOTH, PAIRS, [False, True]))
def test_both_match_finite_differences_for_smooth_activations(
    hidden, loss, out, jit, getkey, x64):
  depth = 1 + int(jax.random.randint(getkey(), (), 0, 5))
  model, params, x, y = _problem(getkey(), depth, loss, out, hidden)
  vg_m = backprop.value_and_grad(model, loss)
  vg_a = autodiff.value_and_grad(model, loss)
  if jit:
    vg_m, vg_a = jax.jit(vg_m), jax.jit(vg_a)
  g_m, g_a = vg_m(params, x, y)[1], vg_a(params, x, y)[1]
  fd = _fd(model, loss, params, x, y, n_entries=4)
  for l in range(depth):
    for name in ("W", "b"):
      k = fd[l][name].size
      for g in (g_m, g_a):
        got = np.asarray(g[l][name]).ravel()[:k]
        assert _rel(got, fd[l][name]) <= 1e-6 or np.max(
            np.abs(got - fd[l][name])) <= 1e-9, (depth, l, name)


def test_textbook_two_layer_sigmoid_example_in_numpy(getkey, x64):
  """dz2 = a2 - y; dW2 = a1.T dz2/m; db2 = sum(dz2)/m;
  dz1 = (dz2 W2.T) * sigmoid'(z1); dW1 = X.T dz1/m; db1 = sum(dz1)/m."""
  n_in, n_h, n_out, m = 3, 4, 2, 7
  model = funcnet.mlp([n_in, n_h, n_out], activation="sigmoid",
                      output_activation="sigmoid", init="normal")
  params = model.init(getkey(), jnp.float64)
  X = np.asarray(jax.random.normal(getkey(), (m, n_in), jnp.float64))
  y = np.asarray(jax.random.bernoulli(getkey(), 0.5, (m, n_out)), np.float64)
  W1, b1 = np.asarray(params[0]["W"]), np.asarray(params[0]["b"])
  W2, b2 = np.asarray(params[1]["W"]), np.asarray(params[1]["b"])

  sig = lambda z: 1 / (1 + np.exp(-z))
  z1 = X @ W1 + b1
  a1 = sig(z1)
  z2 = a1 @ W2 + b2
  a2 = sig(z2)
  cost = -np.mean(np.sum(y * np.log(a2) + (1 - y) * np.log(1 - a2), axis=1))
  dz2 = a2 - y
  dW2 = a1.T @ dz2 / m
  db2 = np.sum(dz2, axis=0) / m
  dz1 = (dz2 @ W2.T) * a1 * (1 - a1)
  dW1 = X.T @ dz1 / m
  db1 = np.sum(dz1, axis=0) / m

  c, grads = backprop.value_and_grad(model, "bce")(params, jnp.asarray(X),
                                                    jnp.asarray(y))
  np.testing.assert_allclose(c, cost, rtol=1e-13)
  for got, want in [(grads[0]["W"], dW1), (grads[0]["b"], db1),
                    (grads[1]["W"], dW2), (grads[1]["b"], db2)]:
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
  trace = backprop.forward(model, params, jnp.asarray(X))
  np.testing.assert_allclose(trace.zs[0], z1, rtol=1e-13)
  np.testing.assert_allclose(trace.activations[2], a2, rtol=1e-13)
  d = backprop.deltas(model, "bce", params, jnp.asarray(X), jnp.asarray(y))
  np.testing.assert_allclose(d[1], dz2, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(d[0], dz1, rtol=1e-12, atol=1e-15)


def test_dropout_backprop_uses_the_forward_masks(getkey, x64):
  model = funcnet.mlp([4, 6, 5, 3], activation="tanh",
                      output_activation="softmax", dropout=0.4)
  params = model.init(getkey(), jnp.float64)
  x = jax.random.normal(getkey(), (9, 4), jnp.float64)
  y = jnp.arange(9) % 3
  key = getkey()
  # jitted, as the diagonal test: eager, every op compiles on its own (4 s)
  c_m, g_m = jax.jit(backprop.value_and_grad(model, "cross_entropy"))(
      params, x, y, key)
  c_a, g_a = jax.jit(autodiff.value_and_grad(model, "cross_entropy"))(
      params, x, y, key)
  np.testing.assert_allclose(c_m, c_a, rtol=1e-13)
  for gm, ga in zip(jax.tree_util.tree_leaves(g_m), jax.tree_util.tree_leaves(g_a)):
    assert _rel(gm, ga) <= 1e-12
  # Evaluation (no key) is deterministic and differs from a dropped pass.
  np.testing.assert_array_equal(model.apply(params, x), model.apply(params, x))
  assert not np.allclose(model.apply(params, x), model.apply(params, x, key))


def test_float32_agrees_to_single_precision(getkey):
  model = funcnet.mlp([8, 16, 4], activation="relu", output_activation="softmax",
                      init="he")
  params = model.init(getkey())
  x = jax.random.normal(getkey(), (32, 8), jnp.float32)
  y = jnp.arange(32) % 4
  g_m = jax.jit(backprop.value_and_grad(model, "cross_entropy"))(params, x, y)[1]
  g_a = jax.jit(autodiff.value_and_grad(model, "cross_entropy"))(params, x, y)[1]
  assert g_m[0]["W"].dtype == jnp.float32
  for gm, ga in zip(jax.tree_util.tree_leaves(g_m), jax.tree_util.tree_leaves(g_a)):
    assert _rel(gm, ga) <= 1e-6


# --- clear errors for user mistakes ------------------------------------------

def _small():
  model = funcnet.mlp([3, 4, 2], activation="tanh", output_activation="softmax")
  return model, model.init(jax.random.key(0))


@pytest.mark.parametrize("vg", [backprop.value_and_grad, autodiff.value_and_grad])
def test_wrong_input_width(vg):
  model, params = _small()
  with pytest.raises(ShapeError, match="x has 5 features per example; this mlp expects 3"):
    vg(model, "cross_entropy")(params, jnp.zeros((4, 5)), jnp.zeros(4, int))


@pytest.mark.parametrize("vg", [backprop.value_and_grad, autodiff.value_and_grad])
def test_mismatched_batch_sizes(vg):
  model, params = _small()
  with pytest.raises(ShapeError, match="x has 4 examples but y has 3"):
    vg(model, "cross_entropy")(params, jnp.zeros((4, 3)), jnp.zeros(3, int))


@pytest.mark.parametrize("vg", [backprop.value_and_grad, autodiff.value_and_grad])
def test_labels_out_of_range(vg):
  model, params = _small()
  with pytest.raises(ShapeError, match=r"expected labels in \[0, 1\]"):
    vg(model, "cross_entropy")(params, jnp.zeros((2, 3)), jnp.array([0, 2]))


def test_unknown_names_and_softmax_on_a_hidden_layer():
  with pytest.raises(UnknownNameError, match="unknown activation 'sigmod'"):
    funcnet.mlp([2, 2], activation="sigmod")
  with pytest.raises(UnknownNameError, match="unknown initializer"):
    funcnet.mlp([2, 2], init="glorot")
  with pytest.raises(UnknownNameError, match="unknown loss"):
    backprop.value_and_grad(_small()[0], "focal")
  with pytest.raises(ConfigError, match="only on the output layer"):
    funcnet.mlp([2, 3, 2], activation="softmax")


def test_errors_are_value_errors_with_one_line():
  model, params = _small()
  with pytest.raises(ValueError) as err:
    model.apply(params, jnp.zeros((2, 7)))
  assert "\n" not in str(err.value)


# The main test above runs jitted too; here one activation in the fast loop.
@pytest.mark.parametrize("hidden", [
    pytest.param(h, marks=[] if h == "tanh" else [pytest.mark.slow])
    for h in HIDDEN])
def test_manual_equals_autodiff_under_jit(hidden, getkey, x64):
  for loss, out in [("cross_entropy", "softmax"), ("bce", "sigmoid"), ("mse", "tanh")]:
    model, params, x, y = _problem(getkey(), 3, loss, out, hidden)
    g_m = jax.jit(backprop.value_and_grad(model, loss))(params, x, y)[1]
    g_a = jax.jit(autodiff.value_and_grad(model, loss))(params, x, y)[1]
    for gm, ga in zip(jax.tree_util.tree_leaves(g_m), jax.tree_util.tree_leaves(g_a)):
      assert _rel(gm, ga) <= 1e-10


def test_a_model_without_a_hand_written_backward_is_a_one_line_config_error():
  from funcnet import train
  model = funcnet.models.cnn((12,), 3, channels=[2])._replace(backward=None)
  for make in (lambda: backprop.value_and_grad(model, "cross_entropy"),
               lambda: train.gradient_fn(model, "cross_entropy", "manual")):
    with pytest.raises(ConfigError, match="does not cover model kind 'cnn' yet; "
                       "expected grads = 'autodiff'") as err:
      make()
    assert "\n" not in str(err.value)
