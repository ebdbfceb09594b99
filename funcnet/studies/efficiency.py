"""Study ``efficiency``: smaller and cheaper models on MNIST-1D, and what
they cost in accuracy.

Runs, each an ordinary run folder under ``<out>/runs`` (trained by the
library, :func:`funcnet.experiment.train_and_evaluate`):

  teacher            the CNN of ``configs/mnist1d_cnn.toml``
  <student>          each student (``students``: the MLP of
                     ``configs/mnist1d_mlp.toml``, the small CNN of
                     ``configs/mnist1d_cnn_small.toml``) from labels alone
  <student>-distilled  the same student distilled from the teacher (its
                     ``*_distilled.toml``: Hinton et al.'s soft targets)

then, of the teacher and each distilled student, its int8 quantization
(:mod:`funcnet.quantize`: per-output-channel weight codes, dequantised at
the matmul) and its pruned versions (:func:`funcnet.experiment.prune.
prune_run`: each of ``prune_methods``, ``global`` / ``layer`` (one-shot,
over all weights or per layer) or ``gradual`` (global, Zhu & Gupta's cubic
over half the fine-tuning epochs), at each of ``sparsities``, fine-tuned
``prune_epochs``).

Each model is measured the same way (:func:`_measure`), on the whole test
split:

  accuracy       the run's own evaluation (``train.make_evaluate``)
  parameters     all of them, and the nonzero ones (what pruning removes)
  bytes          the stored arrays as an ``.npz`` (int8 codes and their
                 scales for int8), the same compressed (zeros and
                 repeated codes shrink: what pruning saves on disk), and
                 the arrays' own bytes (no container: the .npz's headers
                 outweigh a tiny model's int8 savings)
  FLOPs          of one example's forward pass, counted from the layers
                 (:func:`funcnet.train.compute.count_forward`); the dense
                 count for a pruned model (dense kernels skip no zero) and
                 the float model's for int8 (the same products, on int8)
  latency        of the jitted forward pass over ``latency_batch`` test
                 examples, the best of ``repeats`` (after a warm-up call),
                 per example

The claim, as clauses decided by the numbers (:func:`decide`; ``claims``
in results.json): each distilled student beats its from-scratch twin; int8
keeps the accuracy within ``int8_points`` and its arrays (codes and
scales) are at least 3.5x smaller than the float ones; the teacher pruned
(global) to ``headline_sparsity`` is within ``prune_points`` of dense
after fine-tuning; at the highest sparsity gradual pruning keeps at least
one-shot global pruning's accuracy.
"""

import io
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import config as config_lib, quantize, tasks, train
from funcnet.errors import ConfigError
from funcnet.experiment import build_dataset, train_and_evaluate
from funcnet.experiment import prune as prune_lib
from funcnet.run import rundir
from funcnet.studies import claims, report
from funcnet.studies.registry import Study, register
from funcnet.train import compute

CLAIM = ("A distilled student beats its from-scratch twin of the same size; "
         "int8 weights keep the accuracy within half a point at a quarter of "
         "the bytes; pruning to 80% keeps it within a point after "
         "fine-tuning.")

# The repository's configs folder (beside the package).
CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "configs")

# --prune method -> (scope, schedule) of funcnet.experiment.prune.
METHODS = {"global": ("global", "oneshot"), "layer": ("layer", "oneshot"),
           "gradual": ("global", "gradual")}


def _quiet(*args, **kwargs) -> None:
  del args, kwargs


def _config(p: dict, name: str, family: str, extra=()) -> dict:
  path = os.path.join(CONFIGS, name)
  if not os.path.exists(path):
    raise ConfigError(f"study config {name!r}: no such file in {CONFIGS}")
  sets = [f"seed={p['seed']}", "run.plots=false", 'run.progress="never"',
          *p["sets"].get(family, []), *extra]
  if p["epochs"]:
    sets.append(f"train.epochs={p['epochs']}")
  return config_lib.load(path, sets)


def _same(saved: dict, cfg: dict, defaults: dict) -> bool:
  """Whether a saved run's config agrees with ``cfg`` in every key it holds,
  its reporting (``run``) and its teacher's folder aside; a key newer than
  the saved run must be at its default (what the run did without it)."""
  for table, want in cfg.items():
    if table == "run":
      continue
    value = saved.get(table, defaults.get(table))
    if isinstance(want, dict) and isinstance(value, dict):
      value = {**defaults.get(table, {}), **value}
      if table == "distill":
        value = {**value, "teacher": bool(value.get("teacher"))}
        want = {**want, "teacher": bool(want.get("teacher"))}
    if value != want:
      return False
  return True


def _train(out: str, p: dict, name: str, config: str, family: str,
           extra=()) -> str:
  """The run folder ``<out>/runs/<name>`` trained from ``config``; a
  finished run already there with the same config is kept (a study run
  again after an interruption, or seeded with runs trained before)."""
  run = os.path.join(out, "runs", name)
  cfg = _config(p, config, family, extra)
  if os.path.exists(os.path.join(run, "summary.json")):
    with open(os.path.join(run, "config.json")) as f:
      saved = json.load(f)
    if (rundir.read_summary(run).get("status") == "finished"
        and _same(saved, json.loads(config_lib.to_json(cfg)),
                  json.loads(config_lib.to_json(config_lib.load(None))))):
      return run
  train_and_evaluate(cfg, run, progress="never", log=_quiet)
  return run


def _pruned_as(run: str, sparsity, p: dict, scope: str, sched: str) -> bool:
  """Whether ``run`` holds a pruned run made as asked (kept, as
  :func:`_train` keeps a finished run)."""
  path = os.path.join(run, prune_lib.REPORT)
  if not os.path.exists(path):
    return False
  with open(path) as f:
    r = json.load(f)
  return (r.get("target_sparsity"), r.get("epochs"), r.get("learning_rate"),
          r.get("scope"), r.get("schedule")) == (
              sparsity, p["prune_epochs"], p["prune_lr"], scope, sched)


def _npz_bytes(arrays) -> tuple:
  """``(npz bytes, compressed npz bytes)`` of a list of arrays."""
  sizes = []
  for save in (np.savez, np.savez_compressed):
    buf = io.BytesIO()
    save(buf, *[np.asarray(a) for a in arrays])
    sizes.append(buf.getbuffer().nbytes)
  return tuple(sizes)


def _latency(logits, params, x, repeats: int) -> float:
  """Seconds per example of the jitted ``logits(params, x)``: the best of
  ``repeats`` calls after a warm-up (compile) call."""
  f = jax.jit(logits)
  jax.block_until_ready(f(params, x))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(f(params, x))
    best = min(best, time.perf_counter() - t0)
  return best / x.shape[0]


def _measure(trained, ds, p: dict, int8: bool = False) -> dict:
  """The accuracy, sizes, FLOPs and latency of a trained run's params (or
  of their int8 quantization), on the test split."""
  cfg, model, params = trained.cfg, trained.model, trained.params
  dtype = jnp.dtype(cfg["train"]["dtype"])
  x, y = train.as_arrays(ds.x_test, ds.y_test, dtype)
  leaves = [np.asarray(a) for a in jax.tree_util.tree_leaves(
      jax.device_get(params))]
  flops = compute.count_forward(model, params, jax.ShapeDtypeStruct(
      (1, *x.shape[1:]), x.dtype)).total
  if int8:
    params = quantize.quantize(params, 8)
    model = quantize.model_on(model, dtype)
  stored = jax.tree_util.tree_leaves(params)  # int8: codes and scales
  acc = train.make_evaluate(model, cfg["train"]["loss"], ds.task)(
      params, x, y)
  head, _ = tasks.headline(ds.task)
  n_bytes, zipped = _npz_bytes(stored)
  return {"accuracy": float(acc[head[len("test_"):]]),
          "params": int(sum(a.size for a in leaves)),
          "nonzero_params": int(sum(np.count_nonzero(a) for a in leaves)),
          "bytes": int(n_bytes), "compressed_bytes": int(zipped),
          "array_bytes": int(sum(np.asarray(a).nbytes for a in stored)),
          "flops": float(flops),
          "latency_us": 1e6 * _latency(model.logits, params,
                                       x[:p["latency_batch"]], p["repeats"])}


def _family(out: str, p: dict, family: str, ds_of) -> dict:
  """Every point of one family: trained, quantized, pruned, measured."""
  points = {}
  if family == "teacher":
    runs = {"teacher": _train(out, p, "teacher", p["teacher_config"],
                              family)}
    compressed = "teacher"
  else:
    scratch, distilled = p["students"][family]
    teacher = os.path.abspath(os.path.join(out, "runs", "teacher"))
    runs = {family: _train(out, p, family, scratch, family),
            f"{family}-distilled": _train(
                out, p, f"{family}-distilled", distilled, family,
                [f'distill.teacher="{teacher}"'])}
    compressed = f"{family}-distilled"
  for name, run in runs.items():
    trained = rundir.load_trained(run)
    points[name] = _measure(trained, ds_of(trained), p)
  base = runs[compressed]
  trained = rundir.load_trained(base)
  points[f"{compressed}-int8"] = _measure(trained, ds_of(trained), p,
                                          int8=True)
  for method in p["prune_methods"]:
    scope, sched = METHODS[method]
    for s in p["sparsities"]:
      name = f"{compressed}-pruned{round(100 * s)}-{method}"
      pruned = os.path.join(out, "runs", name)
      if not _pruned_as(pruned, s, p, scope, sched):
        prune_lib.prune_run(base, s, p["prune_epochs"], p["prune_lr"],
                            pruned, log=_quiet, scope=scope, sched=sched)
      trained = rundir.load_trained(pruned)
      points[name] = {**_measure(trained, ds_of(trained), p),
                      "sparsity": s, "method": method}
  for name, r in points.items():
    r.setdefault("family", family)
  return points


def _check(p: dict) -> None:
  bad = sorted(set(p["prune_methods"]) - set(METHODS))
  if bad:
    raise ConfigError(f"study parameter prune_methods has {bad}; expected "
                      f"some of {', '.join(METHODS)}")
  if p["headline_sparsity"] not in p["sparsities"]:
    raise ConfigError(f"study parameter headline_sparsity = "
                      f"{p['headline_sparsity']} is not in sparsities "
                      f"{p['sparsities']}; expected one of its values")
  for s in p["sparsities"]:
    prune_lib.magnitude.check_sparsity(s, "study parameter sparsities has")


def decide(points: dict, p: dict) -> list:
  """The claim as clauses (:mod:`funcnet.studies.claims`), each decided by
  the measured ``points`` (plain numbers: a test can perturb them)."""
  acc = {k: v["accuracy"] for k, v in points.items()}
  out = []
  for f in p["students"]:
    s, d = acc[f], acc[f"{f}-distilled"]
    out.append(claims.clause(
        f"the distilled {f} beats the same {f} trained from labels",
        d > s, f"{100 * d:.1f}% vs {100 * s:.1f}% ({100 * (d - s):+.1f} "
        "points)"))
  for base in ["teacher"] + [f"{f}-distilled" for f in p["students"]]:
    # the parameters' own bytes (the issue's "4x, +- scales"); the .npz's
    # ratio beside it (its per-array headers weigh on a small model)
    q, f = points[f"{base}-int8"], points[base]
    ratio = f["array_bytes"] / q["array_bytes"]
    delta = 100 * (q["accuracy"] - f["accuracy"])
    out.append(claims.clause(
        f"{base} with int8 weights is within {p['int8_points']:g} points of "
        "float with parameter arrays at least 3.5x smaller",
        abs(delta) <= p["int8_points"] + 1e-9 and ratio >= 3.5,
        f"{delta:+.2f} points, {ratio:.2f}x fewer bytes ({f['bytes'] / q['bytes']:.2f}x "
        "as .npz files)"))
  h = round(100 * p["headline_sparsity"])
  if "global" in p["prune_methods"]:
    d = 100 * (acc[f"teacher-pruned{h}-global"] - acc["teacher"])
    out.append(claims.clause(
        f"the teacher pruned to {h}% (global, fine-tuned) is within "
        f"{p['prune_points']:g} point of dense", d >= -p["prune_points"],
        f"{d:+.2f} points ({100 * acc[f'teacher-pruned{h}-global']:.1f}% vs "
        f"{100 * acc['teacher']:.1f}%)"))
  top = round(100 * max(p["sparsities"]))
  bases = ["teacher"] + [f"{f}-distilled" for f in p["students"]]
  if {"global", "gradual"} <= set(p["prune_methods"]):
    pairs = [(acc[f"{b}-pruned{top}-gradual"], acc[f"{b}-pruned{top}-global"])
             for b in bases]
    out.append(claims.clause(
        f"at {top}% sparsity gradual pruning keeps at least one-shot global "
        "pruning's accuracy, for every model",
        all(g >= o for g, o in pairs),
        ", ".join(f"{b} {100 * g:.1f}% vs {100 * o:.1f}%"
                  for b, (g, o) in zip(bases, pairs))))
  else:
    out.append(claims.clause(
        "at the highest sparsity gradual pruning keeps at least one-shot "
        "global pruning's accuracy, for every model", None,
        "prune_methods lacks global or gradual"))
  return out


def _plot_tradeoffs(out: str, p: dict, points: dict) -> str:
  """Accuracy against compressed bytes and against FLOPs: the float and
  int8 models labelled, the pruned ones (``^``) labelled at the headline
  sparsity; pruned models are left off the FLOPs panel (their dense
  FLOPs are the unpruned model's) and points far below the others off
  both (the sparsity figure has them)."""
  fig, axes = report.plt.subplots(1, 2, figsize=(12, 4.8))
  fams = list(dict.fromkeys(r["family"] for r in points.values()))
  head = f"-pruned{round(100 * p['headline_sparsity'])}-global"
  labelled = {n for n in points if "pruned" not in n or n.endswith(head)}
  bottom = min(points[n]["accuracy"] for n in labelled) - 0.03
  for ax, key, label in ((axes[0], "compressed_bytes",
                          "parameters on disk (compressed .npz bytes)"),
                         (axes[1], "flops", "FLOPs per example (forward)")):
    for name, r in points.items():
      if r["accuracy"] < bottom or (key == "flops" and "pruned" in name):
        continue
      ax.scatter(r[key], r["accuracy"], s=30,
                 color=f"C{fams.index(r['family'])}",
                 marker=("s" if name.endswith("int8") else
                         "^" if "pruned" in name else "o"))
      if name in labelled:
        ax.annotate(name.replace("-distilled", " dist").replace(head, " p80"),
                    (r[key], r["accuracy"]), fontsize=7,
                    xytext=(4, -10 if name.endswith("int8") else 2),
                    textcoords="offset points")
    ax.set(xscale="log", xlabel=label, ylabel="test accuracy",
           title=f"accuracy vs {label.split(' (')[0]}")
    ax.set_xlim(right=ax.get_xlim()[1] * 4)  # room for the labels
  axes[0].text(0.01, 0.01, "o float   s int8   ^ pruned (p80: "
               f"{p['headline_sparsity']:.0%}, global)",
               transform=axes[0].transAxes, fontsize=7)
  return report.save(fig, out, "accuracy_vs_size.png")


def _plot_sparsity(out: str, p: dict, points: dict, found: list) -> str:
  """Accuracy against sparsity, per family and pruning method (sparsity 0:
  the dense model)."""
  fig, ax = report.plt.subplots(figsize=(6, 4.2))
  bases = ["teacher"] + [f"{f}-distilled" for f in p["students"]]
  for i, base in enumerate(bases):
    for j, m in enumerate(p["prune_methods"]):
      xs = [0.0] + list(p["sparsities"])
      ys = [points[base]["accuracy"]] + [
          points[f"{base}-pruned{round(100 * s)}-{m}"]["accuracy"]
          for s in p["sparsities"]]
      ax.plot(xs, ys, color=f"C{i}", ls=("-", "--", ":")[j % 3], marker="o",
              ms=3, label=f"{base}, {m}")
  ax.set(xlabel="sparsity (fraction of weights removed)",
         ylabel="test accuracy", title=claims.title(
             found[-1], "gradual >= one-shot global at the top sparsity"))
  ax.legend(fontsize=6)
  return report.save(fig, out, "accuracy_vs_sparsity.png")


def _table(points: dict) -> str:
  rows = [[name, f"{100 * r['accuracy']:.1f}", r["params"],
           r["nonzero_params"], r["bytes"], r["compressed_bytes"],
           f"{r['flops']:.3g}", f"{r['latency_us']:.2f}"]
          for name, r in points.items()]
  return report.markdown_table(
      ["model", "test acc %", "params", "nonzero", "bytes (.npz)",
       "bytes (compressed)", "FLOPs/example", "latency us/example"], rows)


def _measured(p: dict, points: dict) -> str:
  acc = {k: v["accuracy"] for k, v in points.items()}
  epochs = ("each config its own epochs" if not p["epochs"]
            else f"{p['epochs']} epochs")
  rows = [f"{m}: " + ", ".join(
      f"{round(100 * s)}% {100 * acc[f'teacher-pruned{round(100 * s)}-{m}']:.1f}%"
      for s in p["sparsities"]) for m in p["prune_methods"]]
  return (f"MNIST-1D, seed {p['seed']}, {epochs}; pruning fine-tuned "
          f"{p['prune_epochs']} epochs with Adam at {p['prune_lr']:g}. The "
          f"teacher ({100 * acc['teacher']:.1f}% dense) pruned, "
          + "; ".join(rows) + ". Latency is the best of "
          f"{p['repeats']} jitted forward passes of {p['latency_batch']} "
          "examples on this machine (int8 dequantises at the matmul, so it "
          "is no faster on a CPU; a pruned model's dense kernels skip no "
          "zero).")


def _run(out: str, p: dict) -> dict:
  _check(p)
  cache = {}

  def ds_of(trained):  # the test split, standardised as each run was
    key = (trained.cfg["data"]["name"], None if trained.stats is None
           else tuple(np.ravel(trained.stats).tolist()))
    if key not in cache:
      cache[key] = build_dataset(trained.cfg, trained.stats)
    return cache[key]
  points = {}
  for family in ["teacher", *p["students"]]:
    points.update(_family(out, p, family, ds_of))
  found = decide(points, p)
  figures = [_plot_tradeoffs(out, p, points), _plot_sparsity(out, p, points, found)]
  return {"points": points, "claims": found,
          "readme": {"title": "efficiency: accuracy against size, FLOPs and "
                              "latency",
                     "measured": _measured(p, points), "figures": figures,
                     "table": _table(points)}}


STUDY = register(Study(
    name="efficiency",
    claim=CLAIM,
    run=_run,
    defaults={"seed": 0, "epochs": 0, "teacher_config": "mnist1d_cnn.toml",
              "students": {"mlp": ["mnist1d_mlp.toml",
                                   "mnist1d_mlp_distilled.toml"],
                           "cnn_small": ["mnist1d_cnn_small.toml",
                                         "mnist1d_cnn_small_distilled.toml"]},
              "sets": {}, "sparsities": [0.5, 0.8, 0.9],
              "prune_methods": ["global", "layer", "gradual"],
              "prune_epochs": 10, "prune_lr": 1e-3, "headline_sparsity": 0.8,
              "int8_points": 0.5, "prune_points": 1.0, "latency_batch": 1000,
              "repeats": 20},
    # --quick: the teacher and the MLP student only, tiny, one epoch
    quick={"epochs": 1, "prune_epochs": 2, "sparsities": [0.8],
           "students": {"mlp": ["mnist1d_mlp.toml",
                                "mnist1d_mlp_distilled.toml"]},
           "prune_methods": ["global"], "repeats": 2,
           "latency_batch": 100,
           "sets": {"teacher": ["model.cnn.channels=[8, 8, 8]",
                                "model.cnn.hidden=[16]"],
                    "mlp": ["model.mlp.hidden=[32]"]}},
))
