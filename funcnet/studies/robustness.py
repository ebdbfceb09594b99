"""Study ``robustness``: adversarial training against FGSM and PGD.

For each model (``kinds``: an MLP and a CNN on ``data``) and each seed of
``seeds``, two runs from that seed (the same init and data order): one
trained on clean examples, one adversarially (the config's
``[adversarial]`` table: a ``adv_ratio`` share of every batch replaced by
``adv_method`` examples of radius ``adv_eps`` made from the current params).

Every run holds out a ``validation`` fraction of the training split
(``data.validation``). A model's learning rate is chosen on it: where
``lr_grid`` lists rates for the kind, both trainings are run at each rate
from the first seed and the rate of the highest mean validation clean
accuracy (over the two trainings) is kept, for every seed and both
trainings (a kind without a grid uses ``lr``, fixed a priori). Only then is
the test split (``ds.info["test"]``) read, once per final run, in the data's
own units (digits: pixel intensities 0-16, clipped to that range):

  clean accuracy;
  accuracy under FGSM and under PGD (``pgd_steps`` steps of 2.5 eps /
  steps, a random start) for each eps of ``eps_list``;
  saliency maps |dz_t/dx| (the logit of the true class) of the first
  ``examples`` test inputs, and how much they look like the input: the
  Pearson correlation of |dz_t/dx| with the raw input over its pixels,
  averaged over the test split.

The claim's clauses are decided by those numbers (:func:`decide`), on the
mean over seeds with the sign required in every seed
(:mod:`funcnet.studies.spread`): per model, (1) the adversarially trained
model keeps at least 3x the standard model's accuracy under PGD at
``eps_mid`` (d_s = adv_s - 3 std_s > 0 every seed); (2) its clean accuracy
is within 3 points of the standard model's (3 - |drop_s| > 0 every seed);
(3) its saliency correlates more with the input (Tsipras et al. 2019:
robust models' gradients look like the digit); and (4) PGD is never weaker
than FGSM (accuracy under PGD <= under FGSM + 0.5 points at each eps, every
model and seed). (1)-(3) are untested with fewer than ``min_seeds`` seeds
or a run shorter than ``TRAINED`` epochs (``--quick``).

Gradients come from the runs' own source (``grads``: the hand-written input
gradient or autodiff's).
"""

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import config as config_lib, data, inputgrad, train
from funcnet.attacks import evaluate
from funcnet.errors import ConfigError
from funcnet.experiment import Setup
from funcnet.studies import claims as claims_lib, report, spread
from funcnet.studies.registry import Study, register

CLAIM = ("Whether adversarial training keeps at least 3x the standard "
         "model's accuracy under PGD at a mid-range eps with clean accuracy "
         "within 3 points, whether PGD is never weaker than FGSM, and whether "
         "the robust model's saliency maps look more like the input.")

TRAININGS = ("standard", "adversarial")
TRAINED = 20
"""Epochs below which the clauses about the trained models are untested."""


def _overrides(p: dict, kind: str, training: str, seed: int, lr: float) -> list:
  out = [f'data.name="{p["data"]}"', f"data.validation={p['validation']!r}",
         f'model.kind="{kind}"', f"train.epochs={p['epochs']}",
         f"train.batch_size={p['batch_size']}",
         f"optimizer.learning_rate={lr!r}", f"seed={seed}",
         f'train.grads="{p["grads"]}"', "run.progress=\"never\""]
  out += p["model_sets"].get(kind, [])
  if training == "adversarial":
    out += [f'adversarial.method="{p["adv_method"]}"',
            f"adversarial.eps={p['adv_eps']}",
            f"adversarial.ratio={p['adv_ratio']}",
            f"adversarial.steps={p['adv_steps']}"]
  return out


def _train(p: dict, kind: str, training: str, seed: int, lr: float) -> tuple:
  """``(setup, params, validation clean accuracy)`` of one run; the
  validation split is ``setup.ds``'s held-out split (``x_test``)."""
  setup = Setup(config_lib.load(None, _overrides(p, kind, training, seed, lr)))
  params = setup.fit(norms=False).state.params
  x, y = train.as_arrays(setup.ds.x_test, setup.ds.y_test, setup.dtype)
  ev = train.make_evaluate(setup.model, setup.loss, setup.ds.task)
  return setup, params, float(jax.device_get(ev(params, x, y))["accuracy"])


def choose(val: dict, rates: list) -> int:
  """Index of the rate of the highest mean validation accuracy over the
  trainings (``val[training][i]`` at ``rates[i]``); the first on a tie."""
  score = np.mean([val[t] for t in TRAININGS], axis=0)
  return int(np.argmax(score))


def _select(p: dict, kind: str) -> tuple:
  """The kind's rate, chosen on validation from ``lr_grid[kind]`` at the
  first seed (``lr`` where the kind has no grid), and that seed's two
  trained runs at it: ``(selection record, {training: (setup, params)})``."""
  rates = p["lr_grid"].get(kind, [p["lr"]])
  seed = p["seeds"][0]
  runs = {t: [_train(p, kind, t, seed, lr) for lr in rates] for t in TRAININGS}
  val = {t: [r[2] for r in runs[t]] for t in TRAININGS}
  i = choose(val, rates)
  record = {"rates": rates, "val_accuracy": val, "chosen": rates[i],
            "seed": seed, "grid": len(rates) > 1}
  return record, {t: runs[t][i][:2] for t in TRAININGS}


def _attack_accuracy(setup: Setup, params, x, y, p: dict, seed: int):
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
  clean, out = sweep(params, x, y, y, budget, jax.random.key(seed + 1))
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


def _test_split(setup: Setup) -> tuple:
  """The untouched test split (standardised with the training statistics):
  read only here, for a final run's numbers, after every choice."""
  x, y = setup.ds.info["test"]
  return jnp.asarray(x, setup.dtype), jnp.asarray(y), np.asarray(x)


def _measure(setup: Setup, params, p: dict, seed: int) -> dict:
  x, y, x_np = _test_split(setup)
  fgsm, pgd, clean = _attack_accuracy(setup, params, x, y, p, seed)
  mean, std = setup.stats if setup.stats is not None else (0.0, 1.0)
  raw = x_np * std + mean
  maps, corr = _saliency(setup, params, x, y, raw, p)
  return {"clean_accuracy": clean, "fgsm": fgsm, "pgd": pgd,
          "saliency_input_corr": corr, "maps": maps, "inputs": raw[:p["examples"]],
          "n_test": int(len(y)), "n_val": int(len(setup.ds.y_test))}


KEYS = ("clean_accuracy", "fgsm", "pgd", "saliency_input_corr")


def _kind(p: dict, kind: str) -> tuple:
  """Every seed's two final runs of one kind at its chosen rate:
  ``(selection, {training: {key: [per seed]}, plus seed 0's maps})``."""
  selection, first = _select(p, kind)
  per = {t: [] for t in TRAININGS}
  for seed in p["seeds"]:
    for t in TRAININGS:
      setup, params = (first[t] if seed == p["seeds"][0] else
                       _train(p, kind, t, seed, selection["chosen"])[:2])
      per[t].append(_measure(setup, params, p, seed))
  out = {}
  for t, ms in per.items():
    out[t] = {k: [m[k] for m in ms] for k in KEYS}
    out[t].update(maps=ms[0]["maps"], inputs=ms[0]["inputs"],
                  n_test=ms[0]["n_test"], n_val=ms[0]["n_val"])
  return selection, out


def _untested(p: dict, n: int) -> str:
  """Why the clauses about the trained models are not decided ("" where
  they are)."""
  why = []
  if p["epochs"] < TRAINED:
    why.append(f"{p['epochs']} epochs < {TRAINED}")
  if n < p["min_seeds"]:
    why.append(spread.why_untested(n, p["min_seeds"]))
  return f" (untested: {'; '.join(why)})" if why else ""


def _kind_clauses(kind: str, r: dict, p: dict, mid: int) -> list:
  s, a = r["standard"], r["adversarial"]
  n, k = len(s["clean_accuracy"]), p["min_seeds"]
  why = _untested(p, n)
  decide_ = (lambda d: None) if why else (lambda d: spread.effect(d, 0.0, k))
  s_pgd = [x[mid] for x in s["pgd"]]
  a_pgd = [x[mid] for x in a["pgd"]]
  ratio = (np.mean(a_pgd) / np.mean(s_pgd)) if np.mean(s_pgd) > 0 else None
  keeps = spread.paired([3 * x for x in s_pgd], a_pgd)
  drop = spread.paired(a["clean_accuracy"], s["clean_accuracy"])
  margin = [0.03 - abs(d) for d in drop]
  corr = spread.paired(s["saliency_input_corr"], a["saliency_input_corr"])
  seeds = f"{n} seed(s), mean ± std"
  return [
      claims_lib.clause(
          f"{kind}: adversarial training keeps >= 3x the standard model's PGD "
          f"accuracy at eps {p['eps_mid']:g} (mean, and in every seed)",
          decide_(keeps),
          f"{spread.pm(a_pgd)} vs {spread.pm(s_pgd)}"
          + (f" ({ratio:.1f}x)" if ratio is not None else "")
          + f"; adv - 3 std per seed {_fmt(keeps)}; {seeds}" + why),
      claims_lib.clause(
          f"{kind}: its clean accuracy is within 3 points of the standard "
          "model's (mean, and in every seed)", decide_(margin),
          f"clean {spread.pm(a['clean_accuracy'])} vs "
          f"{spread.pm(s['clean_accuracy'])}; drop per seed (points) "
          f"{_fmt([100 * d for d in drop], '{:+.1f}')}; {seeds}" + why),
      claims_lib.clause(
          f"{kind}: the robust model's |saliency| correlates more with the "
          "input (mean, and in every seed)", decide_(corr),
          f"{spread.pm(a['saliency_input_corr'], '{:.2f}')} vs "
          f"{spread.pm(s['saliency_input_corr'], '{:.2f}')}; difference per "
          f"seed {_fmt(corr, '{:+.2f}')}; {seeds}" + why)]


def _fmt(xs, f: str = "{:+.3f}") -> str:
  return "[" + ", ".join(f.format(x) for x in xs) + "]"


def decide(runs: dict, p: dict) -> list:
  """The claim's clauses from the measured numbers, a pure function of
  them: ``runs[kind][training]`` holds per-seed lists ``clean_accuracy``,
  ``saliency_input_corr`` and ``fgsm``, ``pgd`` (each seed's list over
  ``eps_list``), the seeds in the same order in every run (paired)."""
  mid = p["eps_list"].index(p["eps_mid"])
  out = []
  for kind, r in runs.items():
    out += _kind_clauses(kind, r, p, mid)
  gaps = [pg - fg for r in runs.values() for t in r.values()
          for ps, fs in zip(t["pgd"], t["fgsm"]) for pg, fg in zip(ps, fs)]
  n = min(len(t["pgd"]) for r in runs.values() for t in r.values())
  out.append(claims_lib.clause(
      "PGD is never weaker than FGSM: accuracy under PGD <= under FGSM + 0.5 "
      "points at every eps, every model and seed", max(gaps) <= 0.005,
      f"largest PGD - FGSM {100 * max(gaps):+.1f} points over {n} seed(s)"))
  return out


def _plot_curves(out: str, p: dict, runs: dict, claims: list) -> tuple:
  fig, axes = report.plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 3.8),
                                  squeeze=False)
  titles = []
  eps = [0] + p["eps_list"]
  for ax, (kind, r) in zip(axes[0], runs.items()):
    for i, t in enumerate(TRAININGS):
      for method, ls, mk in (("pgd", "-", "o"), ("fgsm", "--", "s")):
        # Accuracy at eps 0 is the clean accuracy, per seed.
        a = np.array([[c] + list(m) for c, m in zip(r[t]["clean_accuracy"],
                                                    r[t][method])])
        sd = a.std(0, ddof=1) if len(a) > 1 else np.zeros(a.shape[1])
        ax.errorbar(eps, a.mean(0), yerr=sd, color=f"C{i}", ls=ls, marker=mk,
                    ms=4, capsize=3, label=f"{t}, {method.upper()}")
    title = claims_lib.title(claims_lib.find(claims, f"{kind}: adversarial"),
                             f"{kind}: adversarial training keeps >= 3x under PGD")
    titles.append(title)
    n = len(r["standard"]["clean_accuracy"])
    ax.set(xlabel=f"eps ({p['data']}'s own units)",
           ylabel=f"test accuracy (mean ± std, {n} seed(s))", title=title,
           ylim=(0, 1))
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
  fig.suptitle(suptitle + f" (|dz_y/dx|, seed {p['seeds'][0]})", fontsize=8)
  return report.save(fig, out, "saliency.png"), [suptitle]


def _table(p: dict, runs: dict, selection: dict) -> str:
  rows = []
  for k in runs:
    for t, r in runs[k].items():
      rows.append([k, t, spread.pm(r["clean_accuracy"])]
                  + [spread.pm([s[j] for s in r[m]]) for m in ("fgsm", "pgd")
                     for j in range(len(p["eps_list"]))]
                  + [spread.pm(r["saliency_input_corr"], "{:.2f}")])
  acc = report.markdown_table(
      ["model", "training", "clean"] + [f"FGSM {e:g}" for e in p["eps_list"]]
      + [f"PGD {e:g}" for e in p["eps_list"]] + ["corr(|saliency|, input)"], rows)
  sel = report.markdown_table(
      ["model", "rate"] + [f"validation clean, {t}" for t in TRAININGS] + ["chosen"],
      [[k, f"{lr:g}"] + [f"{s['val_accuracy'][t][i]:.3f}" for t in TRAININGS]
       + ["yes" if lr == s["chosen"] else ""]
       for k, s in selection.items() for i, lr in enumerate(s["rates"])])
  return (f"Test accuracy (mean ± std over seeds {p['seeds']}; eps in "
          f"{p['data']}'s own units):\n\n{acc}\n\nLearning rate per model, "
          f"chosen on the validation split (seed {p['seeds'][0]}; a model "
          f"with one rate has it fixed a priori):\n\n{sel}")


def _measured(p: dict, runs: dict, selection: dict) -> str:
  r0 = runs[next(iter(runs))]["standard"]
  head = (f"{p['data']}, {p['epochs']} epochs, seeds {p['seeds']}; "
          f"{r0['n_val']} training examples held out for validation, "
          f"{r0['n_test']} test examples read once per final run. Rates: "
          + ", ".join(f"{k} {s['chosen']:g}"
                      + (" (chosen on validation from "
                         f"{', '.join(f'{x:g}' for x in s['rates'])})"
                         if s["grid"] else " (fixed a priori)")
                      for k, s in selection.items())
          + f". Adversarial training: {p['adv_method']} eps {p['adv_eps']:g}, "
          f"ratio {p['adv_ratio']:g}; attacks: PGD {p['pgd_steps']} steps. ")
  return head + ("Every clause is decided on the mean over seeds with the "
                 "sign required in every seed (the clauses above).")


def _run(out: str, p: dict) -> dict:
  if p["eps_mid"] not in p["eps_list"]:
    raise ConfigError(f"study parameter eps_mid = {p['eps_mid']} is not in "
                      f"eps_list {p['eps_list']}; expected one of its values")
  if not p["seeds"]:
    raise ConfigError("study parameter seeds is empty; expected at least one seed")
  selection, runs = {}, {}
  for k in p["kinds"]:
    selection[k], runs[k] = _kind(p, k)
  claims = decide(runs, p)
  (curves, t_curves), (maps, t_maps) = (_plot_curves(out, p, runs, claims),
                                        _plot_maps(out, p, runs, claims))
  table, measured = _table(p, runs, selection), _measured(p, runs, selection)
  for k in runs:
    for t in TRAININGS:
      runs[k][t] = {key: v for key, v in runs[k][t].items()
                    if key not in ("maps", "inputs")}
  return {"runs": runs, "selection": selection, "claims": claims,
          "figure_titles": {curves: t_curves, maps: t_maps},
          "readme": {"title": "robustness: adversarial training against FGSM and PGD",
                     "measured": measured, "figures": [curves, maps], "table": table}}


STUDY = register(Study(
    name="robustness",
    claim=CLAIM,
    run=_run,
    defaults={"kinds": ["mlp", "cnn"], "data": "digits", "epochs": 60,
              "batch_size": 32, "lr": 0.001, "grads": "manual",
              "seeds": [0, 1, 2], "min_seeds": 3, "validation": 0.2,
              # The MLP's rate is fixed a priori (Adam's default); the CNN's
              # is chosen on the validation split from this grid.
              "lr_grid": {"cnn": [0.001, 0.003]},
              "adv_method": "pgd", "adv_eps": 2.0, "adv_ratio": 0.5,
              "adv_steps": 10, "eps_list": [0.5, 1.0, 2.0, 4.0, 8.0],
              "eps_mid": 1.0, "pgd_steps": 20, "examples": 4,
              "model_sets": {"mlp": ["model.mlp.hidden=[128]",
                                     'model.mlp.activation="relu"',
                                     'model.mlp.output_activation="softmax"'],
                             "cnn": ["model.cnn.image_shape=[8, 8]"]}},
    quick={"kinds": ["mlp"], "epochs": 3, "seeds": [0],
           "lr_grid": {"mlp": [0.001, 0.003]}, "eps_list": [1.0, 4.0],
           "eps_mid": 1.0, "pgd_steps": 5, "adv_steps": 2, "examples": 2},
))
