"""Study ``saddle-points``: plain gradient descent lingers at saddles and on
plateaus; momentum and adaptive steps leave them sooner.

Part 1, four test surfaces ``f: R^2 -> R``, every optimizer of
:mod:`funcnet.optimizers` from one start, ``p = (x, y)`` a ``(2,)`` array:

  saddle       f = x^2 - y^2                    start (1, 1e-3); the saddle at 0
  quadratic    f = 0.1 x^2 + 2 y^2              curvatures 0.2 and 4 (condition 20)
  rosenbrock   f = (1 - x)^2 + 100 (y - x^2)^2  a curved valley, minimum at (1, 1)
  wells        f = 0.05 |p|^2 - sum_k a_k exp(-|p - c_k|^2 / (2 s_k^2))
               three Gaussian wells of different depths; the start lies
               beyond the shallowest, the deepest is on the far side of it

The gradient is ``jax.grad`` of the surface (these are test functions, not
networks). Each run is a ``lax.scan`` of ``steps`` updates (all of them in
one jitted call), frozen once it meets its goal, so the trajectory ends there: the saddle's goal is
``|y| > escape`` (it has left), the others' ``f(p) - f_min < tol``. On
``x^2 - y^2`` sgd multiplies ``y`` by ``1 + 2 eta`` per step, so it needs
``log(escape / y_0) / log(1 + 2 eta)`` steps; a step that scales with the
gradient is slow exactly where the gradient is small.

Part 2, the same in many dimensions (Saxe et al. 2014): a deep *linear*
network ``x -> x W_1 ... W_L`` from a small init, trained full batch on a
linear target ``y = x A`` with funcnet's hand-written backprop. Near
``W = 0`` every weight's gradient is a product of the other, small, weights:
a saddle with a long flat plateau around it. The loss sits near its initial
value until the weights grow, then falls in steps, one per singular value
of ``A``. Reported: the first step whose loss is below ``plateau`` times the
initial one.

Learning rates come in pairs ``[lr, adaptive_lr]``: ``lr`` for sgd, momentum
and nesterov, whose steps scale with the gradient, ``adaptive_lr`` for
adagrad, rmsprop and adam, whose steps are about ``adaptive_lr`` long in
parameter units whatever the gradient.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnet import backprop, optimizers
from funcnet.errors import ConfigError
from funcnet.models import mlp
from funcnet.studies import report
from funcnet.studies.registry import Study, register

CLAIM = ("Gradient descent lingers at saddle points and plateaus, where the "
         "gradient is small; momentum and adaptive steps (RMSprop, Adam) "
         "leave them sooner, on 2-D surfaces and in a deep linear network.")

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
GRADIENT_SCALED = ("sgd", "momentum", "nesterov")
"""The optimizers whose step is proportional to the gradient; they take the
first learning rate of a pair, the others the second."""


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
    claim: the figure's title.
    levels: the contour levels: a count (evenly spaced) or the values
      (log-spaced where the floor is far below the walls).
  """
  name: str
  formula: str
  f: Callable
  start: tuple
  box: tuple
  f_min: object
  claim: str
  levels: object = 16


def _well(p, c, a, s):
  return a * jnp.exp(-((p[0] - c[0]) ** 2 + (p[1] - c[1]) ** 2) / (2 * s ** 2))


WELLS = (((-1.0, 0.3), 0.7, 0.5),    # shallow, next to the start
         ((1.5, -0.3), 2.0, 0.8),    # deepest, beyond the shallow one
         ((-0.2, -1.6), 1.0, 0.5))
"""The wells' ``(centre, depth, width)``."""

SURFACES = (
    Surface("saddle", "x² − y²", lambda p: p[0] ** 2 - p[1] ** 2, (1.0, 1e-3),
            (-1.2, 1.2, -1.3, 1.3), None,
            "Saddle: sgd creeps off it; momentum and adaptive steps leave sooner"),
    Surface("quadratic", "0.1 x² + 2 y²", lambda p: 0.1 * p[0] ** 2 + 2 * p[1] ** 2,
            (-4.0, 1.5), (-4.5, 1.5, -2.0, 2.0), 0.0,
            "Ill-conditioned bowl 0.1 x² + 2 y²: sgd is slow along the flat x axis",
            np.logspace(-2, 1, 13)),
    Surface("rosenbrock", "(1 − x)² + 100 (y − x²)²",
            lambda p: (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2,
            (-1.5, 2.0), (-2.0, 2.0, -1.0, 3.0), 0.0,
            "Rosenbrock valley: momentum follows the curved floor, sgd crawls",
            np.logspace(-2, 3.5, 16)),
    Surface("wells", "0.05 |p|² − Σ Gaussian wells",
            lambda p: 0.05 * (p[0] ** 2 + p[1] ** 2) - sum(_well(p, *w) for w in WELLS),
            (-2.8, 0.6), (-3.0, 3.0, -3.0, 2.5), None,
            "Several minima: most optimizers stop in the nearest, shallow well"),
)


# --- part 1: 2-D surfaces -----------------------------------------------------

def _optimizer(name: str, lrs) -> optax.GradientTransformation:
  return optimizers.get(name, learning_rate=lrs[0] if name in GRADIENT_SCALED else lrs[1])


def _scan(f, done, opt, p0, steps: int):
  """``(points (steps + 1, 2), reached, f(last point))`` of ``opt`` on ``f``
  from ``p0``: ``reached`` is the number of updates taken before ``done(p)``
  first held, ``-1`` if it never did. Once ``done`` holds the point stays
  put (the scan keeps its length), so the trajectory ends where the goal
  was met. Traceable: the caller jits.
  """
  grad = jax.grad(f)

  def step(carry, _):
    p, state, reached, t = carry
    updates, new_state = opt.update(grad(p), state, p)
    stop = done(p)
    reached = jnp.where((reached < 0) & stop, t, reached)
    p = jnp.where(stop, p, optax.apply_updates(p, updates))
    state = jax.tree_util.tree_map(lambda a, b: jnp.where(stop, a, b), state, new_state)
    return (p, state, reached, t + 1), p

  init = (p0, opt.init(p0), jnp.int32(-1), jnp.int32(0))
  (p, _, reached, t), traj = jax.lax.scan(step, init, length=steps)
  reached = jnp.where((reached < 0) & done(p), t, reached)
  return jnp.concatenate([p0[None], traj]), reached, f(p)


def _one_surface(s: Surface, p: dict, seed) -> dict:
  """Every optimizer on ``s`` (traceable). With a ``seed`` point (the best
  of the plotted grid), ``f_min`` is found first, by 2000 steps of gradient
  descent from it; otherwise it is ``s.f_min``."""
  f_min, argmin = s.f_min, None
  if s.name == "saddle":
    done = lambda q: jnp.abs(q[1]) > p["escape"]
  else:
    if seed is not None:
      pts, _, f_min = _scan(s.f, lambda q: False, optimizers.sgd(0.05), seed, 2000)
      argmin = pts[-1]
    done = lambda q: s.f(q) - f_min < p["tol"]
  lrs, start = p[f"lr_{s.name}"], jnp.asarray(s.start, jnp.float32)
  runs = {n: _scan(s.f, done, _optimizer(n, lrs), start, p["steps"])
          for n in p["optimizers"]}
  return {"runs": runs, "f_min": f_min, "argmin": argmin}


def _surfaces(p: dict, grids: dict) -> dict:
  """``{surface: {"runs": {optimizer: (points, reached, f_last)}, "f_min",
  "argmin"}}``, all of it computed in one jitted call: on a CPU one program
  of many small scans compiles faster than the scans one by one."""
  seeds = {}
  for s in SURFACES:
    if s.name != "saddle" and s.f_min is None:
      X, Y, Z = grids[s.name]
      i = np.unravel_index(np.argmin(Z), Z.shape)
      seeds[s.name] = jnp.asarray([X[i], Y[i]], jnp.float32)
  run = jax.jit(lambda seeds: {s.name: _one_surface(s, p, seeds.get(s.name))
                               for s in SURFACES})
  out = jax.device_get(run(seeds))
  # Dict pytrees come back with sorted keys; keep the optimizers' order.
  return {name: {"runs": {n: (np.asarray(r["runs"][n][0]), int(r["runs"][n][1]),
                              float(r["runs"][n][2])) for n in p["optimizers"]},
                 "f_min": None if r["f_min"] is None else float(r["f_min"]),
                 "argmin": r["argmin"]}
          for name, r in out.items()}


def _grid(f, box, n: int = 241):
  """``(X, Y, Z)``: ``f`` on an ``n x n`` grid over ``box``."""
  X, Y = np.meshgrid(np.linspace(box[0], box[1], n), np.linspace(box[2], box[3], n))
  Z = jax.jit(f)(jnp.asarray(np.stack([X, Y]), jnp.float32))
  return X, Y, np.asarray(Z, np.float64)


def _surface_results(s: Surface, r: dict, p: dict) -> dict:
  goal = (f"abs(y) > {p['escape']:g}" if s.name == "saddle"
          else f"f − f_min < {p['tol']:g}")
  runs = r["runs"]
  result = {"goal": goal, "start": list(s.start), "learning_rates": p[f"lr_{s.name}"],
            "steps": {n: (t if t >= 0 else None) for n, (_, t, _) in runs.items()},
            "final_point": {n: pts[-1].tolist() for n, (pts, _, _) in runs.items()},
            "final_f": {n: fv for n, (_, _, fv) in runs.items()}}
  if r["f_min"] is not None:
    result["f_min"] = r["f_min"]
  return result


# --- part 2: a deep linear network --------------------------------------------

def _deep_linear(p: dict) -> dict:
  """Loss per step of each optimizer on a deep linear network, full batch.

  The network is square, ``depth`` layers ``(width, width)``, as in Saxe et
  al.'s analysis (and one weight shape is one initialiser to compile). The
  data are drawn with numpy: ``x ~ N(0, I)`` of shape ``(examples, width)``
  and ``y = x A``, ``A ~ N(0, 1 / width)`` elementwise, so each output has
  about unit variance.
  """
  w, depth = p["deep_width"], p["deep_depth"]
  model = mlp([w] * (depth + 1), activation="identity",
              output_activation="identity", init="xavier")
  # Small weights put the network near the saddle at W = 0 (Saxe et al.).
  params = jax.tree_util.tree_map(lambda v: v * p["deep_init_scale"],
                                  model.init(jax.random.key(p["seed"])))
  rng = np.random.default_rng(p["seed"])
  x = rng.standard_normal((p["deep_examples"], w)).astype(np.float32)
  a = rng.standard_normal((w, w)) / np.sqrt(w)
  y = (x @ a).astype(np.float32)
  vg = backprop.value_and_grad(model, "mse")

  def losses(opt, params):
    def step(carry, _):
      params, state = carry
      c, g = vg(params, x, y)
      updates, state = opt.update(g, state, params)
      return (optax.apply_updates(params, updates), state), c
    return jax.lax.scan(step, (params, opt.init(params)), length=p["deep_steps"])[1]

  opts = {name: _optimizer(name, p["deep_lr"]) for name in p["optimizers"]}
  run = jax.jit(lambda params: {n: losses(opt, params) for n, opt in opts.items()})
  out = jax.device_get(run(params))
  curves = {n: np.asarray(out[n], np.float64) for n in opts}    # in the caller's order
  leave = {}
  for name, c in curves.items():
    below = np.nonzero(c < p["plateau"] * c[0])[0]
    leave[name] = int(below[0]) if below.size else None
  return {"curves": curves, "leave_plateau": leave,
          "singular_values": np.linalg.svd(a, compute_uv=False)}


# --- the study ------------------------------------------------------------------

def _check(p: dict) -> None:
  """One-line ``ConfigError`` for a parameter the study cannot run with."""
  for key in [f"lr_{s.name}" for s in SURFACES] + ["deep_lr"]:
    lrs = p[key]
    if len(lrs) != 2 or not all(isinstance(v, (int, float)) and v > 0 for v in lrs):
      raise ConfigError(f"study parameter {key!r} = {lrs!r}; expected two positive "
                        "learning rates [lr, adaptive_lr]")
  if not p["optimizers"] or any(n not in OPTIMIZERS for n in p["optimizers"]):
    raise ConfigError(f"study parameter 'optimizers' = {p['optimizers']!r}; expected "
                      f"a non-empty list of names from {', '.join(OPTIMIZERS)}")
  for key in ("steps", "deep_steps", "deep_depth", "deep_width", "deep_examples"):
    if p[key] < 1:
      raise ConfigError(f"study parameter {key!r} = {p[key]}; expected an integer >= 1")
  for key in ("escape", "tol", "deep_init_scale"):
    if not p[key] > 0:
      raise ConfigError(f"study parameter {key!r} = {p[key]}; expected a value > 0")
  if not 0 < p["plateau"] < 1:
    raise ConfigError(f"study parameter 'plateau' = {p['plateau']}; expected a "
                      "fraction of the initial loss in (0, 1)")


def _run(out: str, p: dict) -> dict:
  _check(p)
  grids = {s.name: _grid(s.f, s.box) for s in SURFACES}
  solved = _surfaces(p, grids)
  results = {"surfaces": {s.name: _surface_results(s, solved[s.name], p) for s in SURFACES}}
  figures = [_plot_surface(out, s, grids[s.name], solved[s.name], p) for s in SURFACES]
  deep = _deep_linear(p)
  figures.append(_plot_deep(out, deep, p))
  results["deep_linear"] = {
      "initial_loss": float(next(iter(deep["curves"].values()))[0]),
      "leave_plateau": deep["leave_plateau"],
      "final_loss": {n: float(c[-1]) for n, c in deep["curves"].items()},
      "target_singular_values": deep["singular_values"]}
  table = _table(results, p)
  _readme(out, p, results, figures, table)
  return results


# --- report ---------------------------------------------------------------------

_COLORS = {n: f"C{i}" for i, n in enumerate(OPTIMIZERS)}


def _plot_surface(out: str, s: Surface, grid, solved: dict, p: dict) -> str:
  X, Y, Z = grid
  runs, argmin = solved["runs"], solved["argmin"]
  fig, ax = report.plt.subplots(figsize=(5.8, 4.6))
  ax.contour(X, Y, Z, levels=s.levels, colors="0.6", linewidths=0.6)
  for name, (pts, reached, _) in runs.items():
    inside = _inside(pts, s.box)
    lr = p[f"lr_{s.name}"][0 if name in GRADIENT_SCALED else 1]
    when = f"{reached} steps" if reached >= 0 else f"not within {p['steps']}"
    ax.plot(inside[:, 0], inside[:, 1], color=_COLORS[name], lw=1.4,
            label=f"{name} (lr {lr:g}): {when}")
  ax.plot(*s.start, "ko", ms=5, label="start")
  if argmin is not None:
    ax.plot(*argmin, "k*", ms=10, label="global minimum")
  elif s.name in ("rosenbrock", "quadratic"):
    ax.plot(*((1.0, 1.0) if s.name == "rosenbrock" else (0.0, 0.0)), "k*", ms=10,
            label="minimum")
  ax.set(xlim=s.box[:2], ylim=s.box[2:], xlabel="x", ylabel="y",
         title=f"{s.claim}\nf = {s.formula}")
  ax.title.set_fontsize(9)
  ax.legend(fontsize=7, loc="best")
  return report.save(fig, out, f"{s.name}.png")


def _inside(pts, box):
  """The trajectory up to its first point outside ``box`` (an escaped run
  heads for infinity; the plot only needs the way out)."""
  out = ((pts[:, 0] < box[0]) | (pts[:, 0] > box[1]) |
         (pts[:, 1] < box[2]) | (pts[:, 1] > box[3]) | ~np.isfinite(pts).all(axis=1))
  first = np.nonzero(out)[0]
  return pts[:first[0] + 1] if first.size else pts


def _plot_deep(out: str, deep: dict, p: dict) -> str:
  fig, ax = report.plt.subplots(figsize=(7.5, 4.3))
  for name, c in deep["curves"].items():
    lr = p["deep_lr"][0 if name in GRADIENT_SCALED else 1]
    t = deep["leave_plateau"][name]
    when = f"leaves at step {t}" if t is not None else f"not within {p['deep_steps']}"
    ax.plot(np.arange(len(c)), c, color=_COLORS[name], lw=1.3,
            label=f"{name} (lr {lr:g}): {when}")
  c0 = next(iter(deep["curves"].values()))[0]
  ax.axhline(p["plateau"] * c0, color="k", lw=0.8, ls=":",
             label=f"{p['plateau']:g} × initial loss")
  ax.set(yscale="log", xlabel="step (full batch)", ylabel="training loss (mse)",
         title=(f"Deep linear network, {p['deep_depth']} layers of width "
                f"{p['deep_width']}, init × {p['deep_init_scale']:g}: sgd sits on "
                "the plateau near the saddle at W = 0\n(Saxe et al. 2014: then "
                "one drop per singular value of the target)"))
  ax.title.set_fontsize(9)
  ax.legend(fontsize=7)
  return report.save(fig, out, "deep_linear.png")


def _cell(steps, limit):
  return str(steps) if steps is not None else f"not within {limit}"


def _table(results: dict, p: dict) -> str:
  names = p["optimizers"]
  rows = []
  for s in SURFACES:
    r = results["surfaces"][s.name]
    rows.append([f"{s.name}: {r['goal']}"] + [_cell(r["steps"][n], p["steps"]) for n in names])
  r = results["deep_linear"]
  rows.append([f"deep linear: loss < {p['plateau']:g} × initial"] +
              [_cell(r["leave_plateau"][n], p["deep_steps"]) for n in names])
  lr_rows = [[key] + [p[key][0 if n in GRADIENT_SCALED else 1] for n in names]
             for key in [f"lr_{s.name}" for s in SURFACES] + ["deep_lr"]]
  return "\n\n".join([
      "Steps until each goal is met:",
      report.markdown_table(["surface: goal"] + list(names), rows),
      "Learning rates:",
      report.markdown_table(["parameter"] + list(names), lr_rows, fmt="{:g}")])


def _readme(out: str, p: dict, results: dict, figures, table: str) -> None:
  sad = results["surfaces"]["saddle"]["steps"]
  wells = results["surfaces"]["wells"]
  deep = results["deep_linear"]["leave_plateau"]
  lim, dlim = p["steps"], p["deep_steps"]
  reached_global = [n for n, t in wells["steps"].items() if t is not None]
  measured = (
      "Steps to leave the saddle of x² − y² from (1, 0.001) (abs(y) > "
      f"{p['escape']:g}): " +
      ", ".join(f"{n} {_cell(t, lim)}" for n, t in sad.items()) +
      ". On the wells surface " +
      (f"only {', '.join(reached_global)} reached the deepest well "
       if reached_global else "no optimizer reached the deepest well ") +
      f"(f_min = {wells.get('f_min', float('nan')):.4f}); the others stopped in a "
      "shallower one. In the deep linear network (depth "
      f"{p['deep_depth']}, width {p['deep_width']}, init × {p['deep_init_scale']:g}), "
      f"the steps until the loss fell below {p['plateau']:g} × its initial value: " +
      ", ".join(f"{n} {_cell(t, dlim)}" for n, t in deep.items()) +
      ". Momentum methods use the same learning rate as sgd; their steps grow "
      "to about 1 / (1 − 0.9) = 10 times sgd's on a flat stretch.")
  report.write_readme(
      out, "saddle-points: gradient descent lingers where the gradient is small",
      CLAIM, measured, figures, table,
      command="funcnet study saddle-points --out docs/studies/saddle-points")


STUDY = register(Study(
    name="saddle-points",
    claim=CLAIM,
    run=_run,
    defaults={
        "optimizers": list(OPTIMIZERS),
        "steps": 3000,                 # updates per 2-D run
        "escape": 1.0,                 # the saddle is left once |y| > escape
        "tol": 1e-4,                   # the other surfaces: f - f_min < tol
        "lr_saddle": [0.01, 0.01],
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
        "seed": 0,
    },
    quick={"optimizers": ["sgd", "momentum", "adam"], "steps": 400,
           "deep_steps": 300},
))
