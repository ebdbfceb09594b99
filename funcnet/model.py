"""The contract every funcnet model keeps, and the helpers that check inputs.

A model is a :class:`Model`, a named tuple of pure functions and static facts:

  params = model.init(key)                      # a plain pytree (dicts, lists, arrays)
  z      = model.logits(params, x, key=None)    # (m, *in_shape) -> (m, n_out), pre-activation
  a      = model.apply(params, x, key=None)     # output_activation(z)

``key`` switches on the model's randomness (dropout) for training; ``None``
means evaluation, which is deterministic. Losses are computed from ``z`` and
the output activation (see :mod:`funcnet.losses`), which keeps
``bce``/``cross_entropy`` finite however confident the model is.

The training loop, the gradient check and the parallel runner use only this
contract, so any model that keeps it (MLP, CNN, RNN, Transformer,
recommender) trains unchanged.
"""

from typing import Any, Callable, NamedTuple, Optional

import jax.numpy as jnp

from funcnet import activations
from funcnet.errors import ShapeError


class Model(NamedTuple):
  """A model as pure functions.

  Attributes:
    init: ``(key, dtype=jnp.float32) -> params``.
    logits: ``(params, x, key=None) -> z``, ``x: (m, *in_shape)``,
      ``z: (m, n_out)`` (a per-position model: ``(m, T, n_out)``).
    output_activation: the name of the activation that maps ``z`` to the
      output ``a`` (or a pair ``(f, f_prime)`` of one's own, see
      :func:`funcnet.activations.from_functions`).
    in_shape: the shape of one example.
    n_out: the width of the output.
    spec: the hyperparameters that built the model (``spec["kind"]`` names
      its kind in :mod:`funcnet.models`, whose builder rebuilds it from the
      other keys).
    head: the path from the params' root to the output layer's ``{"W",
      "b"}`` (what fine-tuning replaces), e.g. ``(-1,)`` for an MLP; None for
      models without one (recommenders).
    backward: the kind's hand-written gradient, ``backward(model, loss) ->
      (params, x, y, key=None) -> (C, grads)``, written from the delta
      equations without ``jax.grad``; None where the kind has none yet.
      Asked with ``wrt_input=True`` it returns ``(C, grads, dC/dx)``, the
      input's gradient shaped like ``x`` (ids: like ``embed``'s ``e``).
      :func:`funcnet.backprop.value_and_grad` calls it.
    kinks: ``(params, x) -> (k,)``, the hidden pre-activations that sit
      before a kinked activation (relu), so the gradient check can skip a
      finite difference whose two sides straddle one; None when there are
      none or the kind does not expose them (see :mod:`funcnet.gradcheck`).
    trace: ``(params, x, key=None) -> funcnet.backprop.Trace``, the forward
      pass with every ``z_l`` and ``a_l`` kept (an MLP's, which
      :func:`funcnet.backprop.forward` returns); None for other kinds.
    decoder: a language model's one-token-at-a-time form, for sampling:
      ``decoder(params, m, max_len) -> (carry, step)`` with ``carry`` the
      model's memory before any token (a pytree: a GPT's key/value cache
      for ``max_len`` positions, a recurrent model's zero state) and
      ``step(carry, token, t) -> (carry, z)``: ``token (m,)`` int32 is
      the token at position ``t`` (an int32 scalar, traced), ``z (m,
      n_out)`` the logits for position ``t + 1``, equal to
      ``logits(params, x)[:, t]`` for ``x`` the tokens ``0..t`` fed so far
      (``t < max_len``; a GPT also needs ``max_len <= block_size``).
      Jittable, no Python loop inside. None for models that are not
      per-position language models.
    refresh: ``(old_params, new_params, x, key) -> new_params`` for models
      with state in their params that is not learned by gradient (batch
      norm's running statistics): ``train_step`` calls it after the
      optimizer's update with the step's batch; it returns ``new_params``
      with those leaves recomputed from ``old_params`` and ``x``. None:
      params are only what the optimizer makes them.
    embed: for a kind whose inputs are integer ids (tokens, ``(user,
      item)`` pairs): ``(params, x) -> (e, logits_of)`` with ``e`` the
      looked-up embedding vectors (what an input gradient is taken with
      respect to, e.g. ``(m, T, d)``) and ``logits_of(e, key=None)`` the
      rest of the model, so ``logits_of(e) = logits(params, x)``. None for
      real-valued inputs (:mod:`funcnet.inputgrad`).
  """
  init: Callable
  logits: Callable
  output_activation: str
  in_shape: tuple
  n_out: int
  spec: dict
  head: Optional[tuple] = None
  backward: Optional[Callable] = None
  kinks: Optional[Callable] = None
  trace: Optional[Callable] = None
  decoder: Optional[Callable] = None
  refresh: Optional[Callable] = None
  embed: Optional[Callable] = None

  def apply(self, params, x, key=None):
    """``a = f(z)``: the model's output, ``(m, n_out)``."""
    return activations.get(self.output_activation).f(self.logits(params, x, key))

  @property
  def kind(self) -> str:
    return self.spec.get("kind", "model")


class DataSpec(NamedTuple):
  """What a model builder reads of its data: a few facts, not the arrays.

  A builder sized from a config (``registry.from_config``) gets one of these
  (:func:`funcnet.data.spec` makes it from a dataset), so model kinds need
  nothing from :mod:`funcnet.data`.

  Attributes:
    name: the dataset's name, for messages.
    task: the data's task (``"classification"``, ...).
    in_shape: the shape of one input example, e.g. ``(64,)``.
    x_dtype: the inputs' dtype name: ``"float32"`` for features, an integer
      dtype for ids (ratings' ``(user, item)`` pairs).
    n_out: the width of the model's output, ``z: (m, n_out)``.
    n_users, n_items: the id ranges of ``(user, item)`` inputs; None for
      other data.
    target_mean: the training split's mean target (where a recommender's
      ``r = mu + ...`` starts); None when the split is not in memory.
  """
  name: str
  task: str
  in_shape: tuple
  x_dtype: str
  n_out: int
  n_users: Optional[int] = None
  n_items: Optional[int] = None
  target_mean: Optional[float] = None


def check_input(x, in_shape: tuple, what: str = "model") -> None:
  """Raises a one-line ``ShapeError`` unless ``x`` is ``(m, *in_shape)``."""
  shape = tuple(jnp.shape(x))
  if len(shape) != 1 + len(in_shape) or shape[1:] != tuple(in_shape):
    if len(in_shape) == 1 and len(shape) == 2:
      raise ShapeError(
          f"x has {shape[1]} features per example; this {what} expects "
          f"{in_shape[0]}")
    raise ShapeError(
        f"x has shape {shape}; this {what} expects (batch, "
        f"{', '.join(map(str, in_shape))})")


Params = Any
