"""The MNIST-1D CNN, GRU and Transformer and the character GPT in Equinox,
the shapes of a funcnet model's spec (contract: :mod:`funcnet.bench.peers`).

Equinox's way: each module reads one example (channels first for its
convolutions, ``(C, L)``), the batch is a ``jax.vmap`` over examples with
one dropout key each, and the step differentiates the module's inexact
arrays (``eqx.partition``) while the rest stays static.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

from funcnet.bench.peers import Peer, Unsupported, common


def _drop(rate, x, key):
  """Inverted dropout, the identity without a key."""
  return eqx.nn.Dropout(rate)(x, key=key, inference=key is None)


def _keys(key, n):
  return [None] * n if key is None else list(jr.split(key, n))


class CNN(eqx.Module):
  """conv (SAME) -> relu -> max pool per layer; flatten (or average);
  dropout before every dense layer; relu between them."""
  convs: list
  denses: list
  pool: eqx.nn.MaxPool1d
  rate: float = eqx.field(static=True)
  global_pool: bool = eqx.field(static=True)

  def __init__(self, s, in_channels, length, key):
    chans = [in_channels] + list(s["channels"])
    keys = jr.split(key, len(chans) + len(s["hidden"]))
    self.convs = [eqx.nn.Conv1d(a, b, s["kernel_size"], padding="SAME", key=k)
                  for a, b, k in zip(chans[:-1], chans[1:], keys)]
    self.pool = eqx.nn.MaxPool1d(s["pool"], s["pool"])
    for _ in s["channels"]:
      length //= s["pool"]
    widths = ([chans[-1] * (1 if s["global_pool"] else length)]
              + list(s["hidden"]) + [s["n_classes"]])
    self.denses = [eqx.nn.Linear(a, b, key=k) for a, b, k in
                   zip(widths[:-1], widths[1:], keys[len(chans) - 1:])]
    self.rate, self.global_pool = s["dropout"], s["global_pool"]

  def __call__(self, x, key=None):
    a = x.reshape(x.shape[0], -1).T                          # (C, L)
    for conv in self.convs:
      a = self.pool(jax.nn.relu(conv(a)))
    h = a.mean(axis=1) if self.global_pool else a.reshape(-1)
    keys = _keys(key, len(self.denses))
    for j, (dense, k) in enumerate(zip(self.denses, keys)):
      h = dense(_drop(self.rate, h, k))
      if j < len(self.denses) - 1:
        h = jax.nn.relu(h)
    return h


class GRU(eqx.Module):
  """funcnet's GRU cell, gate products fused (:func:`common.gru_scan`), the
  input products of every step in one product before the scan; dropout on
  the final state; a linear head."""
  wx: jax.Array
  b: jax.Array
  wh_ur: jax.Array
  wh_n: jax.Array
  head: eqx.nn.Linear
  steps: int = eqx.field(static=True)
  rate: float = eqx.field(static=True)

  def __init__(self, s, steps, features, key):
    k1, k2, k3, k4 = jr.split(key, 4)
    hidden = s["hidden"]
    glorot = jax.nn.initializers.glorot_uniform()
    self.wx = glorot(k1, (features, 3 * hidden))
    self.b = jnp.zeros((3 * hidden,))
    self.wh_ur = glorot(k2, (hidden, 2 * hidden))
    self.wh_n = glorot(k3, (hidden, hidden))
    self.head = eqx.nn.Linear(hidden, s["n_classes"], key=k4)
    self.steps, self.rate = steps, s["dropout"]

  def __call__(self, x, key=None):
    xs = x.reshape(self.steps, -1)                           # (T, F)
    h0 = jnp.zeros((self.wh_n.shape[0],), x.dtype)
    h = common.gru_scan(xs @ self.wx + self.b, h0, self.wh_ur, self.wh_n)
    return self.head(_drop(self.rate, h, key))


class Block(eqx.Module):
  """A pre-LN encoder block, dropout on both residual branches."""
  ln1: eqx.nn.LayerNorm
  attn: eqx.nn.MultiheadAttention
  ln2: eqx.nn.LayerNorm
  ff1: eqx.nn.Linear
  ff2: eqx.nn.Linear
  rate: float = eqx.field(static=True)

  def __init__(self, d, heads, d_ff, rate, key):
    ka, k1, k2 = jr.split(key, 3)
    self.ln1, self.ln2 = eqx.nn.LayerNorm(d, eps=1e-5), eqx.nn.LayerNorm(d, eps=1e-5)
    self.attn = eqx.nn.MultiheadAttention(
        heads, d, use_query_bias=True, use_key_bias=False,
        use_value_bias=True, use_output_bias=True, key=ka)
    self.ff1, self.ff2 = eqx.nn.Linear(d, d_ff, key=k1), eqx.nn.Linear(d_ff, d, key=k2)
    self.rate = rate

  def __call__(self, e, key=None, mask=None):                # e: (T, d)
    k1, k2 = _keys(key, 2)
    u = jax.vmap(self.ln1)(e)
    e = e + _drop(self.rate, self.attn(u, u, u, mask=mask), k1)
    u = jax.nn.gelu(jax.vmap(self.ff1)(jax.vmap(self.ln2)(e)), approximate=False)
    return e + _drop(self.rate, jax.vmap(self.ff2)(u), k2)


class Transformer(eqx.Module):
  """Conv stem (gelu), tokens of ``patch`` steps, a linear embedding plus
  learned positions, dropout, pre-LN blocks, a final layer norm, the mean
  over tokens, a linear head."""
  stem: list
  embed: eqx.nn.Linear
  pos: jax.Array
  blocks: list
  ln: eqx.nn.LayerNorm
  head: eqx.nn.Linear
  tokens: int = eqx.field(static=True)
  rate: float = eqx.field(static=True)

  def __init__(self, s, features, tokens, key):
    chans = [features] + list(s["stem_channels"])
    d, n = s["d_model"], s["n_layers"]
    keys = jr.split(key, len(chans) + n + 2)
    self.stem = [eqx.nn.Conv1d(a, b, s["stem_kernel"], padding="SAME", key=k)
                 for a, b, k in zip(chans[:-1], chans[1:], keys)]
    width = chans[-1] * (s["in_shape"][0] // tokens)
    self.embed = eqx.nn.Linear(width, d, key=keys[-1])
    self.pos = 0.02 * jr.normal(keys[-2], (tokens, d))
    self.blocks = [Block(d, s["n_heads"], s["d_ff"], s["dropout"], k)
                   for k in keys[len(chans) - 1:len(chans) - 1 + n]]
    self.ln = eqx.nn.LayerNorm(d, eps=1e-5)
    self.head = eqx.nn.Linear(d, s["n_classes"], key=keys[-3])
    self.tokens, self.rate = tokens, s["dropout"]

  def __call__(self, x, key=None):
    keys = _keys(key, len(self.blocks) + 1)
    h = x.reshape(x.shape[0], -1).T                          # (C, L)
    for conv in self.stem:
      h = jax.nn.gelu(conv(h), approximate=False)
    e = jax.vmap(self.embed)(h.T.reshape(self.tokens, -1)) + self.pos
    e = _drop(self.rate, e, keys[0])
    for block, k in zip(self.blocks, keys[1:]):
      e = block(e, k)
    return self.head(jax.vmap(self.ln)(e).mean(axis=0))


class GPT(eqx.Module):
  """Token embedding plus learned positions, dropout, causal pre-LN blocks,
  a final layer norm, the head tied to the token embedding (``h E^T``, no
  bias), as :mod:`funcnet.models.gpt`; one sequence ``(T,)`` of ids in,
  ``(T, V)`` logits out."""
  tok: eqx.nn.Embedding
  pos: jax.Array
  blocks: list
  ln: eqx.nn.LayerNorm
  rate: float = eqx.field(static=True)

  def __init__(self, s, key):
    d, n = s["d_model"], s["n_layers"]
    kt, kp, *kb = jr.split(key, 2 + n)
    self.tok = eqx.nn.Embedding(weight=0.02 * jr.normal(kt, (s["vocab"], d)))
    self.pos = 0.02 * jr.normal(kp, (s["block_size"], d))
    self.blocks = [Block(d, s["n_heads"], s["d_ff"], s["dropout"], k)
                   for k in kb]
    self.ln = eqx.nn.LayerNorm(d, eps=1e-5)
    self.rate = s["dropout"]

  def __call__(self, x, key=None):
    t = x.shape[0]
    keys = _keys(key, len(self.blocks) + 1)
    e = _drop(self.rate, self.tok.weight[x] + self.pos[:t], keys[0])
    mask = jnp.tril(jnp.ones((t, t), bool))
    for block, k in zip(self.blocks, keys[1:]):
      e = block(e, k, mask)
    return jax.vmap(self.ln)(e) @ self.tok.weight.T


def _cnn(s, key):
  length, channels = common.cnn_shape(s)
  return CNN(s, channels, length, key)


def _gru(s, key):
  return GRU(s, *common.gru_shape(s), key)


def _transformer(s, key):
  _, features, tokens = common.transformer_shape(s)
  return Transformer(s, features, tokens, key)


MODELS = {"cnn": _cnn, "gru": _gru, "transformer": _transformer,
          "gpt": GPT}


def network(spec: dict, key) -> eqx.Module:
  """The Equinox module of a funcnet model's spec (one example in, logits out).

  Raises:
    Unsupported: a kind or option this module does not write.
  """
  make = MODELS.get(spec["kind"])
  if make is None:
    raise Unsupported(f"no Equinox {spec['kind']}")
  return make(spec, key)


def build(model, cfg, batches, seed: int = 0) -> Peer:
  """The Equinox peer of ``model`` (see :mod:`funcnet.bench.peers`)."""
  # One compiled init, not one small compilation per initialiser.
  net = eqx.filter_jit(network)(model.spec, jr.key(seed))
  params, static = eqx.partition(net, eqx.is_inexact_array)

  def value_and_grad(params, x, y, key):
    def loss(params):
      f = eqx.combine(params, static)
      if key is None:
        z = jax.vmap(f)(x)
      else:
        z = jax.vmap(f)(x, jr.split(key, x.shape[0]))
      return common.cross_entropy(z, y)
    return jax.value_and_grad(loss)(params)

  return common.jax_peer("equinox", value_and_grad, params, cfg, batches, seed)
