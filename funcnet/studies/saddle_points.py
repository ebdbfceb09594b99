"""Study ``saddle-points``: does gradient descent linger at saddles and on
plateaus, and do momentum and adaptive steps leave them sooner when every
optimizer runs at its own tuned learning rate?

Part 1, four test surfaces ``f: R^2 -> R``, every optimizer of
:mod:`funcnet.optimizers` from one start, ``p = (x, y)`` a ``(2,)`` array:

  saddle       f = x^2 - y^2                    start (1, 1e-3); the saddle at 0
  quadratic    f = 0.1 x^2 + 2 y^2              curvatures 0.2 and 4 (condition 20)
  rosenbrock   f = (1 - x)^2 + 100 (y - x^2)^2  a curved valley, minimum at (1, 1)
  wells        f = 0.05 |p|^2 - sum_k a_k exp(-|p - c_k|^2 / (2 s_k^2))
               three Gaussian wells of different depths; the start lies
               beyond the shallowest, the deepest is on the far side of it

The gradient is ``jax.grad`` of the surface (these are test functions, not
networks). Each run is a ``lax.scan`` of ``steps`` updates, frozen once it
meets its goal (the saddle's: ``|y| > escape``; the others': ``f(p) - f_min
< tol``) or diverges, so the trajectory ends there. A run *diverges* when
``f`` rises above ``f(start)`` by more than the surface's whole range over
the plotted box (or turns non-finite): the loss grew, it did not descend.

Every optimizer runs at every rate ``eta`` of the log grid ``lr_grid`` (one
``vmap`` over the rates: each rule's update is linear in ``eta``, so the
optimizer runs at rate 1 and its update is scaled by ``eta``). Its *tuned*
rate is the one that meets the goal in the fewest steps without diverging
(Goh 2017 and Choi et al. 2019 compare methods this way). The *shared-rate*
view runs the pairs ``lr_<surface> = [lr, adaptive_lr]``: ``lr`` for sgd,
momentum and nesterov, ``adaptive_lr`` for adagrad, rmsprop and adam.

Part 2, the same in many dimensions (Saxe et al. 2014): a deep *linear*
network ``x -> x W_1 ... W_L`` from a small init, trained full batch on a
linear target ``y = x A`` with funcnet's hand-written backprop, for every
seed of ``seeds`` (init and data) and every rate of ``lr_grid``. Near ``W =
0`` every weight's gradient is a product of the other, small, weights: a
saddle with a long plateau around it. Reported: the first step whose loss
is below ``plateau`` times the initial one; a run whose loss ever exceeds
``diverge_factor`` times the initial one (or turns non-finite) diverged.
The tuned rate leaves the plateau soonest in the mean over seeds with every
seed stable.

What the numbers say is decided by :func:`decide`, a pure function of them.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import backprop, optimizers
from funcnet.errors import ConfigError
from funcnet.models import mlp
from funcnet.studies import claims, saddle_points_report as rep
from funcnet.studies.registry import Study, register
from funcnet.studies.saddle_points_report import describe

CLAIM = ("Does gradient descent linger at saddle points and plateaus, and do "
         "momentum and adaptive steps leave them sooner, with every optimizer "
         "at its own tuned learning rate (2-D surfaces, a deep linear network)?")

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
GRADIENT_SCALED = ("sgd", "momentum", "nesterov")
"""The optimizers whose step is proportional to the gradient; in the shared
view they take the first learning rate of a pair, the others the second."""


class Surface(NamedTuple):
  """A 2-D test surface.

  Attributes:
    name: the key in the results and the figure's file name.
    formula: ``f`` in words, for titles.
    f: ``p -> f(p)``; elementwise in ``p[0], p[1]``, so ``p`` may be ``(2,)``
      or ``(2, H, W)`` (a grid for the contour plot).
    start: where every optimizer starts.
    box: ``(x_min, x_max, y_min, y_max)``, the plotted region.
    f_min: the minimum value, or None when there is none (the saddle) or it
      is found numerically (the wells).
    levels: the contour levels: a count (evenly spaced) or the values
      (log-spaced where the floor is far below the walls).
  """
  name: str
  formula: str
  f: Callable
  start: tuple
  box: tuple
  f_min: object
  levels: object = 16


def _well(p, c, a, s):
  return a * jnp.exp(-((p[0] - c[0]) ** 2 + (p[1] - c[1]) ** 2) / (2 * s ** 2))


WELLS = (((-1.0, 0.3), 0.7, 0.5),    # shallow, next to the start
         ((1.5, -0.3), 2.0, 0.8),    # deepest, beyond the shallow one
         ((-0.2, -1.6), 1.0, 0.5))
"""The wells' ``(centre, depth, width)``."""

SURFACES = (
    Surface("saddle", "x² − y²", lambda p: p[0] ** 2 - p[1] ** 2, (1.0, 1e-3),
            (-1.2, 1.2, -1.3, 1.3), None),
    Surface("quadratic", "0.1 x² + 2 y²", lambda p: 0.1 * p[0] ** 2 + 2 * p[1] ** 2,
            (-4.0, 1.5), (-4.5, 1.5, -2.0, 2.0), 0.0, np.logspace(-2, 1, 13)),
    Surface("rosenbrock", "(1 − x)² + 100 (y − x²)²",
            lambda p: (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2,
            (-1.5, 2.0), (-2.0, 2.0, -1.0, 3.0), 0.0, np.logspace(-2, 3.5, 16)),
    Surface("wells", "0.05 |p|² − Σ Gaussian wells",
            lambda p: 0.05 * (p[0] ** 2 + p[1] ** 2) - sum(_well(p, *w) for w in WELLS),
            (-2.8, 0.6), (-3.0, 3.0, -3.0, 2.5), None),
)


def shared_lr(p: dict, key: str, name: str) -> float:
  """The shared-view rate of optimizer ``name`` from the pair ``p[key]``."""
  return p[key][0 if name in GRADIENT_SCALED else 1]


# --- part 1: 2-D surfaces -----------------------------------------------------

def _scan(f, done, name, p0, steps: int, eta, ceiling):
  """``(points (steps + 1, 2), reached, f(last point), diverged)`` of
  optimizer ``name`` at rate ``eta`` on ``f`` from ``p0``: ``reached`` is
  the number of updates taken before ``done(p)`` first held, ``-1`` if it
  never did; ``diverged`` whether ``f`` ever exceeded ``ceiling`` (or turned
  non-finite). Once either holds the point stays put (the scan keeps its
  length). Traceable in ``eta`` (the caller vmaps over it and jits).
  """
  grad, opt = jax.grad(f), optimizers.get(name, learning_rate=1.0)

  def over(q):
    fq = f(q)
    return ~jnp.isfinite(fq) | (fq > ceiling) | ~jnp.isfinite(q).all()

  def step(carry, _):
    p, state, reached, t, bad = carry
    updates, new_state = opt.update(grad(p), state, p)
    stop = done(p) | bad
    reached = jnp.where((reached < 0) & done(p) & ~bad, t, reached)
    # Every rule's update is linear in its rate: rate 1, then scaled.
    new_p = p + eta * updates
    p = jnp.where(stop, p, new_p)
    state = jax.tree_util.tree_map(lambda a, b: jnp.where(stop, a, b), state, new_state)
    return (p, state, reached, t + 1, bad | over(p)), p

  init = (p0, opt.init(p0), jnp.int32(-1), jnp.int32(0), jnp.bool_(False))
  (p, _, reached, t, bad), traj = jax.lax.scan(step, init, length=steps)
  reached = jnp.where((reached < 0) & done(p) & ~bad, t, reached)
  return jnp.concatenate([p0[None], traj]), reached, f(p), bad


def _one_surface(s: Surface, p: dict, seed, ceiling) -> dict:
  """Every optimizer on ``s`` at every rate of ``lr_grid`` and at its shared
  rate (the last entry), traceable. With a ``seed`` point (the best of the
  plotted grid), ``f_min`` is found first, by 2000 steps of gradient descent
  from it; otherwise it is ``s.f_min``."""
  f_min, argmin = s.f_min, None
  if s.name == "saddle":
    done = lambda q: jnp.abs(q[1]) > p["escape"]
  else:
    if seed is not None:
      pts, _, f_min, _ = _scan(s.f, lambda q: False, "sgd", seed, 2000, 0.05, jnp.inf)
      argmin = pts[-1]
    done = lambda q: s.f(q) - f_min < p["tol"]
  start = jnp.asarray(s.start, jnp.float32)
  runs = {}
  for n in p["optimizers"]:
    etas = jnp.asarray(list(p["lr_grid"]) + [shared_lr(p, f"lr_{s.name}", n)],
                       jnp.float32)
    runs[n] = jax.vmap(lambda e: _scan(s.f, done, n, start, p["steps"], e, ceiling))(etas)
  return {"runs": runs, "f_min": f_min, "argmin": argmin}


def _surfaces(p: dict, grids: dict) -> dict:
  """``{surface: {"runs": {optimizer: (points (R, steps + 1, 2), reached
  (R,), f_last (R,), diverged (R,))}, "f_min", "argmin"}}`` over the ``R =
  len(lr_grid) + 1`` rates, all in one jitted call: on a CPU one program of
  many small scans compiles faster than the scans one by one."""
  seeds, ceilings = {}, {}
  for s in SURFACES:
    X, Y, Z = grids[s.name]
    ceilings[s.name] = float(s.f(np.asarray(s.start))) + float(Z.max() - Z.min())
    if s.name != "saddle" and s.f_min is None:
      i = np.unravel_index(np.argmin(Z), Z.shape)
      seeds[s.name] = jnp.asarray([X[i], Y[i]], jnp.float32)
  run = jax.jit(lambda seeds: {s.name: _one_surface(s, p, seeds.get(s.name),
                                                     ceilings[s.name])
                               for s in SURFACES})
  out = jax.device_get(run(seeds))
  return {name: {"runs": {n: tuple(np.asarray(a) for a in r["runs"][n])
                          for n in p["optimizers"]},
                 "f_min": None if r["f_min"] is None else float(r["f_min"]),
                 "argmin": r["argmin"], "ceiling": ceilings[name]}
          for name, r in out.items()}


def outcome(lr, steps, diverged: bool, std=None) -> dict:
  """One run's result: its rate, the steps to the goal (None: not within the
  budget, or diverged), whether it diverged; ``std`` over seeds if any."""
  out = {"lr": None if lr is None else float(lr),
         "steps": None if steps is None or diverged else steps,
         "diverged": bool(diverged)}
  if std is not None:
    out["std"] = float(std)
  return out


def tune(grid_outcomes) -> int:
  """The index of the tuned rate: the fewest steps to the goal without
  diverging (the smaller rate on a tie); None when no rate reached it."""
  best = None
  for i, o in enumerate(grid_outcomes):
    if o["steps"] is not None and (best is None or o["steps"] < grid_outcomes[best]["steps"]):
      best = i
  return best


def _surface_results(s: Surface, r: dict, p: dict) -> dict:
  goal = (f"abs(y) > {p['escape']:g}" if s.name == "saddle"
          else f"f − f_min < {p['tol']:g}")
  grid, shared, tuned, final = {}, {}, {}, {}
  for n, (pts, reached, f_last, bad) in r["runs"].items():
    rows = [outcome(lr, int(reached[i]) if reached[i] >= 0 else None, bad[i])
            for i, lr in enumerate(list(p["lr_grid"]) + [shared_lr(p, f"lr_{s.name}", n)])]
    grid[n], shared[n] = rows[:-1], rows[-1]
    i = tune(grid[n])
    tuned[n] = {**grid[n][i], "index": i} if i is not None else _untuned(grid[n], f_last)
    final[n] = {"tuned": pts[tuned[n]["index"], -1].tolist(),
                "shared": pts[-1, -1].tolist()}
  result = {"goal": goal, "start": list(s.start), "shared_lrs": p[f"lr_{s.name}"],
            "grid": grid, "shared": shared, "tuned": tuned, "final_point": final,
            "divergence_ceiling": r["ceiling"]}
  if r["f_min"] is not None:
    result["f_min"] = r["f_min"]
  return result


def _untuned(rows, f_last) -> dict:
  """No rate met the goal: the stable rate that got lowest (for the figure),
  or, when every rate diverged, the smallest one; ``steps`` is None.
  ``index``: its place in the grid (as for a tuned rate)."""
  stable = [i for i, o in enumerate(rows) if not o["diverged"]]
  i = min(stable, key=lambda j: f_last[j]) if stable else 0
  return {**rows[i], "index": i}


# --- part 2: a deep linear network --------------------------------------------

def _deep_data(p: dict, seed: int, model):
  """Small init and data of one seed: ``x ~ N(0, I)`` of shape ``(examples,
  width)``, ``y = x A`` with ``A ~ N(0, 1 / width)`` elementwise (each output
  about unit variance)."""
  w = p["deep_width"]
  # Small weights put the network near the saddle at W = 0 (Saxe et al.).
  params = jax.tree_util.tree_map(lambda v: v * p["deep_init_scale"],
                                  model.init(jax.random.key(seed)))
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((p["deep_examples"], w)).astype(np.float32)
  a = rng.standard_normal((w, w)) / np.sqrt(w)
  return params, x, (x @ a).astype(np.float32), np.linalg.svd(a, compute_uv=False)


def _deep_linear(p: dict) -> dict:
  """Loss per step ``(S, R, deep_steps)`` of each optimizer, for ``S`` seeds
  and ``R = len(lr_grid) + 1`` rates (the last the shared one), full batch.

  The network is square, ``deep_depth`` layers ``(width, width)``, as in
  Saxe et al.'s analysis (one weight shape is one initialiser to compile).
  """
  w = p["deep_width"]
  model = mlp([w] * (p["deep_depth"] + 1), activation="identity",
              output_activation="identity", init="xavier")
  per_seed = [_deep_data(p, s, model) for s in p["seeds"]]
  stack = lambda i: jax.tree_util.tree_map(lambda *a: jnp.stack(a),
                                           *[d[i] for d in per_seed])
  params, x, y = stack(0), stack(1), stack(2)
  vg = backprop.value_and_grad(model, "mse")

  def losses(name, eta, params, x, y):
    opt = optimizers.get(name, learning_rate=1.0)  # scaled by eta below

    def step(carry, _):
      params, state = carry
      c, g = vg(params, x, y)
      updates, state = opt.update(g, state, params)
      params = jax.tree_util.tree_map(lambda q, u: q + eta * u, params, updates)
      return (params, state), c
    return jax.lax.scan(step, (params, opt.init(params)), length=p["deep_steps"])[1]

  def one(name):
    etas = jnp.asarray(list(p["lr_grid"]) + [shared_lr(p, "deep_lr", name)], jnp.float32)
    over_rates = jax.vmap(lambda e, q, a, b: losses(name, e, q, a, b),
                          in_axes=(0, None, None, None))
    return jax.vmap(lambda q, a, b: over_rates(etas, q, a, b))(params, x, y)

  run = jax.jit(lambda: {n: one(n) for n in p["optimizers"]})
  out = jax.device_get(run())
  curves = {n: np.asarray(out[n], np.float64) for n in p["optimizers"]}
  return {"curves": curves, "singular_values": [d[3] for d in per_seed]}


def leave_steps(curves, plateau: float, factor: float):
  """``(steps (S, R) with -1 where not left, diverged (S, R))`` from loss
  curves ``(S, R, T)``: the first step below ``plateau`` times the initial
  loss; diverged where a loss exceeds ``factor`` times it or is not finite."""
  c0 = curves[..., :1]
  bad = ~np.isfinite(curves).all(-1) | (np.nan_to_num(curves, nan=np.inf) > factor * c0).any(-1)
  below = curves < plateau * c0
  steps = np.where(below.any(-1), below.argmax(-1), -1)
  return np.where(bad, -1, steps), bad


def _deep_results(deep: dict, p: dict) -> dict:
  """Per optimizer: every rate's mean ± std over seeds, the tuned and the
  shared rate. A rate counts only when every seed left without diverging."""
  grid, shared, tuned = {}, {}, {}
  for n, c in deep["curves"].items():
    steps, bad = leave_steps(c, p["plateau"], p["diverge_factor"])
    rows = []
    for j, lr in enumerate(list(p["lr_grid"]) + [shared_lr(p, "deep_lr", n)]):
      ok = (steps[:, j] >= 0).all()
      rows.append({**outcome(lr, float(steps[:, j].mean()) if ok else None,
                             bad[:, j].any(), steps[:, j].std() if ok else None),
                   "per_seed": [int(v) if v >= 0 else None for v in steps[:, j]]})
    grid[n], shared[n] = rows[:-1], rows[-1]
    i = tune(grid[n])
    tuned[n] = {**grid[n][i if i is not None else 0], "index": i or 0}
  return {"grid": grid, "shared": shared, "tuned": tuned,
          "initial_loss": float(np.mean([c[:, 0, 0] for c in deep["curves"].values()])),
          "target_singular_values": deep["singular_values"]}


# --- the decision ---------------------------------------------------------------

def _sooner(a: dict, b: dict, margin: float, spread: bool = False) -> bool:
  """``a`` met its goal in a fraction ``margin`` fewer steps than ``b``, and
  at least 2 fewer (a step count resolves one step), or ``b`` never did; with
  ``spread``, also by more than their stds summed."""
  if a["steps"] is None:
    return False
  if b["steps"] is None:
    return True
  gap = b["steps"] - a["steps"]
  ok = a["steps"] <= (1 - margin) * b["steps"] and gap >= 2
  return ok and (not spread or gap > a.get("std", 0) + b.get("std", 0))


def _versus(text, view, a, b, margin, spread=False, missing=None) -> dict:
  if missing:
    return claims.clause(text, None, missing)
  return claims.clause(text, _sooner(view[a], view[b], margin, spread),
                       f"{a} {describe(view[a])} vs {b} {describe(view[b])}")


def decide(measured: dict, p: dict) -> list:
  """The clauses of the claim, from ``measured`` (``{"saddle", "quadratic",
  "rosenbrock": {"shared", "tuned": {optimizer: outcome}}, "wells":
  {"deepest", "runs"}, "deep": {"shared", "tuned"}, "seeds": S}``, outcomes
  as :func:`outcome` makes them): a pure function of the numbers."""
  m, names = p["margin"], set(p["optimizers"])
  pct = f"at least {m:.0%} and 2 fewer steps"

  def lacks(*want):
    gone = [n for n in want if n not in names]
    return f"not run: {', '.join(gone)} not in optimizers" if gone else None

  sad, deep = measured["saddle"], measured["deep"]
  few = (f"{measured['seeds']} seed(s); a comparison over seeds needs >= 3"
         if measured["seeds"] < 3 else None)
  wells = measured["wells"]
  out = [
      _versus(f"at the shared rate, momentum escapes the saddle sooner than sgd ({pct})",
              sad["shared"], "momentum", "sgd", m, missing=lacks("momentum", "sgd")),
      _versus(f"at each one's tuned rate, momentum escapes the saddle sooner than sgd ({pct})",
              sad["tuned"], "momentum", "sgd", m, missing=lacks("momentum", "sgd")),
      _versus(f"at each one's tuned rate, adam escapes the saddle sooner than sgd ({pct})",
              sad["tuned"], "adam", "sgd", m, missing=lacks("adam", "sgd")),
      _versus("at each one's tuned rate, momentum reaches the ill-conditioned "
              f"quadratic's minimum sooner than sgd ({pct})",
              measured["quadratic"]["tuned"], "momentum", "sgd", m,
              missing=lacks("momentum", "sgd")),
      _versus("at each one's tuned rate, momentum reaches the Rosenbrock minimum "
              f"sooner than sgd ({pct})", measured["rosenbrock"]["tuned"],
              "momentum", "sgd", m, missing=lacks("momentum", "sgd")),
      claims.clause("on the wells surface, most stable (optimizer, rate) runs of "
                    "the grid end outside the deepest well",
                    wells["deepest"] < 0.5 * wells["runs"] if wells["runs"] else None,
                    f"{wells['deepest']} of {wells['runs']} stable runs reach it"),
      _versus("in the deep linear network, at each one's tuned rate, momentum "
              f"leaves the plateau sooner than sgd ({pct}, and by more than the "
              "seeds' stds summed)", deep["tuned"], "momentum", "sgd", m, True,
              missing=lacks("momentum", "sgd") or few),
      _versus("in the deep linear network, at each one's tuned rate, adam "
              f"leaves the plateau sooner than sgd ({pct}, and by more than the "
              "seeds' stds summed)", deep["tuned"], "adam", "sgd", m, True,
              missing=lacks("adam", "sgd") or few),
  ]
  return out


def measured_of(results: dict) -> dict:
  """What :func:`decide` reads, from the study's results."""
  s = results["surfaces"]
  wells = [o for rows in s["wells"]["grid"].values() for o in rows if not o["diverged"]]
  return {"saddle": s["saddle"], "quadratic": s["quadratic"],
          "rosenbrock": s["rosenbrock"], "deep": results["deep_linear"],
          "wells": {"deepest": sum(o["steps"] is not None for o in wells),
                    "runs": len(wells)},
          "seeds": len(results["params_seeds"])}


# --- the study ------------------------------------------------------------------

def _check(p: dict) -> None:
  """One-line ``ConfigError`` for a parameter the study cannot run with."""
  for key in [f"lr_{s.name}" for s in SURFACES] + ["deep_lr"]:
    lrs = p[key]
    if len(lrs) != 2 or not all(isinstance(v, (int, float)) and v > 0 for v in lrs):
      raise ConfigError(f"study parameter {key!r} = {lrs!r}; expected two positive "
                        "learning rates [lr, adaptive_lr]")
  if not p["lr_grid"] or not all(isinstance(v, (int, float)) and v > 0
                                 for v in p["lr_grid"]):
    raise ConfigError(f"study parameter 'lr_grid' = {p['lr_grid']!r}; expected a "
                      "non-empty list of positive learning rates")
  if not p["optimizers"] or any(n not in OPTIMIZERS for n in p["optimizers"]):
    raise ConfigError(f"study parameter 'optimizers' = {p['optimizers']!r}; expected "
                      f"a non-empty list of names from {', '.join(OPTIMIZERS)}")
  if not p["seeds"] or not all(isinstance(s, int) for s in p["seeds"]):
    raise ConfigError(f"study parameter 'seeds' = {p['seeds']!r}; expected a "
                      "non-empty list of integers")
  for key in ("steps", "deep_steps", "deep_depth", "deep_width", "deep_examples"):
    if p[key] < 1:
      raise ConfigError(f"study parameter {key!r} = {p[key]}; expected an integer >= 1")
  for key in ("escape", "tol", "deep_init_scale", "margin"):
    if not p[key] > 0:
      raise ConfigError(f"study parameter {key!r} = {p[key]}; expected a value > 0")
  if not 0 < p["plateau"] < 1 or not p["diverge_factor"] > 1:
    raise ConfigError(f"study parameters 'plateau' = {p['plateau']} in (0, 1) and "
                      f"'diverge_factor' = {p['diverge_factor']} > 1 expected")


def _run(out: str, p: dict) -> dict:
  _check(p)
  grids = {s.name: rep.grid(s.f, s.box) for s in SURFACES}
  solved = _surfaces(p, grids)
  results = {"surfaces": {s.name: _surface_results(s, solved[s.name], p) for s in SURFACES}}
  deep = _deep_linear(p)
  results["deep_linear"] = _deep_results(deep, p)
  results["params_seeds"] = list(p["seeds"])
  results["claims"] = decide(measured_of(results), p)
  figures = [rep.plot_surface(out, s, grids[s.name], solved[s.name], results, p)
             for s in SURFACES]
  figures += [rep.plot_sensitivity(out, results, p), rep.plot_deep(out, deep, results, p)]
  results["readme"] = {
      "title": "saddle-points: gradient descent at saddles and plateaus, each "
               "optimizer at its own tuned rate",
      "measured": rep.measured(results, p), "figures": figures,
      "table": rep.table(results, p)}
  return results


STUDY = register(Study(
    name="saddle-points",
    claim=CLAIM,
    run=_run,
    defaults={
        "optimizers": list(OPTIMIZERS),
        "steps": 3000,                 # updates per 2-D run
        "escape": 1.0,                 # the saddle is left once |y| > escape
        "tol": 1e-4,                   # the other surfaces: f - f_min < tol
        # Every optimizer at every rate: 3 per decade, 1e-4 .. 2.
        "lr_grid": [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05,
                    0.1, 0.2, 0.5, 1.0, 2.0],
        "lr_saddle": [0.01, 0.01],     # the shared-rate view
        "lr_quadratic": [0.1, 0.1],
        "lr_rosenbrock": [0.001, 0.02],
        "lr_wells": [0.1, 0.05],
        "deep_depth": 5,
        "deep_width": 16,
        "deep_examples": 256,
        "deep_init_scale": 0.2,
        "deep_steps": 2000,
        "deep_lr": [0.05, 0.005],
        "plateau": 0.5,                # the plateau is left once loss < plateau x initial
        "diverge_factor": 10.0,        # a deep run diverged once loss > factor x initial
        "margin": 0.1,                 # "sooner" means at least 10% fewer steps
        "seeds": [0, 1, 2],
    },
    quick={"optimizers": ["sgd", "momentum", "adam"], "steps": 400,
           "lr_grid": [1e-3, 0.01, 0.1, 1.0], "deep_steps": 300, "seeds": [0]},
))
