"""Attacks (funcnet.attacks, ``funcnet attack``): FGSM against its closed
form on a softmax-linear model, PGD's ball and range, PGD's one step as
FGSM, a targeted attack's aim, and a trained digits MLP under attack
through the command, with the units converted from the data's own."""

import json
import os

import jax
import numpy as np
import pytest

import funcnet
from funcnet import cli
from funcnet.attacks import evaluate

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
EPS = [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _problem(rng, m=12, d=6, k=3):
  """Raw inputs in [0, 4], their statistics and labels; a softmax-linear
  model reading ``(x - mean) / std`` with float64 params."""
  x = rng.uniform(0, 4, (m, d))
  mean, std = x.mean(0), x.std(0) + 0.1
  model = funcnet.mlp([d, k], output_activation="softmax")
  params = [{"W": rng.normal(size=(d, k)), "b": rng.normal(size=k)}]
  return x, mean, std, rng.integers(0, k, m), model, params


def _sweep(model, params, xs, y, target, budget, settings, keep):
  sweep = evaluate.make_sweep(model, "cross_entropy", settings, keep)
  out = sweep(params, xs, y, target, budget, jax.random.key(0))
  # eps is traced: another list of the same length compiles nothing new
  sweep(params, xs, y, target, budget._replace(eps=2 * budget.eps),
        jax.random.key(1))
  assert sweep.compiled._cache_size() == 1
  return out


def test_fgsm_on_a_linear_model_is_the_closed_form_and_one_pgd_step(x64):
  rng = np.random.default_rng(0)
  x, mean, std, y, model, params = _problem(rng)
  eps = [0.3, 1.0]
  budget = evaluate.in_model_units(eps, mean, std, (0.0, 4.0), (6,),
                                   np.float64)
  settings = evaluate.Settings(("fgsm", "pgd"), steps=1, step_size=1.0,
                               random_start=False)
  clean, adv = _sweep(model, params, (x - mean) / std, y, y, budget,
                      settings, keep=12)
  # numpy, in raw units: z = ((x - mean) / std) W + b, dC_i/dx_i =
  # ((a_i - e_y) W^T) / std, x' = clip(x + eps sign(dC/dx), 0, 4)
  W, b = params[0]["W"], params[0]["b"]
  a = _softmax(((x - mean) / std) @ W + b)
  g = ((a - np.eye(3)[y]) @ W.T) / std
  for i, e in enumerate(eps):
    want = np.clip(x + e * np.sign(g), 0.0, 4.0)
    np.testing.assert_allclose(adv["fgsm"][1][i] * std + mean, want,
                               rtol=0, atol=1e-10)
    np.testing.assert_array_equal(adv["pgd"][1][i], adv["fgsm"][1][i])
    z_adv = ((want - mean) / std) @ W + b
    np.testing.assert_array_equal(adv["fgsm"][0][i], z_adv.argmax(-1))
  np.testing.assert_array_equal(clean, a.argmax(-1))


def test_pgd_stays_in_the_ball_and_the_range(x64):
  rng = np.random.default_rng(1)
  x, mean, std, y, _, _ = _problem(rng, m=16)
  model = funcnet.mlp([6, 5, 3], activation="tanh",
                      output_activation="softmax")
  params = model.init(jax.random.key(1))
  eps = [0.5, 3.0]
  budget = evaluate.in_model_units(eps, mean, std, (0.0, 4.0), (6,),
                                   np.float64)
  _, adv = _sweep(model, params, (x - mean) / std, y, y, budget,
                  evaluate.Settings(("pgd",), steps=5), keep=16)
  for i, e in enumerate(eps):
    raw = adv["pgd"][1][i] * std + mean
    assert np.all(np.abs(raw - x) <= e + 1e-12)
    assert np.all(raw >= -1e-12) and np.all(raw <= 4.0 + 1e-12)
    assert np.abs(raw - x).max() > 0.5 * e  # it moved


def test_targeted_pgd_raises_the_targets_probability(x64):
  rng = np.random.default_rng(2)
  x, mean, std, y, model, params = _problem(rng, m=20)
  target = (y + 1) % 3
  budget = evaluate.in_model_units([0.5], mean, std, None, (6,),
                                   np.float64)
  xs = (x - mean) / std
  clean, adv = _sweep(model, params, xs, y, target, budget,
                      evaluate.Settings(("pgd",), steps=10, targeted=True),
                      keep=20)
  W, b = params[0]["W"], params[0]["b"]
  p = lambda u: _softmax(u @ W + b)[np.arange(20), target]
  assert np.all(p(adv["pgd"][1][0]) > p(xs))
  acc = evaluate.accuracies(adv["pgd"][0], y, target)
  hit = adv["pgd"][0][0] == target
  assert acc["success"] == [hit.mean()]  # no label is its own target here


def test_eps_in_data_units_is_eps_over_std_per_feature():
  b = evaluate.in_model_units([0.0, 2.0], np.array([1.0, 4.0]),
                              np.array([0.5, 2.0]), (0.0, 16.0), (2,))
  np.testing.assert_array_equal(b.eps, [[0, 0], [4, 1]])
  np.testing.assert_array_equal(b.lo, [-2, -2])
  np.testing.assert_array_equal(b.hi, [30, 6])
  free = evaluate.in_model_units([1.0], None, None, None, (2,))
  assert np.all(free.eps == 1) and np.all(np.isinf(free.lo))


def test_the_report_of_a_targeted_attack_has_a_success_column():
  from funcnet.experiment.attack import markdown
  record = {
      "run": "r", "epoch": 3, "data": "d", "examples": 10, "units": "U",
      "eps": [1.0, 2.0], "eps_model_units": [[0.5, 4.0], [1.0, 8.0]],
      "clean_accuracy": 0.9,
      "settings": {"steps": 4, "step_size": 0.625, "random_start": False,
                   "targeted": True, "target": 3, "source": "manual"},
      "methods": {"pgd": {"accuracy": [0.5, 0.25],
                          "success": [0.125, 0.75]}}}
  text = markdown(record)
  assert "| eps | clean acc | PGD acc | PGD success |" in text
  assert "| 2 | 90.0% | 25.0% | 75.0% |" in text
  assert "eps is in U." in text and "targeted at 3" in text
  assert "1 to 8 at eps = 2" in text


TINY = ["train.epochs=6", "optimizer.learning_rate=0.01", "model.mlp.hidden=[16]", "data.train_per_class=20",
        "train.batch_size=50", "run.plots=false", "run.checkpoint_every=6"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("runs") / "digits")
  assert cli.main(["train", *[a for o in TINY for a in ("--set", o)],
                   "--progress", "never", "--out", out]) == 0
  return out


def test_a_digits_mlp_under_attack_through_the_command(run, tmp_path, capsys):
  out = str(tmp_path / "attack")
  assert cli.main(["attack", "--run", run, "--eps",
                   ",".join(map(str, EPS)), "--out", out]) == 0
  assert "| eps | clean acc | FGSM acc | PGD acc |" in capsys.readouterr().out
  for name in ("attack.md", "results.json", "accuracy_vs_eps.png",
               "examples.png"):
    assert os.path.getsize(os.path.join(out, name)) > 0
  with open(os.path.join(out, "results.json")) as f:
    r = json.load(f)
  assert r["clean_accuracy"] == pytest.approx(
      funcnet.load_run(run).evaluate()["test_accuracy"], abs=1e-6)
  fgsm, pgd = (np.array(r["methods"][m]["accuracy"]) for m in ("fgsm", "pgd"))
  assert fgsm[0] == pgd[0] == pytest.approx(r["clean_accuracy"])  # eps 0
  assert np.all(pgd <= fgsm + 0.005)
  assert np.all(np.diff(pgd) <= 0) and pgd[-1] < 0.5 * pgd[0]
  assert "data's own units" in r["units"] and r["valid_range"] == [0, 16]
  with np.load(os.path.join(run, "stats.npz")) as f:
    std = f["std"]
  np.testing.assert_allclose(r["eps_model_units"][2],
                             [1 / std.max(), 1 / std.min()], rtol=1e-6)


@pytest.mark.parametrize("argv, words", [
    (["--eps", "1,-0.5"], "expected one or more numbers >= 0"),
    (["--method", "fgsm,cw"], "attack method 'cw'"),
    (["--steps", "0"], "attack steps 0"),
    (["--targeted", "--target-class", "10"], "target class 10"),
])
def test_bad_arguments_are_one_line_and_exit_2(run, argv, words, capsys):
  assert cli.main(["attack", "--run", run, *argv]) == 2
  err = capsys.readouterr().err
  assert words in err and err.count("\n") == 1


def test_a_missing_run_or_a_ratings_run_is_one_line(run, tmp_path, capsys):
  assert cli.main(["attack", "--run", str(tmp_path / "nope")]) == 2
  err = capsys.readouterr().err
  assert "nope" in err and err.count("\n") == 1
  ratings = str(tmp_path / "ratings")
  assert cli.main(["train", "--config", CONFIGS + "/ratings_mf.toml", "--set",
                   "train.epochs=1", "--set", "run.plots=false",
                   "--progress", "never", "--out", ratings]) == 0
  capsys.readouterr()
  assert cli.main(["attack", "--run", ratings]) == 2
  err = capsys.readouterr().err
  assert "expected a classifier of real-valued inputs" in err
  assert err.count("\n") == 1


@pytest.mark.slow
def test_pgd_takes_a_clean_trained_digits_mlp_below_10_percent(tmp_path,
                                                               capsys):
  """The issue's target: configs/digits_mlp.toml as shipped (~98% clean),
  under PGD at the default eps list, is below 10% at the largest eps."""
  run = str(tmp_path / "digits_mlp")
  assert cli.main(["train", "--config", CONFIGS + "/digits_mlp.toml", "--set",
                   "run.plots=false", "--progress", "never", "--out",
                   run]) == 0
  assert cli.main(["attack", "--run", run]) == 0
  capsys.readouterr()
  with open(os.path.join(run, "attack", "results.json")) as f:
    r = json.load(f)
  fgsm, pgd = (np.array(r["methods"][m]["accuracy"]) for m in ("fgsm", "pgd"))
  assert r["eps"] == [0.5, 1, 2, 4, 8] and r["clean_accuracy"] > 0.95
  assert pgd[-1] < 0.10
  assert np.all(pgd <= fgsm + 0.005) and np.all(np.diff(pgd) <= 0)
