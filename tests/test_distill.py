"""Knowledge distillation (funcnet.losses.distillation, funcnet.experiment.
distill, the [distill] config table).

The loss's value is checked against the formula in plain numpy; its
hand-written dC/dz, and a student's manual gradient through it, against
jax.grad in float64, and at alpha = 0 against plain cross-entropy's; the
teacher's logits in the targets against the teacher's own predictions; a
command-line run distils a digits student; each mistake is one line (exit
status 2 from the command line).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import autodiff, backprop, cli, config, experiment, losses
from funcnet.errors import ConfigError
from funcnet.models import mlp

# --- the loss against numpy and autodiff --------------------------------------


def _np_log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _np_distill(z, zt, labels, t, a):
  """alpha T^2 KL(q^T || p^T) + (1 - alpha) CE, averaged: Hinton et al."""
  log_p, log_q = _np_log_softmax(z / t), _np_log_softmax(zt / t)
  kl = (np.exp(log_q) * (log_q - log_p)).sum(-1)
  ce = -np.take_along_axis(_np_log_softmax(z), labels[..., None], -1)[..., 0]
  return np.mean(a * t * t * kl + (1 - a) * ce)


def _targets(zt, labels):
  return np.concatenate([zt, labels[..., None].astype(zt.dtype)], -1)


@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 5)])
def test_value_and_grad_match_numpy_and_jax_grad(x64, shape):
  rng = np.random.default_rng(0)
  z, zt = 3 * rng.normal(size=shape), 3 * rng.normal(size=shape)
  labels = rng.integers(0, shape[-1], size=shape[:-1])
  t, a = 2.5, 0.7
  loss = losses.distillation(t, a)
  y = _targets(zt, labels)

  @jax.jit
  def both(z, y, labels):
    return (loss.batch(z, y), loss.batch_grad(z, y), jax.grad(loss.batch)(z, y),
            loss.batch(z, labels), loss.batch_grad(z, labels),
            jax.grad(loss.batch)(z, labels))
  c, g, g_ad, c_hard, g_hard, g_hard_ad = both(z, y, labels)
  np.testing.assert_allclose(c, _np_distill(z, zt, labels, t, a), rtol=1e-12)
  np.testing.assert_allclose(g, g_ad, rtol=0, atol=1e-10)
  # Plain labels (the held-out split): the cross-entropy alone.
  np.testing.assert_allclose(c_hard, _np_distill(z, zt, labels, t, 0.0),
                             rtol=1e-12)
  np.testing.assert_allclose(g_hard, g_hard_ad, rtol=0, atol=1e-10)


def test_a_students_manual_gradient_matches_autodiff_and_alpha_0_is_ce(x64):
  model = mlp([4, 7, 3], "tanh", "softmax")
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(8, 4)))
  labels = jnp.asarray(rng.integers(0, 3, size=8))
  y = jnp.asarray(_targets(rng.normal(size=(8, 3)), np.asarray(labels)))
  params = model.init(jax.random.key(0), jnp.float64)
  loss, hard = losses.distillation(4.0, 0.9), losses.distillation(4.0, 0.0)

  @jax.jit
  def all_four(p):
    return (backprop.value_and_grad(model, loss)(p, x, y),
            autodiff.value_and_grad(model, loss)(p, x, y),
            backprop.value_and_grad(model, hard)(p, x, y),
            autodiff.value_and_grad(model, "cross_entropy")(p, x, labels))
  (c_m, g_m), (c_a, g_a), (c_0, g_0), (c_ce, g_ce) = all_four(params)
  np.testing.assert_allclose(c_m, c_a, rtol=1e-12)
  for m, a in zip(jax.tree_util.tree_leaves(g_m), jax.tree_util.tree_leaves(g_a)):
    np.testing.assert_allclose(m, a, rtol=0, atol=1e-10)
  # alpha = 0: the teacher's logits are ignored, the step is cross-entropy's.
  np.testing.assert_allclose(c_0, c_ce, rtol=1e-12)
  for m, a in zip(jax.tree_util.tree_leaves(g_0), jax.tree_util.tree_leaves(g_ce)):
    np.testing.assert_allclose(m, a, rtol=0, atol=1e-10)


# --- a teacher run, a student from it -----------------------------------------

TEACHER = ["model.mlp.hidden=[16]", "train.epochs=1", "run.plots=false",
           "train.batch_size=64", "optimizer.learning_rate=0.01"]
STUDENT = ["model.mlp.hidden=[8]", "train.epochs=1", "run.plots=false",
           "run.progress='never'"]


def quiet(*a, **k):
  del a, k


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  run = str(tmp_path_factory.mktemp("runs") / "teacher")
  experiment.train_and_evaluate(config.load(None, TEACHER), run,
                                progress="never", log=quiet)
  return run


def test_the_targets_carry_the_teachers_logits_and_the_labels(teacher):
  cfg = config.load(None, STUDENT + [f"distill.teacher={teacher!r}"])
  setup = experiment.Setup(cfg)
  plain = experiment.build_dataset(cfg)
  # The teacher's own prediction path: raw inputs, its own statistics.
  raw = setup.ds.x_train * setup.ds.info["std"] + setup.ds.info["mean"]
  probs = np.asarray(experiment.load_run(teacher).predict(raw))
  y = setup.ds.y_train
  assert y.shape == (len(plain.y_train), 11)
  np.testing.assert_array_equal(y[:, -1], plain.y_train)
  np.testing.assert_allclose(np.asarray(jax.nn.softmax(y[:, :10])), probs,
                             atol=1e-5)
  np.testing.assert_array_equal(setup.ds.y_test, plain.y_test)


def test_the_command_line_distils_a_student(teacher, tmp_path):
  out = str(tmp_path / "student")
  code = cli.main(["train", "--out", out, "--progress", "never",
                   *[a for s in STUDENT for a in ("--set", s)],
                   "--set", f"distill.teacher={teacher!r}",
                   "--set", "train.grads='manual'", "--set", "train.epochs=2",
                   "--set", "optimizer.learning_rate=0.03"])
  assert code == 0
  with open(os.path.join(out, "summary.json")) as f:
    summary = json.load(f)
  assert summary["test_accuracy"] > 0.5  # ten classes: chance is 0.1


# --- mistakes -------------------------------------------------------------------

@pytest.mark.parametrize("key, value, words", [
    ("distill.temperature", "0", "> 0"),
    ("distill.temperature", "-1.5", "> 0"),
    ("distill.alpha", "1.5", "[0.0, 1.0]"),
    ("distill.alpha", "-0.1", "[0.0, 1.0]"),
])
def test_bad_temperature_or_alpha_is_a_config_error(key, value, words):
  with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
    config.load(None, [f"{key}={value}"])
  assert words in str(e.value) and "\n" not in str(e.value)


def test_a_missing_teacher_is_exit_status_2(tmp_path, capsys):
  code = cli.main(["train", "--out", str(tmp_path / "s"), "--set",
                   f"distill.teacher={str(tmp_path / 'nope')!r}"])
  err = capsys.readouterr().err
  assert code == 2 and "distill.teacher" in err and "no such run" in err
  assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("extra, words", [
    (["data.classes=[0,1,2]"], "10 outputs, the student 3"),
    (["data.name='regression'", "train.loss='mse'"], "classification"),
    (["train.loss='hinge'", "model.mlp.output_activation='identity'"],
     "cross_entropy"),
])
def test_a_teacher_that_does_not_fit_is_a_config_error(teacher, extra, words):
  with pytest.raises(ConfigError, match="distill|train.loss") as e:
    experiment.Setup(config.load(
        None, STUDENT + extra + [f"distill.teacher={teacher!r}"]))
  assert words in str(e.value) and "\n" not in str(e.value)
