"""Every model kind funcnet ships, one module each; each builder returns a
:class:`funcnet.model.Model`.

  mlp(sizes, activation, output_activation, init, dropout)
  cnn(in_shape, n_classes, channels, kernel_size, stride, padding, pool, ...)
  rnn(in_shape, n_classes, hidden, cell="rnn"|"gru", bidirectional, ...)
  transformer(in_shape, n_classes, d_model, n_heads, n_layers, d_ff, ...)
  matrix_factorization(n_users, n_items, rank, init_scale, global_mean)
  ncf(n_users, n_items, embed, hidden, activation, ...)
  gpt(block_size, vocab, n_layers, n_heads, d_model, d_ff, dropout)
  rnn_lm(in_shape, vocab_size, cell="lstm"|"gru"|"tanh", n_layers, ...)

Each module registers its kinds in :mod:`funcnet.models.registry` (builder,
config table, data requirements); importing this package imports every
module in the folder, so a new module's kinds are registered without
editing this file. ``MODELS`` maps every ``spec["kind"]`` to its builder,
and a spec's other keys (all but ``kind`` and ``kinked``) are that
builder's keyword arguments, so ``MODELS[spec["kind"]](**kwargs)`` (or
``registry.rebuild(spec)``) rebuilds a saved model.
"""

import importlib
import pkgutil

# In this order, the order of the kinds in configs/README.md; then any
# other module in the folder.
from funcnet.models import registry
from funcnet.models.mlp import mlp
from funcnet.models.cnn import cnn
from funcnet.models.rnn import rnn
from funcnet.models.transformer import transformer
from funcnet.models.recommender import matrix_factorization, ncf

for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f"{__name__}.{_module.name}")

MODELS = {name: kind.build for name, kind in registry.KINDS.items()}

__all__ = ["MODELS", "cnn", "matrix_factorization", "mlp", "ncf", "registry",
           "rnn", "transformer"]
