"""Every model builder: the Model contract, float64 gradient checks, and
numpy references for the recurrent cells and the recommenders.

The tests on ``case`` and the numpy references compare in float64: they
request the ``x64`` fixture (and ``case``, module-scoped and so set up before
it, turns x64 on itself while it builds the params)."""

import functools
import json
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import gradcheck
from funcnet.errors import ConfigError, ShapeError
from funcnet.models import (MODELS, cnn, matrix_factorization, ncf, rnn,
                            transformer)
from funcnet.models.rnn import gru_step, rnn_step

M = 3  # examples per batch: tiny, so that each case compiles and runs fast


def _labels(rng, n):
  return rng.integers(0, n, M)


# name -> (builder call, x maker, loss). Sizes are tiny and repeat across
# arrays so that the gradient check compiles few distinct shapes.
CASES = {
    "cnn_digits_2d": (
        lambda: cnn((16,), 3, image_shape=(4, 4), channels=(2, 3)),
        lambda rng: rng.normal(size=(M, 16)), "cross_entropy"),
    "cnn_1d_valid_hidden_dropout_avg": (
        lambda: cnn((10, 2), 3, channels=(3,), kernel_size=3, stride=2,
                    padding="VALID", pool_type="avg", global_pool=False,
                    hidden=(3,), activation="tanh", dropout=0.5,
                    init="xavier", conv_dims=1),
        lambda rng: rng.normal(size=(M, 10, 2)), "cross_entropy"),
    "rnn_dropout": (
        lambda: rnn((6,), 3, hidden=3, input_features=2, dropout=0.5),
        lambda rng: rng.normal(size=(M, 6)), "cross_entropy"),
    "gru_bidirectional": (
        lambda: rnn((4, 2), 3, hidden=3, cell="gru", bidirectional=True),
        lambda rng: rng.normal(size=(M, 4, 2)), "cross_entropy"),
    "transformer_cls_dropout": (
        lambda: transformer((8, 2), 4, d_model=4, n_heads=2, n_layers=1,
                            d_ff=4, patch=2, pool="cls", dropout=0.3),
        lambda rng: rng.normal(size=(M, 8, 2)), "cross_entropy"),
    "mf": (
        lambda: matrix_factorization(4, 3, rank=2, global_mean=0.5),
        lambda rng: np.stack([rng.integers(0, 4, M), rng.integers(0, 3, M)], 1),
        "mse"),
    "ncf_dropout": (
        lambda: ncf(4, 3, embed=2, hidden=(4,), dropout=0.5),
        lambda rng: np.stack([rng.integers(0, 4, M), rng.integers(0, 3, M)], 1),
        "mse"),
}


def _fill(model, rng, scale=0.5):
  """Params of ``model``'s documented structure filled from numpy, with no
  compile: ``eval_shape`` only traces ``init``."""
  shapes = jax.eval_shape(model.init, jax.random.key(0))
  return jax.tree_util.tree_map(
      lambda s: scale * rng.normal(size=s.shape), shapes)


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
  """One built model with its jitted functions, shared by the tests below so
  each case compiles once."""
  with jax.enable_x64(True):
    return _case(request.param)


def _case(name):
  make, make_x, loss = CASES[name]
  rng = np.random.default_rng(0)
  model = make()
  x = make_x(rng)
  y = (rng.normal(size=M) if loss == "mse" else _labels(rng, model.n_out))
  # init runs eagerly: its random draws are small ops whose compiles are
  # shared between cases, cheaper here than compiling each init whole.
  init = functools.partial(model.init, dtype=jnp.float64)
  logits = jax.jit(model.logits)
  return types.SimpleNamespace(name=name, model=model, x=x, y=y,
                               loss=loss, init=init, logits=logits,
                               params=init(jax.random.key(0)))


def test_output_shape_under_jit(case, x64):
  z = case.logits(case.params, case.x)  # jitted by the fixture
  assert z.shape == (M, case.model.n_out) and z.dtype == jnp.float64
  assert np.all(np.isfinite(z))
  assert jax.eval_shape(case.model.apply, case.params, case.x).shape == z.shape


def test_gradient_check(case, x64):
  # max_entries=3 still probes every array, and keeps one compiled probe
  # shape for all arrays of 3 or more entries.
  report = gradcheck.compare(case.model, case.loss, case.params, case.x,
                             case.y, max_entries=3)
  assert report.ok(), str(report)
  assert report.manual  # every kind has its hand-written backward (issue 11)


def test_same_key_same_params_other_key_other_params(case, x64):
  again = case.init(jax.random.key(0))
  other = case.init(jax.random.key(1))
  assert (jax.tree_util.tree_structure(again)
          == jax.tree_util.tree_structure(case.params))
  for a, b, c in zip(*map(jax.tree_util.tree_leaves,
                          (case.params, again, other))):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, c) for a, c in zip(
      jax.tree_util.tree_leaves(case.params), jax.tree_util.tree_leaves(other)))
  np.testing.assert_array_equal(case.logits(again, case.x),
                                case.logits(case.params, case.x))
  if "global_mean" in case.model.spec:  # mu starts at the given mean
    assert float(case.params["mu"]) == case.model.spec["global_mean"]
  assert not np.allclose(case.logits(other, case.x),
                         case.logits(case.params, case.x))


def test_evaluation_is_deterministic_and_dropout_needs_a_key(case, x64):
  z0 = case.logits(case.params, case.x)
  np.testing.assert_array_equal(case.logits(case.params, case.x), z0)
  if case.model.spec.get("dropout"):
    key = jax.random.key(7)
    z_train = case.logits(case.params, case.x, key)
    np.testing.assert_array_equal(case.logits(case.params, case.x, key),
                                  z_train)
    assert not np.allclose(z_train, z0)


def test_wrong_input_shape_is_a_shape_error(case, x64):
  x = np.asarray(case.x)
  bad = x[:, :-1] if x.ndim == 2 else x[..., :-1]
  with pytest.raises(ShapeError, match="expects") as info:
    case.model.logits(case.params, bad)
  assert "\n" not in str(info.value)
  with pytest.raises(ShapeError):
    case.model.logits(case.params, x[..., None])


def test_spec_is_json_and_rebuilds_the_model(case, x64):
  spec = json.loads(json.dumps(case.model.spec))
  assert spec["kind"] == case.model.kind and isinstance(spec["kinked"], bool)
  kwargs = {k: v for k, v in spec.items() if k not in ("kind", "kinked")}
  rebuilt = MODELS[spec["kind"]](**kwargs)
  assert rebuilt.spec == case.model.spec
  # the same params fit it (traced only: no compile)
  shapes = lambda t: jax.tree_util.tree_map(jnp.shape, t)
  assert (shapes(jax.eval_shape(rebuilt.init, jax.random.key(0)))
          == shapes(case.params))
  assert jax.eval_shape(rebuilt.logits, case.params, case.x).shape == (
      M, case.model.n_out)


@pytest.mark.parametrize("model,kinked", [
    (lambda: cnn((8,), 2), True),                                    # relu, max
    (lambda: cnn((8,), 2, activation="tanh"), True),                 # max pool
    (lambda: cnn((8,), 2, activation="tanh", pool_type="avg"), False),
    (lambda: cnn((8,), 2, activation="leaky_relu", pool=1), True),
    (lambda: rnn((8,), 2, cell="gru"), False),
    (lambda: transformer((8,), 2, d_model=4, n_heads=2), False),
    (lambda: matrix_factorization(3, 3), False),
    (lambda: ncf(3, 3), True),
    (lambda: ncf(3, 3, activation="gelu"), False),
])
def test_kinked_flag(model, kinked):
  assert model().spec["kinked"] is kinked


def test_kinds():
  assert rnn((4,), 2).kind == "rnn" and rnn((4,), 2, cell="gru").kind == "gru"
  assert {cnn((8,), 2).kind, transformer((4,), 2, d_model=4, n_heads=2).kind,
          matrix_factorization(2, 2).kind, ncf(2, 2).kind} == {
              "cnn", "transformer", "mf", "ncf"}


# --- numpy references ------------------------------------------------------

def _sigmoid(v):
  return 1 / (1 + np.exp(-v))


def np_rnn_step(p, h, x):
  return np.tanh(x @ p["Wx"] + h @ p["Wh"] + p["b"])


def np_gru_step(p, h, x):
  u = _sigmoid(x @ p["u"]["Wx"] + h @ p["u"]["Wh"] + p["u"]["b"])
  r = _sigmoid(x @ p["r"]["Wx"] + h @ p["r"]["Wh"] + p["r"]["b"])
  n = np.tanh(x @ p["n"]["Wx"] + (r * h) @ p["n"]["Wh"] + p["n"]["b"])
  return (1 - u) * n + u * h


@pytest.mark.parametrize("cell", ["rnn", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_model_matches_numpy_steps(cell, bidirectional, x64):
  rng = np.random.default_rng(1)
  model = rnn((3, 2), 4, hidden=3, cell=cell, bidirectional=bidirectional)
  p = params = _fill(model, rng)
  x = rng.normal(size=(2, 3, 2))
  np_step = np_rnn_step if cell == "rnn" else np_gru_step
  h = np.zeros((2, 3))
  for t in range(3):
    h = np_step(p["fwd"], h, x[:, t])
    # one step of the jax cell agrees with the equations
    if t == 0:
      step = rnn_step if cell == "rnn" else gru_step
      np.testing.assert_allclose(step(params["fwd"], jnp.zeros((2, 3)), x[:, 0]),
                                 h, rtol=1e-12)
  if bidirectional:
    hb = np.zeros((2, 3))
    for t in reversed(range(3)):
      hb = np_step(p["bwd"], hb, x[:, t])
    h = np.concatenate([h, hb], axis=1)
  z = h @ p["head"]["W"] + p["head"]["b"]
  np.testing.assert_allclose(jax.jit(model.logits)(params, x), z, rtol=1e-12)


def _np_layer_norm(p, x):
  mu = x.mean(-1, keepdims=True)
  return p["scale"] * (x - mu) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) + p["bias"]


def _np_softmax(s):
  e = np.exp(s - s.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_transformer(p, x, patch):
  """Pre-LN encoder, sinusoidal positions, mean pool, written out in numpy."""
  m, length, f = x.shape
  e = x.reshape(m, length // patch, patch * f) @ p["embed"]["W"] + p["embed"]["b"]
  t, d = e.shape[1:]
  pe = np.zeros((t, d))
  for pos in range(t):
    for i in range(d):
      angle = pos / 10000 ** (2 * (i // 2) / d)
      pe[pos, i] = np.sin(angle) if i % 2 == 0 else np.cos(angle)
  e = e + pe
  for b in p["blocks"]:
    a = _np_layer_norm(b["ln1"], e)
    att = b["attn"]
    q = np.einsum("mtd,dhk->mhtk", a, att["q"]["W"]) + att["q"]["b"][:, None]
    k = np.einsum("mtd,dhk->mhtk", a, att["k"]["W"])
    v = np.einsum("mtd,dhk->mhtk", a, att["v"]["W"]) + att["v"]["b"][:, None]
    w = _np_softmax(q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1]))
    e = e + np.einsum("mhtk,hkd->mtd", w @ v, att["o"]["W"]) + att["o"]["b"]
    a = _np_layer_norm(b["ln2"], e) @ b["ff1"]["W"] + b["ff1"]["b"]
    gelu = a * 0.5 * (1 + np.vectorize(math.erf)(a / np.sqrt(2)))
    e = e + gelu @ b["ff2"]["W"] + b["ff2"]["b"]
  s = _np_layer_norm(p["ln"], e).mean(axis=1)
  return s @ p["head"]["W"] + p["head"]["b"]


def test_transformer_matches_numpy(x64):
  rng = np.random.default_rng(7)
  model = transformer((6, 2), 3, d_model=4, n_heads=2, n_layers=2, d_ff=5,
                      patch=3, pos="sinusoidal", pool="mean")
  params = _fill(model, rng)
  assert "pos" not in params and "cls" not in params
  x = rng.normal(size=(2, 6, 2))
  np.testing.assert_allclose(jax.jit(model.logits)(params, x),
                             np_transformer(params, x, 3), rtol=1e-11,
                             atol=1e-13)


def test_flat_rnn_input_is_split_into_steps():
  rng = np.random.default_rng(2)
  flat = rnn((6,), 2, hidden=3, input_features=2)
  shaped = rnn((3, 2), 2, hidden=3)
  params = _fill(flat, rng)
  x = rng.normal(size=(2, 6))
  np.testing.assert_allclose(flat.logits(params, x),
                             shaped.logits(params, x.reshape(2, 3, 2)),
                             rtol=1e-13)


def test_cnn_image_shape_is_the_same_as_image_input():
  rng = np.random.default_rng(3)
  flat = cnn((16,), 3, image_shape=(4, 4), channels=(2,))
  image = cnn((4, 4), 3, channels=(2,))
  params = _fill(flat, rng)
  x = rng.normal(size=(2, 16))
  np.testing.assert_allclose(flat.logits(params, x),
                             image.logits(params, x.reshape(2, 4, 4)),
                             rtol=1e-13)


def test_matrix_factorization_matches_numpy(x64):
  rng = np.random.default_rng(4)
  model = matrix_factorization(5, 4, rank=3, global_mean=3.5)
  p = params = _fill(model, rng, 1.0)
  x = np.array([[0, 0], [4, 3], [2, 1], [2, 1]])
  ref = [p["mu"] + p["b_user"][u] + p["b_item"][i] + p["P"][u] @ p["Q"][i]
         for u, i in x]
  np.testing.assert_allclose(model.apply(params, x)[:, 0], ref, rtol=1e-13)


def test_ncf_matches_numpy(x64):
  model = ncf(5, 4, embed=2, hidden=(3,))
  p = params = _fill(model, np.random.default_rng(5), 1.0)
  x = np.array([[0, 3], [4, 0]])
  h = np.concatenate([p["user"]["E"][x[:, 0]], p["item"]["E"][x[:, 1]]], 1)
  h = np.maximum(h @ p["mlp"][0]["W"] + p["mlp"][0]["b"], 0)
  ref = p["mu"] + h @ p["mlp"][1]["W"] + p["mlp"][1]["b"]
  np.testing.assert_allclose(model.logits(params, x), ref, rtol=1e-13)


@pytest.mark.parametrize("builder", [matrix_factorization, ncf])
def test_out_of_range_ids_are_shape_errors(builder):
  model = builder(3, 2)
  params = _fill(model, np.random.default_rng(6))
  with pytest.raises(ShapeError, match=r"item ids range over \[0, 2\]; "
                     r"expected ids in \[0, 1\]"):
    model.logits(params, np.array([[0, 0], [2, 2]]))
  with pytest.raises(ShapeError, match="whole numbers"):
    model.logits(params, np.array([[0.5, 0.0]]))


@pytest.mark.parametrize("build,err,fragment", [
    (lambda: transformer((8,), 2, d_model=6, n_heads=4), ShapeError,
     "d_model 6 is not divisible by n_heads 4"),
    (lambda: transformer((9,), 2, patch=2), ShapeError,
     "patch 2 does not divide the sequence length 9"),
    (lambda: transformer((8,), 2, pos="rotary"), ConfigError,
     "pos 'rotary' must be one of"),
    (lambda: transformer((8,), 2, n_layers=0), ConfigError,
     "n_layers 0 must be a positive integer"),
    (lambda: cnn((4,), 2, kernel_size=5, padding="VALID"), ShapeError,
     "kernel_size 5 is larger than its input"),
    (lambda: cnn((4,), 2, channels=(2, 2, 2)), ShapeError,
     "pool 2 is larger than its feature map"),
    (lambda: cnn((64,), 2, image_shape=(8, 7)), ShapeError,
     "image_shape .* holds 56 values"),
    (lambda: cnn((8,), 2, padding="full"), ConfigError, "padding 'FULL'"),
    (lambda: cnn((8,), 2, channels=(4, -1)), ConfigError,
     "channels entry -1 must be a positive integer"),
    (lambda: cnn((8,), 2, activation="softmax"), ConfigError,
     "only on the output"),
    (lambda: cnn((8,), 2, dropout=1.0), ConfigError, r"dropout 1.0"),
    (lambda: rnn((8,), 2, cell="lstm"), ConfigError, "cell 'lstm'"),
    (lambda: rnn((9,), 2, input_features=2), ShapeError,
     "input_features 2 does not divide"),
    (lambda: rnn((4, 3, 2), 2), ShapeError, "not a sequence"),
    (lambda: rnn((8,), 2, hidden=0), ConfigError, "hidden 0"),
    (lambda: matrix_factorization(0, 3), ConfigError, "n_users 0"),
    (lambda: ncf(3, 3, hidden=(4, 0)), ConfigError, "hidden entry 0"),
])
def test_bad_hyperparameters_raise_one_line_errors(build, err, fragment):
  with pytest.raises(err, match=fragment) as info:
    build()
  assert "\n" not in str(info.value)


def test_unknown_activation_goes_through_activations_get():
  from funcnet.errors import UnknownNameError
  with pytest.raises(UnknownNameError, match="unknown activation 'swish'"):
    cnn((8,), 2, activation="swish")
