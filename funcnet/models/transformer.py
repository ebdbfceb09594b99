"""A pre-LN Transformer encoder classifier over sequences, as pure functions.

An example of ``L`` steps of ``F`` features is cut into ``T = L / patch``
tokens of ``patch * F`` consecutive values and read as (``m`` examples,
``d = d_model``):

  e_0 = tokens @ W_in + b_in + P                      tokens: (m, T, patch F)
                                                       e_0, P: (m, T, d), (T, d)
  for each of the ``n_layers`` blocks (pre-LN, Xiong et al. 2020):
    e = e + drop(MHSA(LN_1(e)))                        (m, T, d)
    e = e + drop(gelu(LN_2(e) @ W_1 + b_1) @ W_2 + b_2)  W_1: (d, d_ff), W_2: (d_ff, d)
  s = mean_t LN_f(e)[:, t]                             (m, d)       (pool "mean")
      or LN_f(e)[:, 0] with a learned token prepended   (m, d)       (pool "cls")
  z = s @ W_out + b_out                                (m, n_classes), output softmax

``P`` is a learned table (``pos="learned"``) or the fixed sinusoids
(``pos="sinusoidal"``); MHSA is :func:`funcnet.layers.self_attention` with
``n_heads`` heads of width ``d / n_heads``. ``drop`` is inverted dropout,
also applied to ``e_0``, only when ``logits`` gets a key. Pre-LN keeps an
identity path from input to output, so it trains without warm-up.

Params: ``{"embed": {"W", "b"}, ["pos": {"E": (T', d)},] ["cls": (d,),]
"blocks": [{"ln1", "attn", "ln2", "ff1", "ff2"}] * n_layers, "ln": {...},
"head": {"W", "b"}}`` with ``T' = T`` (+1 with ``pool="cls"``).
"""

import jax
import jax.numpy as jnp

from funcnet import activations, data, initializers, layers
from funcnet.errors import ShapeError
from funcnet.model import Model, check_input
from funcnet.models import registry

POSITIONS = ("learned", "sinusoidal")
POOLS = ("mean", "cls")


def transformer(in_shape, n_classes: int, d_model: int = 32, n_heads: int = 4,
                n_layers: int = 2, d_ff: int = 64, dropout: float = 0.0,
                pos: str = "learned", patch: int = 1, pool: str = "mean",
                init: str = "xavier") -> Model:
  """A Transformer encoder classifier.

  Args:
    in_shape: ``(L,)`` (one feature per step) or ``(L, F)``.
    n_classes: the number of outputs.
    d_model: the token width; a multiple of ``n_heads``.
    n_heads: attention heads per block.
    n_layers: encoder blocks.
    d_ff: the hidden width of each block's MLP.
    dropout: the probability of dropping a unit of the embeddings and of each
      residual branch.
    pos: ``"learned"`` or ``"sinusoidal"`` positional embeddings.
    patch: consecutive steps per token; must divide ``L``.
    pool: ``"mean"`` over tokens, or ``"cls"`` (a learned first token).
    init: the initialiser of every weight matrix.

  Returns:
    A :class:`funcnet.model.Model` with output activation ``softmax``.

  Example:
    >>> model = transformer((40,), 10, d_model=16, n_heads=2, patch=4)
    >>> model.apply(model.init(jax.random.key(0)), jnp.zeros((3, 40))).shape
    (3, 10)
  """
  in_shape = layers.require_sizes("in_shape", in_shape)
  n_classes = layers.require_positive("n_classes", n_classes)
  d_model = layers.require_positive("d_model", d_model)
  n_heads = layers.require_positive("n_heads", n_heads)
  n_layers = layers.require_positive("n_layers", n_layers)
  d_ff = layers.require_positive("d_ff", d_ff)
  dropout = layers.require_rate("dropout", dropout)
  pos = layers.require_choice("pos", pos, POSITIONS)
  patch = layers.require_positive("patch", patch)
  pool = layers.require_choice("pool", pool, POOLS)
  initializers.get(init)
  if d_model % n_heads:
    raise ShapeError(f"d_model {d_model} is not divisible by n_heads {n_heads}; "
                     "expected d_model a multiple of n_heads")
  if len(in_shape) not in (1, 2):
    raise ShapeError(f"in_shape {list(in_shape)} is not a sequence; expected "
                     "(L,) or (L, F)")
  length, features = in_shape[0], (in_shape[1] if len(in_shape) == 2 else 1)
  if length % patch:
    raise ShapeError(f"patch {patch} does not divide the sequence length "
                     f"{length}; expected a divisor of {length}")
  n_tokens = length // patch + (pool == "cls")
  gelu = activations.get("gelu").f

  def init_fn(key, dtype=jnp.float32):
    k_embed, k_pos, k_head, *k_blocks = jax.random.split(key, 3 + n_layers)
    params = {"embed": layers.dense_init(k_embed, patch * features, d_model,
                                         dtype, init)}
    k_pos, k_cls = jax.random.split(k_pos)
    if pos == "learned":
      params["pos"] = layers.embedding_init(k_pos, n_tokens, d_model, dtype)
    if pool == "cls":
      params["cls"] = 0.02 * jax.random.normal(k_cls, (d_model,), dtype)
    blocks = []
    for k in k_blocks:
      k_attn, k_ff1, k_ff2 = jax.random.split(k, 3)
      blocks.append({
          "ln1": layers.layer_norm_init(d_model, dtype),
          "attn": layers.attention_init(k_attn, d_model, n_heads, dtype, init),
          "ln2": layers.layer_norm_init(d_model, dtype),
          "ff1": layers.dense_init(k_ff1, d_model, d_ff, dtype, init),
          "ff2": layers.dense_init(k_ff2, d_ff, d_model, dtype, init)})
    params["blocks"] = blocks
    params["ln"] = layers.layer_norm_init(d_model, dtype)
    params["head"] = layers.dense_init(k_head, d_model, n_classes, dtype, init)
    return params

  def logits_fn(params, x, key=None):
    check_input(x, in_shape, "transformer")
    m = x.shape[0]
    e = layers.dense(params["embed"],
                     jnp.reshape(x, (m, length // patch, patch * features)))
    if pool == "cls":
      cls = jnp.broadcast_to(params["cls"], (m, 1, d_model)).astype(e.dtype)
      e = jnp.concatenate([cls, e], axis=1)
    e = e + (params["pos"]["E"] if pos == "learned"
             else layers.sinusoidal(n_tokens, d_model, e.dtype))
    keys = ([None] * (2 * n_layers + 1) if key is None
            else list(jax.random.split(key, 2 * n_layers + 1)))
    e = layers.dropout(e, dropout, keys.pop())
    for b in params["blocks"]:
      e = e + layers.dropout(
          layers.self_attention(b["attn"], layers.layer_norm(b["ln1"], e)),
          dropout, keys.pop())
      ff = gelu(layers.dense(b["ff1"], layers.layer_norm(b["ln2"], e)))
      e = e + layers.dropout(layers.dense(b["ff2"], ff), dropout, keys.pop())
    e = layers.layer_norm(params["ln"], e)
    s = jnp.mean(e, axis=1) if pool == "mean" else e[:, 0]
    return layers.dense(params["head"], s)

  spec = {"kind": "transformer", "in_shape": list(in_shape),
          "n_classes": n_classes, "d_model": d_model, "n_heads": n_heads,
          "n_layers": n_layers, "d_ff": d_ff, "dropout": dropout, "pos": pos,
          "patch": patch, "pool": pool, "init": init, "kinked": False}
  return Model(init_fn, logits_fn, "softmax", in_shape, n_classes, spec,
               head=("head",))


def _from_config(table, ds, n_out):
  return {**table, "in_shape": data.in_shape(ds), "n_classes": n_out}


KIND = registry.register(registry.Kind(
    "transformer", transformer, _from_config, task="classification",
    defaults={"d_model": 32, "n_heads": 4, "n_layers": 2, "d_ff": 64,
              "dropout": 0.0, "pos": "learned", "patch": 1, "pool": "mean",
              "init": "xavier"},
    docs={
        "d_model": "token width",
        "n_heads": "attention heads (must divide d_model)",
        "n_layers": "pre-LN encoder blocks",
        "d_ff": "hidden width of each block's MLP",
        "dropout": "dropout in the blocks, in [0, 1)",
        "pos": "learned | sinusoidal positional embeddings",
        "patch": "consecutive input values per token",
        "pool": "mean | cls: how tokens become one vector for the head",
        "init": "weight initialiser: normal | xavier | he",
    }))
