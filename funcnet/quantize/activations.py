"""Weights and activations as int8: every matmul and convolution that reads
a weight runs as an integer product with int32 accumulation (AQT's "int8
training-free" inference path; XLA's integer ``dot_general`` /
``conv_general_dilated`` with ``preferred_element_type=int32``).

For a site ``y = x @ W`` (or ``conv(x, W)``) with the weight quantized per
output channel (:mod:`funcnet.quantize.weights`: ``W ~ q_W s_W``) and the
activation per tensor, with a scale calibrated on training batches::

  s_x  = max over the calibration batches of max|x| / 127      (one number)
  q_x  = clip(round(x / s_x), -127, 127)                       int8
  y^   = (q_x @ q_W)  *  s_x * s_W                             int8 x int8 -> int32

Finding the sites: the model's ``logits`` is traced to a jaxpr with the
dequantised weights as inputs, and the jaxpr is evaluated again equation
by equation: a ``dot_general`` or ``conv_general_dilated`` whose right
operand is a weight input (through a nested ``jit`` too) and whose output's
last axis is that weight's last (its output channels) becomes the integer
product; every other equation runs as traced. So it needs nothing from the
model kind, and a weight it cannot place (a matmul inside a ``scan``, a
transposed use such as a tied embedding's ``h @ E^T``) stays on the
weight-only path: ``sites`` counts the integer sites, and the report says
how many there are.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core

from funcnet.quantize.weights import QWeight, dequantize

MATMULS = ("dot_general", "conv_general_dilated")
Q_MAX = 127


def _is_q(x) -> bool:
  return isinstance(x, QWeight)


def _channels_last(eqn) -> bool:
  """Whether the product's last output axis is the weight's last axis."""
  rhs_ndim = eqn.invars[1].aval.ndim
  if eqn.primitive.name == "dot_general":
    (_, rc), (_, rb) = eqn.params["dimension_numbers"]
    return rhs_ndim - 1 not in rc and not rb
  dn = eqn.params["dimension_numbers"]
  return (dn.rhs_spec[0] == rhs_ndim - 1 and dn.out_spec[1] == rhs_ndim - 1
          and eqn.params["feature_group_count"] == 1
          and eqn.params["batch_group_count"] == 1)


def _int_product(eqn, q_x, q_w):
  """The site's product of int8 operands, accumulated in int32."""
  p = eqn.params
  if eqn.primitive.name == "dot_general":
    return lax.dot_general(q_x, q_w, p["dimension_numbers"],
                           preferred_element_type=jnp.int32)
  return lax.conv_general_dilated(
      q_x, q_w, p["window_strides"], p["padding"], p["lhs_dilation"],
      p["rhs_dilation"], p["dimension_numbers"],
      preferred_element_type=jnp.int32)


def _run(jaxpr, consts, args, weight_of, site):
  """Evaluates ``jaxpr``; ``weight_of`` maps its input vars to weight
  indices; ``site(eqn, w, ins)`` computes a weight's matmul (or None to
  leave it as traced)."""
  env = {}

  def read(v):
    return v.val if isinstance(v, core.Literal) else env[v]
  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    ins = [read(v) for v in eqn.invars]
    w = weight_of.get(eqn.invars[1]) if (
        eqn.primitive.name in MATMULS and not isinstance(eqn.invars[1], core.Literal)) else None
    out = site(eqn, w, ins) if w is not None and _channels_last(eqn) else None
    if out is not None:
      outs = [out]
    elif eqn.primitive.name in ("jit", "pjit"):
      inner = eqn.params["jaxpr"]
      inner_of = {iv: weight_of[ov] for iv, ov in zip(inner.jaxpr.invars,
                                                      eqn.invars)
                  if not isinstance(ov, core.Literal) and ov in weight_of}
      outs = _run(inner.jaxpr, inner.consts, ins, inner_of, site)
    else:
      # as jax.core.eval_jaxpr binds an equation (jax 0.10)
      outs = eqn.primitive.bind(*ins, **eqn.primitive.get_bind_params(
          eqn.params))
      outs = outs if eqn.primitive.multiple_results else [outs]
    env.update(zip(eqn.outvars, outs))
  return [read(v) for v in jaxpr.outvars]


def _traced(model, qparams, x, dtype, site, key=None):
  """``model.logits`` on the dequantised params, with ``site`` at each
  weight's matmul."""
  deq = dequantize(qparams, dtype)
  leaves, tree = jax.tree_util.tree_flatten(deq)
  is_w = [_is_q(a) for a in jax.tree_util.tree_leaves(qparams, is_leaf=_is_q)]
  closed = jax.make_jaxpr(
      lambda ls, xs: model.logits(jax.tree_util.tree_unflatten(tree, ls), xs,
                                  key))(leaves, x)
  jaxpr = closed.jaxpr
  weight_of = {v: i for i, v in enumerate(jaxpr.invars[:len(leaves)])
               if is_w[i]}
  return _run(jaxpr, closed.consts, [*leaves, x], weight_of, site)[0]


def calibrate(model, qparams, batches, dtype=jnp.float32) -> np.ndarray:
  """``(S,)`` activation scales: each integer site's ``max |x| / 127`` over
  ``batches`` (an iterable of input arrays), in the order of the sites."""
  def amaxes(qp, x):
    found = []

    def site(eqn, w, ins):
      found.append(jnp.max(jnp.abs(ins[0])))
      return None  # computed as traced
    _traced(model, qp, x, dtype, site)
    return jnp.stack(found) if found else jnp.zeros((0,), dtype)
  f = jax.jit(amaxes)
  amax = np.max([np.asarray(f(qparams, b)) for b in batches], axis=0)
  return np.where(amax > 0, amax / Q_MAX, 1.0).astype(np.float32)


def model_on(model, act_scales, dtype=jnp.float32):
  """``model`` whose ``logits(qparams, x)`` run every weight's matmul as an
  int8 x int8 product (``act_scales`` from :func:`calibrate`); fields that
  read float params are None, as in :func:`weights.model_on`."""
  act_scales = jnp.asarray(act_scales)

  def logits(qparams, x, key=None):
    codes = [a for a in jax.tree_util.tree_leaves(qparams, is_leaf=_is_q)]
    n = [0]

    def site(eqn, w, ins):
      s_x = act_scales[n[0]].astype(dtype)
      n[0] += 1
      q_x = jnp.clip(jnp.round(ins[0] / s_x), -Q_MAX, Q_MAX).astype(jnp.int8)
      acc = _int_product(eqn, q_x, codes[w].q)
      return acc.astype(dtype) * (s_x * codes[w].scale.astype(dtype))
    return _traced(model, qparams, x, dtype, site, key)
  return model._replace(logits=logits, backward=None, kinks=None, trace=None,
                        decoder=None, refresh=None, embed=None)
