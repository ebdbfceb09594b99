"""Config loading: defaults, TOML, --set with type checks, one-line errors.

In-process through ``funcnet.cli.main`` (the same code the console script
runs), so each case costs no JAX compilation."""

import json

import pytest

from funcnet import cli, config
from funcnet.errors import ConfigError


def test_every_default_key_is_documented():
  assert set(config.flatten(config.DEFAULTS)) <= set(config.DOCS)


def test_configs_readme_lists_every_key():
  with open("configs/README.md") as f:
    readme = f.read()
  for key in config.flatten(config.DEFAULTS):
    assert f"`{key}`" in readme, key


def test_file_then_overrides(tmp_path):
  p = tmp_path / "c.toml"
  p.write_text('[train]\nepochs = 7\n[model.mlp]\nhidden = [5, 6]\n')
  cfg = config.load(p, ["optimizer.learning_rate=0.5", "optimizer.name=sgd",
                        "model.mlp.hidden=[9]", "train.grads=manual"])
  assert cfg["name"] == "c"
  assert cfg["train"]["epochs"] == 7
  assert cfg["model"]["mlp"]["hidden"] == [9]
  assert cfg["optimizer"]["learning_rate"] == 0.5
  assert cfg["optimizer"]["name"] == "sgd"
  assert cfg["train"]["grads"] == "manual"
  # Untouched keys keep their defaults.
  assert cfg["train"]["batch_size"] == config.DEFAULTS["train"]["batch_size"]


def test_ints_are_accepted_for_floats_not_the_reverse():
  assert config.load(None, ["optimizer.learning_rate=1"])["optimizer"]["learning_rate"] == 1.0
  with pytest.raises(ConfigError, match="expected an integer"):
    config.load(None, ["train.epochs=2.5"])


def test_round_trip_through_json():
  cfg = config.load(None, ["train.epochs=3"])
  assert config.from_dict(json.loads(config.to_json(cfg))) == cfg


BAD = [
    (["train.epoch=5"], r"unknown config key 'train.epoch'; did you mean 'train.epochs'\?"),
    (["optimizer.lerning_rate=0.1"], "did you mean 'optimizer.learning_rate'"),
    (["train.epochs=many"], r"'train.epochs' = 'many' is a string; expected an integer"),
    (["optimizer.learning_rate=-0.1"], r"optimizer.learning_rate = -0.1: .*lr=-0.1 is out of range; expected a number >= 0"),
    (["optimizer.b1=1.5"], r"config \[optimizer\]: adam: b1=1.5 is out of range"),
    (["optimizer.name=adam", "optimizer.beta=0.5"],
     r"config key 'optimizer.beta' does not apply to optimizer.name = 'adam'; expected it only with optimizer.name = momentum \| nesterov"),
    (["optimizer.name=sgd", "optimizer.eps=1e-3"], "'optimizer.eps' does not apply to optimizer.name = 'sgd'"),
    (["schedule.alpha=0.5"], "'schedule.alpha' does not apply to schedule.name = 'constant'; expected it only with schedule.name = cosine_decay"),
    (["model.cnn.channels=[4]"], "config key 'model.cnn.channels' belongs to model.kind = 'cnn'; this config's model.kind is 'mlp'"),
    (["model.kind=cnn", "model.mlp.hidden=[8]"], "'model.mlp.hidden' belongs to model.kind = 'mlp'; this config's model.kind is 'cnn'"),
    (["model.kind=mf"], "model.kind = 'mf' needs ratings data; 'digits' is classification data"),
    (["train.batch_size=0"], r"'train.batch_size' = 0 is out of range; expected >= 1"),
    (["train.batch_size=100000"], "larger than the 1437 training examples"),
    (["model.mlp.activation=rleu"], r"unknown activation 'rleu'; expected one of: .*relu"),
    (["train.loss=focal"], "unknown loss 'focal'"),
    (["optimizer.name=adamm"], r"'optimizer.name' = 'adamm'; expected one of .*adam"),
    (["data.name=mnist"], "unknown dataset 'mnist'"),
    (["data.name=missing.npz"], "missing.npz"),
    (["train.grads=symbolic"], "expected one of manual, autodiff"),
    (["model.mlp.dropout=1.0"], r"config \[model.mlp\]: dropout 1.0 must be in \[0, 1\)"),
    (["model.mlp.hidden=[0]"], r"config key 'model.mlp.hidden' entry 0 must be a positive integer"),
    (["train.loss=mse"], "does not suit the classification data"),
    (["schedule.name=cosine"], "expected one of"),
    (["model.kind=vgg"], "'model.kind' = 'vgg'"),
    (["nonsense"], "expected key=value"),
]


@pytest.mark.parametrize("overrides, message", BAD)
def test_bad_config_is_one_line_and_status_2(overrides, message, capsys, tmp_path):
  argv = ["train", "--out", str(tmp_path / "run")]
  for o in overrides:
    argv += ["--set", o]
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert err.startswith("funcnet: error: ")
  assert err.count("\n") == 1, err
  import re
  assert re.search(message, err), err


def test_missing_and_broken_config_files(capsys, tmp_path):
  assert cli.main(["train", "--config", str(tmp_path / "nope.toml")]) == 2
  assert "does not exist" in capsys.readouterr().err
  bad = tmp_path / "bad.toml"
  bad.write_text("[train\nepochs = 3")
  assert cli.main(["train", "--config", str(bad)]) == 2
  assert "is not valid TOML" in capsys.readouterr().err
  wrong = tmp_path / "wrong.toml"
  wrong.write_text("[trian]\nepochs = 3\n")
  assert cli.main(["train", "--config", str(wrong)]) == 2
  assert "unknown config section 'trian'; did you mean 'train" in capsys.readouterr().err


def test_shipped_configs_load():
  import glob
  paths = sorted(glob.glob("configs/*.toml"))
  assert len(paths) >= 4
  for p in paths:
    config.load(p)


def test_keys_that_apply_are_accepted_and_a_saved_config_is_not_held_to_them():
  # momentum uses beta, cosine_decay uses alpha and decay_steps
  cfg = config.load(None, ["optimizer.name=momentum", "optimizer.beta=0.5",
                           "schedule.name=cosine_decay", "schedule.alpha=0.1",
                           "model.kind=cnn", "model.cnn.channels=[4]"])
  assert cfg["optimizer"]["beta"] == 0.5 and cfg["schedule"]["alpha"] == 0.1
  # config.json holds every key of every table: only the overrides count
  saved = json.loads(config.to_json(cfg))
  assert config.from_dict(saved, ["optimizer.learning_rate=0.5"]) is not None
  with pytest.raises(ConfigError, match="'optimizer.b1' does not apply"):
    config.from_dict(saved, ["optimizer.b1=0.5"])


def test_a_file_setting_a_key_its_optimizer_ignores_is_refused(tmp_path):
  p = tmp_path / "c.toml"
  p.write_text('[optimizer]\nname = "sgd"\nbeta = 0.9\n')
  with pytest.raises(ConfigError, match="'optimizer.beta' does not apply to "
                     "optimizer.name = 'sgd'"):
    config.load(p)
