"""The ``vanishing-exploding`` study: run once, quick, and its claim
asserted on the numbers it produced, against references written here (a float64 numpy backprop, the
schedule equations in plain Python, the data's own sizes).

Each quick run spends most of its time compiling one small XLA program per
network or optimizer (a few seconds each on a loaded 2-core CPU), so the
runs are module fixtures shared by the tests that read them, and marked
slow; the tests that train nothing stay in the fast loop.
"""

import math
import os

import numpy as np
import pytest

from funcnet import config as config_lib, data, studies
from funcnet.errors import ConfigError
from funcnet.experiment import Setup


def _files(out, names):
  missing = [n for n in names if not os.path.isfile(os.path.join(out, n))]
  assert not missing, f"missing in {out}: {missing}"


def _common_files(out):
  _files(out, ["README.md", "table.md", "results.json"])
  with open(os.path.join(out, "README.md")) as f:
    readme = f.read()
  assert "**Claim.**" in readme and "**Measured.**" in readme


# --- vanishing-exploding ------------------------------------------------------------

@pytest.fixture(scope="module")
def vanishing(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("vanishing-exploding"))
  return studies.run("vanishing-exploding", out=out, quick=True)


def _numpy_layer_norms(params, x, y, activation):
  """``||dC/dW_l, dC/db_l||`` per layer by BP1-BP4 in float64 numpy: softmax
  output, batch-mean cross-entropy."""
  f, df = {"sigmoid": (lambda z: 1 / (1 + np.exp(-z)),
                       lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2),
           "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0) * 1.0)}[activation]
  Ws = [np.asarray(l["W"], np.float64) for l in params]
  bs = [np.asarray(l["b"], np.float64) for l in params]
  a, zs, acts = np.asarray(x, np.float64), [], []
  for i, (W, b) in enumerate(zip(Ws, bs)):
    acts.append(a)
    z = a @ W + b
    zs.append(z)
    a = f(z) if i < len(Ws) - 1 else z
  p = np.exp(a - a.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  m = len(y)
  delta = (p - np.eye(p.shape[1])[y]) / m                 # BP1, with the 1/m
  norms = [0.0] * len(Ws)
  for l in range(len(Ws) - 1, -1, -1):
    norms[l] = math.sqrt(np.sum((acts[l].T @ delta) ** 2) + np.sum(delta.sum(0) ** 2))
    if l:
      delta = (delta @ Ws[l].T) * df(zs[l - 1])           # BP2
  return norms


@pytest.mark.slow
def test_vanishing_exploding_writes_its_report(vanishing):
  out = vanishing["out"]
  _common_files(out)
  _files(out, ["gradient_by_layer.png", "clipping.png", "through_time.png"])


@pytest.mark.slow
def test_sigmoid_vanishes_and_he_keeps_every_layer_within_10x(vanishing):
  layers = vanishing["per_layer"]
  depth = vanishing["params"]["depth"]
  assert depth == 10
  for r in layers.values():
    assert len(r["init"]["manual"]) == depth + 1
  ratio = lambda name: np.asarray(layers[name]["init"]["manual"]) / \
      layers[name]["init"]["manual"][-1]
  # Sigmoid with Xavier weights: about 4x less per layer (f' <= 1/4).
  assert ratio("sigmoid/xavier")[0] < 1e-3
  # Standard-normal weights partly offset f' <= 1/4 (||W|| ~ sqrt(32)):
  # it still vanishes, by ~0.016 at depth 10, not 1e-3.
  assert ratio("sigmoid/normal")[0] < 0.1
  he = ratio("relu/he")
  assert np.all((he > 0.1) & (he < 10)), he
  # relu/normal explodes: the error grows back to the input, and every
  # weight gradient is orders of magnitude above relu/he's.
  assert layers["relu/normal"]["delta_first_over_last"] > 1e3
  assert (layers["relu/normal"]["init"]["manual"][-1]
          > 1e3 * layers["relu/he"]["init"]["manual"][-1])


@pytest.mark.slow
def test_manual_and_autodiff_layer_norms_agree(vanishing):
  for name, r in vanishing["per_layer"].items():
    m, a = np.asarray(r["init"]["manual"]), np.asarray(r["init"]["autodiff"])
    np.testing.assert_allclose(m, a, rtol=1e-10, err_msg=name)
    assert r["init"]["max_rel_diff"] < 1e-10, name
  assert vanishing["max_rel_diff_manual_autodiff"] < 1e-10


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sigmoid/xavier", "relu/he"])
def test_layer_norms_match_a_numpy_backprop(vanishing, name):
  p = vanishing["params"]
  activation, init = name.split("/")
  setup = Setup(config_lib.load(None, [
      f'data.name="{p["data"]}"', f"seed={p['seed']}",
      f"model.mlp.hidden={[p['width']] * p['depth']}",
      f'model.mlp.activation="{activation}"', f'model.mlp.init="{init}"']))
  params, _ = setup.init_state()
  x, y = setup.ds.x_train[:p["batch"]], setup.ds.y_train[:p["batch"]]
  want = _numpy_layer_norms(params, x, y, activation)
  np.testing.assert_allclose(vanishing["per_layer"][name]["init"]["manual"],
                             want, rtol=1e-9)


@pytest.mark.slow
def test_clipping_keeps_the_exploding_net_finite(vanishing):
  runs = list(vanishing["clipping"].values())
  unclipped, clipped = runs[0], runs[1]
  assert unclipped["clip_norm"] == 0 and clipped["clip_norm"] > 0
  assert unclipped["status"] == "diverged"
  assert clipped["status"] == "done"
  loss = clipped["train_loss"]
  assert all(math.isfinite(v) for v in loss)
  assert loss[-1] < loss[0]


@pytest.mark.slow
def test_gru_gradient_through_time(vanishing):
  rnn, gru = vanishing["recurrent"]["rnn"], vanishing["recurrent"]["gru"]
  assert len(rnn["init"]) == len(gru["init"]) == 40    # mnist1d: 40 steps
  # At init (zero gate biases, u_t ~ 1/2) the GRU's gradient fades faster
  # than the tanh RNN's ...
  assert gru["first_over_last"][0] < 1e-4 < 1e-3 < rnn["first_over_last"][0]
  # ... and one epoch of training opens its gated path back to t = 1.
  assert vanishing["params"]["rnn_epochs"] == 1
  assert gru["first_over_last"][-1] > 1e-2
  assert gru["first_over_last"][-1] > 1e3 * gru["first_over_last"][0]


def test_vanishing_exploding_rejects_a_malformed_config(tmp_path):
  with pytest.raises(ConfigError, match="activation/init"):
    studies.run("vanishing-exploding", out=str(tmp_path), quick=True,
                overrides=['configs=["relu"]'])


