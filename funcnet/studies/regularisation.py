"""Study ``regularisation``: L2, dropout and early stopping narrow the gap
between training and held-out performance.

An overfitting regime: few training examples (``train_per_class`` per class
of ``data``, ``data.train_per_class``; the test split untouched) and a wide
network (``hidden``), trained with Adam (``lr``) for ``epochs``. Variants:

  none             no regularisation
  l2               g + l2 w added to every gradient (``optimizer.l2``)
  dropout          each hidden unit dropped with probability ``dropout`` in
                   training (``model.mlp.dropout``)
  early_stopping   stop once the held-out loss has not improved for
                   ``patience`` epochs (``train.patience``; the params are
                   those at the stop, not the best ones)
  all              the three together

Train metrics are measured on the whole training split at each epoch's
params, without dropout (``train.make_evaluate``): the loss ``fit`` records
is the epoch's mean over steps, with dropout on. The generalisation gap is
``train accuracy - test accuracy`` and ``test loss - train loss`` at the
final params.

Early stopping watches the test split here (funcnet's ``fit`` evaluates on
the held-out split it is given); a careful protocol would hold out a
validation split from the training examples instead.
"""

import jax
import numpy as np

from funcnet import config as config_lib, train
from funcnet.errors import ConfigError
from funcnet.experiment import Setup
from funcnet.studies import report
from funcnet.studies.registry import Study, register

CLAIM = ("On few training examples a wide network memorises its training "
         "set; L2, dropout and all three regularisers together narrow the "
         "gap between training and test accuracy and loss and raise test "
         "accuracy, while early stopping narrows only the loss gap.")

VARIANTS = ("none", "l2", "dropout", "early_stopping", "all")


def _overrides(p: dict, variant: str) -> list:
  base = [f'data.name="{p["data"]}"', f"data.train_per_class={p['train_per_class']}",
          f"model.mlp.hidden={p['hidden']}", f"train.epochs={p['epochs']}",
          f"train.batch_size={p['batch_size']}", f"optimizer.learning_rate={p['lr']}",
          f"seed={p['seed']}"]
  l2 = [f"optimizer.l2={p['l2']}"]
  dropout = [f"model.mlp.dropout={p['dropout']}"]
  early = [f"train.patience={p['patience']}"]
  return base + {"none": [], "l2": l2, "dropout": dropout,
                 "early_stopping": early, "all": l2 + dropout + early}[variant]


def train_variant(p: dict, variant: str, on_train=None) -> dict:
  """Trains one variant; its curves and final metrics (JSON-ready).

  ``on_train``: a ``train.make_evaluate`` of this architecture to measure the
  training split with (evaluation draws no dropout, so every variant's
  network computes the same function of its params; sharing one jitted
  evaluator compiles it once); None makes one.
  """
  setup = Setup(config_lib.load(None, _overrides(p, variant)))
  x, y = train.as_arrays(setup.ds.x_train, setup.ds.y_train, setup.dtype)
  if on_train is None:
    on_train = train.make_evaluate(setup.model, setup.loss, setup.ds.task)
  train_metrics = []

  def measure(record, state, status):
    train_metrics.append({k: float(v) for k, v in
                          jax.device_get(on_train(state.params, x,
                                                  y)).items()})

  res = setup.fit(callbacks=train.Callbacks(measure), norms=False)  # no gradient norms: a faster step
  h = res.history
  final_train, last = train_metrics[-1], h[-1]
  return {
      "status": res.status, "epochs_run": len(h),
      "curves": {"epoch": [r["epoch"] for r in h],
                 "train_loss": [m["loss"] for m in train_metrics],
                 "train_accuracy": [m["accuracy"] for m in train_metrics],
                 "test_loss": [r.get("test_loss") for r in h],
                 "test_accuracy": [r.get("test_accuracy") for r in h]},
      "train_accuracy": final_train["accuracy"], "train_loss": final_train["loss"],
      "test_accuracy": last["test_accuracy"], "test_loss": last["test_loss"],
      "gap_accuracy": final_train["accuracy"] - last["test_accuracy"],
      "gap_loss": last["test_loss"] - final_train["loss"],
      "best_test_accuracy": max(r["test_accuracy"] for r in h),
      "n_train": int(len(setup.ds.y_train)),
  }


def _plot_curves(out, p, runs) -> str:
  fig, axes = report.plt.subplots(1, 2, figsize=(11, 4.3))
  for i, (name, r) in enumerate(runs.items()):
    c, e = f"C{i}", r["curves"]["epoch"]
    for ax, key in ((axes[0], "loss"), (axes[1], "accuracy")):
      ax.plot(e, r["curves"][f"train_{key}"], color=c, lw=1.2,
              label=f"{name}, train")
      ax.plot(e, r["curves"][f"test_{key}"], color=c, lw=1.2, ls="--",
              label=f"{name}, test")
  axes[0].set(yscale="log", xlabel="epoch", ylabel="cross-entropy",
              title=f"Loss: {runs[next(iter(runs))]['n_train']} training examples "
                    f"of {p['data']}, hidden {p['hidden']}")
  axes[1].set(xlabel="epoch", ylabel="accuracy",
              title="Accuracy (solid: train, without dropout; dashed: test)")
  for ax in axes:
    ax.title.set_fontsize(9)
    ax.legend(fontsize=6, ncol=2)
  return report.save(fig, out, "curves.png")


def _plot_gaps(out, p, runs) -> str:
  names = list(runs)
  idx = np.arange(len(names))
  fig, axes = report.plt.subplots(1, 2, figsize=(10, 3.8))
  axes[0].bar(idx - 0.2, [runs[n]["train_accuracy"] for n in names], 0.4, label="train")
  axes[0].bar(idx + 0.2, [runs[n]["test_accuracy"] for n in names], 0.4, label="test")
  axes[0].set(ylabel="final accuracy", title="Final accuracy")
  axes[0].legend(fontsize=7)
  axes[1].bar(idx - 0.2, [runs[n]["gap_accuracy"] for n in names], 0.4,
              label="train acc − test acc")
  axes[1].bar(idx + 0.2, [runs[n]["gap_loss"] for n in names], 0.4,
              label="test loss − train loss")
  axes[1].set(title="Generalisation gap (smaller is better)")
  axes[1].legend(fontsize=7)
  for ax in axes:
    ax.set_xticks(idx, names, fontsize=8)
    ax.title.set_fontsize(9)
  return report.save(fig, out, "gaps.png")


def _run(out: str, p: dict) -> dict:
  for v in p["variants"]:
    if v not in VARIANTS:
      raise ConfigError(f"study parameter 'variants' names {v!r}; expected "
                        f"names from {', '.join(VARIANTS)}")
  first = Setup(config_lib.load(None, _overrides(p, "none")))
  on_train = train.make_evaluate(first.model, first.loss, first.ds.task)
  runs = {v: train_variant(p, v, on_train) for v in p["variants"]}
  figures = [_plot_curves(out, p, runs), _plot_gaps(out, p, runs)]
  table = report.markdown_table(
      ["variant", "epochs run", "train acc", "test acc", "best test acc",
       "gap (acc)", "train loss", "test loss", "gap (loss)"],
      [[n, r["epochs_run"], r["train_accuracy"], r["test_accuracy"],
        r["best_test_accuracy"], r["gap_accuracy"], r["train_loss"],
        r["test_loss"], r["gap_loss"]] for n, r in runs.items()], fmt="{:.3f}")
  n_train = runs[p["variants"][0]]["n_train"]
  measured = (
      f"{n_train} training examples of {p['data']}, hidden {p['hidden']}, Adam lr "
      f"{p['lr']:g}, {p['epochs']} epochs (l2 {p['l2']:g}, dropout "
      f"{p['dropout']:g}, patience {p['patience']}). Gap in accuracy (train − test) "
      "and in loss (test − train): " + "; ".join(
          f"{n} {r['gap_accuracy']:.3f} / {r['gap_loss']:.3f} (test acc "
          f"{r['test_accuracy']:.3f})" for n, r in runs.items()) + ".")
  report.write_readme(
      out, "regularisation: L2 and dropout narrow the generalisation gap, "
      "early stopping only its loss side", CLAIM, measured, figures, table,
      command="funcnet study regularisation --out docs/studies/regularisation")
  return {"variants": runs}


STUDY = register(Study(
    name="regularisation",
    claim=CLAIM,
    run=_run,
    defaults={"variants": list(VARIANTS), "data": "mnist1d",
              "train_per_class": 50, "hidden": [256, 256], "epochs": 100,
              "batch_size": 32, "lr": 0.001, "l2": 0.01, "dropout": 0.5,
              "patience": 10, "seed": 0},
    quick={"variants": ["none", "dropout", "all"], "epochs": 25},
))
