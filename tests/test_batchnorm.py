"""Batch normalisation (funcnet/layers/batchnorm.py): the hand-written
backward against jax.vjp and funcnet.check_backward in float64, the forward,
inference and running-statistics update against plain numpy."""

import jax
import jax.numpy as jnp
import numpy as np

import funcnet
from funcnet import layers

RNG = np.random.default_rng(0)
X3 = RNG.normal(2.0, 3.0, size=(3, 4, 5))       # (m, T, d): stats over 12 rows
DY3 = RNG.normal(size=(3, 4, 5))
PARAMS = {"scale": RNG.normal(1.0, 0.5, size=5), "bias": RNG.normal(size=5)}
EPS = 1e-5


def test_the_backward_equals_jax_vjp_over_every_axis_but_the_last(x64):
  @jax.jit
  def both(params, x, dy):
    y, cache = layers.batch_norm_forward(params, x, EPS)
    manual = layers.batch_norm_backward(params, cache, dy)
    _, vjp = jax.vjp(lambda x, p: layers.batch_norm_forward(p, x, EPS)[0],
                     x, params)
    return y, manual, vjp(dy)

  y, (dx, dp), (dx_ref, dp_ref) = both(PARAMS, X3, DY3)
  np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-12)
  for k in ("scale", "bias"):
    np.testing.assert_allclose(dp[k], dp_ref[k], rtol=1e-10, atol=1e-12)
  # training mode, in numpy: each feature normalised by the 12 rows' stats
  rows = X3.reshape(-1, 5)
  want = (rows - rows.mean(0)) / np.sqrt(rows.var(0) + EPS)
  np.testing.assert_allclose(np.asarray(y).reshape(-1, 5),
                             PARAMS["scale"] * want + PARAMS["bias"], rtol=1e-12)


def test_check_backward_passes_and_catches_a_missing_one_over_m():
  def fwd(x, p):
    return layers.batch_norm_forward(p, x, EPS)

  def bwd(cache, dy):
    return layers.batch_norm_backward(PARAMS, cache, dy)

  x = X3[0]                                        # (4, 5): m = 4
  funcnet.check_backward(fwd, bwd, x, PARAMS).raise_if_wrong()

  def without_one_over_m(cache, dy):  # the classic slip: dx m times too big
    dx, dp = bwd(cache, dy)
    return dx * x.shape[0], dp

  assert not funcnet.check_backward(fwd, without_one_over_m, x, PARAMS,
                                    fd=False).ok()


def test_inference_and_the_running_update_follow_their_formulas_in_numpy(x64):
  stats = {"mean": RNG.normal(size=5), "var": RNG.uniform(0.5, 2.0, size=5)}

  @jax.jit
  def run(stats, x):
    new = layers.batch_norm_update(stats, x, momentum=0.8)
    # fresh statistics (mean 0, var 1) and params: the identity at eps = 0
    identity = layers.batch_norm_inference(
        layers.batch_norm_init(5, jnp.float64),
        layers.batch_norm_stats_init(5, jnp.float64), x, 0.0)
    return new, layers.batch_norm_inference(PARAMS, new, x, EPS), identity

  new, y, identity = run(stats, X3)
  rows = X3.reshape(-1, 5)
  mean = 0.8 * stats["mean"] + 0.2 * rows.mean(0)
  var = 0.8 * stats["var"] + 0.2 * rows.var(0)      # biased batch variance
  np.testing.assert_allclose(new["mean"], mean, rtol=1e-12)
  np.testing.assert_allclose(new["var"], var, rtol=1e-12)
  want = PARAMS["scale"] * (X3 - mean) / np.sqrt(var + EPS) + PARAMS["bias"]
  np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(identity, X3, rtol=1e-12)
