"""A convolutional classifier over 1-D signals or 2-D images, as pure functions.

For ``channels = [c_1, ..., c_K]`` and dense widths ``hidden = [n_1, ...,
n_J]`` the network is (channels-last, batch leading, ``a_0 = x``):

  a_k = pool(f(conv(a_{k-1}; W_k, b_k)))    W_k: (*kernel, c_{k-1}, c_k), b_k: (c_k,)
                                             a_k: (m, *spatial_k, c_k),  k = 1..K
  h_0 = global_avg_pool(a_K)  (m, c_K)   or  flatten(a_K)  (m, prod(spatial_K) c_K)
  h_j = f(drop(h_{j-1}) @ V_j + d_j)         h_j: (m, n_j),  j = 1..J
  z   = drop(h_J) @ V_out + d_out            z: (m, n_classes), output softmax

``f`` is ``activation``; ``pool`` is a non-overlapping max (or average)
pool of width ``pool`` on every spatial axis (``pool=1``: none); ``drop``
is inverted dropout, applied only when ``logits`` gets a key.

The input's per-example shape decides the convolution:

  ``(L,)``      a 1-D signal of one channel (given its channel axis inside);
  ``(L, C)``    a 1-D signal of C channels   (pass ``conv_dims=1``);
  ``(H, W)``    a 2-D image of one channel;
  ``(H, W, C)`` a 2-D image of C channels.

A flat dataset of images (e.g. ``digits``, ``(m, 64)``) keeps
``in_shape=(64,)`` and passes ``image_shape=(8, 8)``; ``logits`` reshapes
each row to the image first.

Params: ``{"conv": [{"W", "b"}] * K, "dense": [{"W", "b"}] * (J + 1)}``.

The hand-written backward (``Model.backward``, :func:`_backward`) runs the
same forward (:func:`_forward`, which keeps each layer's cache), then each
layer's ``*_backward`` of :mod:`funcnet.layers` in reverse. With ``u_j =
drop(h_{j-1}) @ V_j + d_j`` (``u_{J+1} = z``), ``c_k = conv(a_{k-1}; W_k,
b_k)``, and ``r`` the forward's dropout masks:

  du_{J+1} = dC/dz                                  (m, n_classes), 1/m in it
  dV_j     = drop(h_{j-1})^T du_j,  dd_j = sum_i du_j[i]
  dh_{j-1} = (du_j @ V_j^T) * r_j                   (dense, dropout)
  du_{j-1} = dh_{j-1} * f'(u_{j-1})                 (activation)
  da_K     = dh_0 / |spatial_K| at every position   (global pool)
             or dh_0 reshaped to a_K's shape        (flatten)
  dc_k     = pool'(da_k) * f'(c_k)                  (pool, activation)
  da_{k-1}, dW_k, db_k = conv'(dc_k)                (layers.conv_backward)
  dC/dx    = da_0 reshaped to x's shape             (wrt_input=True)

``conv'`` gives ``da_{k-1}`` as the full correlation of ``dc_k`` with the
kernel (flipped in space, its channels swapped); at ``k = 1`` that is the
input's gradient, which ``fn(params, x, y, key, wrt_input=True)`` returns
as a third result (the channel axis added for a one-channel input, and an
``image_shape``'s reshape, undone).

``pool'`` sends each window's gradient to its first maximum (max) or
spreads it over the window (avg); see :mod:`funcnet.layers.pool`.
"""

import math
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from funcnet import activations, backprop, initializers, layers, losses
from funcnet.errors import ShapeError
from funcnet.model import Model, check_input
from funcnet.models import registry


def cnn(in_shape, n_classes: int, channels: Sequence[int] = (8, 16),
        kernel_size: int = 3, stride: int = 1, padding: str = "SAME",
        pool: int = 2, pool_type: str = "max", global_pool: bool = True,
        hidden: Sequence[int] = (), activation: str = "relu",
        dropout: float = 0.0, init: str = "he",
        image_shape: Optional[Sequence[int]] = None,
        conv_dims: Optional[int] = None) -> Model:
  """A CNN classifier.

  Args:
    in_shape: the shape of one example as it arrives (see the module doc).
    n_classes: the number of outputs.
    channels: output channels of each conv layer, at least one layer.
    kernel_size: the kernel width on every spatial axis of every conv layer.
    stride: the conv stride on every spatial axis.
    padding: ``"SAME"`` or ``"VALID"``, for the convs.
    pool: the pooling window (and stride) after each conv layer; 1 = none.
    pool_type: ``"max"`` or ``"avg"``.
    global_pool: average the last feature map over space (else flatten it).
    hidden: widths of dense layers between the features and the output.
    activation: the hidden activation, by name.
    dropout: the probability of dropping an input of each dense layer.
    init: the initialiser of every ``W`` (``"he"`` suits relu).
    image_shape: reshape each flat example to this shape before the convs;
      its size must equal that of ``in_shape``.
    conv_dims: 1 or 2 spatial axes; by default 1 for ``(L,)``, else 2.

  Returns:
    A :class:`funcnet.model.Model` with output activation ``softmax``.

  Raises:
    ConfigError: a non-positive size, an unknown padding or pool type, a
      dropout outside [0, 1).
    ShapeError: shapes that do not fit (a kernel or pool larger than the
      feature map, an ``image_shape`` of the wrong size).

  Example:
    >>> model = cnn((64,), 10, image_shape=(8, 8), channels=(8,))
    >>> params = model.init(jax.random.key(0))
    >>> model.apply(params, jnp.zeros((5, 64))).shape
    (5, 10)
  """
  in_shape = layers.require_sizes("in_shape", in_shape)
  n_classes = layers.require_positive("n_classes", n_classes)
  channels = list(layers.require_sizes("channels", channels))
  kernel_size = layers.require_positive("kernel_size", kernel_size)
  stride = layers.require_positive("stride", stride)
  padding = layers.require_choice("padding", str(padding).upper(),
                                  layers.PADDINGS)
  pool = 1 if pool is None else layers.require_positive("pool", pool)
  pool_type = layers.require_choice("pool_type", pool_type, ("max", "avg"))
  hidden = list(layers.require_sizes("hidden", hidden, empty_ok=True))
  act = layers.hidden_activation(activation)
  dropout = layers.require_rate("dropout", dropout)
  initializers.get(init)

  shape = in_shape
  if image_shape is not None:
    image_shape = layers.require_sizes("image_shape", image_shape)
    if math.prod(image_shape) != math.prod(in_shape):
      raise ShapeError(
          f"image_shape {list(image_shape)} holds {math.prod(image_shape)} "
          f"values but in_shape {list(in_shape)} holds {math.prod(in_shape)}; "
          "expected the same number")
    shape = image_shape
  if conv_dims is None:
    conv_dims = 1 if len(shape) == 1 else 2
  conv_dims = layers.require_choice("conv_dims", conv_dims, (1, 2))
  if len(shape) not in (conv_dims, conv_dims + 1):
    raise ShapeError(
        f"an example of shape {list(shape)} cannot feed {conv_dims}-D convs; "
        f"expected {conv_dims} spatial axes and optionally a channel axis")
  add_channel = len(shape) == conv_dims
  c_in = 1 if add_channel else shape[-1]

  spatial = _feature_spatial(shape[:conv_dims], len(channels), kernel_size,
                             stride, padding, pool)
  n_features = channels[-1] * (1 if global_pool else math.prod(spatial))
  widths = [n_features] + hidden + [n_classes]

  def init_fn(key, dtype=jnp.float32):
    keys = jax.random.split(key, len(channels) + len(widths) - 1)
    convs = [layers.conv_init(k, (kernel_size,) * conv_dims, c0, c1, dtype, init)
             for k, c0, c1 in zip(keys, [c_in] + channels[:-1], channels)]
    denses = [layers.dense_init(k, n0, n1, dtype, init)
              for k, n0, n1 in zip(keys[len(channels):], widths[:-1],
                                   widths[1:])]
    return {"conv": convs, "dense": denses}

  spec = {"kind": "cnn", "in_shape": list(in_shape), "n_classes": n_classes,
          "channels": channels, "kernel_size": kernel_size, "stride": stride,
          "padding": padding, "pool": pool, "pool_type": pool_type,
          "global_pool": bool(global_pool), "hidden": hidden,
          "activation": act.name, "dropout": dropout, "init": init,
          "image_shape": None if image_shape is None else list(image_shape),
          "conv_dims": conv_dims,
          "kinked": act.kink or (pool > 1 and pool_type == "max")}

  def logits_fn(params, x, key=None):
    return _forward(spec, params, x, key)[0]

  return Model(init_fn, logits_fn, "softmax", in_shape, n_classes, spec,
               head=("dense", -1), backward=_backward)


def _feature_spatial(spatial, n_layers: int, kernel_size: int, stride: int,
                     padding: str, pool: int) -> list:
  """The spatial shape of ``a_K`` for an input of spatial shape ``spatial``
  after ``n_layers`` conv + pool layers.

  Followed at build time so that a kernel or pool that does not fit is
  reported there, naming its layer, rather than as an XLA error.

  Raises:
    ShapeError: a ``VALID`` kernel or a pool larger than its layer's input.
  """
  spatial = list(spatial)
  for l in range(n_layers):
    if padding == "VALID" and kernel_size > min(spatial):
      raise ShapeError(
          f"conv layer {l + 1}: kernel_size {kernel_size} is larger than its "
          f"input {spatial} with padding 'VALID'; expected kernel_size <= "
          f"{min(spatial)} or padding 'SAME'")
    spatial = [layers.out_size(n, kernel_size, stride, padding) for n in spatial]
    if pool > min(spatial):
      raise ShapeError(
          f"conv layer {l + 1}: pool {pool} is larger than its feature map "
          f"{spatial}; expected pool <= {min(spatial)}, fewer layers or a "
          "smaller stride")
    spatial = [layers.out_size(n, pool, pool, "VALID") for n in spatial]
  return spatial


class Trace(NamedTuple):
  """The CNN's forward, kept for the backward: each layer's cache.

  Attributes:
    convs: per conv layer ``k``, ``(conv cache, activation cache, pool cache
      or None)``.
    features: the shape of ``a_K``, ``(m, *spatial_K, c_K)`` (the global
      pool's cache, and what a flatten's backward reshapes to).
    denses: per dense layer ``j``, ``(dropout mask or None, dense cache,
      activation cache or None for the output layer)``.
  """
  convs: list
  features: tuple
  denses: list


def _forward(spec, params, x, key=None):
  """The network of the module docstring: ``(z, Trace)``. The only forward:
  ``logits`` returns its ``z`` (under ``jit`` the unused caches cost
  nothing) and :func:`_backward` reads its trace, so both see the same
  dropout masks for the same key."""
  in_shape = tuple(spec["in_shape"])
  check_input(x, in_shape, "cnn")
  shape = tuple(spec["image_shape"] or in_shape)
  act = activations.get(spec["activation"])
  pool, stride, padding = spec["pool"], spec["stride"], spec["padding"]
  pool_forward = (layers.max_pool_forward if spec["pool_type"] == "max"
                  else layers.avg_pool_forward)
  a = jnp.reshape(x, (x.shape[0],) + shape)
  if len(shape) == spec["conv_dims"]:  # no channel axis: add one
    a = a[..., None]

  convs = []
  for p in params["conv"]:
    c, conv_cache = layers.conv_forward(p, a, stride, padding)
    a, act_cache = layers.activation_forward(act, c)
    pool_cache = None
    if pool > 1:
      a, pool_cache = pool_forward(a, pool)
    convs.append((conv_cache, act_cache, pool_cache))

  features = a.shape
  h = (layers.global_avg_pool_forward(a)[0] if spec["global_pool"]
       else a.reshape(a.shape[0], -1))

  n_dense = len(params["dense"])
  keys = [None] * n_dense if key is None else jax.random.split(key, n_dense)
  denses = []
  for j, (p, k) in enumerate(zip(params["dense"], keys)):
    d, mask = layers.dropout_forward(h, spec["dropout"], k)
    h, dense_cache = layers.dense_forward(p, d)
    act_cache = None
    if j < n_dense - 1:
      h, act_cache = layers.activation_forward(act, h)
    denses.append((mask, dense_cache, act_cache))
  return h, Trace(convs, features, denses)


def _backward(model: Model, loss):
  """The CNN's hand-written ``(params, x, y, key=None) -> (C, grads)``: the
  chain of the module docstring, each step a layer's ``*_backward``; with
  ``wrt_input=True``, ``(C, grads, dC/dx)``, ``dC/dx = da_0`` shaped like
  ``x`` (the batch-mean loss's: the 1/m is in it).

  Same signature and result as :func:`funcnet.autodiff.value_and_grad`;
  pure and jittable. With a key, the dropout masks are the forward's.
  """
  losses.get(loss)
  losses.check_pair(loss, model.output_activation)
  spec = model.spec
  act = activations.get(spec["activation"])
  pool_backward = (layers.max_pool_backward if spec["pool_type"] == "max"
                   else layers.avg_pool_backward)

  def fn(params, x, y, key=None, wrt_input=False):
    z, trace = _forward(spec, params, x, key)
    c, dh = backprop.loss_and_delta(model, loss, z, y)    # dC/dz, 1/m in it

    dense_grads = []
    for p, (mask, dense_cache, act_cache) in zip(reversed(params["dense"]),
                                                 reversed(trace.denses)):
      if act_cache is not None:                            # hidden: * f'(u_j)
        dh = layers.activation_backward(act, act_cache, dh)
      dd, g = layers.dense_backward(p, dense_cache, dh)
      dh = layers.dropout_backward(mask, dd)
      dense_grads.insert(0, g)

    if spec["global_pool"]:
      da = layers.global_avg_pool_backward(trace.features, dh)
    else:                                                  # flatten's adjoint
      da = dh.reshape(trace.features)

    conv_grads = []
    for p, (conv_cache, act_cache, pool_cache) in zip(reversed(params["conv"]),
                                                      reversed(trace.convs)):
      if pool_cache is not None:
        da = pool_backward(pool_cache, da)
      dc = layers.activation_backward(act, act_cache, da)
      da, g = layers.conv_backward(p, conv_cache, dc)
      conv_grads.insert(0, g)
    grads = {"conv": conv_grads, "dense": dense_grads}
    if not wrt_input:
      return c, grads
    # da_0 = dC/d(image with its channel axis): undo the forward's reshapes
    return c, grads, da.reshape(x.shape).astype(x.dtype)
  return fn


def _from_config(table, spec):
  return {**table, "in_shape": spec.in_shape, "n_classes": spec.n_out,
          "image_shape": tuple(table["image_shape"]) or None,
          "conv_dims": table["conv_dims"] or None}


KIND = registry.register(registry.Kind(
    "cnn", cnn, _from_config, task="classification",
    defaults={"channels": [8, 16], "kernel_size": 3, "stride": 1,
              "padding": "SAME", "pool": 2, "pool_type": "max",
              "global_pool": True, "hidden": [], "activation": "relu",
              "dropout": 0.0, "init": "he", "image_shape": [], "conv_dims": 0},
    docs={
        "channels": "output channels of each convolution layer",
        "kernel_size": "convolution kernel width (and height in 2-D)",
        "stride": "convolution stride",
        "padding": "SAME | VALID",
        "pool": "pooling window and stride after each convolution (1: none)",
        "pool_type": "max | avg",
        "global_pool": "average over the remaining positions before the head (else flatten)",
        "hidden": "widths of dense layers between the convolutions and the output",
        "activation": "activation after each convolution and dense layer",
        "dropout": "dropout before each dense layer, in [0, 1)",
        "init": "weight initialiser: normal | xavier | he",
        "image_shape": "reshape flat inputs to this (e.g. [8, 8] for digits); [] keeps them",
        "conv_dims": "1 or 2 to force 1-D/2-D convolutions; 0 infers from the input shape",
    }))
