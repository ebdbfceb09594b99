"""Model builders beyond the MLP, one list; each returns a :class:`funcnet.model.Model`.

  cnn(in_shape, n_classes, channels, kernel_size, stride, padding, pool, ...)
  rnn(in_shape, n_classes, hidden, cell="rnn"|"gru", bidirectional, ...)
  transformer(in_shape, n_classes, d_model, n_heads, n_layers, d_ff, ...)
  matrix_factorization(n_users, n_items, rank, init_scale, global_mean)
  ncf(n_users, n_items, embed, hidden, activation, ...)

``MODELS`` maps every ``spec["kind"]`` to its builder, and a spec's other
keys (all but ``kind`` and ``kinked``) are that builder's keyword arguments,
so ``MODELS[spec["kind"]](**kwargs)`` rebuilds a saved model.
"""

import functools

from funcnet.mlp import mlp
from funcnet.models.cnn import cnn
from funcnet.models.recommender import matrix_factorization, ncf
from funcnet.models.rnn import rnn
from funcnet.models.transformer import transformer

MODELS = {
    "mlp": mlp,
    "cnn": cnn,
    "rnn": rnn,
    "gru": functools.partial(rnn, cell="gru"),
    "transformer": transformer,
    "mf": matrix_factorization,
    "ncf": ncf,
}

__all__ = ["MODELS", "cnn", "matrix_factorization", "mlp", "ncf", "rnn",
           "transformer"]
