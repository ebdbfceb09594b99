"""A character GPT (a decoder-only Transformer, as nanoGPT's ``model.py``), as
pure functions, with its backward written out by hand and a key/value-cached
decoder for sampling.

``x (m, T)`` integer token ids, ``T <= block_size`` (positions ``0..T-1``),
vocabulary ``V``, width ``d = d_model``:

  e_0 = E[x] + P[:T]                         (m, T, d);  E: (V, d), P: (block_size, d)
  for each of the ``n_layers`` blocks (pre-LN):
    e = e + drop(MHSA_causal(LN_1(e)))                 (m, T, d)
    e = e + drop(gelu(LN_2(e) @ W_1 + b_1) @ W_2 + b_2)  W_1: (d, d_ff), W_2: (d_ff, d)
  h = LN_f(e)                                          (m, T, d)
  z = h @ E^T                                          (m, T, V), output softmax

The output head is TIED to the token embedding (Press & Wolf 2017): the
same ``E`` reads a token's vector in and scores every token out, and it
has no bias. ``z[:, t]`` predicts token ``t + 1`` from tokens ``0..t``
only: MHSA is :func:`funcnet.layers.self_attention` with ``causal=True``,
``n_heads`` heads of width ``d / n_heads`` (nanoGPT's key bias is left
out: it adds the same ``q . b_k`` to every score of a query, which the
softmax cancels). ``drop`` is inverted dropout,
also on ``e_0``, only when ``logits`` gets a key. GELU is the exact one
(nanoGPT's ``nn.GELU()``).

Init as nanoGPT: every weight matrix and both tables ``N(0, 0.02^2)``, the
two projections that write into the residual stream (attention's ``Wo`` and
``W_2``) ``N(0, (0.02 / sqrt(2 n_layers))^2)`` so the stream's variance
does not grow with depth, biases 0, layer-norm scales 1.

Params: ``{"tok": {"E": (V, d)}, "pos": {"E": (block_size, d)}, "blocks":
[{"ln1", "attn", "ln2", "ff1", "ff2"}] * n_layers, "ln": {"scale",
"bias"}}``. ``Model.head`` is None: the head's weight is ``tok.E``.

The backward (:func:`_backward`) runs the same :func:`forward` and goes
back through it layer by layer with the layers' ``*_backward``; the decoder
(:func:`_decoder`) runs the same blocks one position at a time.
``Model.embed`` (:func:`embed`) is the forward cut at the lookup: ``e =
E[x]`` and :func:`forward_embedded`, the rest (which :func:`forward` runs
too); an input gradient is ``dC/de``, which the backward returns with
``wrt_input=True`` (:mod:`funcnet.inputgrad`).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import activations, backprop, initializers, layers, losses
from funcnet.errors import ConfigError, ShapeError
from funcnet.model import Model
from funcnet.models import registry

INIT_SCALE = 0.02  # nanoGPT's std of every weight


def gpt(block_size: int, vocab: int, n_layers: int = 4, n_heads: int = 4,
        d_model: int = 128, d_ff: int = 0, dropout: float = 0.0) -> Model:
  """A character GPT.

  Args:
    block_size: the longest context (the positional table's length); the
      model reads ``x (m, T)`` with any ``T <= block_size``.
    vocab: the number of tokens ``V`` (ids in ``[0, V)``).
    n_layers: decoder blocks.
    n_heads: attention heads per block; must divide ``d_model``.
    d_model: the token width ``d``.
    d_ff: the hidden width of each block's MLP; 0 means ``4 d_model``.
    dropout: the probability of dropping a unit of the embeddings and of
      each residual branch, in [0, 1).

  Returns:
    A :class:`funcnet.model.Model` with output activation ``softmax``,
    logits ``(m, T, V)``, the hand-written ``backward`` and a ``decoder``.

  Example:
    >>> model = gpt(16, 10, n_layers=1, n_heads=2, d_model=8)
    >>> model.logits(model.init(jax.random.key(0)),
    ...              jnp.zeros((3, 5), jnp.int32)).shape
    (3, 5, 10)
  """
  block_size = layers.require_positive("block_size", block_size)
  vocab = layers.require_positive("vocab", vocab)
  n_layers = layers.require_positive("n_layers", n_layers)
  n_heads = layers.require_positive("n_heads", n_heads)
  d_model = layers.require_positive("d_model", d_model)
  is_zero = not isinstance(d_ff, bool) and isinstance(d_ff, (int, float)) \
      and d_ff == 0
  d_ff = 4 * d_model if is_zero else layers.require_positive("d_ff", d_ff)
  dropout = layers.require_rate("dropout", dropout)
  if d_model % n_heads:
    raise ShapeError(f"d_model {d_model} is not divisible by n_heads {n_heads}; "
                     "expected d_model a multiple of n_heads")

  def init_fn(key, dtype=jnp.float32):
    k_tok, k_pos, *k_blocks = jax.random.split(key, 2 + n_layers)
    normal = lambda k, shape, s=INIT_SCALE: initializers.scaled_normal(  # noqa: E731
        k, shape, dtype, s)
    residual = INIT_SCALE / math.sqrt(2 * n_layers)  # writes into the stream
    blocks = []
    for k in k_blocks:
      k_q, k_k, k_v, k_o, k_ff1, k_ff2 = jax.random.split(k, 6)
      # attention_init for the layout (heads in the shapes, no key bias);
      # its weights are redrawn as nanoGPT draws them.
      attn = layers.attention_init(k_q, d_model, n_heads, dtype)
      heads = attn["q"]["W"].shape                       # (d, h, d_head)
      for name, kw in (("q", k_q), ("k", k_k), ("v", k_v)):
        attn[name]["W"] = normal(kw, heads)
      attn["o"]["W"] = normal(k_o, heads[1:] + heads[:1], residual)
      blocks.append({
          "ln1": layers.layer_norm_init(d_model, dtype), "attn": attn,
          "ln2": layers.layer_norm_init(d_model, dtype),
          "ff1": {"W": normal(k_ff1, (d_model, d_ff)),
                  "b": jnp.zeros((d_ff,), dtype)},
          "ff2": {"W": normal(k_ff2, (d_ff, d_model), residual),
                  "b": jnp.zeros((d_model,), dtype)}})
    return {"tok": layers.embedding_init(k_tok, vocab, d_model, dtype),
            "pos": layers.embedding_init(k_pos, block_size, d_model, dtype),
            "blocks": blocks, "ln": layers.layer_norm_init(d_model, dtype)}

  spec = {"kind": "gpt", "block_size": block_size, "vocab": vocab,
          "n_layers": n_layers, "n_heads": n_heads, "d_model": d_model,
          "d_ff": d_ff, "dropout": dropout, "kinked": False}

  def logits_fn(params, x, key=None):
    return forward(spec, params, x, key)[0]

  def decoder_fn(params, m, max_len):
    return _decoder(spec, params, m, max_len)

  def embed_fn(params, x):
    return embed(spec, params, x)

  return Model(init_fn, logits_fn, "softmax", (block_size,), vocab, spec,
               head=None, backward=_backward, decoder=decoder_fn,
               embed=embed_fn)


# --- the tied head --------------------------------------------------------------

def tied_head_forward(E, h):
  """``z = h @ E^T``: ``h (..., d)``, ``E (V, d)`` -> ``(..., V)``; the
  cache is ``h``."""
  return jnp.einsum("...d,vd->...v", h, E), h


def tied_head_backward(E, h, dz):
  """The head's share of the tied weight's gradient, ``dz (..., V)``:

    dh = dz @ E                       (..., d)
    dE = sum over every position of dz^T h      (V, d)

  Returns ``(dh, dE)``. The embedding lookup adds its own scatter-add to
  ``dE`` (see :func:`_backward`)."""
  dz2, h2 = dz.reshape(-1, dz.shape[-1]), h.reshape(-1, h.shape[-1])
  return dz @ E, dz2.T @ h2


# --- the forward, once, for logits and the backward ---------------------------

def _check_ids(x, block_size: int):
  shape = tuple(jnp.shape(x))
  if len(shape) != 2 or not 1 <= shape[1] <= block_size:
    raise ShapeError(f"x has shape {shape}; this gpt expects (batch, T) token "
                     f"ids with 1 <= T <= block_size = {block_size}")
  if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.integer):
    raise ShapeError(f"x has dtype {jnp.asarray(x).dtype}; this gpt expects "
                     "integer token ids")


def forward(spec: dict, params, x, key=None):
  """The model of ``spec`` on ``x: (m, T)`` ids: ``(z, caches)``.

  ``z: (m, T, V)``; ``caches`` holds each layer's cache (see
  :mod:`funcnet.layers`) for :func:`_backward`. ``logits`` is this
  function's ``z``, so the backward sees the very masks ``logits`` draws
  with ``key``: one key per dropout site, split from ``key`` in a fixed
  order. The lookup ``E[x]`` is the one step before
  :func:`forward_embedded`, which is the rest.
  """
  _check_ids(x, spec["block_size"])
  e, tok_cache = layers.embed_forward(params["tok"], x)      # (m, T, d)
  z, caches = forward_embedded(spec, params, e, key)
  caches["tok"] = tok_cache
  return z, caches


def embed(spec: dict, params, x):
  """``Model.embed``: ``(e, logits_of)`` with ``e = E[x] (m, T, d)`` the
  token vectors and ``logits_of(e, key=None)`` :func:`forward_embedded`'s
  ``z`` (the positions are added inside, so an input gradient is the token
  vectors' alone)."""
  _check_ids(x, spec["block_size"])

  def logits_of(e, key=None):
    return forward_embedded(spec, params, e, key)[0]
  return layers.embed(params["tok"], x), logits_of


def forward_embedded(spec: dict, params, e, key=None):
  """:func:`forward` from the token vectors ``e = E[x]: (m, T, d)`` on:
  ``(z, caches)`` without the lookup's cache."""
  shape = tuple(jnp.shape(e))
  if len(shape) != 3 or not 1 <= shape[1] <= spec["block_size"] \
      or shape[2] != spec["d_model"]:
    raise ShapeError(f"token vectors of shape {shape}; this gpt expects "
                     f"(batch, T, {spec['d_model']}) with 1 <= T <= "
                     f"block_size = {spec['block_size']}")
  rate, n_layers = spec["dropout"], spec["n_layers"]
  gelu = activations.get("gelu")
  caches = {}
  e = e + params["pos"]["E"][:shape[1]]
  keys = ([None] * (2 * n_layers + 1) if key is None
          else list(jax.random.split(key, 2 * n_layers + 1)))
  e, caches["drop"] = layers.dropout_forward(e, rate, keys.pop())
  caches["blocks"] = []
  for b in params["blocks"]:
    c = {}
    u, c["ln1"] = layers.layer_norm_forward(b["ln1"], e)
    u, c["attn"] = layers.self_attention_forward(b["attn"], u, causal=True)
    u, c["drop1"] = layers.dropout_forward(u, rate, keys.pop())
    e = e + u
    u, c["ln2"] = layers.layer_norm_forward(b["ln2"], e)
    u, c["ff1"] = layers.dense_forward(b["ff1"], u)
    u, c["gelu"] = layers.activation_forward(gelu, u)
    u, c["ff2"] = layers.dense_forward(b["ff2"], u)
    u, c["drop2"] = layers.dropout_forward(u, rate, keys.pop())
    e = e + u
    caches["blocks"].append(c)
  h, caches["ln"] = layers.layer_norm_forward(params["ln"], e)
  z, caches["head"] = tied_head_forward(params["tok"]["E"], h)
  return z, caches


def _backward(model: Model, loss):
  """The GPT's hand-written ``(params, x, y, key=None) -> (C, grads)``.

  From ``dz = dC/dz`` (:func:`funcnet.backprop.loss_and_delta`, which
  averages over every position of every window) back through
  :func:`forward`, in reverse (``de = dC/de`` at each point, ``(m, T, d)``):

    head       dh = dz E;   dE_head = sum_{m,t} dz^T h        (tied_head_backward)
    LN_f       de = layer_norm_backward(dh)
    each block, last first (residuals: de passes on, plus the branch's dx):
      de += LN_2^T(W_1^T(gelu'(.) * (W_2^T drop^T(de))))
      de += LN_1^T(MHSA_causal^T(drop^T(de)))
    e_0 dropout  de = de * mask
    positions    dP[:T] = sum_m de;  dP[T:] = 0 (rows not read)
    tokens       dE_embed[r] = sum of de[i, t] over x[i, t] = r  (scatter-add)

  With ``wrt_input=True`` the result is ``(C, grads, dC/de)``: ``de (m, T,
  d)`` there, before the scatter-add, the gradient with respect to the
  looked-up token vectors ``e = E[x]`` (``Model.embed``; the positions add
  ``P`` to ``e`` and pass ``de`` on unchanged).

  The tied weight ``E`` is used twice, so its gradient is the SUM of both
  uses: ``dE = dE_head + dE_embed``, the head's ``dz^T h`` over every
  position plus the lookup's scatter-add. The causal attention's backward
  is the unmasked one (the masked ``P`` entries are 0, so their ``dS`` is
  0: see :func:`funcnet.layers.self_attention_backward`).

  ``^T`` is each layer's backward (:mod:`funcnet.layers`). Pure and
  jittable; same signature and result as
  :func:`funcnet.autodiff.value_and_grad`.
  """
  losses.get(loss)
  losses.check_pair(loss, model.output_activation)
  spec = model.spec
  gelu = activations.get("gelu")

  def vg(params, x, y, key=None, wrt_input=False):
    z, caches = forward(spec, params, x, key)
    c, dz = backprop.loss_and_delta(model, loss, z, y)
    grads = {}
    dh, d_tok_head = tied_head_backward(params["tok"]["E"], caches["head"], dz)
    de, grads["ln"] = layers.layer_norm_backward(params["ln"], caches["ln"], dh)
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
    d_pos = jnp.sum(de, axis=0)                            # P shared by the batch
    grads["pos"] = {"E": jnp.zeros_like(params["pos"]["E"], d_pos.dtype)
                    .at[:x.shape[1]].set(d_pos)}
    _, d_tok = layers.embed_backward(params["tok"], caches["tok"], de)
    grads["tok"] = {"E": d_tok["E"] + d_tok_head}          # both uses of E
    # Back to the params' dtype, as jax.grad returns it.
    grads = jax.tree_util.tree_map(lambda g, p: g.astype(p.dtype), grads, params)
    if not wrt_input:
      return c, grads
    return c, grads, de                                    # dC/de, e = E[x]
  return vg


def attention_maps(model: Model, params, x):
  """Every block's per-head attention weights for the ids ``x (m, T)``:
  ``(n_layers, m, n_heads, T, T)``, row ``q`` the weights query ``q`` puts
  on keys ``0..q`` (zero above the diagonal), for plots. No dropout."""
  if model.kind != "gpt":
    raise ConfigError(f"attention maps are a gpt's; this model is a "
                      f"{model.kind!r}")
  caches = forward(model.spec, params, x)[1]["blocks"]
  return jnp.stack([c["attn"][4] for c in caches])


# --- the decoder: one position at a time, with a key/value cache --------------

def _decoder(spec: dict, params, m: int, max_len: int):
  """``(carry, step)`` for sampling (see :attr:`funcnet.model.Model.decoder`).

  ``carry`` is a list with one ``{"k": K, "v": V}`` per block, each
  ``(m, max_len, n_heads, d_head)`` zeros of the params' dtype: the keys
  and values of the positions fed so far. ``step(carry, token (m,), t)``
  runs :func:`forward`'s blocks on the one position ``t`` (``e = E[token] +
  P[t]``), writes its keys and values at slot ``t`` of each block's cache
  and attends over slots ``0..t``
  (:func:`funcnet.layers.self_attention_step`), so its ``z (m, V)`` is
  ``logits(params, x)[:, t]``. No dropout (evaluation). Jittable: ``t`` may
  be traced; ``max_len`` must not exceed ``block_size``.
  """
  m = layers.require_positive("m", m)
  max_len = layers.require_positive("max_len", max_len)
  if max_len > spec["block_size"]:
    raise ShapeError(f"max_len {max_len} exceeds this gpt's block_size "
                     f"{spec['block_size']}; expected at most {spec['block_size']}")
  h, dtype = spec["n_heads"], params["tok"]["E"].dtype
  shape = (m, max_len, h, spec["d_model"] // h)
  carry = [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
           for _ in params["blocks"]]
  gelu = activations.get("gelu")

  def step(carry, token, t):
    e = params["tok"]["E"][token] + params["pos"]["E"][t]     # (m, d)
    new = []
    for b, kv in zip(params["blocks"], carry):
      u = layers.layer_norm(b["ln1"], e)
      u, k, v = layers.self_attention_step(b["attn"], u, kv["k"], kv["v"], t)
      e = e + u
      u = gelu.f(layers.dense(b["ff1"], layers.layer_norm(b["ln2"], e)))
      e = e + layers.dense(b["ff2"], u)
      new.append({"k": k, "v": v})
    z, _ = tied_head_forward(params["tok"]["E"],
                             layers.layer_norm(params["ln"], e))
    return new, z
  return carry, step


# --- the config table -----------------------------------------------------------

def _from_config(table, spec):
  if not np.issubdtype(np.dtype(spec.x_dtype), np.integer) \
      or len(spec.in_shape) != 1:
    raise ConfigError(f"model.kind = 'gpt' needs token ids of shape (T,); "
                      f"{spec.name!r} has {spec.x_dtype} inputs of shape "
                      f"{tuple(spec.in_shape)}: use data.name = 'text'")
  return {**table, "block_size": spec.in_shape[0], "vocab": spec.n_out}


KIND = registry.register(registry.Kind(
    "gpt", gpt, _from_config, task="language",
    defaults={"n_layers": 4, "n_heads": 4, "d_model": 128, "d_ff": 0,
              "dropout": 0.0},
    docs={
        "n_layers": "decoder blocks (pre-LN, causal attention + GELU MLP)",
        "n_heads": "attention heads per block (must divide d_model)",
        "d_model": "token width (embeddings, residual stream)",
        "d_ff": "hidden width of each block's MLP (0: 4 * d_model)",
        "dropout": "dropout on the embeddings and each residual branch, in [0, 1)",
    }))
