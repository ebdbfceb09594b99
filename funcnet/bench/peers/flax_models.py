"""The MNIST-1D CNN, GRU and Transformer and the character GPT in Flax
(``flax.linen``), the shapes of a funcnet model's spec (contract:
:mod:`funcnet.bench.peers`).

Channels-last as funcnet; ``nn.Dropout`` draws from the ``"dropout"`` rng
stream of the step's key; ``nn.gelu(approximate=False)`` and layer norms
with ``epsilon=1e-5``, as funcnet's.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from funcnet.bench.peers import Peer, Unsupported, common


class CNN(nn.Module):
  """conv (SAME) -> relu -> max pool, per channel count; flatten; dropout
  before every dense layer; relu between them."""
  channels: Sequence[int]
  kernel: int
  pool: int
  hidden: Sequence[int]
  n_classes: int
  rate: float
  global_pool: bool

  @nn.compact
  def __call__(self, x, train: bool):
    a = x.reshape(x.shape[0], x.shape[1], -1)
    for c in self.channels:
      a = nn.relu(nn.Conv(c, (self.kernel,), padding="SAME")(a))
      if self.pool > 1:
        a = nn.max_pool(a, (self.pool,), strides=(self.pool,))
    h = a.mean(axis=1) if self.global_pool else a.reshape(a.shape[0], -1)
    for n in self.hidden:
      h = nn.Dropout(self.rate, deterministic=not train)(h)
      h = nn.relu(nn.Dense(n)(h))
    h = nn.Dropout(self.rate, deterministic=not train)(h)
    return nn.Dense(self.n_classes)(h)


class GRU(nn.Module):
  """funcnet's GRU cell, gate products fused (:func:`common.gru_scan`), the
  input products of every step in one product before the scan; dropout on
  the final state; a dense head."""
  steps: int
  hidden: int
  n_classes: int
  rate: float

  @nn.compact
  def __call__(self, x, train: bool):
    h3 = 3 * self.hidden
    xs = jnp.swapaxes(x.reshape(x.shape[0], self.steps, -1), 0, 1)  # (T, m, F)
    init = nn.initializers.xavier_uniform()
    wx = self.param("Wx", init, (xs.shape[-1], h3))
    b = self.param("b", nn.initializers.zeros, (h3,))
    wh_ur = self.param("Wh_ur", init, (self.hidden, 2 * self.hidden))
    wh_n = self.param("Wh_n", init, (self.hidden, self.hidden))
    h0 = jnp.zeros((x.shape[0], self.hidden), x.dtype)
    h = common.gru_scan(xs @ wx + b, h0, wh_ur, wh_n)
    h = nn.Dropout(self.rate, deterministic=not train)(h)
    return nn.Dense(self.n_classes)(h)


class Attention(nn.Module):
  """Multi-head self-attention with funcnet's projections: ``q`` and ``v``
  with biases, ``k`` without, an output projection with a bias; with
  ``causal``, position ``t`` attends to ``0..t`` only."""
  heads: int
  causal: bool = False

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    shape = (self.heads, d // self.heads)
    q = nn.DenseGeneral(shape)(x)                            # (m, T, h, dh)
    k = nn.DenseGeneral(shape, use_bias=False)(x)
    v = nn.DenseGeneral(shape)(x)
    mask = nn.make_causal_mask(x[..., 0]) if self.causal else None
    o = nn.dot_product_attention(q, k, v, mask=mask)
    return nn.DenseGeneral(d, axis=(-2, -1))(o)


class Block(nn.Module):
  """A pre-LN block, dropout on both residual branches (``causal``: a
  decoder's)."""
  heads: int
  d_ff: int
  rate: float
  causal: bool = False

  @nn.compact
  def __call__(self, e, train: bool):
    drop = nn.Dropout(self.rate, deterministic=not train)
    u = Attention(self.heads, self.causal)(nn.LayerNorm(epsilon=1e-5)(e))
    e = e + drop(u)
    u = nn.gelu(nn.Dense(self.d_ff)(nn.LayerNorm(epsilon=1e-5)(e)),
                approximate=False)
    return e + drop(nn.Dense(e.shape[-1])(u))


class Transformer(nn.Module):
  """Conv stem (gelu), tokens of ``patch`` steps, a dense embedding plus
  learned positions, dropout, pre-LN blocks, a final layer norm, the mean
  over tokens, a dense head."""
  length: int
  tokens: int
  stem: Sequence[int]
  stem_kernel: int
  d_model: int
  heads: int
  layers: int
  d_ff: int
  n_classes: int
  rate: float

  @nn.compact
  def __call__(self, x, train: bool):
    h = x.reshape(x.shape[0], self.length, -1)
    for c in self.stem:
      h = nn.gelu(nn.Conv(c, (self.stem_kernel,), padding="SAME")(h),
                  approximate=False)
    e = nn.Dense(self.d_model)(h.reshape(x.shape[0], self.tokens, -1))
    e = e + self.param("pos", nn.initializers.normal(0.02),
                       (self.tokens, self.d_model))
    e = nn.Dropout(self.rate, deterministic=not train)(e)
    for _ in range(self.layers):
      e = Block(self.heads, self.d_ff, self.rate)(e, train)
    s = nn.LayerNorm(epsilon=1e-5)(e).mean(axis=1)
    return nn.Dense(self.n_classes)(s)


class GPT(nn.Module):
  """Token embedding plus learned positions, dropout, causal pre-LN blocks,
  a final layer norm, the head tied to the token embedding (``h E^T``, no
  bias), as :mod:`funcnet.models.gpt`; init ``N(0, 0.02^2)`` for the
  tables, Flax's defaults elsewhere."""
  vocab: int
  block_size: int
  d_model: int
  heads: int
  layers: int
  d_ff: int
  rate: float

  @nn.compact
  def __call__(self, x, train: bool):                      # x: (m, T) ids
    normal = nn.initializers.normal(0.02)
    tok = nn.Embed(self.vocab, self.d_model, embedding_init=normal)
    pos = self.param("pos", normal, (self.block_size, self.d_model))
    e = tok(x) + pos[:x.shape[1]]
    e = nn.Dropout(self.rate, deterministic=not train)(e)
    for _ in range(self.layers):
      e = Block(self.heads, self.d_ff, self.rate, causal=True)(e, train)
    return tok.attend(nn.LayerNorm(epsilon=1e-5)(e))       # (m, T, V)


def _cnn(s):
  common.cnn_shape(s)
  return CNN(tuple(s["channels"]), s["kernel_size"], s["pool"],
              tuple(s["hidden"]), s["n_classes"], s["dropout"],
              s["global_pool"])


def _gru(s):
  steps, _ = common.gru_shape(s)
  return GRU(steps, s["hidden"], s["n_classes"], s["dropout"])


def _transformer(s):
  length, _, tokens = common.transformer_shape(s)
  return Transformer(length, tokens, tuple(s["stem_channels"]),
                     s["stem_kernel"], s["d_model"], s["n_heads"],
                     s["n_layers"], s["d_ff"], s["n_classes"], s["dropout"])


def _gpt(s):
  return GPT(s["vocab"], s["block_size"], s["d_model"], s["n_heads"],
             s["n_layers"], s["d_ff"], s["dropout"])


MODELS = {"cnn": _cnn, "gru": _gru, "transformer": _transformer, "gpt": _gpt}


def network(spec: dict) -> nn.Module:
  """The linen module of a funcnet model's spec.

  Raises:
    Unsupported: a kind or option this module does not write.
  """
  make = MODELS.get(spec["kind"])
  if make is None:
    raise Unsupported(f"no Flax {spec['kind']}")
  return make(spec)


def build(model, cfg, batches, seed: int = 0) -> Peer:
  """The Flax peer of ``model`` (see :mod:`funcnet.bench.peers`)."""
  net = network(model.spec)
  x0 = jnp.asarray(batches[0][0])
  # One compiled init, not one small compilation per initialiser.
  params = jax.jit(lambda k, x: net.init(k, x, train=False))(
      jax.random.key(seed), x0)

  def value_and_grad(params, x, y, key):
    def loss(params):
      if key is None:
        z = net.apply(params, x, train=False)
      else:
        z = net.apply(params, x, train=True, rngs={"dropout": key})
      return common.cross_entropy(z, y)
    return jax.value_and_grad(loss)(params)

  return common.jax_peer("flax", value_and_grad, params, cfg, batches, seed)
