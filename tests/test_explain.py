"""funcnet.explain: every attribution method against an independent
reference (jax.grad in float64, a linear model's exact IG, scipy's Spearman),
the sanity check on a digits model, and ``funcnet explain`` on a run folder."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import funcnet
from funcnet import cli, config, data, explain
from funcnet.errors import ConfigError

# 8 epochs of 4 steps: 81% test accuracy
TINY = ["train.epochs=8", "model.mlp.hidden=[12]", "data.train_per_class=20",
        "train.batch_size=50", "optimizer.learning_rate=0.02",
        "run.checkpoint_every=8", "run.plots=false"]


def _tiny_mlp(sizes=(5, 7, 3), activation="tanh", seed=0):
  model = funcnet.mlp(list(sizes), activation=activation,
                      output_activation="softmax")
  return model, model.init(jax.random.key(seed), jnp.float64)


def _logit_grad(model, params, x, t):
  """The reference: jax.grad of one example's logit z[t], vmapped."""
  def one(xi, ti):
    return jax.grad(lambda v: model.logits(params, v[None])[0, ti])(xi)
  return jax.vmap(one)(x, t)


@pytest.mark.parametrize("source", ["manual", "autodiff"])
def test_saliency_grad_x_input_and_smoothgrad_are_the_gradient(x64, source):
  model, params = _tiny_mlp()
  x = jax.random.normal(jax.random.key(1), (4, 5), jnp.float64)
  t, key, sigma, n = jnp.array([0, 2, 1, 2]), jax.random.key(3), 0.2, 3

  @jax.jit
  def both(params, x):
    got = (explain.saliency(model, params, x, t, source),
           explain.grad_times_input(model, params, x, t, source),
           explain.smoothgrad(model, params, x, t, source, key=key,
                              sigma=0.0, n=2),
           explain.saliency(model, params, x, None, source),
           explain.smoothgrad(model, params, x, t, source, key=key,
                              sigma=sigma, n=n))
    # the references: jax.grad per example; SmoothGrad's noise scaled by
    # each example's range, a sample at a time
    eps = jax.random.normal(key, (n,) + x.shape, x.dtype)
    spread = (x.max(1) - x.min(1))[:, None]
    smooth = sum(_logit_grad(model, params, x + sigma * spread * eps[k], t)
                 for k in range(n)) / n
    pred = jnp.argmax(model.logits(params, x), -1)
    return got, (_logit_grad(model, params, x, t),
                 _logit_grad(model, params, x, pred), smooth)
  (sal, gxi, smooth0, sal_pred, smooth), (ref, ref_pred, ref_smooth) = both(
      params, x)
  np.testing.assert_allclose(sal, ref, rtol=0, atol=1e-12)
  np.testing.assert_allclose(gxi, x * ref, rtol=0, atol=1e-12)
  np.testing.assert_allclose(smooth0, ref, rtol=0, atol=1e-12)   # sigma = 0
  np.testing.assert_allclose(sal_pred, ref_pred, rtol=0, atol=1e-12)
  np.testing.assert_allclose(smooth, ref_smooth, rtol=0, atol=1e-12)


def test_ig_of_a_linear_model_is_w_times_x_minus_baseline(x64):
  # one layer: z = x W + b, so dz_t/dx = W[:, t] on the whole path and
  # IG_j = W[j, t] (x_j - b_j) exactly, at any step count, by either rule
  model, params = _tiny_mlp((6, 4))
  x = jax.random.normal(jax.random.key(2), (5, 6), jnp.float64)
  base = jnp.linspace(-1.0, 1.0, 6)
  t = jnp.array([0, 1, 2, 3, 0])
  igs = jax.jit(lambda p, x: [explain.integrated_gradients(
      model, p, x, t, "manual", baseline=base, steps=3, rule=rule)
      for rule in explain.methods.RULES])(params, x)
  w = np.asarray(params[0]["W"])
  want = w[:, np.asarray(t)].T * (np.asarray(x) - np.asarray(base))
  for ig in igs:
    np.testing.assert_allclose(ig.attributions, want, rtol=0, atol=1e-12)
    np.testing.assert_array_less(np.asarray(ig.gap), 1e-10)


def test_ig_is_complete_within_1_percent_at_the_default_step_count(x64):
  model, params = _tiny_mlp((8, 16, 16, 4), seed=4)
  x = 2.0 * jax.random.normal(jax.random.key(5), (6, 8), jnp.float64)
  t = jnp.array([0, 1, 2, 3, 1, 0])

  @jax.jit
  def run(params, x):
    ig = explain.integrated_gradients(model, params, x, t, "manual")
    z = model.logits(params, x) - model.logits(params, jnp.zeros_like(x))
    return ig, jnp.take_along_axis(z, t[:, None], 1)[:, 0]
  ig, delta = run(params, x)
  total = np.asarray(ig.attributions).sum(1)
  gap = np.abs(total - np.asarray(delta)) / np.abs(np.asarray(delta))
  assert np.all(gap <= 0.01), gap
  np.testing.assert_allclose(ig.gap, gap, rtol=1e-9, atol=1e-15)
  # not complete at 4 steps, the helper doubles until it holds
  done = explain.ig_until_complete(model, params, x, t, steps=4,
                                   rule="trapezoid")
  assert np.all(done.gap <= 0.01) and np.any(done.steps > 4), done.steps
  assert set(np.unique(done.steps)) <= {4 * 2 ** k for k in range(10)}


def test_spearman_is_scipys_with_ties():
  rng = np.random.default_rng(0)
  a = rng.integers(0, 4, (3, 12)).astype(float)   # ties on purpose
  b = rng.normal(size=(3, 12))
  want = [scipy.stats.spearmanr(u, v).statistic for u, v in zip(a, b)]
  np.testing.assert_allclose(explain.spearman(a, b), want, atol=1e-12)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("runs") / "digits")
  argv = ["train", *[a for o in TINY for a in ("--set", o)],
          "--progress", "never", "--out", out]
  assert cli.main(argv) == 0
  return out


@pytest.mark.slow
def test_explain_command_writes_pictures_table_and_numbers(digits_run, capsys):
  # the fast tests check each method; this one the command around them
  out = os.path.join(digits_run, "why")
  assert cli.main(["explain", "--run", digits_run, "--examples", "4,0",
                   "--out", out]) == 0
  for name in ("attributions.png", "sanity.png"):
    with open(os.path.join(out, name), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with open(os.path.join(out, "results.json")) as f:
    res = json.load(f)
  loaded = funcnet.load_run(digits_run)
  ds = loaded.dataset
  want = np.argmax(np.asarray(loaded.model.apply(
      loaded.params, ds.x_test[[4, 0]])), -1)
  assert [e["index"] for e in res["examples"]] == [4, 0]
  assert [e["label"] for e in res["examples"]] == ds.y_test[[4, 0]].tolist()
  assert [e["predicted"] for e in res["examples"]] == want.tolist()
  assert all(e["ig_gap"] <= 0.01 and e["ig_steps"] >= 50
             for e in res["examples"])
  corr = res["sanity"]["correlations"]
  assert set(corr) == {"saliency", "grad_x_input", "smoothgrad", "ig"}
  assert corr["saliency"][0] == 1.0 and corr["saliency"][-1] < 0.5
  with open(os.path.join(out, "explain.md")) as f:
    md = f.read()
  assert md.count("\n| 4 | ") + md.count("\n| 0 | ") == 2
  assert "sanity check" in md and md in capsys.readouterr().out
  # the saved maps are the gradient of the predicted logit (autodiff here)
  maps = np.load(os.path.join(out, "attributions.npz"))
  x = jnp.asarray(maps["x"])
  ref = jax.jit(lambda p: _logit_grad(loaded.model, p, x, jnp.asarray(want)))(
      loaded.params)
  np.testing.assert_allclose(maps["saliency"], ref, rtol=1e-4, atol=1e-5)
  # what only the loaded run can refuse: attention of an MLP, an index
  # past the test split
  for argv, says in ((["--method", "attention"], "need a model with attention"),
                     (["--examples", "2,9999"], "outside the test split")):
    assert cli.main(["explain", "--run", digits_run, *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err


def _trained_digits_mlp():
  """A digits MLP after 100 full-batch gradient steps (plain jax.grad), and
  test inputs."""
  ds = data.load("digits", seed=0)
  x, y = jnp.asarray(ds.x_train[:300]), jnp.asarray(ds.y_train[:300])
  model = funcnet.mlp([64, 32, 10], activation="relu",
                      output_activation="softmax", init="he")

  def loss(p):
    z = model.logits(p, x)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], 1))

  @jax.jit
  def fit(p):
    return jax.lax.fori_loop(0, 100, lambda i, p: jax.tree_util.tree_map(
        lambda a, g: a - 0.2 * g, p, jax.grad(loss)(p)), p)
  return model, fit(model.init(jax.random.key(0))), jnp.asarray(ds.x_test[:16])


def test_sanity_check_the_gradient_changes_when_the_layers_are_randomised():
  model, params, x = _trained_digits_mlp()
  sal = jax.jit(lambda p, x, t: explain.saliency(model, p, x, t, "manual"))
  found = explain.sanity_check(model, params, x, {"saliency": sal},
                               key=jax.random.key(1))
  assert found.stages == ["trained", "layer 2", "layer 1"]
  corr = found.correlations["saliency"]
  # the last stage, independently: every layer from model.init(key)
  t = jnp.argmax(model.logits(params, x), -1)
  fresh = model.init(jax.random.key(1))
  grads = jax.jit(lambda p, q: (_logit_grad(model, p, x, t),
                                _logit_grad(model, q, x, t)))
  ref, rand = (np.abs(np.asarray(g)) for g in grads(params, fresh))
  want = [scipy.stats.spearmanr(u, v).statistic for u, v in zip(ref, rand)]
  np.testing.assert_allclose(found.per_example["saliency"][-1], want,
                             atol=1e-5)
  assert corr[0] == pytest.approx(1.0)
  assert corr[-1] < 0.5 and corr[1] < corr[0] - 0.3, corr
  assert "saliency" not in found.flagged


def test_attention_maps_are_each_heads_softmax_of_the_scores(x64):
  model = funcnet.models.transformer((6,), 3, d_model=8, n_heads=2, n_layers=2,
                              d_ff=8)
  params = model.init(jax.random.key(0), jnp.float64)
  x = jax.random.normal(jax.random.key(1), (3, 6), jnp.float64)
  maps = np.asarray(jax.jit(lambda p: explain.attention_maps(model, p, x))(
      params))
  assert maps.shape == (2, 3, 2, 6, 6)
  np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-12)
  # block 1 in numpy: e = x W_in + b_in + P, u = LN(e), softmax(Q K^T / 2)
  p = jax.tree_util.tree_map(np.asarray, params)
  e = np.asarray(x)[..., None] @ p["embed"]["W"] + p["embed"]["b"] + p["pos"]["E"]
  mu, var = e.mean(-1, keepdims=True), e.var(-1, keepdims=True)
  ln = p["blocks"][0]["ln1"]
  u = (e - mu) / np.sqrt(var + 1e-5) * ln["scale"] + ln["bias"]
  a = p["blocks"][0]["attn"]
  q = np.einsum("mtd,dhk->mhtk", u, a["q"]["W"]) + a["q"]["b"][:, None]
  k = np.einsum("mtd,dhk->mhtk", u, a["k"]["W"])
  s = q @ np.swapaxes(k, -1, -2) / np.sqrt(4)
  want = np.exp(s - s.max(-1, keepdims=True))
  np.testing.assert_allclose(maps[0], want / want.sum(-1, keepdims=True),
                             atol=1e-12)
  with pytest.raises(ConfigError, match="need a model with attention"):
    explain.attention_maps(_tiny_mlp()[0], None, x)


@pytest.mark.parametrize("argv, says", [
    (["--method", "saliency,lime"], "unknown explanation method 'lime'"),
    (["--method", ""], "unknown explanation method ''"),
    (["--source", "finite"], "gradient source 'finite'"),
])
def test_explain_command_refuses_bad_arguments_in_one_line(tmp_path, capsys,
                                                           argv, says):
  # refused before the run folder is read (there is none)
  code = cli.main(["explain", "--run", str(tmp_path / "none"), *argv])
  err = capsys.readouterr().err
  assert code == 2 and err.count("\n") == 1 and says in err, err


@pytest.mark.parametrize("text, n, says", [
    ("0", 10, "expected at least 1"), ("3,99", 10, "index 99 is outside"),
    ("a,b", 10, "expected a count N")])
def test_bad_examples_and_steps_are_one_line_config_errors(text, n, says):
  from funcnet.cli.explain import parse_examples
  assert parse_examples("3", 10) == [0, 1, 2]
  assert parse_examples("12", 10) == list(range(10))
  assert parse_examples("7,2", 10) == [7, 2]
  with pytest.raises(ConfigError, match=says):
    parse_examples(text, n)
  with pytest.raises(ConfigError, match="steps = 0"):
    explain.quadrature(0)


def test_explain_command_refuses_a_missing_run_and_a_ratings_run(tmp_path,
                                                                 capsys):
  assert cli.main(["explain", "--run", str(tmp_path / "nope")]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "nope" in err
  # a ratings model's run folder, as far as explain reads before loading it
  run = tmp_path / "mf"
  run.mkdir()
  cfg = config.load(os.path.join(os.path.dirname(__file__), "..", "configs",
                                 "ratings_mf.toml"))
  (run / "config.json").write_text(json.dumps(cfg))
  assert cli.main(["explain", "--run", str(run)]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "ratings run whose inputs are pairs" in err


def test_transformer_ig_by_its_hand_written_gradient_is_autodiffs():
  # float32, 50 points: jax.vmap over the points once gave the Transformer's
  # hand-written logit gradient wrong here (right at 8 points); one batch
  # of K m examples does not
  # (40 tokens: with 8 the vmap was right too)
  model = funcnet.models.transformer((40,), 3, d_model=8, n_heads=2, d_ff=8,
                                     n_layers=1)
  params = model.init(jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (3, 40))
  t = jnp.array([0, 1, 2])
  man, auto = jax.jit(lambda p: [explain.integrated_gradients(
      model, p, x, t, source).attributions
      for source in ("manual", "autodiff")])(params)
  np.testing.assert_allclose(man, auto, rtol=0,
                             atol=1e-5 * float(np.abs(auto).max()))
