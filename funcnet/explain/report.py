"""Explaining chosen examples of a trained model, written to a folder: what
``funcnet explain`` does, callable from Python on any model.

  explain(model, params, x, y, indices, out, methods=..., stats=...)

writes into ``out``

  attributions.png   one row per example: the input (raw units) and each
                     method's map (saliency, grad_x_input, smoothgrad, ig)
  attention_<i>.png  each block's and head's attention on example i
                     (a model with attention)
  sanity.png         the model-randomisation check's correlations
  attributions.npz   the maps, ``(m, *in_shape)`` per method, and ``x``
  explain.md         per example: label, predicted, IG gap, m used; the
                     sanity correlations per method
  results.json       the same numbers

and returns the results as a dict. Every map method is compiled once
(``jax.jit`` with the model closed over) and reused for the sanity check's
stages.
"""

import json
import os
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.errors import ConfigError
from funcnet.explain import attention as attention_lib
from funcnet.explain import methods as m_lib
from funcnet.explain import plots, sanity as sanity_lib

MAP_METHODS = ("saliency", "grad_x_input", "smoothgrad", "ig")
METHODS = MAP_METHODS + ("attention", "sanity")
SIGMA, SAMPLES = 0.15, 50


def parse_methods(text, model=None) -> list:
  """``"saliency,ig"`` -> the method names, checked; None: every method
  that applies to ``model`` (attention only for a model with attention).
  Without ``model`` only the names are checked."""
  if text is None:
    return [k for k in METHODS if k != "attention" or (
        model is not None and attention_lib.has_attention(model))]
  names = [t.strip() for t in str(text).split(",") if t.strip()]
  bad = [n for n in names if n not in METHODS]
  if bad or not names:
    raise ConfigError(f"unknown explanation method {(bad or [text])[0]!r}; "
                      f"expected a comma-separated list of: {', '.join(METHODS)}")
  if "attention" in names and model is not None \
      and not attention_lib.has_attention(model):
    attention_lib.attention_maps(model, None, None)   # its one-line error
  return list(dict.fromkeys(names))


def map_functions(model, names, *, source, steps, rule, key, sigma=SIGMA,
                  samples=SAMPLES, ig=None) -> dict:
  """``{name: fn(params, x, target) -> maps}``, each compiled once, for the
  map methods in ``names`` (IG at ``steps``, its attributions only;
  ``ig``: a :func:`funcnet.explain.methods.compiled_ig` to share)."""
  ig = ig or m_lib.compiled_ig(model, source, rule=rule)
  fns = {
      "saliency": lambda p, x, t: m_lib.saliency(model, p, x, t, source),
      "grad_x_input": lambda p, x, t: m_lib.grad_times_input(model, p, x, t,
                                                             source),
      "smoothgrad": lambda p, x, t: m_lib.smoothgrad(
          model, p, x, t, source, key=key, sigma=sigma, n=samples),
      }
  out = {k: jax.jit(fns[k]) for k in MAP_METHODS if k in fns and k in names}
  if "ig" in names:
    out["ig"] = lambda p, x, t: ig(p, x, t, steps).attributions
  return out


class Settings(NamedTuple):
  """How :func:`explain` explains.

  Attributes:
    methods: names from :data:`METHODS`; None: every one that applies.
    source: ``"manual"`` or ``"autodiff"`` input gradients.
    steps: Integrated Gradients' starting step count (doubled until the
      completeness gap is at most 1%).
    rule: its quadrature, ``"gausslegendre"`` or ``"trapezoid"``.
    seed: the key of SmoothGrad's noise and of the sanity check's
      re-initialisation.
    sigma, samples: SmoothGrad's noise level (a fraction of each input's
      range) and sample count.
  """
  methods: Optional[list] = None
  source: str = "manual"
  steps: int = m_lib.STEPS
  rule: str = "gausslegendre"
  seed: int = 0
  sigma: float = SIGMA
  samples: int = SAMPLES


def explain(model, params, x, y, indices, out: str,
            settings: Settings = Settings(), *, stats=None,
            run: str = "") -> dict:
  """Explains the examples ``x (m, *in_shape)`` (model units) with labels
  ``y (m,)`` and test-split ``indices``, writing the files of the module
  docstring into ``out``. ``stats``: the ``(mean, std)`` the inputs were
  standardised with, undone for the pictures; ``run``: its name there."""
  methods, source, steps, rule, seed, sigma, samples = settings
  methods = parse_methods(methods if methods is None or isinstance(
      methods, str) else ",".join(methods), model)
  m_lib.check_source(source)
  m_lib.quadrature(steps, rule)                         # checks both
  os.makedirs(out, exist_ok=True)
  x = jnp.asarray(x)
  key_noise, key_init = jax.random.split(jax.random.key(seed))
  logits = np.asarray(jax.jit(model.logits)(params, x))
  target = jnp.asarray(np.argmax(logits, axis=-1), jnp.int32)
  predicted = (np.argmax(logits, -1) if logits.shape[-1] > 1
               else (logits[:, 0] > 0).astype(int))
  ig = m_lib.compiled_ig(model, source, rule=rule)
  fns = map_functions(model, methods, source=source, steps=steps, rule=rule,
                      key=key_noise, sigma=sigma, samples=samples, ig=ig)
  res = {"run": run, "source": source, "methods": methods,
         "examples": [{"index": int(i), "label": _label(yi),
                       "predicted": int(p)}
                      for i, yi, p in zip(indices, np.asarray(y), predicted)],
         "files": []}
  maps = {k: np.asarray(f(params, x, target)) for k, f in fns.items()
          if k != "ig"}
  if "ig" in methods:
    maps["ig"] = _ig(ig, params, x, target, res, steps=steps, rule=rule)
  raw = _raw(np.asarray(x), stats)
  if maps:
    rows = [f"#{e['index']}: {e['label']} -> {e['predicted']}"
            for e in res["examples"]]
    shape = plots.image_shape_of(model.in_shape, model.spec.get("image_shape"))
    plots.attributions(raw, maps, rows, os.path.join(out, "attributions.png"),
                       shape)
    np.savez(os.path.join(out, "attributions.npz"), x=np.asarray(x),
             indices=np.asarray(indices), **maps)
    res["files"] += ["attributions.png", "attributions.npz"]
  if "attention" in methods:
    res["files"] += _attention(model, params, x, indices, out)
  if "sanity" in methods:
    res["sanity"] = _sanity(model, params, x, target, out, fns or map_functions(
        model, MAP_METHODS, source=source, steps=steps, rule=rule,
        key=key_noise, sigma=sigma, samples=samples, ig=ig), key_init)
    res["files"].append("sanity.png")
  _write(res, out)
  return res


def _label(y):
  y = np.asarray(y)
  return int(y) if y.ndim == 0 else y.tolist()


def _raw(x, stats):
  """``x`` back in the data's units: ``x std + mean`` (as standardised)."""
  if stats is None:
    return x
  mean, std = (np.asarray(a, np.float64) for a in stats)
  return x * std + mean


def _ig(ig, params, x, target, res, *, steps, rule):
  """IG with ``m`` doubled until complete; the gap and ``m`` per example go
  into ``res``."""
  fixed = ig(params, x, target, steps)
  done = m_lib.double_until_complete(ig, params, x, target, steps)
  for e, g0, g, used, d in zip(res["examples"], np.asarray(fixed.gap),
                               done.gap, done.steps, done.delta):
    e.update(ig_gap_at_steps=float(g0), ig_gap=float(g), ig_steps=int(used),
             ig_delta=float(d))
  res["ig"] = {"rule": rule, "steps": steps, "tolerance": m_lib.TOLERANCE,
               "baseline": "zeros (the training mean when standardised)",
               "score": "the logit of the predicted class",
               "max_gap_at_steps": float(np.max(np.asarray(fixed.gap))),
               "complete_at_steps": bool(np.all(np.asarray(fixed.gap)
                                                <= m_lib.TOLERANCE)),
               "max_gap": float(np.max(done.gap)),
               "max_steps_used": int(np.max(done.steps))}
  return np.asarray(done.attributions)


def _attention(model, params, x, indices, out) -> list:
  maps = np.asarray(jax.jit(lambda p, x_: attention_lib.attention_maps(
      model, p, x_))(params, x))                 # (blocks, m, heads, T, T)
  files = []
  for j, i in enumerate(indices[:4]):            # a few: one PNG each
    name = f"attention_{int(i)}.png"
    plots.attention(maps[:, j], os.path.join(out, name),
                    f"test example #{int(i)}: attention weights per block "
                    "and head")
    files.append(name)
  return files


def _sanity(model, params, x, target, out, fns, key) -> dict:
  found = sanity_lib.check(model, params, x, fns, key=key, target=target)
  plots.sanity(found.stages, found.correlations,
               os.path.join(out, "sanity.png"), found.threshold)
  return {"stages": found.stages, "threshold": found.threshold,
          "correlations": {k: [_num(v) for v in c]
                           for k, c in found.correlations.items()},
          "flagged": found.flagged}


def _num(v):
  return None if not np.isfinite(v) else round(float(v), 4)


def _write(res, out) -> None:
  res["files"] += ["explain.md", "results.json"]
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(res, f, indent=2)
    f.write("\n")
  with open(os.path.join(out, "explain.md"), "w") as f:
    f.write(markdown(res))


def markdown(res) -> str:
  """``explain.md``: the examples' table and the sanity check's."""
  lines = [f"# Explanations of {res['run'] or 'a model'}", "",
           f"Input gradients by the {res['source']} source; methods: "
           f"{', '.join(res['methods'])}.", ""]
  ig = "ig" in res
  head = "| test example | label | predicted |"
  if ig:
    head += f" IG gap at m={res['ig']['steps']} | IG gap | m used |"
  lines += [head, "|" + " --- |" * (head.count("|") - 1)]
  for e in res["examples"]:
    row = f"| {e['index']} | {e['label']} | {e['predicted']} |"
    if ig:
      row += (f" {e['ig_gap_at_steps']:.2%} | {e['ig_gap']:.2%} |"
              f" {e['ig_steps']} |")
    lines.append(row)
  if ig:
    i = res["ig"]
    lines += ["", f"IG: {i['rule']} rule, baseline {i['baseline']}, score "
              f"{i['score']}; gap = |sum attr - (F(x) - F(b))| / |F(x) - "
              f"F(b)|, m doubled from {i['steps']} until the gap is at most "
              f"{i['tolerance']:.0%}."]
  if "sanity" in res:
    s = res["sanity"]
    lines += ["", "## Model-randomisation sanity check", "",
              "Spearman rank correlation of |map| with the trained model's, "
              "layers re-initialised from the output down (cumulative):", "",
              "| method | " + " | ".join(["trained"] + [f"+{n}" for n in
                                                   s["stages"][1:]]) + " |",
              "| --- |" + " --- |" * len(s["stages"])]
    for k, c in s["correlations"].items():
      cells = " | ".join("n/a" if v is None else f"{v:.3f}" for v in c)
      lines.append(f"| {k} | {cells} |")
    flagged = ", ".join(s["flagged"]) or "none"
    lines += ["", f"Flagged (correlation above {s['threshold']:g} with every "
              f"layer random): {flagged}."]
  return "\n".join(lines) + "\n"
