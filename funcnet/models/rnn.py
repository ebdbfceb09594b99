"""Recurrent classifiers (vanilla tanh RNN and GRU), unrolled with ``jax.lax.scan``,
with backpropagation through time written out by hand.

A sequence ``x_1, ..., x_T`` of ``F`` features each (``x_t: (m, F)``,
hidden state ``h_t: (m, H)``, ``h_0 = 0``) is read by one of two cells:

  ``"rnn"``  h_t = tanh(x_t Wx + h_{t-1} Wh + b)

  ``"gru"``  (Cho et al. 2014; sigma is the logistic sigmoid)
             u_t = sigma(x_t Wx_u + h_{t-1} Wh_u + b_u)              update gate
             r_t = sigma(x_t Wx_r + h_{t-1} Wh_r + b_r)              reset gate
             n_t = tanh(x_t Wx_n + (r_t * h_{t-1}) Wh_n + b_n)       candidate
             h_t = (1 - u_t) * n_t + u_t * h_{t-1}

  Wx: (F, H),  Wh: (H, H),  b: (H,)  for each gate.

The classifier reads the final state: ``z = drop(h_T) @ V + d`` (``z: (m,
n_classes)``, output softmax). With ``bidirectional`` a second cell reads the
sequence backwards (``x_T`` first) and ``z`` is computed from
``[h_T^fwd, h_1^bwd]`` of width ``2H``.

Inputs: ``in_shape = (L, F)`` is L steps of F features; ``in_shape = (L,)``
is ``L / input_features`` steps of ``input_features`` consecutive values
(1 by default: a scalar per step; 8 reads an 8x8 image row by row).

Params: ``{"fwd": cell, ["bwd": cell,] "head": {"W": (H or 2H, n_classes),
"b"}}`` where an rnn cell is ``{"Wx", "Wh", "b"}`` and a gru cell is
``{"u": {...}, "r": {...}, "n": {...}}`` of the same three arrays.

Backpropagation through time (the hand-written gradient, ``Model.backward``;
no autodiff). Each cell has a step forward that keeps a cache and a step
backward

  h_t, cache_t              = step_forward(params, h_{t-1}, x_t)
  dh_{t-1}, dx_t, dparams_t = step_backward(params, cache_t, dh_t)

where ``dh_t = dC/dh_t`` is the *total* derivative: through the head (for
``t = T``) and through every later state. :func:`scan_forward` stacks the
caches along time; :func:`bptt` walks them in the opposite order, carrying
only ``dh`` (the step backward's first part, ``deltas``), then forms ``dx_t``
and the weight gradients for all steps at once:

  dh_T     = (dC/dz @ V^T) * dropout mask                  from the head
  dh_{t-1}, delta_t = deltas(params, cache_t, dh_t)        t = T .. 1
  dC/dW    = sum_t dparams_t  (one product over t)         every cell weight
  dC/dx_t  = dx_t^fwd + dx_t^bwd                           the input (wrt_input=True)

:func:`hidden_grad_norms` returns ``||dC/dh_t||`` for every ``t``, from the
same reverse scan: in a tanh RNN with small ``Wh`` it shrinks at least
geometrically going back in time, by ``||Wh||_2`` a step (the vanishing
gradient).
"""

import functools
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from funcnet import backprop, initializers, layers, losses
from funcnet.errors import ConfigError, ShapeError
from funcnet.model import Model, check_input
from funcnet.models import registry

CELLS = ("rnn", "gru")


def _gate_init(key, n_in, n_hidden, dtype, init):
  kx, kh = jax.random.split(key)
  w = initializers.get(init)
  return {"Wx": w(kx, (n_in, n_hidden), dtype),
          "Wh": w(kh, (n_hidden, n_hidden), dtype),
          "b": jnp.zeros((n_hidden,), dtype)}


def _gate(p, x, h):
  """A gate's pre-activation ``a = x Wx + h Wh + b``: ``(m, F), (m, H) -> (m, H)``."""
  return x @ p["Wx"] + h @ p["Wh"] + p["b"]


def _gate_weight_grads(x, h, da):
  """A gate's weight gradients from its delta ``da = dC/da``, summed over
  every leading axis (the batch, and time when they are stacked):

    dWx = x^T da   (F, H)     dWh = h^T da   (H, H)     db = sum da   (H,)

  over ``x: (..., F)``, ``h: (..., H)``, ``da: (..., H)``.
  """
  return {"Wx": jnp.einsum("...f,...k->fk", x, da),
          "Wh": jnp.einsum("...h,...k->hk", h, da),
          "b": jnp.sum(da.reshape(-1, da.shape[-1]), axis=0)}


def _gate_backward(p, x, h, da):
  """The backward of :func:`_gate`, given ``da = dC/da: (m, H)``:

    dx = da Wx^T   (m, F)        dWx = x^T da   (F, H)
    dh = da Wh^T   (m, H)        dWh = h^T da   (H, H)
                                 db  = sum_rows da   (H,)

  Returns ``(dx, dh, {"Wx": dWx, "Wh": dWh, "b": db})``.
  """
  return da @ p["Wx"].T, da @ p["Wh"].T, _gate_weight_grads(x, h, da)


# --- the tanh RNN cell -------------------------------------------------------

def rnn_cell_init(key, n_in: int, n_hidden: int, dtype=jnp.float32,
                  init="xavier"):
  """``{"Wx": (n_in, H), "Wh": (H, H), "b": (H,)}``."""
  return _gate_init(key, n_in, n_hidden, dtype, init)


def rnn_step_forward(params, h, x):
  """One tanh-RNN step, ``h_t = tanh(x_t Wx + h_{t-1} Wh + b)``, keeping what
  its backward needs.

  ``h = h_{t-1}: (m, H)``, ``x = x_t: (m, F)``. Returns ``(h_t, cache)`` with
  ``cache = (h_{t-1}, x_t, h_t)`` (``tanh' = 1 - h_t^2`` needs only ``h_t``).
  """
  h_new = jnp.tanh(_gate(params, x, h))
  return h_new, (h, x, h_new)


def rnn_step_backward(params, cache, dh):
  """The backward of :func:`rnn_step_forward`, given ``dh = dC/dh_t: (m, H)``:

    dz_t     = dh_t * (1 - h_t^2)         (m, H)    through the tanh
    dh_{t-1} = dz_t Wh^T                  (m, H)    passed back in time
    dx_t     = dz_t Wx^T                  (m, F)
    dWx      = x_t^T dz_t                 (F, H)
    dWh      = h_{t-1}^T dz_t             (H, H)
    db       = sum over rows of dz_t      (H,)

  Returns ``(dh_{t-1}, dx_t, {"Wx": dWx, "Wh": dWh, "b": db})``, this step's
  share of the parameter gradients (BPTT sums them over ``t``).
  """
  dh_prev, dz = rnn_step_deltas(params, cache, dh)
  return dh_prev, rnn_input_grads(params, dz), rnn_weight_grads(cache, dz)


# The step backward in three parts, for BPTT (:func:`bptt`): only dh_{t-1}
# depends on the next step, so only the deltas need the scan over time;
# dx_t and the weight gradients are then a few large batched products over
# every step at once, not T small ones.

def rnn_step_deltas(params, cache, dh):
  """``(dh_{t-1}, dz_t)`` of :func:`rnn_step_backward`."""
  _, _, h_new = cache
  dz = dh * (1 - h_new * h_new)
  return dz @ params["Wh"].T, dz


def rnn_input_grads(params, dz):
  """``dx_t = dz_t Wx^T`` (over any leading axes)."""
  return dz @ params["Wx"].T


def rnn_weight_grads(cache, dz):
  """The cell's weight gradients from its deltas (stacked or one step)."""
  h, x, _ = cache
  return _gate_weight_grads(x, h, dz)


def rnn_step(params, h, x):
  """One tanh-RNN step: ``h (m, H), x (m, F) -> h' (m, H)``."""
  return rnn_step_forward(params, h, x)[0]


# --- the GRU cell --------------------------------------------------------------

def gru_cell_init(key, n_in: int, n_hidden: int, dtype=jnp.float32,
                  init="xavier"):
  """``{"u": gate, "r": gate, "n": gate}``, each gate as in :func:`rnn_cell_init`."""
  ku, kr, kn = jax.random.split(key, 3)
  return {g: _gate_init(k, n_in, n_hidden, dtype, init)
          for g, k in (("u", ku), ("r", kr), ("n", kn))}


def gru_step_forward(params, h, x):
  """One GRU step (equations in the module docstring), keeping what its
  backward needs.

  ``h = h_{t-1}: (m, H)``, ``x = x_t: (m, F)``. Returns ``(h_t, cache)`` with
  ``cache = (h_{t-1}, x_t, u_t, r_t, n_t)``, each gate ``(m, H)`` after its
  nonlinearity (``sigma' = u (1 - u)``, ``tanh' = 1 - n^2``).
  """
  hidden = h.shape[-1]
  ur = jax.nn.sigmoid(_gate(_update_reset(params), x, h))   # (m, 2H)
  u, r = ur[..., :hidden], ur[..., hidden:]
  n = jnp.tanh(_gate(params["n"], x, r * h))
  return (1 - u) * n + u * h, (h, x, u, r, n)


def _update_reset(params):
  """The update and reset gates side by side, ``{"Wx": [Wx_u, Wx_r] (F,
  2H), "Wh": [Wh_u, Wh_r] (H, 2H), "b": [b_u, b_r] (2H,)}``: both read
  ``x_t`` and ``h_{t-1}``, so one ``(H, 2H)`` product serves both (a step
  is a few small products; fewer, wider ones run faster). Inside a scan
  the concatenation is loop-invariant, and XLA hoists it."""
  return {k: jnp.concatenate([params["u"][k], params["r"][k]], -1)
          for k in ("Wx", "Wh", "b")}


def gru_step_backward(params, cache, dh):
  """The backward of :func:`gru_step_forward`, given ``dh = dC/dh_t: (m, H)``.

  With ``a_u, a_r, a_n`` the three gates' pre-activations (``n_t =
  tanh(a_n)``, ``a_n = x_t Wx_n + s_t Wh_n + b_n``, ``s_t = r_t * h_{t-1}``),
  every array ``(m, H)``:

    da_n = dh_t * (1 - u_t) * (1 - n_t^2)         candidate
    da_u = dh_t * (h_{t-1} - n_t) * u_t (1 - u_t)  update gate
    ds_t = da_n Wh_n^T                             the reset input
    da_r = ds_t * h_{t-1} * r_t (1 - r_t)          reset gate
    dh_{t-1} = dh_t * u_t + ds_t * r_t + da_u Wh_u^T + da_r Wh_r^T
    dx_t     = da_u Wx_u^T + da_r Wx_r^T + da_n Wx_n^T          (m, F)

  and for each gate ``g``: ``dWx_g = x_t^T da_g (F, H)``, ``db_g = sum over
  rows of da_g (H,)``, ``dWh_g = h_{t-1}^T da_g (H, H)`` for ``u, r`` but
  ``dWh_n = s_t^T da_n`` (the candidate's recurrent input is ``r_t * h_{t-1}``).

  Returns ``(dh_{t-1}, dx_t, {"u": .., "r": .., "n": ..})``.
  """
  dh_prev, deltas = gru_step_deltas(params, cache, dh)
  return (dh_prev, gru_input_grads(params, deltas),
          gru_weight_grads(cache, deltas))


def gru_step_deltas(params, cache, dh):
  """``(dh_{t-1}, (da_u, da_r, da_n))`` of :func:`gru_step_backward`."""
  h, x, u, r, n = cache
  da_n = dh * (1 - u) * (1 - n * n)
  da_u = dh * (h - n) * u * (1 - u)
  ds = da_n @ params["n"]["Wh"].T
  da_r = ds * h * r * (1 - r)
  # da_u Wh_u^T + da_r Wh_r^T as one product: [da_u, da_r] [Wh_u, Wh_r]^T
  wh_ur = jnp.concatenate([params["u"]["Wh"], params["r"]["Wh"]], -1)
  dh_prev = (dh * u + ds * r
             + jnp.concatenate([da_u, da_r], -1) @ wh_ur.T)
  return dh_prev, (da_u, da_r, da_n)


def gru_input_grads(params, deltas):
  """``dx_t = da_u Wx_u^T + da_r Wx_r^T + da_n Wx_n^T`` (any leading axes)."""
  return sum(da @ params[g]["Wx"].T for g, da in zip("urn", deltas))


def gru_weight_grads(cache, deltas):
  """The gates' weight gradients from their deltas (stacked or one step);
  the candidate's recurrent input is ``s_t = r_t * h_{t-1}``."""
  h, x, _, r, _ = cache
  da_u, da_r, da_n = deltas
  return {"u": _gate_weight_grads(x, h, da_u),
          "r": _gate_weight_grads(x, h, da_r),
          "n": _gate_weight_grads(x, r * h, da_n)}


def gru_step(params, h, x):
  """One GRU step: ``h (m, H), x (m, F) -> h' (m, H)`` (equations above)."""
  return gru_step_forward(params, h, x)[0]


class Cell(NamedTuple):
  """A recurrent cell's functions (``forward``/``backward`` as above; the
  backward also in its three parts, ``deltas``, ``input_grads``,
  ``weight_grads``, for :func:`bptt`)."""
  init: Callable
  forward: Callable
  backward: Callable
  deltas: Callable
  input_grads: Callable
  weight_grads: Callable


CELLS = {"rnn": Cell(rnn_cell_init, rnn_step_forward, rnn_step_backward,
                     rnn_step_deltas, rnn_input_grads, rnn_weight_grads),
         "gru": Cell(gru_cell_init, gru_step_forward, gru_step_backward,
                     gru_step_deltas, gru_input_grads, gru_weight_grads)}
_CELL = CELLS


# --- through time ------------------------------------------------------------

# Two steps per iteration of the forward scan's loop. The compiled loop pays
# a fixed cost per iteration on XLA:CPU (the loop's bookkeeping, the slices
# in and out of the stacked arrays), and jax.grad's transpose of the scan
# inherits the unroll: the GRU's autodiff training step took 0.92x its time
# with 2 (p25 of 12 interleaved rounds, 15.5 against 16.8 ms; 4 and 8 were
# slower again, the loop body outgrowing what XLA fuses well). The
# hand-written BPTT's reverse scan stays at 1: 2 made that step 1.1x slower.
# Docs: docs/performance.md, "The GRU's scan unrolled by two".
FORWARD_UNROLL = 2


def scan_forward(step_forward, params, h0, xs, reverse: bool = False):
  """Reads ``xs (T, m, F)`` from ``h0 (m, H)``, first step to last (last to
  first when ``reverse``).

  Returns ``(h_last, caches)``: the final state ``(m, H)`` and every step's
  cache stacked along a leading time axis in the order of ``xs`` (``caches[t]``
  is the step that read ``xs[t]``, whichever the direction).
  """
  return jax.lax.scan(lambda h, x_t: step_forward(params, h, x_t), h0, xs,
                      reverse=reverse, unroll=FORWARD_UNROLL)


def bptt(cell: Cell, params, caches, dh_last, reverse: bool = False):
  """Backpropagation through time over the caches of :func:`scan_forward`.

  A scan in the opposite direction to the forward one (``reverse`` is the
  forward's), carrying only ``dh = dC/dh_t``:

    dh_{t-1}, delta_t = cell.deltas(params, cache_t, dh_t)      t = T .. 1

  Nothing else depends on the next step, so the rest of each step's
  backward runs after the scan on the stacked deltas, as a few large
  products over every step at once (what ``jax.grad``'s transpose of the
  scan computes as T small ones inside it):

    dx_t    = cell.input_grads(params, delta_t)                 (T, m, F)
    dparams = sum_t cell.weight_grads(cache_t, delta_t)         e.g. dWh = sum_t h_{t-1}^T dz_t

  The stacked deltas, ``(T, m, H)`` per gate, are the price: less than the
  caches the forward already keeps.

  Args:
    cell: a :class:`Cell` (``CELLS["rnn"]``, ``CELLS["gru"]``).
    params: the cell's params.
    caches: ``scan_forward``'s stacked caches (leading axis ``T``).
    dh_last: ``dC/dh`` of the forward's last state, ``(m, H)``.
    reverse: whether the forward read the sequence backwards.

  Returns:
    ``(dparams, dh_0, dxs, dh_norms)``: the cell's gradient (params'
    structure, in ``dh_last``'s dtype), ``dC/dh_0: (m, H)``, ``dC/dxs: (T,
    m, F)`` and ``||dC/dh_t||`` over the batch and hidden units, ``(T,)``,
    indexed like ``caches`` (entry ``t`` is the state made by reading
    ``xs[t]``).
  """
  def body(dh, cache_t):
    dh_prev, delta = cell.deltas(params, cache_t, dh)
    return dh_prev, (delta, jnp.sqrt(jnp.sum(dh * dh)))

  dh0, (deltas, norms) = jax.lax.scan(body, dh_last, caches,
                                      reverse=not reverse)
  grads = jax.tree_util.tree_map(lambda g: g.astype(dh_last.dtype),
                                 cell.weight_grads(caches, deltas))
  return grads, dh0, cell.input_grads(params, deltas), norms


# --- the model -----------------------------------------------------------------

class Trace(NamedTuple):
  """The model's forward pass, kept for its backward.

  Attributes:
    fwd: the forward cell's stacked step caches (time leading).
    bwd: the backward cell's, or None without ``bidirectional``.
    mask: the dropout mask on the final state (None without dropout).
    head_in: the head's input, the final state after dropout, ``(m, H or 2H)``.
  """
  fwd: tuple
  bwd: Optional[tuple]
  mask: Optional[jnp.ndarray]
  head_in: jnp.ndarray


def _steps_features(in_shape, input_features):
  """``(T, F)``: the steps and the features per step of a checked ``in_shape``."""
  if len(in_shape) == 1:
    return in_shape[0] // input_features, input_features
  return tuple(in_shape)


def _forward(spec, params, x, key=None):
  """The model's forward, ``x (m, *in_shape) -> (z (m, n_classes), Trace)``;
  ``logits`` and the backward both run it, so they see the same dropout mask
  for the same key."""
  in_shape = tuple(spec["in_shape"])
  check_input(x, in_shape, spec["cell"])
  steps, features = _steps_features(in_shape, spec["input_features"])
  step_forward = _CELL[spec["cell"]].forward
  # Time leads so that scan walks over it: (T, m, F).
  xs = jnp.swapaxes(jnp.reshape(x, (x.shape[0], steps, features)), 0, 1)
  # The carry must keep one dtype through scan: that of x and params mixed.
  h0 = jnp.zeros((x.shape[0], spec["hidden"]),
                 jnp.result_type(xs, params["head"]["W"]))
  h, fwd = scan_forward(step_forward, params["fwd"], h0, xs)
  bwd = None
  if spec["bidirectional"]:
    h_bwd, bwd = scan_forward(step_forward, params["bwd"], h0, xs, reverse=True)
    h = jnp.concatenate([h, h_bwd], -1)
  h, mask = layers.dropout_forward(h, spec["dropout"], key)
  z, head_in = layers.dense_forward(params["head"], h)
  return z, Trace(fwd, bwd, mask, head_in)


def _value_grad_norms(model: Model, loss):
  """``(params, x, y, key=None) -> (C, grads, dh_norms, dC/dx)``: the loss,
  its gradient by BPTT, ``||dC/dh_t||`` (``(directions, T)``) and the
  input's gradient, shaped like ``x``:

    dC/dx_t = cell.input_grads(delta_t^fwd) + cell.input_grads(delta_t^bwd)

  (``delta_t Wx^T`` for a tanh cell, summed over a GRU's three gates): both
  directions read ``x_t``, and :func:`bptt` indexes each one's ``dxs`` by
  the step it read, so the two add position by position. Under ``jit``
  what a caller drops (the norms, ``dC/dx``) is not computed."""
  losses.get(loss)
  losses.check_pair(loss, model.output_activation)
  spec = model.spec
  cell = _CELL[spec["cell"]]
  hidden = spec["hidden"]

  def fn(params, x, y, key=None):
    z, trace = _forward(spec, params, x, key)
    c, dz = backprop.loss_and_delta(model, loss, z, y)       # dC/dz, 1/m in
    dh, g_head = layers.dense_backward(params["head"], trace.head_in, dz)
    dh = layers.dropout_backward(trace.mask, dh)             # dC/d[h_T, h_1^bwd]
    grads = {"head": g_head}
    grads["fwd"], _, dxs, norms = bptt(cell, params["fwd"], trace.fwd,
                                       dh[:, :hidden])
    norms = [norms]
    if spec["bidirectional"]:
      # The backward cell read x_T first, so its BPTT runs forward in time.
      grads["bwd"], _, dxs_bwd, norms_bwd = bptt(cell, params["bwd"],
                                                 trace.bwd, dh[:, hidden:],
                                                 reverse=True)
      norms.append(norms_bwd)
      dxs = dxs + dxs_bwd                                    # (T, m, F)
    # (T, m, F) back to the batch-leading layout x arrived in
    dx = jnp.swapaxes(dxs, 0, 1).reshape(x.shape).astype(x.dtype)
    # Gradients in each param's own dtype, as jax.grad gives them (the
    # passes ran in the dtype of x and params mixed).
    grads = jax.tree_util.tree_map(lambda g, p: g.astype(p.dtype), grads,
                                   params)
    return c, grads, jnp.stack(norms), dx
  return fn


def _backward(model: Model, loss):
  """BPTT for a recurrent classifier: ``(params, x, y, key=None) -> (C,
  grads)``, the ``Model.backward`` of kinds ``rnn`` and ``gru`` (call it
  through :func:`funcnet.backprop.value_and_grad`); with ``wrt_input=True``,
  ``(C, grads, dC/dx)`` with ``dC/dx`` shaped like ``x``, the batch-mean
  loss's (see :func:`_value_grad_norms`).

  ``dC/dz`` (:func:`funcnet.backprop.loss_and_delta`) goes back through the
  head (:func:`funcnet.layers.dense_backward`), the final state's dropout
  with the forward's mask, then each direction's cell by :func:`bptt`.
  """
  vgn = _value_grad_norms(model, loss)

  def fn(params, x, y, key=None, wrt_input=False):
    c, grads, _, dx = vgn(params, x, y, key)
    return (c, grads, dx) if wrt_input else (c, grads)
  return fn


def hidden_grad_norms(model: Model, loss, params, x, y, key=None):
  """``||dC/dh_t||`` for ``t = 1..T``: how much the loss feels each hidden
  state, the picture of gradients vanishing (or exploding) through time.

  The norm is over the batch and the hidden units (Frobenius of the ``(m,
  H)`` array ``dC/dh_t``, which carries the batch mean's ``1/m``); ``dC/dh_t``
  is the total derivative through every later state and the head, as the
  hand-written BPTT (:func:`bptt`) carries it.

  Args:
    model: a model of kind ``rnn`` or ``gru``.
    loss: the loss name.
    params, x, y, key: as for :func:`funcnet.autodiff.value_and_grad`.

  Returns:
    ``(T,)``; ``(2, T)`` for a bidirectional model, row 1 the backward cell,
    whose entry ``t`` is its state after reading ``x_T .. x_t`` (so its
    first steps sit at the end, ``t = T``).

  Raises:
    ConfigError: the model is not a recurrent one.
  """
  if model.backward is not _backward:
    raise ConfigError(f"hidden_grad_norms reads a recurrent model; this model "
                      f"is a {model.kind!r}; expected kind 'rnn' or 'gru'")
  norms = _value_grad_norms(model, loss)(params, x, y, key)[2]
  return norms if model.spec["bidirectional"] else norms[0]


def rnn(in_shape, n_classes: int, hidden: int = 32, cell: str = "rnn",
        bidirectional: bool = False, input_features: int = 1,
        dropout: float = 0.0, init: str = "xavier",
        update_bias: float = 0.0) -> Model:
  """A recurrent classifier reading the final hidden state.

  Args:
    in_shape: ``(L,)`` or ``(L, F)``, the shape of one example.
    n_classes: the number of outputs.
    hidden: ``H``, the width of the hidden state.
    cell: ``"rnn"`` (tanh) or ``"gru"``.
    bidirectional: also read the sequence backwards and concatenate.
    input_features: for ``in_shape = (L,)``, values per step (must divide
      ``L``); for ``(L, F)`` it must be 1 or ``F``.
    dropout: the probability of dropping a unit of the final state.
    init: the initialiser of every weight matrix.
    update_bias: the GRU's initial update-gate bias ``b_u`` (every unit; the
      other biases start at 0). With ``b_u = 0``, ``u_t ~ 1/2`` and the
      carried path ``u_t * h_{t-1}`` halves the gradient every step; a
      positive ``b_u`` holds ``u_t`` near 1 (Jozefowicz et al. 2015's
      forget-gate bias, in the GRU's ``h_t = (1 - u) n + u h`` layout).

  Returns:
    A :class:`funcnet.model.Model` with output activation ``softmax``,
    ``spec["kind"] == cell`` and the hand-written BPTT as its ``backward``.

  Example:
    >>> model = rnn((40,), 10, hidden=16, cell="gru")
    >>> model.apply(model.init(jax.random.key(0)), jnp.zeros((4, 40))).shape
    (4, 10)
  """
  in_shape = layers.require_sizes("in_shape", in_shape)
  n_classes = layers.require_positive("n_classes", n_classes)
  hidden = layers.require_positive("hidden", hidden)
  cell = layers.require_choice("cell", cell, CELLS)
  input_features = layers.require_positive("input_features", input_features)
  dropout = layers.require_rate("dropout", dropout)
  initializers.get(init)
  if update_bias and cell != "gru":
    raise ConfigError(f"update_bias {update_bias} is a GRU's; the {cell} cell "
                      "has no update gate (expected 0)")
  if len(in_shape) == 1:
    if in_shape[0] % input_features:
      raise ShapeError(
          f"input_features {input_features} does not divide the sequence "
          f"length {in_shape[0]}; expected a divisor of {in_shape[0]}")
  elif len(in_shape) == 2:
    if input_features not in (1, in_shape[1]):
      raise ShapeError(
          f"input_features {input_features} does not match in_shape "
          f"{list(in_shape)}; expected 1 or {in_shape[1]}")
  else:
    raise ShapeError(f"in_shape {list(in_shape)} is not a sequence; expected "
                     "(L,) or (L, F)")
  _, features = _steps_features(in_shape, input_features)
  cell_init = _CELL[cell].init
  n_dirs = 2 if bidirectional else 1

  def init_fn(key, dtype=jnp.float32):
    keys = jax.random.split(key, n_dirs + 1)
    params = {"fwd": cell_init(keys[0], features, hidden, dtype, init)}
    if bidirectional:
      params["bwd"] = cell_init(keys[1], features, hidden, dtype, init)
    if update_bias:
      for d in ("fwd", "bwd")[:n_dirs]:
        params[d]["u"]["b"] = jnp.full((hidden,), update_bias, dtype)
    params["head"] = layers.dense_init(keys[-1], n_dirs * hidden, n_classes,
                                       dtype, init)
    return params

  spec = {"kind": cell, "in_shape": list(in_shape), "n_classes": n_classes,
          "hidden": hidden, "cell": cell, "bidirectional": bool(bidirectional),
          "input_features": input_features, "dropout": dropout, "init": init,
          **({"update_bias": float(update_bias)} if cell == "gru" else {}),
          "kinked": False}

  def logits_fn(params, x, key=None):
    return _forward(spec, params, x, key)[0]

  return Model(init_fn, logits_fn, "softmax", in_shape, n_classes, spec,
               head=("head",), backward=_backward)


def _from_config(table, spec):
  return {**table, "in_shape": spec.in_shape, "n_classes": spec.n_out}


_DEFAULTS = {"hidden": 32, "bidirectional": False, "input_features": 1,
             "dropout": 0.0, "init": "xavier"}
_DOCS = {
    "hidden": "hidden state width",
    "bidirectional": "also read the sequence backwards and concatenate the final states",
    "input_features": "values per time step (a length-40 signal with 1 is 40 steps)",
    "dropout": "dropout on the final state, in [0, 1)",
    "init": "weight initialiser: normal | xavier | he",
    "update_bias": "initial update-gate bias (> 0 carries the state and its gradient)",
}
for _cell, _what in (("rnn", "vanilla tanh RNN: "), ("gru", "GRU: ")):
  registry.register(registry.Kind(
      _cell, functools.partial(rnn, cell=_cell), _from_config,
      task="classification",
      defaults=dict(_DEFAULTS, **({"update_bias": 0.0} if _cell == "gru" else {})),
      docs={k: _what + v for k, v in _DOCS.items()
            if k != "update_bias" or _cell == "gru"}))
