"""Recurrent classifiers (vanilla tanh RNN and GRU), unrolled with ``jax.lax.scan``.

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
"""

import functools

import jax
import jax.numpy as jnp

from funcnet import data, initializers, layers
from funcnet.errors import ShapeError
from funcnet.model import Model, check_input
from funcnet.models import registry

CELLS = ("rnn", "gru")


def _gate_init(key, n_in, n_hidden, dtype, init):
  kx, kh = jax.random.split(key)
  w = initializers.get(init)
  return {"Wx": w(kx, (n_in, n_hidden), dtype),
          "Wh": w(kh, (n_hidden, n_hidden), dtype),
          "b": jnp.zeros((n_hidden,), dtype)}


def rnn_cell_init(key, n_in: int, n_hidden: int, dtype=jnp.float32,
                  init="xavier"):
  """``{"Wx": (n_in, H), "Wh": (H, H), "b": (H,)}``."""
  return _gate_init(key, n_in, n_hidden, dtype, init)


def rnn_step(params, h, x):
  """One tanh-RNN step: ``h (m, H), x (m, F) -> h' (m, H)``."""
  return jnp.tanh(x @ params["Wx"] + h @ params["Wh"] + params["b"])


def gru_cell_init(key, n_in: int, n_hidden: int, dtype=jnp.float32,
                  init="xavier"):
  """``{"u": gate, "r": gate, "n": gate}``, each gate as in :func:`rnn_cell_init`."""
  ku, kr, kn = jax.random.split(key, 3)
  return {g: _gate_init(k, n_in, n_hidden, dtype, init)
          for g, k in (("u", ku), ("r", kr), ("n", kn))}


def gru_step(params, h, x):
  """One GRU step: ``h (m, H), x (m, F) -> h' (m, H)`` (equations above)."""
  def pre(g, state):
    return x @ params[g]["Wx"] + state @ params[g]["Wh"] + params[g]["b"]
  u = jax.nn.sigmoid(pre("u", h))
  r = jax.nn.sigmoid(pre("r", h))
  n = jnp.tanh(pre("n", r * h))
  return (1 - u) * n + u * h


_CELL = {"rnn": (rnn_cell_init, rnn_step), "gru": (gru_cell_init, gru_step)}


def final_state(step, params, h0, xs, reverse: bool = False):
  """The last state after reading ``xs (T, m, F)`` from ``h0 (m, H)``, first
  step to last (last to first when ``reverse``): ``(m, H)``."""
  h, _ = jax.lax.scan(lambda h, x_t: (step(params, h, x_t), None), h0, xs,
                      reverse=reverse)
  return h


def rnn(in_shape, n_classes: int, hidden: int = 32, cell: str = "rnn",
        bidirectional: bool = False, input_features: int = 1,
        dropout: float = 0.0, init: str = "xavier") -> Model:
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

  Returns:
    A :class:`funcnet.model.Model` with output activation ``softmax`` and
    ``spec["kind"] == cell``.

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
  if len(in_shape) == 1:
    if in_shape[0] % input_features:
      raise ShapeError(
          f"input_features {input_features} does not divide the sequence "
          f"length {in_shape[0]}; expected a divisor of {in_shape[0]}")
    steps, features = in_shape[0] // input_features, input_features
  elif len(in_shape) == 2:
    if input_features not in (1, in_shape[1]):
      raise ShapeError(
          f"input_features {input_features} does not match in_shape "
          f"{list(in_shape)}; expected 1 or {in_shape[1]}")
    steps, features = in_shape
  else:
    raise ShapeError(f"in_shape {list(in_shape)} is not a sequence; expected "
                     "(L,) or (L, F)")
  cell_init, step = _CELL[cell]
  n_dirs = 2 if bidirectional else 1

  def init_fn(key, dtype=jnp.float32):
    keys = jax.random.split(key, n_dirs + 1)
    params = {"fwd": cell_init(keys[0], features, hidden, dtype, init)}
    if bidirectional:
      params["bwd"] = cell_init(keys[1], features, hidden, dtype, init)
    params["head"] = layers.dense_init(keys[-1], n_dirs * hidden, n_classes,
                                       dtype, init)
    return params

  def logits_fn(params, x, key=None):
    check_input(x, in_shape, cell)
    # Time leads so that scan walks over it: (T, m, F).
    xs = jnp.swapaxes(jnp.reshape(x, (x.shape[0], steps, features)), 0, 1)
    # The carry must keep one dtype through scan: that of x and params mixed.
    h0 = jnp.zeros((x.shape[0], hidden),
                   jnp.result_type(xs, params["head"]["W"]))
    h = final_state(step, params["fwd"], h0, xs)
    if bidirectional:
      h = jnp.concatenate(
          [h, final_state(step, params["bwd"], h0, xs, reverse=True)], -1)
    return layers.dense(params["head"], layers.dropout(h, dropout, key))

  spec = {"kind": cell, "in_shape": list(in_shape), "n_classes": n_classes,
          "hidden": hidden, "cell": cell, "bidirectional": bool(bidirectional),
          "input_features": input_features, "dropout": dropout, "init": init,
          "kinked": False}
  return Model(init_fn, logits_fn, "softmax", in_shape, n_classes, spec,
               head=("head",))


def _from_config(table, ds, n_out):
  return {**table, "in_shape": data.in_shape(ds), "n_classes": n_out}


_DEFAULTS = {"hidden": 32, "bidirectional": False, "input_features": 1,
             "dropout": 0.0, "init": "xavier"}
_DOCS = {
    "hidden": "hidden state width",
    "bidirectional": "also read the sequence backwards and concatenate the final states",
    "input_features": "values per time step (a length-40 signal with 1 is 40 steps)",
    "dropout": "dropout on the final state, in [0, 1)",
    "init": "weight initialiser: normal | xavier | he",
}
for _cell, _what in (("rnn", "vanilla tanh RNN: "), ("gru", "GRU: ")):
  registry.register(registry.Kind(
      _cell, functools.partial(rnn, cell=_cell), _from_config,
      task="classification", defaults=dict(_DEFAULTS),
      docs={k: _what + v for k, v in _DOCS.items()}))
