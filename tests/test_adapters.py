"""funcnet.adapters: Flax (NNX, linen) and Equinox modules as funcnet Models.

References are the libraries themselves: the module called directly, and
``jax.grad`` of a loss written here with optax over the module's own
parameter tree (not funcnet's loss, not the adapter's plain params).
"""

import ast
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import equinox as eqx
import flax.linen as linen
from flax import nnx

from funcnet import autodiff, data, errors, gradcheck, optimizers, train
from funcnet.adapters import from_equinox, from_flax

X = np.random.default_rng(0).normal(size=(6, 4))
Y = np.array([0, 1, 2, 0, 1, 2])


def _ce(z, y):
  """The reference loss: optax's, not funcnet's."""
  return optax.softmax_cross_entropy_with_integer_labels(z, y).mean()


def _same(a, b, tol=1e-10):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def _auto(model):
  """The adapter's logits and funcnet's autodiff gradient, as one program."""
  loss = autodiff.loss_fn(model, "cross_entropy")
  return lambda p, x, y: (model.logits(p, x), jax.grad(loss)(p, x, y))


def _check_passes(model, params):
  """funcnet.gradcheck on the model: autodiff vs finite differences, no
  manual column (no hand-written backward)."""
  report = gradcheck.compare(model, "cross_entropy", params, X, Y).raise_if_wrong()
  assert not report.manual and sum(r.fd_checked for r in report.rows) > 0
  assert all(r.manual_autodiff_rel is None for r in report.rows)


class _NNX(nnx.Module):
  def __init__(self, rngs, dtype=jnp.float64):
    self.layers = nnx.List([nnx.Linear(4, 5, param_dtype=dtype, rngs=rngs),
                            nnx.Linear(5, 3, param_dtype=dtype, rngs=rngs)])
    self.drop = nnx.Dropout(0.5, rngs=rngs)

  def __call__(self, x):
    return self.layers[1](self.drop(jnp.tanh(self.layers[0](x))))


def test_an_nnx_module_gives_its_own_logits_and_jax_grad_of_its_loss(x64):
  module = _NNX(nnx.Rngs(0))
  model = from_flax(module, in_shape=(4,))
  assert (model.in_shape, model.n_out, model.backward) == ((4,), 3, None)
  params = model.init(jax.random.key(9), jnp.float64)  # a module's own params
  graph, state, rest = nnx.split(module, nnx.Param, ...)

  @jax.jit
  def both(p, state):
    def ref(state):  # the module in eval mode, called as Flax users do
      m = nnx.merge(graph, state, rest)
      m.eval()
      return m(X)
    return _auto(model)(p, X, Y), ref(state), jax.grad(lambda s: _ce(ref(s), Y))(state)

  (z, g), z_ref, g_ref = both(params, state)
  _same(z, z_ref, 1e-13)
  for i in range(2):
    for name in ("kernel", "bias"):
      _same(params["layers"][i][name], getattr(module.layers[i], name)[...], 0)
      _same(g["layers"][i][name], g_ref["layers"][i][name][...])
  _check_passes(model, params)


def test_nnx_dropout_follows_the_key_and_a_factory_draws_fresh_params(x64):
  model = from_flax(lambda key: _NNX(nnx.Rngs(key)), in_shape=(4,))
  p1, p2 = (model.init(jax.random.key(k), jnp.float64) for k in (1, 2))
  fresh = _NNX(nnx.Rngs(jax.random.key(1)))  # what the factory builds itself
  _same(p1["layers"][0]["kernel"], fresh.layers[0].kernel[...], 0)
  assert not np.allclose(p1["layers"][0]["kernel"], p2["layers"][0]["kernel"])

  @jax.jit
  def outs(p):
    return [model.logits(p, X, k) for k in
            (None, jax.random.key(3), jax.random.key(3), jax.random.key(4))]
  evaluate, a, again, b = map(np.asarray, outs(p1))
  fresh.eval()
  _same(evaluate, fresh(X), 1e-13)       # no key: dropout off
  _same(a, again, 0)                     # a key: one mask per key
  assert not np.allclose(a, evaluate) and not np.allclose(a, b)


class _Linen(linen.Module):
  @linen.compact
  def __call__(self, x, train: bool = False):
    h = jnp.tanh(linen.Dense(5, param_dtype=jnp.float64)(x))
    h = linen.Dropout(0.5, deterministic=not train)(h)
    return linen.Dense(3, param_dtype=jnp.float64)(h)


def test_a_linen_module_gives_its_own_logits_and_jax_grad_of_its_loss(x64):
  module = _Linen()
  model = from_flax(module, in_shape=(4,))
  params = model.init(jax.random.key(5), jnp.float64)
  native = module.init(jax.random.key(5), X[:1])["params"]  # linen's own init

  @jax.jit
  def both(p, native):
    def ref(v):
      return module.apply({"params": v}, X)
    return _auto(model)(p, X, Y), ref(native), jax.grad(lambda v: _ce(ref(v), Y))(native)

  (z, g), z_ref, g_ref = both(params, native)
  _same(z, z_ref, 1e-13)
  for layer in ("Dense_0", "Dense_1"):
    for name in ("kernel", "bias"):
      _same(params[layer][name], native[layer][name], 0)
      _same(g[layer][name], g_ref[layer][name])
  # a key: train=True and the key as the "dropout" rng (funcnet.gradcheck on
  # a Flax model: the NNX test)
  z_drop = model.logits(params, X, jax.random.key(1))
  _same(z_drop, module.apply({"params": native}, X, train=True,
                             rngs={"dropout": jax.random.key(1)}), 1e-13)


def _eqx_mlp(key):
  return eqx.nn.MLP(4, 3, 5, 1, activation=jnp.tanh, dtype=jnp.float64, key=key)


def test_an_equinox_module_gives_its_own_logits_and_jax_grad_of_its_loss(x64):
  module = _eqx_mlp(jax.random.key(0))
  model = from_equinox(module, in_shape=(4,))
  params = model.init(jax.random.key(9), jnp.float64)
  arrays, static = eqx.partition(module, eqx.is_inexact_array)

  @jax.jit
  def both(p, arrays):
    def ref(a):  # one example at a time, vmapped, as Equinox users do
      return jax.vmap(eqx.combine(a, static))(X)
    return _auto(model)(p, X, Y), ref(arrays), jax.grad(lambda a: _ce(ref(a), Y))(arrays)

  (z, g), z_ref, g_ref = both(params, arrays)
  _same(z, z_ref, 1e-13)
  for i in range(2):
    for name in ("weight", "bias"):
      _same(params["layers"][i][name], getattr(module.layers[i], name), 0)
      _same(g["layers"][i][name], getattr(g_ref.layers[i], name))
  _check_passes(model, params)


class _EqxDrop(eqx.Module):
  mlp: eqx.nn.MLP
  drop: eqx.nn.Dropout

  def __init__(self, key):
    self.mlp, self.drop = _eqx_mlp(key), eqx.nn.Dropout(0.5)

  def __call__(self, x, *, key=None):
    return self.mlp(self.drop(x, key=key))


def test_equinox_dropout_gets_one_key_per_example_and_a_factory_seeds_init(x64):
  model = from_equinox(_EqxDrop, in_shape=(4,))
  params = model.init(jax.random.key(1), jnp.float64)
  module = _EqxDrop(jax.random.key(1))
  _same(params["mlp"]["layers"][0]["weight"], module.mlp.layers[0].weight, 0)
  key = jax.random.key(3)

  @jax.jit
  def outs(p):
    train_mode = eqx.nn.inference_mode(module, False)
    keys = jax.random.split(key, len(X))   # example i: keys[i]
    ref_train = jnp.stack([train_mode(X[i], key=keys[i]) for i in range(len(X))])
    ref_eval = jax.vmap(eqx.nn.inference_mode(module))(X)
    return model.logits(p, X), model.logits(p, X, key), ref_eval, ref_train

  z_eval, z_train, ref_eval, ref_train = outs(params)
  _same(z_train, ref_train, 1e-13)
  _same(z_eval, ref_eval, 1e-13)
  assert not np.allclose(z_eval, z_train)


def test_plain_params_are_dicts_and_lists_and_map_back_exactly():
  from funcnet.adapters.plain import plain_of
  a, b, c, d = (np.full(n, float(n)) for n in (1, 2, 3, 4))
  tree = {"enc": (a, {"w": b}), "skip": {0: c, 2: d}}   # 0, 2: not a list
  params, plain = plain_of(tree)
  want = {"enc": [a, {"w": b}], "skip": {"0": c, "2": d}}
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(want)
  assert all(x is y for x, y in zip(jax.tree_util.tree_leaves(params),
                                    jax.tree_util.tree_leaves(want)))
  back = plain.from_plain(params)
  assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(tree)
  assert back["enc"][1]["w"] is b and back["skip"][2] is d


def _one_line(err):
  assert "\n" not in str(err.value) and err.value.exit_code == 2


@pytest.mark.parametrize("adapter, extra", [(from_flax, "flax"),
                                            (from_equinox, "equinox")])
def test_a_missing_extra_is_one_line_naming_it(adapter, extra, monkeypatch):
  monkeypatch.setitem(sys.modules, extra, None)   # import extra -> ImportError
  with pytest.raises(errors.ConfigError, match=rf'pip install -e "\.\[{extra}\]"') as e:
    adapter(object(), in_shape=(4,))
  _one_line(e)


def test_mutable_state_and_non_modules_are_refused_in_one_line(x64):
  bn = nnx.eval_shape(lambda: nnx.Sequential(  # shapes suffice to refuse it
      nnx.Linear(4, 3, rngs=nnx.Rngs(0)), nnx.BatchNorm(3, rngs=nnx.Rngs(0))))

  class LinenBN(linen.Module):
    @linen.compact
    def __call__(self, x):
      return linen.BatchNorm(use_running_average=True)(linen.Dense(3)(x))

  eqx_bn = eqx.nn.make_with_state(eqx.nn.BatchNorm)(4, "batch", mode="batch")[0]
  for adapter, module, match in [
      (from_flax, bn, "mutable state.*batch_stats|mutable state.*mean"),
      (from_flax, LinenBN(), "'batch_stats' collection"),
      (from_equinox, eqx_bn, "StateIndex"),
      (from_flax, 3, "takes an nnx.Module"),
      (from_flax, eqx.filter_eval_shape(_eqx_mlp, jax.random.key(0)),
       "got MLP"),                      # callable, yet not a key -> module function
      (from_equinox, bn, "takes an eqx.Module.*got Sequential"),
      (from_equinox, "mlp", "takes an eqx.Module")]:
    with pytest.raises(errors.ConfigError, match=match) as e:
      adapter(module, in_shape=(4,))
    _one_line(e)


def test_funcnet_itself_imports_neither_library():
  # Only funcnet/adapters/ names flax or equinox (and there only inside the
  # functions: importing funcnet.adapters imports neither), and the bench's
  # peers (funcnet/bench/peers/, each module imported only when its peer
  # is timed).
  root = pathlib.Path(__file__).resolve().parents[1] / "funcnet"
  found = []
  for path in root.rglob("*.py"):
    text = path.read_text()
    if {"adapters", "peers"} & set(path.parts) or ("flax" not in text and "equinox" not in text):
      continue
    for node in ast.walk(ast.parse(text)):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
      found += [f"{path.name}: {n}" for n in names
                if n.split(".")[0] in ("flax", "equinox")]
  assert not found, found
  for path in (root / "adapters").glob("*.py"):
    top = ast.parse(path.read_text()).body
    assert not any(isinstance(n, (ast.Import, ast.ImportFrom)) and
                   (getattr(n, "module", None) or n.names[0].name).split(".")[0]
                   in ("flax", "equinox") for n in top), path.name


class _DigitsNNX(nnx.Module):
  def __init__(self, rngs):
    self.hidden = nnx.Linear(64, 128, rngs=rngs)
    self.drop = nnx.Dropout(0.1, rngs=rngs)
    self.out = nnx.Linear(128, 10, rngs=rngs)

  def __call__(self, x):
    return self.out(self.drop(nnx.relu(self.hidden(x))))


@pytest.mark.slow
def test_a_flax_and_an_equinox_mlp_train_on_digits_through_fit():
  ds = data.load("digits", seed=0, standardize=True)  # pixels 0..16 -> z-scores
  options = train.FitOptions(40, 32, jax.random.key(0),
                             evaluation=train.Evaluation(every=40))
  flax_model = from_flax(lambda key: _DigitsNNX(nnx.Rngs(key)), in_shape=(64,))
  eqx_model = from_equinox(
      lambda key: eqx.nn.MLP(64, 10, 128, 1, activation=jax.nn.relu, key=key),
      in_shape=(64,))
  x = np.asarray(ds.x_test, np.float64)
  for model, forward in [
      (flax_model, lambda p: np.maximum(x @ p["hidden"]["kernel"]
                                        + p["hidden"]["bias"], 0)
       @ p["out"]["kernel"] + p["out"]["bias"]),
      (eqx_model, lambda p: np.maximum(x @ p["layers"][0]["weight"].T
                                       + p["layers"][0]["bias"], 0)
       @ p["layers"][1]["weight"].T + p["layers"][1]["bias"])]:
    res = train.fit(model, "cross_entropy", optimizers.adam(1e-3), ds,
                    options=options)
    p = jax.tree_util.tree_map(lambda v: np.asarray(v, np.float64),
                               res.state.params)
    acc = np.mean(np.argmax(forward(p), axis=1) == ds.y_test)  # numpy forward
    assert acc >= 0.95, (model.spec, acc)
    assert res.history[-1]["test_accuracy"] == pytest.approx(acc, abs=1e-6)
