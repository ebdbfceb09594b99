"""The convolution's and the pools' hand-written backward passes
(funcnet/layers/conv.py, funcnet/layers/pool.py) against three independent
references, in float64:

  * ``jax.vjp`` of the forward (JAX's own transpose rules);
  * the backward written as plain-numpy loops over output positions, each
    window scattering its gradient back (CS231n's ``conv_backward_naive``);
  * central differences of ``C = sum(dy * y)`` on every entry.

Cases cover 1-D and 2-D, strides 1 to 3 (per axis too), SAME and VALID,
odd and even kernels (SAME pads one more after for an even one), kernels
longer than the stride, strides longer than the kernel, several channels;
pools with overlapping and leftover windows and the documented tie rule.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from funcnet import layers
from helpers import rel, xla_pads

pytestmark = pytest.mark.usefixtures("x64")

HYPOTHESIS = dict(deadline=None, max_examples=5,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
H = 1e-6  # finite-difference step


# --- plain-numpy references --------------------------------------------------

def np_geometry(x_shape, k, s, padding):
  out, pad = zip(*(xla_pads(n, kk, ss, padding)
                   for n, kk, ss in zip(x_shape[1:-1], k, s)))
  return out, pad


def np_windows(out, k, s):
  """Yields ``(p, slices of the padded input)`` for every output position."""
  for p in np.ndindex(*out):
    yield p, (slice(None),) + tuple(
        slice(pp * ss, pp * ss + kk) for pp, kk, ss in zip(p, k, s)) + (
            slice(None),)


def np_crop(xp, shape, pad):
  return xp[(slice(None),) + tuple(slice(lo, lo + n) for n, (lo, _) in
                                   zip(shape[1:-1], pad)) + (slice(None),)]


def np_conv_backward(x, w, s, padding, dy):
  """dx, dW, db by looping over output positions: window ``p`` of the padded
  input met ``W``, so it gets ``dy[p] W^T`` back and ``W`` gets
  ``window^T dy[p]``."""
  nd = w.ndim - 2
  k = w.shape[:nd]
  out, pad = np_geometry(x.shape, k, s, padding)
  xp = np.pad(x, [(0, 0), *pad, (0, 0)])
  dxp, dw = np.zeros_like(xp), np.zeros_like(w)
  for p, sl in np_windows(out, k, s):
    g = dy[(slice(None),) + p]                               # (m, c_out)
    dxp[sl] += np.tensordot(g, w, axes=([1], [nd + 1]))      # (m, *k, c_in)
    dw += np.tensordot(xp[sl], g, axes=([0], [0]))           # (*k, c_in, c_out)
  return np_crop(dxp, x.shape, pad), dw, dy.sum(axis=tuple(range(nd + 1)))


def np_pool_backward(x, k, s, padding, dy, kind):
  """dx of a max pool (each window's gradient to its FIRST maximal entry,
  row-major) or an average pool (spread over the in-bounds entries)."""
  out, pad = np_geometry(x.shape, k, s, padding)
  xp = np.pad(x, [(0, 0), *pad, (0, 0)], constant_values=np.nan)
  dxp = np.zeros_like(xp)
  for p, sl in np_windows(out, k, s):
    win = xp[sl]                                             # (m, *k, c)
    g = dy[(slice(None),) + p]                               # (m, c)
    flat = win.reshape(win.shape[0], -1, win.shape[-1])
    if kind == "max":
      first = np.argmax(np.where(np.isnan(flat), -np.inf, flat), axis=1)
      share = np.zeros_like(flat)
      np.put_along_axis(share, first[:, None, :], g[:, None, :], axis=1)
    else:
      real = ~np.isnan(flat)
      share = real * (g / real.sum(axis=1))[:, None, :]
    dxp[sl] += share.reshape(win.shape)
  return np_crop(dxp, x.shape, pad)


# --- the checks ---------------------------------------------------------------
# Each test gathers its cases into ONE jitted function (a Python loop over
# the cases inside it): one compile per test instead of one per case.

def _fd(cost, arr):
  """Central differences of ``cost`` at every entry of ``arr``. ``lax.map``
  (a loop) rather than ``vmap``: one small body to compile, not a batched
  convolution."""
  basis = jnp.eye(arr.size, dtype=arr.dtype).reshape((arr.size,) + arr.shape)
  return jax.lax.map(lambda e: (cost(arr + H * e) - cost(arr - H * e))
                     / (2 * H), basis).reshape(arr.shape)


def _per_axis(v, nd):
  return tuple(v) if isinstance(v, tuple) else (v,) * nd


def _conv_case(rng, spatial, k, c_in, c_out, stride, padding, m=2):
  """``(params, x, dy)`` as numpy arrays and the per-axis strides."""
  nd = len(spatial)
  k, s = _per_axis(k, nd), _per_axis(stride, nd)
  p = {"W": rng.normal(size=k + (c_in, c_out)), "b": rng.normal(size=c_out)}
  x = rng.normal(size=(m, *spatial, c_in))
  out, _ = np_geometry(x.shape, k, s, padding)
  return (p, x, rng.normal(size=(m, *out, c_out))), s


def check_convs(cases, fd=False):
  """For each ``((params, x, dy), stride, padding)``: the manual backward vs
  ``jax.vjp`` and vs the numpy loops (and vs central differences of ``C =
  sum(dy * y)`` on every entry with ``fd``), all cases in one jit."""

  def run(arrays):
    out = []
    for (p, x, dy), (_, s, padding) in zip(arrays, cases):
      y, cache = layers.conv_forward(p, x, s, padding)
      dx, grads = layers.conv_backward(p, cache, dy)
      apply = lambda p, x: layers.conv(p, x, s, padding)  # noqa: E731
      _, vjp = jax.vjp(apply, p, x)
      ref_grads, ref_dx = vjp(dy)
      fds = None
      if fd:
        cost = lambda p, x: jnp.sum(dy * apply(p, x))  # noqa: E731
        fds = (_fd(lambda v: cost(p, v), x),
               {"W": _fd(lambda v: cost({**p, "W": v}, x), p["W"]),
                "b": _fd(lambda v: cost({**p, "b": v}, x), p["b"])})
      out.append(((dx, grads), (ref_dx, ref_grads), fds))
    return out

  results = jax.jit(run)([c[0] for c in cases])
  for ((p, x, dy), s, padding), ((dx, grads), (ref_dx, ref_grads), fds) in zip(
      cases, results):
    where = f"x {x.shape}, W {p['W'].shape}, stride {s}, {padding}"
    assert dx.shape == x.shape and grads["W"].shape == p["W"].shape, where
    np_dx, np_dw, np_db = np_conv_backward(x, p["W"], s, padding, dy)
    for got, vjp_ref, np_ref, fd_ref, name in (
        (dx, ref_dx, np_dx, fds and fds[0], "dx"),
        (grads["W"], ref_grads["W"], np_dw, fds and fds[1]["W"], "dW"),
        (grads["b"], ref_grads["b"], np_db, fds and fds[1]["b"], "db")):
      assert rel(got, vjp_ref) <= 1e-10, (name, where)
      assert rel(got, np_ref) <= 1e-10, (name, where)
      if fd:
        assert rel(got, fd_ref) <= 1e-6, (name, where)


def test_conv_1d_backward_over_strides_paddings_and_kernels():
  # Every (kernel, stride, padding) of the grid, lengths and channels cycling.
  rng = np.random.default_rng(0)
  cases = []
  for (k, stride, padding), (n, c_in, c_out) in zip(
      itertools.product((1, 2, 3, 4), (1, 2, 3), ("SAME", "VALID")),
      itertools.cycle([(9, 2, 3), (8, 1, 2), (7, 3, 1)])):
    arrays, s = _conv_case(rng, (n,), k, c_in, c_out, stride, padding)
    cases.append((arrays, s, padding))
  check_convs(cases)


CONV_2D = [
    # (spatial, kernel, stride, padding, c_in, c_out)
    ((6, 5), 3, 1, "SAME", 2, 3),
    ((6, 5), 2, 2, "SAME", 1, 2),
    ((7, 6), 4, 3, "SAME", 2, 2),
    ((7, 7), 3, 2, "VALID", 2, 3),
    ((8, 6), 2, 3, "VALID", 3, 2),            # stride > kernel: unread entries
    ((7, 6), (2, 3), (1, 2), "SAME", 2, 2),   # per-axis kernel and stride
    ((8, 7), (4, 1), (3, 1), "VALID", 1, 3),
    ((4, 5, 3), (2, 3, 2), (2, 1, 2), "SAME", 2, 2),   # 3-D comes free
]


def test_conv_2d_and_3d_backward():
  rng = np.random.default_rng(1)
  cases = []
  for spatial, k, stride, padding, c_in, c_out in CONV_2D:
    arrays, s = _conv_case(rng, spatial, k, c_in, c_out, stride, padding)
    cases.append((arrays, s, padding))
  check_convs(cases)


def test_conv_backward_vs_finite_differences():
  # Even and odd kernels, strided, both paddings, 1-D and 2-D.
  rng = np.random.default_rng(2)
  cases = []
  for spatial, k, stride, padding in [((9,), 4, 2, "SAME"),
                                      ((8,), 2, 3, "VALID"),
                                      ((6, 5), (2, 3), (2, 1), "SAME")]:
    arrays, s = _conv_case(rng, spatial, k, 2, 2, stride, padding)
    cases.append((arrays, s, padding))
  check_convs(cases, fd=True)


@settings(**HYPOTHESIS)
@given(nd=st.sampled_from([1, 2]), n=st.integers(3, 8), k=st.integers(1, 4),
       s=st.integers(1, 3), padding=st.sampled_from(["SAME", "VALID"]),
       c_in=st.integers(1, 3), c_out=st.integers(1, 3), m=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_conv_backward_random_shapes(nd, n, k, s, padding, c_in, c_out, m,
                                     seed):
  rng = np.random.default_rng(seed)
  arrays, s = _conv_case(rng, (n,) * nd, min(k, n), c_in, c_out, s, padding, m)
  check_convs([(arrays, s, padding)])


def test_conv_and_max_pool_backward_eager_and_mixed_dtypes():
  """Without jit, and with float32 data meeting float64 params (the forward
  promotes): each gradient comes back in its primal's dtype."""
  rng = np.random.default_rng(5)
  (p, x, dy), s = _conv_case(rng, (7,), 4, 2, 3, 2, "SAME")
  np_dx, np_dw, np_db = np_conv_backward(x, p["W"], s, "SAME", dy)
  p, dy = jax.tree_util.tree_map(jnp.asarray, (p, dy))
  _, cache = layers.conv_forward(p, jnp.asarray(x), s, "SAME")
  dx, grads = layers.conv_backward(p, cache, dy)
  assert rel(dx, np_dx) <= 1e-12 and rel(grads["W"], np_dw) <= 1e-12
  assert rel(grads["b"], np_db) <= 1e-12

  def mixed(p, x, dy):
    return layers.conv_backward(p, layers.conv_forward(p, x, s, "SAME")[1], dy)
  dx32, grads = jax.jit(mixed)(p, jnp.asarray(x, jnp.float32), dy)
  assert dx32.dtype == jnp.float32 and grads["W"].dtype == jnp.float64
  np.testing.assert_allclose(dx32, np_dx, rtol=1e-5, atol=1e-5)
  # the max pool, eagerly, overlapping SAME windows
  x = rng.normal(size=(2, 7, 3))
  dy = rng.normal(size=(2, 7, 3))
  _, cache = layers.max_pool_forward(jnp.asarray(x), 3, 1, "SAME")
  dx = layers.max_pool_backward(cache, jnp.asarray(dy))
  assert rel(dx, np_pool_backward(x, (3,), (1,), "SAME", dy, "max")) <= 1e-15


# --- pools ----------------------------------------------------------

POOLS = {"max": (layers.max_pool_forward, layers.max_pool_backward,
                 layers.max_pool),
         "avg": (layers.avg_pool_forward, layers.avg_pool_backward,
                 layers.avg_pool)}

POOL_CASES = [
    # (spatial, window, stride, padding, vs jax too); stride None = window
    ((8,), 2, None, "VALID", True),      # the CNN's pool
    ((9,), 2, None, "VALID", False),     # a leftover entry no window reads
    ((9,), 3, 2, "SAME", True),          # overlapping, padded both sides
    ((7,), 2, 1, "SAME", False),         # overlapping, even: pad after only
    ((7,), 2, 3, "VALID", False),        # stride > window
    ((6, 7), 2, None, "VALID", False),
    ((5, 5), 2, 2, "SAME", False),
    ((6, 6), 3, 1, "VALID", False),
    ((5, 6), (3, 2), (2, 1), "SAME", True),
]


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_backward(kind):
  """Manual vs the numpy loops on every case of ``POOL_CASES``, and vs
  ``jax.vjp`` and finite differences on those marked (XLA compiles the
  max-pool's vjp slowly), all in one jit. The inputs have distinct entries
  (no ties), so the max's derivative is unique and finite differences see
  it."""
  forward, backward, apply = POOLS[kind]
  rng = np.random.default_rng(3)
  xs, dys, geometry = [], [], []
  for spatial, window, stride, padding, _ in POOL_CASES:
    x = rng.normal(size=(2, *spatial, 3))
    k = _per_axis(window, len(spatial))
    s = k if stride is None else _per_axis(stride, len(spatial))
    out, _ = np_geometry(x.shape, k, s, padding)
    xs.append(x)
    dys.append(rng.normal(size=(2, *out, 3)))
    geometry.append((k, s))

  def run(xs, dys):
    out = []
    for x, dy, (_, window, stride, padding, vs_jax) in zip(xs, dys,
                                                           POOL_CASES):
      pool = lambda v: apply(v, window, stride, padding)  # noqa: E731
      y, cache = forward(x, window, stride, padding)
      refs = None
      if vs_jax:
        y_ref, vjp = jax.vjp(pool, x)
        refs = (y_ref, vjp(dy)[0], _fd(lambda v: jnp.sum(dy * pool(v)), x))
      out.append((y, backward(cache, dy), refs))
    return out

  results = jax.jit(run)(xs, dys)
  for x, dy, (k, s), case, (y, dx, refs) in zip(xs, dys, geometry, POOL_CASES,
                                                results):
    assert dx.shape == x.shape, case
    assert rel(dx, np_pool_backward(x, k, s, case[3], dy, kind)) <= 1e-10, case
    if refs is not None:
      y_ref, ref_dx, fd_dx = refs
      np.testing.assert_array_equal(y, y_ref)
      assert rel(dx, ref_dx) <= 1e-10, case
      assert rel(dx, fd_dx) <= 1e-6, case


def test_max_pool_ties_send_the_whole_gradient_to_the_first_maximum():
  """Ties (a relu that zeroes a window): all of ``dy[p]`` goes to ONE entry
  per window, the first maximal one in row-major window order, as
  documented; the numpy reference applies that rule independently. With
  overlapping windows, an entry first in several windows sums theirs."""
  rng = np.random.default_rng(11)
  x = rng.integers(0, 2, size=(2, 6, 6, 2)).astype(np.float64)
  x[0, :2, :2, 0] = 0.0                        # a window of four tied zeros
  dy = rng.uniform(1, 2, size=(2, 3, 3, 2))
  x1 = rng.integers(0, 2, size=(2, 9, 2)).astype(np.float64)
  dy1 = rng.uniform(1, 2, size=(2, 8, 2))
  dx, dx1 = jax.jit(lambda x, dy, x1, dy1: (
      layers.max_pool_backward(layers.max_pool_forward(x, 2)[1], dy),
      layers.max_pool_backward(layers.max_pool_forward(x1, 2, 1)[1], dy1)))(
          x, dy, x1, dy1)
  np.testing.assert_array_equal(
      dx, np_pool_backward(x, (2, 2), (2, 2), "VALID", dy, "max"))
  # (m, P0, q0, P1, q1, c) -> (m, P0, P1, c, window of 4)
  windows = np.asarray(dx).reshape(2, 3, 2, 3, 2, 2).transpose(0, 1, 3, 5, 2, 4)
  windows = windows.reshape(2, 3, 3, 2, 4)
  assert np.all(np.count_nonzero(windows, axis=-1) == 1)
  np.testing.assert_array_equal(windows.sum(axis=-1), dy)
  assert dx[0, 0, 0, 0] == dy[0, 0, 0, 0]      # the first of the four zeros
  np.testing.assert_allclose(
      dx1, np_pool_backward(x1, (2,), (1,), "VALID", dy1, "max"), rtol=1e-15)


def test_tiled_max_pool_picks_numpys_argmax_and_passes_nans_on():
  """The tiled pool's unrolled compare chain (``pool._first_argmax``)
  against numpy's ``argmax``, the same rules written elsewhere: the first
  maximum wins a tie, a NaN counts above every number (the first NaN
  wins), and ``-inf`` and ``inf`` are numbers. ``y`` equals ``lax``'s
  ``reduce_window`` max, NaNs included, and dy goes to the picked entry."""
  rng = np.random.default_rng(5)
  pick = np.array([0.0, 1.0, np.nan, -np.inf, np.inf])
  x = pick[rng.integers(0, 5, size=(3, 12, 4))]    # ties, NaNs, infinities
  x[0, :4, 0] = [1.0, np.nan, 2.0, np.nan]       # a NaN after a number
  x[0, 4:6, 0] = [np.nan, 3.0]                     # a NaN before one
  dy = rng.uniform(1, 2, size=(3, 4, 4))

  def run(x, dy):
    y, cache = layers.max_pool_forward(x, 3)
    ref = jax.lax.reduce_window(x, -np.inf, jax.lax.max, (1, 3, 1),
                                (1, 3, 1), "VALID")
    return y, cache[0], ref, layers.max_pool_backward(cache, dy)
  y, q_star, ref, dx = jax.jit(run)(x, dy)
  windows = x.reshape(3, 4, 3, 4)                  # (m, P, q, c)
  np.testing.assert_array_equal(q_star, np.argmax(windows, axis=2))
  np.testing.assert_array_equal(y, ref)            # NaN where a window has one
  assert np.isnan(y[0, 0, 0]) and np.isnan(y[0, 1, 0])
  want = np.zeros_like(windows)
  np.put_along_axis(want, np.argmax(windows, axis=2)[:, :, None], dy[:, :, None],
                    axis=2)
  np.testing.assert_array_equal(dx, want.reshape(x.shape))


def test_avg_pool_same_counts_only_in_bounds_entries():
  # A 5-long signal, window 2, SAME: the last window holds one real entry
  # and one pad; it is a mean of one, so that entry gets all of dy there.
  def run(x):
    y, cache = layers.avg_pool_forward(x, 2, 2, "SAME")
    return y, layers.avg_pool_backward(cache, jnp.ones_like(y))
  y, dx = jax.jit(run)(jnp.arange(5.0)[None, :, None])
  np.testing.assert_array_equal(y[0, :, 0], [0.5, 2.5, 4.0])
  np.testing.assert_array_equal(dx[0, :, 0], [0.5, 0.5, 0.5, 0.5, 1.0])


GLOBAL = {"avg": (layers.global_avg_pool_forward,
                  layers.global_avg_pool_backward, layers.global_avg_pool),
          "max": (layers.global_max_pool_forward,
                  layers.global_max_pool_backward, layers.global_max_pool)}


def test_global_pools_backward():
  rng = np.random.default_rng(2)
  cases = [(kind, rng.normal(size=(2, *spatial, 3)), rng.normal(size=(2, 3)))
           for kind in GLOBAL for spatial in [(5,), (3, 4)]]

  def run(arrays):
    out = []
    for (kind, _, _), (x, dy) in zip(cases, arrays):
      forward, backward, apply = GLOBAL[kind]
      y, cache = forward(x)
      y_ref, vjp = jax.vjp(apply, x)
      out.append((y, backward(cache, dy), y_ref, vjp(dy)[0],
                  _fd(lambda v: jnp.sum(dy * apply(v)), x)))
    return out

  results = jax.jit(run)([(x, dy) for _, x, dy in cases])
  for (kind, x, dy), (y, dx, y_ref, ref_dx, fd_dx) in zip(cases, results):
    np.testing.assert_array_equal(y, y_ref)
    flat = x.reshape(2, -1, 3)
    np.testing.assert_allclose(
        y, flat.mean(1) if kind == "avg" else flat.max(1), rtol=1e-14)
    assert rel(dx, ref_dx) <= 1e-10 and rel(dx, fd_dx) <= 1e-6, kind
    # the numpy picture: one window covering the whole map
    spatial = x.shape[1:-1]
    one = dy.reshape(2, *(1,) * len(spatial), 3)
    assert rel(dx, np_pool_backward(x, spatial, spatial, "VALID", one,
                                    kind)) <= 1e-10, kind


def test_global_max_pool_ties_go_to_the_first_position():
  x = np.zeros((1, 2, 3, 1))
  x[0, 1, 0, 0] = x[0, 1, 2, 0] = 1.0
  y, dx = jax.jit(lambda x: (layers.global_max_pool(x),
                             layers.global_max_pool_backward(
                                 layers.global_max_pool_forward(x)[1],
                                 jnp.full((1, 1), 3.0))))(x)
  expected = np.zeros((1, 2, 3, 1))
  expected[0, 1, 0, 0] = 3.0                   # the row-major first of the two
  np.testing.assert_array_equal(y, [[1.0]])
  np.testing.assert_array_equal(dx, expected)
