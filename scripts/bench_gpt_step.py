"""Steps per second of one GPT training step, hand-written backward against
``jax.grad``, on this machine's default device.

The step is what training runs: ``(C, grads)`` by one of the two gradients,
then AdamW (optax), jitted once with params and optimizer state donated,
float32. The model is the issue's benchmark shape (nanoGPT's laptop GPT at
a longer context): 4 layers, 4 heads, width 128, context 128, batch 32,
vocabulary 100. Each repeat times ``--steps`` steps after a compile and a
warm-up step; the two gradients alternate repeat by repeat so both see the
same load, and the median of the repeats is reported. A benchmark, not a
test: it asserts nothing.

  python scripts/bench_gpt_step.py [--repeats 5] [--steps 5] [--batch 32] ...
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnet import autodiff, backprop
from funcnet.models.gpt import gpt


def make_step(model, grad_fn, opt):
  """The jitted ``(params, state, x, y) -> (params, state, C)``, donated."""
  def step(params, state, x, y):
    c, grads = grad_fn(params, x, y)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, c
  return jax.jit(step, donate_argnums=(0, 1))


def time_steps(step, params, state, batches, n):
  """Seconds per step over ``n`` steps (the result waited on)."""
  t0 = time.perf_counter()
  for i in range(n):
    x, y = batches[i % len(batches)]
    params, state, c = step(params, state, x, y)
  jax.block_until_ready(c)
  return (time.perf_counter() - t0) / n, params, state


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--layers", type=int, default=4)
  p.add_argument("--heads", type=int, default=4)
  p.add_argument("--width", type=int, default=128)
  p.add_argument("--context", type=int, default=128)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--vocab", type=int, default=100)
  p.add_argument("--dropout", type=float, default=0.0)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--repeats", type=int, default=5)
  a = p.parse_args(argv)
  model = gpt(a.context, a.vocab, n_layers=a.layers, n_heads=a.heads,
              d_model=a.width, dropout=a.dropout)
  opt = optax.adamw(1e-3, weight_decay=0.1)
  rng = np.random.default_rng(0)
  batches = [tuple(jnp.asarray(rng.integers(0, a.vocab, (a.batch, a.context)),
                               jnp.int32) for _ in range(2)) for _ in range(2)]
  grads = {"manual": backprop.value_and_grad(model, "cross_entropy"),
           "autodiff": autodiff.value_and_grad(model, "cross_entropy")}
  runs = {}
  for name, g in grads.items():
    params = model.init(jax.random.key(0))
    step = make_step(model, g, opt)
    t0 = time.perf_counter()
    params, state, c = step(params, opt.init(params), *batches[0])
    jax.block_until_ready(c)
    compile_s = time.perf_counter() - t0
    _, params, state = time_steps(step, params, state, batches, 1)  # warm-up
    runs[name] = {"step": step, "params": params, "state": state,
                  "compile_s": compile_s, "times": []}
  for _ in range(a.repeats):
    for r in runs.values():
      s, r["params"], r["state"] = time_steps(r["step"], r["params"],
                                              r["state"], batches, a.steps)
      r["times"].append(s)
  out = {"device": str(jax.devices()[0]), "shape": vars(a)}
  for name, r in runs.items():
    med = statistics.median(r["times"])
    out[name] = {"steps_per_s": 1.0 / med, "ms_per_step": 1e3 * med,
                 "compile_s": r["compile_s"],
                 "ms_per_step_repeats": [round(1e3 * t, 1) for t in r["times"]]}
  out["manual_over_autodiff"] = (out["manual"]["steps_per_s"]
                                 / out["autodiff"]["steps_per_s"])
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
