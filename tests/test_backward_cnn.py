"""The CNN's hand-written backward (funcnet/models/cnn.py) against
``jax.grad`` and finite differences, and its forward against plain numpy.

Three configurations: an MNIST-1D-like 1-D net (40 samples, channels
[8, 16], max pool 2, flattened, a hidden dense layer), a digits-like 2-D
net (64 pixels as 8 x 8, global average pool, a hidden dense layer), and a
1-D net on a two-channel signal (stride 2, VALID, even kernel, average
pool, tanh); all with dropout. Float64, jitted.
"""

import functools
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import autodiff, backprop, gradcheck
from funcnet.models import cnn
from helpers import rel

pytestmark = pytest.mark.usefixtures("x64")

M = 4  # examples per batch

CASES = {
    "1d_mnist1d_like": (
        lambda: cnn((40,), 10, channels=[8, 16], pool=2, global_pool=False,
                    hidden=[6], dropout=0.3),
        (40,)),
    "2d_digits_like": (
        lambda: cnn((64,), 10, image_shape=(8, 8), channels=[4, 6],
                    global_pool=True, hidden=[5], dropout=0.2),
        (64,)),
    "1d_channels_valid_stride_avg_tanh": (
        lambda: cnn((12, 2), 3, channels=[3], kernel_size=4, stride=2,
                    padding="VALID", pool=2, pool_type="avg",
                    global_pool=False, hidden=[3], activation="tanh",
                    dropout=0.5, conv_dims=1),
        (12, 2)),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
  with jax.enable_x64(True):
    return _build(request.param)


def _build(name):
  """A model, random float64 params off their init (non-zero biases) and
  data."""
  make, x_shape = CASES[name]
  model = make()
  rng = np.random.default_rng(0)
  shapes = jax.eval_shape(functools.partial(model.init, dtype=jnp.float64),
                          jax.random.key(0))
  params = jax.tree_util.tree_map(
      lambda s: 0.5 * rng.normal(size=s.shape), shapes)
  return types.SimpleNamespace(
      name=name, model=model, params=params,
      x=rng.normal(size=(M, *x_shape)), y=rng.integers(0, model.n_out, M))


@pytest.mark.parametrize("name", ["1d_mnist1d_like", "2d_digits_like"])
def test_gradient_check_has_the_manual_column(name):
  """Without a key: manual vs autodiff on every entry (jitted inside
  ``compare``), both vs finite differences (relu and max-pool kinks skipped
  by the one-sided test)."""
  case = _build(name)
  report = gradcheck.compare(case.model, "cross_entropy", case.params, case.x,
                             case.y, max_entries=4)
  assert report.manual
  assert report.ok(), str(report)
  assert all(r.manual_autodiff_rel <= 1e-10 for r in report.rows)


def test_manual_matches_autodiff_with_dropout(case):
  """Every leaf to 1e-10, jitted, with a key (dropout on; the test above
  covers no key). The manual forward draws the masks ``logits`` draws: the
  same loss shows it, other masks would give another."""
  manual = backprop.value_and_grad(case.model, "cross_entropy")
  auto = autodiff.value_and_grad(case.model, "cross_entropy")
  key = jax.random.key(3)
  (c_manual, g_manual), (c_auto, g_auto) = jax.jit(
      lambda p, x, y: (manual(p, x, y, key), auto(p, x, y, key)))(
          case.params, case.x, case.y)
  assert (jax.tree_util.tree_structure(g_manual)
          == jax.tree_util.tree_structure(case.params))
  assert abs(float(c_manual) - float(c_auto)) <= 1e-12 * abs(float(c_auto))
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_manual),
                          jax.tree_util.tree_leaves(g_auto)):
    assert rel(a, b) <= 1e-10, jax.tree_util.keystr(path)
  # the key did switch dropout on: the loss without it (numpy) differs
  z = np_cnn(case.model.spec, case.params, case.x)
  z = z - z.max(axis=1, keepdims=True)
  c_eval = np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(M), case.y])
  assert abs(c_eval - float(c_manual)) > 1e-6


# --- the forward in plain numpy -------------------------------------

def np_conv(x, w, b, stride, padding):
  """``y[m, p, o] = b[o] + sum_{q, i} W[q, i, o] xp[m, s p + q, i]``, by a
  loop over output positions; ``xp`` padded as XLA pads (low = total // 2)."""
  nd = w.ndim - 2
  k = w.shape[:nd]
  pads, out = [], []
  for n, kk in zip(x.shape[1:-1], k):
    if padding == "VALID":
      out.append((n - kk) // stride + 1)
      pads.append((0, 0))
    else:
      out.append(math.ceil(n / stride))
      total = max((out[-1] - 1) * stride + kk - n, 0)
      pads.append((total // 2, total - total // 2))
  xp = np.pad(x, [(0, 0), *pads, (0, 0)])
  y = np.zeros((x.shape[0], *out, w.shape[-1]))
  for p in np.ndindex(*out):
    window = xp[(slice(None),) + tuple(
        slice(pp * stride, pp * stride + kk) for pp, kk in zip(p, k))]
    y[(slice(None),) + p] = np.tensordot(
        window, w, axes=(list(range(1, nd + 2)), list(range(nd + 1)))) + b
  return y


def np_pool(a, k, kind):
  """Non-overlapping windows of ``k`` on every spatial axis (VALID)."""
  nd = a.ndim - 2
  out = [n // k for n in a.shape[1:-1]]
  y = np.zeros((a.shape[0], *out, a.shape[-1]))
  reduce = np.max if kind == "max" else np.mean
  for p in np.ndindex(*out):
    window = a[(slice(None),) + tuple(slice(pp * k, pp * k + k) for pp in p)]
    y[(slice(None),) + p] = reduce(window, axis=tuple(range(1, nd + 1)))
  return y


NP_ACT = {"relu": lambda z: np.maximum(z, 0.0), "tanh": np.tanh}


def np_cnn(spec, p, x):
  """The module docstring's network, layer by layer in numpy."""
  f = NP_ACT[spec["activation"]]
  shape = tuple(spec["image_shape"] or spec["in_shape"])
  a = np.asarray(x).reshape((x.shape[0],) + shape)
  if len(shape) == spec["conv_dims"]:
    a = a[..., None]
  for layer in p["conv"]:
    a = f(np_conv(a, layer["W"], layer["b"], spec["stride"], spec["padding"]))
    if spec["pool"] > 1:
      a = np_pool(a, spec["pool"], spec["pool_type"])
  h = (a.mean(axis=tuple(range(1, a.ndim - 1))) if spec["global_pool"]
       else a.reshape(a.shape[0], -1))
  for layer in p["dense"][:-1]:
    h = f(h @ layer["W"] + layer["b"])
  return h @ p["dense"][-1]["W"] + p["dense"][-1]["b"]


def test_forward_matches_numpy(case):
  z = jax.jit(case.model.logits)(case.params, case.x)
  np.testing.assert_allclose(z, np_cnn(case.model.spec, case.params, case.x),
                             rtol=1e-12, atol=1e-12)


def test_forward_matches_numpy_with_max_pool_in_2d_and_flatten():
  # The cases above pool 2-D only globally; here a 2-D max pool, SAME with an
  # even kernel (padded after only), stride 1, flattened.
  model = cnn((6, 7, 2), 3, channels=[3], kernel_size=2, pool=2,
              global_pool=False, hidden=[4])
  rng = np.random.default_rng(1)
  params = jax.tree_util.tree_map(
      lambda s: rng.normal(size=s.shape),
      jax.eval_shape(functools.partial(model.init, dtype=jnp.float64),
                     jax.random.key(0)))
  x = rng.normal(size=(3, 6, 7, 2))
  np.testing.assert_allclose(jax.jit(model.logits)(params, x),
                             np_cnn(model.spec, params, x),
                             rtol=1e-12, atol=1e-12)
