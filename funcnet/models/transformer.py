"""A pre-LN Transformer encoder classifier over sequences, as pure functions,
with its backward written out by hand.

An example of ``L`` steps of ``F`` features first passes an optional
convolutional stem of ``K = len(stem_channels)`` layers (``K = 0``: none),
then is cut into ``T = L / patch`` tokens of ``patch * C`` consecutive
values and read as (``m`` examples, ``d = d_model``):

  h_0 = x                                              (m, L, F)
  h_k = gelu(conv(h_{k-1}; V_k, c_k))                  (m, L, C_k), k = 1..K
        (stride 1, "SAME" padding, kernel ``stem_kernel``)
  e_0 = tokens(h_K) @ W_in + b_in + P                  tokens: (m, T, patch C_K)
                                                       e_0, P: (m, T, d), (T, d)
  for each of the ``n_layers`` blocks (pre-LN, Xiong et al. 2020):
    e = e + drop(MHSA(LN_1(e)))                        (m, T, d)
    e = e + drop(gelu(LN_2(e) @ W_1 + b_1) @ W_2 + b_2)  W_1: (d, d_ff), W_2: (d_ff, d)
  s = mean_t LN_f(e)[:, t]                             (m, d)       (pool "mean")
      or LN_f(e)[:, 0] with a learned token prepended   (m, d)       (pool "cls")
  z = s @ W_out + b_out                                (m, n_classes), output softmax

``C_0 = F``. ``P`` is a learned table (``pos="learned"``) or the fixed
sinusoids (``pos="sinusoidal"``); MHSA is :func:`funcnet.layers.self_attention`
with ``n_heads`` heads of width ``d / n_heads``. ``drop`` is inverted
dropout, also applied to ``e_0``, only when ``logits`` gets a key. Pre-LN
keeps an identity path from input to output, so it trains without warm-up.
The stem gives the tokens what attention lacks: features that do not move
when the signal shifts by a step (MNIST-1D shifts its signals at random).

Params: ``{["stem": [{"W": (k, C_{k-1}, C_k), "b": (C_k,)}] * K,] "embed":
{"W", "b"}, ["pos": {"E": (T', d)},] ["cls": (d,),] "blocks": [{"ln1",
"attn", "ln2", "ff1", "ff2"}] * n_layers, "ln": {...}, "head": {"W", "b"}}``
with ``T' = T`` (+1 with ``pool="cls"``).

The backward (:func:`_backward`) runs the same :func:`forward` and goes
back through it layer by layer with the layers' ``*_backward``
(:mod:`funcnet.layers`). A residual ``e = e + g(e)`` passes ``de`` on
unchanged and adds the branch's ``dx``: ``de <- de + dg/de^T de``.
"""

import jax
import jax.numpy as jnp

from funcnet import activations, backprop, initializers, layers, losses
from funcnet.errors import ShapeError
from funcnet.model import Model, check_input
from funcnet.models import registry

POSITIONS = ("learned", "sinusoidal")
POOLS = ("mean", "cls")


def transformer(in_shape, n_classes: int, d_model: int = 32, n_heads: int = 4,
                n_layers: int = 2, d_ff: int = 64, dropout: float = 0.0,
                pos: str = "learned", patch: int = 1, pool: str = "mean",
                init: str = "xavier", stem_channels=(),
                stem_kernel: int = 5) -> Model:
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
    stem_channels: output channels of each convolution of the stem, before
      the tokens are cut; empty: no stem.
    stem_kernel: the stem's kernel width.

  Returns:
    A :class:`funcnet.model.Model` with output activation ``softmax``, whose
    ``backward`` is the hand-written :func:`_backward`.

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
  stem_channels = layers.require_sizes("stem_channels", stem_channels,
                                       empty_ok=True)
  stem_kernel = layers.require_positive("stem_kernel", stem_kernel)
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
  widths = (features,) + stem_channels  # C_0 .. C_K

  def init_fn(key, dtype=jnp.float32):
    k_embed, k_pos, k_head, *k_blocks = jax.random.split(key, 3 + n_layers)
    params = {}
    if stem_channels:
      # Keys of their own (folded in), so the other params of a model with a
      # stem are drawn as without one.
      k_stem = jax.random.split(jax.random.fold_in(key, 1), len(stem_channels))
      params["stem"] = [
          layers.conv_init(k, (stem_kernel,), c_in, c_out, dtype, init)
          for k, c_in, c_out in zip(k_stem, widths[:-1], widths[1:])]
    params["embed"] = layers.dense_init(k_embed, patch * widths[-1], d_model,
                                        dtype, init)
    k_pos, k_cls = jax.random.split(k_pos)
    if pos == "learned":
      params["pos"] = layers.embedding_init(k_pos, n_tokens, d_model, dtype)
    if pool == "cls":
      params["cls"] = initializers.scaled_normal(k_cls, (d_model,), dtype,
                                                 0.02)
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

  spec = {"kind": "transformer", "in_shape": list(in_shape),
          "n_classes": n_classes, "d_model": d_model, "n_heads": n_heads,
          "n_layers": n_layers, "d_ff": d_ff, "dropout": dropout, "pos": pos,
          "patch": patch, "pool": pool, "init": init,
          "stem_channels": list(stem_channels), "stem_kernel": stem_kernel,
          "kinked": False}

  def logits_fn(params, x, key=None):
    return forward(spec, params, x, key)[0]

  return Model(init_fn, logits_fn, "softmax", in_shape, n_classes, spec,
               head=("head",), backward=_backward)


# --- the forward, once, for logits and the backward -------------------------

def forward(spec: dict, params, x, key=None):
  """The model of ``spec`` on ``x: (m, *in_shape)``: ``(z, caches)``.

  ``z: (m, n_classes)``; ``caches`` holds each layer's cache (see
  :mod:`funcnet.layers`) for :func:`_backward`. ``logits`` is this function's
  ``z``, so the backward sees the very masks ``logits`` draws with ``key``:
  one key per dropout site, split from ``key`` in a fixed order.
  """
  in_shape = tuple(spec["in_shape"])
  check_input(x, in_shape, "transformer")
  length = in_shape[0]
  patch, pool, d_model = spec["patch"], spec["pool"], spec["d_model"]
  rate, n_layers = spec["dropout"], spec["n_layers"]
  gelu = activations.get("gelu")
  m = x.shape[0]
  n_tokens = length // patch + (pool == "cls")
  caches = {"stem": []}

  h = jnp.reshape(x, (m, length, -1))                     # (m, L, F)
  for layer in params.get("stem", []):
    h, c_conv = layers.conv_forward(layer, h, 1, "SAME")
    h, c_act = layers.activation_forward(gelu, h)
    caches["stem"].append((c_conv, c_act))
  e, caches["embed"] = layers.dense_forward(
      params["embed"], jnp.reshape(h, (m, length // patch, -1)))
  if pool == "cls":
    cls = jnp.broadcast_to(params["cls"], (m, 1, d_model)).astype(e.dtype)
    e = jnp.concatenate([cls, e], axis=1)
  e = e + (params["pos"]["E"] if spec["pos"] == "learned"
           else layers.sinusoidal(n_tokens, d_model, e.dtype))
  keys = ([None] * (2 * n_layers + 1) if key is None
          else list(jax.random.split(key, 2 * n_layers + 1)))
  e, caches["drop"] = layers.dropout_forward(e, rate, keys.pop())
  caches["blocks"] = []
  for b in params["blocks"]:
    c = {}
    u, c["ln1"] = layers.layer_norm_forward(b["ln1"], e)
    u, c["attn"] = layers.self_attention_forward(b["attn"], u)
    u, c["drop1"] = layers.dropout_forward(u, rate, keys.pop())
    e = e + u
    u, c["ln2"] = layers.layer_norm_forward(b["ln2"], e)
    u, c["ff1"] = layers.dense_forward(b["ff1"], u)
    u, c["gelu"] = layers.activation_forward(gelu, u)
    u, c["ff2"] = layers.dense_forward(b["ff2"], u)
    u, c["drop2"] = layers.dropout_forward(u, rate, keys.pop())
    e = e + u
    caches["blocks"].append(c)
  e, caches["ln"] = layers.layer_norm_forward(params["ln"], e)
  s = jnp.mean(e, axis=1) if pool == "mean" else e[:, 0]
  z, caches["head"] = layers.dense_forward(params["head"], s)
  return z, caches


def _backward(model: Model, loss):
  """The Transformer's hand-written ``(params, x, y, key=None) -> (C, grads)``.

  From ``dz = dC/dz`` (:func:`funcnet.backprop.loss_and_delta`) back through
  :func:`forward`, in reverse (``de = dC/de`` at each point, ``(m, T', d)``):

    head         ds = dz W_out^T;  dW_out = s^T dz,  db_out = sum dz
    pool         de = ds / T' at every token (mean), or ds at token 0 (cls)
    LN_f         layer_norm_backward
    each block, last first (residuals: de passes on, plus the branch's dx):
      de += LN_2^T(W_1^T(gelu'(.) * (W_2^T drop^T(de))))
      de += LN_1^T(MHSA^T(drop^T(de)))
    e_0 dropout  de = de * mask
    positions    dP = sum_m de (learned);  sinusoids have no params
    cls token    dcls = sum_m de[:, 0];  de = de[:, 1:]
    embedding    dtokens = de W_in^T;  dW_in = sum tokens^T de,  db_in = sum de
    stem         dh_{k-1} = conv^T(gelu'(.) * dh_k), k = K..1
    input        dC/dx = dh_0, the patching undone (the stem's first
                 convolution's dx; without a stem, dtokens reshaped)

  ``^T`` is each layer's backward (:mod:`funcnet.layers`). Pure and
  jittable; same signature and result as
  :func:`funcnet.autodiff.value_and_grad`; ``fn(params, x, y, key,
  wrt_input=True)`` returns ``(C, grads, dC/dx)``, ``dC/dx`` shaped like
  ``x`` (:mod:`funcnet.inputgrad`).
  """
  losses.get(loss)
  losses.check_pair(loss, model.output_activation)
  spec = model.spec
  gelu = activations.get("gelu")

  def vg(params, x, y, key=None, wrt_input=False):
    z, caches = forward(spec, params, x, key)
    c, dz = backprop.loss_and_delta(model, loss, z, y)
    grads = {}
    ds, grads["head"] = layers.dense_backward(params["head"], caches["head"], dz)
    x_hat = caches["ln"][0]                                # (m, T', d)
    if spec["pool"] == "mean":
      de = jnp.broadcast_to(ds[:, None, :] / x_hat.shape[1], x_hat.shape)
    else:
      de = jnp.zeros_like(x_hat).at[:, 0].set(ds)
    de, grads["ln"] = layers.layer_norm_backward(params["ln"], caches["ln"], de)
    grads["blocks"] = [None] * len(params["blocks"])
    for i in reversed(range(len(params["blocks"]))):
      b, cb, g = params["blocks"][i], caches["blocks"][i], {}
      du = layers.dropout_backward(cb["drop2"], de)
      du, g["ff2"] = layers.dense_backward(b["ff2"], cb["ff2"], du)
      du = layers.activation_backward(gelu, cb["gelu"], du)
      du, g["ff1"] = layers.dense_backward(b["ff1"], cb["ff1"], du)
      du, g["ln2"] = layers.layer_norm_backward(b["ln2"], cb["ln2"], du)
      de = de + du                                         # residual 2
      du = layers.dropout_backward(cb["drop1"], de)
      du, g["attn"] = layers.self_attention_backward(b["attn"], cb["attn"], du)
      du, g["ln1"] = layers.layer_norm_backward(b["ln1"], cb["ln1"], du)
      de = de + du                                         # residual 1
      grads["blocks"][i] = g
    de = layers.dropout_backward(caches["drop"], de)
    if "pos" in params:                    # e + P, P shared by the batch
      grads["pos"] = {"E": jnp.sum(de, axis=0)}
    if "cls" in params:                    # the same token in every example
      grads["cls"] = jnp.sum(de[:, 0], axis=0)
      de = de[:, 1:]
    dtok, grads["embed"] = layers.dense_backward(params["embed"],
                                                 caches["embed"], de)
    m, length = x.shape[0], spec["in_shape"][0]
    dh = jnp.reshape(dtok, (m, length, -1))               # undo the patching
    if "stem" in params:
      grads["stem"] = [None] * len(params["stem"])
      for k in reversed(range(len(params["stem"]))):
        c_conv, c_act = caches["stem"][k]
        dh = layers.activation_backward(gelu, c_act, dh)
        dh, grads["stem"][k] = layers.conv_backward(params["stem"][k], c_conv,
                                                    dh)
    # Back to the params' dtype (a float32 x with float64 params promotes),
    # as jax.grad returns it.
    grads = jax.tree_util.tree_map(lambda g, p: g.astype(p.dtype), grads, params)
    if not wrt_input:
      return c, grads
    return c, grads, jnp.reshape(dh, x.shape).astype(x.dtype)   # dC/dx = dh_0
  return vg


def _from_config(table, spec):
  return {**table, "in_shape": spec.in_shape, "n_classes": spec.n_out}


KIND = registry.register(registry.Kind(
    "transformer", transformer, _from_config, task="classification",
    defaults={"d_model": 32, "n_heads": 4, "n_layers": 2, "d_ff": 64,
              "dropout": 0.0, "pos": "learned", "patch": 1, "pool": "mean",
              "init": "xavier", "stem_channels": [], "stem_kernel": 5},
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
        "stem_channels": "channels of each stride-1 convolution (+ gelu) "
                         "before the tokens are cut ([]: no stem)",
        "stem_kernel": "kernel width of the stem's convolutions",
    }))
