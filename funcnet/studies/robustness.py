"""Study ``robustness``: adversarial training against FGSM and PGD.

For each model (``kinds``: an MLP and a CNN on ``data``), two runs from the
same seed: one trained on clean examples, one adversarially (the config's
``[adversarial]`` table: a ``adv_ratio`` share of every batch replaced by
``adv_method`` examples of radius ``adv_eps`` made from the current params).
Then, on the whole test split, in the data's own units (digits: pixel
intensities 0-16, clipped to that range):

  clean accuracy;
  accuracy under FGSM and under PGD (``pgd_steps`` steps of 2.5 eps /
  steps, a random start) for each eps of ``eps_list``;
  saliency maps |dz_t/dx| (the logit of the true class) of the first
  ``examples`` test inputs, and how much they look like the input: the
  Pearson correlation of |dz_t/dx| with the raw input over its pixels,
  averaged over the test split.

The claim's clauses are decided by those numbers (:func:`decide`; the
per-model ``verdicts`` in results.json too), not asserted: per model, (1)
the adversarially trained model keeps at least 3x the standard model's
accuracy under PGD at ``eps_mid``; (2) its clean accuracy is within 3 points
of the standard model's; (4) its saliency correlates more with the input
(Tsipras et al. 2019: robust models' gradients look like the digit); and
(3) PGD is never weaker than FGSM (accuracy under PGD <= under FGSM + 0.5
points at each eps, every model). One seed per run; a run shorter than
``TRAINED`` epochs (``--quick``) leaves (1), (2) and (4) untested.

Gradients come from the runs' own source (``grads``: the hand-written input
gradient or autodiff's).
"""

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import config as config_lib, data, inputgrad
from funcnet.attacks import evaluate
from funcnet.errors import ConfigError
from funcnet.experiment import Setup
from funcnet.studies import claims as claims_lib, report
from funcnet.studies.registry import Study, register

CLAIM = ("Whether adversarial training keeps at least 3x the standard "
         "model's accuracy under PGD at a mid-range eps with clean accuracy "
         "within 3 points, whether PGD is never weaker than FGSM, and whether "
         "the robust model's saliency maps look more like the input.")

TRAININGS = ("standard", "adversarial")
TRAINED = 20
"""Epochs below which the clauses about the trained models are untested."""


def _overrides(p: dict, kind: str, training: str) -> list:
  out = [f'data.name="{p["data"]}"', f'model.kind="{kind}"',
         f"train.epochs={p['epochs']}", f"train.batch_size={p['batch_size']}",
         f"optimizer.learning_rate={p['lr']}", f"seed={p['seed']}",
         f'train.grads="{p["grads"]}"', "run.progress=\"never\""]
  out += p["model_sets"].get(kind, [])
  if training == "adversarial":
    out += [f'adversarial.method="{p["adv_method"]}"',
            f"adversarial.eps={p['adv_eps']}",
            f"adversarial.ratio={p['adv_ratio']}",
            f"adversarial.steps={p['adv_steps']}"]
  return out


def _attack_accuracy(setup: Setup, params, x, y, p: dict):
  """Accuracy under FGSM and PGD at every eps of ``eps_list`` (data units):
  ``funcnet attack``'s own sweep (:mod:`funcnet.attacks.evaluate`), one
  compiled program for every eps and both methods."""
  stats = setup.stats
  mean, std = (None, None) if stats is None else (stats[0], stats[1])
  budget = evaluate.in_model_units(
      p["eps_list"], mean, std, data.valid_range(setup.cfg["data"]["name"]),
      tuple(x.shape[1:]), np.dtype(setup.dtype))
  sweep = evaluate.make_sweep(setup.model, setup.loss, evaluate.Settings(
      steps=p["pgd_steps"], source=p["grads"]), keep=0)
  clean, out = sweep(params, x, y, y, budget, jax.random.key(p["seed"] + 1))
  acc = {m: evaluate.accuracies(pred, y)["accuracy"]
         for m, (pred, _) in out.items()}
  return acc["fgsm"], acc["pgd"], float(np.mean(np.asarray(clean) == np.asarray(y)))


def _saliency(setup: Setup, params, x, y, raw, p: dict):
  """|dz_y/dx| of every test input, and its Pearson correlation with the
  raw input over the pixels (mean over the split)."""
  g = np.abs(np.asarray(inputgrad.input_grad(
      setup.model, params, x, of="logit", target=y, source=p["grads"])))
  g = g.reshape(len(g), -1)
  r = raw.reshape(len(raw), -1)
  gc, rc = g - g.mean(1, keepdims=True), r - r.mean(1, keepdims=True)
  corr = (gc * rc).sum(1) / np.maximum(
      np.linalg.norm(gc, axis=1) * np.linalg.norm(rc, axis=1), 1e-30)
  return g[:p["examples"]], float(np.mean(corr))


def _one(p: dict, kind: str, training: str) -> dict:
  setup = Setup(config_lib.load(None, _overrides(p, kind, training)))
  res = setup.fit(norms=False)
  x = jnp.asarray(setup.ds.x_test, setup.dtype)
  y = jnp.asarray(setup.ds.y_test)
  fgsm, pgd, clean = _attack_accuracy(setup, res.state.params, x, y, p)
  mean, std = setup.stats if setup.stats is not None else (0.0, 1.0)
  raw = np.asarray(setup.ds.x_test) * std + mean
  maps, corr = _saliency(setup, res.state.params, x, y, raw, p)
  return {"clean_accuracy": clean, "fgsm": fgsm, "pgd": pgd,
          "saliency_input_corr": corr, "maps": maps, "inputs": raw[:p["examples"]],
          "epochs": len(res.history)}


def _verdicts(p: dict, runs: dict) -> dict:
  mid = p["eps_list"].index(p["eps_mid"])
  out = {}
  for kind, r in runs.items():
    s, a = r["standard"], r["adversarial"]
    # The ratio is None where the standard model is at 0 (any accuracy is
    # infinitely more): the verdict then needs the robust model above 0.
    ratio = a["pgd"][mid] / s["pgd"][mid] if s["pgd"][mid] > 0 else None
    out[kind] = {
        "pgd_at_eps_mid": {"standard": s["pgd"][mid], "adversarial": a["pgd"][mid]},
        "pgd_ratio_at_eps_mid": ratio,
        "keeps_3x": a["pgd"][mid] >= 3.0 * s["pgd"][mid] and a["pgd"][mid] > 0,
        "clean_drop_points": 100 * (s["clean_accuracy"] - a["clean_accuracy"]),
        "clean_within_3_points": abs(s["clean_accuracy"] - a["clean_accuracy"]) <= 0.03,
        "pgd_never_weaker": all(pg <= fg + 0.005 for t in (s, a)
                                for pg, fg in zip(t["pgd"], t["fgsm"])),
        "saliency_more_like_input": a["saliency_input_corr"] > s["saliency_input_corr"]}
  return out


def decide(runs: dict, p: dict) -> list:
  """The claim's clauses from the measured accuracies and correlations
  (``runs[kind][training]``: ``clean_accuracy``, ``fgsm``, ``pgd``,
  ``saliency_input_corr``); a pure function of the numbers."""
  v = _verdicts(p, runs)
  untested = p["epochs"] < TRAINED
  why = f" (--quick: {p['epochs']} epochs, fewer than {TRAINED})" if untested else ""
  out = []
  for kind, k in v.items():
    a, s = k["pgd_at_eps_mid"]["adversarial"], k["pgd_at_eps_mid"]["standard"]
    ratio = k["pgd_ratio_at_eps_mid"]
    out.append(claims_lib.clause(
        f"{kind}: adversarial training keeps >= 3x the standard model's PGD "
        f"accuracy at eps {p['eps_mid']:g}", None if untested else k["keeps_3x"],
        f"{100 * a:.1f}% vs {100 * s:.1f}%"
        + (f" ({ratio:.1f}x)" if ratio is not None else "") + ", 1 seed" + why))
    out.append(claims_lib.clause(
        f"{kind}: its clean accuracy is within 3 points of the standard model's",
        None if untested else k["clean_within_3_points"],
        f"clean {100 * runs[kind]['adversarial']['clean_accuracy']:.1f}% vs "
        f"{100 * runs[kind]['standard']['clean_accuracy']:.1f}% "
        f"({k['clean_drop_points']:.1f} points lower), 1 seed" + why))
    r = runs[kind]
    out.append(claims_lib.clause(
        f"{kind}: the robust model's |saliency| correlates more with the input",
        None if untested else k["saliency_more_like_input"],
        f"{r['adversarial']['saliency_input_corr']:.2f} vs "
        f"{r['standard']['saliency_input_corr']:.2f}, 1 seed" + why))
  worst = max(pg - fg for r in runs.values() for t in r.values()
              for pg, fg in zip(t["pgd"], t["fgsm"]))
  out.append(claims_lib.clause(
      "PGD is never weaker than FGSM: accuracy under PGD <= under FGSM + 0.5 "
      "points at every eps, every model", all(k["pgd_never_weaker"] for k in v.values()),
      f"largest PGD - FGSM {100 * worst:+.1f} points"))
  return out


def _plot_curves(out: str, p: dict, runs: dict, claims: list) -> tuple:
  fig, axes = report.plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 3.8),
                                  squeeze=False)
  titles = []
  for ax, (kind, r) in zip(axes[0], runs.items()):
    for i, t in enumerate(TRAININGS):
      ax.plot([0] + p["eps_list"], [r[t]["clean_accuracy"]] + r[t]["pgd"],
              color=f"C{i}", marker="o", label=f"{t}, PGD")
      ax.plot([0] + p["eps_list"], [r[t]["clean_accuracy"]] + r[t]["fgsm"],
              color=f"C{i}", ls="--", label=f"{t}, FGSM")
    title = claims_lib.title(claims_lib.find(claims, f"{kind}: adversarial"),
                             f"{kind}: adversarial training keeps >= 3x under PGD")
    titles.append(title)
    ax.set(xlabel=f"eps ({p['data']}'s own units)", ylabel="test accuracy",
           title=title, ylim=(0, 1))
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
  return report.save(fig, out, "accuracy_vs_eps.png"), titles


def _plot_maps(out: str, p: dict, runs: dict, claims: list) -> tuple:
  n = p["examples"]
  cols = 1 + 2 * len(runs)
  fig, axes = report.plt.subplots(n, cols, figsize=(1.6 * cols, 1.6 * n),
                                  squeeze=False)
  first = runs[next(iter(runs))]["standard"]
  side = int(round(np.sqrt(first["inputs"][0].size)))
  square = side * side == first["inputs"][0].size
  for i in range(n):
    panels = [("input", first["inputs"][i])] + [
        (f"{kind} {t}", runs[kind][t]["maps"][i]) for kind in runs for t in TRAININGS]
    for ax, (title, img) in zip(axes[i], panels):
      if square:
        ax.imshow(np.reshape(img, (side, side)), cmap="gray" if title == "input"
                  else "inferno")
      else:
        ax.plot(np.ravel(img), lw=1)
      ax.set_xticks([]), ax.set_yticks([])
      if i == 0:
        ax.set_title(title, fontsize=8)
  suptitle = "; ".join(claims_lib.title(claims_lib.find(claims, f"{kind}: the robust"),
                                        f"{kind}: robust saliency more like the input")
                       for kind in runs)
  fig.suptitle(suptitle, fontsize=8)
  return report.save(fig, out, "saliency.png"), [suptitle]


def _run(out: str, p: dict) -> dict:
  if p["eps_mid"] not in p["eps_list"]:
    raise ConfigError(f"study parameter eps_mid = {p['eps_mid']} is not in "
                      f"eps_list {p['eps_list']}; expected one of its values")
  runs = {k: {t: _one(p, k, t) for t in TRAININGS} for k in p["kinds"]}
  verdicts = _verdicts(p, runs)
  claims = decide(runs, p)
  (curves, t_curves), (maps, t_maps) = (_plot_curves(out, p, runs, claims),
                                        _plot_maps(out, p, runs, claims))
  figures = [curves, maps]
  rows = [[k, t, r["clean_accuracy"], *r["fgsm"], *r["pgd"], r["saliency_input_corr"]]
          for k in runs for t, r in runs[k].items()]
  table = report.markdown_table(
      ["model", "training", "clean"] + [f"FGSM {e:g}" for e in p["eps_list"]]
      + [f"PGD {e:g}" for e in p["eps_list"]] + ["corr(|saliency|, input)"],
      rows, fmt="{:.3f}")
  measured = " ".join(
      f"{k}: PGD accuracy at eps {p['eps_mid']:g} is "
      f"{100 * v['pgd_at_eps_mid']['adversarial']:.1f}% adversarially trained vs "
      f"{100 * v['pgd_at_eps_mid']['standard']:.1f}% standard "
      f"({'holds' if v['keeps_3x'] else 'does not hold'}: >= 3x); "
      f"clean accuracy {v['clean_drop_points']:+.1f} points lower "
      f"({'within' if v['clean_within_3_points'] else 'not within'} 3); PGD "
      f"{'never weaker than' if v['pgd_never_weaker'] else 'sometimes weaker than'} "
      f"FGSM; the robust saliency correlates "
      f"{'more' if v['saliency_more_like_input'] else 'less'} with the input "
      f"({runs[k]['adversarial']['saliency_input_corr']:.2f} vs "
      f"{runs[k]['standard']['saliency_input_corr']:.2f})."
      for k, v in verdicts.items())
  measured = (f"{p['data']}, {p['epochs']} epochs, adversarial training: "
              f"{p['adv_method']} eps {p['adv_eps']:g}, ratio {p['adv_ratio']:g}; "
              f"attacks: PGD {p['pgd_steps']} steps. " + measured)
  for k in runs:
    for t in TRAININGS:
      runs[k][t] = {key: v for key, v in runs[k][t].items()
                    if key not in ("maps", "inputs")}
  return {"runs": runs, "verdicts": verdicts, "claims": claims,
          "figure_titles": {curves: t_curves, maps: t_maps},
          "readme": {"title": "robustness: adversarial training against FGSM and PGD",
                     "measured": measured, "figures": figures, "table": table}}


STUDY = register(Study(
    name="robustness",
    claim=CLAIM,
    run=_run,
    defaults={"kinds": ["mlp", "cnn"], "data": "digits", "epochs": 60,
              "batch_size": 32, "lr": 0.001, "grads": "manual", "seed": 0,
              "adv_method": "pgd", "adv_eps": 2.0, "adv_ratio": 0.5,
              "adv_steps": 10, "eps_list": [0.5, 1.0, 2.0, 4.0, 8.0],
              "eps_mid": 1.0, "pgd_steps": 20, "examples": 4,
              "model_sets": {"mlp": ["model.mlp.hidden=[128]",
                                     'model.mlp.activation="relu"',
                                     'model.mlp.output_activation="softmax"'],
                             "cnn": ["model.cnn.image_shape=[8, 8]",
                                     # at 1e-3 the adversarial CNN's clean
                                     # accuracy fell 10 points in 60 epochs
                                     "optimizer.learning_rate=0.003"]}},
    quick={"kinds": ["mlp"], "epochs": 3, "eps_list": [1.0, 4.0],
           "eps_mid": 1.0, "pgd_steps": 5, "adv_steps": 2, "examples": 2},
))
