"""The training loop (funcnet.train): one compile, donated buffers, the same
numbers as a numpy SGD loop, determinism, early stopping and the NaN guard,
each checked against an independent reference rather than its own output."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import data, optimizers, train
from funcnet.models import mlp


def _dataset(x, y, x_test=None, y_test=None, task="regression"):
  return types.SimpleNamespace(x_train=x, y_train=y, x_test=x_test,
                               y_test=y_test, task=task)


def _regression(n=40, n_in=3, n_out=2, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, n_in))
  y = np.tanh(x @ rng.normal(size=(n_in, n_out))) + 0.1 * rng.normal(size=(n, n_out))
  return x, y


def _epoch_order(key, epoch, n, batch):
  """The documented recipe: ``k_init, k_train = split(key)``; epoch ``e``'s
  batches are ``batch_order(k_train, e, n, b)`` cut into rows of ``b``."""
  _, k_train = jax.random.split(key)
  return train.batch_order(k_train, epoch, n, batch).reshape(n // batch, batch)


def test_batch_order_is_a_seeded_numpy_shuffle_per_epoch():
  key = jax.random.key(11)
  bits = np.asarray(jax.random.key_data(key))
  a = train.batch_order(key, 3, 50, 8)
  want = np.random.default_rng([*map(int, bits), 3]).permutation(50)[:48]
  np.testing.assert_array_equal(a, want)
  assert a.dtype == np.int32 and len(set(a.tolist())) == 48
  np.testing.assert_array_equal(train.batch_order(bits, 3, 50, 8), a)
  assert not np.array_equal(train.batch_order(key, 4, 50, 8), a)


def _leaves_equal(a, b):
  for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b),
                  strict=True):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def _without_time(history):
  return [{k: v for k, v in h.items() if k != "time"} for h in history]


# ---------------------------------------------------------------------------
# The loop computes what plain SGD computes.


def _numpy_sgd(params, x, y, order, eta):
  """Mini-batch SGD on ``[n_0, n_1, n_2]`` sigmoid-hidden, identity-output MLP
  with ``C = mean_i 0.5 ||z_2 - y||^2``, in float64 numpy; gradients written
  out independently of funcnet. Returns params and per-step (C, norms)."""
  W1, b1, W2, b2 = (np.array(params[0]["W"]), np.array(params[0]["b"]),
                    np.array(params[1]["W"]), np.array(params[1]["b"]))
  steps = []
  for idx in order:
    a0, t = x[idx], y[idx]
    m = len(idx)
    a1 = 1.0 / (1.0 + np.exp(-(a0 @ W1 + b1)))
    z2 = a1 @ W2 + b2
    cost = 0.5 * np.sum((z2 - t) ** 2) / m
    d2 = z2 - t
    d1 = (d2 @ W2.T) * a1 * (1 - a1)
    g = [a0.T @ d1 / m, d1.sum(0) / m, a1.T @ d2 / m, d2.sum(0) / m]
    layer_norms = [np.sqrt(np.sum(g[0] ** 2) + np.sum(g[1] ** 2)),
                   np.sqrt(np.sum(g[2] ** 2) + np.sum(g[3] ** 2))]
    update_norm = eta * np.sqrt(sum(np.sum(gi ** 2) for gi in g))
    W1, b1, W2, b2 = (W1 - eta * g[0], b1 - eta * g[1], W2 - eta * g[2],
                      b2 - eta * g[3])
    steps.append((cost, layer_norms, update_norm))
  return [{"W": W1, "b": b1}, {"W": W2, "b": b2}], steps


@pytest.mark.parametrize("grads", ["manual", "autodiff"])
def test_fit_is_numpy_sgd_over_the_documented_batches(grads, x64):
  x, y = _regression(n=46)          # 46 = 7 batches of 6, 4 dropped each epoch
  key, eta, batch, epochs = jax.random.key(3), 0.5, 6, 3
  model = mlp([3, 5, 2], activation="sigmoid", output_activation="identity")
  res = train.fit(model, "mse", optimizers.sgd(eta), _dataset(x, y),
                  options=train.FitOptions(epochs, batch, key, grads=grads,
                                           dtype=jnp.float64))
  params = model.init(jax.random.split(key)[0], jnp.float64)
  for e in range(epochs):
    params, steps = _numpy_sgd(params, x, y, _epoch_order(key, e, 46, batch), eta)
    h = res.history[e]
    assert h["epoch"] == e + 1 and h["step"] == (e + 1) * 7
    np.testing.assert_allclose(h["train_loss"], np.mean([s[0] for s in steps]),
                               rtol=1e-12)
    np.testing.assert_allclose(list(h["grad_norms"].values()),
                               np.mean([s[1] for s in steps], axis=0), rtol=1e-12)
    np.testing.assert_allclose(h["update_norm"], np.mean([s[2] for s in steps]),
                               rtol=1e-12)
  for got, want in zip(jax.tree_util.tree_leaves(res.state.params),
                       jax.tree_util.tree_leaves(params), strict=True):
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-14)
  norm = np.sqrt(sum(np.sum(p ** 2) for p in jax.tree_util.tree_leaves(params)))
  np.testing.assert_allclose(res.history[-1]["param_norm"], norm, rtol=1e-12)


def test_manual_and_autodiff_training_agree_in_float64(x64):
  ds = data.standardize(data.load("moons", seed=0))
  model = mlp([2, 16, 16, 2], activation="sigmoid", output_activation="softmax")
  runs = [train.fit(model, "cross_entropy", optimizers.momentum(0.1, 0.9), ds,
                    options=train.FitOptions(4, 16, jax.random.key(7), grads=g,
                                             dtype=jnp.float64))
          for g in ("manual", "autodiff")]
  a, b = (jax.tree_util.tree_leaves(r.state.params) for r in runs)
  assert max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(a, b)) <= 1e-9
  # and the runs did train: 4 epochs moved every parameter
  init = jax.tree_util.tree_leaves(model.init(jax.random.split(jax.random.key(7))[0],
                                              jnp.float64))
  assert all(float(jnp.max(jnp.abs(u - w))) > 1e-3 for u, w in zip(a, init))


def test_digits_mlp_reaches_97_percent_in_seconds():
  ds = data.standardize(data.load("digits", seed=0))
  model = mlp([64, 128, 10], activation="relu", output_activation="softmax",
              init="he")
  res = train.fit(model, "cross_entropy", optimizers.adam(1e-3), ds,
                  options=train.FitOptions(
                      40, 32, jax.random.key(0), dtype=jnp.float32,
                      evaluation=train.Evaluation(every=40)))
  # independent accuracy: argmax of a numpy forward pass
  p = [{k: np.asarray(v) for k, v in layer.items()} for layer in res.state.params]
  h = np.maximum(ds.x_test @ p[0]["W"] + p[0]["b"], 0)
  acc = np.mean(np.argmax(h @ p[1]["W"] + p[1]["b"], axis=1) == ds.y_test)
  assert acc >= 0.97
  assert res.history[-1]["test_accuracy"] == pytest.approx(acc, abs=1e-6)


# ---------------------------------------------------------------------------
# Compiled once, donated, no transfers, deterministic.


def _tiny_epoch(grads, batch=8, n=40):
  model = mlp([3, 4, 2], activation="sigmoid", output_activation="sigmoid")
  opt = optimizers.sgd(0.1)
  epoch = train.make_epoch(model, "mse", opt, batch, grads)
  params = model.init(jax.random.key(0), jnp.float32)
  x, y = _regression(n=n)
  return epoch, params, opt.init(params), jnp.asarray(x, jnp.float32), \
      jnp.asarray(y, jnp.float32)


@pytest.mark.parametrize("grads", ["manual", "autodiff"])
def test_epoch_compiles_once_across_epochs(grads):
  epoch, params, state, x, y = _tiny_epoch(grads)
  for e in range(5):
    params, state, m = epoch(params, state, jax.random.fold_in(jax.random.key(1), e),
                             x, y)
    jax.device_get(m)
  assert epoch._cache_size() == 1


def test_fit_traces_the_model_once_however_many_epochs():
  base = mlp([3, 4, 2], activation="tanh", output_activation="identity")
  traces = []

  def logits(params, x, key=None):
    traces.append(x.shape)          # runs only while JAX traces
    return base.logits(params, x, key)

  model = base._replace(logits=logits)
  x, y = _regression(n=40)
  counts = []
  for epochs in (1, 6):
    traces.clear()
    train.fit(model, "mse", optimizers.sgd(0.1), _dataset(x, y, x[:8], y[:8]),
              options=train.FitOptions(epochs, 8, jax.random.key(0),
                                       dtype=jnp.float32))
    counts.append(len(traces))
  # the epoch once, evaluation once (the task's metrics read the outputs
  # f(z) of the loss's logits), whatever the number of epochs
  assert counts == [2, 2]


def test_epoch_donates_params_and_state_and_transfers_nothing():
  epoch, params, state, x, y = _tiny_epoch("manual")
  key = jax.random.key(1)
  params, state = epoch(params, state, key, x, y)[:2]   # compile outside the guard
  inputs = jax.tree_util.tree_leaves((params, state))
  with jax.transfer_guard("disallow"):
    out = epoch(params, state, key, x, y)
  assert all(a.is_deleted() for a in inputs)
  assert not any(a.is_deleted() for a in jax.tree_util.tree_leaves(out))


def test_same_seed_gives_bit_identical_history_and_params():
  ds = data.load("spirals", seed=0)
  model = mlp([2, 16, 2], activation="tanh", output_activation="softmax")
  opt = optimizers.adam(1e-2)
  runs = [train.fit(model, "cross_entropy", opt, ds, options=train.FitOptions(
                    3, 32, jax.random.key(s), dtype=jnp.float32))
          for s in (5, 5, 6)]
  assert _without_time(runs[0].history) == _without_time(runs[1].history)
  _leaves_equal(runs[0].state.params, runs[1].state.params)
  _leaves_equal(runs[0].state.opt_state, runs[1].state.opt_state)
  assert runs[2].history[-1]["train_loss"] != runs[0].history[-1]["train_loss"]


def test_resumed_fit_equals_an_uninterrupted_one():
  x, y = _regression(n=48)
  model = mlp([3, 6, 2], activation="sigmoid", output_activation="identity")
  opt, key = optimizers.momentum(0.2, 0.9), jax.random.key(4)
  kw = dict(batch_size=8, key=key, dtype=jnp.float32)
  whole = train.fit(model, "mse", opt, _dataset(x, y),
                    options=train.FitOptions(epochs=6, **kw))
  first = train.fit(model, "mse", opt, _dataset(x, y),
                    options=train.FitOptions(epochs=3, **kw))
  assert first.state.epoch == 3 and first.state.step == 3 * 6
  rest = train.fit(model, "mse", opt, _dataset(x, y),
                   options=train.FitOptions(epochs=6, **kw), state=first.state)
  _leaves_equal(whole.state.params, rest.state.params)
  assert _without_time(whole.history) == _without_time(first.history + rest.history)


@pytest.mark.parametrize("accumulate", [pytest.param(1, marks=pytest.mark.slow),
                                        2])
def test_resume_with_dropout_eval_every_and_patience_equals_uninterrupted(
    accumulate):
  """Issue 14: a resumed run repeats the uninterrupted one with dropout (its
  keys from the absolute epoch), micro-batches, evaluation every 2 epochs
  and patience (the counters restored from the stop epoch's record)."""
  from funcnet.train import precision
  x, y = _regression(n=48)
  xt, yt = _regression(n=16, seed=3)
  kw = dict(batch_size=8, key=jax.random.key(4), dtype=jnp.float32,
            evaluation=train.Evaluation(every=2, patience=2),
            mixed=precision.Mixed(None, accumulate))
  def run(dropout, state=None, on_epoch=None):
    model = mlp([3, 16, 2], activation="tanh", output_activation="identity",
                dropout=dropout)
    return train.fit(model, "mse", optimizers.adam(0.05),
                     _dataset(x, y, xt, yt),
                     options=train.FitOptions(epochs=40, **kw), state=state,
                     callbacks=train.Callbacks(on_epoch))
  whole = run(0.3)
  assert whole.status == "early_stopped" and len(whole.history) > 6
  # Cut at an odd epoch (the next evaluation is one epoch away: a schedule
  # counted from the resume would move it) and where the counter is 1.
  counted = [h["epoch"] for h in whole.history
             if (h["early_stopping"] or {})["evaluations_since_best"] == 1]
  for cut in (5, counted[-1]):
    first = run(0.3, on_epoch=lambda r, state, status: r["epoch"] == cut)
    assert len(first.history) == cut
    assert first.state.early_stopping == first.history[-1]["early_stopping"]
    rest = run(0.3, state=first.state)
    _leaves_equal(whole.state.params, rest.state.params)
    assert _without_time(whole.history) == _without_time(first.history +
                                                         rest.history)
  # Each part could fail: without dropout the run is another one, and
  # without the counters the resumed run stops later.
  assert run(0.0).history[4]["train_loss"] != whole.history[4]["train_loss"]
  fresh = run(0.3, state=first.state._replace(early_stopping=None))
  assert fresh.history[-1]["epoch"] > whole.history[-1]["epoch"]


def test_each_micro_batch_draws_its_own_dropout_mask():
  """``accumulate`` folds the micro-batch index into the key: the step's
  gradient is the mean of each micro-batch's own, with ``fold_in(key, j)``,
  not one mask reused (which would give a different gradient)."""
  from funcnet import autodiff
  from funcnet.train import precision
  x, y = (a.astype(np.float32) for a in _regression(n=8))
  model = mlp([3, 32, 2], activation="tanh", output_activation="identity",
              dropout=0.5)
  params = model.init(jax.random.key(0), jnp.float32)
  vg = autodiff.value_and_grad(model, "mse")
  key = jax.random.key(7)
  _, g = precision.accumulate(vg, 2)(params, x, y, key)
  rows = [np.arange(8)[j::2] for j in range(2)]  # row j + 2 i -> micro j
  own = [vg(params, x[r], y[r], jax.random.fold_in(key, j))[1]
         for j, r in enumerate(rows)]
  one = [vg(params, x[r], y[r], jax.random.fold_in(key, 0))[1] for r in rows]
  mean = lambda gs: jax.tree_util.tree_map(lambda a, b: (a + b) / 2, *gs)
  for a, b in zip(jax.tree_util.tree_leaves(g),
                  jax.tree_util.tree_leaves(mean(own))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert any(not np.allclose(a, b) for a, b in zip(
      jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(mean(one))))


# ---------------------------------------------------------------------------
# Early stopping and the NaN guard.


def _stop_epoch(history, patience):
  """Where patience stops a run: the first evaluation that makes ``patience``
  in a row without a lower held-out loss than the best before it."""
  best, worse = np.inf, 0
  for h in history:
    if "test_loss" in h:
      best, worse = (h["test_loss"], 0) if h["test_loss"] < best else (best, worse + 1)
      if worse >= patience:
        return h["epoch"]
  return None


@pytest.mark.parametrize("patience,eval_every,stop", [(1, 1, 2), (3, 1, 4),
                                                      (2, 3, 9)])
def test_patience_stops_a_run_that_cannot_improve(patience, eval_every, stop):
  # learning rate 0: the held-out loss never changes, so the first evaluation
  # is the best and the run stops `patience` evaluations later
  x, y = _regression(n=32)
  res = train.fit(mlp([3, 2]), "mse", optimizers.sgd(0.0),
                  _dataset(x, y, x[:8], y[:8]), options=train.FitOptions(
                      50, 8, jax.random.key(0), dtype=jnp.float32,
                      evaluation=train.Evaluation(every=eval_every,
                                                  patience=patience)))
  assert res.history[-1]["epoch"] == stop
  assert res.status == "early_stopped"
  assert res.reason.startswith(f"early stopping at epoch {stop}")


def test_patience_stops_where_the_full_history_says(x64):
  x, y = _regression(n=64, seed=1)
  xt, yt = _regression(n=32, seed=2)
  model = mlp([3, 64, 2], activation="tanh", output_activation="identity")
  kw = dict(epochs=60, batch_size=8, key=jax.random.key(2), dtype=jnp.float64)
  full = train.fit(model, "mse", optimizers.adam(0.02), _dataset(x, y, xt, yt),
                   options=train.FitOptions(**kw))
  stop = _stop_epoch(full.history, patience=3)
  assert stop is not None and stop < 60          # the setup overfits
  early = train.fit(model, "mse", optimizers.adam(0.02), _dataset(x, y, xt, yt),
                    options=train.FitOptions(
                        evaluation=train.Evaluation(patience=3), **kw))
  assert early.history[-1]["epoch"] == stop
  # the early run's records also carry its counters; the rest is the same
  counters = [h.pop("early_stopping") for h in early.history]
  assert counters[-1]["evaluations_since_best"] == 3
  assert _without_time(early.history) == _without_time(full.history[:stop])


def _numpy_linear_sgd(W, b, x, y, batches, eta):
  """SGD on ``z = x W + b`` with ``C = mean_i 0.5 ||z - y||^2``, in numpy."""
  for idx in batches:
    r = x[idx] @ W + b - y[idx]
    W, b = W - eta * x[idx].T @ r / len(idx), b - eta * r.mean(0)
  return W, b


@pytest.mark.parametrize("grads", ["manual", "autodiff"])
@pytest.mark.parametrize("bad_step", [0, 1, 3, 6])
def test_nan_guard_returns_the_last_params_with_a_finite_loss(grads, bad_step, x64):
  # One target is NaN. Epoch 1 drops it (60 examples, 7 batches of 8), and
  # epoch 2 meets it at step `bad_step`, so that is the first NaN loss. The
  # run must end on the params whose loss was last finite: those the step
  # before started from (at an epoch's first step, the epoch's start).
  n, batch, eta = 60, 8, 0.2
  for seed in range(1000):               # a key whose orders do that
    key = jax.random.key(seed)
    dropped = set(range(n)) - set(_epoch_order(key, 0, n, batch).ravel().tolist())
    hit = dropped & set(_epoch_order(key, 1, n, batch)[bad_step].tolist())
    if hit:
      break
  x, y = _regression(n=n, n_out=1)
  y_bad = y.copy()
  y_bad[hit.pop()] = np.nan
  model = mlp([3, 1], output_activation="identity")
  res = train.fit(model, "mse", optimizers.sgd(eta), _dataset(x, y_bad),
                  options=train.FitOptions(5, batch, key, grads=grads,
                                           dtype=jnp.float64))
  assert res.status == "diverged" and res.diverged
  assert res.reason.startswith(
      f"loss became non-finite at epoch 2, step {7 + bad_step + 1};")
  assert [h["epoch"] for h in res.history] == [1, 2]
  assert np.isnan(res.history[-1]["train_loss"])

  kept = max(bad_step - 1, 0)
  p0 = model.init(jax.random.split(key)[0], jnp.float64)[0]
  W, b = _numpy_linear_sgd(np.asarray(p0["W"]), np.asarray(p0["b"]), x, y,
                           list(_epoch_order(key, 0, n, batch))
                           + list(_epoch_order(key, 1, n, batch)[:kept]), eta)
  np.testing.assert_allclose(np.asarray(res.state.params[0]["W"]), W, rtol=1e-12)
  np.testing.assert_allclose(np.asarray(res.state.params[0]["b"]), b, rtol=1e-12)
  assert int(res.state.opt_state.count) == 7 + kept      # the state matches them


def test_a_loss_that_grows_without_bound_but_stays_finite_is_diverged(x64):
  # Full-batch gradient descent on least squares with eta above 2 / lambda_max
  # of x^T x / n: the error grows geometrically, finite for many epochs. The
  # run must stop at the first epoch whose loss passes
  # LOSS_GROWTH_LIMIT x max(first epoch's loss, 1), computed here in numpy.
  n, eta = 32, 3.0
  x, y = _regression(n=n, n_out=1)
  model = mlp([3, 1], output_activation="identity")
  key = jax.random.key(0)
  res = train.fit(model, "mse", optimizers.sgd(eta), _dataset(x, y),
                  options=train.FitOptions(60, n, key, dtype=jnp.float64))
  p0 = model.init(jax.random.split(key)[0], jnp.float64)[0]
  W, b = np.asarray(p0["W"]), np.asarray(p0["b"])
  want = []
  for _ in range(60):                 # the loss each epoch's one step starts at
    want.append(0.5 * np.mean(np.sum((x @ W + b - y) ** 2, axis=1)))
    W, b = _numpy_linear_sgd(W, b, x, y, [np.arange(n)], eta)
  limit = train.LOSS_GROWTH_LIMIT * max(want[0], 1.0)
  stop = next(e + 1 for e, c in enumerate(want) if c > limit)
  assert 2 < stop < 60 and np.isfinite(want[stop - 1])
  assert res.status == "diverged" and res.reason.startswith("loss grew to")
  assert [h["epoch"] for h in res.history] == list(range(1, stop + 1))
  np.testing.assert_allclose([h["train_loss"] for h in res.history],
                             want[:stop], rtol=1e-9)
  assert res.state.initial_loss == pytest.approx(want[0], rel=1e-12)


def test_meanwhile_runs_once_before_the_first_epoch():
  """``Callbacks.meanwhile``: the caller's work while fit's programs
  compile, called once, after fit has begun them and before any epoch."""
  x, y = _regression(n=24)
  seen = []
  model = mlp([3, 4, 2], activation="tanh", output_activation="identity")
  r = train.fit(model, "mse", optimizers.sgd(0.1), _dataset(x, y, x, y),
                options=train.FitOptions(epochs=2, batch_size=8,
                                         key=jax.random.key(0)),
                callbacks=train.Callbacks(
                    on_epoch=lambda rec, s, st: seen.append(rec["epoch"]),
                    meanwhile=lambda: seen.append("meanwhile")))
  assert r.status == "done" and seen == ["meanwhile", 1, 2]
