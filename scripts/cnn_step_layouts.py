"""The MNIST-1D CNN's gradient step, 16 variants: alone x16 vs layouts.

One run, interleaved best-of rounds, on the config's batch (100): the
gradient (``train.gradient_fn``, autodiff or manual) of one variant alone,
times V; ``lax.map`` over V variants (the sweep's CPU path today); ``vmap``
(the convolutions' products batched: funcnet's conv is im2col, so batched
dots, no grouped convolutions). Also
the machine's float32 matmul rate (2048^3) and XLA's FLOP count of one
variant's gradient, for the bound: V variants need at least V x FLOPs /
peak.

  PYTHONPATH=$PWD python scripts/cnn_step_layouts.py [V] [GRADS]
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import config as config_lib, experiment, train

ROUNDS, REPS = 5, 5


def bench(fns, args, rounds=ROUNDS, reps=REPS):
  for f, a in zip(fns.values(), args.values()):
    jax.block_until_ready(f(*a))
  best = {n: float("inf") for n in fns}
  for _ in range(rounds):
    for n, f in fns.items():
      t0 = time.perf_counter()
      for _ in range(reps):
        out = f(*args[n])
      jax.block_until_ready(out)
      best[n] = min(best[n], (time.perf_counter() - t0) / reps)
  return best


def main(V=16, grads="autodiff"):
  cfg = config_lib.load("configs/mnist1d_cnn.toml", ["run.plots=false"])
  s = experiment.Setup(cfg)
  b = cfg["train"]["batch_size"]
  x, y = train.as_arrays(s.ds.x_train[:b], s.ds.y_train[:b], s.dtype)
  keys = jax.random.split(jax.random.key(0), V)
  ps = [s.model.init(k) for k in keys]
  P = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *ps)
  vg = train.gradient_fn(s.model, s.loss, grads)
  one = jax.jit(lambda p, k: vg(p, x, y, k))
  mapped = jax.jit(lambda P, K: jax.lax.map(lambda a: vg(a[0], x, y, a[1]),
                                            (P, K)))
  vmapped = jax.jit(jax.vmap(lambda p, k: vg(p, x, y, k)))
  ref = vmapped(P, keys)
  np.testing.assert_allclose(mapped(P, keys)[0], ref[0], rtol=1e-5)
  flops = one.lower(ps[0], keys[0]).compile().cost_analysis()
  flops = (flops[0] if isinstance(flops, list) else flops)["flops"]
  a = jnp.ones((2048, 2048), jnp.float32)
  mm = jax.jit(lambda a: a @ a)
  fns = {"alone": one, "map": mapped, "vmap": vmapped, "matmul 2048": mm}
  args = {"alone": (ps[0], keys[0]), "map": (P, keys), "vmap": (P, keys),
          "matmul 2048": (a,)}
  t = bench(fns, args)
  peak = 2 * 2048 ** 3 / t["matmul 2048"] / 1e9
  print(f"{grads}: one variant's gradient {1e3 * t['alone']:.2f} ms, "
        f"{flops / 1e6:.0f} MFLOP (XLA), {flops / t['alone'] / 1e9:.0f} "
        f"GFLOP/s; matmul 2048: {peak:.0f} GFLOP/s")
  for n in ("map", "vmap"):
    print(f"  {V} variants, {n}: {1e3 * t[n]:.1f} ms = "
          f"{V * t['alone'] / t[n]:.2f}x the {V} alone "
          f"({1e3 * V * t['alone']:.1f} ms)")
  print(f"  bound at the matmul rate: {V} variants in >= "
        f"{1e3 * V * flops / peak / 1e9:.1f} ms, "
        f"{peak / (flops / t['alone'] / 1e9):.2f}x the {V} alone")


if __name__ == "__main__":
  main(int(sys.argv[1]) if len(sys.argv) > 1 else 16,
       sys.argv[2] if len(sys.argv) > 2 else "autodiff")
