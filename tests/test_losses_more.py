"""The robust regression losses (mae, huber) and the multi-class hinge loss:
values against numpy formulas, hand-written derivatives against jax.grad and
finite differences, hinge against a loop-by-loop numpy SVM loss (CS231n's
``svm_loss_naive`` on the scores), the MLP's hand-written backprop with each,
and training runs through the command line."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet
from funcnet import autodiff, backprop, cli, losses
from funcnet.errors import ShapeError
from helpers import central_differences

NEW = ["mae", "huber", "hinge"]


def _rel(a, b):
  a, b = np.ravel(np.asarray(a)), np.ravel(np.asarray(b))
  return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b),
                                     1e-300)


def _svm_naive(scores, labels):
  """CS231n's multi-class SVM loss, loop by loop, on the scores: the batch
  mean of sum_{j != y_i} max(0, s_j - s_{y_i} + 1) and its gradient."""
  m, n = scores.shape
  loss, ds = 0.0, np.zeros_like(scores)
  for i in range(m):
    for j in range(n):
      if j == labels[i]:
        continue
      margin = scores[i, j] - scores[i, labels[i]] + 1
      if margin > 0:
        loss += margin
        ds[i, j] += 1
        ds[i, labels[i]] -= 1
  return loss / m, ds / m


def _regression_data(rng, m=6, n=3):
  """Outputs and targets whose residuals stay away from the kinks of mae
  (0) and from huber's seam (|r| = 1), with some beyond it."""
  y = rng.normal(size=(m, n))
  r = rng.choice([-1, 1], (m, n)) * rng.uniform(0.1, 2.5, (m, n))
  r[np.abs(np.abs(r) - 1) < 0.05] += 0.1
  return y + r, y


def _hinge_data(rng, m=6, n=4):
  """Scores with every margin 1 + s_j - s_c at least 0.05 from 0."""
  labels = rng.integers(0, n, m)
  s = rng.normal(size=(m, n))
  for _ in range(10):
    marg = 1 + s - s[np.arange(m), labels][:, None]
    near = np.abs(marg) < 0.05
    near[np.arange(m), labels] = False
    if not near.any():
      break
    s = s + 0.1 * near
  return s, labels


def test_values_match_numpy(x64):
  rng = np.random.default_rng(0)
  a, y = _regression_data(rng)
  r = a - y
  np.testing.assert_allclose(losses.mean("mae", "identity", a, y),
                             np.mean(np.abs(r).sum(-1)), rtol=1e-14)
  huber = np.where(np.abs(r) <= 1, 0.5 * r ** 2, np.abs(r) - 0.5)
  np.testing.assert_allclose(losses.mean("huber", "identity", a, y),
                             np.mean(huber.sum(-1)), rtol=1e-14)
  # After a tanh output, the loss of a = tanh(z).
  np.testing.assert_allclose(losses.mean("mae", "tanh", a, y),
                             np.mean(np.abs(np.tanh(a) - y).sum(-1)),
                             rtol=1e-14)
  s, labels = _hinge_data(rng)
  yt = losses.prepare_targets("hinge", labels, (len(labels), 4), jnp.float64)
  np.testing.assert_array_equal(yt, np.eye(4)[labels])
  np.testing.assert_allclose(losses.mean("hinge", "identity", s, yt),
                             _svm_naive(s, labels)[0], rtol=1e-14)


def test_huber_is_mse_near_the_target_and_mae_far_from_it(x64):
  # One residual per row: 0.3 and -0.8 inside the quadratic zone, 4 and -6
  # on the linear arms (|r| - 1/2), with slopes clipped to +-1.
  a = jnp.array([[0.3], [-0.8], [4.0], [-6.0]])
  y = jnp.zeros((4, 1))
  huber = losses.get("huber")
  np.testing.assert_allclose(huber.value(a, y), [0.045, 0.32, 3.5, 5.5],
                             rtol=1e-15)
  np.testing.assert_allclose(huber.grad(a, y)[:, 0], [0.3, -0.8, 1.0, -1.0],
                             rtol=1e-15)


def test_hinge_value_and_gradient_match_the_naive_svm_loss(x64):
  rng = np.random.default_rng(1)
  hinge = losses.get("hinge")
  for m, n in [(6, 4), (8, 10)]:
    s, labels = _hinge_data(rng, m, n)
    ref_loss, ref_ds = _svm_naive(s, labels)
    c, delta = jax.jit(lambda s, labels: backprop.loss_and_delta(
        funcnet.mlp([2, n]), "hinge", s, labels))(s, labels)
    np.testing.assert_allclose(c, ref_loss, rtol=1e-14)
    # loss_and_delta's dC/dz (1/m included) with the identity output.
    np.testing.assert_allclose(delta, ref_ds, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(hinge.grad(s, np.eye(n)[labels]), m * ref_ds,
                               rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("name", NEW)
def test_grad_matches_jax_grad_and_finite_differences(name, x64):
  loss = losses.get(name)
  rng = np.random.default_rng(2)
  if name == "hinge":
    a, labels = _hinge_data(rng)
    y = np.eye(a.shape[1])[labels]
  else:
    a, y = _regression_data(rng)
  g = np.asarray(loss.grad(jnp.asarray(a), jnp.asarray(y)))
  # jax.grad of the summed per-example value: row i's gradient is dC_i/da_i.
  auto = jax.grad(lambda a: jnp.sum(loss.value(a, jnp.asarray(y))))(
      jnp.asarray(a))
  assert _rel(g, auto) <= 1e-14
  value = jax.jit(loss.value)
  # rows are independent: d(sum_i C_i)/da[i, j] = dC_i/da[i, j]
  fd = central_differences(lambda b: float(np.sum(value(b, y))), a)
  assert _rel(g, fd) <= 1e-8


def test_subgradients_at_the_kinks(x64):
  # mae at a = y: sign(0) = 0, the middle of [-1, 1]. hinge with a margin
  # exactly met (s_1 = s_0 - 1): that class counts as satisfied, in grad and
  # in jax.grad of the value alike.
  mae, hinge = losses.get("mae"), losses.get("hinge")
  y = jnp.array([[1.5, -2.0, 0.0]])
  s = jnp.array([[2.0, 1.0, 1.5]])
  onehot = jnp.array([[1.0, 0.0, 0.0]])
  g_mae, g_hinge, auto_hinge = jax.jit(lambda y, s, onehot: (
      mae.grad(y, y), hinge.grad(s, onehot),
      jax.grad(lambda s: jnp.sum(hinge.value(s, onehot)))(s)))(y, s, onehot)
  np.testing.assert_array_equal(g_mae, [[0.0, 0.0, 0.0]])
  np.testing.assert_array_equal(g_hinge, [[-1.0, 0.0, 1.0]])
  np.testing.assert_array_equal(auto_hinge, g_hinge)


def test_pairs_targets_and_names():
  assert set(NEW) <= set(losses.names())
  for name in NEW:
    losses.check_pair(name, "identity")
  losses.check_pair("huber", "tanh")       # any output, like mse
  losses.check_pair("mae", "sigmoid")
  with pytest.raises(ShapeError, match="loss 'hinge' cannot follow output "
                     r"activation 'softmax'; expected output_activation in "
                     r"\['identity'\]"):
    losses.check_pair("hinge", "softmax")
  with pytest.raises(ShapeError, match=r"hinge labels .* must be integers"):
    losses.prepare_targets("hinge", jnp.array([0.0, 1.0]), (2, 3), jnp.float32)
  with pytest.raises(ShapeError, match=r"labels range over \[0, 3\]"):
    losses.prepare_targets("hinge", jnp.array([0, 3]), (2, 3), jnp.float32)
  # mae and huber take (m,) targets for one output, as mse does.
  assert losses.prepare_targets("huber", jnp.array([1.0, 2.0]), (2, 1),
                                jnp.float32).shape == (2, 1)


# (loss, output activation, hidden activation, dropout): mae and huber with
# the identity output and with one whose f' is not 1 (the general BP1);
# with dropout, also with a key (the same masks for both).
MLP_CASES = [("mae", "identity", "tanh", 0.0),
             ("huber", "sigmoid", "relu", 0.5),
             ("mae", "tanh", "sigmoid", 0.0),
             ("hinge", "identity", "tanh", 0.5)]


def test_mlp_manual_backprop_equals_autodiff(x64):
  """BP1-BP4 with each new loss against jax.grad: one compiled function."""
  rng = np.random.default_rng(3)
  problems = []
  for loss, out, hidden, rate in MLP_CASES:
    model = funcnet.mlp([3, 5, 3], activation=hidden, output_activation=out,
                        dropout=rate)
    params = jax.tree_util.tree_map(
        lambda s: 0.7 * rng.normal(size=s.shape),
        jax.eval_shape(model.init, jax.random.key(0)))
    x = rng.normal(size=(6, 3))
    y = (rng.integers(0, 3, 6) if loss == "hinge"
         else rng.normal(size=(6, 3)))
    problems.append((model, loss, params, x, y))

  @jax.jit
  def all_cases(args, key):
    out = {}
    for i, ((model, loss, *_), (params, x, y)) in enumerate(
        zip(problems, args)):
      for k in ((None, key) if model.spec["dropout"] else (None,)):
        out[MLP_CASES[i], k is None] = (
            backprop.value_and_grad(model, loss)(params, x, y, k),
            autodiff.value_and_grad(model, loss)(params, x, y, k))
    return out

  results = all_cases([(p, x, y) for *_, p, x, y in problems],
                      jax.random.key(4))
  assert len(results) == 6
  for case, ((c_m, g_m), (c_a, g_a)) in results.items():
    np.testing.assert_allclose(c_m, c_a, rtol=1e-13, err_msg=str(case))
    for a, b in zip(jax.tree_util.tree_leaves(g_m),
                    jax.tree_util.tree_leaves(g_a)):
      assert _rel(a, b) <= 1e-10, case


def _train(tmp_path, name, *overrides):
  out = tmp_path / name
  code = cli.main(["train", "--out", str(out), "--set", "run.plots=false",
                   *sum((["--set", o] for o in overrides), [])])
  assert code == 0
  with open(out / "summary.json") as f:
    summary = json.load(f)
  with open(out / "metrics.jsonl") as f:
    return summary, [json.loads(line) for line in f]


def test_huber_trains_on_regression(tmp_path):
  s, lines = _train(tmp_path, "huber", "data.name=regression",
                    "train.loss=huber", "model.mlp.output_activation=identity",
                    "train.epochs=2")
  assert s["status"] == "finished" and np.isfinite(s["test_rmse"])
  assert lines[-1]["train_loss"] < lines[0]["train_loss"]


def test_hinge_trains_on_digits(tmp_path):
  # With the hand-written gradients (manual = autodiff is tested above).
  s, lines = _train(tmp_path, "hinge", "train.loss=hinge",
                    "model.mlp.output_activation=identity", "train.epochs=2",
                    "train.grads=manual")
  assert s["status"] == "finished"
  assert lines[-1]["train_loss"] < lines[0]["train_loss"]
  assert s["test_accuracy"] > 0.5                       # chance is 0.1


@pytest.mark.slow
def test_hinge_on_digits_reaches_a_good_accuracy(tmp_path):
  s, _ = _train(tmp_path, "hinge", "train.loss=hinge",
                "model.mlp.output_activation=identity", "train.epochs=20")
  assert s["test_accuracy"] >= 0.93, s["test_accuracy"]


def test_a_loss_that_does_not_suit_the_task_is_refused(tmp_path, capsys):
  code = cli.main(["train", "--out", str(tmp_path / "r"), "--set",
                   "data.name=regression", "--set", "train.loss=hinge"])
  assert code != 0
  err = capsys.readouterr().err
  assert "'train.loss' = 'hinge' does not suit the regression data" in err
  assert "expected one of mse, mae, huber" in err
