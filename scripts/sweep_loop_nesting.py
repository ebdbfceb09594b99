"""Where the sweep's CNN epoch loses to a variant alone: the MNIST-1D
CNN's SGD step (autodiff, batch 100) over 10 batches, per variant-step:
alone in a ``fori_loop`` (as ``train.fit``), ``lax.map`` over 16 variants
nested in the step loop (as the sweep's epoch), and the step loop nested
in a ``lax.map`` over the variants. One process, 3 rounds.

  PYTHONPATH=$PWD python scripts/sweep_loop_nesting.py
"""
import time, os, jax, jax.numpy as jnp, numpy as np
from funcnet import config as config_lib, experiment, train
cfg = config_lib.load("configs/mnist1d_cnn.toml", ["run.plots=false"])
s = experiment.Setup(cfg)
b = 100; S = 10; V = 16
X, Y = train.as_arrays(s.ds.x_train[:b * S], s.ds.y_train[:b * S], s.dtype)
X = X.reshape(S, b, -1); Y = Y.reshape(S, b)
ps = [s.model.init(k) for k in jax.random.split(jax.random.key(0), V)]
P = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *ps)
vg = train.gradient_fn(s.model, s.loss, "autodiff")
def sgd(p, i):
  c, g = vg(p, X[i], Y[i], None)
  return jax.tree_util.tree_map(lambda a, d: a - 1e-3 * d, p, g)
one = jax.jit(lambda p: jax.lax.fori_loop(0, S, lambda i, p: sgd(p, i), p))
many = jax.jit(lambda P: jax.lax.fori_loop(0, S, lambda i, P: jax.lax.map(lambda p: sgd(p, i), P), P))
outer = jax.jit(lambda P: jax.lax.map(lambda p: jax.lax.fori_loop(0, S, lambda i, p: sgd(p, i), p), P))
jax.block_until_ready(one(ps[0])); jax.block_until_ready(many(P)); jax.block_until_ready(outer(P))
for r in range(3):
  t0 = time.perf_counter(); jax.block_until_ready(one(ps[0])); t1 = time.perf_counter()
  jax.block_until_ready(many(P)); t2 = time.perf_counter()
  jax.block_until_ready(outer(P)); t3 = time.perf_counter()
  print(f"per variant-step: alone in a loop {1e3*(t1-t0)/S:.2f} ms; steps loop of map(16) {1e3*(t2-t1)/S/V:.2f} ms; map(16) of steps loop {1e3*(t3-t2)/S/V:.2f} ms", os.getloadavg()[0])
