"""Rating predictors for (user, item) pairs: matrix factorisation and NCF.

An example is a pair of integer ids ``x[i] = (u, i)`` (``x: (m, 2)``); the
output is a predicted rating ``z: (m, 1)`` with identity output, trained
with the ``"mse"`` loss (``0.5 (r_hat - r)^2`` per example), or ``"mae"`` or
``"huber"`` (see :mod:`funcnet.losses`).

``matrix_factorization`` (Koren, Bell & Volinsky 2009):

  r_hat_ui = mu + b_u + b_i + p_u . q_i
           mu: ()  b: (n_users,), (n_items,)  P: (n_users, k)  Q: (n_items, k)

``ncf`` (neural collaborative filtering, the MLP branch of He et al. 2017):

  h_0 = [p_u, q_i]                         (m, 2 e)
  h_j = f(h_{j-1} @ W_j + b_j)             (m, n_j)
  r_hat = mu + drop(h_J) @ W_out + b_out   (m, 1)

The global mean ``mu`` is a *learned* scalar param initialised to the
``global_mean`` argument (default 0). Passing the training ratings' mean
starts the model at the best constant predictor, so the rest only learns
deviations; leaving it learned costs one parameter and lets the default of
0 still work.

Both kinds carry their hand-written backward (``Model.backward``), from
``dz = dC/dz: (m, 1)`` (the 1/m included, see
:func:`funcnet.backprop.loss_and_delta`) and ``dr = dz[:, 0]``; the
lookups' gradients are scatter-adds, so a user or item met twice in a batch
gets both contributions:

  mf:   dmu = sum_e dr_e                  db_user[u] += dr    db_item[i] += dr
        dP[u] += dr q_i                   dQ[i] += dr p_u
  ncf:  dmu = sum_e dr_e, then back through the MLP (dense, dropout and
        activation backwards of :mod:`funcnet.layers`) to dh_0 (m, 2 e),
        split as the concatenation was: dp_u = dh_0[:, :e], dq_i = dh_0[:, e:],
        then dE_user[u] += dp_u, dE_item[i] += dq_i (``embed_backward``).

The input gradient (``wrt_input=True``, :mod:`funcnet.inputgrad`) is taken
with respect to the looked-up vectors ``e = [p_u, q_i]: (m, 2, d)``
(``Model.embed``; ``d`` the rank or the embedding width): row ``e`` of
``x`` becomes a ``(2, d)`` pair of rows, as a token becomes its embedding.
The manual backward returns ``dC/de`` before the scatter-adds above (mf:
``[dr q_i, dr p_u]``; ncf: ``dh_0`` reshaped to ``(m, 2, e)``); mf's
biases ``b_u, b_i`` are looked up too but are not part of ``e``.

Ids are checked against ``n_users``/``n_items`` whenever ``x`` is concrete
(outside ``jit``), since JAX would silently clamp an out-of-range index.
Float arrays holding whole numbers are accepted and cast to ids.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import backprop, initializers, layers, losses
from funcnet.errors import ShapeError
from funcnet.model import Model, check_input
from funcnet.models import registry


def _ids(x, n_users, n_items, what):
  check_input(x, (2,), what)
  if not isinstance(x, jax.core.Tracer):
    xn = np.asarray(x)
    if xn.size and (not np.all(xn == np.round(xn))):
      raise ShapeError(f"{what} ids must be whole numbers; got {xn.dtype} "
                       "values with fractions")
    for col, name, n in ((0, "user", n_users), (1, "item", n_items)):
      if xn.size and (xn[:, col].min() < 0 or xn[:, col].max() >= n):
        raise ShapeError(
            f"{name} ids range over [{int(xn[:, col].min())}, "
            f"{int(xn[:, col].max())}]; expected ids in [0, {n - 1}]")
  ids = jnp.asarray(x).astype(jnp.int32)
  return ids[:, 0], ids[:, 1]


def _mf_lookup(spec, params, x):
  """``(u, i, e)``: the ids ``(m,)`` each and ``e = [p_u, q_i]: (m, 2, k)``,
  the factor rows the pair looks up (``Model.embed``'s ``e``)."""
  u, i = _ids(x, spec["n_users"], spec["n_items"], "mf")
  return u, i, jnp.stack([params["P"][u], params["Q"][i]], axis=1)


def _mf_rating(params, u, i, e):
  """``z = r[:, None]``, ``r = mu + b_u + b_i + p_u . q_i`` from the looked-up
  factors ``e = [p_u, q_i]: (m, 2, k)``."""
  r = (params["mu"] + params["b_user"][u] + params["b_item"][i]
       + jnp.sum(e[:, 0] * e[:, 1], axis=-1))
  return r[:, None]


def _mf_forward(spec, params, x):
  """``z = r[:, None]``, ``r = mu + b_u + b_i + p_u . q_i``; the cache is
  ``(u, i, p_u, q_i)``, ids ``(m,)`` and factors ``(m, k)``."""
  u, i, e = _mf_lookup(spec, params, x)
  return _mf_rating(params, u, i, e), (u, i, e[:, 0], e[:, 1])


def _mf_embed(spec):
  """MF's ``Model.embed``: ``(params, x) -> (e, logits_of)``, ``e = [p_u,
  q_i]: (m, 2, k)`` (the biases ``b_u, b_i`` stay inside ``logits_of``)."""
  def embed(params, x):
    u, i, e = _mf_lookup(spec, params, x)
    return e, lambda e_, key=None: _mf_rating(params, u, i, e_)
  return embed


def _mf_backward(model, loss):
  """MF's hand-written ``(params, x, y, key=None) -> (C, grads)``.

  From ``dr = dC/dr: (m,)``, each example ``e = (u, i)`` adds

    dmu += dr_e        db_user[u] += dr_e       db_item[i] += dr_e
    dP[u] += dr_e q_i  (k,)                     dQ[i] += dr_e p_u  (k,)

  (``d(p_u . q_i)/dp_u = q_i``), summed by scatter-adds over repeated ids.
  With ``wrt_input=True``, ``(C, grads, dC/de)``: the gradient with respect
  to the looked-up factors ``e = [p_u, q_i]`` (``Model.embed``), ``(m, 2,
  k)``, the per-example terms before the scatter-adds:

    dC/dp_u = dr_e q_i        dC/dq_i = dr_e p_u
  """
  losses.check_pair(loss, model.output_activation)
  spec = model.spec

  def fn(params, x, y, key=None, wrt_input=False):
    del key  # no randomness in the forward pass
    z, (u, i, p_u, q_i) = _mf_forward(spec, params, x)
    c, dz = backprop.loss_and_delta(model, loss, z, y)
    dr = dz[:, 0]                                                  # (m,)
    dp, dq = dr[:, None] * q_i, dr[:, None] * p_u                  # (m, k)
    grads = {"mu": jnp.sum(dr),
             "b_user": jnp.zeros_like(params["b_user"]).at[u].add(dr),
             "b_item": jnp.zeros_like(params["b_item"]).at[i].add(dr),
             "P": jnp.zeros_like(params["P"]).at[u].add(dp),
             "Q": jnp.zeros_like(params["Q"]).at[i].add(dq)}
    if not wrt_input:
      return c, grads
    return c, grads, jnp.stack([dp, dq], axis=1)
  return fn


def _ncf_lookup(spec, params, x):
  """``(e, caches)``: ``e = [p_u, q_i]: (m, 2, e)``, the embedding rows the
  pair looks up (``Model.embed``'s ``e``), and the two lookups' caches."""
  u, i = _ids(x, spec["n_users"], spec["n_items"], "ncf")
  p_u, c_user = layers.embed_forward(params["user"], u)
  q_i, c_item = layers.embed_forward(params["item"], i)
  return jnp.stack([p_u, q_i], axis=1), (c_user, c_item)


def _ncf_forward(spec, params, x, key=None):
  """``z = mu + dense(drop(h_J))`` as in the module docstring; the caches
  are the lookups', each hidden layer's ``(dense, activation)``, the
  dropout mask (None without a key) and the output layer's."""
  e, (c_user, c_item) = _ncf_lookup(spec, params, x)
  z, caches = _ncf_mlp(spec, params, e, key)
  return z, (c_user, c_item) + caches


def _ncf_mlp(spec, params, e, key=None):
  """The model after the lookups, from ``e = [p_u, q_i]: (m, 2, e)``:
  ``(z, (hidden caches, dropout mask, output layer's cache))``."""
  act = layers.hidden_activation(spec["activation"])
  h = e.reshape(e.shape[0], -1)                   # [p_u, q_i] concatenated: (m, 2 e)
  hidden = []
  for p in params["mlp"][:-1]:
    z, c_dense = layers.dense_forward(p, h)
    h, c_act = layers.activation_forward(act, z)
    hidden.append((c_dense, c_act))
  h, mask = layers.dropout_forward(h, spec["dropout"], key)
  out, c_out = layers.dense_forward(params["mlp"][-1], h)
  return params["mu"] + out, (hidden, mask, c_out)


def _ncf_embed(spec):
  """NCF's ``Model.embed``: ``(params, x) -> (e, logits_of)``, ``e = [p_u,
  q_i]: (m, 2, e)`` and ``logits_of(e, key=None)`` the MLP on them."""
  def embed(params, x):
    e, _ = _ncf_lookup(spec, params, x)
    return e, lambda e_, key=None: _ncf_mlp(spec, params, e_, key)[0]
  return embed


def _ncf_backward(model, loss):
  """NCF's hand-written ``(params, x, y, key=None) -> (C, grads)``: the
  forward's steps in reverse, each by its ``*_backward`` in
  :mod:`funcnet.layers`:

    dmu = sum_e dz_e                              (the added scalar)
    dh_J = dz @ W_out.T,  then * r / (1 - rate)   (dense, dropout)
    dz_j = dh_j * f'(z_j),  dh_{j-1} = dz_j @ W_j.T   (activation, dense)
    dp_u, dq_i = dh_0[:, :e], dh_0[:, e:]         (the concatenation's split)
    dE_user[u] += dp_u,  dE_item[i] += dq_i       (scatter-adds)

  With a key, the dropout mask is the one ``model.logits(params, x, key)``
  draws: both run :func:`_ncf_forward`. With ``wrt_input=True``, ``(C,
  grads, dC/de)``: ``dh_0`` before the split and the scatter-adds, as the
  looked-up vectors ``e = [p_u, q_i]`` (``Model.embed``) stack it, ``(m, 2,
  e)``.
  """
  losses.check_pair(loss, model.output_activation)
  spec = model.spec
  act = layers.hidden_activation(spec["activation"])
  e = spec["embed"]

  def fn(params, x, y, key=None, wrt_input=False):
    z, (c_user, c_item, hidden, mask, c_out) = _ncf_forward(spec, params, x,
                                                            key)
    c, dz = backprop.loss_and_delta(model, loss, z, y)            # (m, 1)
    mlp = params["mlp"]
    dh, g_out = layers.dense_backward(mlp[-1], c_out, dz)
    dh = layers.dropout_backward(mask, dh)
    g_mlp = [g_out]
    for p, (c_dense, c_act) in zip(reversed(mlp[:-1]), reversed(hidden)):
      dh = layers.activation_backward(act, c_act, dh)
      dh, g = layers.dense_backward(p, c_dense, dh)
      g_mlp.insert(0, g)
    _, g_user = layers.embed_backward(params["user"], c_user, dh[:, :e])
    _, g_item = layers.embed_backward(params["item"], c_item, dh[:, e:])
    grads = {"mu": jnp.sum(dz), "user": g_user, "item": g_item, "mlp": g_mlp}
    if not wrt_input:
      return c, grads
    return c, grads, dh.reshape(dh.shape[0], 2, e)        # [dp_u, dq_i]
  return fn


def matrix_factorization(n_users: int, n_items: int, rank: int = 8,
                         init_scale: float = 0.1,
                         global_mean: float = 0.0) -> Model:
  """Biased matrix factorisation.

  Args:
    n_users, n_items: the number of distinct ids of each kind.
    rank: ``k``, the width of the user and item factors.
    init_scale: factors start as ``N(0, init_scale^2)``; biases at 0.
    global_mean: the starting value of the learned ``mu``.

  Returns:
    A :class:`funcnet.model.Model` with ``in_shape (2,)``, ``n_out 1``,
    identity output, params ``{"mu": (), "b_user": (n_users,),
    "b_item": (n_items,), "P": (n_users, k), "Q": (n_items, k)}``.

  Example:
    >>> model = matrix_factorization(100, 50, rank=4, global_mean=3.5)
    >>> x = jnp.array([[0, 1], [99, 49]])
    >>> model.apply(model.init(jax.random.key(0)), x).shape
    (2, 1)
  """
  n_users = layers.require_positive("n_users", n_users)
  n_items = layers.require_positive("n_items", n_items)
  rank = layers.require_positive("rank", rank)
  init_scale = layers.require_positive_number("init_scale", init_scale)
  global_mean = float(global_mean)

  def init_fn(key, dtype=jnp.float32):
    k_p, k_q = jax.random.split(key)
    return {"mu": jnp.asarray(global_mean, dtype),
            "b_user": jnp.zeros((n_users,), dtype),
            "b_item": jnp.zeros((n_items,), dtype),
            "P": initializers.scaled_normal(k_p, (n_users, rank), dtype,
                                            init_scale),
            "Q": initializers.scaled_normal(k_q, (n_items, rank), dtype,
                                            init_scale)}

  spec = {"kind": "mf", "n_users": n_users, "n_items": n_items, "rank": rank,
          "init_scale": init_scale, "global_mean": global_mean,
          "kinked": False}

  def logits_fn(params, x, key=None):
    del key  # no randomness in the forward pass
    return _mf_forward(spec, params, x)[0]

  return Model(init_fn, logits_fn, "identity", (2,), 1, spec,
               backward=_mf_backward, embed=_mf_embed(spec))


def ncf(n_users: int, n_items: int, embed: int = 8,
        hidden: Sequence[int] = (16, 8), activation: str = "relu",
        dropout: float = 0.0, init: str = "he", init_scale: float = 0.1,
        global_mean: float = 0.0) -> Model:
  """Neural collaborative filtering: embeddings, concatenated, through an MLP.

  Args:
    n_users, n_items: the number of distinct ids of each kind.
    embed: ``e``, the width of each embedding.
    hidden: widths of the MLP's hidden layers (may be empty).
    activation: the hidden activation, by name.
    dropout: the probability of dropping a unit of the last hidden layer.
    init: the initialiser of the MLP's weights.
    init_scale: embeddings start as ``N(0, init_scale^2)``.
    global_mean: the starting value of the learned ``mu``.

  Returns:
    A :class:`funcnet.model.Model` with ``in_shape (2,)``, ``n_out 1``,
    identity output, params ``{"mu": (), "user": {"E": (n_users, e)},
    "item": {"E": (n_items, e)}, "mlp": [{"W", "b"}, ...]}``.
  """
  n_users = layers.require_positive("n_users", n_users)
  n_items = layers.require_positive("n_items", n_items)
  embed = layers.require_positive("embed", embed)
  hidden = list(layers.require_sizes("hidden", hidden, empty_ok=True))
  act = layers.hidden_activation(activation)
  dropout = layers.require_rate("dropout", dropout)
  initializers.get(init)
  init_scale = layers.require_positive_number("init_scale", init_scale)
  global_mean = float(global_mean)
  widths = [2 * embed] + hidden + [1]

  def init_fn(key, dtype=jnp.float32):
    k_user, k_item, *k_mlp = jax.random.split(key, 2 + len(widths) - 1)
    return {"mu": jnp.asarray(global_mean, dtype),
            "user": layers.embedding_init(k_user, n_users, embed, dtype,
                                          init_scale),
            "item": layers.embedding_init(k_item, n_items, embed, dtype,
                                          init_scale),
            "mlp": [layers.dense_init(k, n0, n1, dtype, init)
                    for k, n0, n1 in zip(k_mlp, widths[:-1], widths[1:])]}

  spec = {"kind": "ncf", "n_users": n_users, "n_items": n_items,
          "embed": embed, "hidden": hidden, "activation": act.name,
          "dropout": dropout, "init": init, "init_scale": init_scale,
          "global_mean": global_mean, "kinked": act.kink}

  def logits_fn(params, x, key=None):
    return _ncf_forward(spec, params, x, key)[0]

  return Model(init_fn, logits_fn, "identity", (2,), 1, spec,
               backward=_ncf_backward, embed=_ncf_embed(spec))


def _from_config(table, spec):
  # The users, items and the mean rating r = mu + ... starts from: the data's.
  return {**table, "n_users": spec.n_users, "n_items": spec.n_items,
          "global_mean": spec.target_mean}


registry.register(registry.Kind(
    "mf", matrix_factorization, _from_config, task="ratings",
    defaults={"rank": 8, "init_scale": 0.1},
    docs={"rank": "latent factors per user and item: r = mu + b_u + b_i + p_u . q_i",
          "init_scale": "std of the initial factors"}))
registry.register(registry.Kind(
    "ncf", ncf, _from_config, task="ratings",
    defaults={"embed": 8, "hidden": [16, 8], "activation": "relu",
              "dropout": 0.0, "init": "he", "init_scale": 0.1},
    docs={"embed": "embedding width of users and of items",
          "hidden": "MLP widths after concatenating the two embeddings",
          "activation": "MLP activation",
          "dropout": "dropout in the MLP, in [0, 1)",
          "init": "MLP weight initialiser: normal | xavier | he",
          "init_scale": "std of the initial embeddings"}))
