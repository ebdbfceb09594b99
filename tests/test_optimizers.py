"""funcnet.optimizers against optax, step by step, and on quadratics with known minima.

The reference for every rule is the optax alias with the same
hyperparameters (written out here, not taken from ``optimizers.get``). Both
are fed the same random gradients and the same params for 200 steps in
float64, and at every step the updates and each state field must agree to
1e-12 relative, elementwise. The step ``count`` that optax does not keep is
checked against the number of steps taken. Other references: the float64
fixed points of quadratics, and closed forms in numpy.

Those comparisons run with x64 on (the ``x64`` fixture; the module-scoped
fixtures, set up before any function-scoped one, turn it on themselves).
The state-type and retracing tests run in the default float32, as users do.

Compiles dominate the run time on CPU, so the table of trajectories and the
quadratic runs each compile once, in a module-scoped fixture, and are then
checked case by case.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from funcnet import optimizers, schedules
from funcnet.errors import ConfigError, UnknownNameError

STEPS = 200
RTOL = 1e-12
SHAPES = {"w": (3, 4), "b": (4,)}
LR = 0.05
# A schedule both sides call with their own int32 count: cosine decay stays
# in float64 for an int32 count (optax's exponential and linear schedules do
# not; see test_schedules.py).
OPTAX_SCHEDULE = optax.schedules.cosine_decay_schedule(0.1, 150, alpha=0.2)
MAX_NORM = 1.0
L2 = 1e-3


def _params(key, dtype=jnp.float64):
  keys = jax.random.split(key, len(SHAPES))
  return {k: jax.random.normal(kk, s, dtype)
          for kk, (k, s) in zip(keys, sorted(SHAPES.items()))}


def _gradients(key, dtype=jnp.float64):
  """``STEPS`` random gradient pytrees, stacked; global norms spread around ``MAX_NORM``."""
  k_scale, *keys = jax.random.split(key, len(SHAPES) + 1)
  # log-normal step scales put some steps inside and some outside the clip
  # ball; every leaf of one step shares its scale.
  scale = 0.3 * jnp.exp(jax.random.normal(k_scale, (STEPS,), dtype))
  return {k: jax.random.normal(kk, (STEPS, *s), dtype)
          * scale.reshape((STEPS,) + (1,) * len(s))
          for kk, (k, s) in zip(keys, sorted(SHAPES.items()))}


# name -> (funcnet hyperparameters besides learning_rate, none of them a
# default; the optax optimizer with the same ones, given a learning rate;
# funcnet state field -> the matching optax state value).
RULES = {
    "sgd": ({}, lambda lr: optax.sgd(lr), lambda s: {}),
    "momentum": (dict(beta=0.7), lambda lr: optax.sgd(lr, momentum=0.7),
                 lambda s: {"velocity": s[0].trace}),
    "nesterov": (dict(beta=0.7),
                 lambda lr: optax.sgd(lr, momentum=0.7, nesterov=True),
                 lambda s: {"velocity": s[0].trace}),
    "adagrad": (dict(initial_accumulator_value=0.3, eps=1e-4),
                lambda lr: optax.adagrad(lr, initial_accumulator_value=0.3,
                                         eps=1e-4),
                lambda s: {"sum_of_squares": s[0].sum_of_squares}),
    "rmsprop": (dict(decay=0.8, eps=1e-4),
                lambda lr: optax.rmsprop(lr, decay=0.8, eps=1e-4),
                lambda s: {"nu": s[0].nu}),
    "adam": (dict(b1=0.8, b2=0.95, eps=1e-3),
             lambda lr: optax.adam(lr, b1=0.8, b2=0.95, eps=1e-3),
             lambda s: {"count": s[0].count, "mu": s[0].mu, "nu": s[0].nu}),
    "adamw": (dict(b1=0.8, b2=0.95, eps=1e-3, weight_decay=0.1),
              lambda lr: optax.adamw(lr, b1=0.8, b2=0.95, eps=1e-3,
                                     weight_decay=0.1),
              lambda s: {"count": s[0].count, "mu": s[0].mu, "nu": s[0].nu}),
}

# optax's alias for each rule, whose declared defaults funcnet's must equal
# (momentum and nesterov are optax.sgd with momentum=beta, which has none).
OPTAX_ALIAS = {"sgd": optax.sgd, "adagrad": optax.adagrad,
               "rmsprop": optax.rmsprop, "adam": optax.adam,
               "adamw": optax.adamw}


def test_rules_cover_every_optimizer():
  assert set(RULES) == set(optimizers.OPTIMIZERS)


@pytest.mark.parametrize("name", sorted(OPTAX_ALIAS))
def test_defaults_are_optax_defaults(name):
  theirs = inspect.signature(OPTAX_ALIAS[name]).parameters
  mine = inspect.signature(optimizers.OPTIMIZERS[name]).parameters
  assert list(mine)[0] == "learning_rate"
  for hp in list(mine)[1:]:
    assert mine[hp].default == theirs[hp].default, hp


def test_momentum_defaults():
  for name in ("momentum", "nesterov"):
    beta = inspect.signature(optimizers.OPTIMIZERS[name]).parameters["beta"]
    assert beta.default == 0.9


def _same_state(s):
  return s


# One trajectory case: (funcnet-side transform, optax transform, optax state
# -> expected funcnet state fields, funcnet state -> the named tuple those
# fields live in). A ``None`` field map compares the two states whole (both
# sides are optax then).
def _cases():
  cases = {}
  for name, (hp, ref, fields) in RULES.items():
    # A float learning rate, the optimizer alone.
    cases[name] = (
        lambda name=name, hp=hp: optimizers.get(name, learning_rate=LR, **hp),
        lambda ref=ref: ref(LR), fields, _same_state)
    # A scheduled learning rate behind clipping and L2 decay, as configs
    # build it; build() hands adamw's weight_decay to its decoupled decay.
    if name == "adamw":
      hp_build = {k: v for k, v in hp.items() if k != "weight_decay"}
      mine = lambda hp=hp_build: optimizers.build(
          "adamw", OPTAX_SCHEDULE, clip_norm=MAX_NORM, weight_decay=L2, **hp)
      theirs = lambda: optax.chain(
          optax.clip_by_global_norm(MAX_NORM),
          optax.adamw(OPTAX_SCHEDULE, b1=0.8, b2=0.95, eps=1e-3,
                      weight_decay=L2))
    else:
      mine = lambda name=name, hp=hp: optimizers.build(
          name, OPTAX_SCHEDULE, clip_norm=MAX_NORM, weight_decay=L2, **hp)
      theirs = lambda ref=ref: optax.chain(
          optax.clip_by_global_norm(MAX_NORM), optax.add_decayed_weights(L2),
          ref(OPTAX_SCHEDULE))
    cases[f"build-{name}"] = (
        mine, theirs, lambda s, fields=fields: fields(s[-1]), lambda s: s[-1])
  # funcnet's own schedule against optax's, each driving its own optimizer.
  cases["adam-funcnet-cosine"] = (
      lambda: optimizers.adam(schedules.cosine_decay(0.1, 150, alpha=0.2),
                              b1=0.8, b2=0.95, eps=1e-3),
      lambda: RULES["adam"][1](OPTAX_SCHEDULE), RULES["adam"][2], _same_state)
  # funcnet transforms inside a hand-made optax.chain, next to optax's own.
  cases["chain-mixed"] = (
      lambda: optax.chain(optimizers.clip_by_global_norm(MAX_NORM),
                          optax.add_decayed_weights(L2),
                          optimizers.nesterov(LR, beta=0.8)),
      lambda: optax.chain(optax.clip_by_global_norm(MAX_NORM),
                          optax.add_decayed_weights(L2),
                          optax.sgd(LR, momentum=0.8, nesterov=True)),
      lambda s: {"velocity": s[2][0].trace}, lambda s: s[2])
  # get/build with impl="optax": the same optax objects, hyperparameters
  # passed through unchanged.
  cases["get-optax-adamw"] = (
      lambda: optimizers.get("adamw", impl="optax", learning_rate=LR,
                             **RULES["adamw"][0]),
      lambda: RULES["adamw"][1](LR), None, _same_state)
  cases["build-optax-rmsprop"] = (
      lambda: optimizers.build("rmsprop", OPTAX_SCHEDULE, impl="optax",
                               clip_norm=MAX_NORM, weight_decay=L2,
                               **RULES["rmsprop"][0]),
      lambda: optax.chain(optax.clip_by_global_norm(MAX_NORM),
                          optax.add_decayed_weights(L2),
                          RULES["rmsprop"][1](OPTAX_SCHEDULE)),
      None, _same_state)
  return cases


CASES = _cases()


@pytest.fixture(scope="module")
def trajectories():
  """Every case of ``CASES`` over the same gradients, in one jitted scan.

  Each case's two transforms get the same gradients and the same params at
  every step; the params follow optax's updates. One compile for all cases
  keeps the file fast. Returns case -> (initial states, and stacked over
  steps (my updates, optax's updates, my states, optax's states)).
  """
  with jax.enable_x64(True):
    return _trajectories()


def _trajectories():
  key = jax.random.key(20240611)
  params, grads = _params(jax.random.fold_in(key, 0)), _gradients(
      jax.random.fold_in(key, 1))
  pairs = {case: (mine(), theirs())
           for case, (mine, theirs, _, _) in CASES.items()}

  def step(carry, g):
    carry, out = dict(carry), {}
    for case, (mine, theirs) in pairs.items():
      p, s_mine, s_theirs = carry[case]
      u_mine, s_mine = mine.update(g, s_mine, p)
      u_theirs, s_theirs = theirs.update(g, s_theirs, p)
      carry[case] = (optax.apply_updates(p, u_theirs), s_mine, s_theirs)
      out[case] = (u_mine, u_theirs, s_mine, s_theirs)
    return carry, out

  init = {case: (params, mine.init(params), theirs.init(params))
          for case, (mine, theirs) in pairs.items()}
  _, out = jax.jit(lambda c, gs: jax.lax.scan(step, c, gs))(init, grads)
  return {case: (init[case][1:], out[case]) for case in CASES}


def _assert_close(actual, expected, what):
  assert jax.tree_util.tree_structure(actual) == jax.tree_util.tree_structure(
      expected), what
  for x, y in zip(jax.tree_util.tree_leaves(actual),
                  jax.tree_util.tree_leaves(expected)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=RTOL, atol=0,
                               err_msg=what)


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_optax_every_step(case, trajectories, x64):
  _, _, fields, inner = CASES[case]
  (s0_mine, s0_theirs), (u_mine, u_theirs, s_mine, s_theirs) = (
      trajectories[case])

  _assert_close(u_mine, u_theirs, "updates")
  # Not a trivial trajectory: every leaf's updates vary over the steps.
  assert all(np.ptp(np.asarray(u)) > 0
             for u in jax.tree_util.tree_leaves(u_theirs))
  if fields is None:
    _assert_close(s0_mine, s0_theirs, "initial state")
    _assert_close(s_mine, s_theirs, "state")
    return
  for field, value in fields(s0_theirs).items():
    _assert_close(getattr(inner(s0_mine), field), value, f"initial {field}")
  for field, value in fields(s_theirs).items():
    _assert_close(getattr(inner(s_mine), field), value, field)
  # optax keeps no count outside Adam: check it against the steps taken.
  count = inner(s_mine).count
  assert int(inner(s0_mine).count) == 0
  np.testing.assert_array_equal(count, np.arange(1, STEPS + 1))
  assert count.dtype == jnp.int32


def test_clipping_is_exercised_on_both_sides(x64):
  """The gradients of the trajectories fall both inside and outside the clip ball."""
  grads = _gradients(jax.random.fold_in(jax.random.key(20240611), 1))
  norms = np.sqrt(sum(np.sum(np.asarray(g) ** 2, axis=tuple(range(1, g.ndim)))
                      for g in grads.values()))
  assert (norms < MAX_NORM).sum() > 20 and (norms > MAX_NORM).sum() > 20


# ---------------------------------------------------------------------------
# Known minima.

# C(w) = 0.5 sum_leaves sum a (w - w*)^2, curvatures a in [0.5, 2]: the
# minimum is w = w*. Per optimizer, a learning rate and a number of steps;
# the adaptive ones hover around the minimum at a distance ~ eta, so their
# rate decays.
QUADRATIC = {
    "sgd": (0.5, 200),
    "momentum": (0.1, 300),
    "nesterov": (0.1, 300),
    "adagrad": (1.0, 600),
    "rmsprop": (schedules.exponential_decay(0.05, 0.5, 100), 1000),
    "adam": (schedules.exponential_decay(0.2, 0.5, 100), 1000),
    "adamw": (schedules.exponential_decay(0.2, 0.5, 100), 1000),
}


@pytest.fixture(scope="module")
def quadratic_runs():
  """Each optimizer run from ``w* + 3`` on the quadratic, all in one jit."""
  with jax.enable_x64(True):
    return _quadratic_runs()


def _quadratic_runs():
  key = jax.random.key(7)
  curvature = jax.tree_util.tree_map(
      lambda w: 0.5 + 1.5 * jax.random.uniform(jax.random.fold_in(key, 0),
                                               w.shape, jnp.float64),
      _params(jax.random.fold_in(key, 1)))
  w_star = _params(jax.random.fold_in(key, 2))
  start = jax.tree_util.tree_map(lambda w: w + 3.0, w_star)

  def cost(w):
    return 0.5 * sum(jnp.sum(a * (x - y) ** 2) for a, x, y in zip(
        jax.tree_util.tree_leaves(curvature), jax.tree_util.tree_leaves(w),
        jax.tree_util.tree_leaves(w_star)))

  def run(name):
    lr, steps = QUADRATIC[name]
    # AdamW's default decay 1e-4 would move the minimum by ~1e-4; its decay
    # has a closed-form test of its own below.
    hp = {"weight_decay": 1e-9} if name == "adamw" else {}
    opt = optimizers.get(name, learning_rate=lr, **hp)

    def step(carry, _):
      w, s = carry
      u, s = opt.update(jax.grad(cost)(w), s, w)
      return (optax.apply_updates(w, u), s), None

    (w, _), _ = jax.lax.scan(step, (start, opt.init(start)), None,
                             length=steps)
    return w

  ws = jax.jit(lambda: {name: run(name) for name in QUADRATIC})()
  return w_star, ws


@pytest.mark.parametrize("name", sorted(QUADRATIC))
def test_minimises_quadratic(name, quadratic_runs, x64):
  w_star, ws = quadratic_runs
  for got, want in zip(jax.tree_util.tree_leaves(ws[name]),
                       jax.tree_util.tree_leaves(w_star)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4,
                               rtol=0)


def test_adamw_decay_alone_shrinks_weights_geometrically(x64):
  """With zero gradients AdamW's moments stay 0 and only the decoupled decay acts.

  Then ``w_T = w_0 prod_t (1 - eta_t lambda)``: the decay is multiplied by the
  scheduled learning rate, and not rescaled by ``1 / sqrt(nu_hat)``.
  """
  steps, lam = 300, 0.5
  w0 = jnp.linspace(-2.0, 3.0, 5, dtype=jnp.float64)
  opt = optimizers.adamw(schedules.cosine_decay(0.1, 200), weight_decay=lam)

  def step(carry, _):
    w, s = carry
    u, s = opt.update(jnp.zeros_like(w), s, w)
    return (w + u, s), None

  (w, _), _ = jax.jit(lambda w: jax.lax.scan(
      step, (w, opt.init(w)), None, length=steps))(w0)
  t = np.arange(steps)
  eta = 0.1 * 0.5 * (1 + np.cos(np.pi * np.minimum(t, 200) / 200))
  np.testing.assert_allclose(np.asarray(w),
                             np.asarray(w0) * np.prod(1 - eta * lam),
                             rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------
# jit and recompilation.


def _avals(tree):
  return [(x.shape, x.dtype, getattr(x, "weak_type", False))
          for x in jax.tree_util.tree_leaves(tree)]


@pytest.mark.parametrize("name", sorted(optimizers.OPTIMIZERS))
@pytest.mark.parametrize("lr", [LR, OPTAX_SCHEDULE], ids=["float", "schedule"])
def test_update_keeps_state_types(name, lr):
  """``update`` returns a state of exactly ``init``'s structure, shapes, dtypes and weak types.

  Anything else makes the next jitted call trace again; checked by tracing
  alone, without compiling.
  """
  opt = optimizers.build(name, lr, clip_norm=MAX_NORM, weight_decay=L2)
  params = _params(jax.random.key(0), jnp.float32)
  state = opt.init(params)
  _, new_state = jax.eval_shape(opt.update, params, state, params)
  assert (jax.tree_util.tree_structure(new_state)
          == jax.tree_util.tree_structure(state))
  assert _avals(new_state) == _avals(jax.eval_shape(lambda: opt.init(params)))


def test_second_jitted_call_does_not_retrace():
  """One jitted step for every optimizer: three calls, one trace."""
  opts = {name: optimizers.build(name, OPTAX_SCHEDULE, clip_norm=MAX_NORM,
                                 weight_decay=L2)
          for name in optimizers.OPTIMIZERS}
  traces = []

  @jax.jit
  def step(params, states, grads):
    traces.append(None)  # a Python side effect: runs only while tracing
    new_params, new_states = {}, {}
    for name, opt in opts.items():
      updates, new_states[name] = opt.update(grads, states[name], params[name])
      new_params[name] = optax.apply_updates(params[name], updates)
    return new_params, new_states

  p0 = _params(jax.random.key(0), jnp.float32)
  grads = _gradients(jax.random.key(1), jnp.float32)
  params = {name: p0 for name in opts}
  states = {name: opt.init(p0) for name, opt in opts.items()}
  for i in range(3):
    params, states = step(params, states,
                          jax.tree_util.tree_map(lambda x: x[i], grads))
  assert len(traces) == 1
  for name in opts:
    assert int(states[name][-1].count) == 3, name


# ---------------------------------------------------------------------------
# The optax protocol without optax: chain, apply_updates, global_norm.


def test_chain_apply_updates_and_norm_are_optaxs(x64):
  """funcnet's ``chain`` of clip, L2 decay and Adam against ``optax.chain``
  of the same stages for 20 steps: the same state tree (a tuple of the
  stages' states: checkpoints read either), the same updates; then
  ``apply_updates`` and ``global_norm`` against optax's, including a
  bfloat16 leaf that a float32 update must not promote."""
  stages = lambda: (optimizers.clip_by_global_norm(MAX_NORM),
                    optimizers.add_weight_decay(L2),
                    optimizers.adam(LR, b1=0.8, b2=0.95, eps=1e-3))
  mine, theirs = optimizers.chain(*stages()), optax.chain(*stages())
  assert isinstance(mine, optimizers.GradientTransformation)
  params = _params(jax.random.key(3))
  grads = _gradients(jax.random.key(4))
  s_mine, s_theirs = mine.init(params), theirs.init(params)
  assert (jax.tree_util.tree_structure(s_mine)
          == jax.tree_util.tree_structure(s_theirs))
  for i in range(20):
    g = jax.tree_util.tree_map(lambda x: x[i], grads)
    u_mine, s_mine = mine.update(g, s_mine, params)
    u_theirs, s_theirs = theirs.update(g, s_theirs, params)
    _assert_close(u_mine, u_theirs, f"updates at step {i}")
    _assert_close(s_mine, s_theirs, f"state at step {i}")
    params = optimizers.apply_updates(params, u_mine)
  with pytest.raises(ValueError, match="3 transforms got 2 states"):
    mine.update(g, s_mine[:2], params)

  mixed = {"w": params["w"], "h": jnp.ones((3,), jnp.bfloat16)}
  step = {"w": params["w"] * 0.1, "h": jnp.full((3,), 0.3, jnp.float32)}
  out, want = optimizers.apply_updates(mixed, step), optax.apply_updates(
      mixed, step)
  assert out["h"].dtype == jnp.bfloat16
  for k in want:
    np.testing.assert_array_equal(out[k], want[k])
  np.testing.assert_array_equal(optimizers.global_norm(params),
                                optax.tree.norm(params))
  np.testing.assert_allclose(
      optimizers.global_norm(params),
      np.sqrt(sum(np.sum(np.asarray(v) ** 2) for v in params.values())),
      rtol=1e-14)


def test_optax_composes_funcnets_transforms():
  """optax's combinators take funcnet's transforms as their own (the
  protocol's two fields): ``optax.chain(funcnet sgd, optax.scale(2))`` is
  sgd at twice the rate."""
  params = _params(jax.random.key(5), jnp.float32)
  g = jax.tree_util.tree_map(jnp.ones_like, params)
  opt = optax.chain(optimizers.sgd(LR), optax.scale(2.0))
  u, _ = opt.update(g, opt.init(params), params)
  for leaf in jax.tree_util.tree_leaves(u):
    np.testing.assert_allclose(leaf, -2 * LR, rtol=1e-6)


def test_count_saturates_instead_of_wrapping():
  top = np.iinfo(np.int32).max
  params = _params(jax.random.key(0), jnp.float32)
  opts = {name: optimizers.get(name, learning_rate=LR)
          for name in optimizers.OPTIMIZERS}

  @jax.jit
  def counts():
    out = {}
    for name, opt in opts.items():
      state = opt.init(params)._replace(count=jnp.asarray(top, jnp.int32))
      out[name] = opt.update(params, state, params)[1].count
    return out

  for name, count in counts().items():
    assert int(count) == top, name


# ---------------------------------------------------------------------------
# Errors.

BAD = [
    (lambda: optimizers.sgd(-0.1), ConfigError,
     ["learning_rate", "-0.1", ">= 0"]),
    (lambda: optimizers.get("adam", learning_rate=float("nan")), ConfigError,
     ["learning_rate", "nan"]),
    (lambda: optimizers.get("adam", learning_rate="fast"), ConfigError,
     ["learning_rate", "'fast'", "number"]),
    (lambda: optimizers.momentum(0.1, beta=1.0), ConfigError,
     ["beta", "1.0", "0 <= beta < 1"]),
    (lambda: optimizers.nesterov(0.1, beta=-0.5), ConfigError,
     ["beta", "-0.5", "0 <= beta < 1"]),
    (lambda: optimizers.adagrad(0.1, eps=0.0), ConfigError,
     ["eps", "0.0", "eps > 0"]),
    (lambda: optimizers.adagrad(0.1, initial_accumulator_value=-1.0),
     ConfigError, ["initial_accumulator_value", "-1.0", ">= 0"]),
    (lambda: optimizers.rmsprop(0.1, decay=1.5), ConfigError,
     ["decay", "1.5", "0 <= decay < 1"]),
    (lambda: optimizers.adam(0.1, b1=1.0), ConfigError,
     ["b1", "1.0", "0 <= b1 < 1"]),
    (lambda: optimizers.adam(0.1, b2=-0.1), ConfigError,
     ["b2", "-0.1", "0 <= b2 < 1"]),
    (lambda: optimizers.adam(0.1, eps=-1e-8), ConfigError,
     ["eps", "-1e-08", "eps > 0"]),
    (lambda: optimizers.adamw(0.1, weight_decay=-1e-4), ConfigError,
     ["weight_decay", "-0.0001", ">= 0"]),
    (lambda: optimizers.clip_by_global_norm(0.0), ConfigError,
     ["max_norm", "0.0", "> 0"]),
    (lambda: optimizers.add_weight_decay(-1.0), ConfigError,
     ["weight_decay", "-1.0", ">= 0"]),
    (lambda: optimizers.get("adam", impl="optax", learning_rate=0.1, b1=2.0),
     ConfigError, ["b1", "2.0", "0 <= b1 < 1"]),
    (lambda: optimizers.build("sgd", 0.1, clip_norm=-1.0), ConfigError,
     ["clip_norm", "-1.0", "> 0"]),
    (lambda: optimizers.build("sgd", 0.1, weight_decay=-0.1), ConfigError,
     ["weight_decay", "-0.1", ">= 0"]),
    (lambda: optimizers.build("adamw", 0.1, weight_decay=-0.1), ConfigError,
     ["weight_decay", "-0.1", ">= 0"]),
    (lambda: optimizers.get("adam", learning_rate=0.1, beta=0.9), ConfigError,
     ["adam", "unexpected", "beta"]),
    (lambda: optimizers.get("adam"), ConfigError,
     ["adam", "missing", "learning_rate"]),
    (lambda: optimizers.get("adamax", learning_rate=0.1), UnknownNameError,
     ["optimizer", "'adamax'", "adam, adamw"]),
    (lambda: optimizers.build("adamax", 0.1), UnknownNameError,
     ["optimizer", "'adamax'"]),
    (lambda: optimizers.get("adam", impl="torch", learning_rate=0.1),
     UnknownNameError, ["implementation", "'torch'", "funcnet, optax"]),
    (lambda: optimizers.adamw(0.1).update({"w": jnp.ones(2)},
                                          optimizers.adamw(0.1).init({"w": jnp.ones(2)})),
     ConfigError, ["adamw", "params"]),
    (lambda: optimizers.add_weight_decay(0.1).update({"w": jnp.ones(2)}, None),
     ConfigError, ["add_weight_decay", "params"]),
]


@pytest.mark.parametrize("make, error, words", BAD,
                         ids=[" ".join(w) for _, _, w in BAD])
def test_bad_names_and_hyperparameters_raise(make, error, words):
  with pytest.raises(error) as info:
    make()
  message = str(info.value)
  assert "\n" not in message
  for word in words:
    assert word in message
