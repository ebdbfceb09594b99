"""The task registry, and a per-position task that is one registry entry.

The per-position task lives in this file only (registered by a fixture,
removed afterwards): a bit string ``b`` of length ``T``, and at each
position ``t`` the parity of the running sum ``b_0 + ... + b_t``. Its model,
also defined here, gives logits ``(m, T, 2)``: the same small MLP applied
to every position's features (the bit and the parity before it, so each
position is an XOR), with its own hand-written backward. It trains through
:func:`funcnet.train.fit` with no edit anywhere else: what it proves is that
labels ``(m, T)``, losses over every term, deltas divided by the number of
terms and an evaluation that reads the class axis only are the library's.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import autodiff, backprop, config, data, losses, optimizers
from funcnet import tasks, train
from funcnet.errors import ShapeError, UnknownNameError
from funcnet.model import Model


# --- the registry -----------------------------------------------------------------

def test_the_built_in_tasks_and_what_each_declares():
  assert tasks.names()[:3] == ("classification", "regression", "ratings")
  c, r, ra = (tasks.get(n) for n in ("classification", "regression", "ratings"))
  assert c.losses[0] == "cross_entropy" and r.losses[0] == ra.losses[0] == "mse"
  assert tasks.headline("classification") == ("test_accuracy", True)
  assert tasks.headline("regression") == ("test_loss", False)
  assert tasks.headline("ratings") == ("test_loss", False)
  assert (c.standardize, r.standardize, ra.standardize) == (True, True, False)
  assert tasks.evaluated_keys("classification") == ("test_accuracy", "test_loss")
  assert tasks.evaluated_keys("ratings") == ("test_loss", "test_rmse", "test_mae")
  # output widths: classes (one sigmoid unit for two under bce), columns, 1
  assert c.n_outputs(10, (), "cross_entropy") == 10
  assert c.n_outputs(2, (), "bce") == 1 and c.n_outputs(3, (), "bce") == 3
  assert r.n_outputs(None, (4,), "mse") == 4 and ra.n_outputs(None, (), "mse") == 1
  # config's choices and doc lines are the registry's (a file declares any
  # task but the self-supervised one, whose targets [pretrain] makes)
  assert config.CHOICES["data.task"] == tuple(
      n for n in tasks.names() if n != tasks.SELF_SUPERVISED.name)
  assert config.DEFAULTS["data"]["task"] == tasks.DEFAULT
  for name in config.CHOICES["data.task"]:
    assert name in config.DOCS["data.task"]
    for loss in tasks.get(name).losses:
      assert loss in config.DOCS["train.loss"]


def test_lookups_and_registration_are_checked():
  with pytest.raises(UnknownNameError, match="unknown task 'ranking'; expected "
                     "one of: classification, language, ratings, regression"):
    tasks.get("ranking")
  with pytest.raises(ValueError, match="registered twice"):
    tasks.register(tasks.CLASSIFICATION._replace(losses=("mse",)))
  with pytest.raises(ValueError, match="headline 'f1'"):
    tasks.register(tasks.CLASSIFICATION._replace(name="x", headline="f1"))


def test_best_evaluation_follows_the_headline_and_its_direction():
  history = [{"epoch": 1, "train_loss": 1.0},
             {"epoch": 2, "test_loss": 0.5, "test_accuracy": 0.7, "lr": 0.1},
             {"epoch": 3, "test_loss": 0.4, "test_accuracy": 0.6},
             {"epoch": 4, "test_loss": 0.6, "test_accuracy": 0.7}]
  # the first of equal accuracies; for loss-headed tasks the lowest loss
  assert tasks.best(history, "classification") == {
      "epoch": 2, "test_loss": 0.5, "test_accuracy": 0.7}
  assert tasks.best(history, "regression")["epoch"] == 3
  assert tasks.best(history[:1], "regression") == {}


def test_the_task_of_a_record_is_read_off_its_keys():
  assert tasks.of_keys({"test_loss", "test_accuracy", "epoch"}) == "classification"
  assert tasks.of_keys({"test_loss", "test_rmse"}) == "regression"
  assert tasks.of_keys({"test_loss", "test_rmse", "test_mae"}) == "ratings"
  assert tasks.of_keys({"train_loss"}) is None


def test_a_dataset_summary_and_width_come_from_its_task():
  ds = data.load("regression", n=40, n_features=3)
  assert data.n_outputs(ds) == 1
  assert data.summary(ds).endswith(", 1 targets")
  ds = data.load("xor")
  assert data.n_outputs(ds, "bce") == 1 and data.n_outputs(ds) == 2
  assert data.summary(ds).endswith(", 2 classes")


# --- targets with positions ----------------------------------------------------------

def test_labels_one_axis_short_of_the_logits_are_labels_even_when_t_equals_v(x64):
  # (m, T) = (2, 3) labels of (2, 3, 3) logits: T == V, still labels
  y = np.array([[2, 0, 1], [1, 1, 0]])
  rows = losses.prepare_targets("cross_entropy", y, (2, 3, 3), jnp.float64)
  np.testing.assert_array_equal(rows, np.eye(3)[y])
  # with (m, V) logits a (m, V) array is one-hot rows, cast, never labels
  rows = losses.prepare_targets("cross_entropy", np.eye(3)[[1, 2]], (2, 3),
                                jnp.float64)
  np.testing.assert_array_equal(rows, np.eye(3)[[1, 2]])
  # rows of the logits' rank are only cast
  onehot = np.eye(3)[y]
  np.testing.assert_array_equal(
      losses.prepare_targets("cross_entropy", onehot, (2, 3, 3), jnp.float64),
      onehot)
  # one output per position: (m, T) values gain the output axis
  assert losses.prepare_targets("mse", np.ones((2, 3)), (2, 3, 1),
                                jnp.float64).shape == (2, 3, 1)


@pytest.mark.parametrize("y, shape, msg", [
    (np.array([[0, 1], [2, 3]]), (2, 2, 3), r"labels range over \[0, 3\]"),
    (np.zeros((2, 4), np.int32), (2, 3, 3), r"targets have shape \(2, 4\); "
                                             r"expected \(2, 3, 3\)"),
    (np.zeros((2, 3)), (2, 3, 3), "must be integers"),
    (np.zeros((3, 3), np.int32), (2, 3, 3), "x has 2 examples but y has 3"),
])
def test_bad_targets_with_positions_raise_one_line(y, shape, msg):
  with pytest.raises(ShapeError, match=msg) as err:
    losses.prepare_targets("cross_entropy", y, shape, jnp.float32)
  assert "\n" not in str(err.value)


def test_the_loss_averages_over_every_term_and_the_delta_divides_by_their_number(x64):
  rng = np.random.default_rng(0)
  z = jnp.asarray(rng.normal(size=(4, 5, 3)))
  y = rng.integers(0, 3, size=(4, 5))
  # an independent reference: softmax cross-entropy of every (i, t), averaged
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  want = -np.mean(np.take_along_axis(np.asarray(logp), y[..., None], -1))
  model = Model(None, None, "softmax", (5,), 3, {"kind": "test"})
  c, dz = backprop.loss_and_delta(model, "cross_entropy", z, y)
  np.testing.assert_allclose(c, want, rtol=1e-12)
  p = np.exp(np.asarray(logp))
  np.testing.assert_allclose(dz, (p - np.eye(3)[y]) / 20, rtol=1e-12)


def test_accuracy_takes_the_argmax_over_the_class_axis_only(x64):
  # (m, T, V) = (2, 3, 3): an argmax over time would give other predictions
  z = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, 3)))
  y = np.array([[0, 1, 2], [2, 2, 0]])
  acc = tasks.get("classification").metrics(z, z, jnp.asarray(y), None)
  want = np.mean(np.argmax(np.asarray(z), axis=2) == y)
  np.testing.assert_allclose(acc["accuracy"], want)


# --- a per-position task, registered here only --------------------------------------

T = 6


def _parity_metrics(z, a, y, yt):
  """Per-position accuracy and whole-sequence accuracy of ``z (m, T, 2)``."""
  right = jnp.argmax(z, -1) == y
  return {"position_accuracy": jnp.mean(right),
          "sequence_accuracy": jnp.mean(jnp.all(right, axis=-1))}


@pytest.fixture
def parity_task():
  task = tasks.register(tasks.Task(
      "running_parity", ("cross_entropy",),
      lambda n_classes, label_shape, loss: 2, _parity_metrics,
      ("position_accuracy", "sequence_accuracy"), "sequence_accuracy", True,
      classes=True, label_doc="(m, T) parities of the running sum"))
  yield task
  tasks.unregister(task.name)


class _Bits:
  """Bit strings and the parity of each prefix; each position's features
  are ``(b_t, parity before t)``, so every position is an XOR."""

  def __init__(self, m, seed):
    b = np.random.default_rng(seed).integers(0, 2, size=(m, T))
    parity = np.cumsum(b, axis=1) % 2
    before = np.concatenate([np.zeros((m, 1), int), parity[:, :-1]], axis=1)
    self.x = np.stack([b, before], axis=-1).astype(np.float64)  # (m, T, 2)
    self.y = parity.astype(np.int32)                             # (m, T)


def _per_position_mlp(hidden: int) -> Model:
  """``z[:, t] = tanh(x[:, t] @ W1 + b1) @ W2 + b2``: logits ``(m, T, 2)``."""

  def init(key, dtype=jnp.float32):
    k1, k2 = jax.random.split(key)
    return {"W1": jax.random.normal(k1, (2, hidden), dtype),
            "b1": jnp.zeros((hidden,), dtype),
            "W2": jax.random.normal(k2, (hidden, 2), dtype) / np.sqrt(hidden),
            "b2": jnp.zeros((2,), dtype)}

  def logits(params, x, key=None):
    h = jnp.tanh(x @ params["W1"] + params["b1"])
    return h @ params["W2"] + params["b2"]

  def backward(model, loss):
    def value_and_grad(params, x, y, key=None):
      h = jnp.tanh(x @ params["W1"] + params["b1"])              # (m, T, H)
      z = h @ params["W2"] + params["b2"]                        # (m, T, 2)
      c, dz = backprop.loss_and_delta(model, loss, z, y)         # 1/(m T) in it
      dh = (dz @ params["W2"].T) * (1 - h ** 2)                  # BP2
      return c, {"W2": jnp.einsum("mth,mtk->hk", h, dz),          # BP4
                 "b2": dz.sum((0, 1)),                           # BP3
                 "W1": jnp.einsum("mtf,mth->fh", x, dh),
                 "b1": dh.sum((0, 1))}
    return value_and_grad

  return Model(init, logits, "softmax", (T, 2), 2,
               {"kind": "per_position_mlp", "hidden": hidden}, backward=backward)


class _Data:
  def __init__(self, train_set, test_set, task):
    self.x_train, self.y_train = train_set.x, train_set.y
    self.x_test, self.y_test = test_set.x, test_set.y
    self.task = task


def test_manual_and_autodiff_gradients_agree_for_per_position_outputs(x64):
  model = _per_position_mlp(5)
  params = model.init(jax.random.key(0), jnp.float64)
  bits = _Bits(7, seed=1)
  # jitted, as the suite compiles a model once (eager float64 ops are slow)
  c_m, g_m = jax.jit(backprop.value_and_grad(model, "cross_entropy"))(
      params, bits.x, bits.y)
  c_a, g_a = jax.jit(autodiff.value_and_grad(model, "cross_entropy"))(
      params, bits.x, bits.y)
  np.testing.assert_allclose(c_m, c_a, rtol=1e-12)
  for k in params:
    np.testing.assert_allclose(g_m[k], g_a[k], rtol=1e-10, atol=1e-12)


def test_a_per_position_task_trains_through_fit_and_reports_its_own_metric(
    parity_task, x64):
  model = _per_position_mlp(8)
  ds = _Data(_Bits(256, seed=2), _Bits(64, seed=3), parity_task.name)
  runs = {g: train.fit(model, "cross_entropy", optimizers.adam(0.05), ds,
                       options=train.FitOptions(
                           epochs=40, batch_size=64, key=jax.random.key(4),
                           grads=g, dtype=jnp.float64))
          for g in ("manual", "autodiff")}
  manual, auto = runs["manual"], runs["autodiff"]
  for k in manual.state.params:   # the same training, step by step
    np.testing.assert_allclose(manual.state.params[k], auto.state.params[k],
                               rtol=1e-10,
                               atol=1e-10)
  last = manual.history[-1]
  assert set(k for k in last if k.startswith("test_")) == set(
      tasks.evaluated_keys(parity_task.name))
  # the metric, recomputed here from the trained params
  z = np.asarray(model.logits(manual.state.params, ds.x_test))
  right = np.argmax(z, -1) == ds.y_test
  np.testing.assert_allclose(last["test_position_accuracy"], right.mean())
  np.testing.assert_allclose(last["test_sequence_accuracy"], right.all(-1).mean())
  assert last["test_sequence_accuracy"] == 1.0   # XOR at every position, learnt
  assert manual.history[0]["train_loss"] > 5 * last["train_loss"]
  best = tasks.best(manual.history, parity_task.name)
  assert best["test_sequence_accuracy"] == 1.0
