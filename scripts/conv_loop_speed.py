"""Before/after of the im2col convolution, one process, interleaved rounds:
the MNIST-1D CNN's gradient (batch 100, autodiff and manual) as one
top-level jitted call (what ``funcnet bench models`` times) and inside a
``fori_loop`` of 10 SGD steps (what a training epoch runs), with
``lax.conv_general_dilated`` (the convolution before, read from the git
revision ``BEFORE``'s funcnet/layers/conv.py) and with funcnet's im2col.

  PYTHONPATH=$PWD python scripts/conv_loop_speed.py [BEFORE]
"""

import importlib.util
import os
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from funcnet import config as config_lib, experiment, layers, train

S, ROUNDS = 10, 5


def old_conv(rev):
  src = subprocess.run(["git", "show", f"{rev}:funcnet/layers/conv.py"],
                       capture_output=True, text=True, check=True).stdout
  path = os.path.join(tempfile.mkdtemp(), "old_conv.py")
  with open(path, "w") as f:
    f.write(src)
  spec = importlib.util.spec_from_file_location("old_conv", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def programs(s, X, Y):
  out = {}
  for grads in ("autodiff", "manual"):
    vg = train.gradient_fn(s.model, s.loss, grads)

    def sgd(p, i, vg=vg):
      _, g = vg(p, X[i], Y[i], None)
      return jax.tree_util.tree_map(lambda a, d: a - 1e-3 * d, p, g)
    out[grads] = (jax.jit(lambda p, vg=vg: vg(p, X[0], Y[0], None)),
                  jax.jit(lambda p, sgd=sgd: jax.lax.fori_loop(
                      0, S, lambda i, p: sgd(p, i), p)))
  return out


def main(rev="0f9b276"):
  cfg = config_lib.load("configs/mnist1d_cnn.toml", ["run.plots=false"])
  s = experiment.Setup(cfg)
  X, Y = train.as_arrays(s.ds.x_train[:100 * S], s.ds.y_train[:100 * S],
                         s.dtype)
  X, Y = X.reshape(S, 100, -1), Y.reshape(S, 100)
  p = s.model.init(jax.random.key(0))
  old = old_conv(rev)
  new = (layers.conv_forward, layers.conv_backward)
  progs = {}
  for name, (fwd, bwd) in (("lax conv", (old.conv_forward, old.conv_backward)),
                           ("im2col", new)):
    layers.conv_forward, layers.conv_backward = fwd, bwd
    try:  # traced and compiled now, with this conv
      progs[name] = programs(s, X, Y)
      for top, loop in progs[name].values():
        jax.block_until_ready((top(p), loop(p)))
    finally:
      layers.conv_forward, layers.conv_backward = new
  for grads in ("autodiff", "manual"):
    a, b = progs["lax conv"][grads], progs["im2col"][grads]
    np.testing.assert_allclose(a[0](p)[0], b[0](p)[0], rtol=1e-5)
  best = {}
  for _ in range(ROUNDS):
    for name, by_grads in progs.items():
      for grads, (top, loop) in by_grads.items():
        t0 = time.perf_counter()
        for _ in range(S):
          out = top(p)
        jax.block_until_ready(out)
        t1 = time.perf_counter()
        jax.block_until_ready(loop(p))
        t2 = time.perf_counter()
        for k, t in (("top", (t1 - t0) / S), ("loop", (t2 - t1) / S)):
          best[name, grads, k] = min(best.get((name, grads, k), 1e9), t)
  for grads in ("autodiff", "manual"):
    for k in ("top", "loop"):
      o, n = best["lax conv", grads, k], best["im2col", grads, k]
      print(f"{grads:8s} {k:4s}: lax conv {1e3 * o:6.2f} ms/step, im2col "
            f"{1e3 * n:6.2f} ms/step, {o / n:.2f}x")
  print("load average", os.getloadavg())


if __name__ == "__main__":
  main(*sys.argv[1:])
