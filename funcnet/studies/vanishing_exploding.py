"""Study ``vanishing-exploding``: the error's size layer by layer, what
clipping lets an exploding net learn, and the gradient through time.

Backprop passes the error back one layer at a time (BP2 of
:mod:`funcnet.backprop`):

  delta_l = (delta_{l+1} @ W_{l+1}^T) * f'(z_l)          (m, n_l)

so ``delta_1`` is ``delta_L`` after ``L - 1`` such factors. **One measure**
for vanishing and exploding alike: the error ratio

  rho_l = ||delta_l|| / ||delta_L||      (Frobenius over the batch; L: the
                                          output layer, the one nearest the
                                          loss; rho_L = 1)

``rho_1 < VANISH`` is vanishing, ``rho_1 > EXPLODE`` exploding, and a net
whose every ``rho_l`` lies in ``[1 / LEVEL, LEVEL]`` keeps the gradient
level. The weight gradient ``dC/dW_l = a_{l-1}^T delta_l / m`` (BP4) also
carries the activation ``a_{l-1}``; its ratio ``||dC/dθ_l|| / ||dC/dθ_L||``
is reported beside it because it hides relu/normal's explosion (the
activations grow forward as fast as the errors grow back, so every weight
gradient is huge and their ratio stays near 1).

Part 1, a deep MLP (``depth`` hidden layers of ``width``) on ``data`` for
each activation/init of ``configs`` and each of ``seeds``: ``rho_l`` and
``||dC/dθ_l||`` at init on the first ``batch`` training examples in float64
(the hand-written backprop, checked layer by layer against ``jax.grad``),
and ``rho_l`` again after ``epochs`` of Adam (``lr``).

Part 2, clipping: ``relu/normal`` under plain SGD, whose step is the
gradient times the rate, over the grid ``clip_lrs`` x ``clip_norms`` (0: no
clipping) x ``seeds``, for ``clip_epochs``; ``relu/he`` at ``clip_lr`` as the
reference. What each net learns on the test split: accuracy, the share of
its predictions in its most common class (1: a constant output) and its
loss against ``ln 10`` (a uniform guess). The clipped setting that learns
best is chosen on the validation split (``data.validation``).

Part 3, through time: ``||dC/dh_t|| / ||dC/dh_T||`` for ``t = 1..T``
(:func:`funcnet.models.rnn.hidden_grad_norms`, the hand-written BPTT) of a
tanh RNN and of GRUs with update-gate bias ``b_u`` in ``gru_biases``
(``h_t = (1 - u_t) n_t + u_t h_{t-1}``: with ``b_u = 0``, ``u_t ~ 1/2``
halves the carried gradient every step; ``b_u > 0`` holds it near 1), on
``rnn_data``, at init and after ``rnn_epochs`` of Adam at each rate of
``rnn_lrs``.

Trainings run through the vectorised sweep engine (:mod:`funcnet.sweep`):
seeds and rates of one network train in one compiled program. Every choice
reads the validation split; the test split (``ds.info["test"]``) gives the
final numbers only. Clauses about trained nets need 3 seeds or more and are
untested otherwise (``--quick``); those on the nets at init are decided on
every seed measured.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnet import autodiff, backprop, config as config_lib, sweep, train
from funcnet.errors import ConfigError
from funcnet.experiment import Setup
from funcnet.models.rnn import hidden_grad_norms
from funcnet.studies import vanishing_exploding_report as show
from funcnet.studies.registry import Study, register
from funcnet.studies.vanishing_exploding_claims import choose, decide  # noqa: F401

CLAIM = ("Whether the error backprop carries shrinks or grows by one factor "
         "per layer (sigmoid, relu with N(0, 1) weights, He init), what "
         "gradient clipping lets the exploding net learn, and how far a tanh "
         "RNN's and a GRU's gradient reaches back in time.")

CONFIGS = ["sigmoid/normal", "sigmoid/xavier", "tanh/xavier", "relu/he",
           "relu/normal"]
EXPLODING = "relu/normal"
REFERENCE = "relu/he"
VALIDATION = 0.2
"""The share of the training split held out for every choice."""


def _split(name: str):
  parts = name.split("/")
  if len(parts) != 2:
    raise ConfigError(f"study parameter 'configs' names {name!r}; expected "
                      "'activation/init', e.g. 'relu/he'")
  return parts


def _mlp_config(p: dict, name: str, extra=()) -> dict:
  activation, init = _split(name)
  return config_lib.load(None, [
      f'data.name="{p["data"]}"', f"seed={p['seeds'][0]}",
      f"data.validation={VALIDATION}", 'run.progress="never"',
      f"model.mlp.hidden={[p['width']] * p['depth']}",
      f'model.mlp.activation="{activation}"', f'model.mlp.init="{init}"',
      *extra])


def _sweep(cfg: dict, grid: dict) -> list:
  """The variants of ``grid`` over ``cfg``, trained by the sweep engine."""
  return sweep.run(cfg, grid, log=lambda _: None).variants


def _test_split(setup: Setup):
  """The untouched test split, standardised as training was: read for the
  final numbers only."""
  x, y = setup.ds.info["test"]
  return jnp.asarray(x, setup.dtype), np.asarray(y)


def _val_accuracy(v) -> float:
  """A variant's last validation accuracy; 0 for one that diverged."""
  if v.status == "diverged":
    return 0.0
  return float(v.final.get("test_accuracy", 0.0))  # the held-out split


def on_test(model, params, x, y) -> dict:
  """What a trained classifier does on the test split: ``accuracy``,
  ``constant`` (the share of predictions in the most common class; 1 is a
  constant output), ``loss`` (mean cross-entropy; ``ln 10`` for a uniform
  guess over 10 classes)."""
  z = np.asarray(jax.jit(model.logits)(params, x), np.float64)
  if not np.all(np.isfinite(z)):
    return {"accuracy": None, "constant": None, "loss": None}
  pred = z.argmax(1)
  logp = z - z.max(1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(1, keepdims=True))
  return {"accuracy": float(np.mean(pred == y)),
          "constant": float(np.bincount(pred).max() / len(pred)),
          "loss": float(-np.mean(logp[np.arange(len(y)), y]))}


# --- part 1: per layer ----------------------------------------------------------

def _layer_measure(model, loss):
  """``measure(params, x, y) -> (||g_l^manual||, ||g_l^autodiff||, ||g_l^manual
  - g_l^autodiff||, ||delta_l||)``, each ``(L,)``, in the params' dtype."""
  def stack(tree):
    return jnp.stack([optax.tree.norm(g) for g in train.layer_subtrees(tree)])

  def measure(params, x, y):
    # BP1-BP4 once: the per-layer errors and the gradient from one trace.
    manual = backprop.backward(model, loss, params,
                               backprop.forward(model, params, x), y)
    _, auto = autodiff.value_and_grad(model, loss)(params, x, y)
    diff = jax.tree_util.tree_map(jnp.subtract, manual.grads, auto)
    return (stack(manual.grads), stack(auto), stack(diff),
            jnp.stack([jnp.linalg.norm(d) for d in manual.deltas]))
  return measure


def layer_norms(setups, params, batch: int) -> list:
  """Per-layer norms of each setup's MLP at ``params``, in float64.

  Args:
    setups: one :class:`funcnet.experiment.Setup` per network (same data).
    params: for each setup, its params stacked on a leading seed axis.
    batch: the first ``batch`` training examples are the batch.

  Returns:
    Per setup, numpy arrays ``(S, L)``: ``manual``, ``autodiff``, ``diff``
    (``||dC/dθ_l||`` by the hand-written BP1-BP4, by ``jax.grad``, and of
    their difference) and ``delta`` (``||delta_l||``).
  """
  ds = setups[0].ds
  with jax.enable_x64(True):
    x = jnp.asarray(ds.x_train[:batch], jnp.float64)
    y = jnp.asarray(ds.y_train[:batch])
    ps = [jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), p)
          for p in params]
    # Every network and seed in one program: on a CPU compiling costs more
    # than running.
    got = jax.device_get(jax.jit(lambda ps, x, y: [
        jax.vmap(_layer_measure(s.model, s.loss), (0, None, None))(p, x, y)
        for s, p in zip(setups, ps)])(ps, x, y))
  return [dict(zip(("manual", "autodiff", "diff", "delta"), map(np.asarray, g)))
          for g in got]


def _stack(trees):
  return jax.tree_util.tree_map(lambda *a: np.stack([np.asarray(x) for x in a]),
                                *trees)


def _ratios(n) -> list:
  """``(S, L)`` norms -> per seed, each layer's norm over the last layer's
  (NaN where the last is 0)."""
  n = np.asarray(n, np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(n[:, -1:] > 0, n / n[:, -1:], np.nan).tolist()


def _per_layer(p: dict) -> dict:
  cfgs = [_mlp_config(p, name, [f"train.epochs={max(p['epochs'], 1)}",
                                f"optimizer.learning_rate={p['lr']}"])
          for name in p["configs"]]
  setups = [Setup(cfg) for cfg in cfgs]
  inits = [_stack([Setup(config_lib.from_dict({**cfg, "seed": s}), ds=s0.ds)
                   .init_state()[0] for s in p["seeds"]])
           for cfg, s0 in zip(cfgs, setups)]
  at_init = layer_norms(setups, inits, p["batch"])
  trained = [None] * len(setups)
  if p["epochs"] > 0:
    runs = [_sweep(cfg, {"seed": p["seeds"]}) for cfg in cfgs]
    trained = layer_norms(setups, [_stack([v.params for v in vs]) for vs in runs],
                          p["batch"])
  out = {}
  for i, name in enumerate(p["configs"]):
    g = at_init[i]
    r = {"rho": _ratios(g["delta"]), "weight_ratio": _ratios(g["manual"]),
         "last_weight_grad": g["manual"][:, -1].tolist(),
         "max_rel_diff": float(np.max(g["diff"] / np.maximum(g["autodiff"], 1e-300))),
         "trained_rho": None, "test": None}
    if trained[i] is not None:
      x, y = _test_split(setups[i])
      r["trained_rho"] = _ratios(trained[i]["delta"])
      r["status"] = [v.status for v in runs[i]]
      r["test"] = [on_test(v.model, v.params, x, y) for v in runs[i]]
    out[name] = r
  return out


# --- part 2: clipping -------------------------------------------------------------

def _clip_row(vs, x, y, **key) -> dict:
  tests = [on_test(v.model, v.params, x, y) if v.status != "diverged"
           else {"accuracy": None, "constant": None, "loss": None} for v in vs]
  return {**key, "status": [v.status for v in vs],
          "epochs_run": [len(v.history) for v in vs],
          "train_loss": [v.history[-1]["train_loss"] if v.history else None
                         for v in vs],
          "val_accuracy": [_val_accuracy(v) for v in vs],
          **{k: [t[k] for t in tests] for k in ("accuracy", "constant", "loss")}}


def _clipping(p: dict) -> dict:
  sgd = ['optimizer.name="sgd"', f"train.epochs={p['clip_epochs']}"]
  cfg = _mlp_config(p, EXPLODING, sgd)
  x, y = _test_split(Setup(cfg))
  vs = _sweep(cfg, {"optimizer.learning_rate": p["clip_lrs"],
                    "optimizer.clip_norm": p["clip_norms"], "seed": p["seeds"]})
  rows = []
  for lr in p["clip_lrs"]:
    for clip in p["clip_norms"]:
      mine = [v for v in vs if v.assignment["optimizer.learning_rate"] == lr
              and v.assignment["optimizer.clip_norm"] == clip]
      rows.append(_clip_row(mine, x, y, config=EXPLODING, lr=lr, clip_norm=clip))
  out = {"grid": rows, "reference": None}
  if p["clip_reference"]:
    ref = _mlp_config(p, REFERENCE, sgd + [f"optimizer.learning_rate={p['clip_lr']}"])
    out["reference"] = _clip_row(_sweep(ref, {"seed": p["seeds"]}), x, y,
                                 config=REFERENCE, lr=p["clip_lr"], clip_norm=0.0)
  return out


# --- part 3: through time ------------------------------------------------------------

def cells(p: dict) -> list:
  """``(label, kind, update_bias)`` of every recurrent net the study trains
  (``update_bias`` None: the cell has no update gate)."""
  return [("tanh RNN", "rnn", None)] + [
      (f"GRU, b_u = {b:g}", "gru", float(b)) for b in p["gru_biases"]]


def _recurrent(p: dict) -> dict:
  out = {}
  for label, kind, bias in cells(p):
    cfg = config_lib.load(None, [
        f'model.kind="{kind}"', f'data.name="{p["rnn_data"]}"',
        f"seed={p['seeds'][0]}", f"model.{kind}.hidden={p['rnn_hidden']}",
        f"data.validation={VALIDATION}", 'run.progress="never"',
        f"train.epochs={max(p['rnn_epochs'], 1)}",
        *([f"model.{kind}.update_bias={bias}"] if bias is not None else [])])
    setup = Setup(cfg)
    xb = jnp.asarray(setup.ds.x_train[:p["rnn_batch"]])
    yb = jnp.asarray(setup.ds.y_train[:p["rnn_batch"]])
    norms_of = jax.jit(lambda params: hidden_grad_norms(
        setup.model, setup.loss, params, xb, yb))

    def reach(params):
      n = np.asarray(norms_of(params), np.float64)
      return (n / n[-1]).tolist() if n[-1] > 0 else None

    init = [reach(Setup(config_lib.from_dict({**cfg, "seed": s}), ds=setup.ds)
                  .init_state()[0]) for s in p["seeds"]]
    r = {"kind": kind, "update_bias": bias, "init": init, "rates": []}
    if p["rnn_epochs"] > 0:
      x, y = _test_split(setup)
      vs = _sweep(cfg, {"optimizer.learning_rate": p["rnn_lrs"], "seed": p["seeds"]})
      for lr in p["rnn_lrs"]:
        mine = [v for v in vs if v.assignment["optimizer.learning_rate"] == lr]
        trained = [reach(v.params) if v.status != "diverged" else None for v in mine]
        r["rates"].append({
            "lr": lr, "status": [v.status for v in mine],
            "val_accuracy": [_val_accuracy(v) for v in mine],
            "first_over_last": [t[0] if t else None for t in trained],
            "accuracy": [on_test(v.model, v.params, x, y)["accuracy"] for v in mine]})
    out[label] = r
  return out


# --- the study -------------------------------------------------------------------

def measure(p: dict) -> dict:
  """Every number of the three parts (see the module docstring)."""
  layers = _per_layer(p)
  return {"per_layer": layers,
          "max_rel_diff_manual_autodiff": max(r["max_rel_diff"] for r in layers.values()),
          "clipping": _clipping(p) if p["clip_epochs"] > 0 else None,
          "recurrent": _recurrent(p)}


def _check(p: dict) -> None:
  for n in p["configs"]:
    _split(n)
  if not p["seeds"]:
    raise ConfigError("study parameter 'seeds' is empty; expected at least one seed")
  if p["clip_epochs"] > 0 and (p["clip_lr"] not in p["clip_lrs"]
                               or p["clip_norm"] not in p["clip_norms"]
                               or 0.0 not in p["clip_norms"]):
    raise ConfigError(
        f"study parameters clip_lr = {p['clip_lr']} and clip_norm = "
        f"{p['clip_norm']} must be in clip_lrs {p['clip_lrs']} and clip_norms "
        f"{p['clip_norms']}, and clip_norms must hold 0 (no clipping)")


def _run(out: str, p: dict) -> dict:
  _check(p)
  m = measure(p)
  claims = decide(m, p)
  figures, titles = show.figures(out, p, m, claims)
  return {**m, "claims": claims, "figure_titles": titles,
          "readme": {"title": "vanishing-exploding: the error shrinks or grows "
                              "by one factor per layer, and per time step",
                     "measured": show.measured(p, m), "figures": figures,
                     "table": show.tables(p, m)}}


STUDY = register(Study(
    name="vanishing-exploding",
    claim=CLAIM,
    run=_run,
    defaults={"configs": CONFIGS, "depth": 15, "width": 32, "data": "digits",
              "batch": 256, "epochs": 3, "lr": 0.001, "seeds": [0, 1, 2],
              "clip_lrs": [0.01, 0.1, 1.0, 10.0], "clip_norms": [0.0, 1.0, 10.0],
              "clip_lr": 0.1, "clip_norm": 1.0, "clip_epochs": 10,
              "clip_reference": True, "rnn_data": "mnist1d", "rnn_hidden": 32,
              "rnn_batch": 256, "rnn_epochs": 20,
              "rnn_lrs": [0.0003, 0.001, 0.003, 0.01],
              "gru_biases": [0.0, 2.0]},
    # --quick: every net at init, one clipping epoch; no recurrent training
    quick={"seeds": [0], "epochs": 0, "clip_epochs": 1, "clip_lrs": [0.1],
           "clip_norms": [0.0, 1.0], "clip_reference": False, "rnn_epochs": 0,
           "rnn_lrs": [0.01]},
))
