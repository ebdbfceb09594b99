"""Language models at work: sampling (:mod:`.sampler`).

The models themselves are kinds in :mod:`funcnet.models` (``gpt``,
``rnn_lm``); their text and tokenizers are in :mod:`funcnet.data`.
"""

from funcnet.lm.sampler import context_limit, filter_logits, sample

__all__ = ["context_limit", "filter_logits", "sample"]
