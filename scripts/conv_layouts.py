"""Micro-benchmark: V variants' convolutions (forward + backward) on XLA:CPU.

The MNIST-1D CNN's three conv layers (batch 100, kernel 5, SAME, channels
1 -> 32 -> 64 -> 64 at lengths 40, 20, 10), each variant with its own
kernel and its own input (its activations differ), except layer 1 whose
input (the data) is shared. For each layout: one jitted function computing
``sum(y * g)`` and its gradient with respect to the kernels and the inputs
(jax.grad), best of ``ROUNDS`` timings of ``REPS`` calls, against one
variant's conv alone (times V).

  grouped   jax.vmap of lax.conv_general_dilated (a grouped convolution)
  map       lax.map over the variants of the same conv
  patches   im2col: the k shifted slices stacked, (V, b L, k Cin) @ (V, k Cin, Cout)
  shifts    sum over q < k of (V, b L, Cin) @ (V, Cin, Cout) on shifted slices
  unrolled  V separate convs in the program (a Python loop), stacked

  PYTHONPATH=$PWD python scripts/conv_layouts.py [V]
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

B, K = 100, 5
LAYERS = [(40, 1, 32, True), (20, 32, 64, False), (10, 64, 64, False)]
REPS, ROUNDS = 20, 5


def conv1(x, w):
  """One variant: x (b, L, Cin), w (k, Cin, Cout) -> (b, L, Cout), SAME."""
  return jax.lax.conv_general_dilated(x, w, (1,), [(2, 2)],
                                      dimension_numbers=("NWC", "WIO", "NWC"))


def patches_of(x):
  """(..., b, L, Cin) -> (..., b, L, k Cin): the k shifted slices, SAME."""
  L = x.shape[-2]
  xp = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(2, 2), (0, 0)])
  cols = jnp.stack([xp[..., q:q + L, :] for q in range(K)], axis=-2)
  return cols.reshape(x.shape[:-1] + (K * x.shape[-1],))


def layouts(shared):
  xa = None if shared else 0

  def grouped(x, w):
    return jax.vmap(conv1, in_axes=(xa, 0))(x, w)

  def mapped(x, w):
    if shared:
      return jax.lax.map(lambda wv: conv1(x, wv), w)
    return jax.lax.map(lambda a: conv1(*a), (x, w))

  def patches(x, w):
    p = patches_of(x)
    wm = w.reshape(w.shape[0], -1, w.shape[-1])
    if shared:  # one GEMM against the kernels side by side
      return jnp.einsum("blk,vko->vblo", p, wm)
    return jnp.einsum("vblk,vko->vblo", p, wm)

  def shifts(x, w):
    L = x.shape[-2]
    xp = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(2, 2), (0, 0)])
    sub = "bli" if shared else "vbli"
    return sum(jnp.einsum(f"{sub},vio->vblo", xp[..., q:q + L, :], w[:, q])
               for q in range(K))

  def unrolled(x, w):
    return jnp.stack([conv1(x if shared else x[v], w[v])
                      for v in range(w.shape[0])])

  return {"grouped": grouped, "map": mapped, "patches": patches,
          "shifts": shifts, "unrolled": unrolled}


def timed(f, *args):
  f(*args)[0].block_until_ready()
  best = float("inf")
  for _ in range(ROUNDS):
    t0 = time.perf_counter()
    for _ in range(REPS):
      out = f(*args)
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - t0) / REPS)
  return best


def main(V: int = 16, only: str = ""):
  rng = np.random.default_rng(0)
  print(f"V = {V}, batch {B}, kernel {K}; ms per forward+backward")
  for L, cin, cout, shared in LAYERS:
    x1 = jnp.asarray(rng.normal(size=(B, L, cin)), jnp.float32)
    xv = jnp.asarray(rng.normal(size=(V, B, L, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(V, K, cin, cout)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(V, B, L, cout)), jnp.float32)
    x = x1 if shared else xv
    argn = (1,) if shared else (0, 1)

    one = jax.jit(jax.value_and_grad(
        lambda x, w: jnp.sum(conv1(x, w) * g[0]), argnums=(0, 1)))
    t_one = timed(one, x1, w[0])
    ref = None
    row = [f"L={L} {cin}->{cout}{' (shared x)' if shared else ''}: "
           f"one variant {1e3 * t_one:.2f} ms, x{V} = {1e3 * V * t_one:.1f}"]
    for name, f in layouts(shared).items():
      if only and name not in only.split(","):
        continue
      fg = jax.jit(jax.value_and_grad(
          lambda x, w, f=f: jnp.sum(f(x, w) * g), argnums=argn))
      val, grads = fg(x, w)
      if ref is None:
        ref = (val, grads)
      else:
        np.testing.assert_allclose(val, ref[0], rtol=1e-4)
        for a, b in zip(grads, ref[1]):
          np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3)
      t = timed(fg, x, w)
      row.append(f"{name} {1e3 * t:.1f} ({V * t_one / t:.2f}x)")
    print("; ".join(row), flush=True)


if __name__ == "__main__":
  main(int(sys.argv[1]) if len(sys.argv) > 1 else 16,
       sys.argv[2] if len(sys.argv) > 2 else "")
