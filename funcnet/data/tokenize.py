"""Tokenizers of text: characters, or byte-level BPE, saved as JSON.

  build(kind, train_text, vocab_size) -> tokenizer    fit on the training text
  from_json(text) -> tokenizer                        what to_json() wrote
  encode_prompt(tok, text) -> ids                     refuses unknown characters

A tokenizer has ``kind``, ``vocab_size`` ``V``, ``encode(text) -> (n,)
int32`` ids in ``[0, V)``, ``ends(text) -> (n,) int64`` (the character
offset in ``text`` where each token ends: what bits per character divides
by), ``decode(ids) -> str`` and ``to_json() -> str``. The JSON is what a
run folder keeps, so sampling can decode without the corpus.

- ``"char"``: one id per character (Unicode code point) of the training
  text, in code point order, plus one unknown id ``V - 1`` for any other
  character (decoded as U+FFFD). Vectorised: the code points of a string
  are ``np.frombuffer(text.encode("utf-32-le"), uint32)``.
- ``"bpe"``: byte-level BPE (GPT-2's: the 256 bytes, then merges learnt on
  the training text) by HuggingFace ``tokenizers``, the ``[bpe]`` extra.
  No unknown tokens: every string is bytes.
"""

import json

import numpy as np

from funcnet.errors import ConfigError, DataError, needs_extra

KINDS = ("char", "bpe")
REPLACEMENT = "\ufffd"  # what the unknown id decodes to


def code_points(text: str) -> np.ndarray:
  """``(len(text),) uint32``: the code point of each character."""
  return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)


class CharTokenizer:
  """Characters: the sorted characters of the training text, then unknown.

  ``chars``: the known characters as one string, sorted by code point;
  id ``i < len(chars)`` is ``chars[i]``, id ``len(chars)`` is unknown.
  """
  kind = "char"

  def __init__(self, chars: str):
    self.chars = chars
    self._cps = code_points(chars)
    if np.any(np.diff(self._cps.astype(np.int64)) <= 0):
      raise DataError("a char tokenizer's characters must be sorted and "
                      "distinct")
    self.unknown = len(chars)
    self.vocab_size = len(chars) + 1

  @classmethod
  def fit(cls, text: str) -> "CharTokenizer":
    return cls("".join(map(chr, np.unique(code_points(text)))))

  def encode_points(self, cps: np.ndarray) -> np.ndarray:
    """Ids of the code points ``cps``: their rank among the known ones, or
    the unknown id."""
    if len(self._cps) == 0:
      return np.full(len(cps), self.unknown, np.int32)
    i = np.minimum(np.searchsorted(self._cps, cps), len(self._cps) - 1)
    return np.where(self._cps[i] == cps, i, self.unknown).astype(np.int32)

  def encode(self, text: str) -> np.ndarray:
    return self.encode_points(code_points(text))

  def ends(self, text: str) -> np.ndarray:
    return np.arange(1, len(text) + 1, dtype=np.int64)

  def decode(self, ids) -> str:
    table = np.append(self._cps, np.uint32(ord(REPLACEMENT)))
    ids = np.asarray(ids, np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
      raise DataError(f"token ids outside [0, {self.vocab_size})")
    return table[ids].astype("<u4").tobytes().decode("utf-32-le")

  def to_json(self) -> str:
    return json.dumps({"kind": self.kind, "chars": self.chars})


def _hf():
  try:
    import tokenizers
  except ImportError:
    raise needs_extra("data.tokenizer = 'bpe'", "bpe", "tokenizers") from None
  return tokenizers


class BpeTokenizer:
  """Byte-level BPE (HuggingFace ``tokenizers``): ``tok`` a
  ``tokenizers.Tokenizer`` with a ``ByteLevel`` pre-tokenizer and decoder."""
  kind = "bpe"

  def __init__(self, tok):
    self.tok = tok
    self.vocab_size = tok.get_vocab_size()

  @classmethod
  def fit(cls, text: str, vocab_size: int) -> "BpeTokenizer":
    """Merges learnt on ``text`` until ``vocab_size`` tokens (the 256 byte
    tokens first; fewer when the text runs out of pairs)."""
    hf = _hf()
    pre = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok = hf.Tokenizer(hf.models.BPE())
    tok.pre_tokenizer, tok.decoder = pre, hf.decoders.ByteLevel()
    trainer = hf.trainers.BpeTrainer(
        vocab_size=vocab_size, show_progress=False, special_tokens=[],
        initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text], trainer)
    return cls(tok)

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self.tok.encode(text).ids, np.int32)

  def ends(self, text: str) -> np.ndarray:
    return np.asarray([e for _, e in self.tok.encode(text).offsets], np.int64)

  def decode(self, ids) -> str:
    return self.tok.decode([int(i) for i in np.asarray(ids).ravel()])

  def to_json(self) -> str:
    return json.dumps({"kind": self.kind, "tokenizer": self.tok.to_str()})


def encode_prompt(tok, text: str, what: str = "--prompt") -> np.ndarray:
  """``tok.encode(text)``, refused in one line when ``text`` is empty or
  has characters the tokenizer maps to its unknown id (sampling would
  condition on a character the model never saw)."""
  if not text:
    raise DataError(f"{what} is empty; expected at least one character")
  ids = tok.encode(text)
  unk = getattr(tok, "unknown", None)
  if unk is not None and np.any(ids == unk):
    bad = sorted({ch for ch, i in zip(text, ids) if i == unk})
    raise DataError(f"{what} has characters outside the vocabulary "
                    f"({', '.join(map(repr, bad[:10]))}); expected only "
                    "characters of the training text")
  return ids


def build(kind: str, text: str, vocab_size: int = 512):
  """A tokenizer of ``kind`` fit on ``text`` (``vocab_size``: BPE only)."""
  if kind == "char":
    return CharTokenizer.fit(text)
  if kind == "bpe":
    return BpeTokenizer.fit(text, vocab_size)
  raise ConfigError(f"data.tokenizer = {kind!r}; expected one of "
                    f"{', '.join(KINDS)}")


def from_json(text: str):
  """The tokenizer :meth:`to_json` wrote."""
  try:
    d = json.loads(text)
    kind = d["kind"]
  except (ValueError, TypeError, KeyError):
    raise DataError("a tokenizer's JSON is not one funcnet wrote; expected "
                    '{"kind": "char" | "bpe", ...}') from None
  if kind == "char":
    return CharTokenizer(d["chars"])
  if kind == "bpe":
    return BpeTokenizer(_hf().Tokenizer.from_str(d["tokenizer"]))
  raise DataError(f"a tokenizer of kind {kind!r}; expected one of "
                  f"{', '.join(KINDS)}")
