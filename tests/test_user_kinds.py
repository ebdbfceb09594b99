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
  # (funcnet gradcheck of a user's kind, its manual column filled by the
  # kind's backward: tests/test_tutorial.py)


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


# --- losses and activations as plain functions -------------------------------

def _ce(z, y):
  """Softmax cross-entropy of integer labels, the batch mean."""
  return jnp.mean(jax.nn.logsumexp(z, axis=-1)
                  - jnp.take_along_axis(z, y[:, None], axis=-1)[:, 0])


def _ce_grad(z, y):
  return (jax.nn.softmax(z, axis=-1) - jax.nn.one_hot(y, z.shape[-1],
                                                      dtype=z.dtype)) / len(y)


def _my_tanh(z):
  return jnp.tanh(z)


def _my_tanh_prime(z):
  return 1 - jnp.tanh(z) ** 2


@pytest.fixture
def clean_activations(monkeypatch):
  from funcnet import activations
  monkeypatch.setattr(activations, "ACTIVATIONS", dict(activations.ACTIVATIONS))
  monkeypatch.setattr(activations, "_OWN", {})


def test_a_loss_and_an_activation_as_functions_give_the_reference_gradients(
    x64, clean_activations):
  from funcnet import autodiff, backprop
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(6, 5)))
  y = jnp.asarray(rng.integers(0, 3, size=6))
  own = funcnet.mlp([5, 4, 3], activation=(_my_tanh, _my_tanh_prime),
                    output_activation="softmax")
  named = funcnet.mlp([5, 4, 3], activation="tanh", output_activation="softmax")
  params = named.init(jax.random.key(1), jnp.float64)

  def reference(p):  # the same network and loss, in plain JAX
    z = jnp.tanh(x @ p[0]["W"] + p[0]["b"]) @ p[1]["W"] + p[1]["b"]
    return jnp.mean(jax.nn.logsumexp(z, -1) - z[jnp.arange(6), y])

  @jax.jit
  def all_four(p):
    return (jax.value_and_grad(reference)(p),
            backprop.value_and_grad(named, "cross_entropy")(p, x, y),
            backprop.value_and_grad(own, (_ce, _ce_grad))(p, x, y),
            autodiff.value_and_grad(own, _ce)(p, x, y))

  (c0, g0), *others = all_four(params)
  for c, g in others:
    assert abs(float(c - c0)) <= 1e-12
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g0)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-10)
  assert own.spec["activation"] == "_my_tanh"  # still a name in the spec
  with pytest.raises(ConfigError, match="no hand-written derivative"):
    backprop.value_and_grad(own, _ce)


def test_fit_takes_a_loss_function_and_an_output_activation_pair(
    x64, clean_activations):
  from funcnet import optimizers, train
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
  f = lambda z: z / (1 + jnp.abs(z))          # softsign and its derivative
  df = lambda z: 1 / (1 + jnp.abs(z)) ** 2
  model = funcnet.mlp([3, 2], output_activation=(f, df))
  half_sq = lambda z, y: 0.5 * jnp.mean(jnp.sum((f(z) - y) ** 2, -1))
  half_sq_grad = lambda z, y: (f(z) - y) * df(z) / len(y)
  p0 = model.init(jax.random.key(2), jnp.float64)
  opts = train.FitOptions(epochs=2, batch_size=8, key=jax.random.key(0),
                          grads="manual", dtype=jnp.float64)
  got = funcnet.fit(model, (half_sq, half_sq_grad), optimizers.sgd(0.5),
                    data_like(x, y), options=opts, state=train.TrainState(p0))

  def reference(p):  # the same loss of the same one-layer network, plain JAX
    z = jnp.asarray(x) @ p[0]["W"] + p[0]["b"]
    return 0.5 * jnp.mean(jnp.sum((z / (1 + jnp.abs(z)) - y) ** 2, -1))

  @jax.jit
  def two_sgd_steps(p):
    for _ in range(2):  # full batch: one step per epoch
      p = jax.tree_util.tree_map(lambda w, g: w - 0.5 * g, p, jax.grad(reference)(p))
    return p

  want = two_sgd_steps(p0)
  for a, b in zip(jax.tree_util.tree_leaves(got.state.params),
                  jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-10)
  assert not np.allclose(np.asarray(want[0]["W"]), np.asarray(p0[0]["W"]))


def data_like(x, y):
  import types
  return types.SimpleNamespace(x_train=np.asarray(x), y_train=np.asarray(y),
                               x_test=None, y_test=None, task="regression")


def test_data_load_standardises_by_default_as_the_readme_says():
  from funcnet import data
  raw = data.load("digits", standardize=False)
  ds = data.load("digits")
  assert raw.x_train.max() == 16  # the pixels as sklearn ships them
  mean, std = raw.x_train.mean(0), raw.x_train.std(0)
  want = (raw.x_test - mean) / np.where(std > 0, std, 1)
  np.testing.assert_allclose(ds.x_test, want, rtol=1e-5, atol=1e-5)
  r = data.load("ratings")  # ids are never scaled
  assert np.issubdtype(r.x_train.dtype, np.integer)
