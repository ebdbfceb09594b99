"""A model kind of the user's own (funcnet.register_kind), defined in a file
outside the package: configs, the command line, run folders that import
nothing by themselves; losses and activations given as plain functions;
``data.load``'s standardised default."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet
from funcnet import cli, config, experiment
from funcnet.errors import ConfigError
from funcnet.models import registry, user

# A one-hidden-layer tanh network with its hand-written backward: what a
# user writes in their own file (see docs/your-own-layer.md).
KIND_SOURCE = textwrap.dedent('''
    import jax, jax.numpy as jnp
    import funcnet
    from funcnet import backprop

    def build(in_shape, n_out, width=8):
      d = in_shape[0]
      def init(key, dtype=jnp.float32):
        k1, k2 = jax.random.split(key)
        return {"W1": jax.random.normal(k1, (d, width), dtype) / d ** 0.5,
                "b1": jnp.zeros(width, dtype),
                "W2": jax.random.normal(k2, (width, n_out), dtype) / width ** 0.5,
                "b2": jnp.zeros(n_out, dtype)}
      def logits(p, x, key=None):
        return jnp.tanh(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
      def backward(model, loss):
        def fn(p, x, y, key=None):
          h = jnp.tanh(x @ p["W1"] + p["b1"])
          c, dz = backprop.loss_and_delta(model, loss, h @ p["W2"] + p["b2"], y)
          dh = dz @ p["W2"].T * (1 - h * h)
          return c, {"W1": x.T @ dh, "b1": dh.sum(0), "W2": h.T @ dz,
                     "b2": dz.sum(0)}
        return fn
      return funcnet.Model(init, logits, "softmax", tuple(in_shape), n_out,
                           {"kind": "KIND", "in_shape": list(in_shape),
                            "n_out": n_out, "width": width}, backward=backward)

    funcnet.register_kind("KIND", build, defaults={"width": 8},
                          docs={"width": "hidden units"})
    ''')


@pytest.fixture
def clean_registry(monkeypatch):
  """Kinds registered in the test are gone after it: the registry, the
  config's tables and docs, the files imported by path."""
  monkeypatch.setattr(registry, "KINDS", dict(registry.KINDS))
  monkeypatch.setitem(config.DEFAULTS, "model", dict(config.DEFAULTS["model"]))
  monkeypatch.setattr(config, "DOCS", dict(config.DOCS))
  monkeypatch.setattr(user, "_FILES", {})
  before = set(sys.modules)
  yield
  for name in set(sys.modules) - before:
    if name.startswith(("kinds_", "funcnet_user_")):
      del sys.modules[name]


def _kind_file(tmp_path, kind: str):
  path = tmp_path / f"kinds_{kind}.py"
  path.write_text(KIND_SOURCE.replace("KIND", kind))
  return path


def _toml(tmp_path, kind, extra=""):
  path = tmp_path / "my.toml"
  path.write_text(f'[model]\nkind = "{kind}"\nimport = "kinds_{kind}.py"\n'
                  f'[model.{kind}]\nwidth = 4\n[train]\nepochs = 1\n'
                  f'batch_size = 40\n[data]\ntrain_per_class = 8\n'
                  f'[run]\nplots = false\n{extra}')
  return path


def test_a_kind_in_a_users_file_trains_and_its_run_opens_only_when_allowed(
    tmp_path, clean_registry, capsys):
  _kind_file(tmp_path, "tiny")
  out = str(tmp_path / "run")
  subprocess.run([sys.executable, "-m", "funcnet.cli", "train", "--config",
                  str(_toml(tmp_path, "tiny")), "--out", out,
                  "--progress", "never"], check=True, capture_output=True,
                 )
  assert "tiny" not in registry.KINDS  # nothing imported here yet
  with open(os.path.join(out, "config.json")) as f:
    saved = json.load(f)
  module = str((tmp_path / "kinds_tiny.py").resolve())
  assert saved["model"]["import"] == module  # recorded by its absolute path
  # Opening the run imports nothing the user did not name: one line each.
  for argv in (["eval", "--run", out], ["train", "--resume", "--out", out]):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"--import {module}" in err
  with pytest.raises(ConfigError, match=r"imports=\["):
    funcnet.load_run(out)
  assert "tiny" not in registry.KINDS
  # Allowed: it loads, and evaluates to the numbers the training process wrote.
  run = funcnet.load_run(out, imports=[module])
  with open(os.path.join(out, "summary.json")) as f:
    summary = json.load(f)
  got = run.evaluate()
  assert got["test_accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)
  assert got["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-5)


def test_the_kinds_table_and_its_inapplicable_keys(tmp_path, clean_registry):
  _kind_file(tmp_path, "small")
  cfg = config.load(_toml(tmp_path, "small"))
  assert cfg["model"]["small"] == {"width": 4}
  assert config.DEFAULTS["model"]["small"] == {"width": 8}
  assert "| `model.small.width` | `8` | hidden units |" in config.markdown_table()
  assert "small" in config.DOCS["model.kind"]
  for bad, match in (("model.small.depth=2", "unknown config key 'model.small.depth'"),
                     ("model.mlp.hidden=[3]", "belongs to model.kind = 'mlp'")):
    with pytest.raises(ConfigError, match=match):
      config.load(_toml(tmp_path, "small"), [bad])
  with pytest.raises(ConfigError, match="no file"):
    config.load(None, ["model.import=nowhere/kinds.py"])
  with pytest.raises(ConfigError, match="no module named 'no_such_module_xyz'"):
    config.load(None, ["model.import=no_such_module_xyz"])


def test_gradcheck_fills_the_manual_column_of_a_users_kind(tmp_path,
                                                          clean_registry, x64):
  _kind_file(tmp_path, "checked")
  report, heading = experiment.gradcheck(config.load(_toml(tmp_path, "checked")), 4)
  assert "checked" in heading and report.ok()
  assert all(r.manual_autodiff_abs is not None for r in report.rows), str(report)


def test_registering_after_the_config_was_imported(clean_registry):
  assert "late" not in config.DEFAULTS["model"]

  @funcnet.register_kind("late", defaults={"width": 3}, docs={"width": "w"})
  def late(in_shape, n_out, width=3):
    return funcnet.mlp([in_shape[0], width, n_out])

  assert registry.KINDS["late"].build is late
  cfg = config.load(None, ["model.kind=late", "model.late.width=5"])
  assert cfg["model"]["late"] == {"width": 5}
  assert registry.from_config("late", cfg["model"]["late"],
                              funcnet.model.DataSpec("d", "classification",
                                                     (6,), "float32", 2)
                              ).spec["sizes"] == [6, 5, 2]
  funcnet.register_kind("late", late, defaults={"width": 4}, docs={"width": "w"})
  assert config.DEFAULTS["model"]["late"] == {"width": 4}  # run again: replaces
  with pytest.raises(ConfigError, match="already registered"):
    funcnet.register_kind("mlp", late)
  with pytest.raises(ConfigError, match="is not registered.*'their_models'"):
    config.from_dict({"model": {"kind": "theirs", "import": "their_models"}})


def test_an_installed_packages_entry_point_is_loaded_when_its_kind_is_asked_for(
    tmp_path, clean_registry, monkeypatch):
  _kind_file(tmp_path, "viaep")
  dist = tmp_path / "kinds_viaep-0.1.dist-info"
  dist.mkdir()
  (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kinds-viaep\n"
                                 "Version: 0.1\n")
  (dist / "entry_points.txt").write_text("[funcnet.models]\nviaep = kinds_viaep\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  assert "kinds_viaep" not in sys.modules
  cfg = config.load(None, ["model.kind=viaep", "model.viaep.width=2"])
  assert cfg["model"]["viaep"] == {"width": 2} and "kinds_viaep" in sys.modules
