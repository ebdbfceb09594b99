"""What the ``vanishing-exploding`` study shows: its figures (titles from the
claim's clauses), its tables (mean ± std over seeds) and its "measured"
paragraph. Reads only the measurements and the clauses."""

import numpy as np

from funcnet.studies import claims as claims_lib, report
from funcnet.studies.vanishing_exploding_claims import (EXPLODE, LN10, REACH,
                                                        VANISH, choose)


def _gmean(rows):
  """Per column: the geometric mean over seeds and the min and max (for
  error bars on a log axis); NaN where a seed has no positive value."""
  a = np.asarray(rows, np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    ok = np.all(a > 0, axis=0)
    g = np.where(ok, np.exp(np.mean(np.log(np.where(a > 0, a, 1.0)), axis=0)), np.nan)
  return g, np.where(ok, a.min(0), np.nan), np.where(ok, a.max(0), np.nan)


def _errorbar_log(ax, x, rows, **kw):
  g, lo, hi = _gmean(rows)
  ax.errorbar(x, g, yerr=[np.clip(g - lo, 0, None), np.clip(hi - g, 0, None)],
              capsize=2, ms=3, **kw)


def _mean_sd(xs):
  xs = [x for x in xs if x is not None]
  return (float(np.mean(xs)), float(np.std(xs))) if xs else (np.nan, np.nan)


def _fmt(xs, f="{:.3f}") -> str:
  m, s = _mean_sd(xs)
  return "–" if np.isnan(m) else f"{f.format(m)} ± {f.format(s)}"


def _style(ax, title):
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  ax.tick_params(labelsize=8)


def _plot_layers(out, p, m, claims) -> tuple:
  L = m["per_layer"]
  trained = any(r["trained_rho"] for r in L.values())
  fig, axes = report.plt.subplots(1, 3 if trained else 2,
                                  figsize=(15 if trained else 10.5, 5.0))
  t_layers = "\n".join(claims_lib.title(claims[i], s) for i, s in (
      (0, "sigmoid vanishes"), (1, "relu/N(0,1) explodes"), (2, "He/Xavier stay level")))
  t_weight = claims_lib.title(claims[3], "the weight-gradient ratio hides the explosion")
  panels = [(axes[0], "rho", "||δ_l|| / ||δ_L|| at init", t_layers)]
  if trained:
    panels.append((axes[1], "trained_rho", f"||δ_l|| / ||δ_L|| after {p['epochs']} "
                   f"epochs of Adam (lr {p['lr']:g})", "the same measure after training"))
  panels.append((axes[-1], "weight_ratio", "||dC/dθ_l|| / ||dC/dθ_L|| at init",
                 t_weight))
  for ax, key, ylabel, title in panels:
    for i, (name, r) in enumerate(L.items()):
      if r[key]:
        x = np.arange(1, len(r[key][0]) + 1)
        _errorbar_log(ax, x, r[key], color=f"C{i}", marker="os^Dv"[i % 5], label=name)
    if key != "weight_ratio":
      ax.axhline(VANISH, color="k", ls=":", lw=0.8)
      ax.axhline(EXPLODE, color="k", ls=":", lw=0.8)
    ax.set(yscale="log", xlabel=f"layer l (1: next to the input, {p['depth'] + 1}: output)",
           ylabel=ylabel)
    _style(ax, title)
  fig.suptitle(f"Depth {p['depth']} x {p['width']} on {p['data']}, {p['batch']} "
               f"examples, float64; geometric mean over seeds {p['seeds']}, bars: "
               f"min–max; dotted: {VANISH:g} and {EXPLODE:g}", fontsize=9)
  return report.save(fig, out, "gradient_by_layer.png"), [t_layers, t_weight]


def _plot_clipping(out, p, m, claims) -> tuple:
  rows = m["clipping"]["grid"]
  fig, axes = report.plt.subplots(1, 2, figsize=(10.5, 4.2))
  t_acc = claims_lib.title(claims_lib.find(claims, "some clip_norm"),
                           "a clip_norm and rate that learn")
  t_const = claims_lib.title(claims_lib.find(claims, "but the clipped"),
                             "the clipped net does not learn")
  clips = sorted({r["clip_norm"] for r in rows})
  for j, clip in enumerate(clips):
    mine = [r for r in rows if r["clip_norm"] == clip]
    lrs = [r["lr"] for r in mine]
    label = ("no clipping (seeds that did not diverge)" if clip == 0
             else f"clip_norm {clip:g}")
    for ax, key in ((axes[0], "accuracy"), (axes[1], "constant")):
      ms = [_mean_sd(r[key]) for r in mine]
      ax.errorbar(lrs, [a for a, _ in ms], yerr=[s for _, s in ms], capsize=2,
                  color=f"C{j}", marker="os^D"[j % 4], label=label)
      div = [r["lr"] for r in mine if all(s == "diverged" for s in r["status"])]
      if div:
        ax.plot(div, [0.0] * len(div), "x", color=f"C{j}", ms=9, mew=2,
                label=f"{label}: diverged on every seed")
  ref = m["clipping"]["reference"]
  if ref:
    a, s = _mean_sd(ref["accuracy"])
    axes[0].errorbar([ref["lr"]], [a], yerr=[s], color="k", marker="*", ms=9,
                     ls="none", label="relu/he, no clipping")
  axes[0].axhline(0.1, color="gray", ls=":", lw=0.8, label="chance (0.1)")
  axes[0].set(xscale="log", ylim=(0, 1), xlabel="SGD learning rate",
              ylabel="test accuracy (mean ± std over seeds)")
  axes[1].set(xscale="log", ylim=(0, 1.05), xlabel="SGD learning rate",
              ylabel="share of test predictions in one class")
  _style(axes[0], t_acc)
  _style(axes[1], t_const)
  fig.suptitle(f"relu/normal, depth {p['depth']}, {p['clip_epochs']} epochs of SGD "
               f"on {p['data']}; seeds {p['seeds']}", fontsize=9)
  return report.save(fig, out, "clipping.png"), [t_acc, t_const]


def _plot_time(out, p, m, claims) -> tuple:
  R = m["recurrent"]
  find = lambda prefix, short: claims_lib.title(claims_lib.find(claims, prefix), short) \
      if any(c["clause"].startswith(prefix) for c in claims) else short
  trained = any(r["rates"] for r in R.values())
  fig, axes = report.plt.subplots(1, 3 if trained else 1,
                                  figsize=(15 if trained else 5.5, 5.0), squeeze=False)
  axes = axes[0]
  t_init = "\n".join([find("at init the GRU", "GRU (b_u = 0) fades faster than tanh RNN"),
                       find("a positive update-gate", "b_u > 0 reaches t = 1")])
  for i, (label, r) in enumerate(R.items()):
    rows = [x if x else [np.nan] * len(r["init"][0]) for x in r["init"]]
    t = np.arange(1, len(rows[0]) + 1)
    g, lo, hi = _gmean(rows)
    axes[0].plot(t, g, color=f"C{i}", label=label)
    axes[0].fill_between(t, lo, hi, color=f"C{i}", alpha=0.2)
  axes[0].axhline(REACH, color="k", ls=":", lw=0.8)
  axes[0].set(yscale="log", xlabel="time step t", ylabel="||dC/dh_t|| / ||dC/dh_T|| at init")
  _style(axes[0], t_init)
  titles = [t_init]
  if trained:
    t_acc = "\n".join([find("the tanh RNN learns", "tanh RNN learns at its best rate"),
                        find("at the largest rate", "not at the largest"),
                        find("the GRU learns", "GRU learns at every rate")])
    t_reach = find("the tanh RNN learns", "the trained gradient reaches t = 1")
    for i, (label, r) in enumerate(R.items()):
      lrs = [x["lr"] for x in r["rates"]]
      ms = [_mean_sd(x["accuracy"]) for x in r["rates"]]
      axes[1].errorbar(lrs, [a for a, _ in ms], yerr=[s for _, s in ms], capsize=2,
                       color=f"C{i}", marker="os^D"[i % 4], label=label)
      _errorbar_log(axes[2], lrs, np.asarray(
          [[np.nan if v is None else v for v in x["first_over_last"]]
           for x in r["rates"]]).T, color=f"C{i}", marker="os^D"[i % 4], label=label)
    axes[1].axhline(0.1, color="gray", ls=":", lw=0.8, label="chance (0.1)")
    axes[1].set(xscale="log", ylim=(0, 1), xlabel="Adam learning rate",
                ylabel="test accuracy (mean ± std over seeds)")
    axes[2].axhline(REACH, color="k", ls=":", lw=0.8)
    axes[2].set(xscale="log", yscale="log", xlabel="Adam learning rate",
                ylabel=f"||dC/dh_1|| / ||dC/dh_T|| after {p['rnn_epochs']} epochs")
    _style(axes[1], t_acc)
    _style(axes[2], t_reach)
    titles += [t_acc, t_reach]
  fig.suptitle(f"{p['rnn_data']}, hidden {p['rnn_hidden']}, first {p['rnn_batch']} "
               f"training examples; seeds {p['seeds']} (bands, bars: min–max or ± std); "
               f"dotted: {REACH:g}", fontsize=9)
  return report.save(fig, out, "through_time.png"), titles


def figures(out, p, m, claims) -> tuple:
  """Writes the figures; returns ``(file names, {file: [panel titles]})``."""
  names, titles = [], {}
  parts = [_plot_layers] + ([_plot_clipping] if m["clipping"] else []) + [_plot_time]
  for plot in parts:
    name, t = plot(out, p, m, claims)
    names.append(name)
    titles[name] = t
  return names, titles


def tables(p, m) -> str:
  L = m["per_layer"]
  g = lambda rows: "{:.2g} ({:.2g}–{:.2g})".format(*(float(v[0]) for v in _gmean(rows)))
  parts = [f"Depth {p['depth']} x {p['width']}, {p['data']}, seeds {p['seeds']}; "
           f"ρ_1 = ‖δ_1‖/‖δ_L‖ (geometric mean, min–max over seeds):", "",
           report.markdown_table(
               ["activation/init", "ρ_1 at init", "every ρ_l within",
                "‖dC/dθ_1‖/‖dC/dθ_L‖", "last ‖dC/dθ_L‖", "manual vs autodiff",
                f"ρ_1 after {p['epochs']} epochs", "test acc"],
               [[name, g([x[:1] for x in r["rho"]]),
                 "{:.2g}–{:.2g}".format(np.min(r["rho"]), np.max(r["rho"])),
                 g([x[:1] for x in r["weight_ratio"]]),
                 "{:.3g}".format(float(np.mean(r["last_weight_grad"]))),
                 f"{r['max_rel_diff']:.1e}",
                 g([x[:1] for x in r["trained_rho"]]) if r["trained_rho"] else "–",
                 _fmt([t["accuracy"] for t in r["test"]]) if r["test"] else "–"]
                for name, r in L.items()])]
  c = m["clipping"]
  if c:
    rows = c["grid"] + ([c["reference"]] if c["reference"] else [])
    parts += ["", f"SGD, {p['clip_epochs']} epochs, seeds {p['seeds']} (mean ± std; "
              f"test loss against ln 10 = {LN10:.3f}):", "", report.markdown_table(
                  ["net", "lr", "clip_norm", "diverged", "val acc", "test acc",
                   "one-class share", "train loss", "test loss"],
                  [[r["config"], f"{r['lr']:g}", f"{r['clip_norm']:g}" if r["clip_norm"] else "none",
                    f"{sum(s == 'diverged' for s in r['status'])}/{len(r['status'])}",
                    _fmt(r["val_accuracy"]), _fmt(r["accuracy"]), _fmt(r["constant"], "{:.2f}"),
                    _fmt(r["train_loss"], "{:.3g}"), _fmt(r["loss"], "{:.3g}")]
                   for r in rows])]
  R = m["recurrent"]
  rows = []
  for label, r in R.items():
    init = g([[x[0] if x else np.nan] for x in r["init"]])
    for x in r["rates"] or [None]:
      rows.append([label, init] + ([f"{x['lr']:g}", _fmt(x["val_accuracy"]), _fmt(x["accuracy"]),
                                    g([[v if v is not None else np.nan]
                                       for v in x["first_over_last"]])]
                                   if x else ["–"] * 4))
  parts += ["", f"{p['rnn_data']}, hidden {p['rnn_hidden']}, {p['rnn_epochs']} epochs "
            f"of Adam; ‖dC/dh_1‖/‖dC/dh_T‖ (geometric mean, min–max over seeds):", "",
            report.markdown_table(["cell", "ratio at init", "Adam lr", "val acc",
                                   "test acc", "ratio after training"], rows)]
  return "\n".join(parts)


def measured(p, m) -> str:
  L = m["per_layer"]
  s = [f"Depth {p['depth']}, at init, ρ_1 = ‖δ_1‖/‖δ_L‖ (geometric mean over "
       f"{len(p['seeds'])} seeds): " + ", ".join(
           f"{n} {_gmean([x[:1] for x in r['rho']])[0][0]:.2g}" for n, r in L.items()) + "."]
  s.append(f"Hand-written backprop vs jax.grad, per layer: largest relative "
           f"difference {m['max_rel_diff_manual_autodiff']:.1e} (float64).")
  c = m["clipping"]
  if c:
    best = choose([r for r in c["grid"] if r["clip_norm"] > 0])
    s.append(f"Clipped SGD on relu/normal, best on validation: lr {best['lr']:g}, "
             f"clip_norm {best['clip_norm']:g}, test accuracy {_fmt(best['accuracy'])}, "
             f"{_fmt(best['constant'], '{:.2f}')} of predictions in one class.")
  for label, r in m["recurrent"].items():
    if r["rates"]:
      s.append(f"{label}: test accuracy by Adam rate " + ", ".join(
          f"{x['lr']:g}: {_fmt(x['accuracy'])}" for x in r["rates"]) + ".")
  return " ".join(s)
