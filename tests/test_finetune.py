"""Fine-tuning (funcnet.finetune) and the data filters it is shown with.

The head of every classifier kind is found by an independent rule (the only
arrays whose shape depends on the class count); a frozen body is checked
bit for bit after training from a real checkpoint; the class and few-label
filters are checked against plain numpy.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from funcnet import cli, config, data, experiment, finetune
from funcnet.run import checkpoints
from funcnet.errors import ConfigError
from funcnet.models import mlp, MODELS

# --- the filters, against numpy -----------------------------------------------


def test_select_classes_keeps_and_relabels_both_splits():
  ds = data.digits()
  classes = [7, 2, 9]
  sub = data.select_classes(ds, classes)
  assert sub.n_classes == 3 and sub.info["classes"] == classes
  for x, y, xs, ys in ((ds.x_train, ds.y_train, sub.x_train, sub.y_train),
                       (ds.x_test, ds.y_test, sub.x_test, sub.y_test)):
    keep = np.isin(y, classes)
    np.testing.assert_array_equal(xs, x[keep])
    np.testing.assert_array_equal(ys, [classes.index(v) for v in y[keep]])
    assert ys.dtype == np.int32


def _first_per_class(y, n, seed):
  """The reference: walk the seed's permutation, take a class's first n."""
  taken, keep = {}, []
  for i in np.random.default_rng(seed).permutation(len(y)):
    if taken.get(y[i], 0) < n:
      taken[y[i]] = taken.get(y[i], 0) + 1
      keep.append(i)
  return np.sort(keep)


@pytest.mark.parametrize("n, seed", [(1, 0), (5, 0), (5, 3), (40, 1)])
def test_few_per_class_matches_the_reference(n, seed):
  ds = data.digits()
  few = data.few_per_class(ds, n, seed)
  keep = _first_per_class(ds.y_train, n, seed)
  np.testing.assert_array_equal(few.x_train, ds.x_train[keep])
  np.testing.assert_array_equal(few.y_train, ds.y_train[keep])
  np.testing.assert_array_equal(np.bincount(few.y_train, minlength=10),
                                np.minimum(np.bincount(ds.y_train), n))
  assert few.x_test is ds.x_test and few.y_test is ds.y_test


def test_few_per_class_keeps_all_of_a_rare_class_and_depends_on_the_seed():
  y = np.array([0] * 10 + [1] * 2 + [2] * 7, np.int32)
  ds = data.Dataset(np.arange(len(y), dtype=np.float32)[:, None], y,
                    np.zeros((1, 1), np.float32), np.zeros(1, np.int32),
                    "classification", 3, "toy", {})
  few = data.few_per_class(ds, 3, seed=0)
  assert np.bincount(few.y_train).tolist() == [3, 2, 3]
  assert not np.array_equal(few.x_train, data.few_per_class(ds, 3, seed=1).x_train)


@pytest.mark.parametrize("classes", [[], [1, 1], [10], [-1], ["a"], [True, 2]])
def test_bad_classes_are_one_line_config_errors(classes):
  with pytest.raises(ConfigError, match="data.classes"):
    data.select_classes(data.digits(), classes)


def test_filters_need_classification_data():
  with pytest.raises(ConfigError, match="data.classes"):
    data.select_classes(data.ratings(n_users=5, n_items=5), [0])
  with pytest.raises(ConfigError, match="data.train_per_class"):
    data.few_per_class(data.regression(n=20), 2)
  with pytest.raises(ConfigError, match="out of range"):
    config.load(None, ["data.train_per_class=-1"])


def test_build_dataset_filters_then_standardises_with_the_kept_examples():
  cfg = config.load(None, ["data.classes=[5,6,7,8,9]", "data.train_per_class=5",
                           "data.seed=2"])
  ds = experiment.build_dataset(cfg)
  raw = data.few_per_class(data.select_classes(data.digits(seed=2),
                                               [5, 6, 7, 8, 9]), 5, 2)
  assert ds.n_classes == 5 and len(ds.y_train) == 25
  assert len(ds.y_test) == len(raw.y_test)
  np.testing.assert_allclose(ds.info["mean"], raw.x_train.mean(0), rtol=1e-6)
  np.testing.assert_array_equal(ds.y_train, raw.y_train)
  # Given statistics are applied as they are.
  mean, std = np.full(64, 3.0), np.full(64, 2.0)
  given = experiment.build_dataset(cfg, (mean, std))
  np.testing.assert_allclose(given.x_test, (raw.x_test - 3) / 2, rtol=1e-6)


# --- where the head is ----------------------------------------------------------

KINDS = {
    "mlp": lambda k: mlp([6, 4, 3, k]),
    "cnn_global_pool": lambda k: MODELS["cnn"]((6,), k, channels=(2, 3)),
    "cnn_flat_hidden": lambda k: MODELS["cnn"]((6,), k, channels=(2,),
                                               global_pool=False, hidden=(4,)),
    "rnn": lambda k: MODELS["rnn"]((6,), k, hidden=3),
    "gru_bidirectional": lambda k: MODELS["gru"]((6,), k, hidden=3,
                                                 bidirectional=True),
    "transformer_cls": lambda k: MODELS["transformer"]((6,), k, d_model=4,
                                                       n_heads=2, n_layers=1,
                                                       d_ff=4, pool="cls"),
}


@pytest.mark.parametrize("kind", KINDS)
def test_the_head_is_what_depends_on_the_class_count(kind, getkey):
  small, large = KINDS[kind](3), KINDS[kind](7)
  p3, p7 = small.init(getkey()), large.init(getkey())
  tags = jax.tree_util.tree_leaves(finetune.labels(small, p3))
  differ = [np.shape(a) != np.shape(b) for a, b in
            zip(jax.tree_util.tree_leaves(p3), jax.tree_util.tree_leaves(p7))]
  # W's output axis and b both have the class count; nothing else does.
  assert [t == "head" for t in tags] == differ
  head = finetune.get_at(p7, finetune.head_path(large))
  assert head["W"].shape[1] == 7 and head["b"].shape == (7,)


@pytest.mark.parametrize("kind", KINDS)
def test_replace_head_keeps_the_body_and_takes_the_new_head(kind, getkey):
  old, new = KINDS[kind](3), KINDS[kind](5)
  pre, fresh = old.init(getkey()), new.init(getkey())
  params = finetune.replace_head(new, pre, fresh)
  path = finetune.head_path(new)
  for a, b in zip(jax.tree_util.tree_leaves(finetune.set_at(params, path, None)),
                  jax.tree_util.tree_leaves(finetune.set_at(pre, path, None))):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree_util.tree_leaves(finetune.get_at(params, path)),
                  jax.tree_util.tree_leaves(finetune.get_at(fresh, path))):
    np.testing.assert_array_equal(a, b)
  z = new.logits(params, jnp.ones((2, 6)))
  assert z.shape == (2, 5)


def test_a_different_body_or_a_model_without_head_is_a_config_error(getkey):
  pre = mlp([6, 4, 3]).init(getkey())
  other = mlp([6, 8, 5])
  with pytest.raises(ConfigError, match=r"shape \(6, 4\) but this config's model "
                                        r"needs \(6, 8\)"):
    finetune.replace_head(other, pre, other.init(getkey()))
  deeper = mlp([6, 4, 4, 5])
  with pytest.raises(ConfigError, match="laid out differently"):
    finetune.replace_head(deeper, pre, deeper.init(getkey()))
  with pytest.raises(ConfigError, match="'mf' has none"):
    finetune.head_path(MODELS["mf"](n_users=3, n_items=3))


@pytest.mark.parametrize("freeze, scale", [(True, 0.0), (False, 0.25), (False, 0.0)])
def test_optimizer_steps_the_head_and_scales_or_zeroes_the_body(freeze, scale,
                                                                 getkey):
  model = mlp([4, 3, 2])
  params = model.init(getkey())
  grads = jax.tree_util.tree_map(lambda p: jnp.ones_like(p) * 0.5, params)
  opt = finetune.optimizer(optax.sgd(0.1), model, freeze, scale)
  updates, _ = opt.update(grads, opt.init(params), params)
  body, head = updates[0], updates[-1]
  for u in jax.tree_util.tree_leaves(head):
    np.testing.assert_allclose(u, -0.05, rtol=1e-6)
  want = 0.0 if freeze else -0.05 * scale
  for u in jax.tree_util.tree_leaves(body):
    np.testing.assert_allclose(u, want, rtol=1e-6)  # float32 params
    if freeze:
      assert not np.any(u)  # exact zeros, not tiny steps


# --- from a real checkpoint -------------------------------------------------------

PRE = ["data.classes=[0,1,2,3,4]", "model.mlp.hidden=[16]", "train.epochs=3",
       "run.plots=false"]
FT = ["data.classes=[5,6,7,8,9]", "data.train_per_class=5",
      "model.mlp.hidden=[16]", "train.batch_size=5", "train.epochs=4",
      "optimizer.learning_rate=0.01", "run.plots=false", "seed=1"]


def quiet(*a, **k):
  del a, k


@pytest.fixture(scope="module")
def pre_run(tmp_path_factory):
  run = str(tmp_path_factory.mktemp("runs") / "pre")
  experiment.train_and_evaluate(config.load(None, PRE), run, progress="never",
                                log=quiet)
  setup = experiment.Setup(config.load(None, PRE))
  _, params, _ = checkpoints.restore(os.path.join(run, "checkpoints"),
                                     *setup.init_state())
  return run, params, setup.ds.info


def _trained(run):
  with open(os.path.join(run, "config.json")) as f:
    setup = experiment.Setup(config.from_dict(json.load(f)))
  _, params, _ = checkpoints.restore(os.path.join(run, "checkpoints"),
                                     *setup.init_state())
  return params


def test_fine_tuning_starts_from_the_run_with_a_new_head(pre_run):
  run, pre, info = pre_run
  setup = experiment.Setup(config.load(None, FT + [f"finetune.from_run={run!r}"]))
  assert setup.pretrained.epoch == 3
  params, _ = setup.init_state()
  assert params[-1]["W"].shape == (16, 5) and params[-1]["b"].shape == (5,)
  np.testing.assert_array_equal(params[0]["W"], pre[0]["W"])
  np.testing.assert_array_equal(params[0]["b"], pre[0]["b"])
  assert pre[-1]["W"].shape == (16, 5)
  assert not np.array_equal(params[-1]["W"], pre[-1]["W"])
  # The body sees inputs scaled as in pre-training, not by 25 examples.
  np.testing.assert_array_equal(setup.ds.info["mean"], info["mean"])
  np.testing.assert_array_equal(setup.ds.info["std"], info["std"])


def test_frozen_body_stays_bit_for_bit_while_the_head_trains(pre_run, tmp_path):
  run, pre, _ = pre_run
  cfg = config.load(None, FT + [f"finetune.from_run={run!r}"])
  start, _ = experiment.Setup(cfg).init_state()
  out = str(tmp_path / "ft")
  experiment.train_and_evaluate(cfg, out, progress="never", log=quiet)
  after = _trained(out)
  np.testing.assert_array_equal(after[0]["W"], pre[0]["W"])
  np.testing.assert_array_equal(after[0]["b"], pre[0]["b"])
  assert not np.array_equal(after[-1]["W"], start[-1]["W"])
  assert not np.array_equal(after[-1]["b"], start[-1]["b"])


def test_an_unfrozen_body_moves(pre_run, tmp_path):
  run, pre, _ = pre_run
  cfg = config.load(None, FT + [f"finetune.from_run={run!r}",
                                "finetune.freeze_body=false",
                                "finetune.body_lr_scale=0.1"])
  out = str(tmp_path / "ft")
  experiment.train_and_evaluate(cfg, out, progress="never", log=quiet)
  after = _trained(out)
  assert not np.array_equal(after[0]["W"], pre[0]["W"])


def test_a_missing_run_folder_is_exit_status_2(tmp_path, capsys):
  code = cli.main(["train", "--out", str(tmp_path / "ft"), "--set",
                   f"finetune.from_run={str(tmp_path / 'nope')!r}"])
  assert code == 2
  assert "finetune.from_run" in capsys.readouterr().err
