"""What the peers share: the spec's shapes checked once, the config's
optimizer for optax and for PyTorch, and the one jitted training loop every
JAX contestant (funcnet's manual and autodiff steps included) is timed with.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnet import config as config_lib
from funcnet.bench.peers import Peer, Unsupported


def require(spec: dict, **expected) -> None:
  """Raises :class:`Unsupported` unless ``spec[k] == v`` for each pair
  (``v`` a tuple: one of them)."""
  for k, v in expected.items():
    ok = spec.get(k) in v if isinstance(v, tuple) else spec.get(k) == v
    if not ok:
      raise Unsupported(f"its {spec['kind']} is written for {k} = {v!r}, "
                        f"not {spec.get(k)!r}")


def cnn_shape(spec: dict) -> tuple[int, int]:
  """``(L, C)``: a 1-D CNN's input length and channels, after the checks
  that the peers' CNN is this spec's (stride 1, ``SAME``, max pool)."""
  require(spec, conv_dims=1, image_shape=None, stride=1, padding="SAME",
          pool_type="max", activation="relu")
  shape = spec["in_shape"]
  return shape[0], (shape[1] if len(shape) == 2 else 1)


def gru_shape(spec: dict) -> tuple[int, int]:
  """``(T, F)``: steps and features per step of a one-way GRU."""
  require(spec, bidirectional=False)
  shape = spec["in_shape"]
  if len(shape) == 2:
    return tuple(shape)
  return shape[0] // spec["input_features"], spec["input_features"]


def transformer_shape(spec: dict) -> tuple[int, int, int]:
  """``(L, F, T)``: input length, features, tokens of a mean-pooled
  Transformer with learned positions."""
  require(spec, pool="mean", pos="learned")
  shape = spec["in_shape"]
  features = shape[1] if len(shape) == 2 else 1
  return shape[0], features, shape[0] // spec["patch"]


def gru_scan(gx, h0, wh_ur, wh_n):
  """The funcnet GRU (:mod:`funcnet.models.rnn`) with its gate products fused,
  as the peers write it, ``gx: (T, m, 3H)`` the input products ``x_t Wx + b``
  of every step (hoisted out of the scan), ``h0: (m, H)``:

    [a_u, a_r] = gx_t[:, :2H] + h_{t-1} [Wh_u, Wh_r]      one (H, 2H) product
    n_t = tanh(gx_t[:, 2H:] + (r_t * h_{t-1}) Wh_n)
    h_t = (1 - u_t) n_t + u_t h_{t-1}

  Returns ``h_T: (m, H)``. Per example too (``gx: (T, 3H)``, ``h0: (H,)``).
  """
  hidden = h0.shape[-1]

  def cell(h, g):
    ur = jax.nn.sigmoid(g[..., :2 * hidden] + h @ wh_ur)
    u, r = ur[..., :hidden], ur[..., hidden:]
    n = jnp.tanh(g[..., 2 * hidden:] + (r * h) @ wh_n)
    return (1 - u) * n + u * h, None

  return jax.lax.scan(cell, h0, gx)[0]


def optax_optimizer(cfg) -> optax.GradientTransformation:
  """The config's optimizer and schedule built from optax's stages
  (``optimizer.impl = "optax"``): what a Flax or Equinox user would write."""
  cfg = {**cfg, "optimizer": {**cfg["optimizer"], "impl": "optax"}}
  return config_lib.optimizer_from_config(
      cfg, config_lib.schedule_from_config(cfg))


def schedule_table(cfg, steps: int = 4096) -> np.ndarray:
  """The config's learning rate at steps ``0 .. steps - 1`` (for PyTorch's
  ``LambdaLR``, which asks for it one step at a time on the host)."""
  sched = config_lib.schedule_from_config(cfg)
  return np.asarray(jax.vmap(sched)(jnp.arange(steps)), np.float64)


def cross_entropy(z, y):
  """Mean cross-entropy of logits ``z: (m, n)`` against labels ``y: (m,)``."""
  return optax.softmax_cross_entropy_with_integer_labels(z, y).mean()


def jax_runner(value_and_grad: Callable, params, optimizer, batches,
               seed: int = 0, scan: bool = False):
  """``(run, loss)`` of a jitted training step, the one every JAX
  contestant is timed with:

    key, k = split(key);  C, g = value_and_grad(params, x, y, k)
    u, opt_state = optimizer.update(g, opt_state, params);  params += u

  with params, optimizer state and the key donated. ``run(k)`` takes ``k``
  steps over ``batches`` and waits for them (see :mod:`funcnet.bench.peers`);
  ``loss(x, y)`` is the first result of ``value_and_grad`` without a key
  (no dropout).

  ``scan``: the same step ``lax.scan``-ned over every batch in one jitted
  call, as ``funcnet train`` runs an epoch: ``run(k)`` then takes ``k``
  such passes, ``len(batches)`` steps each (``run.steps``; 1 for a loop of
  calls). The steps, their keys and their order are the same either way.
  """
  def step(params, opt_state, key, x, y):
    key, sub = jax.random.split(key)
    c, g = value_and_grad(params, x, y, sub)
    updates, opt_state = optimizer.update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, key, c

  def steps(params, opt_state, key, xs, ys):
    def body(carry, xy):
      *carry, c = step(*carry, *xy)
      return tuple(carry), c
    carry, c = jax.lax.scan(body, (params, opt_state, key), (xs, ys))
    return (*carry, c[-1])

  evaluate = jax.jit(lambda p, x, y: value_and_grad(p, x, y, None)[0])
  state = [params, jax.jit(optimizer.init)(params), jax.random.key(seed)]
  jb = [(jnp.asarray(x), jnp.asarray(y)) for x, y in batches]
  if scan:  # one call, every batch: its inputs stacked once, here
    jb = [tuple(jnp.stack(a) for a in zip(*jb))]
  call = jax.jit(steps if scan else step, donate_argnums=(0, 1, 2))

  def run(k):
    p, o, key = state
    c = None
    for i in range(k):
      p, o, key, c = call(p, o, key, *jb[i % len(jb)])
    jax.block_until_ready((p, o, c))
    state[:] = p, o, key

  run.steps = len(batches) if scan else 1

  def loss(x, y):
    return float(evaluate(state[0], jnp.asarray(x), jnp.asarray(y)))

  return run, loss


def jax_peer(name: str, value_and_grad: Callable, params, cfg, batches,
             seed: int = 0) -> Peer:
  """The :class:`Peer` of a JAX framework's model: its ``run`` a loop of
  :func:`jax_runner`'s steps, its ``scanned`` the same steps scanned, each
  with params of its own (each runner donates the ones it holds), the
  config's optimizer in optax."""
  opt = optax_optimizer(cfg)
  run, loss = jax_runner(value_and_grad, params, opt, batches, seed)
  scanned, _ = jax_runner(value_and_grad, jax.tree.map(jnp.copy, params),
                          opt, batches, seed, scan=True)
  return Peer(name, count(params), run, loss, scanned=scanned)


def count(params) -> int:
  """The number of scalars in a pytree of arrays."""
  return sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(params))
