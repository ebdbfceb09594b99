"""The input gradient of the hand-written backward (``wrt_input=True``) for
the kinds with real-valued inputs (mlp, cnn, rnn, gru) and the id-input
recommenders (mf, ncf: the gradient with respect to the looked-up vectors
``e = [p_u, q_i]``), against references computed here: ``jax.grad`` of a
loss written in this file from ``model.logits`` (for ids: of the embedding
tables, gathered at ids that appear once each, where the scatter-add has a
single term), ``inputgrad.input_grad(..., source="autodiff")``, and central
finite differences on the smooth kinds. Float64, one ``jax.jit`` per case.
The transformer, gpt and rnn_lm have theirs in test_inputgrad_seq.py.
"""

import os
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet
from funcnet import cli, gradcheck, inputgrad, models
from funcnet.models import recommender

pytestmark = pytest.mark.usefixtures("x64")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
M = 3          # examples per batch
H = 1e-6       # the finite-difference step


class Case(NamedTuple):
  model: object
  x_shape: tuple
  smooth: bool = False       # also checked against finite differences
  key: Optional[int] = None  # dropout on, with this seed


CASES = {
    "mlp_tanh": Case(funcnet.mlp([5, 4, 3], activation="tanh",
                                 output_activation="softmax"), (M, 5), True),
    # 2-D, max pool, global average pool, a dense hidden layer, relu, dropout
    "cnn_2d_maxpool_dropout": Case(models.cnn(
        (16,), 3, channels=[2, 2], image_shape=(4, 4), hidden=[4],
        dropout=0.5), (M, 16), key=7),
    # 1-D with channels, stride 2, VALID, average pool, flatten, tanh: smooth
    "cnn_1d_avgpool_flatten": Case(models.cnn(
        (12, 2), 3, channels=[2], stride=2, padding="VALID", pool=2,
        pool_type="avg", global_pool=False, activation="tanh", conv_dims=1),
        (M, 12, 2), True),
    "rnn_bidirectional": Case(models.rnn((4, 2), 3, hidden=3, cell="rnn",
                                         bidirectional=True), (M, 4, 2), True),
    # a flat (L,) input read 2 values a step, dropout (both directions:
    # rnn_bidirectional; a GRU's dx_t sums its three gates' delta Wx^T)
    "gru_dropout": Case(models.rnn(
        (6,), 3, hidden=3, cell="gru", input_features=2, dropout=0.5),
        (M, 6), key=3),
}


def _params(model, seed, dtype=np.float64):
  """Params of ``model.init``'s structure, drawn by numpy (``N(0, 0.5^2)``):
  gradients are checked at any point, and this costs no compile."""
  shapes = jax.eval_shape(lambda k: model.init(k, jnp.float64),
                          jax.random.key(0))
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda s: np.asarray(rng.normal(0, 0.5, s.shape), dtype), shapes)


def _normal(seed, shape, dtype=np.float64):
  return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def _cross_entropy(z, y):
  """The batch-mean cross-entropy, written here: ``-mean_i log softmax(z_i)[y_i]``."""
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], 1))


def _central_differences(c, x):
  """``(c(x + h e_k) - c(x - h e_k)) / 2h`` for every entry ``k`` of ``x``."""
  eye = jnp.eye(x.size, dtype=x.dtype).reshape((x.size,) + x.shape)
  plus = jax.vmap(lambda d: c(x + H * d))(eye)
  minus = jax.vmap(lambda d: c(x - H * d))(eye)
  return ((plus - minus) / (2 * H)).reshape(x.shape)


@pytest.mark.parametrize("name", CASES)
def test_manual_input_gradient_is_jax_grad_of_the_logits(name):
  case = CASES[name]
  model = case.model
  params = _params(model, 0)
  x = _normal(1, case.x_shape)
  y = jnp.arange(M) % model.n_out
  key = None if case.key is None else jax.random.key(case.key)

  @jax.jit
  def grads(params, x, y):
    def c(x_):                    # independent of funcnet's losses and inputgrad
      return _cross_entropy(model.logits(params, x_, key), y)
    manual = inputgrad.value_and_input_grad(model, "cross_entropy")(
        params, x, y, key)
    auto = inputgrad.input_grad(model, params, x, y, source="autodiff",
                                key=key)
    fd = _central_differences(c, x) if case.smooth else jnp.zeros_like(x)
    return manual, auto, (c(x), jax.grad(c)(x)), fd

  (c, manual), auto, (c_ref, ref), fd = grads(params, x, y)
  assert manual.shape == x.shape
  np.testing.assert_allclose(c, c_ref, rtol=1e-12)
  assert np.max(np.abs(ref)) > 1e-3            # not a vacuous comparison
  np.testing.assert_allclose(manual, ref, rtol=0, atol=1e-10)
  # input_grad is per example, dC_i/dx_i = m dC/dx (the examples do not mix)
  np.testing.assert_allclose(auto, M * ref, rtol=0, atol=1e-10)
  if case.smooth:
    np.testing.assert_allclose(manual, fd, rtol=0, atol=1e-6 * max(
        1.0, float(np.max(np.abs(fd)))))


def _ids():
  """``(m, 2)`` (user, item) pairs; every user and every item appears once."""
  return jnp.array([[0, 3], [2, 1], [1, 0], [3, 2]])


@pytest.mark.parametrize("kind", ["mf", "ncf"])
def test_recommender_gradient_is_the_looked_up_rows_gradient(kind):
  model = (recommender.matrix_factorization(4, 5, rank=3, init_scale=0.5)
           if kind == "mf" else recommender.ncf(4, 5, embed=3, hidden=[4],
                                                activation="tanh"))
  params = _params(model, 2)
  x = _ids()
  y = jnp.array([1.0, 4.0, 2.5, 3.0])
  tables = ("P", "Q") if kind == "mf" else ("user", "item")

  def rows(p):                    # the user's then the item's table (n, d)
    return [p[t] if kind == "mf" else p[t]["E"] for t in tables]

  @jax.jit
  def grads(params, x, y):
    def c(p):                     # 0.5 mean (r_hat - r)^2 from model.logits
      return 0.5 * jnp.mean((model.logits(p, x)[:, 0] - y) ** 2)
    g_tables = rows(jax.grad(c)(params))
    # each id appears once: dC/dp_u is row u of dC/dP, as is dC/dq_i of dC/dQ
    ref = jnp.stack([g_tables[0][x[:, 0]], g_tables[1][x[:, 1]]], axis=1)
    e, logits_of = model.embed(params, x)
    de = inputgrad.input_grad(model, params, x, y, loss="mse")   # manual
    auto = inputgrad.input_grad(model, params, x, y, loss="mse",
                                source="autodiff")
    looked_up = jnp.stack([t[x[:, col]] for col, t in enumerate(rows(params))],
                          axis=1)
    return e, looked_up, logits_of(e), model.logits(params, x), de, ref, auto

  e, looked_up, z_of_e, z, de, ref, auto = grads(params, x, y)
  assert e.shape == de.shape == (4, 2, 3)       # (m, user/item, d)
  np.testing.assert_array_equal(e, looked_up)  # e = [p_u, q_i], row by row
  np.testing.assert_allclose(z_of_e, z, rtol=1e-14)
  assert np.max(np.abs(ref)) > 1e-3
  # per example: dC_i/de_i = m dC/de
  np.testing.assert_allclose(de, 4 * ref, rtol=0, atol=1e-10)
  np.testing.assert_allclose(auto, 4 * ref, rtol=0, atol=1e-10)


def test_logit_and_output_scores_are_jax_grad_of_the_score():
  model = CASES["cnn_1d_avgpool_flatten"].model
  params = _params(model, 4)
  x = _normal(5, (M, 12, 2))

  @jax.jit
  def grads(params, x):
    t = jnp.argmax(model.logits(params, x), axis=-1)   # the predicted class
    out = {}
    for of, f in (("logit", lambda z: z), ("output", jax.nn.softmax)):
      def score(x_):              # sum_i F_i
        return jnp.sum(jnp.take_along_axis(f(model.logits(params, x_)),
                                           t[:, None], 1))
      out[of] = (jax.grad(score)(x),
                 inputgrad.input_grad(model, params, x, of=of),
                 inputgrad.input_grad(model, params, x, of=of,
                                      source="autodiff"))
    return out

  for of, (ref, manual, auto) in grads(params, x).items():
    assert np.max(np.abs(ref)) > 1e-3, of
    np.testing.assert_allclose(manual, ref, rtol=0, atol=1e-10, err_msg=of)
    np.testing.assert_allclose(auto, ref, rtol=0, atol=1e-10, err_msg=of)


def test_gradcheck_input_row_fails_on_a_wrong_input_gradient():
  model = CASES["mlp_tanh"].model
  good = model.backward

  def slipped(model_, loss):                  # dC/dx forgets its 1/m
    fn = good(model_._replace(backward=good), loss)
    def wrong(params, x, y, key=None, wrt_input=False):
      out = fn(params, x, y, key, wrt_input)
      return out[:2] + (out[2] * x.shape[0],) if wrt_input else out
    return wrong
  model = model._replace(backward=slipped)
  params, x = _params(model, 8), _normal(9, (M, 5))
  report = gradcheck.compare(model, "cross_entropy", params, x, jnp.arange(M))
  row = report.input
  assert row.name == "input x" and row.shape == (M, 5)
  assert row.fd_checked == M * 5 and row.fd_skipped == 0
  assert "input x" not in [r.name for r in report.rows]
  # rel(M g, g) = (M - 1) |g| / (M + 1) |g|: exactly 0.5 for M = 3, which a
  # bare '> 0.5' left to the last bit (it failed on an AMD EPYC)
  assert row.manual_autodiff_rel == pytest.approx((M - 1) / (M + 1), rel=1e-9)
  assert row.autodiff_fd_rel <= 1e-6
  bad = report.failures()
  assert bad and all(b.startswith("input x") for b in bad), bad
  assert not any("autodiff vs finite" in b for b in bad)


def test_gradcheck_command_prints_the_input_row(capsys):
  path = os.path.join(ROOT, "configs", "xor_textbook.toml")
  assert cli.main(["gradcheck", "--config", path, "--batch", "4"]) == 0
  out = capsys.readouterr().out
  row = next(line for line in out.splitlines() if line.startswith("input x"))
  # input x, shape, |grad|, then manual-autodiff, autodiff-fd and manual-fd
  # (abs, rel) each, and the entries checked and skipped
  cells = row.split()
  assert cells[2] == "4x2"                      # the 4 examples of 2 features
  man_auto, auto_fd, man_fd = (float(v) for v in cells[5:10:2])
  assert man_auto <= 1e-10 and auto_fd <= 1e-6 and man_fd <= 1e-6
  assert cells[10:] == ["8", "0"]
  assert out.rstrip().splitlines()[-1].startswith("OK")
