"""Study ``vanishing-exploding``: the gradient's size layer by layer, and step
by step through time.

Backprop passes the error back one layer at a time (BP2 of
:mod:`funcnet.backprop`):

  delta_l = (delta_{l+1} @ W_{l+1}^T) * f'(z_l)          (m, n_l)

so ``delta_1`` is ``delta_L`` after ``L - 1`` such factors. With sigmoid
(``f' <= 1/4``) and Xavier weights each factor shrinks the error about
fourfold and the gradient vanishes geometrically towards the input; relu
with standard-normal weights (``W ~ N(0, 1)``, width ``n``) grows it by about
``sqrt(n / 2)`` a layer; He init (``W ~ N(0, 2 / n)``) keeps the factor near 1.
The weight gradient ``dC/dW_l = a_{l-1}^T delta_l / m`` (BP4) also carries
the activation ``a_{l-1}``: in the relu/normal net the activations grow
forward as fast as the errors grow backward, so *every* layer's weight
gradient is enormous and their ratio stays near 1; the explosion shows in
``||delta_1|| / ||delta_L||`` and in the absolute size.

Part 1, a deep MLP (``depth`` hidden layers of ``width`` units) on ``data``,
for each activation/init pair of ``configs``:

  at init      on the first ``batch`` training examples, in float64:
               ||dC/dθ_l|| per layer (W_l and b_l together, the groups of
               ``train.layer_groups``) by the hand-written backprop and by
               ``jax.grad`` (their largest relative difference, layer by
               layer, is reported), and ||delta_l|| (``backprop.deltas``)
  trained      after ``epochs`` of Adam (``lr``): the last epoch's mean
               per-step ||dC/dθ_l||, from ``history["grad_norms"]``

Part 2, clipping: the relu/normal net trained with plain SGD (``clip_lr``),
whose step is proportional to the gradient, with and without
``optimizer.clip_norm = clip_norm``; relu/he under the same SGD as the
reference. ``fit`` stops a run whose loss turns NaN/inf (status
``"diverged"``).

Part 3, through time: ``||dC/dh_t||`` for ``t = 1..T``
(:func:`funcnet.models.rnn.hidden_grad_norms`, the hand-written BPTT) of a
tanh RNN and a GRU on MNIST-1D (40 steps of one value), on the first
``rnn_batch`` training examples, at init and after each of ``rnn_epochs``
epochs of Adam (``rnn_lr``). In the tanh RNN the carried gradient is
multiplied by ``Wh^T diag(1 - h_t^2)`` every step; in the GRU it also has the
gated path ``dh_{t-1} += u_t * dh_t``, which the update gate ``u_t`` can hold
near 1. At init, with zero gate biases, ``u_t`` is about 1/2, so that path
halves the gradient each step.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnet import autodiff, backprop, config as config_lib, train
from funcnet.errors import ConfigError
from funcnet.experiment import Setup
from funcnet.models.rnn import hidden_grad_norms
from funcnet.studies import report
from funcnet.studies.registry import Study, register

CLAIM = ("Backprop multiplies the error by one factor W^T f'(z) per layer: "
         "with sigmoid the gradient vanishes towards the input, relu with "
         "standard-normal weights explodes, He init keeps every layer's "
         "gradient within a small factor; clipping keeps the exploding net "
         "finite under SGD but does not make it learn; through time a tanh "
         "RNN's gradient vanishes or swings, while a GRU, whose gradient "
         "fades fastest at init, learns to carry it back to the first step.")

CONFIGS = ["sigmoid/normal", "sigmoid/xavier", "tanh/xavier", "relu/he",
           "relu/normal"]
EXPLODING = "relu/normal"
REFERENCE = "relu/he"


def _split(name: str):
  parts = name.split("/")
  if len(parts) != 2:
    raise ConfigError(f"study parameter 'configs' names {name!r}; expected "
                      "'activation/init', e.g. 'relu/he'")
  return parts


def _mlp_config(p: dict, name: str, extra=()) -> dict:
  activation, init = _split(name)
  return config_lib.load(None, [
      f'data.name="{p["data"]}"', f"seed={p['seed']}",
      f"model.mlp.hidden={[p['width']] * p['depth']}",
      f'model.mlp.activation="{activation}"', f'model.mlp.init="{init}"',
      *extra])


def _ratio(a, b) -> float:
  """``a / b`` as a Python float; NaN when ``b`` is 0 (a dead last layer)."""
  a, b = float(a), float(b)
  return a / b if b != 0 else float("nan")


# --- part 1: per layer ----------------------------------------------------------

def init_gradients(setups, batch: int) -> list:
  """The per-layer gradient at each setup's initial params, in float64.

  Args:
    setups: :class:`funcnet.experiment.Setup` s of MLPs on the same data.
    batch: the first ``batch`` training examples are the batch.

  Returns:
    One dict per setup: ``{"manual", "autodiff", "delta": [per layer],
    "max_rel_diff"}``, ``||dC/dθ_l||`` from the hand-written BP1-BP4
    (:func:`funcnet.backprop.backward`) and from
    :func:`funcnet.autodiff.value_and_grad`, ``||delta_l||`` (Frobenius over
    the batch, from the same backward pass), and ``max_l ||g_l^manual -
    g_l^autodiff|| / ||g_l^autodiff||``.
  """
  def stack(tree):
    return jnp.stack([optax.tree.norm(g) for g in train.layer_subtrees(tree)])

  def measure(setup, params, x, y):
    model, loss = setup.model, setup.loss
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    # BP1-BP4 once: the per-layer errors and the gradient from one trace.
    manual = backprop.backward(model, loss, params,
                               backprop.forward(model, params, x), y)
    _, auto = autodiff.value_and_grad(model, loss)(params, x, y)
    diff = jax.tree_util.tree_map(jnp.subtract, manual.grads, auto)
    return (stack(manual.grads), stack(auto), stack(diff),
            jnp.stack([jnp.linalg.norm(d) for d in manual.deltas]))

  # Every setup in one program: on a CPU, compiling costs more than
  # running, and one program of five small networks compiles in about half
  # the time of five programs. The params are Setup.init_state's, the ones
  # training starts from.
  params = [s.init_state()[0] for s in setups]
  ds = setups[0].ds
  with jax.enable_x64(True):
    x = jnp.asarray(ds.x_train[:batch], jnp.float64)
    y = jnp.asarray(ds.y_train[:batch])
    got = jax.device_get(jax.jit(lambda ps, x, y: [
        measure(s, p, x, y) for s, p in zip(setups, ps)])(params, x, y))
  return [{"manual": manual.tolist(), "autodiff": auto.tolist(),
           "delta": delta.tolist(),
           "max_rel_diff": float(np.max(diff / np.maximum(auto, 1e-300)))}
          for manual, auto, diff, delta in got]


def _last_finite_norms(history):
  for h in reversed(history):
    v = list(h.get("grad_norms", {}).values())
    if v and all(np.isfinite(v)):
      return v
  return None


def _per_layer(p: dict) -> dict:
  out = {}
  setups = [Setup(_mlp_config(p, name, [f"train.epochs={max(p['epochs'], 1)}",
                                        f"optimizer.learning_rate={p['lr']}"]))
            for name in p["configs"]]
  for name, setup, g in zip(p["configs"], setups,
                            init_gradients(setups, p["batch"])):
    n, d = g["manual"], g["delta"]
    r = {"init": g,
         "first_over_last": _ratio(n[0], n[-1]),
         "max_over_last": _ratio(max(n), n[-1]),
         "min_over_last": _ratio(min(n), n[-1]),
         "delta_first_over_last": _ratio(d[0], d[-1]),
         "trained": None}
    if p["epochs"] > 0:
      res = setup.fit()
      trained = _last_finite_norms(res.history)
      last = res.history[-1]
      r.update(trained=trained, status=res.status,
               trained_first_over_last=(_ratio(trained[0], trained[-1])
                                        if trained else None),
               final_train_loss=last["train_loss"],
               test_accuracy=last.get("test_accuracy"))
    out[name] = r
  return out


# --- part 2: clipping -------------------------------------------------------------

def _clipping(p: dict) -> dict:
  runs = [(f"{EXPLODING}, no clipping", EXPLODING, 0.0),
          (f"{EXPLODING}, clip_norm {p['clip_norm']:g}", EXPLODING, p["clip_norm"])]
  if p["clip_reference"]:
    runs.append((f"{REFERENCE}, no clipping", REFERENCE, 0.0))
  out = {}
  for label, name, clip in runs:
    setup = Setup(_mlp_config(p, name, [
        'optimizer.name="sgd"', f"optimizer.learning_rate={p['clip_lr']}",
        f"optimizer.clip_norm={clip}", f"train.epochs={p['clip_epochs']}"]))
    params, _ = setup.init_state()
    x, y = train.as_arrays(setup.ds.x_train, setup.ds.y_train, setup.dtype)
    # Op by op: jitted, this one number would compile one more program.
    loss0 = float(autodiff.loss_fn(setup.model, setup.loss)(params, x, y))
    res = setup.fit(norms=False)  # no gradient norms: a faster step
    acc = [h["test_accuracy"] for h in res.history if "test_accuracy" in h]
    out[label] = {"config": name, "clip_norm": clip, "status": res.status,
                  "reason": res.reason, "epochs_run": len(res.history),
                  # epoch 0: the loss at init on the whole training split
                  "train_loss": [loss0] + [h["train_loss"] for h in res.history],
                  "test_accuracy": acc[-1] if acc else None}
  return out


# --- part 3: through time ------------------------------------------------------------

def _recurrent(p: dict) -> dict:
  out = {}
  for kind in ("rnn", "gru"):
    setup = Setup(config_lib.load(None, [
        f'model.kind="{kind}"', f'data.name="{p["rnn_data"]}"',
        f"seed={p['seed']}", f"model.{kind}.hidden={p['rnn_hidden']}",
        f"optimizer.learning_rate={p['rnn_lr']}",
        f"train.epochs={max(p['rnn_epochs'], 1)}"]))
    x = jnp.asarray(setup.ds.x_train[:p["rnn_batch"]])
    y = jnp.asarray(setup.ds.y_train[:p["rnn_batch"]])
    norms_of = jax.jit(lambda params: hidden_grad_norms(
        setup.model, setup.loss, params, x, y))
    params, _ = setup.init_state()
    per_epoch = [np.asarray(norms_of(params))]

    def measure(record, state, status):
      per_epoch.append(np.asarray(norms_of(state.params)))

    r = {"init": per_epoch[0].tolist(), "trained": None, "test_accuracy": None}
    if p["rnn_epochs"] > 0:
      res = setup.fit(callbacks=train.Callbacks(measure), norms=False)
      acc = [h["test_accuracy"] for h in res.history if "test_accuracy" in h]
      r.update(trained=per_epoch[-1].tolist(), status=res.status,
               test_accuracy=acc[-1] if acc else None)
    r["first_over_last"] = [_ratio(n[0], n[-1]) for n in per_epoch]
    out[kind] = r
  return out


# --- report ---------------------------------------------------------------------------

def _positive(xs, ys):
  """The points with a finite, positive ``y`` (a log axis takes no others)."""
  pts = [(a, b) for a, b in zip(xs, ys)
         if b is not None and np.isfinite(b) and b > 0]
  return ([a for a, _ in pts], [b for _, b in pts]) if pts else ([], [])


def _plot_layers(out, p, layers) -> str:
  fig, axes = report.plt.subplots(1, 2, figsize=(11, 4.4))
  for i, (name, r) in enumerate(layers.items()):
    c = f"C{i}"
    n = r["init"]["manual"]
    idx = list(range(1, len(n) + 1))
    axes[0].plot(*_positive(idx, n), color=c, marker="o", ms=3,
                 label=f"{name} (first/last {r['first_over_last']:.2g})")
    if r["trained"]:
      axes[0].plot(*_positive(idx, r["trained"]), color=c, ls="--", lw=1.2)
    axes[1].plot(*_positive(idx, r["init"]["delta"]), color=c, marker="o", ms=3,
                 label=f"{name} (first/last {r['delta_first_over_last']:.2g})")
  trained = (f"; dashed: mean per step in epoch {p['epochs']} of Adam"
             if p["epochs"] > 0 else "")
  axes[0].set(yscale="log", xlabel="layer l (1 = next to the input)",
              ylabel="||dC/dθ_l||  (W_l and b_l)",
              title=f"Weight gradient per layer, depth {p['depth']} x "
                    f"{p['width']} on {p['data']}\nsolid: at init{trained}")
  axes[1].set(yscale="log", xlabel="layer l", ylabel="||δ_l|| = ||dC/dz_l||",
              title="Error per layer at init (BP2: δ_l = (δ_{l+1} W^T) f'(z_l))")
  for ax in axes:
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
  return report.save(fig, out, "gradient_by_layer.png")


def _plot_clipping(out, p, runs) -> str:
  fig, ax = report.plt.subplots(figsize=(7, 4.2))
  for i, (label, r) in enumerate(runs.items()):
    loss = r["train_loss"]
    end = (f"diverged in epoch {r['epochs_run']}" if r["status"] == "diverged"
           else f"test acc {r['test_accuracy']:.2f}")
    ax.plot(*_positive(range(len(loss)), loss), color=f"C{i}", marker="o",
            ms=3, label=f"{label}: {end}")
    if r["status"] == "diverged":
      good = _positive(range(len(loss)), loss)
      ax.plot(r["epochs_run"], good[1][-1] if good[1] else 1.0, "x",
              color=f"C{i}", ms=10, mew=2)
  ax.set(yscale="log", xlabel="epoch (0: at init)", ylabel="training loss",
         title=f"SGD (lr {p['clip_lr']:g}) on the depth-{p['depth']} net: "
               "× marks a NaN/inf loss")
  ax.title.set_fontsize(9)
  ax.legend(fontsize=7)
  return report.save(fig, out, "clipping.png")


def _plot_time(out, p, rec) -> str:
  fig, axes = report.plt.subplots(1, 2, figsize=(11, 4.2))
  names = {"rnn": "tanh RNN", "gru": "GRU"}
  for i, (kind, r) in enumerate(rec.items()):
    c = f"C{i}"
    for key, ls, when in (("init", "-", "init"),
                          ("trained", "--", f"epoch {p['rnn_epochs']}")):
      n = r[key]
      if n is None:
        continue
      t = list(range(1, len(n) + 1))
      axes[0].plot(*_positive(t, [_ratio(v, n[-1]) for v in n]), color=c, ls=ls,
                   label=f"{names[kind]}, {when}")
    ratio = r["first_over_last"]
    axes[1].plot(*_positive(range(len(ratio)), ratio), color=c, marker="o",
                 ms=3, label=names[kind])
  axes[0].set(yscale="log", xlabel="time step t", ylabel="||dC/dh_t|| / ||dC/dh_T||",
              title=f"Gradient through time on {p['rnn_data']} (hidden "
                    f"{p['rnn_hidden']}); a line that stops has reached 0")
  axes[1].set(yscale="log", xlabel="epoch (0: at init)",
              ylabel="||dC/dh_1|| / ||dC/dh_T||",
              title=f"How much of the gradient reaches t = 1 (Adam, lr "
                    f"{p['rnn_lr']:g}); a missing point is 0")
  for ax in axes:
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
  return report.save(fig, out, "through_time.png")



def _tables(p, layers, clip, rec) -> str:
  rows = [[name, report.fmt(r["first_over_last"]), report.fmt(r["min_over_last"]),
           report.fmt(r["max_over_last"]), report.fmt(r["init"]["manual"][-1]),
           report.fmt(r["delta_first_over_last"]), report.fmt(r["init"]["max_rel_diff"], "{:.1e}"),
           report.fmt(r.get("trained_first_over_last")), report.fmt(r.get("final_train_loss")),
           report.fmt(r.get("test_accuracy"))]
          for name, r in layers.items()]
  parts = [f"Depth {p['depth']} x {p['width']}, {p['data']}; at init on "
           f"{p['batch']} examples in float64; trained: {p['epochs']} epochs of Adam.",
           "", report.markdown_table(
               ["activation/init", "first/last", "min/last", "max/last",
                "last ‖dC/dθ_L‖", "‖δ_1‖/‖δ_L‖", "manual vs autodiff",
                "trained first/last", "train loss", "test acc"], rows)]
  if clip:
    parts += ["", f"SGD, lr {p['clip_lr']:g}, {p['clip_epochs']} epochs:", "",
              report.markdown_table(
                  ["run", "status", "epochs run", "loss at init", "final loss",
                   "test acc"],
                  [[label, r["status"], r["epochs_run"], report.fmt(r["train_loss"][0]),
                    report.fmt(r["train_loss"][-1]), report.fmt(r["test_accuracy"])]
                   for label, r in clip.items()])]
  if rec:
    parts += ["", f"{p['rnn_data']}, hidden {p['rnn_hidden']}, Adam lr "
              f"{p['rnn_lr']:g}; ‖dC/dh_1‖ / ‖dC/dh_T‖ at each epoch (0: init):", "",
              report.markdown_table(
                  ["cell", "at init", f"epoch {p['rnn_epochs']}", "every epoch",
                   "test acc"],
                  [[k, report.fmt(r["first_over_last"][0]), report.fmt(r["first_over_last"][-1]
                                                            if r["trained"] else None),
                    " ".join(f"{v:.2g}" for v in r["first_over_last"]),
                    report.fmt(r["test_accuracy"])] for k, r in rec.items()])]
  return "\n".join(parts)


def _measured(p, layers, clip, rec, diff) -> str:
  s = [f"Depth {p['depth']}, at init, first-layer / last-layer gradient norm: " +
       ", ".join(f"{n} {r['first_over_last']:.2g}" for n, r in layers.items()) + "."]
  if REFERENCE in layers:
    r = layers[REFERENCE]
    s.append(f"{REFERENCE} keeps every layer within {r['min_over_last']:.2g}–"
             f"{r['max_over_last']:.2g} x the last.")
  if EXPLODING in layers and REFERENCE in layers:
    e, h = layers[EXPLODING], layers[REFERENCE]
    s.append(f"{EXPLODING}'s last-layer gradient is "
             f"{e['init']['manual'][-1] / h['init']['manual'][-1]:.2g} x "
             f"{REFERENCE}'s and ‖δ_1‖/‖δ_L‖ = {e['delta_first_over_last']:.2g} "
             f"(the explosion: weight gradients are uniformly huge).")
  s.append(f"Hand-written backprop vs jax.grad, per layer: largest relative "
           f"difference {diff:.1e} (float64).")
  if clip:
    s.append(f"SGD, lr {p['clip_lr']:g}: " + "; ".join(
        f"{label} {r['status']}" + (
            f" in epoch {r['epochs_run']}" if r["status"] == "diverged" else
            f" (final loss {r['train_loss'][-1]:.3g}, test acc "
            f"{r['test_accuracy']:.2f})")
        for label, r in clip.items()) + ".")
  if rec:
    s.append("‖dC/dh_1‖ / ‖dC/dh_T‖ at init: " + ", ".join(
        f"{k} {r['first_over_last'][0]:.2g}" for k, r in rec.items()) +
        (("; after training: " + ", ".join(
            f"{k} {r['first_over_last'][-1]:.2g} (test acc {r['test_accuracy']:.2f})"
            for k, r in rec.items())) if p["rnn_epochs"] > 0 else "") + ".")
  return " ".join(s)


def _run(out: str, p: dict) -> dict:
  for n in p["configs"]:
    _split(n)
  layers = _per_layer(p)
  diff = max(r["init"]["max_rel_diff"] for r in layers.values())
  clip = _clipping(p) if p["clip_epochs"] > 0 else {}
  rec = _recurrent(p)
  figures = [_plot_layers(out, p, layers)]
  if clip:
    figures.append(_plot_clipping(out, p, clip))
  figures.append(_plot_time(out, p, rec))
  table = _tables(p, layers, clip, rec)
  report.write_readme(
      out, "vanishing-exploding: the gradient shrinks or grows by one factor "
      "per layer, and per time step",
      CLAIM, _measured(p, layers, clip, rec, diff), figures, table,
      command="funcnet study vanishing-exploding --out "
              "docs/studies/vanishing-exploding")
  return {"per_layer": layers, "max_rel_diff_manual_autodiff": diff,
          "clipping": clip, "recurrent": rec}


STUDY = register(Study(
    name="vanishing-exploding",
    claim=CLAIM,
    run=_run,
    defaults={"configs": CONFIGS, "depth": 15, "width": 32, "data": "digits",
              "batch": 256, "epochs": 3, "lr": 0.001, "clip_norm": 1.0,
              "clip_lr": 0.1, "clip_epochs": 10, "clip_reference": True,
              "rnn_data": "mnist1d",
              "rnn_hidden": 32, "rnn_batch": 256, "rnn_epochs": 8,
              "rnn_lr": 0.01, "seed": 0},
    quick={"depth": 10, "epochs": 0, "clip_epochs": 1, "clip_reference": False,
           "rnn_epochs": 1},
))
