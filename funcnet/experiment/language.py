"""What a language model's run adds: bits per character, its tokenizer in
the run folder, and a sample at the end.

Evaluation reports bits per *token* (the ``language`` task's
``bits_per_token``, mean cross-entropy / ln 2 over every position of the
validation windows). A tokenizer that is not one token per character (BPE)
makes those incomparable across tokenizers, so every record with it gets

  test_bpc = test_bits_per_token * tokens_per_char

with ``tokens_per_char`` the validation split's tokens over its characters
(``Dataset.info``, 1 for the character tokenizer), and the summary's
``val_bpc`` is the last of them: the number a language-model user compares
(the Kneser-Ney baseline of ``funcnet baseline`` reports the same).
"""

from typing import Optional

PER_TOKEN = "test_bits_per_token"


def per_char(record: dict, info: dict) -> dict:
  """Adds ``test_bpc`` to ``record`` (in place: the history ``fit``
  returns holds the same dict) where it has bits per token and the data
  says its tokens per character; returns it."""
  ratio = (info or {}).get("tokens_per_char")
  if ratio is not None and PER_TOKEN in record:
    record["test_bpc"] = record[PER_TOKEN] * float(ratio)
  return record


def summary_keys(history: list) -> dict:
  """``{"val_bpc": ...}``, the last evaluation's bits per character, or
  nothing when the history has none."""
  last = [h["test_bpc"] for h in history if "test_bpc" in h]
  return {"val_bpc": last[-1]} if last else {}


def end_sample(model, params, tokenizer_json: Optional[str], *,
               length: int = 200, prompt: str = "\n", seed: int = 0):
  """A short greedy-free sample (temperature 0.8) after ``prompt``, as
  text, or None when the model is not a language model or the data has no
  tokenizer. What ``funcnet train`` prints at the end of such a run."""
  if model.decoder is None or tokenizer_json is None:
    return None
  import jax
  from funcnet.data import tokenize
  from funcnet.lm import sampler
  tok = tokenize.from_json(tokenizer_json)
  ids = tok.encode(prompt)
  if len(ids) == 0 or (getattr(tok, "unknown", None) is not None
                       and ids[0] == tok.unknown):
    ids = tok.encode(tok.decode([0]))   # a text without the prompt's character
  out = sampler.sample(model, params, ids, length, key=jax.random.key(seed),
                       temperature=0.8)
  return tok.decode(out[len(ids):].tolist())
