"""ms per training step of the MNIST-1D Transformer (configs/mnist1d_transformer.toml's
shape: stem [32, 32], d_model 64, 4 heads, 2 blocks, d_ff 128, dropout 0.1,
batch 100, float32), hand-written backward and autodiff, WITH dropout (a key
per step, as training runs it), clip + AdamW as the config.

The batch is an argument of the jitted step, as in ``funcnet bench models``
(:func:`funcnet.bench.peers.common.jax_runner`). Closed over as constants
(this script before 6 December 2026), jax.grad's step measured as fast as
the hand-written one (43.1 against 42.5 ms) while ``funcnet bench models``
showed it 1.2-1.8x slower; with the batch an argument this script shows
the same gap (43.6 against 36.4 ms). Why constants change the compiled
program was not looked into.

``--base DIR`` (repeatable) also times a baseline copy of the package
(``DIR/funcnet``, e.g. ``git archive <commit> funcnet | tar -x -C DIR``) in
the same process: each baseline's steps are built and compiled first, then
its modules are swapped out of ``sys.modules`` and the next tree's imported,
so all are timed in interleaved best-of rounds under the same load. A
benchmark: asserts nothing.

  PYTHONPATH=$PWD python scripts/bench_transformer_step.py [--base /tmp/base ...] [--rounds 7]
"""

import argparse
import functools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

BATCH, LENGTH, CLASSES = 100, 40, 10


def build(tag):
  """Compiled ``{tag/manual, tag/autodiff}`` steps of the funcnet now imported."""
  from funcnet import autodiff, backprop
  from funcnet.models.transformer import transformer
  model = transformer((LENGTH,), CLASSES, d_model=64, n_heads=4, n_layers=2,
                      d_ff=128, dropout=0.1, stem_channels=(32, 32),
                      stem_kernel=5)
  opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(3e-3, weight_decay=0.05))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(BATCH, LENGTH)), jnp.float32)
  y = jax.nn.one_hot(rng.integers(0, CLASSES, BATCH), CLASSES)
  out = {}
  for name, vg in (("manual", backprop.value_and_grad(model, "cross_entropy")),
                   ("autodiff", autodiff.value_and_grad(model, "cross_entropy"))):
    def step(params, state, key, x, y, vg=vg):
      key, sub = jax.random.split(key)
      c, g = vg(params, x, y, sub)
      u, state = opt.update(g, state, params)
      return optax.apply_updates(params, u), state, key, c
    step = jax.jit(step, donate_argnums=(0, 1))
    params = model.init(jax.random.key(1))
    st = [params, opt.init(params), jax.random.key(2)]
    *st[:3], c = step(*st, x, y)
    jax.block_until_ready(c)
    out[f"{tag}/{name}"] = (functools.partial(_with_batch, step, x, y), st)
  return out


def _with_batch(step, x, y, *state):
  return step(*state, x, y)


def time_one(step, st, n):
  t0 = time.perf_counter()
  for _ in range(n):
    *st[:3], c = step(*st)
  jax.block_until_ready(c)
  return (time.perf_counter() - t0) / n * 1e3


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--base", action="append", default=[],
                 help="a folder holding a baseline's funcnet/ (repeatable)")
  p.add_argument("--rounds", type=int, default=7)
  p.add_argument("--steps", type=int, default=10)
  a = p.parse_args(argv)
  runs = {}
  here = list(sys.path)
  for base in a.base:
    sys.path[:] = [base] + here
    for m in [m for m in sys.modules if m == "funcnet" or m.startswith("funcnet.")]:
      del sys.modules[m]
    runs.update(build(base if len(a.base) > 1 else "before"))
  if a.base:
    for m in [m for m in sys.modules if m == "funcnet" or m.startswith("funcnet.")]:
      del sys.modules[m]
    sys.path[:] = here
  runs.update(build("after" if a.base else "now"))
  best = {k: float("inf") for k in runs}
  for _ in range(a.rounds):
    for k, (step, st) in runs.items():
      best[k] = min(best[k], time_one(step, st, a.steps))
  for k, v in best.items():
    print(f"{k:18s} {v:7.2f} ms/step (best of {a.rounds} rounds of {a.steps})")
  if len(a.base) == 1:
    for g in ("manual", "autodiff"):
      print(f"{g}: {best[f'before/{g}'] / best[f'after/{g}']:.2f}x faster")


if __name__ == "__main__":
  main()
