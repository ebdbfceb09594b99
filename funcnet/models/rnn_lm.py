"""Recurrent language models (LSTM, GRU, tanh RNN) with backpropagation
through time written out by hand: model kind ``rnn_lm``.

A window of ``T`` token ids ``x (m, T)`` is read left to right and every
position predicts the next token (``m`` examples, ``V`` tokens, ``d =
d_embed``, ``H = n_hidden``, ``L = n_layers``, ``h^0_t = e_t``):

  e_t   = E[x_t]                                     (m, d)     E: (V, d)
  s^l_t = cell(s^l_{t-1}, drop(h^{l-1}_t))           l = 1..L   s^l_0 = 0
  z_t   = drop(h^L_t) W + b                          (m, V)     W: (H, V)

and ``z (m, T, V)``, output softmax; ``drop`` is inverted dropout on every
layer's output (between layers and before the head), only when ``logits``
gets a key (never on ``e_t``, never on the recurrent connections: Zaremba
et al. 2014). The cell (``h^l_t (m, H)`` is its output):

  ``"lstm"`` (Hochreiter & Schmidhuber 1997; state ``s = (h, c)``; the four
  gates' pre-activations in one product, ``a = x Wx + h Wh + b``, ``Wx: (F,
  4H)``, ``Wh: (H, 4H)``, ``b: (4H,)``, split into quarters ``a_i, a_f, a_o,
  a_g`` in that order)

             i_t = sigma(a_i)   f_t = sigma(a_f)   o_t = sigma(a_o)
             g_t = tanh(a_g)
             c_t = f_t * c_{t-1} + i_t * g_t
             h_t = o_t * tanh(c_t)

  with the forget gate's bias ``b_f`` set to ``forget_bias`` (1.0: the cell
  remembers by default at the start, Jozefowicz et al. 2015);

  ``"gru"``, ``"tanh"``: the GRU and tanh-RNN cells of
  :mod:`funcnet.models.rnn` (state ``s = h``), the same step functions.

Params: ``{"embed": {"E": (V, d)}, "layers": [cell] * L, "head": {"W": (H,
V), "b": (V,)}}``; an LSTM cell is ``{"Wx", "Wh", "b"}`` as above.

The backward (:func:`_backward`, no autodiff) walks the same forward back:
the head and the last dropout for every position at once, then each
layer's BPTT, a reverse ``lax.scan`` that carries ``dC/ds_t`` (``dh`` and,
for the LSTM, ``dc``) and adds, at every step, the gradient arriving from
the layer above (or the head) at ``h_t``; then the embedding's scatter-add.
:func:`time_step_grad_norms` returns ``||dC/dh^l_t||`` from that scan.
With ``wrt_input=True`` it also returns ``dC/de``, what reaches the token
vectors ``e = E[x]`` before the scatter-add: ``Model.embed`` (:func:`embed`)
cuts the forward there, :func:`forward_embedded` being the rest.

The one-token form for sampling is ``Model.decoder``: the same cells fed
one token at a time, the state ``(h, c)`` per layer carried between steps.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import backprop, initializers, layers, losses
from funcnet.errors import ConfigError, ShapeError
from funcnet.model import Model
from funcnet.models import registry
# (funcnet.models.rnn is also the name of the rnn builder: import by path)
from funcnet.models.rnn import CELLS as RNN_CELLS
from funcnet.models.rnn import Cell as RNNCell


# --- the LSTM cell -------------------------------------------------------------

def lstm_cell_init(key, n_in: int, n_hidden: int, dtype=jnp.float32,
                   forget_bias: float = 1.0, init: str = "xavier"):
  """``{"Wx": (n_in, 4H), "Wh": (H, 4H), "b": (4H,)}``, gates ``i, f, o, g``.

  Each gate's block is drawn as a matrix of its own (``(n_in, H)``, ``(H,
  H)``), so the fused matrices start as four separate gates would; ``b_f =
  forget_bias``, the other biases 0.
  """
  w = initializers.get(init)
  kx, kh = jax.random.split(key)
  wx = [w(k, (n_in, n_hidden), dtype) for k in jax.random.split(kx, 4)]
  wh = [w(k, (n_hidden, n_hidden), dtype) for k in jax.random.split(kh, 4)]
  b = jnp.zeros((4, n_hidden), dtype).at[1].set(forget_bias)
  return {"Wx": jnp.concatenate(wx, 1), "Wh": jnp.concatenate(wh, 1),
          "b": b.reshape(-1)}


def lstm_step_forward(params, state, x):
  """One LSTM step (equations in the module docstring), keeping what its
  backward needs.

  ``state = (h_{t-1}, c_{t-1})``, each ``(m, H)``; ``x = x_t: (m, F)``.
  Returns ``((h_t, c_t), cache)`` with ``cache = (h_{t-1}, c_{t-1}, x_t,
  i_t, f_t, o_t, g_t, tanh c_t)``, the gates after their nonlinearities
  (``sigma' = s (1 - s)``, ``tanh' = 1 - tanh^2``).
  """
  h, c = state
  a = x @ params["Wx"] + h @ params["Wh"] + params["b"]        # (m, 4H)
  a_i, a_f, a_o, a_g = jnp.split(a, 4, axis=-1)
  i, f, o = jax.nn.sigmoid(a_i), jax.nn.sigmoid(a_f), jax.nn.sigmoid(a_o)
  g = jnp.tanh(a_g)
  c_new = f * c + i * g
  tc = jnp.tanh(c_new)
  return (o * tc, c_new), (h, c, x, i, f, o, g, tc)


def lstm_step_deltas(params, cache, dstate):
  """The part of the step backward that BPTT carries: ``((dh_{t-1},
  dc_{t-1}), da_t)``.

  ``dstate = (dh_t, dc_t^+)``: ``dh_t = dC/dh_t`` in total (every later
  step and the layers above), ``dc_t^+ = dc_{t+1} * f_{t+1}``, what reaches
  ``c_t`` from the next step. Every array ``(m, H)``:

    dc_t     = dh_t * o_t * (1 - tanh^2 c_t) + dc_{t+1} * f_{t+1}
    da_o     = dh_t * tanh c_t * o_t (1 - o_t)            output gate
    da_i     = dc_t * g_t * i_t (1 - i_t)                 input gate
    da_f     = dc_t * c_{t-1} * f_t (1 - f_t)             forget gate
    da_g     = dc_t * i_t * (1 - g_t^2)                   candidate
    da_t     = [da_i, da_f, da_o, da_g]                   (m, 4H)
    dh_{t-1} = da_t Wh^T                                  (m, H)
    dc_{t-1}^+ = dc_t * f_t                               carried to t-1
  """
  h, c, x, i, f, o, g, tc = cache
  dh, dc_next = dstate
  dc = dh * o * (1 - tc * tc) + dc_next
  da = jnp.concatenate([dc * g * i * (1 - i),
                        dc * c * f * (1 - f),
                        dh * tc * o * (1 - o),
                        dc * i * (1 - g * g)], axis=-1)
  return (da @ params["Wh"].T, dc * f), da


def lstm_input_grads(params, da):
  """``dx_t = da_t Wx^T`` (over any leading axes)."""
  return da @ params["Wx"].T


def lstm_weight_grads(cache, da):
  """The cell's weight gradients from its deltas (one step, or stacked over
  time and summed):

    dWx = sum_t x_t^T da_t   (F, 4H)    dWh = sum_t h_{t-1}^T da_t   (H, 4H)
    db  = sum_t sum_rows da_t   (4H,)
  """
  h, _, x = cache[:3]
  return {"Wx": jnp.einsum("...f,...k->fk", x, da),
          "Wh": jnp.einsum("...h,...k->hk", h, da),
          "b": jnp.sum(da.reshape(-1, da.shape[-1]), axis=0)}


def lstm_step_backward(params, cache, dstate):
  """The whole step backward of :func:`lstm_step_forward`, given ``dstate =
  (dh_t, dc_t^+)`` (see :func:`lstm_step_deltas`): ``((dh_{t-1},
  dc_{t-1}^+), dx_t, {"Wx": dWx, "Wh": dWh, "b": db})``, this step's
  share of the gradients."""
  dstate_prev, da = lstm_step_deltas(params, cache, dstate)
  return (dstate_prev, lstm_input_grads(params, da),
          lstm_weight_grads(cache, da))


# --- every cell as a language model reads it --------------------------------

class Cell(NamedTuple):
  """A cell with its state a tuple of ``(m, H)`` arrays, ``h`` first.

  ``init(key, n_in, H, dtype, forget_bias)``, ``forward(params, state, x) ->
  (state, cache)``, ``deltas(params, cache, dstate) -> (dstate_prev,
  delta)``, ``input_grads(params, delta) -> dx``, ``weight_grads(caches,
  deltas) -> dparams`` (see :mod:`funcnet.models.rnn`); ``n_state``: 2 for
  ``(h, c)``, 1 for ``(h,)``.
  """
  init: Callable
  forward: Callable
  deltas: Callable
  input_grads: Callable
  weight_grads: Callable
  n_state: int


def _from_rnn(cell: RNNCell) -> Cell:
  """A cell of :mod:`funcnet.models.rnn` (state ``h``) with state ``(h,)``."""
  def init(key, n_in, n_hidden, dtype, forget_bias):
    del forget_bias                              # no forget gate
    return cell.init(key, n_in, n_hidden, dtype)

  def forward(params, state, x):
    h, cache = cell.forward(params, state[0], x)
    return (h,), cache

  def deltas(params, cache, dstate):
    dh_prev, delta = cell.deltas(params, cache, dstate[0])
    return (dh_prev,), delta
  return Cell(init, forward, deltas, cell.input_grads, cell.weight_grads, 1)


def _lstm_init(key, n_in, n_hidden, dtype, forget_bias):
  return lstm_cell_init(key, n_in, n_hidden, dtype, forget_bias)


CELLS = {"lstm": Cell(_lstm_init, lstm_step_forward, lstm_step_deltas,
                      lstm_input_grads, lstm_weight_grads, 2),
         "gru": _from_rnn(RNN_CELLS["gru"]),
         "tanh": _from_rnn(RNN_CELLS["rnn"])}


def _zero_state(cell: Cell, m: int, n_hidden: int, dtype):
  return tuple(jnp.zeros((m, n_hidden), dtype) for _ in range(cell.n_state))


# --- one layer through time ----------------------------------------------------

def layer_forward(cell: Cell, params, state0, xs):
  """Reads ``xs (T, m, F)`` from ``state0``: ``(hs (T, m, H), caches)``,
  every step's output and cache stacked along time."""
  def body(state, x_t):
    state, cache = cell.forward(params, state, x_t)
    return state, (state[0], cache)
  return jax.lax.scan(body, state0, xs)[1]


def layer_backward(cell: Cell, params, caches, dhs):
  """BPTT through one layer, given ``dhs (T, m, H)``: what reaches each
  ``h_t`` from outside the layer (the layer above, or the head).

  A reverse scan carrying ``dC/ds_t`` (zero after the last step):

    dh_t               = dhs_t + dh_t^(from step t+1)        total dC/dh_t
    dstate_{t-1}, delta_t = cell.deltas(params, cache_t, dstate_t)

  then, with nothing left depending on the next step, a few large products
  over every step at once:

    dxs_t   = cell.input_grads(params, delta_t)              (T, m, F)
    dparams = sum_t cell.weight_grads(cache_t, delta_t)

  Returns ``(dxs, dparams, dh)``, ``dh (T, m, H)`` the total ``dC/dh_t``.
  """
  def body(dstate, inputs):
    cache_t, dh_in = inputs
    dstate = (dstate[0] + dh_in,) + dstate[1:]
    dstate_prev, delta = cell.deltas(params, cache_t, dstate)
    return dstate_prev, (delta, dstate[0])

  zero = tuple(jnp.zeros_like(dhs[0]) for _ in range(cell.n_state))
  _, (deltas, dh) = jax.lax.scan(body, zero, (caches, dhs), reverse=True)
  return (cell.input_grads(params, deltas),
          cell.weight_grads(caches, deltas), dh)


# --- the model -----------------------------------------------------------------

class Trace(NamedTuple):
  """The forward pass, kept for the backward.

  Attributes:
    ids: the tokens, time leading, ``(T, m)`` (the embedding's cache).
    caches: each layer's stacked step caches.
    masks: each layer's output dropout mask ``(T, m, H)``, or None.
    head_in: the head's input, ``drop(h^L)``, ``(m, T, H)``.
  """
  ids: jnp.ndarray
  caches: list
  masks: list
  head_in: jnp.ndarray


def _check_ids(x) -> None:
  """A one-line ``ShapeError`` unless ``x`` is ``(m, T)`` integer ids.

  Any ``T >= 1``: a recurrent model reads any length (the window of
  ``in_shape`` is what training feeds, not a limit)."""
  x = jnp.asarray(x)
  if x.ndim != 2 or x.shape[1] < 1:
    raise ShapeError(f"x has shape {x.shape}; rnn_lm expects (batch, T) "
                     "token ids")
  if not jnp.issubdtype(x.dtype, jnp.integer):
    raise ShapeError(f"x has dtype {x.dtype}; rnn_lm expects integer token "
                     "ids")


def forward(spec: dict, params, x, key=None):
  """The model of ``spec`` on ``x (m, T)`` int: ``(z (m, T, V), Trace)``.

  ``logits`` is this ``z``, so the backward sees the masks ``logits`` draws
  with ``key``: one key per layer's output, ``jax.random.split(key, L)``.
  The lookup ``e = E[x]`` is the one step before :func:`forward_embedded`,
  which is the rest.
  """
  _check_ids(x)
  ids = jnp.swapaxes(x, 0, 1)                       # time leads, for scan
  u, _ = layers.embed_forward(params["embed"], ids)  # (T, m, d)
  z, (caches, masks, head_in) = _layers_forward(spec, params, u, key)
  return z, Trace(ids, caches, masks, head_in)


def forward_embedded(spec: dict, params, e, key=None):
  """:func:`forward` from the token vectors ``e = E[x]: (m, T, d)`` on:
  ``z (m, T, V)`` (``Model.embed``'s ``logits_of``)."""
  shape = tuple(jnp.shape(e))
  if len(shape) != 3 or shape[1] < 1 or shape[2] != spec["d_embed"]:
    raise ShapeError(f"token vectors of shape {shape}; rnn_lm expects "
                     f"(batch, T, {spec['d_embed']})")
  return _layers_forward(spec, params, jnp.swapaxes(e, 0, 1), key)[0]


def embed(spec: dict, params, x):
  """``Model.embed``: ``(e, logits_of)``, ``e = E[x] (m, T, d)`` and
  ``logits_of(e, key=None)`` = :func:`forward_embedded`."""
  _check_ids(x)

  def logits_of(e, key=None):
    return forward_embedded(spec, params, e, key)
  return layers.embed(params["embed"], x), logits_of


def _layers_forward(spec: dict, params, u, key):
  """The layers and the head on ``u = e (T, m, d)``, time leading: ``(z
  (m, T, V), (caches, masks, head_in))``, as :class:`Trace` keeps them."""
  cell = CELLS[spec["cell"]]
  n_layers, rate = spec["n_layers"], spec["dropout"]
  keys = ([None] * n_layers if key is None
          else list(jax.random.split(key, n_layers)))
  # The scan's carry keeps one dtype: that of the params and the table mixed.
  dtype = jnp.result_type(u, params["head"]["W"])
  caches, masks = [], []
  for p, k in zip(params["layers"], keys):
    state0 = _zero_state(cell, u.shape[1], spec["n_hidden"], dtype)
    u, cache = layer_forward(cell, p, state0, u)
    u, mask = layers.dropout_forward(u, rate, k)
    caches.append(cache)
    masks.append(mask)
  z, head_in = layers.dense_forward(params["head"], jnp.swapaxes(u, 0, 1))
  return z, (caches, masks, head_in)


def _value_grad_norms(model: Model, loss):
  """``(params, x, y, key=None) -> (C, grads, dh_norms (L, T), dC/de)``,
  ``dC/de (m, T, d)`` the gradient with respect to the token vectors."""
  losses.get(loss)
  losses.check_pair(loss, model.output_activation)
  spec = model.spec
  cell = CELLS[spec["cell"]]

  def fn(params, x, y, key=None):
    z, trace = forward(spec, params, x, key)
    c, dz = backprop.loss_and_delta(model, loss, z, y)   # 1/(mT) in dz
    dh, g_head = layers.dense_backward(params["head"], trace.head_in, dz)
    du = jnp.swapaxes(dh, 0, 1)                         # (T, m, H)
    g_layers, norms = [None] * spec["n_layers"], [None] * spec["n_layers"]
    for l in reversed(range(spec["n_layers"])):
      du = layers.dropout_backward(trace.masks[l], du)
      du, g_layers[l], dh_l = layer_backward(cell, params["layers"][l],
                                             trace.caches[l], du)
      norms[l] = jnp.sqrt(jnp.sum(dh_l * dh_l, axis=(1, 2)))
    _, g_embed = layers.embed_backward(params["embed"], trace.ids, du)
    grads = {"embed": g_embed, "layers": g_layers, "head": g_head}
    # In each param's own dtype, as jax.grad returns them.
    grads = jax.tree_util.tree_map(lambda g, p: g.astype(p.dtype), grads,
                                   params)
    return c, grads, jnp.stack(norms), jnp.swapaxes(du, 0, 1)
  return fn


def _backward(model: Model, loss):
  """BPTT for a recurrent language model: ``(params, x, y, key=None) -> (C,
  grads)``, kind ``rnn_lm``'s ``Model.backward`` (call it through
  :func:`funcnet.backprop.value_and_grad`). From :func:`forward`, back:

    dz                = dC/dz (m, T, V)     loss_and_delta: mean over m T terms
    dW = sum_{m,t} drop(h^L_t)^T dz_t,  db = sum_{m,t} dz_t,  du^L = dz W^T
    for l = L .. 1:
      dh^l_t = du^l_t * mask^l_t            the layer's output dropout
      du^{l-1}, dparams^l = layer_backward(cell, dh^l)     BPTT (dh, dc)
    dE[r] = sum over (i, t) with x[i, t] = r of du^0[t, i]   scatter-add

  With ``wrt_input=True`` the result is ``(C, grads, dC/de)``, ``dC/de[i,
  t] = du^0[t, i]`` (``(m, T, d)``, before the scatter-add): the gradient
  with respect to the token vectors ``e = E[x]`` (``Model.embed``).

  ``layer_backward``'s scan adds ``dh^l_t`` to what flows back from step
  ``t + 1`` (every position's loss reaches every earlier state), and the
  LSTM's steps follow :func:`lstm_step_deltas`: ``dc_t = dh_t o_t (1 -
  tanh^2 c_t) + dc_{t+1} f_{t+1}``.
  """
  vgn = _value_grad_norms(model, loss)

  def fn(params, x, y, key=None, wrt_input=False):
    c, grads, _, de = vgn(params, x, y, key)
    return (c, grads, de) if wrt_input else (c, grads)
  return fn


def time_step_grad_norms(model: Model, params, x, y, key=None,
                         loss="cross_entropy"):
  """``||dC/dh^l_t||`` for every layer ``l`` and position ``t``: how much
  the loss feels each hidden state, the vanishing-gradient picture on text.

  ``dC/dh^l_t`` is the total derivative, through every later step of the
  layer, the layers above and the head, as the hand-written BPTT carries it
  (:func:`layer_backward`); the norm is over the batch and the hidden
  units of that ``(m, H)`` array (which carries the mean's ``1/(mT)``).
  ``h_t`` feeds the losses of positions ``t .. T-1``: were nothing lost on
  the way back, the norm would grow towards ``t = 0`` (more losses reach
  it); a vanishing gradient keeps it flat, each state hearing only its
  nearest positions.

  Args:
    model: a model of kind ``rnn_lm``.
    params, x, y, key: as for :func:`funcnet.autodiff.value_and_grad`
      (``x, y (m, T)`` token ids and their next tokens).
    loss: the loss name.

  Returns:
    ``(L, T)``: row ``l`` the ``l``-th layer (0 the lowest), column ``t``
    position ``t``.

  Raises:
    ConfigError: the model is not an ``rnn_lm``.
  """
  if model.backward is not _backward:
    raise ConfigError(f"time_step_grad_norms reads a recurrent language "
                      f"model; this model is a {model.kind!r}; expected kind "
                      "'rnn_lm'")
  return _value_grad_norms(model, loss)(params, x, y, key)[2]


def _decoder(spec: dict):
  """``Model.decoder`` of the ``rnn_lm`` of ``spec``: ``decoder(params, m,
  max_len) -> (carry, step)``, ``carry`` the zero state of every layer and
  ``step(carry, token (m,), t) -> (carry, z (m, V))`` one position of
  :func:`forward` without dropout (a recurrent model needs neither ``t``
  nor a cache: ``max_len`` is only checked)."""
  cell = CELLS[spec["cell"]]

  def decoder(params, m, max_len):
    m = layers.require_positive("m", m)
    layers.require_positive("max_len", max_len)
    dtype = jnp.result_type(params["embed"]["E"], params["head"]["W"])
    carry = [_zero_state(cell, m, spec["n_hidden"], dtype)
             for _ in params["layers"]]

    def step(carry, token, t):
      del t                                   # the state is all it needs
      u = layers.embed(params["embed"], token)            # (m, d)
      new = []
      for p, state in zip(params["layers"], carry):
        state, _ = cell.forward(p, state, u)
        u = state[0]
        new.append(state)
      return new, layers.dense(params["head"], u)
    return carry, step
  return decoder


def _require_number(name, value) -> float:
  try:
    ok = not isinstance(value, bool) and np.isfinite(float(value))
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ConfigError(f"{name} {value!r} must be a finite number")
  return float(value)


def rnn_lm(in_shape, vocab_size: int, cell: str = "lstm", n_layers: int = 1,
           n_hidden: int = 128, d_embed: int = 64, forget_bias: float = 1.0,
           dropout: float = 0.0) -> Model:
  """A recurrent language model (equations in the module docstring).

  Args:
    in_shape: ``(T,)``, the window length.
    vocab_size: ``V``, the number of tokens (the head's width).
    cell: ``"lstm"``, ``"gru"`` or ``"tanh"``.
    n_layers: stacked recurrent layers.
    n_hidden: ``H``, each layer's state width.
    d_embed: the token embedding's width.
    forget_bias: the LSTM forget gate's initial bias (unused by the others).
    dropout: the probability of dropping a unit of each layer's output.

  Returns:
    A :class:`funcnet.model.Model`: ``x (m, T)`` int token ids to ``z (m,
    T, V)``, output softmax, the hand-written BPTT as its ``backward`` and
    the one-token form as its ``decoder``.

  Example:
    >>> model = rnn_lm((16,), 30, n_hidden=8, d_embed=4)
    >>> x = jnp.zeros((2, 16), jnp.int32)
    >>> model.logits(model.init(jax.random.key(0)), x).shape
    (2, 16, 30)
  """
  in_shape = layers.require_sizes("in_shape", in_shape)
  if len(in_shape) != 1:
    raise ShapeError(f"in_shape {list(in_shape)} is not a window of tokens; "
                     "expected (T,)")
  vocab_size = layers.require_positive("vocab_size", vocab_size)
  cell = layers.require_choice("cell", cell, tuple(CELLS))
  n_layers = layers.require_positive("n_layers", n_layers)
  n_hidden = layers.require_positive("n_hidden", n_hidden)
  d_embed = layers.require_positive("d_embed", d_embed)
  forget_bias = _require_number("forget_bias", forget_bias)
  dropout = layers.require_rate("dropout", dropout)
  cell_init = CELLS[cell].init

  def init_fn(key, dtype=jnp.float32):
    k_embed, k_head, *k_layers = jax.random.split(key, 2 + n_layers)
    # N(0, 1) rows, as one-hot inputs would give the first layer unit-size
    # inputs (the 0.02 of a transformer's table starves a recurrent cell).
    return {"embed": layers.embedding_init(k_embed, vocab_size, d_embed,
                                           dtype, scale=1.0),
            "layers": [cell_init(k, d_embed if l == 0 else n_hidden,
                                 n_hidden, dtype, forget_bias)
                       for l, k in enumerate(k_layers)],
            "head": layers.dense_init(k_head, n_hidden, vocab_size, dtype)}

  spec = {"kind": "rnn_lm", "in_shape": list(in_shape),
          "vocab_size": vocab_size, "cell": cell, "n_layers": n_layers,
          "n_hidden": n_hidden, "d_embed": d_embed,
          "forget_bias": forget_bias, "dropout": dropout, "kinked": False}

  def logits_fn(params, x, key=None):
    return forward(spec, params, x, key)[0]

  def embed_fn(params, x):
    return embed(spec, params, x)

  return Model(init_fn, logits_fn, "softmax", in_shape, vocab_size, spec,
               head=("head",), backward=_backward, decoder=_decoder(spec),
               embed=embed_fn)


def _from_config(table, spec):
  if not np.issubdtype(np.dtype(spec.x_dtype), np.integer):
    raise ConfigError(f"model.kind = 'rnn_lm' needs token ids; {spec.name!r} "
                      f"has {spec.x_dtype} inputs; use data.name = 'text'")
  return {**table, "in_shape": spec.in_shape, "vocab_size": spec.n_out}


def _shown(spec):
  # Only the LSTM has a forget gate.
  return {k: v for k, v in spec.items()
          if k != "forget_bias" or spec["cell"] == "lstm"}


KIND = registry.register(registry.Kind(
    "rnn_lm", rnn_lm, _from_config, task="language", shown=_shown,
    defaults={"cell": "lstm", "n_layers": 1, "n_hidden": 128, "d_embed": 64,
              "forget_bias": 1.0, "dropout": 0.0},
    docs={
        "cell": "lstm | gru | tanh: the recurrent cell",
        "n_layers": "stacked recurrent layers",
        "n_hidden": "each layer's state width",
        "d_embed": "token embedding width",
        "forget_bias": "the LSTM forget gate's initial bias (1.0: remember "
                       "at the start; Jozefowicz et al. 2015)",
        "dropout": "dropout on each layer's output (between layers and "
                   "before the head), in [0, 1)",
    }))
