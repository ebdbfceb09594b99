"""Study ``learning-rate-batch``: how the best learning rate of plain SGD
grows with the batch size at a fixed number of epochs, measured as Goyal et
al. 2017 and Shallue et al. 2019 measure it, and where the stability limit
caps it.

An MLP (``hidden``) on ``data``, trained with plain ``optimizer`` (sgd) for
``epochs`` epochs at every batch size ``B`` of ``batch_sizes``, learning
rate ``eta`` of ``learning_rates`` and ``seed`` of ``seeds``, by
:func:`funcnet.sweep.run`: one compiled program per batch size, its rates
and seeds trained together. ``k`` sgd steps of batch ``B`` at rate ``eta``
move the weights by about ``k eta`` times the mean gradient when the
gradient changes little over them, as one step of batch ``kB`` at rate
``k eta`` does: hence the linear scaling rule ``eta* ∝ B`` (Goyal et al.
2017, section 2.1). Shallue et al. 2019 find the best rate grows more
slowly than that and stops growing at large batches.

The data. ``train_examples = n`` of the dataset's training examples train;
the rest of the training split is the validation split (``data.validation
= (m - n) / m`` of the ``m``, a ``data.seed`` shuffle) that every choice
reads. Every batch size must divide ``n``, so each epoch sees every training
example once at every batch size (``n / B`` steps; no remainder dropped).
The test split is read once, after every choice: at each batch size's best
rate, for the final test accuracy.

Per cell ``(B, eta)`` and seed, from the validation records:

  val loss, val accuracy   the last epoch's (mean and sample std over seeds)
  diverged                 the loss became non-finite (the sweep's guard)
  unstable                 the loss grew: some epoch's mean training loss
                           exceeds the first epoch's, or it diverged
  steps to target          the first epoch-end step at which the MEAN over
                           seeds of the validation accuracy is >= ``target``
                           ("reached": the mean, this one criterion for
                           every number and figure)

Per batch size:

  best rate           the rate of lowest mean final validation loss among
                      the cells no seed diverged at; per seed, the rate of
                      that seed's lowest final validation loss (the
                      continuous loss, not accuracy, whose ties at one
                      example decide nothing)
  stability limit     the smallest rate at which some seed is unstable; the
                      largest stable rate is the grid's rate below it
  rate needed         the smallest rate that reaches ``target``

The scaling slope: the least-squares slope of ``log2(best rate of seed s at
B)`` against ``log2 B`` over every (batch, seed) pair, with its 95%
regression interval (``slope ± t(0.975, n - 2) se``, ``se`` the OLS
standard error of the slope); 1 under the linear rule. The same slope over
the batches below the break (those before the first batch size whose best
rate is within one grid step of its largest stable rate: the stability
limit binds) says whether the rule holds before the limit meets it. :func:`decide` turns these numbers into the
claim's clauses.
"""

import math

import numpy as np

from funcnet import config as config_lib, sweep, tasks, train
from funcnet.errors import ConfigError
from funcnet.experiment import Setup, setup as setup_lib
from funcnet.studies import claims as claims_lib, report
from funcnet.studies.registry import Study, register

CLAIM = ("How the best learning rate of plain SGD at a fixed epoch budget "
         "grows with the batch size (linear as Goyal et al. 2017, or "
         "sublinear as Shallue et al. 2019), chosen on a validation split, "
         "and where the stability limit caps it.")

LR, BATCH, SEED = "optimizer.learning_rate", "train.batch_size", "seed"


# --- the data and the sweep -----------------------------------------------------

def _config(p: dict, validation: float = 0.0):
  return config_lib.load(None, [
      f'data.name="{p["data"]}"', f"model.mlp.hidden={p['hidden']}",
      f'optimizer.name="{p["optimizer"]}"', f"train.epochs={p['epochs']}",
      f"data.validation={validation!r}",
      "run.plots=false"])  # the sweep's own figures; the study draws its own


def validation_fraction(m: int, n: int) -> float:
  """The ``data.validation`` fraction that leaves exactly ``n`` of ``m``
  training examples (:func:`funcnet.data.hold_out` holds out
  ``round(fraction m)``)."""
  if not 0 < n < m:
    raise ConfigError(f"study parameter 'train_examples' = {n}; expected "
                      f"1..{m - 1} (the dataset has {m} training examples, "
                      "the rest validate)")
  f = (m - n) / m
  assert m - int(round(f * m)) == n
  return f


def _sweep(p: dict, out: str):
  m = len(setup_lib.build_dataset(_config(p)).y_train)
  cfg = _config(p, validation_fraction(m, p["train_examples"]))
  grid = {BATCH: p["batch_sizes"], LR: p["learning_rates"], SEED: p["seeds"]}
  return sweep.run(cfg, grid, out + "/sweep" if p["runs"] else None,
                   log=lambda *a: None)


# --- per run --------------------------------------------------------------------

def unstable(history: list, status: str) -> bool:
  """The loss grew: diverged (non-finite), or some epoch's mean training
  loss exceeds the first epoch's."""
  if status == "diverged":
    return True
  losses = [h["train_loss"] for h in history if h.get("train_loss") is not None]
  return any(not math.isfinite(x) or x > losses[0] for x in losses)


def _evaluated(history: list) -> list:
  return [h for h in history if h.get("test_accuracy") is not None]


def seconds_per_step(group: list) -> float:
  """Seconds per training step of one variant of a group (its variants
  train in one program, so each costs its share): the program's time from
  the end of its first epoch (which pays for compilation) to the end of its
  last, over the steps in between, over the number of variants; with one
  epoch, the group's wall time, compilation included. (The architecture
  study's cost column.)"""
  h = max((v.history for v in group), key=len)
  if len(h) > 1:
    seconds, steps = h[-1]["time"] - h[0]["time"], h[-1]["step"] - h[0]["step"]
  else:
    seconds, steps = group[0].group_wall_s, h[0]["step"]
  return seconds / steps / len(group)


# --- the slope and its interval -------------------------------------------------

def t_quantile(q: float, df: int) -> float:
  """Student's t quantile ``F^-1(q)`` for ``1/2 <= q < 1``: Newton on
  ``F(x) = 1/2 + int_0^x f``, ``f(t) = Gamma((df+1)/2) / (sqrt(df pi)
  Gamma(df/2)) (1 + t^2/df)^(-(df+1)/2)``, the integral by 64-point
  Gauss-Legendre (no scipy: its import alone costs seconds)."""
  c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
  u, w = np.polynomial.legendre.leggauss(64)

  def pdf(t):
    return c * (1 + t * t / df) ** (-(df + 1) / 2)

  x = 0.0  # F is concave on x >= 0: Newton from 0 climbs to the root from below
  for _ in range(200):
    cdf = 0.5 + x / 2 * float(np.sum(w * pdf(x / 2 * (u + 1))))
    step = (cdf - q) / pdf(x)
    x -= step
    if abs(step) < 1e-13:
      break
  return float(x)


def fit_slope(x, y, level: float = 0.95) -> dict:
  """Ordinary least squares ``y = a + b x`` with the regression interval of
  the slope: ``b ± t((1 + level) / 2, n - 2) se(b)``, ``se(b)^2 =
  (sum r^2 / (n - 2)) / sum (x - mean x)^2`` (``r`` the residuals).

  Args:
    x, y: ``(n,)`` numbers; ``n >= 3`` and two distinct ``x`` for an
      interval (else ``lo = hi = None``; ``n < 2``: every entry None).
  Returns:
    ``{"slope", "intercept", "se", "lo", "hi", "n"}``.
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  n = len(x)
  out = {"slope": None, "intercept": None, "se": None, "lo": None, "hi": None,
         "n": n}
  sxx = float(np.sum((x - x.mean()) ** 2)) if n else 0.0
  if n < 2 or sxx == 0:
    return out
  b = float(np.sum((x - x.mean()) * (y - y.mean())) / sxx)
  a = float(y.mean() - b * x.mean())
  out.update(slope=b, intercept=a)
  if n >= 3:
    r = y - a - b * x
    se = math.sqrt(float(np.sum(r * r)) / (n - 2) / sxx)
    t = t_quantile((1 + level) / 2, n - 2)
    out.update(se=se, lo=b - t * se, hi=b + t * se)
  return out


# --- what the sweep measured ----------------------------------------------------

def _cell(vs: list, target: float) -> dict:
  """One ``(B, eta)`` cell's numbers over its seeds (in seed order)."""
  div = [v.status == "diverged" for v in vs]
  last = [_evaluated(v.history)[-1] if _evaluated(v.history) else {} for v in vs]
  loss = [None if d else h.get("test_loss") for d, h in zip(div, last)]
  acc = [None if d else h.get("test_accuracy") for d, h in zip(div, last)]
  ok = not any(div) and None not in loss
  steps = None
  if ok:  # the mean over seeds, epoch by epoch
    hs = [_evaluated(v.history) for v in vs]
    for rows in zip(*hs):
      if np.mean([r["test_accuracy"] for r in rows]) >= target:
        steps = rows[0]["step"]
        break
  return {"diverged": sum(div), "unstable": sum(unstable(v.history, v.status)
                                                for v in vs),
          "loss": loss, "acc": acc,
          "val_loss": float(np.mean(loss)) if ok else None,
          "val_loss_std": _std(loss) if ok else None,
          "val_accuracy": float(np.mean(acc)) if ok else None,
          "val_accuracy_std": _std(acc) if ok else None,
          "steps_to_target": steps}


def _std(xs) -> float:
  """The sample standard deviation (``ddof=1``); 0 for one value."""
  return float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


def _argmin(lrs, values):
  ok = [(v, lr) for lr, v in zip(lrs, values) if v is not None]
  return min(ok)[1] if ok else None


def per_batch(row: list, lrs: list, n_seeds: int) -> dict:
  """A batch size's best rate (mean and per seed), stability limit and rate
  needed from its cells ``row`` (one per rate, :func:`_cell`)."""
  limit = next((lr for lr, c in zip(lrs, row) if c["unstable"]), None)
  below = [lr for lr in lrs if limit is None or lr < limit]
  return {
      "best_lr": _argmin(lrs, [c["val_loss"] for c in row]),
      "best_lr_by_accuracy": _argmin(lrs, [None if c["val_accuracy"] is None
                                           else -c["val_accuracy"] for c in row]),
      "best_lr_per_seed": [_argmin(lrs, [c["loss"][s] for c in row])
                           for s in range(n_seeds)],
      "stability_limit": limit,
      "largest_stable_lr": below[-1] if below else None,
      "lr_needed": next((lr for lr, c in zip(lrs, row)
                         if c["steps_to_target"] is not None), None)}


def capped(lrs, best, stable):
  """Whether the best rate is within one grid step of the largest stable
  rate (None when either is missing)."""
  if best is None or stable is None:
    return None
  return lrs.index(stable) - lrs.index(best) <= 1


def slopes(bs: list, lrs: list, batches: list) -> dict:
  """The scaling slopes (:func:`fit_slope` in log2): ``best`` over every
  (batch, seed) best rate, ``best_below_break`` over the batches below the
  first *capped* one (whose best rate is within one grid step of its
  largest stable rate: the stability limit binds), ``needed`` over the
  rates needed, ``stable`` over the largest stable rates."""
  def fit(pairs):
    pairs = [(b, lr) for b, lr in pairs if lr is not None]
    return fit_slope([math.log2(b) for b, _ in pairs],
                     [math.log2(lr) for _, lr in pairs])
  below = []
  for i, q in enumerate(batches):
    if capped(lrs, q["best_lr"], q["largest_stable_lr"]) is not False:
      break
    below.append(i)
  return {
      "best": fit([(b, lr) for b, q in zip(bs, batches)
                   for lr in q["best_lr_per_seed"]]),
      "best_below_break": fit([(bs[i], lr) for i in below
                               for lr in batches[i]["best_lr_per_seed"]]),
      "below_break_batches": [bs[i] for i in below],
      "needed": fit([(b, q["lr_needed"]) for b, q in zip(bs, batches)]),
      "stable": fit([(b, q["largest_stable_lr"]) for b, q in zip(bs, batches)])}


def measure(result, p: dict) -> dict:
  """The grids ``[batch][lr]``, the per-batch summaries and the slopes."""
  bs, lrs, seeds = p["batch_sizes"], p["learning_rates"], p["seeds"]
  cells = {}
  for v in sorted(result.variants, key=lambda v: v.assignment[SEED]):
    cells.setdefault((v.assignment[BATCH], v.assignment[LR]), []).append(v)
  grid = [[_cell(cells[b, lr], p["target"]) for lr in lrs] for b in bs]
  batches = [per_batch(row, lrs, len(seeds)) for row in grid]
  m = {"batch_sizes": bs, "learning_rates": lrs, "seeds": seeds,
       "target": p["target"],
       "steps_per_epoch": [_evaluated(cells[b, lrs[0]][0].history)[0]["step"]
                           for b in bs],
       "groups": result.groups, "sweep_wall_s": result.wall_s}
  for key in ("val_loss", "val_loss_std", "val_accuracy", "val_accuracy_std",
              "steps_to_target", "diverged", "unstable"):
    m[key] = [[c[key] for c in row] for row in grid]
  for key in batches[0]:
    m[key] = [q[key] for q in batches]
  m["slopes"] = slopes(bs, lrs, batches)
  return m


def test_at_best(result, m: dict) -> dict:
  """The one read of the test split: each seed's final params at each batch
  size's best rate (chosen on validation before this runs), evaluated on
  ``ds.info["test"]``; mean and std of accuracy over seeds."""
  acc, sd = [], []
  for b, lr in zip(m["batch_sizes"], m["best_lr"]):
    vs = [v for v in result.variants
          if v.assignment[BATCH] == b and v.assignment[LR] == lr]
    if lr is None or not vs:
      acc.append(None)
      sd.append(None)
      continue
    s = Setup(vs[0].cfg)
    evaluate = train.make_evaluate(s.model, s.loss, s.ds.task)
    x, y = train.as_arrays(*s.ds.info["test"], s.dtype)
    a = [float(evaluate(v.params, x, y)["accuracy"]) for v in vs]
    acc.append(float(np.mean(a)))
    sd.append(_std(a))
  return {"test_accuracy": acc, "test_accuracy_std": sd}


# --- the claim, decided by the numbers ------------------------------------------

GAP = 0.01  # "matches": test accuracy within 1 point of the smallest batch's


def _ci(s: dict) -> str:
  if s["slope"] is None:
    return "no slope (fewer than 2 batch sizes)"
  if s["lo"] is None:
    return f"slope {s['slope']:.2f} (no interval: {s['n']} points)"
  return f"slope {s['slope']:.2f}, 95% interval [{s['lo']:.2f}, {s['hi']:.2f}], {s['n']} points"


def decide(m: dict, p: dict) -> list:
  """The claim's clauses from the measured numbers ``m`` (:func:`measure`
  plus :func:`test_at_best`). A slope clause needs >= 3 seeds and >= 4
  batch sizes (else it is untested, ``--quick``)."""
  bs, lrs, seeds = m["batch_sizes"], m["learning_rates"], m["seeds"]
  s, sb = m["slopes"]["best"], m["slopes"]["best_below_break"]
  few = len(seeds) < 3 or len(bs) < 4
  why = f"untested: {len(seeds)} seed(s) and {len(bs)} batch sizes (needs >= 3 and >= 4)"

  def ci_clause(text, fit, test, need=3):
    ok = not few and fit["lo"] is not None and fit["n"] >= need
    return claims_lib.clause(text, test(fit) if ok else None,
                             _ci(fit) if ok else f"{why}; {_ci(fit)}")

  out = [
      ci_clause("the best rate grows with the batch: the 95% interval of the "
                "slope of log2 best rate against log2 batch lies above 0", s,
                lambda f: f["lo"] > 0),
      ci_clause("linear scaling (Goyal et al. 2017): that interval contains 1",
                s, lambda f: f["lo"] <= 1 <= f["hi"]),
      ci_clause("sublinear scaling (Shallue et al. 2019): that interval lies "
                "below 1", s, lambda f: f["hi"] < 1),
      ci_clause("linear below the stability limit: over the batch sizes before "
                "the first whose best rate is within one grid step of its "
                "largest stable rate "
                f"({', '.join(map(str, m['slopes']['below_break_batches'])) or 'none'}), "
                "the slope's 95% interval contains 1", sb,
                lambda f: f["lo"] <= 1 <= f["hi"], need=6)]
  at = [b for b, q, st in zip(bs, m["best_lr"], m["largest_stable_lr"])
        if capped(lrs, q, st)]
  out.append(claims_lib.clause(
      "the stability limit caps the best rate at the largest batch: its best "
      "rate is within one grid step of its largest stable rate",
      capped(lrs, m["best_lr"][-1], m["largest_stable_lr"][-1]),
      f"batch {bs[-1]}: best {report.fmt(m['best_lr'][-1], '{:.3g}')}, largest "
      f"stable {report.fmt(m['largest_stable_lr'][-1], '{:.3g}')}; capped at "
      f"batches {at or 'none'}"))
  acc, sd = m["test_accuracy"], m["test_accuracy_std"]
  worse = [b for b, a in zip(bs, acc) if a is None or
           acc[0] is not None and a < acc[0] - GAP]
  out.append(claims_lib.clause(
      f"tuned, every batch size matches the smallest: at its best rate each "
      f"ends within {GAP * 100:g} point of batch {bs[0]}'s test accuracy",
      None if len(seeds) < 3 or acc[0] is None else not worse,
      ("" if len(seeds) >= 3 else f"untested: {len(seeds)} seed(s); ")
      + ", ".join(f"{b}: {report.fmt(a, '{:.3f}')} ± {report.fmt(e, '{:.3f}')}"
                  for b, a, e in zip(bs, acc, sd))
      + (f"; below: {worse}" if worse else "")))
  out.append(ci_clause(
      f"the smallest rate reaching mean validation accuracy {m['target']:g} "
      "grows in proportion to the batch: its slope's 95% interval contains 1",
      m["slopes"]["needed"], lambda f: f["lo"] <= 1 <= f["hi"]))
  return out


# --- the study ------------------------------------------------------------------

def _check(p: dict) -> None:
  for key in ("batch_sizes", "learning_rates", "seeds"):
    if not p[key] or len(set(p[key])) != len(p[key]):
      raise ConfigError(f"study parameter {key!r} = {p[key]!r}; expected a "
                        "non-empty list of distinct values")
  if any(not lr > 0 for lr in p["learning_rates"]) or \
      list(p["learning_rates"]) != sorted(p["learning_rates"]):
    raise ConfigError(f"study parameter 'learning_rates' = {p['learning_rates']!r}; "
                      "expected positive rates in increasing order")
  if any(not isinstance(b, int) or b < 1 for b in p["batch_sizes"]) or \
      list(p["batch_sizes"]) != sorted(p["batch_sizes"]):
    raise ConfigError(f"study parameter 'batch_sizes' = {p['batch_sizes']!r}; "
                      "expected positive integers in increasing order")
  n = p["train_examples"]
  odd = [b for b in p["batch_sizes"] if n % b]
  if odd:
    raise ConfigError(f"study parameter 'batch_sizes' = {p['batch_sizes']!r}: "
                      f"{odd} do not divide train_examples = {n}; expected "
                      "divisors, so every epoch sees every example once")
  if not 0 < p["target"] <= 1 or p["epochs"] < 1:
    raise ConfigError("study parameters 'target' in (0, 1] and 'epochs' >= 1 "
                      f"expected; got {p['target']!r}, {p['epochs']!r}")


def _run(out: str, p: dict) -> dict:
  _check(p)
  result = _sweep(p, out)
  if "accuracy" not in tasks.get(result.variants[0].task).metric_names:
    raise ConfigError(f"study parameter 'data' = {p['data']!r}; expected a "
                      "classification set (the study reads accuracy)")
  m = measure(result, p)
  m.update(test_at_best(result, m))  # after every choice: the test split
  claims = decide(m, p)
  figures = [_plot_heatmaps(out, m, p, claims), _plot_scaling(out, m, claims)]
  m["claims"] = claims
  m["readme"] = {
      "title": "learning-rate-batch: how the best learning rate grows with "
               "the batch size, and where the stability limit caps it",
      "measured": _measured(m, p), "figures": figures, "table": _table(m)}
  return m


# --- report ---------------------------------------------------------------------

def _edges(values):
  """Cell edges, geometric midpoints, for values on a log axis."""
  v = np.log(np.asarray(values, np.float64))
  if len(v) == 1:
    return np.exp([v[0] - 0.35, v[0] + 0.35])
  mid = (v[1:] + v[:-1]) / 2
  return np.exp(np.concatenate([[v[0] - (mid[0] - v[0])], mid,
                                [v[-1] + (v[-1] - mid[-1])]]))


def _grid(rows):
  """``[batch][lr]`` with None -> a masked ``[lr][batch]`` array."""
  a = np.array([[np.nan if x is None else x for x in row] for row in rows],
               np.float64).T
  return np.ma.masked_invalid(a)


def _ink(mesh, value) -> str:
  """Black on a light cell, white on a dark one."""
  if value is None:
    return "0.2"
  r, g, b, _ = mesh.cmap(mesh.norm(value))
  return "k" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "w"


def _label(m, i, j, value, fmt):
  if m["diverged"][i][j]:
    return "div"
  if m["unstable"][i][j]:
    return "grow"
  return "–" if value is None else fmt.format(value)


def _heatmap(fig, ax, m, panel):
  from matplotlib.colors import LogNorm
  title, rows, scale, fmt = panel
  bs, lrs = m["batch_sizes"], m["learning_rates"]
  # An unstable cell is grey, its number kept in the text (a loss that grew
  # would stretch the colour scale over orders of magnitude).
  shown = [[None if m["unstable"][i][j] else x for j, x in enumerate(row)]
           for i, row in enumerate(rows)]
  z = _grid(shown)
  cmap = report.plt.get_cmap("viridis_r" if scale else "viridis"
                             ).with_extremes(bad="0.85")
  norm = (LogNorm(vmin=z.min(), vmax=max(z.max(), z.min() * 1.01))
          if scale and z.count() else None)
  mesh = ax.pcolormesh(_edges(bs), _edges(lrs), z, cmap=cmap, norm=norm,
                       shading="flat")
  if z.count():
    fig.colorbar(mesh, ax=ax, label=title)
  for i, b in enumerate(bs):
    for j, lr in enumerate(lrs):
      ax.text(b, lr, _label(m, i, j, rows[i][j], fmt), ha="center",
              va="center", fontsize=8, color=_ink(mesh, shown[i][j]))
  best = [(b, lr) for b, lr in zip(bs, m["best_lr"]) if lr is not None]
  if best:
    ax.plot(*zip(*best), "o", mfc="none", mec="r", ms=16, mew=2,
            label="best rate (lowest mean val loss)")
  stable = [(b, lr) for b, lr in zip(bs, m["largest_stable_lr"]) if lr is not None]
  if stable:
    ax.plot(*zip(*stable), "s", mfc="none", mec="k", ms=16, mew=1.5,
            label="largest stable rate")
  ax.set_xscale("log", base=2)
  ax.set_yscale("log", base=2)
  ax.set(xlabel="batch size (examples)", ylabel="learning rate",
         title=title)
  ax.set_xticks(bs, [str(b) for b in bs])
  ax.set_yticks(lrs, [f"{lr:.3g}" for lr in lrs])
  ax.minorticks_off()


def _plot_heatmaps(out: str, m: dict, p: dict, claims) -> str:
  panels = [("mean final validation loss (nats)", m["val_loss"], "log", "{:.2f}"),
            ("mean final validation accuracy", m["val_accuracy"], None, "{:.3f}"),
            (f"steps until mean val accuracy ≥ {m['target']:g}",
             m["steps_to_target"], "log", "{:.0f}")]
  n = len(m["learning_rates"])
  fig, axes = report.plt.subplots(1, 3, figsize=(21, max(5.0, 0.36 * n + 2)))
  for ax, panel in zip(axes, panels):
    _heatmap(fig, ax, m, panel)
  axes[0].legend(fontsize=9, loc="upper left")  # over diverged cells
  fig.suptitle(
      f"{p['optimizer']}, {p['epochs']} epochs of {p['train_examples']} "
      f"{p['data']} examples, MLP hidden {p['hidden']}, mean of "
      f"{len(m['seeds'])} seed(s). div: a seed's loss went non-finite; grow: "
      "a seed's training loss grew; –: target not reached.\n"
      + claims_lib.title(claims[4], "stability caps the best rate"), fontsize=11)
  return report.save(fig, out, "heatmaps.png")


def _plot_scaling(out: str, m: dict, claims) -> str:
  bs = np.asarray(m["batch_sizes"], np.float64)
  fig, (ax, bx) = report.plt.subplots(1, 2, figsize=(13, 5))
  for k, s in enumerate(m["seeds"]):  # a seed's points a little apart
    pts = [(b * 2 ** (0.06 * (k - 1)), lr)
           for b, lr in zip(bs, [r[k] for r in m["best_lr_per_seed"]])
           if lr is not None]
    if pts:
      ax.plot(*zip(*pts), ".", color="0.4", ms=7,
              label="best rate of one seed" if k == 0 else None)
  best = [(b, lr) for b, lr in zip(bs, m["best_lr"]) if lr is not None]
  if best:
    ax.plot(*zip(*best), "o", color="C3", ms=8, mfc="none", mew=2,
            label="best rate (mean val loss)")
  for key, style, label in (("largest_stable_lr", "s-", "largest stable rate"),
                            ("lr_needed", "^--",
                             f"smallest rate reaching val acc {m['target']:g}")):
    pts = [(b, lr) for b, lr in zip(bs, m[key]) if lr is not None]
    if pts:
      ax.plot(*zip(*pts), style, ms=6, lw=1.2, label=label)
  s = m["slopes"]["best"]
  if s["slope"] is not None:
    x = np.log2(bs)
    fit = 2.0 ** (s["intercept"] + s["slope"] * x)
    ax.plot(bs, fit, "C3-", lw=1.5, label=f"fit: {_ci(s)}")
    xc = x.mean()
    yc = s["intercept"] + s["slope"] * xc
    ax.plot(bs, 2.0 ** (yc + (x - xc)), "k:", lw=1.5,
            label="linear rule (slope 1) through the fit's centre")
    if s["lo"] is not None:
      ax.fill_between(bs, 2.0 ** (yc + s["lo"] * (x - xc)),
                      2.0 ** (yc + s["hi"] * (x - xc)), color="C3", alpha=0.15,
                      label="slopes in the 95% interval")
  ax.set_xscale("log", base=2)
  ax.set_yscale("log", base=2)
  ax.set_xticks(bs, [str(int(b)) for b in bs])
  ax.minorticks_off()
  ax.set(xlabel="batch size (examples)", ylabel="learning rate")
  lin, sub = claims[1], claims[2]
  ax.set_title(claims_lib.title(sub if sub["holds"] else lin,
                                "sublinear: slope below 1" if sub["holds"]
                                else "linear: slope 1 in the interval"),
               fontsize=10)
  ax.legend(fontsize=8, loc="upper left")
  acc = [(b, a, e) for b, a, e in zip(bs, m["test_accuracy"],
                                      m["test_accuracy_std"]) if a is not None]
  if acc:
    b_, a_, e_ = zip(*acc)
    bx.errorbar(b_, a_, yerr=e_, fmt="o-", capsize=3,
                label=f"test accuracy at the best rate (mean ± std, {len(m['seeds'])} seeds)")
    bx.axhline(a_[0] - GAP, color="0.5", ls="--", lw=1,
               label=f"batch {int(b_[0])}'s minus {GAP * 100:g} point")
  bx.set_xscale("log", base=2)
  bx.set_xticks(bs, [str(int(b)) for b in bs])
  bx.minorticks_off()
  bx.set(xlabel="batch size (examples)", ylabel="test accuracy")
  bx.set_title(claims_lib.title(claims[5], "tuned, large batches match small"),
               fontsize=10)
  bx.legend(fontsize=8, loc="lower left")
  return report.save(fig, out, "scaling.png")


def _pm(a, e, f="{:.3f}"):
  return "–" if a is None else f"{f.format(a)} ± {f.format(e)}"


def _table(m: dict) -> str:
  bs, lrs = m["batch_sizes"], m["learning_rates"]
  g = "{:.3g}"
  rows = []
  for i, b in enumerate(bs):
    j = lrs.index(m["best_lr"][i]) if m["best_lr"][i] is not None else None
    at = (lambda key: None) if j is None else (lambda key: m[key][i][j])
    rows.append([
        b, m["steps_per_epoch"][i], report.fmt(m["best_lr"][i], g),
        ", ".join(report.fmt(lr, g) for lr in m["best_lr_per_seed"][i]),
        report.fmt(m["best_lr_by_accuracy"][i], g),
        _pm(at("val_loss"), at("val_loss_std")),
        _pm(at("val_accuracy"), at("val_accuracy_std")),
        _pm(m["test_accuracy"][i], m["test_accuracy_std"][i]),
        report.fmt(at("steps_to_target"), "{:.0f}"),
        report.fmt(m["lr_needed"][i], g),
        report.fmt(m["largest_stable_lr"][i], g),
        report.fmt(m["stability_limit"][i], g)])

  def grid(key, std):
    return [[f"{lr:.3g}"] + [
        "diverged" if m["diverged"][i][j] else
        ("grew: " if m["unstable"][i][j] else "") + _pm(m[key][i][j], m[std][i][j])
        for i in range(len(bs))] for j, lr in enumerate(lrs)]

  fits = [[name, report.fmt(f["slope"], "{:.3f}"), report.fmt(f["lo"], "{:.3f}"),
           report.fmt(f["hi"], "{:.3f}"), f["n"]]
          for name, f in (("best rate (every batch, seed)", m["slopes"]["best"]),
                          ("best rate below the break", m["slopes"]["best_below_break"]),
                          (f"rate reaching {m['target']:g}", m["slopes"]["needed"]),
                          ("largest stable rate", m["slopes"]["stable"]))]
  return "\n\n".join([
      "Per batch size (best rate: lowest mean final validation loss; ± is "
      "the std over seeds; test accuracy read once, at the best rate):",
      report.markdown_table(
          ["batch", "steps/epoch", "best lr", "best lr per seed",
           "best lr by val accuracy", "val loss at best", "val acc at best",
           "test acc at best", f"steps to val acc {m['target']:g} at best",
           f"smallest lr reaching {m['target']:g}", "largest stable lr",
           "stability limit (loss grows)"], rows),
      "Slopes of log2 rate against log2 batch (95% regression interval):",
      report.markdown_table(["fitted to", "slope", "95% lo", "95% hi", "points"],
                            fits),
      "Final validation loss, mean ± std over seeds (rows: learning rate, "
      "columns: batch size; grew: some seed's training loss grew):",
      report.markdown_table(["lr \\ batch"] + bs, grid("val_loss", "val_loss_std")),
      "Final validation accuracy, mean ± std over seeds:",
      report.markdown_table(["lr \\ batch"] + bs,
                            grid("val_accuracy", "val_accuracy_std"))])


def _measured(m: dict, p: dict) -> str:
  bs, s = m["batch_sizes"], m["slopes"]
  n = len(bs) * len(m["learning_rates"]) * len(m["seeds"])
  return " ".join([
      f"{n} runs of {p['optimizer']} for {p['epochs']} epochs on "
      f"{p['train_examples']} training examples (every batch size divides it: "
      f"each epoch sees every example once), seeds {m['seeds']}, in "
      f"{m['groups']} compiled programs ({m['sweep_wall_s']:.0f} s).",
      "Best rate (lowest mean final validation loss) per batch size: " +
      ", ".join(f"{b}: {report.fmt(lr, '{:.3g}')}" for b, lr in zip(bs, m["best_lr"]))
      + f"; slope of log2 best rate against log2 batch over every (batch, "
      f"seed): {_ci(s['best'])}; below the break "
      f"({s['below_break_batches']}): {_ci(s['best_below_break'])}.",
      "Largest stable rate (no seed's training loss grew): " +
      ", ".join(f"{b}: {report.fmt(lr, '{:.3g}')}"
                for b, lr in zip(bs, m["largest_stable_lr"])) + ".",
      f"Smallest rate reaching mean validation accuracy {m['target']:g}: "
      f"{_ci(s['needed'])}.",
      "Test accuracy at the best rate: " +
      ", ".join(f"{b}: {_pm(a, e)}" for b, a, e in
                zip(bs, m["test_accuracy"], m["test_accuracy_std"])) + "."])


STUDY = register(Study(
    name="learning-rate-batch",
    claim=CLAIM,
    run=_run,
    defaults={
        "data": "digits",
        "hidden": [64],
        "optimizer": "sgd",
        "epochs": 10,
        # 1024 of digits' 1437 training examples train, 413 validate: every
        # batch size below divides 1024.
        "train_examples": 1024,
        "batch_sizes": [8, 16, 32, 64, 128, 256, 512, 1024],
        "learning_rates": [2.0 ** (k / 2) for k in range(-16, 7)],
        "seeds": [0, 1, 2],
        "target": 0.9,               # the mean validation accuracy "reached" means
        "runs": False,               # also write the sweep, every variant a run folder
    },
    quick={"epochs": 3, "batch_sizes": [16, 64, 256],
           "learning_rates": [2.0 ** k for k in range(-5, 3)], "seeds": [0, 1]},
))
