"""funcnet.check: it catches wrong backwards (mutants written here), passes on
every layer funcnet ships, skips and counts kinks, and never passes with
nothing checked. The references inside the checker are jax.vjp/jvp and finite
differences; the mutants below are independent of funcnet's layers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet
from funcnet import activations, layers

RNG = np.random.default_rng(0)


def _normal(*shape):
  return RNG.normal(size=shape)


# --- mutants: each a (forward, backward, inputs) that must fail ----------------

def _dense_fwd(x, W, b):
  return x @ W + b, (x, W)


def _dense_bwd(cache, dy):
  x, W = cache
  return dy @ W.T, x.T @ dy, dy.sum(0)


def _one_percent_off(cache, dy):
  dx, dW, db = _dense_bwd(cache, dy)
  return dx, dW.at[1, 0].multiply(1.01), db


def _transposed(cache, dy):
  x, W = cache
  return dy @ W.T, (x.T @ dy).T, dy.sum(0)


def _mse_fwd(z, y):
  """C = (1/2m) sum (z - y)^2 over an (m, n) batch."""
  return 0.5 * jnp.mean(jnp.sum((z - y) ** 2, axis=-1)), (z, y)


def _mse_bwd(cache, dc):
  z, y = cache
  return dc * (z - y) / z.shape[0], -dc * (z - y) / z.shape[0]


def _mse_without_1_over_m(cache, dc):
  z, y = cache
  return dc * (z - y), -dc * (z - y)


def _tanh_fwd(z):
  a = jnp.tanh(z)
  return a, a


_STALE = jnp.tanh(jnp.asarray(_normal(4, 3)))


def _tanh_ignores_cache(cache, da):
  del cache  # uses the activations of another batch
  return (da * (1 - _STALE ** 2),)


X, W_WIDE, W_SQUARE, B = _normal(4, 3), _normal(3, 2), _normal(3, 3), _normal(2)

MUTANTS = {
    "dense_wrong_by_1pct_in_one_entry": (_dense_fwd, _one_percent_off,
                                         (X, W_WIDE, B)),
    "dense_transposed_dW_square": (_dense_fwd, _transposed,
                                   (X, W_SQUARE, _normal(3))),
    "mse_missing_1_over_m": (_mse_fwd, _mse_without_1_over_m,
                             (_normal(4, 2), _normal(4, 2))),
    "tanh_ignores_its_cache": (_tanh_fwd, _tanh_ignores_cache, (_normal(4, 3),)),
}


@pytest.mark.parametrize("name", MUTANTS)
def test_a_wrong_backward_fails_with_its_row_in_the_message(name):
  fwd, bwd, inputs = MUTANTS[name]
  report = funcnet.check_backward(fwd, bwd, *inputs, n_cotangents=1)
  assert not report.ok()
  with pytest.raises(AssertionError, match="FAILED"):
    report.raise_if_wrong()


def test_the_right_versions_of_the_mutants_pass_and_print_every_argument():
  for fwd, bwd, inputs in [(_dense_fwd, _dense_bwd, (X, W_WIDE, B)),
                           (_mse_fwd, _mse_bwd, (_normal(4, 2), _normal(4, 2)))]:
    report = funcnet.check_backward(fwd, bwd, *inputs, n_cotangents=1)
    text = str(report)
    assert report.ok(), text
    for i, x in enumerate(inputs):
      assert f"arg {i} " in text and "x".join(map(str, x.shape)) in text


def test_a_transposed_non_square_weight_gradient_is_refused_by_its_shape():
  with pytest.raises(AssertionError, match="shape"):
    funcnet.check_backward(_dense_fwd, _transposed, X, W_WIDE, B)


def test_one_percent_in_one_entry_is_located():
  report = funcnet.check_backward(_dense_fwd, _one_percent_off, X, W_WIDE, B,
                                  n_cotangents=1)
  row = report.rows[1]
  assert row.worst == (1, 0) and not row.ok_ref and row.max_rel == pytest.approx(
      0.01, rel=1e-6)
  assert report.rows[0].ok_ref and report.rows[2].ok_ref


# --- every shipped layer passes ----------------------------------------------------

def _swap(pair):
  """A ``params, x`` layer as ``forward(params, x)``/``backward -> (dparams, dx)``."""
  fwd, bwd, kw = pair
  return (lambda p, x: (lambda y, c: (y, (p, c)))(*fwd(p, x, **kw)),
          lambda cache, dy: tuple(reversed(bwd(cache[0], cache[1], dy))))


def _param_free(fwd, bwd, **kw):
  return (lambda x: fwd(x, **kw), lambda cache, dy: (bwd(cache, dy),))


def _dense():
  f, b = _swap((layers.dense_forward, layers.dense_backward, {}))
  return f, b, (layers.dense_init(jax.random.key(0), 3, 2), _normal(4, 3))


def _activation(name):
  act = activations.get(name)
  return (lambda z: layers.activation_forward(act, z),
          lambda cache, da: (layers.activation_backward(act, cache, da),),
          (_normal(3, 4),))


def _conv(kernel, stride, padding):
  f, b = _swap((layers.conv_forward, layers.conv_backward,
                {"stride": stride, "padding": padding}))
  p = {"W": _normal(*kernel, 2, 3), "b": _normal(3)}
  return f, b, (p, _normal(2, *(5,) * len(kernel), 2))


def _pool(fwd, bwd, nd, **kw):
  f, b = _param_free(fwd, bwd, **kw)
  return f, b, (_normal(2, *(5,) * nd, 2),)


def _attention():
  f, b = _swap((layers.self_attention_forward, layers.self_attention_backward, {}))
  return f, b, (layers.attention_init(jax.random.key(0), 4, 2), _normal(2, 3, 4))


def _layer_norm():
  f, b = _swap((layers.layer_norm_forward, layers.layer_norm_backward, {}))
  return f, b, ({"scale": _normal(4), "bias": _normal(4)}, _normal(3, 4))


def _batch_norm():
  f, b = _swap((layers.batch_norm_forward, layers.batch_norm_backward, {}))
  return f, b, ({"scale": _normal(4), "bias": _normal(4)}, _normal(3, 2, 4))


def _embed():
  f, b = _swap((layers.embed_forward, layers.embed_backward, {}))
  return f, b, ({"E": _normal(5, 3)}, np.array([[0, 2, 2], [4, 1, 0]]))


def _dropout():
  key = jax.random.key(3)  # a fixed key: the same mask in every call
  f, b = _param_free(layers.dropout_forward, layers.dropout_backward,
                     rate=0.5, key=key)
  return f, b, (_normal(4, 3),)


LAYERS = {
    "dense": _dense,
    **{f"activation_{a}": (lambda a=a: _activation(a))
       for a in ("sigmoid", "tanh", "relu", "gelu", "softplus")},
    "conv1d_same_stride2": lambda: _conv((3,), 2, "SAME"),
    "conv2d_valid": lambda: _conv((2, 3), 1, "VALID"),
    "max_pool_1d": lambda: _pool(layers.max_pool_forward, layers.max_pool_backward,
                                 1, window=(2,)),
    "max_pool_2d_same": lambda: _pool(layers.max_pool_forward,
                                      layers.max_pool_backward, 2, window=(2, 2),
                                      padding="SAME"),
    "avg_pool_2d_same": lambda: _pool(layers.avg_pool_forward,
                                      layers.avg_pool_backward, 2, window=(3, 3),
                                      stride=(2, 2), padding="SAME"),
    "global_avg_pool": lambda: _pool(layers.global_avg_pool_forward,
                                     layers.global_avg_pool_backward, 2),
    "global_max_pool": lambda: _pool(layers.global_max_pool_forward,
                                     layers.global_max_pool_backward, 1),
    "self_attention": _attention,
    "layer_norm": _layer_norm,
    "batch_norm": _batch_norm,
    "embed": _embed,
    "dropout_fixed_mask": _dropout,
}


# The fast loop checks three layers (a matrix product, a convolution, a
# gather with integer inputs); the rest run in the full suite (CI), each
# also checked against jax.vjp in tests/test_backward_*.py and
# tests/test_layers.py (relu's kinks: the kink test below).
FAST_LAYERS = {"dense", "conv2d_valid", "embed"}


@pytest.mark.parametrize("name", [
    n if n in FAST_LAYERS else pytest.param(n, marks=pytest.mark.slow)
    for n in LAYERS])
def test_every_shipped_layer_passes(name):
  fwd, bwd, inputs = LAYERS[name]()
  report = funcnet.check_backward(fwd, bwd, *inputs, n_cotangents=1)
  report.raise_if_wrong()
  assert sum(r.fd_checked for r in report.rows) > 0


# --- kinks and empty checks -----------------------------------------------------

def test_relu_at_zero_is_skipped_and_counted():
  fwd, bwd, _ = _activation("relu")
  z = np.array([[0.0, 1.0, -2.0], [0.0, 0.5, 0.0]])
  report = funcnet.check_backward(fwd, bwd, z, n_cotangents=1)
  row = report.rows[0]
  assert report.ok(), str(report)
  assert (row.fd_checked, row.fd_skipped) == (3, 3)
  assert "3 finite-difference entries skipped" in str(report)
  # The exact test, from the pre-activations, skips the same entries.
  exact = funcnet.check_backward(fwd, bwd, z, n_cotangents=1, kinks=lambda z: z)
  assert (exact.rows[0].fd_checked, exact.rows[0].fd_skipped) == (3, 3)


def test_nothing_checked_never_passes():
  fwd, bwd, _ = _activation("relu")
  all_kinks = funcnet.check_backward(fwd, bwd, np.zeros((2, 2)), n_cotangents=1)
  assert not all_kinks.ok() and "no finite-difference entry" in str(all_kinks)
  ints_only = funcnet.check_backward(lambda i: (i * 2.0, None),
                                     lambda c, dy: (None,), np.arange(3))
  assert not ints_only.ok() and "nothing was checked" in str(ints_only)


# --- a whole model, and second order ------------------------------------------------

@pytest.mark.slow  # fast: the refusal below; compare is tests/test_gradcheck.py's
def test_a_models_backward_is_checked_through_gradcheck():
  model = funcnet.mlp([3, 4, 2], activation="tanh")
  params = model.init(jax.random.key(0))
  report = funcnet.check_model_backward(model, "mse", params, _normal(5, 3),
                                        _normal(5, 2), max_entries=4)
  assert report.manual and report.raise_if_wrong().ok()


def test_a_model_without_a_backward_is_refused():
  model = funcnet.mlp([3, 2])
  with pytest.raises(ValueError, match="no hand-written backward"):
    funcnet.check_model_backward(model._replace(backward=None), "mse", None,
                                 _normal(5, 3), _normal(5, 2))


def _f(x, W):
  return jnp.tanh(x @ W)


def _jvp_right(inputs, tangents):
  (x, W), (dx, dW) = inputs, tangents
  y = _f(x, W)
  return y, (1 - y ** 2) * (dx @ W + x @ dW)


def _jvp_missing_a_term(inputs, tangents):
  (x, W), (dx, _) = inputs, tangents
  y = _f(x, W)
  return y, (1 - y ** 2) * (dx @ W)


def test_check_jvp_passes_a_right_jvp_and_catches_a_wrong_one():
  right = funcnet.check_jvp(_f, _jvp_right, X, W_WIDE, n_tangents=2)
  assert right.raise_if_wrong().ok() and "tangent" in str(right)
  assert not funcnet.check_jvp(_f, _jvp_missing_a_term, X, W_WIDE).ok()


def _g(x):
  return jnp.sum(x ** 3) + jnp.sum(x[:-1] * x[1:])


def _hvp_right(x, v):
  cross = jnp.zeros_like(v).at[:-1].add(v[1:]).at[1:].add(v[:-1])
  return 6 * x * v + cross


def test_check_hvp_passes_a_right_hvp_and_catches_a_wrong_one():
  x = _normal(5)
  assert funcnet.check_hvp(_g, _hvp_right, x).raise_if_wrong().ok()
  wrong = funcnet.check_hvp(_g, lambda x, v: 6 * x * v, x)
  assert not wrong.ok() and "FAILED" in str(wrong)


def test_importing_funcnet_binds_the_checkers_lazily():
  assert "check_backward" in dir(funcnet)
  assert funcnet.check_backward is funcnet.check.check_backward
