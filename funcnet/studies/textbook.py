"""Study ``textbook``: the article's numpy network, funcnet manual and autodiff
take the same steps.

On XOR, from one set of initial weights (funcnet's ``mlp`` init, converted
to numpy), full-batch gradient descent ``w := w - eta dC/dw`` runs for
``iterations`` steps three ways, in float64:

  numpy     :class:`funcnet.studies.textbook_numpy.SimpleNeuralNetwork`
  manual    ``funcnet.backprop.value_and_grad``: the hand-written backprop
  autodiff  ``funcnet.autodiff.value_and_grad``: ``jax.grad``

the last two stepped by ``funcnet.optimizers.sgd`` as ``train.fit`` steps
them with ``batch_size = 4``, the whole data set. After every step the
params of the three are compared (largest ``|w_numpy - w_funcnet|`` over
all weights).

Twice: with ``bce``, the loss whose output error is the article's
``dz2 = a2 - y``; and with ``mse`` (sigmoid output), where the numpy net
runs the chain rule through the output sigmoid, ``dz2 = (a2 - y) a2 (1 - a2)``,
and, as a control, the article's ``a2 - y`` unchanged, which is not the
gradient of ``mse`` and drifts away from funcnet's run.
"""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnet import autodiff, backprop, data, optimizers
from funcnet.errors import ConfigError
from funcnet.models import mlp
from funcnet.studies import claims as claims_lib, report
from funcnet.studies.registry import Study, register
from funcnet.studies.textbook_numpy import LOSSES, PARAMS, SimpleNeuralNetwork

CLAIM = ("Whether the article's numpy network, funcnet's hand-written "
         "backprop and jax.grad take the same gradient-descent steps on XOR, "
         "and whether dz2 = a2 - y is the gradient of bce or of mse.")

TOLERANCE = 1e-10
"""The largest param difference the claim allows, after any step (float64)."""

OFF = 0.5
"""The smallest relative difference ``||g_textbook - g_mse|| / ||g_mse||`` at
which ``dz2 = a2 - y`` counts as not the mse gradient (rounding is ~1e-16)."""


LEARN = 1000
"""Steps after which the XOR clause is tested (2000 in the full run)."""


def decide(m: dict, p: dict) -> list:
  """The claim's clauses from the measured numbers ``m`` (the study's
  results: ``bce``/``mse`` ``max_param_diff``, ``mse.initial_gradient``,
  ``xor_correct``); a pure function, so a test can feed it perturbed ones."""
  b, e = m["bce"]["max_param_diff"], m["mse"]["max_param_diff"]
  g = m["mse"]["initial_gradient"]
  n = m["bce"]["iterations_compared"]
  bce = max(b["numpy_vs_manual"], b["numpy_vs_autodiff"], b["manual_vs_autodiff"])
  mse = max(e["numpy_vs_manual"], e["numpy_vs_autodiff"], e["manual_vs_autodiff"])
  return [
      claims_lib.clause(
          f"with bce, numpy, manual backprop and jax.grad take the same steps: "
          f"max weight difference after any step <= {TOLERANCE:g}",
          bce <= TOLERANCE, f"{bce:.2g} over {n} steps"),
      claims_lib.clause(
          f"with mse and the chain-rule delta (a2 - y) a2 (1 - a2), the same: "
          f"max weight difference <= {TOLERANCE:g}",
          mse <= TOLERANCE and g["mse_delta_vs_manual"] <= TOLERANCE,
          f"{mse:.2g} over {n} steps; gradient at init {g['mse_delta_vs_manual']:.2g}"),
      claims_lib.clause(
          f"dz2 = a2 - y is not the mse gradient: relative difference at init "
          f">= {OFF:g}",
          g["textbook_delta_vs_manual_rel"] >= OFF,
          f"relative {g['textbook_delta_vs_manual_rel']:.3g}; its run drifts "
          f"{e['textbook_delta_vs_manual']:.3g} from funcnet's in the weights"),
      claims_lib.clause(
          f"the bce run learns XOR in {LEARN} steps or more: 4 of 4 points right",
          m["xor_correct"] == 4 if n >= LEARN else None,
          f"{m['xor_correct']}/4 after {n} steps" + (
              "" if n >= LEARN else f" (--quick: fewer than {LEARN})")),
  ]




@contextlib.contextmanager
def float64():
  """64-bit JAX inside the block, the previous setting restored after it.

  ``jax.config.update`` rather than ``jax.enable_x64``: the context manager
  is thread-local, and the flag must hold in every thread that traces.
  """
  before = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", before)


def _flat(params) -> np.ndarray:
  """All weights as one float64 vector, in the order W1, b1, W2, b2.

  ``params`` is funcnet's ``[{"W", "b"}, {"W", "b"}]`` or the numpy net's
  dict; the copy matters for funcnet's, whose buffers ``fit`` donates to the
  next epoch.
  """
  if isinstance(params, dict):
    leaves = [params[name] for name in PARAMS]
  else:
    leaves = [layer[k] for layer in params for k in ("W", "b")]
  return np.concatenate([np.asarray(v, np.float64).ravel() for v in leaves])


def _numpy_run(init: dict, X, Y, loss: str, delta: str, iterations: int, lr: float):
  """``(losses (T,), params (T, P), net)``: the loss before each step, the
  weights after it and the trained net; ``delta`` names the backward pass
  (``"bce"``: the article's ``a2 - y``, ``"mse"``:
  :meth:`SimpleNeuralNetwork.backward_mse`)."""
  net = SimpleNeuralNetwork(**init)
  backward = net.backward if delta == "bce" else net.backward_mse
  value = LOSSES[loss]
  costs, traj = [], []
  for _ in range(iterations):
    costs.append(value(net.forward(X), Y))
    backward(X, Y)
    net.gradient_descent(lr)
    traj.append(_flat(net.params()))
  return np.array(costs), np.stack(traj), net


WAYS = {"manual": backprop, "autodiff": autodiff}
"""funcnet's two gradients: the hand-written backprop and ``jax.grad``."""


def _funcnet_runs(model, params, X, Y, iterations: int, lr: float):
  """The same as :func:`_numpy_run` in funcnet, for both losses and both
  ways: ``{(loss, way): (losses (T,), params (T, P))}``, and the mse
  gradient at ``params`` by each way, ``{way: (P,)}``.

  A run is ``iterations`` steps of ``sgd(lr)`` on the whole batch in a
  ``lax.scan``, each the step ``train.fit`` takes (``value_and_grad``, then
  ``optimizer.update`` and ``optax.apply_updates``); the scan keeps every
  step's params, which ``fit`` hands out only once per epoch, through a
  callback that costs about a millisecond each. All of it is one jitted
  call: on a CPU one program compiles faster than six.
  """
  x, y = jnp.asarray(X), jnp.asarray(Y)
  opt = optimizers.sgd(lr)

  def run(vg, params):
    def step(carry, _):
      params, state = carry
      c, g = vg(params, x, y)
      updates, state = opt.update(g, state, params)
      params = optax.apply_updates(params, updates)
      return (params, state), (c, params)
    _, (costs, traj) = jax.lax.scan(step, (params, opt.init(params)), length=iterations)
    return costs, traj

  @jax.jit
  def all_runs(params):
    runs = {f"{loss}/{way}": run(m.value_and_grad(model, loss), params)
            for loss in ("bce", "mse") for way, m in WAYS.items()}
    grads = {way: m.value_and_grad(model, "mse")(params, x, y)[1]
             for way, m in WAYS.items()}
    return runs, grads

  runs, grads = jax.device_get(all_runs(params))
  # traj: per layer {"W": (T, n_in, n_out), "b": (T, n_out)} -> (T, P).
  out = {}
  for key, (costs, traj) in runs.items():
    flat = [layer[k].reshape(iterations, -1) for layer in traj for k in ("W", "b")]
    out[tuple(key.split("/"))] = (np.asarray(costs, np.float64),
                                  np.concatenate(flat, axis=1))
  return out, {way: _flat(g) for way, g in grads.items()}


def _max_diff(a, b) -> np.ndarray:
  """``(T,)``: ``max |a_t - b_t|`` over the weights, per step."""
  return np.max(np.abs(a - b), axis=1)


def _initial_gradients(init: dict, X, Y, funcnet_grads: dict) -> dict:
  """At the initial weights: the article's ``dz2 = a2 - y`` and the mse
  delta, each against funcnet's mse gradient (manual and autodiff)."""
  g_manual, g_auto = funcnet_grads["manual"], funcnet_grads["autodiff"]
  net = SimpleNeuralNetwork(**init)
  net.forward(X)
  g_textbook = _flat(net.backward(X, Y))
  g_mse = _flat(net.backward_mse(X, Y))
  norm = float(np.linalg.norm(g_manual))
  return {
      "mse_grad_norm": norm,
      "textbook_delta_vs_manual": float(np.max(np.abs(g_textbook - g_manual))),
      "textbook_delta_vs_manual_rel": float(np.linalg.norm(g_textbook - g_manual) / norm),
      "mse_delta_vs_manual": float(np.max(np.abs(g_mse - g_manual))),
      "mse_delta_vs_autodiff": float(np.max(np.abs(g_mse - g_auto))),
      "manual_vs_autodiff": float(np.max(np.abs(g_manual - g_auto))),
  }


def _to_numpy(params) -> dict:
  return {"W1": np.asarray(params[0]["W"]), "b1": np.asarray(params[0]["b"]),
          "W2": np.asarray(params[1]["W"]), "b2": np.asarray(params[1]["b"])}


def measure(p: dict) -> dict:
  """The study's numbers (see the module docstring) and, under ``"_runs"``,
  ``"_diffs"`` and ``"_grads0"``, the curves its figures and table read."""
  n, lr, seed = p["iterations"], p["learning_rate"], p["seed"]
  for key in ("iterations", "hidden"):
    if p[key] < 1:
      raise ConfigError(f"study parameter {key!r} = {p[key]}; expected an integer >= 1")
  if not lr > 0:
    raise ConfigError(f"study parameter 'learning_rate' = {lr}; expected a value > 0")
  with float64():
    model = mlp([2, p["hidden"], 1], activation="sigmoid",
                output_activation="sigmoid", init="normal")
    params = model.init(jax.random.key(seed), jnp.float64)
    ds = data.load("xor", standardize=False)
    X = np.asarray(ds.x_train, np.float64)
    Y = np.asarray(ds.y_train, np.float64)[:, None]       # (4, 1), one output unit
    init = _to_numpy(params)

    # (loss, way) -> (losses (T,), params (T, P))
    runs, funcnet_grads = _funcnet_runs(model, params, X, Y, n, lr)
    for loss in ("bce", "mse"):
      costs, traj, net = _numpy_run(init, X, Y, loss, loss, n, lr)
      runs[loss, "numpy"] = costs, traj
      if loss == "bce":
        xor_correct = int(np.sum((net.forward(X) > 0.5) == (Y > 0.5)))
    # The control: the article's backward pass on the mse loss.
    runs["mse", "textbook"] = _numpy_run(init, X, Y, "mse", "bce", n, lr)[:2]
    grads0 = _initial_gradients(init, X, Y, funcnet_grads)

  pairs = {"numpy_vs_manual": ("numpy", "manual"),
           "numpy_vs_autodiff": ("numpy", "autodiff"),
           "manual_vs_autodiff": ("manual", "autodiff")}
  diffs = {loss: {k: _max_diff(runs[loss, a][1], runs[loss, b][1])
                  for k, (a, b) in pairs.items()}
           for loss in ("bce", "mse")}
  diffs["mse"]["textbook_delta_vs_manual"] = _max_diff(runs["mse", "textbook"][1],
                                                       runs["mse", "manual"][1])
  ways = {"bce": ("numpy", "manual", "autodiff"),
          "mse": ("numpy", "manual", "autodiff", "textbook")}
  results = {
      loss: {"iterations_compared": n,
             "initial_loss": {w: float(runs[loss, w][0][0]) for w in ways[loss]},
             "final_loss": {w: float(runs[loss, w][0][-1]) for w in ways[loss]},
             "max_param_diff": {k: float(np.max(d)) for k, d in diffs[loss].items()}}
      for loss in ("bce", "mse")}
  results["mse"]["initial_gradient"] = grads0
  results["tolerance"] = TOLERANCE
  results["xor_correct"] = xor_correct
  results["_runs"], results["_diffs"], results["_grads0"] = runs, diffs, grads0
  return results


def _run(out: str, p: dict) -> dict:
  results = measure(p)
  runs, diffs, grads0 = (results.pop(k) for k in ("_runs", "_diffs", "_grads0"))
  claims = decide(results, p)
  n = p["iterations"]
  titles = {"loss.png": claims_lib.title(
                claims[0], "XOR, float64, bce: numpy, manual backprop and autodiff "
                "trace one loss curve"),
            "param_diff.png": claims_lib.title(
                claims[2], f"weights agree to <= {TOLERANCE:g}, unless dz2 = "
                "a2 - y meets mse")}
  if claims[1]["holds"] is False:
    titles["param_diff.png"] = claims_lib.title(claims[1], "mse with the chain-rule delta agrees")
  figures = [_plot_losses(out, runs, n, titles["loss.png"]),
             _plot_diffs(out, diffs, n, titles["param_diff.png"])]
  table = _table(runs, diffs, n, grads0)
  results.update(claims=claims, figure_titles=titles,
                 readme={"title": "textbook: numpy, manual backprop and "
                                  "jax.grad take the same steps",
                         "measured": _measured(p, results), "figures": figures,
                         "table": table})
  return results


# --- report -------------------------------------------------------------------

_STYLE = {"numpy": dict(color="C0", lw=3.0, alpha=0.45),
          "manual": dict(color="C1", lw=1.5, ls="--"),
          "autodiff": dict(color="C2", lw=1.5, ls=":"),
          "textbook": dict(color="C3", lw=1.5)}

_LABEL = {"numpy": "numpy SimpleNeuralNetwork", "manual": "funcnet manual backprop",
          "autodiff": "funcnet autodiff (jax.grad)",
          "textbook": "numpy with dz2 = a2 - y (not the mse gradient)"}


def _plot_losses(out, runs, n, title) -> str:
  fig, axes = report.plt.subplots(1, 2, figsize=(10, 4))
  steps = np.arange(n)
  for ax, loss, title in [
      (axes[0], "bce", "bce: dz2 = a2 - y"),
      (axes[1], "mse", "mse: numpy uses dz2 = (a2 - y) a2 (1 - a2)")]:
    for way in ("numpy", "manual", "autodiff", "textbook"):
      if (loss, way) in runs:
        ax.plot(steps, runs[loss, way][0], label=_LABEL[way], **_STYLE[way])
    ax.set(yscale="log", xlabel="iteration (full-batch step)",
           ylabel=f"training loss C ({loss})", title=title)
    ax.legend(fontsize=8)
  fig.suptitle(title, fontsize=10)
  return report.save(fig, out, "loss.png")


def _plot_diffs(out, diffs, n, title) -> str:
  fig, ax = report.plt.subplots(figsize=(8, 4.5))
  steps = np.arange(1, n + 1)
  lines = [("bce", "numpy_vs_manual", "bce: numpy vs manual", dict(color="C1")),
           ("bce", "numpy_vs_autodiff", "bce: numpy vs autodiff", dict(color="C2")),
           ("mse", "numpy_vs_manual", "mse: numpy (mse delta) vs manual",
            dict(color="C1", ls="--")),
           ("mse", "numpy_vs_autodiff", "mse: numpy (mse delta) vs autodiff",
            dict(color="C2", ls="--")),
           ("mse", "textbook_delta_vs_manual", "mse: numpy (dz2 = a2 - y) vs manual",
            dict(color="C3"))]
  for loss, key, label, style in lines:
    d = diffs[loss][key]
    # Steps where two runs agree bit for bit have no place on a log axis.
    ax.plot(steps, np.where(d > 0, d, np.nan), label=label, lw=1.2, **style)
  ax.axhline(TOLERANCE, color="k", lw=0.8, ls=":", label=f"tolerance {TOLERANCE:g}")
  ax.set(yscale="log", xlabel="iteration", ylabel="max |Δ param| after the step",
         title=title)
  ax.title.set_fontsize(10)
  ax.legend(fontsize=8)
  return report.save(fig, out, "param_diff.png")


def _table(runs, diffs, n, grads0) -> str:
  marks = [t for t in (1, 10, 100, 1000, n) if t <= n]
  marks = sorted(set(marks))
  rows = []
  for loss in ("bce", "mse"):
    for t in marks:
      rows.append([loss, t, runs[loss, "numpy"][0][t - 1], runs[loss, "manual"][0][t - 1],
                   runs[loss, "autodiff"][0][t - 1],
                   diffs[loss]["numpy_vs_manual"][t - 1],
                   diffs[loss]["numpy_vs_autodiff"][t - 1]])
  steps = report.markdown_table(
      ["loss", "iteration", "C numpy", "C manual", "C autodiff",
       "max abs Δw, numpy-manual", "max abs Δw, numpy-autodiff"], rows, fmt="{:.6g}")
  control = report.markdown_table(
      ["iteration", "C mse, numpy dz2 = a2 - y", "C mse, funcnet",
       "max abs Δw vs funcnet manual"],
      [[t, runs["mse", "textbook"][0][t - 1], runs["mse", "manual"][0][t - 1],
        diffs["mse"]["textbook_delta_vs_manual"][t - 1]] for t in marks],
      fmt="{:.6g}")
  grad = report.markdown_table(
      ["mse gradient at the initial weights", "max abs Δ vs funcnet manual"],
      [["numpy, dz2 = a2 - y (the article's)", grads0["textbook_delta_vs_manual"]],
       ["numpy, dz2 = (a2 - y) a2 (1 - a2)", grads0["mse_delta_vs_manual"]],
       ["funcnet autodiff", grads0["manual_vs_autodiff"]],
       ["(norm of the mse gradient)", grads0["mse_grad_norm"]]], fmt="{:.3g}")
  return "\n\n".join([
      "Loss before step t and the largest weight difference after it:", steps,
      "The control: the article's backward pass on the mse loss:", control,
      grad])


def _measured(p, results) -> str:
  b, m = results["bce"], results["mse"]
  g = m["initial_gradient"]
  measured = (
      f"{p['iterations']} full-batch steps on XOR, learning rate "
      f"{p['learning_rate']:g}, {p['hidden']} hidden units, float64. With bce, "
      f"the largest weight difference after any step was "
      f"{b['max_param_diff']['numpy_vs_manual']:.2g} (numpy vs manual) and "
      f"{b['max_param_diff']['numpy_vs_autodiff']:.2g} (numpy vs autodiff); the "
      f"loss fell from {b['initial_loss']['numpy']:.4f} to "
      f"{b['final_loss']['numpy']:.6f} in all three, and the numpy net classifies "
      f"{results['xor_correct']}/4 points. `dz2 = a2 - y` is the output error of "
      f"sigmoid + binary cross-entropy: `dC/da2 = (a2 - y) / (a2 (1 - a2))` "
      f"cancels `sigmoid'(z2) = a2 (1 - a2)`. With mse, nothing cancels: at the "
      f"initial weights the article's delta is off funcnet's mse gradient by "
      f"{g['textbook_delta_vs_manual']:.3g} (relative {g['textbook_delta_vs_manual_rel']:.2f}) "
      f"and its run drifts up to {m['max_param_diff']['textbook_delta_vs_manual']:.3g} "
      f"away in the weights (it still trains, to an mse of "
      f"{m['final_loss']['textbook']:.2g} against {m['final_loss']['manual']:.2g}: "
      f"it descends bce, whose minimum is also a2 = y), "
      f"while the chain-rule delta `(a2 - y) a2 (1 - a2)` matches to "
      f"{g['mse_delta_vs_manual']:.2g} and its run stays within "
      f"{max(m['max_param_diff'][k] for k in ('numpy_vs_manual', 'numpy_vs_autodiff')):.2g}.")
  return measured


STUDY = register(Study(
    name="textbook",
    claim=CLAIM,
    run=_run,
    defaults={"iterations": 2000, "hidden": 3, "learning_rate": 1.0, "seed": 0},
    quick={"iterations": 60},
))
