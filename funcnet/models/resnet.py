"""A small residual network with batch normalisation, for 1-D signals.

For stages ``s = 1..S`` of ``channels[s]`` channels and ``blocks`` residual
blocks each (channels-last, batch leading, ``a_0 = x (m, L, 1)``):

  a   = relu(BN(conv(x; W_stem)))                       stem, kernel k
  r   = BN_2(conv_2(relu(BN_1(conv_1(a)))))             one block's branch
  a  := relu(r + short(a))                              short: identity, or
                                                        BN(conv_1x1(a)) when the
                                                        width or stride changes
  h   = drop(global_avg_pool(a))                        (m, c_S)
  z   = h @ W_out + b_out                               (m, n_classes), softmax

The first block of each stage after the first has stride 2 (40 -> 20 -> 10
positions for MNIST-1D with three stages).

Batch norm's two modes follow ``logits``'s key, funcnet's switch between
training and evaluation: with a key (training: ``fit``, the sweep engine,
``backward`` with a key) every BN normalises by the batch's statistics;
with ``key=None`` (evaluation, prediction, a gradient check without a key)
by the running statistics. So a model with batch norm must be trained with
a key, which :func:`funcnet.train.train_step` always passes.

Params: ``{"stem": unit, "blocks": [{"a": unit, "b": unit[, "proj":
unit]}], "head": {"W", "b"}}`` with ``unit = {"conv": {"W"}, "bn":
{"scale", "bias"}, "stats": {"mean", "var"}}``. The running statistics
live in the params, so checkpoints, resume, sharding and ``load_run`` carry
them unchanged. No forward in training mode reads them, so their gradient
is exactly zero (autodiff's and the hand-written one); ``Model.refresh``
(called by ``train_step`` after the optimizer's update) sets them to
``momentum * old + (1 - momentum) * batch statistics`` of the step's batch
under the step's old params, discarding any update an optimizer made to
them (weight decay). Its cost: one more forward pass per step (XLA drops the
head). Under ``jit`` with the batch sharded over devices, the batch mean is
the global one: the statistics are synchronised across the data-parallel
axis with no extra code.

The hand-written backward runs each layer's ``*_backward`` in reverse; at a
block, the gradient reaching ``a`` is the branch's plus the shortcut's.
"""

from typing import Sequence

import jax
import jax.numpy as jnp

from funcnet import activations, backprop, layers, losses
from funcnet.errors import ConfigError
from funcnet.model import Model, check_input
from funcnet.models import registry


def resnet(in_shape, n_classes: int, channels: Sequence[int] = (32, 64),
           blocks: int = 1, kernel_size: int = 5, momentum: float = 0.9,
           eps: float = 1e-5, dropout: float = 0.0,
           init: str = "he") -> Model:
  """A ResNet classifier over 1-D signals ``(L,)`` or ``(L, C)``.

  Args:
    in_shape: one example's shape, ``(L,)`` (one channel) or ``(L, C)``.
    n_classes: the number of outputs.
    channels: the width of each stage (stage 1's is also the stem's).
    blocks: residual blocks per stage.
    kernel_size: the kernel width of every 3-tap-style conv (odd).
    momentum: batch norm's running-statistics weight of the old value, in
      [0, 1).
    eps: batch norm's ``eps`` (> 0).
    dropout: dropout before the head, in [0, 1).
    init: the initialiser of every conv and dense ``W``.

  Raises:
    ConfigError: a bad size, momentum, eps or dropout.

  Example:
    >>> model = resnet((40,), 10, channels=(4,))
    >>> model.apply(model.init(jax.random.key(0)), jnp.zeros((3, 40))).shape
    (3, 10)
  """
  in_shape = layers.require_sizes("in_shape", in_shape)
  if len(in_shape) not in (1, 2):
    raise ConfigError(f"resnet: in_shape {list(in_shape)}; expected (L,) or "
                      "(L, C), a 1-D signal")
  n_classes = layers.require_positive("n_classes", n_classes)
  channels = list(layers.require_sizes("channels", channels))
  blocks = layers.require_positive("blocks", blocks)
  kernel_size = layers.require_positive("kernel_size", kernel_size)
  momentum = float(momentum)
  if not 0.0 <= momentum < 1.0:
    raise ConfigError(f"momentum {momentum}: expected a value in [0, 1)")
  eps = float(eps)
  if not eps > 0:
    raise ConfigError(f"eps {eps}: expected a positive value")
  dropout = layers.require_rate("dropout", dropout)
  c_in = 1 if len(in_shape) == 1 else in_shape[1]
  spec = {"kind": "resnet", "in_shape": list(in_shape),
          "n_classes": n_classes, "channels": channels, "blocks": blocks,
          "kernel_size": kernel_size, "momentum": momentum, "eps": eps,
          "dropout": dropout, "init": init, "kinked": True}

  def unit_init(key, k, c0, c1, dtype):
    # No conv bias: BN's mean subtraction cancels it (its gradient is 0 up
    # to rounding, which Adam would scale up to full-size noisy steps).
    return {"conv": {"W": layers.conv_init(key, (k,), c0, c1, dtype, init)["W"]},
            "bn": layers.batch_norm_init(c1, dtype),
            "stats": layers.batch_norm_stats_init(c1, dtype)}

  def init_fn(key, dtype=jnp.float32):
    keys = iter(jax.random.split(key, 2 + 3 * len(channels) * blocks))
    params = {"stem": unit_init(next(keys), kernel_size, c_in, channels[0],
                                dtype), "blocks": []}
    c0 = channels[0]
    for c1 in channels:
      for j in range(blocks):
        blk = {"a": unit_init(next(keys), kernel_size, c0, c1, dtype),
               "b": unit_init(next(keys), kernel_size, c1, c1, dtype)}
        proj = next(keys)
        if c0 != c1 or _stride(spec, len(params["blocks"])) > 1:
          blk["proj"] = unit_init(proj, 1, c0, c1, dtype)
        params["blocks"].append(blk)
        c0 = c1
    params["head"] = layers.dense_init(next(keys), c0, n_classes, dtype, init)
    return params

  def logits_fn(params, x, key=None):
    return _forward(spec, params, x, key)[0]

  def refresh(old_params, new_params, x, key=None):
    """``new_params`` with every ``stats`` leaf the EMA of the batch's
    statistics under ``old_params`` (module docstring)."""
    stats = _forward(spec, old_params, x, None, train=True)[2]
    return _with_stats(spec, old_params, new_params, stats)

  return Model(init_fn, logits_fn, "softmax", in_shape, n_classes, spec,
               head=("head",), backward=_backward, refresh=refresh)


def _stride(spec, i: int) -> int:
  """Block ``i``'s stride: 2 at the first block of every stage but the first."""
  return 2 if i > 0 and i % spec["blocks"] == 0 else 1


def _conv(p):
  """A unit's conv as :func:`funcnet.layers.conv_forward` takes it: a zero bias."""
  W = p["conv"]["W"]
  return {"W": W, "b": jnp.zeros(W.shape[-1:], W.dtype)}


def _unit_forward(spec, p, a, stride, train):
  """conv then BN: ``(y, cache, (mu, var))``; the cache holds the conv's
  and the BN's (training: batch_norm_forward's; inference: ``(x_hat,
  1/sigma)`` of the running statistics)."""
  c, conv_cache = layers.conv_forward(_conv(p), a, stride, "SAME")
  batch = layers.batch_stats(c)
  if train:
    y, bn_cache = layers.batch_norm_forward(p["bn"], c, spec["eps"])
  else:
    inv = 1.0 / jnp.sqrt(p["stats"]["var"] + spec["eps"])
    x_hat = (c - p["stats"]["mean"]) * inv
    y, bn_cache = p["bn"]["scale"] * x_hat + p["bn"]["bias"], (x_hat, inv)
  return y, (conv_cache, bn_cache), batch


def _unit_backward(p, cache, dy, train):
  """``(da, grads)`` of a unit. Training mode does not read the stats:
  their gradient is zero. Inference mode's ``y = gamma (c - mean) / sqrt(var
  + eps) + beta`` gives ``dmean = -sum gamma dy / sigma`` and ``dvar =
  -(1/2) sum gamma dy x_hat / sigma^2``."""
  conv_cache, bn_cache = cache
  if train:
    dc, g_bn = layers.batch_norm_backward(p["bn"], bn_cache, dy)
  else:                       # y = gamma x_hat + beta, x_hat affine in c
    x_hat, inv = bn_cache
    axes = tuple(range(dy.ndim - 1))
    dc = dy * p["bn"]["scale"] * inv
    g_bn = {"scale": jnp.sum(dy * x_hat, axis=axes),
            "bias": jnp.sum(dy, axis=axes)}
  if train:
    g_stats = jax.tree_util.tree_map(jnp.zeros_like, p["stats"])
  else:
    axes = tuple(range(dy.ndim - 1))
    g_stats = {"mean": -jnp.sum(dc, axis=axes),
               "var": -0.5 * inv * g_bn["scale"] * p["bn"]["scale"] * inv}
  da, g_conv = layers.conv_backward(_conv(p), conv_cache, dc)
  return da, {"conv": {"W": g_conv["W"]}, "bn": g_bn, "stats": g_stats}


def _forward(spec, params, x, key=None, train=None):
  """``(z, caches, stats)``: the network of the module docstring, its
  caches for :func:`_backward` and every unit's batch ``(mu, var)`` (the
  tree of ``params`` less conv/bn, for :func:`_with_stats`). ``train``
  defaults to ``key is not None``."""
  check_input(x, tuple(spec["in_shape"]), "resnet")
  train = key is not None if train is None else train
  relu = activations.get("relu")
  a = x[..., None] if x.ndim == 2 else x
  a, stem_cache, stem_stats = _unit_forward(spec, params["stem"], a, 1, train)
  a, stem_act = layers.activation_forward(relu, a)
  caches, stats = [], []
  for i, blk in enumerate(params["blocks"]):
    s = _stride(spec, i)
    r, ca, sa = _unit_forward(spec, blk["a"], a, s, train)
    r, act_a = layers.activation_forward(relu, r)
    r, cb, sb = _unit_forward(spec, blk["b"], r, 1, train)
    st = {"a": sa, "b": sb}
    cp = None
    short = a
    if "proj" in blk:
      short, cp, st["proj"] = _unit_forward(spec, blk["proj"], a, s, train)
    a, act_out = layers.activation_forward(relu, r + short)
    caches.append((ca, act_a, cb, cp, act_out))
    stats.append(st)
  features = a.shape
  h = layers.global_avg_pool_forward(a)[0]
  h, mask = layers.dropout_forward(h, spec["dropout"], key)
  z, head_cache = layers.dense_forward(params["head"], h)
  return z, (stem_cache, stem_act, caches, features, mask, head_cache), \
      {"stem": stem_stats, "blocks": stats}


def _with_stats(spec, old, new, batch):
  """``new`` with each unit's stats ``momentum * old + (1 - momentum) * batch``."""
  mom = spec["momentum"]

  def unit(o, n, b):
    mu, var = b
    s = {"mean": mom * o["stats"]["mean"] + (1 - mom) * mu,
         "var": mom * o["stats"]["var"] + (1 - mom) * var}
    return {**n, "stats": jax.tree_util.tree_map(
        lambda v, ref: v.astype(ref.dtype), s, n["stats"])}

  out = {**new, "stem": unit(old["stem"], new["stem"], batch["stem"])}
  out["blocks"] = [{k: unit(ob[k], nb[k], bb[k]) for k in nb}
                   for ob, nb, bb in zip(old["blocks"], new["blocks"],
                                         batch["blocks"])]
  return out


def _backward(model: Model, loss):
  """The hand-written ``(params, x, y, key=None) -> (C, grads)``: training
  mode with a key, inference mode without (as ``logits``). With
  ``wrt_input=True``, ``(C, grads, dC/dx)``: the stem's ``dx``, the last
  step of the same chain (batch norm's compact backward in training mode
  couples the examples, so there ``dC/dx_i`` holds the other examples'
  share through the batch statistics, as ``jax.grad`` does)."""
  losses.get(loss)
  losses.check_pair(loss, model.output_activation)
  spec = model.spec
  relu = activations.get("relu")

  def fn(params, x, y, key=None, wrt_input=False):
    train = key is not None
    z, caches, _ = _forward(spec, params, x, key)
    stem_cache, stem_act, blk_caches, features, mask, head_cache = caches
    c, dz = backprop.loss_and_delta(model, loss, z, y)
    dh, g_head = layers.dense_backward(params["head"], head_cache, dz)
    dh = layers.dropout_backward(mask, dh)
    da = layers.global_avg_pool_backward(features, dh)
    g_blocks = []
    for blk, (ca, act_a, cb, cp, act_out) in zip(reversed(params["blocks"]),
                                                 reversed(blk_caches)):
      ds = layers.activation_backward(relu, act_out, da)   # d(r + short)
      g = {}
      dr, g["b"] = _unit_backward(blk["b"], cb, ds, train)
      dr = layers.activation_backward(relu, act_a, dr)
      da, g["a"] = _unit_backward(blk["a"], ca, dr, train)
      if cp is None:                                       # identity shortcut
        da = da + ds
      else:
        dshort, g["proj"] = _unit_backward(blk["proj"], cp, ds, train)
        da = da + dshort
      g_blocks.insert(0, g)
    da = layers.activation_backward(relu, stem_act, da)
    dx, g_stem = _unit_backward(params["stem"], stem_cache, da, train)
    grads = {"stem": g_stem, "blocks": g_blocks, "head": g_head}
    if not wrt_input:
      return c, grads
    return c, grads, jnp.reshape(dx, x.shape).astype(x.dtype)
  return fn


def _from_config(table, spec):
  if len(spec.in_shape) not in (1, 2):
    raise ConfigError(f"model.resnet: data {spec.name!r} has examples of shape "
                      f"{list(spec.in_shape)}; expected a 1-D signal")
  return {**table, "in_shape": spec.in_shape, "n_classes": spec.n_out}


KIND = registry.register(registry.Kind(
    "resnet", resnet, _from_config, task="classification",
    defaults={"channels": [32, 64], "blocks": 1, "kernel_size": 5,
              "momentum": 0.9, "eps": 1e-5, "dropout": 0.0, "init": "he"},
    docs={
        "channels": "width of each stage (the stem has the first)",
        "blocks": "residual blocks per stage (conv-BN-relu-conv-BN + shortcut)",
        "kernel_size": "convolution kernel width",
        "momentum": "batch norm running statistics: weight of the old value, [0, 1)",
        "eps": "batch norm eps, > 0",
        "dropout": "dropout before the head, in [0, 1)",
        "init": "weight initialiser: normal | xavier | he",
    }))
