"""``funcnet bench models`` beside Flax, Equinox and PyTorch
(:mod:`funcnet.bench.peers`): each peer is the config's model (its parameter
count against one computed by hand from the config's shapes), its forward
gives finite logits of the right shape, its step trains, and the command
runs with its flags. Speed is measured by the benchmark itself and recorded
in docs/performance.md, never asserted here."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import cli, config as config_lib, model as model_lib
from funcnet.bench import model_steps, peers
from funcnet.models import registry

LIBRARY = {"flax": "flax", "equinox": "equinox", "pytorch": "torch"}
CONFIGS = ("mnist1d_cnn", "mnist1d_gru", "mnist1d_transformer")

# A CNN small enough to compile and time in a few seconds: 754 parameters.
TINY_CNN = """
[data]
name = "mnist1d"
[model]
kind = "cnn"
[model.cnn]
channels = [4]
kernel_size = 3
global_pool = false
hidden = [8]
dropout = 0.2
[train]
batch_size = 20
[optimizer]
name = "adamw"
learning_rate = 1e-3
weight_decay = 1e-2
clip_norm = 1.0
"""


def _model(name):
  """The config's funcnet model on MNIST-1D's shapes (40 values, 10
  classes), without loading the data."""
  cfg = config_lib.load(model_steps._config_path(name))
  kind = cfg["model"]["kind"]
  spec = model_lib.DataSpec(name="mnist1d", task="classification",
                            in_shape=(40,), x_dtype="float32", n_out=10)
  return registry.from_config(kind, cfg["model"][kind], spec), cfg


def _hand_count(name) -> int:
  """The parameters of each config, from its shapes (MNIST-1D: 40 steps of
  one value, 10 classes)."""
  cfg = config_lib.load(model_steps._config_path(name))
  kind = cfg["model"]["kind"]
  t = cfg["model"][kind]
  if name == "mnist1d_cnn":       # convs, then 40 / 2^3 = 5 positions flattened
    chans, k = [1] + t["channels"], t["kernel_size"]
    convs = sum(k * a * b + b for a, b in zip(chans[:-1], chans[1:]))
    widths = [5 * chans[-1]] + t["hidden"] + [10]
    return convs + sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
  if name == "mnist1d_gru":       # three gates of Wx (1, H), Wh (H, H), b (H,)
    h = t["hidden"]
    return 3 * (1 * h + h * h + h) + h * 10 + 10
  d, dff, k = t["d_model"], t["d_ff"], t["stem_kernel"]
  chans = [1] + t["stem_channels"]
  stem = sum(k * a * b + b for a, b in zip(chans[:-1], chans[1:]))
  embed = chans[-1] * d + d + 40 * d          # W_in, b_in, learned positions
  attn = 4 * d * d + 3 * d                    # q, k, v, o; no key bias
  block = 2 * 2 * d + attn + (d * dff + dff) + (dff * d + d)
  return stem + embed + t["n_layers"] * block + 2 * d + d * 10 + 10


def _peer_module(name):
  pytest.importorskip(LIBRARY[name])
  return peers.module(name)


def _count_network(name, mod, spec, x=None) -> int:
  """The parameters of the peer's network, built without a training step
  (Flax's from an input ``x``, an MNIST-1D batch by default)."""
  x = jnp.zeros((2, 40), jnp.float32) if x is None else x
  if name == "flax":
    shapes = jax.eval_shape(lambda: mod.network(spec).init(
        jax.random.key(0), x, train=False))
    return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(shapes))
  if name == "equinox":
    import equinox as eqx
    net = eqx.filter_eval_shape(mod.network, spec, jax.random.key(0))
    return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(net)
               if isinstance(a, jax.ShapeDtypeStruct))
  return sum(p.numel() for p in mod.network(spec).parameters())


def _logits(name, mod, spec, x):
  """The peer's logits on ``x`` without dropout, as a numpy array."""
  if name == "flax":
    net = mod.network(spec)              # one compilation: init and apply
    return np.asarray(jax.jit(lambda x: net.apply(
        net.init(jax.random.key(0), x, train=False), x, train=False))(x))
  if name == "equinox":
    net = mod.network(spec, jax.random.key(0))
    return np.asarray(jax.jit(jax.vmap(net))(x))
  import torch
  torch.manual_seed(0)                  # the same weights at every call
  with torch.no_grad():
    return mod.network(spec).eval()(mod._inputs(x)).numpy()


@pytest.mark.parametrize("config", CONFIGS)
def test_funcnet_models_have_the_hand_counted_parameters(config):
  model, _ = _model(config)
  shapes = jax.eval_shape(model.init, jax.random.key(0))
  n = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(shapes))
  assert n == _hand_count(config)


@pytest.mark.parametrize("framework", peers.FRAMEWORKS)
@pytest.mark.parametrize("config", CONFIGS)
def test_each_peer_has_funcnets_parameter_count(framework, config):
  mod = _peer_module(framework)
  model, _ = _model(config)
  assert _count_network(framework, mod, model.spec) == _hand_count(config)


@pytest.mark.parametrize("framework", peers.FRAMEWORKS)
def test_each_peers_forward_gives_finite_logits_of_the_right_shape(framework):
  mod = _peer_module(framework)
  x = jax.random.normal(jax.random.key(1), (3, 40), jnp.float32)
  for config in CONFIGS:
    z = _logits(framework, mod, _model(config)[0].spec, x)
    assert z.shape == (3, 10) and np.isfinite(z).all(), config


def _tiny_cnn(tmp_path):
  """The funcnet model and config of :data:`TINY_CNN`."""
  path = tmp_path / "tiny_cnn.toml"
  path.write_text(TINY_CNN)
  cfg = config_lib.load(str(path))
  spec = model_lib.DataSpec(name="mnist1d", task="classification",
                            in_shape=(40,), x_dtype="float32", n_out=10)
  return registry.from_config("cnn", cfg["model"]["cnn"], spec), cfg, path


def test_each_peers_step_lowers_the_loss_on_a_fixed_batch(tmp_path):
  model, cfg, _ = _tiny_cnn(tmp_path)
  rng = np.random.default_rng(0)
  batch = (rng.normal(size=(20, 40)).astype(np.float32),
           rng.integers(0, 10, 20).astype(np.int32))
  built, notes = peers.build_all(model, cfg, [batch])
  assert not [n for n in notes if "does not import" not in n]
  assert set(built) >= {"flax", "equinox"}
  for name, peer in built.items():
    before = peer.loss(*batch)
    assert np.isfinite(before)
    peer.run(30)                 # 30 Adam steps of 1e-3 on one batch of 20
    assert peer.loss(*batch) < before - 0.05, name


def test_build_all_refuses_a_peer_of_another_size(monkeypatch):
  model, cfg = _model("mnist1d_gru")
  mod = _peer_module("flax")
  monkeypatch.setattr(mod, "build", lambda *a, **k: peers.Peer(
      "flax", 7, None, None))
  with pytest.raises(RuntimeError, match="7 parameters, funcnet's 51,210"):
    peers.build_all(model, cfg, [], names=("flax",))


def test_a_missing_library_is_one_line_and_an_unwritten_spec_is_skipped(
    monkeypatch):
  real = peers.importlib.import_module

  def fake(name, *a):
    if name == "torch":
      raise ImportError("no torch")
    return real(name, *a)
  monkeypatch.setattr(peers.importlib, "import_module", fake)
  mods, notes = peers.available()
  assert "pytorch" not in mods
  assert notes == ['pytorch: not measured, torch does not import '
                   '(pip install -e ".[bench]")']
  model, cfg = _model("mnist1d_cnn")
  spec = dict(model.spec, pool_type="avg")
  with pytest.raises(peers.Unsupported, match="pool_type"):
    _peer_module("flax").network(spec)


def test_peer_ratios_are_the_peers_time_over_the_contestants():
  ms = {"manual": 2.0, "autodiff": 4.0, "flax": 5.0, "equinox": 6.0,
        "pytorch": 10.0}
  r = model_steps.peer_ratios(ms)
  assert r["fastest_jax_peer"] == "flax"
  assert r["peers_ms"] == {"flax": 5.0, "equinox": 6.0, "pytorch": 10.0}
  assert r["over_fastest_jax_peer"] == {"manual": 2.5, "autodiff": 1.25,
                                        "flax": 1.0, "equinox": 5 / 6,
                                        "pytorch": 0.5}
  assert r["over_pytorch"]["manual"] == 5.0
  assert r["over_pytorch"]["autodiff"] == 2.5
  none = model_steps.peer_ratios({"manual": 1.0, "autodiff": 1.0})
  assert none["fastest_jax_peer"] is None
  assert none["over_pytorch"] == {"manual": None, "autodiff": None}




def test_each_contestant_is_timed_in_its_faster_mode():
  ms, mode = model_steps.fastest_modes(model_steps.medians({
      "manual": {"loop": [0.003, 0.001, 0.002], "scan": [0.0015] * 3},
      "flax": {"loop": [0.004, 0.005, 0.006], "scan": [0.009, 0.001, 0.010]},
      "pytorch": {"loop": [0.010]}}))
  assert ms == pytest.approx({"manual": 1.5, "flax": 5.0, "pytorch": 10.0})
  assert mode == {"manual": "scan", "flax": "loop", "pytorch": "loop"}


def test_a_scanned_runner_takes_the_loops_steps_with_the_same_keys():
  # A linear model whose loss draws noise from the step's key: the two
  # runners agree only if they split the keys alike, in the same order.
  import optax
  from funcnet.bench.peers import common

  def value_and_grad(w, x, y, key):
    def loss(w):
      noise = 0.0 if key is None else 0.1 * jax.random.normal(key, y.shape)
      return jnp.mean((x @ w + noise - y) ** 2)
    return jax.value_and_grad(loss)(w)
  rng = np.random.default_rng(0)
  batches = [(rng.normal(size=(8, 3)).astype(np.float32),
              rng.normal(size=8).astype(np.float32)) for _ in range(3)]
  w0 = jnp.asarray(rng.normal(size=3), jnp.float32)
  loop, loss_loop = common.jax_runner(value_and_grad, jnp.copy(w0),
                                      optax.sgd(0.1), batches)
  scan, loss_scan = common.jax_runner(value_and_grad, jnp.copy(w0),
                                      optax.sgd(0.1), batches, scan=True)
  assert (loop.steps, scan.steps) == (1, 3)
  loop(6)
  scan(2)
  for x, y in batches:
    assert loss_scan(x, y) == pytest.approx(loss_loop(x, y), rel=1e-5)
  # and both moved: not the untrained weights' loss
  fresh = common.jax_runner(value_and_grad, jnp.copy(w0), optax.sgd(0.1),
                            batches)[1]
  assert loss_loop(*batches[0]) != pytest.approx(fresh(*batches[0]), rel=1e-3)


def test_the_table_gives_each_contestants_time_and_ratios():
  rec = {"config": "c", "batch": 2, "manual_ms": 2.0, "autodiff_ms": 4.0,
         "time_ratio": 0.5, "manual_temp_bytes": 1024,
         "autodiff_temp_bytes": 2048, "memory_ratio": 0.5,
         **model_steps.peer_ratios({"manual": 2.0, "autodiff": 4.0,
                                    "flax": 5.0, "pytorch": 10.0})}
  rec["ms_by_mode"] = {"autodiff": {"loop": 4.5, "scan": 4.0},
                       "flax": {"loop": 5.0, "scan": 7.25}}
  table = model_steps.format_table([rec])
  assert "| c | funcnet autodiff | 4.00 | 4.50 | 4.00 | 1.25x | 2.50x |" in table
  assert "| c | funcnet manual | 2.00 | - | - | 2.50x | 5.00x |" in table
  assert "| c | flax | 5.00 | 5.00 | 7.25 | 1.00x | 2.00x |" in table
  assert "| c | pytorch | 10.00 | - | - | 0.50x | 1.00x |" in table
  del rec["peers_ms"]
  assert "contestant" not in model_steps.format_table([rec])


# End to end (~10 s on an idle 2-core VM, 30 s loaded): every contestant
# compiles; the fast tests above cover the peers and the table.
@pytest.mark.slow
def test_bench_models_times_funcnet_beside_the_peers(tmp_path, capsys):
  path = _tiny_cnn(tmp_path)[2]
  out = tmp_path / "m.json"
  assert cli.main(["bench", "models", str(path), "--rounds", "2", "--repeats",
                   "1", "--min-time", "0.001", "--json", str(out)]) == 0
  table = capsys.readouterr().out
  assert "| contestant | ms/step | loop | scan | speed / fastest JAX peer" in table
  (rec,) = json.loads(out.read_text())
  ran = set(rec["peers_ms"])
  assert {"flax", "equinox"} <= ran
  assert set(rec["peer_params"].values()) == {rec["params"]}
  assert rec["params"] == 4 * 3 + 4 + 20 * 4 * 8 + 8 + 8 * 10 + 10
  for name in ran:
    assert f"| {name} | {rec['peers_ms'][name]:.2f} |" in table
    # its faster mode's time: both JAX peers ran both
    by_mode = rec["ms_by_mode"][name]
    assert rec["peers_ms"][name] == min(by_mode.values())
    assert rec["modes"][name] == min(by_mode, key=by_mode.get)
  assert set(rec["ms_by_mode"]["flax"]) == {"loop", "scan"}
  assert set(rec["ms_by_mode"].get("pytorch", {"loop": 0})) == {"loop"}
  if "pytorch" in ran:         # its thread count chosen again each round
    threads = rec["peer_info"]["pytorch"]["threads"]
    assert len(threads) == 2 and set(threads) <= {1, os.cpu_count()}
  fastest = rec["fastest_jax_peer"]
  assert rec["over_fastest_jax_peer"]["autodiff"] == pytest.approx(
      rec["peers_ms"][fastest] / rec["autodiff_ms"])
  assert cli.main(["bench", "models", str(path), "--no-peers", "--rounds",
                   "1", "--repeats", "1", "--min-time", "0.001"]) == 0
  assert "contestant" not in capsys.readouterr().out


# --- the character GPT (issue 27: "and the GPT once it exists") -------------

# A GPT small enough for a fast test: 2 blocks of width 16, 2 heads, a
# context of 8 and 11 symbols.
GPT_SHAPES = {"n_layers": 2, "n_heads": 2, "d_model": 16, "dropout": 0.1}
GPT_BLOCK, GPT_VOCAB = 8, 11


def _gpt():
  spec = model_lib.DataSpec(name="text", task="language",
                            in_shape=(GPT_BLOCK,), x_dtype="int32",
                            n_out=GPT_VOCAB)
  return registry.from_config("gpt", GPT_SHAPES, spec)


def _gpt_hand_count() -> int:
  """Token and position tables, per block two layer norms, q, k, v, o (no
  key bias) and the MLP of width 4d, a final layer norm; the head is the
  token table (tied), so it adds nothing."""
  d, v, t = GPT_SHAPES["d_model"], GPT_VOCAB, GPT_BLOCK
  block = 2 * 2 * d + (4 * d * d + 3 * d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
  return v * d + t * d + GPT_SHAPES["n_layers"] * block + 2 * d


def test_the_gpt_has_the_hand_counted_parameters_in_every_framework():
  model = _gpt()
  shapes = jax.eval_shape(model.init, jax.random.key(0))
  n = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(shapes))
  assert n == _gpt_hand_count()
  for framework in peers.FRAMEWORKS:
    try:
      mod = peers.module(framework)
    except ImportError:
      continue
    got = _count_network(framework, mod, model.spec,
                         jnp.zeros((2, GPT_BLOCK), jnp.int32))
    assert got == _gpt_hand_count(), framework


@pytest.mark.parametrize("framework", peers.FRAMEWORKS)
def test_each_gpt_peer_is_causal_and_predicts_every_position(framework):
  mod = _peer_module(framework)
  spec = _gpt().spec
  x = np.random.default_rng(0).integers(0, GPT_VOCAB, (3, GPT_BLOCK))
  x = x.astype(np.int32)
  z = _logits(framework, mod, spec, x)
  assert z.shape == (3, GPT_BLOCK, GPT_VOCAB) and np.isfinite(z).all()
  # A later token changes no earlier prediction, and does change its own.
  later = x.copy()
  later[:, 5:] = (later[:, 5:] + 1) % GPT_VOCAB
  z2 = _logits(framework, mod, spec, later)
  np.testing.assert_allclose(z2[:, :5], z[:, :5], rtol=1e-5, atol=1e-6)
  assert np.abs(z2[:, 5:] - z[:, 5:]).max() > 1e-4


def test_the_flax_gpt_computes_funcnets_function_with_funcnets_params():
  # The same function, not only the same shapes: funcnet's GPT params put
  # into the Flax peer's tree give funcnet's logits.
  mod = _peer_module("flax")
  model = _gpt()
  p = model.init(jax.random.key(3))
  x = jnp.asarray(np.random.default_rng(1).integers(
      0, GPT_VOCAB, (2, GPT_BLOCK)), jnp.int32)
  net = mod.network(model.spec)
  tree = jax.tree_util.tree_map(np.asarray, net.init(
      jax.random.key(0), x, train=False))["params"]
  ln = lambda q: {"scale": q["scale"], "bias": q["bias"]}  # noqa: E731
  tree["Embed_0"]["embedding"] = p["tok"]["E"]
  tree["pos"] = p["pos"]["E"]
  tree["LayerNorm_0"] = ln(p["ln"])
  for i, b in enumerate(p["blocks"]):
    a = b["attn"]
    tree[f"Block_{i}"] = {
        "LayerNorm_0": ln(b["ln1"]), "LayerNorm_1": ln(b["ln2"]),
        "Attention_0": {
            "DenseGeneral_0": {"kernel": a["q"]["W"], "bias": a["q"]["b"]},
            "DenseGeneral_1": {"kernel": a["k"]["W"]},
            "DenseGeneral_2": {"kernel": a["v"]["W"], "bias": a["v"]["b"]},
            "DenseGeneral_3": {"kernel": a["o"]["W"], "bias": a["o"]["b"]}},
        "Dense_0": {"kernel": b["ff1"]["W"], "bias": b["ff1"]["b"]},
        "Dense_1": {"kernel": b["ff2"]["W"], "bias": b["ff2"]["b"]}}
  got = net.apply({"params": tree}, x, train=False)
  np.testing.assert_allclose(got, model.logits(p, x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow   # 13 s: three GPT steps compiled (the fast tests above
def test_each_gpt_peers_step_lowers_the_loss_on_a_fixed_batch():  # check the model)
  model = _gpt()
  cfg = config_lib.load(model_steps._config_path("text_gpt"))
  rng = np.random.default_rng(0)
  x = rng.integers(0, GPT_VOCAB, (4, GPT_BLOCK + 1)).astype(np.int32)
  batch = (x[:, :-1], x[:, 1:])            # next-token targets
  built, notes = peers.build_all(model, cfg, [batch])
  assert not [n for n in notes if "does not import" not in n]
  assert set(built) >= {"flax", "equinox"}
  for name, peer in built.items():
    before = peer.loss(*batch)
    assert abs(before - np.log(GPT_VOCAB)) < 0.3, name   # small init: ~uniform
    peer.run(30)
    assert peer.loss(*batch) < before - 0.05, name
