"""Adversarial training ([adversarial], funcnet.train.adversarial): config
errors in one line, ratio 0 is the standard run, one FGSM step against a
jax.grad reference computed here, manual = autodiff in float64, resume =
uninterrupted, sweeps; and (slow) robustness bought for little accuracy."""

import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import cli, config, data, experiment, optimizers, sweep, train
from funcnet.errors import ConfigError
from funcnet.models import mlp
from funcnet.sweep import engine


def _leaves_equal(a, b):
  for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b),
                  strict=True):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


BAD = [
    (["adversarial.method=fgm"], r"'adversarial.method' = 'fgm'; expected one of none, fgsm, pgd"),
    (["adversarial.eps=-0.5"], r"'adversarial.eps' = -0.5 is out of range; expected >= 0"),
    (["adversarial.ratio=1.5"], r"'adversarial.ratio' = 1.5 is out of range; expected in \[0.0, 1.0\]"),
    (["adversarial.ratio=-0.1"], r"'adversarial.ratio' = -0.1 is out of range"),
    (["adversarial.steps=0"], r"'adversarial.steps' = 0 is out of range; expected >= 1"),
    (["data.name=ratings", "model.kind=mf", "train.loss=mse",
      "adversarial.method=fgsm", "adversarial.eps=1"],
     r"'adversarial.method' = 'fgsm' needs real-valued inputs; the ratings data"),
]


@pytest.mark.parametrize("overrides, message", BAD)
def test_bad_adversarial_config_is_one_line_and_status_2(overrides, message,
                                                         capsys, tmp_path):
  argv = ["train", "--out", str(tmp_path / "run")]
  for o in overrides:
    argv += ["--set", o]
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert err.startswith("funcnet: error: ") and err.count("\n") == 1, err
  assert re.search(message, err), err
  assert not (tmp_path / "run").exists()


def test_token_inputs_are_refused_before_anything_is_built():
  """Text (token ids) as ratings: no L-infinity ball around an id."""
  cfg = config.load(None, ["adversarial.method=pgd", "adversarial.eps=1"])
  tokens = types.SimpleNamespace(x_train=np.zeros((4, 8), np.int32),
                                 task="language", name="text", info={})
  with pytest.raises(ConfigError, match="needs real-valued inputs; the "
                     "language data 'text' has int32 inputs"):
    experiment.build_adversarial(cfg, tokens)


def test_a_kind_without_a_hand_written_input_gradient_is_one_line():
  """train.grads = manual needs the kind's backward to return dC/dx
  (wrt_input=True); one without it is refused on shapes alone."""
  model = mlp([4, 3], output_activation="softmax")

  def backward(model, loss):
    def fn(params, x, y, key=None):  # parameter gradients only
      return jnp.zeros(()), params
    return fn
  old = model._replace(backward=backward)
  x = jax.ShapeDtypeStruct((2, 4), jnp.float32)
  y = jax.ShapeDtypeStruct((2,), jnp.int32)
  with pytest.raises(ConfigError, match="the hand-written backward of model "
                     "kind 'mlp' returns no input gradient, which adversarial "
                     "training with train.grads = 'manual' needs"):
    train.adversarial.check_traces(old, "cross_entropy", "manual", x, y,
                                   jnp.float32)
  train.adversarial.check_traces(old, "cross_entropy", "autodiff", x, y,
                                 jnp.float32)
  train.adversarial.check_traces(model, "cross_entropy", "manual", x, y,
                                 jnp.float32)


# ---------------------------------------------------------------------------
# The step.


def _data(n=12, n_in=4, k=3, seed=0):
  """Raw inputs in [0, 8] (a valid range to clip to), standardised per
  feature as funcnet.data does, with their stats."""
  rng = np.random.default_rng(seed)
  raw = rng.uniform(0.0, 8.0, size=(n, n_in))
  mean, std = raw.mean(0), raw.std(0)
  y = rng.integers(0, k, size=n)
  return (raw - mean) / std, y, (mean, std)


def _ns(x, y):
  return types.SimpleNamespace(x_train=x, y_train=y, x_test=None, y_test=None,
                               task="classification")


def _loss(model, params, x, y):
  """Mean cross-entropy of softmax logits, written out here."""
  return -jnp.mean(jnp.take_along_axis(
      jax.nn.log_softmax(model.logits(params, x)), y[:, None], 1))


def _steps(model, grads, optimizer, params, xb, yb, key):
  """``train.train_step`` over the batches ``xb[s], yb[s]`` (one
  ``lax.scan``), step ``s`` keyed ``fold_in(key, s)`` as an epoch keys it."""
  vg = train.gradient_fn(model, "cross_entropy", grads)

  def step(state, batch):
    s, xs, ys = batch
    state, _ = train.train_step(
        state, train.Batch(xs, ys, jax.random.fold_in(key, s)), vg=vg,
        optimizer=optimizer, norms=False)
    return state, None
  state = train.TrainState(params, optimizer.init(params))
  state, _ = jax.lax.scan(step, state, (jnp.arange(len(xb)), xb, yb))
  return state.params


def test_one_fgsm_step_with_ratio_1_equals_a_reference(x64):
  """The whole batch replaced by its FGSM version, made here in raw units
  from jax.grad, then one SGD step by hand; eps given in raw units and
  converted by the stats as a config's is."""
  x, y, (mean, std) = _data()
  eps, lr, lo, hi = 0.7, 0.3, 0.0, 8.0
  model = mlp([4, 5, 3], activation="tanh", output_activation="softmax")
  adv = train.adversarial.from_raw("fgsm", eps, 1.0, stats=(mean, std),
                                   valid_range=(lo, hi), source="autodiff")

  def compare(key):
    params = model.init(key, jnp.float64)
    raw = x * std + mean
    g_raw = jax.grad(lambda r: _loss(model, params, (r - mean) / std, y))(raw)
    raw_adv = jnp.clip(raw + eps * jnp.sign(g_raw), lo, hi)
    g = jax.grad(lambda p: _loss(model, p, (raw_adv - mean) / std, y))(params)
    want = jax.tree_util.tree_map(lambda p, d: p - lr * d, params, g)
    g_clean = jax.grad(lambda p: _loss(model, p, x, y))(params)
    clean = jax.tree_util.tree_map(lambda p, d: p - lr * d, params, g_clean)
    got = _steps(model, adv, optimizers.sgd(lr), params, x[None], y[None],
                 jax.random.key(0))
    return want, got, clean

  want, got, clean = jax.jit(compare)(jax.random.key(3))
  for a, b, c in zip(*map(jax.tree_util.tree_leaves, (want, got, clean)),
                     strict=True):
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)
    assert np.max(np.abs(b - c)) > 1e-4  # the attack moved the step


def test_manual_and_autodiff_sources_train_alike_in_float64(x64):
  """PGD (random start, 2 steps) on half of each batch, three steps: the
  hand-written input and parameter gradients against jax.grad's."""
  x, y, stats = _data(n=12)
  model = mlp([4, 6, 3], activation="tanh", output_activation="softmax")

  def both(key):
    params = model.init(key, jnp.float64)
    return params, [_steps(model, train.adversarial.from_raw(
        "pgd", 0.5, 0.5, stats=stats, valid_range=(0.0, 8.0), steps=2,
        source=source), optimizers.adam(0.05), params, x.reshape(3, 4, 4),
        y.reshape(3, 4), jax.random.key(1)) for source in ("manual", "autodiff")]

  params, (manual, auto) = jax.jit(both)(jax.random.key(2))
  for a, b, p in zip(*map(jax.tree_util.tree_leaves, (manual, auto, params)),
                     strict=True):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
    assert np.max(np.abs(a - p)) > 1e-3  # and they did train


def _config(*overrides):
  """Digits, 5 examples per class, batches of 10: a config-made setup."""
  return config.load("configs/digits_mlp.toml", [
      "data.train_per_class=5", "train.batch_size=10", "train.epochs=4",
      "model.mlp.hidden=[16]", "run.plots=false", *overrides])


def test_ratio_0_is_the_standard_step_bit_for_bit():
  """A config's ratio 0 (a PGD setup that attacks no row) against the
  standard step, two steps on the config's own data."""
  setup = experiment.Setup(_config("adversarial.method=pgd",
                                   "adversarial.eps=2", "adversarial.ratio=0"))
  assert isinstance(setup.gradient(), train.Adversarial)
  xb = setup.ds.x_train[:20].reshape(2, 10, -1)
  yb = setup.ds.y_train[:20].reshape(2, 10)

  def both(key):
    params = setup.model.init(key, jnp.float32)
    return [_steps(setup.model, g, setup.optimizer, params, xb, yb, key)
            for g in (setup.gradient(), "autodiff")]

  adv, plain = jax.jit(both)(jax.random.key(0))
  _leaves_equal(adv, plain)


def test_a_resumed_pgd_run_with_dropout_equals_an_uninterrupted_one():
  """PGD's random starts come from the step's key, as dropout does: the
  state after epoch 2, copied to the host as a checkpoint saves it, and
  resumed, repeats the uninterrupted run's last two epochs. Each run
  traces its step once, however many epochs (the attack's eps, lo, hi are
  constants of the one compiled epoch)."""
  x, y, stats = _data(n=16)
  base = mlp([4, 6, 3], activation="tanh", output_activation="softmax",
             dropout=0.2)
  traces = []

  def logits(params, x, key=None):
    traces.append(x.shape)  # runs only while JAX traces
    return base.logits(params, x, key)
  model = base._replace(logits=logits)
  adv = train.adversarial.from_raw("pgd", 0.5, 0.75, stats=stats,
                                   valid_range=(0.0, 8.0), steps=1)
  saved = []

  def fit(state=None, on_epoch=None):
    return train.fit(model, "cross_entropy", optimizers.adam(0.05), _ns(x, y),
                     options=train.FitOptions(4, 4, jax.random.key(5),
                                              grads=adv, norms=False),
                     state=state, callbacks=train.Callbacks(on_epoch))
  whole = fit(on_epoch=lambda record, state, status: saved.append(
      jax.device_get(state)) if record["epoch"] == 2 else None)
  assert saved[0].epoch == 2
  whole_traces, traces[:] = len(traces), []
  rest = fit(saved[0])
  assert len(traces) == whole_traces > 0  # 4 epochs, then 2: traced alike
  _leaves_equal(whole.state.params, rest.state.params)
  strip = lambda h: [{k: v for k, v in r.items() if k != "time"} for r in h]
  assert strip(whole.history[2:]) == strip(rest.history)


def test_a_sweeps_vectorised_step_attacks_as_each_variant_alone():
  """Two variants (learning rates, traced) in the sweep's one vmapped step
  against each variant's own adversarial step (FGSM on half the batch)."""
  base = _config("adversarial.method=fgsm", "adversarial.eps=2")
  lrs = [1e-2, 3e-2]
  vs = sweep.grid.variants(base, sweep.grid.expand(
      {"optimizer.learning_rate": lrs}))
  setups = [experiment.Setup(v.cfg) for v in vs]
  traced = sweep.grid.traced_keys([v.cfg for v in vs])
  vstep = engine._variant_step(setups[0], traced, False, "vmap")
  x, y = setups[0].ds.x_train[:10], setups[0].ds.y_train[:10]

  def both(key):
    params = setups[0].model.init(key, jnp.float32)
    alone = [_steps(s.model, s.gradient(), s.optimizer, params, x[None],
                    y[None], key) for s in setups]
    stack = lambda trees: jax.tree_util.tree_map(lambda *a: jnp.stack(a),
                                                 *trees)
    together, _, _ = vstep(
        stack([params] * 2), stack([s.optimizer.init(params) for s in setups]),
        {traced[0]: jnp.asarray(lrs, jnp.float32)}, jnp.stack([x, x]),
        jnp.stack([y, y]), jnp.stack([jax.random.fold_in(key, 0)] * 2))
    return alone, together

  alone, together = jax.jit(both)(jax.random.key(0))
  for v in range(2):
    for a, b in zip(jax.tree_util.tree_leaves(alone[v]),
                    jax.tree_util.tree_leaves(together), strict=True):
      np.testing.assert_allclose(b[v], a, rtol=0, atol=1e-6)
  assert not np.allclose(jax.tree_util.tree_leaves(alone[0])[0],
                         jax.tree_util.tree_leaves(alone[1])[0])


def test_a_sweep_over_data_that_scales_eps_differently_is_refused():
  base = _config("adversarial.method=fgsm", "adversarial.eps=2")
  vs = sweep.grid.variants(base, sweep.grid.expand({"data.seed": [0, 1]}))
  with pytest.raises(ConfigError, match="cannot share a compiled step; "
                     "expected the same data for every variant, or --sequential"):
    sweep.train_variants(vs, log=lambda *_: None)


# ---------------------------------------------------------------------------
# What it buys (slow).


def _pgd_accuracy(model, params, ds, eps, valid_range, steps=20):
  """Test accuracy under an L-infinity PGD of radius ``eps`` raw units
  (random start, step 2.5 eps / steps), written here with jax.grad in raw
  units (the library's attack and input gradient play no part)."""
  mean, std = ds.info["mean"], ds.info["std"]
  lo, hi = valid_range
  r0 = ds.x_test * std + mean
  y = ds.y_test

  @jax.jit
  def attack(key):
    def loss(r):
      z = model.logits(params, (r - mean) / std)
      return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], 1))

    def project(r):
      return jnp.clip(jnp.clip(r, r0 - eps, r0 + eps), lo, hi)
    r = project(r0 + jax.random.uniform(key, r0.shape, r0.dtype, -eps, eps))
    for _ in range(steps):
      r = project(r + 2.5 * eps / steps * jnp.sign(jax.grad(loss)(r)))
    z = model.logits(params, (r - mean) / std)
    return jnp.mean(jnp.argmax(z, -1) == y), jnp.mean(
        jnp.argmax(model.logits(params, ds.x_test), -1) == y)
  return [float(a) for a in attack(jax.random.key(0))]


@pytest.mark.slow
def test_adversarial_training_keeps_3x_the_accuracy_under_pgd():
  """configs/digits_mlp_adversarial.toml against configs/digits_mlp.toml:
  under PGD at eps = 1 and 2 (of 0..16) the adversarially trained MLP keeps
  at least 3x the standard one's accuracy (and at least 50% / 30%), its
  clean accuracy within 3 points."""
  out = {}
  for name in ("digits_mlp", "digits_mlp_adversarial"):
    setup = experiment.Setup(config.load(f"configs/{name}.toml",
                                         ["run.plots=false"]))
    params = setup.fit().state.params
    out[name] = {eps: _pgd_accuracy(setup.model, params, setup.ds, eps,
                                    data.valid_range(setup.ds.name))
                 for eps in (0.5, 1.0, 2.0)}
  std, adv = out["digits_mlp"], out["digits_mlp_adversarial"]
  assert std[1.0][1] - adv[1.0][1] <= 0.03  # clean accuracy
  for eps, floor in ((1.0, 0.5), (2.0, 0.3)):
    assert adv[eps][0] >= max(3 * std[eps][0], floor), (eps, std, adv)
