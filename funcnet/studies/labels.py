"""Study ``labels``: does self-supervised pretraining make up for few labels?

For each dataset of ``data`` (its model from ``models``: the MNIST-1D CNN
body, the digits MLP), each seed ``s`` of ``seeds`` and each objective of
``objectives`` (``[pretrain]``: masked modelling, contrastive SimCLR), a
body is pretrained on the WHOLE training split's inputs, labels unread
(``pretrain_epochs``, ``pretrain_lr``, ``manual`` gradients). Then, for
each share of the labels in ``fractions`` (``data.train_per_class =
round(fraction x m / k)`` examples of each of the ``k`` classes, at least
one; 1.0: every label), a classifier is trained on those labels only:

  scratch       the same model from a fresh init
  <objective>   the pretrained run's body, a fresh head
                (``finetune.from_run``; ``finetune`` = "full": every layer
                at the same learning rate, "probe": the body frozen)

Every classifier gets the same optimizer (Adam, ``lr``), batch
(``batch_size``, fewer when there are fewer examples) and number of steps
(``steps``, rounded up to whole epochs), and the inputs standardised with
the whole training split's statistics (which the pretrained runs used: the
inputs are unlabelled data every method may see). Its test accuracy at the
LAST epoch is reported, never the best one: nothing is chosen on the test
split (the recipe was chosen on a validation split cut from MNIST-1D's
training split; what was tried: configs/mnist1d_cnn_pretrain_contrastive.toml).

Seeds: seed ``s`` is the run's ``seed`` and ``data.seed`` (which examples
are labelled; digits' split too), the same for every method, so the
methods are compared on the same labels. Mean and standard deviation over
the seeds, error bars in ``accuracy.png``.
"""

import json
import math
import os

import numpy as np

from funcnet import config as config_lib, experiment
from funcnet.errors import ConfigError
from funcnet.studies import claims, report
from funcnet.studies.registry import Study, register

CLAIM = ("With 1-10% of the labels, a body pretrained on the whole training "
         "split's unlabelled inputs (masked modelling or SimCLR) and then "
         "fine-tuned beats the same model trained from scratch on the same "
         "labels by at least 5 points of test accuracy (mean of 3 seeds); "
         "with every label the two are within 5 points.")

OBJECTIVES = ("masked", "contrastive")
SCRATCH = "scratch"

# The model of each dataset, and how its inputs are laid out for masks and
# views (the MNIST-1D CNN as configs/mnist1d_cnn.toml, without dropout; the
# digits MLP as configs/digits_mlp.toml).
MODELS = {
    "mnist1d": ['model.kind="cnn"', "model.cnn.channels=[32, 64, 64]",
                "model.cnn.kernel_size=5", "model.cnn.global_pool=false",
                "model.cnn.hidden=[128]", 'pretrain.layout="signal"',
                "pretrain.span=4"],
    "digits": ['model.kind="mlp"', "model.mlp.hidden=[128]",
               'model.mlp.activation="relu"', 'model.mlp.init="he"',
               'pretrain.layout="image"', "pretrain.span=2"],
}


def quiet(*a, **k):
  del a, k


def _base(p: dict, name: str, seed: int) -> list:
  if name not in p["models"]:
    raise ConfigError(f"study parameter 'data' names {name!r}, which "
                      f"'models' has no model for; expected one of "
                      f"{', '.join(p['models'])}")
  return [f'data.name="{name}"', f"seed={seed}", f"data.seed={seed}",
          "run.plots=false", 'run.progress="never"', *p["models"][name]]


def pretrain_epochs(p: dict, objective: str) -> int:
  """``pretrain_epochs``: one number for every objective, or one per
  objective (``{"masked": 5, "contrastive": 10}``)."""
  e = p["pretrain_epochs"]
  return e[objective] if isinstance(e, dict) else e


def pretrain_run(p: dict, out: str, name: str, objective: str,
                 seed: int) -> dict:
  """Pretrains ``objective`` on ``name``'s training inputs into
  ``out/runs/<name>-<objective>-<seed>``; ``{"run", "test_loss"}``."""
  run = os.path.join(out, "runs", f"{name}-{objective}-{seed}")
  epochs = pretrain_epochs(p, objective)
  cfg = config_lib.load(None, _base(p, name, seed) + [
      f'pretrain.objective="{objective}"', 'train.grads="manual"',
      f"train.epochs={epochs}",
      f"train.batch_size={p['pretrain_batch_size']}",
      f"train.eval_every={epochs}",
      f"optimizer.learning_rate={p['pretrain_lr']}",
      f"pretrain.copies={p['copies']}"])
  summary = experiment.train_and_evaluate(cfg, run, progress="never",
                                          log=quiet)
  return {"run": run, "test_loss": summary["best"]["test_loss"]}


def per_class(fraction: float, n_train: int, n_classes: int) -> int:
  """Labelled examples per class for ``fraction`` of ``n_train``: 0 (every
  label) at 1, else ``max(1, round(fraction x n_train / n_classes))``."""
  if fraction >= 1:
    return 0
  return max(1, round(fraction * n_train / n_classes))


def classifier(p: dict, name: str, seed: int, labels: int, stats,
               run=None) -> dict:
  """Trains one classifier on ``labels`` examples per class (0: all) from
  scratch or from ``run``'s body; its last test accuracy and size."""
  over = _base(p, name, seed) + [f"data.train_per_class={labels}",
                                 f"optimizer.learning_rate={p['lr']}"]
  if run is not None:
    over += [f'finetune.from_run="{run}"',
             f"finetune.freeze_body={str(p['finetune'] == 'probe').lower()}",
             "finetune.body_lr_scale=1.0"]
  cfg = config_lib.load(None, over)
  ds = experiment.build_dataset(cfg, stats)
  m = len(ds.y_train)
  batch = min(p["batch_size"], m)
  epochs = math.ceil(p["steps"] / math.ceil(m / batch))
  cfg["train"].update(batch_size=batch, epochs=epochs, eval_every=epochs)
  res = experiment.Setup(cfg, ds=ds).fit(norms=False)
  return {"accuracy": res.history[-1]["test_accuracy"], "n_labels": m,
          "epochs": epochs}


def run_dataset(p: dict, out: str, name: str) -> dict:
  """Every method, fraction and seed on one dataset (JSON-ready)."""
  methods = [SCRATCH] + list(p["objectives"])
  acc = {m: {str(f): [] for f in p["fractions"]} for m in methods}
  pretrained = {o: [] for o in p["objectives"]}
  for seed in p["seeds"]:
    runs = {o: pretrain_run(p, out, name, o, seed) for o in p["objectives"]}
    for o, r in runs.items():
      pretrained[o].append(r["test_loss"])
    # Statistics of this seed's split (digits' split moves with data.seed).
    ds = experiment.build_dataset(config_lib.load(None, _base(p, name, seed)))
    stats = (ds.info["mean"], ds.info["std"])
    for f in p["fractions"]:
      labels = per_class(f, len(ds.y_train), ds.n_classes)
      acc[SCRATCH][str(f)].append(classifier(p, name, seed, labels, stats))
      for o, r in runs.items():
        acc[o][str(f)].append(classifier(p, name, seed, labels, stats,
                                         r["run"]))
      # What is measured so far, for a reader of a long run (or a stopped one).
      report.write_text(out, f"partial-{name}.json", json.dumps(acc))
  return {"methods": {m: {f: _summarise(v) for f, v in by.items()}
                      for m, by in acc.items()},
          "pretrain_test_loss": pretrained}


def _summarise(runs: list) -> dict:
  a = np.array([r["accuracy"] for r in runs])
  return {"accuracies": a.tolist(), "mean": float(a.mean()),
          "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
          "n_labels": runs[0]["n_labels"], "epochs": runs[0]["epochs"]}


def _plot(out: str, p: dict, results: dict) -> str:
  names = list(results)
  fig, axes = report.plt.subplots(1, len(names), figsize=(5.5 * len(names), 4),
                                  squeeze=False)
  for ax, name in zip(axes[0], names):
    for i, (method, by) in enumerate(results[name]["methods"].items()):
      fr = [float(f) for f in by]
      ax.errorbar(fr, [by[f]["mean"] for f in by], [by[f]["std"] for f in by],
                  color=f"C{i}", marker="o", capsize=3, label=method)
    ax.set(xscale="log", xlabel="share of the training labels",
           ylabel="test accuracy (mean ± sd over seeds)",
           title=f"{name}: scratch vs pretrained then fine-tuned")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
  return report.save(fig, out, "accuracy.png")


def _rows(results: dict) -> list:
  rows = []
  for name, r in results.items():
    scratch = r["methods"][SCRATCH]
    for method, by in r["methods"].items():
      for f, s in by.items():
        gain = s["mean"] - scratch[f]["mean"]
        rows.append([name, f, s["n_labels"], method, s["mean"], s["std"],
                     "" if method == SCRATCH else f"{100 * gain:+.1f}"])
  return rows


def measured_text(p: dict, results: dict) -> str:
  """One sentence per dataset: each method's accuracy at each share."""
  parts = []
  for name, r in results.items():
    per = []
    for f in map(str, p["fractions"]):
      cells = ", ".join(
          f"{m} {100 * by[f]['mean']:.1f} ± {100 * by[f]['std']:.1f}"
          for m, by in r["methods"].items())
      per.append(f"{float(f):.0%} of the labels: {cells}")
    parts.append(f"{name} ({len(p['seeds'])} seeds, test accuracy %): "
                 + "; ".join(per) + ".")
  return " ".join(parts)


def decide(results: dict, p: dict) -> list:
  """The claim's clauses from the measured means (plain numbers): for each
  dataset, objective and share of the labels under 1, whether pretraining
  then fine-tuning beats scratch by at least ``margin`` (mean over seeds);
  untested with fewer than 3 seeds. With every label: whether the gap is
  under ``margin`` either way."""
  out = []
  enough = len(p["seeds"]) >= 3
  why = "" if enough else f"; only {len(p['seeds'])} seed(s), 3 needed"
  pts = f"{100 * p['margin']:g}"
  for name, r in results.items():
    scratch = r["methods"][SCRATCH]
    for o in p["objectives"]:
      for f, s in r["methods"][o].items():
        gain = s["mean"] - scratch[f]["mean"]
        evidence = (f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f} vs "
                    f"{100 * scratch[f]['mean']:.1f} ± "
                    f"{100 * scratch[f]['std']:.1f}: {100 * gain:+.1f} "
                    f"points{why}")
        if float(f) < 1:
          text = (f"{name}, {float(f):.0%} of the labels: {o} pretraining "
                  f"then fine-tuning beats scratch by at least {pts} points")
          holds = gain >= p["margin"]
        else:
          text = (f"{name}, every label: {o} pretraining and scratch are "
                  f"within {pts} points")
          holds = abs(gain) < p["margin"]
        out.append(claims.clause(text, holds if enough else None, evidence))
  return out


def _check(p: dict) -> None:
  for o in p["objectives"]:
    if o not in OBJECTIVES:
      raise ConfigError(f"study parameter 'objectives' names {o!r}; expected "
                        f"names from {', '.join(OBJECTIVES)}")
  if p["finetune"] not in ("full", "probe"):
    raise ConfigError(f"study parameter 'finetune' = {p['finetune']!r}; "
                      "expected 'full' or 'probe'")
  e = p["pretrain_epochs"]
  if isinstance(e, dict) and set(p["objectives"]) - set(e):
    raise ConfigError(f"study parameter 'pretrain_epochs' = {e!r} has no "
                      f"entry for {sorted(set(p['objectives']) - set(e))}; "
                      "expected one number, or one per objective")
  if not p["seeds"] or any(not 0 < f <= 1 for f in p["fractions"]):
    raise ConfigError("study parameters 'seeds' and 'fractions' need at "
                      "least one seed and shares in (0, 1]")


def readme(out: str, p: dict, results: dict) -> dict:
  """The README's parts (:func:`funcnet.studies.registry.run` writes it)."""
  table = report.markdown_table(
      ["data", "labels (share)", "labelled examples", "method",
       "test acc (mean)", "sd", "vs scratch (points)"],
      _rows(results), fmt="{:.3f}")
  measured = (
      "Pretraining: " + ", ".join(
          f"{o} {pretrain_epochs(p, o)} epochs"
          + (f" of {p['copies']} masked copies" if o == "masked" else "")
          for o in p["objectives"])
      + f", Adam lr {p['pretrain_lr']:g}, batch {p['pretrain_batch_size']}; "
      "classifiers: "
      f"{p['steps']} steps (whole epochs), Adam lr {p['lr']:g}, batch "
      f"{p['batch_size']}, fine-tuning {p['finetune']}. "
      + measured_text(p, results))
  return {"title": "labels: self-supervised pretraining against few labels",
          "measured": measured, "figures": [_plot(out, p, results)],
          "table": table}


def _run(out: str, p: dict) -> dict:
  _check(p)
  results = {name: run_dataset(p, out, name) for name in p["data"]}
  return {"datasets": results, "claims": decide(results, p),
          "readme": readme(out, p, results)}


STUDY = register(Study(
    name="labels",
    claim=CLAIM,
    run=_run,
    defaults={"data": ["mnist1d", "digits"], "models": MODELS,
              "objectives": list(OBJECTIVES),
              "fractions": [0.01, 0.05, 0.1, 1.0], "seeds": [0, 1, 2],
              # masked: 5 epochs of 8 masked copies (the same 40 passes
              # as 10 of 4, fresher masks: chosen on validation, see the
              # docstring); contrastive: 10 epochs.
              "pretrain_epochs": {"masked": 5, "contrastive": 10},
              "pretrain_batch_size": 100,
              "pretrain_lr": 0.001, "copies": 8, "steps": 700,
              "batch_size": 32, "lr": 0.001, "finetune": "full",
              "margin": 0.05},
    quick={"data": ["digits"], "objectives": ["contrastive"],
           "fractions": [0.05], "seeds": [0],
           "pretrain_epochs": 1, "copies": 1, "steps": 5,
           "models": {"digits": ['model.kind="mlp"', "model.mlp.hidden=[16]",
                                 'pretrain.layout="image"', "pretrain.span=2"]}},
))
