"""The ``architecture`` study's figure, table and measured paragraph.

Four panels, one quantity on each axis: test accuracy and final training
loss against depth (one line per width, mean ± std over seeds), test
accuracy and seconds per step against the parameter count. Panel titles are
written from the decided clauses.
"""

import json

from funcnet.studies import claims, report

MARKERS = "os^vDP*"


def _title(cs, prefix: str, short: str, fallback: str) -> str:
  try:
    return claims.title(claims.find(cs, prefix), short)
  except KeyError:
    return fallback


def _lines(m: dict, p: dict) -> list:
  """Per width its architectures in depth order (depth 0 shared)."""
  find = {(a["width"], a["depth"]): a for a in m["architectures"]}
  return [(w, [find[(0 if d == 0 else w, d)] for d in p["depths"]])
          for w in p["widths"]]


def plot(out: str, m: dict, p: dict, cs: list) -> str:
  fig, axes = report.plt.subplots(2, 2, figsize=(12, 8.6))
  (acc_d, loss_d), (acc_p, time_p) = axes
  for i, (w, arch) in enumerate(_lines(m, p)):
    depths = [a["depth"] for a in arch]
    chosen = m["best_depth"][w]
    acc_d.errorbar(depths, [a["test_accuracy"] for a in arch],
                   yerr=[a["test_accuracy_std"] for a in arch], marker="o",
                   capsize=3, color=f"C{i}", label=f"width {w} (chosen depth {chosen})")
    acc_d.plot([chosen], [arch[depths.index(chosen)]["test_accuracy"]], "*",
               ms=13, color=f"C{i}", mec="k")
    loss_d.errorbar(depths, [a["train_loss"] for a in arch],
                    yerr=[a["train_loss_std"] for a in arch], marker="o",
                    capsize=3, color=f"C{i}", label=f"width {w}")
    for ax, key in ((acc_p, "test_accuracy"), (time_p, "seconds_per_step")):
      ax.plot([a["params"] for a in arch], [a[key] for a in arch], "-",
              color=f"C{i}", lw=0.8, alpha=0.6, label=f"width {w}")
      for a in arch:
        ax.plot(a["params"], a[key], marker=MARKERS[min(a["depth"], 6)],
                color="k" if a["depth"] == 0 else f"C{i}", ls="none", ms=6)
  for d in p["depths"]:
    for ax in (acc_p, time_p):
      ax.plot([], [], marker=MARKERS[min(d, 6)], color="0.4", ls="none",
              label=f"depth {d}" + (" (logistic regression)" if d == 0 else ""))
  acc_d.plot([], [], "*", ms=11, color="0.5", mec="k", ls="none",
             label="depth chosen on validation")
  acc_d.set(xlabel="hidden layers (0: logistic regression)", ylabel="test accuracy",
            title=_title(cs, "layers beyond", "later layers change test accuracy "
                         "by a few points at most", "test accuracy against depth"))
  loss_d.set(xlabel="hidden layers (0: logistic regression)", yscale="log",
             ylabel="final training cross-entropy (nats)",
             title=_title(cs, "the final training loss", "training loss keeps "
                          "falling with depth", "training loss against depth"))
  acc_p.set(xscale="log", xlabel="parameters", ylabel="test accuracy",
            title=_title(cs, "width helps", "width helps at every depth",
                         "test accuracy against parameter count"))
  time_p.set(xscale="log", yscale="log", xlabel="parameters",
             ylabel="seconds per step (one variant)",
             title="time per step after compilation")
  for ax in axes.flat:
    ax.set_xticks(p["depths"]) if ax in (acc_d, loss_d) else None
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
  fig.suptitle(f"MLPs on {p['data']}: {p['optimizer']} (lr {p['learning_rate']:g}), "
               f"{p['epochs']} epochs of batch {p['batch_size']}, mean ± std over "
               f"{len(p['seeds'])} seed(s)", fontsize=10)
  return report.save(fig, out, "architecture.png")


def table(m: dict) -> str:
  def pm(a, k, f="{:.3f}"):
    return f"{f.format(a[k])} ± {f.format(a[k + '_std'])}"
  return report.markdown_table(
      ["width", "depth", "hidden", "params", "val acc", "test acc", "test loss",
       "final train loss", "s/step (one variant)", "program wall s (compile incl.)"],
      [[a["width"] if a["depth"] else "–", a["depth"], json.dumps(a["hidden"]),
        a["params"], pm(a, "val_accuracy"), pm(a, "test_accuracy"),
        pm(a, "test_loss"), pm(a, "train_loss", "{:.3g}"),
        f"{a['seconds_per_step']:.3g}", f"{a['group_wall_s']:.3g}"]
       for a in sorted(m["architectures"], key=lambda a: (a["depth"], a["width"]))])


def measured(m: dict, p: dict) -> str:
  find = {(a["width"], a["depth"]): a for a in m["architectures"]}
  parts = [f"{len(m['architectures'])} architectures x {len(p['seeds'])} seed(s) "
           f"in {m['groups']} compiled programs ({m['sweep_wall_s']:.0f} s); "
           f"{m['n_train']} training examples, {m['n_val']} held out for "
           f"validation, test {m['n_test']}; mean ± std over seeds."]
  if (0, 0) in find:
    a = find[0, 0]
    parts.append(f"Logistic regression ({a['params']} parameters): test accuracy "
                 f"{a['test_accuracy']:.3f} ± {a['test_accuracy_std']:.3f}.")
  for w, arch in _lines(m, p):
    parts.append(f"Width {w}: " + ", ".join(
        f"depth {a['depth']} {a['test_accuracy']:.3f} ± {a['test_accuracy_std']:.3f}"
        for a in arch if a["depth"] > 0) +
        f" (depth chosen on validation: {m['best_depth'][w]}).")
  best = find[(m["best"][0] if m["best"] else 0, len(m["best"]))]
  parts.append(f"Chosen on validation overall: {json.dumps(best['hidden'])}, "
               f"validation {best['val_accuracy']:.3f}, test "
               f"{best['test_accuracy']:.3f} ± {best['test_accuracy_std']:.3f}.")
  largest = max(m["architectures"], key=lambda a: a["params"])
  parts.append(f"The largest net ({json.dumps(largest['hidden'])}, "
               f"{largest['params']} parameters) ends with training loss "
               f"{largest['train_loss']:.3g} against test loss "
               f"{largest['test_loss']:.3g}.")
  return " ".join(parts)
