"""The figures, table and summary of the ``saddle-points`` study
(:mod:`funcnet.studies.saddle_points`), written from its results and its
clauses: titles come from :func:`funcnet.studies.claims.title`, so a figure
never states what its numbers contradict, and a diverged run is drawn and
labelled as diverged."""

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.studies import claims, report
# One colour per optimizer of funcnet.studies.saddle_points.OPTIMIZERS, in every figure.
_COLORS = {n: f"C{i}" for i, n in enumerate(
    ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"))}
_CLAUSE = {"saddle": ("at each one's tuned rate, momentum escapes",
                      "tuned rates: momentum escapes the saddle sooner than sgd"),
           "quadratic": ("at each one's tuned rate, momentum reaches the ill",
                         "tuned rates: momentum reaches the minimum sooner than sgd"),
           "rosenbrock": ("at each one's tuned rate, momentum reaches the Rosen",
                          "tuned rates: momentum reaches the minimum sooner than sgd"),
           "wells": ("on the wells surface",
                     "most stable runs of the grid end outside the deepest well")}


def grid(f, box, n: int = 241):
  """``(X, Y, Z)``: ``f`` on an ``n x n`` grid over ``box``."""
  X, Y = np.meshgrid(np.linspace(box[0], box[1], n), np.linspace(box[2], box[3], n))
  Z = jax.jit(f)(jnp.asarray(np.stack([X, Y]), jnp.float32))
  return X, Y, np.asarray(Z, np.float64)


def describe(o: dict) -> str:
  """``"72 steps at lr 0.01"``, ``"diverged at lr 1"``, ``"not reached at
  lr 0.1"``; a tuned outcome (it has an ``index``) that did not reach the
  goal says that no rate of the grid did, and which one is drawn."""
  if o["lr"] is None:
    return "no rate"
  lr = f"lr {o['lr']:g}"
  if o["diverged"]:
    return f"diverged at {lr}"
  if o["steps"] is None:
    return (f"no rate reached it (drawn: {lr})" if "index" in o
            else f"not reached at {lr}")
  sd = f" ± {o['std']:.0f}" if "std" in o else ""
  unit = "step" if o["steps"] == 1 and not sd else "steps"
  return f"{o['steps']:.0f}{sd} {unit} at {lr}"


def _inside(pts, box):
  """The trajectory up to its first point outside ``box`` (an escaped run
  heads for infinity; the plot only needs the way out)."""
  out = ((pts[:, 0] < box[0]) | (pts[:, 0] > box[1]) |
         (pts[:, 1] < box[2]) | (pts[:, 1] > box[3]) | ~np.isfinite(pts).all(axis=1))
  first = np.nonzero(out)[0]
  return pts[:first[0] + 1] if first.size else pts


def _panel(ax, s, grid_xyz, solved, view, index_of, title):
  X, Y, Z = grid_xyz
  ax.contour(X, Y, Z, levels=s.levels, colors="0.6", linewidths=0.6)
  for name, (pts, *_rest) in solved["runs"].items():
    o = view[name]
    inside = _inside(pts[index_of(name)], s.box)
    ax.plot(inside[:, 0], inside[:, 1], color=_COLORS[name], lw=1.4,
            ls="--" if o["diverged"] else "-", label=f"{name}: {describe(o)}")
    if o["diverged"]:
      ax.plot(*inside[-1], "x", color=_COLORS[name], ms=8)
  ax.plot(*s.start, "ko", ms=5, label="start")
  if solved["argmin"] is not None:
    ax.plot(*solved["argmin"], "k*", ms=10, label="global minimum")
  elif s.name in ("rosenbrock", "quadratic"):
    ax.plot(*((1.0, 1.0) if s.name == "rosenbrock" else (0.0, 0.0)), "k*", ms=10,
            label="minimum")
  ax.set(xlim=s.box[:2], ylim=s.box[2:], xlabel="x", ylabel="y", title=title)
  ax.title.set_fontsize(9)
  ax.legend(fontsize=8, loc="best")


def plot_surface(out, s, grid_xyz, solved, results, p) -> str:
  """Two panels: every optimizer at its tuned rate (title: the surface's
  clause) and at the shared rate (the saddle's title: the shared clause)."""
  r = results["surfaces"][s.name]
  fig, axes = report.plt.subplots(1, 2, figsize=(11.5, 4.8))
  prefix, short = _CLAUSE[s.name]
  _panel(axes[0], s, grid_xyz, solved, r["tuned"], lambda n: r["tuned"][n]["index"],
         f"{claims.title(claims.find(results['claims'], prefix), short)}\n"
         f"f = {s.formula}, goal {r['goal']}")
  shared = (claims.title(claims.find(results["claims"], "at the shared rate"),
                         "shared rate: momentum escapes the saddle sooner than sgd")
            if s.name == "saddle" else "the shared-rate view")
  _panel(axes[1], s, grid_xyz, solved, r["shared"], lambda n: -1,
         f"{shared}\nlr_{s.name} = {p['lr_' + s.name]} (sgd-family, adaptive)")
  return report.save(fig, out, f"{s.name}.png")


def _sensitivity_panel(ax, rows_of, budget, title, ylabel):
  for k, (name, rows) in enumerate(rows_of.items()):
    lift = 1 + 0.04 * k  # the optimizers' markers above the budget, apart
    lr = np.array([o["lr"] for o in rows])
    ok = np.array([o["steps"] is not None for o in rows])
    bad = np.array([o["diverged"] for o in rows])
    steps = np.array([o["steps"] if o["steps"] is not None else np.nan for o in rows])
    err = np.array([o.get("std", 0.0) if o["steps"] is not None else 0.0 for o in rows])
    c = _COLORS[name]
    ax.errorbar(lr, steps, yerr=err, color=c, marker="o", ms=3.5, lw=1.2,
                capsize=2, label=name)
    ax.plot(lr[bad], np.full(bad.sum(), budget * 1.7 * lift), "x", color=c, ms=7)
    ax.plot(lr[~ok & ~bad], np.full((~ok & ~bad).sum(), budget * 1.1 * lift), "v",
            color=c, ms=5, mfc="none")
  ax.axhline(budget, color="0.5", lw=0.7, ls=":")
  ax.plot([], [], "kx", label="diverged")
  ax.plot([], [], "kv", mfc="none", label=f"not within {budget}")
  ax.set(xscale="log", yscale="log", xlabel="learning rate", ylabel=ylabel,
         title=title)
  ax.title.set_fontsize(9)
  ax.legend(fontsize=8, ncol=2)


def plot_sensitivity(out, results, p) -> str:
  """Steps to each goal against the rate, every optimizer, every surface:
  where each one's tuned rate lies and where it diverges."""
  fig, axes = report.plt.subplots(2, 3, figsize=(14, 8))
  axes = axes.ravel()
  for ax, (name, r) in zip(axes, results["surfaces"].items()):
    _sensitivity_panel(ax, r["grid"], p["steps"], f"{name}: goal {r['goal']}",
                       "steps to the goal")
  d = results["deep_linear"]
  _sensitivity_panel(axes[4], d["grid"], p["deep_steps"],
                     f"deep linear: loss < {p['plateau']:g} × initial "
                     f"(mean ± std, {len(p['seeds'])} seeds)", "steps to leave the plateau")
  axes[5].axis("off")
  return report.save(fig, out, "lr_sensitivity.png")


def plot_deep(out, deep, results, p) -> str:
  """Loss curves of the deep linear network at each optimizer's tuned rate:
  the median over seeds, shaded between the lowest and the highest."""
  d = results["deep_linear"]
  fig, ax = report.plt.subplots(figsize=(8, 4.6))
  for name, c in deep["curves"].items():
    o = d["tuned"][name]
    curves = c[:, o["index"]]
    t = np.arange(curves.shape[1])
    ax.plot(t, np.median(curves, 0), color=_COLORS[name], lw=1.3,
            ls="--" if o["diverged"] else "-", label=f"{name}: {describe(o)}")
    ax.fill_between(t, curves.min(0), curves.max(0), color=_COLORS[name], alpha=0.15)
  ax.axhline(p["plateau"] * d["initial_loss"], color="k", lw=0.8, ls=":",
             label=f"{p['plateau']:g} × initial loss")
  clause = claims.find(results["claims"], "in the deep linear network, at each one's "
                       "tuned rate, momentum")
  ax.set(yscale="log", xlabel="step (full batch)", ylabel="training loss (mse)",
         title=(claims.title(clause, "tuned rates: momentum leaves the plateau sooner "
                             "than sgd") +
                f"\n{p['deep_depth']} linear layers of width {p['deep_width']}, init × "
                f"{p['deep_init_scale']:g}, {len(p['seeds'])} seed(s)"))
  ax.title.set_fontsize(9)
  ax.legend(fontsize=8)
  return report.save(fig, out, "deep_linear.png")


def table(results, p) -> str:
  names = p["optimizers"]
  edges = (min(p["lr_grid"]), max(p["lr_grid"]))

  def cell(o, view):
    mark = " (grid edge)" if view == "tuned" and o["steps"] is not None and o["lr"] in edges else ""
    return describe(o) + mark
  rows = []
  for s, r in results["surfaces"].items():
    for view in ("tuned", "shared"):
      rows.append([f"{s} ({r['goal']})", view] + [cell(r[view][n], view) for n in names])
  d = results["deep_linear"]
  for view in ("tuned", "shared"):
    rows.append([f"deep linear (loss < {p['plateau']:g} × initial)", view]
                + [cell(d[view][n], view) for n in names])
  return ("Steps until each goal is met, each optimizer at its tuned rate (the "
          "grid's fastest without diverging; \"grid edge\": the grid's smallest or "
          "largest rate, so a rate beyond it may be faster) and at the shared rate (deep linear: "
          f"mean ± std over seeds {p['seeds']}):\n\n"
          + report.markdown_table(["surface (goal)", "rate"] + list(names), rows))


def measured(results, p) -> str:
  s, d = results["surfaces"], results["deep_linear"]

  def line(view):
    return "; ".join(f"{n} {describe(view[n])}" for n in p["optimizers"])
  return (
      f"Rates from the grid {p['lr_grid']}; a 2-D run diverged when f rose above "
      "f(start) by more than the surface's range over the plotted box, a deep run "
      f"when its loss exceeded {p['diverge_factor']:g} × the initial one. "
      f"Saddle of x² − y² from (1, 0.001), steps to abs(y) > {p['escape']:g}: at "
      f"the tuned rates {line(s['saddle']['tuned'])}; at the shared rates "
      f"{line(s['saddle']['shared'])}. Ill-conditioned quadratic, tuned: "
      f"{line(s['quadratic']['tuned'])}. Rosenbrock, tuned: "
      f"{line(s['rosenbrock']['tuned'])}. Deep linear network (depth "
      f"{p['deep_depth']}, width {p['deep_width']}, init × {p['deep_init_scale']:g}, "
      f"seeds {p['seeds']}), steps until the loss fell below {p['plateau']:g} × its "
      f"initial value, tuned: {line(d['tuned'])}; shared: {line(d['shared'])}.")
