"""Attention maps: each head's softmax weights ``P`` in each block, read
from the model's own forward (no autodiff).

  P = softmax(Q K^T / sqrt(d_head))        (m, heads, T, T) per block

row ``q`` the weights query token ``q`` puts on every key token (each row
sums to 1). The Transformer classifier's forward keeps every block's
attention cache (``(x, Q, K, V, P, O)``, :mod:`funcnet.layers.attention`),
so the maps are exactly the ones its logits were computed with; a GPT's
come from :func:`funcnet.models.gpt.attention_maps`.
"""

import jax.numpy as jnp

from funcnet.errors import ConfigError
from funcnet.models import gpt
from funcnet.models.transformer import KIND as TRANSFORMER
from funcnet.models.transformer import forward as transformer_forward


def _transformer_maps(model, params, x):
  caches = transformer_forward(model.spec, params, x)[1]["blocks"]
  return jnp.stack([c["attn"][4] for c in caches])


# The kinds with attention, by their registered names (the kinds' modules
# own the names; nothing here spells one).
_MAPS = {TRANSFORMER.name: _transformer_maps,
         gpt.KIND.name: gpt.attention_maps}


def has_attention(model) -> bool:
  """Whether ``model``'s kind has attention maps to show."""
  return model.kind in _MAPS


def attention_maps(model, params, x):
  """Every block's per-head attention weights on ``x``:
  ``(n_blocks, m, n_heads, T, T)`` (evaluation: no dropout). ``T`` counts
  the tokens attention sees (patches, plus the class token with
  ``pool="cls"``). Jittable with ``model`` closed over.

  Raises:
    ConfigError: a kind without attention (one line naming those with).
  """
  if not has_attention(model):
    raise ConfigError(f"attention maps need a model with attention; this "
                      f"run's model is a {model.kind!r}; expected one of "
                      f"{', '.join(sorted(_MAPS))}")
  return _MAPS[model.kind](model, params, x)
