"""Text for language models: a corpus split by position, cut into windows.

  text(path, block_size, stride, tokenizer, vocab_size, val_tokens)
                        the dataset "text" (data.name = "text")
  from_folder(path, ...)  the same from a token folder of funcnet data
                        convert (data.name = DIR), read from disk by row
  corpus(path, tokenizer, vocab_size) -> Corpus   the tokens of both splits
  windows(corpus, block_size, stride, val_tokens) -> Dataset

The corpus is the English text of CPython's language reference, which
every Python installation ships (``pydoc_data.topics.topics``, its values
joined in sorted-key order: 464,970 characters on Python 3.11), or the
UTF-8 text file ``path``. Its first ``floor(0.9 n)`` characters train, the
last 10% validate: split by position, never shuffled, so no validation text
is seen in training. The tokenizer (:mod:`funcnet.data.tokenize`) is fit
on the training split alone; each split is tokenized on its own.

With ``T = block_size``, ``s = stride`` and ``u`` the training tokens, row
``i`` of the training split is the window and its next tokens::

  x_i = u[i s : i s + T],   y_i = u[i s + 1 : i s + T + 1],
  i = 0 .. (len(u) - T - 1) // s

gathered when read (:class:`funcnet.data.streamed.Rows`), so training
draws random windows in ``train.batch_order`` (seeded, resumable, each
process reading its own rows) through ``fit``'s streamed path. With ``v``
the validation tokens (the first ``val_tokens`` of them when that is not
0), the test split is the ``k = (len(v) - 1) // T`` consecutive windows
``x_j = v[jT : (j+1)T]``, ``y_j = v[jT + 1 : (j+1)T + 1]``, in memory:
every validation token after the first is predicted once, up to
``v[kT]``; the ``len(v) - 1 - kT < T`` tokens after it are dropped
(``info["validation_dropped_chars"]`` says how many characters).

``info``: ``tokenizer`` (its JSON, for the run folder and sampling),
``tokenizer_kind``, ``vocab_size``, ``tokens_per_char`` (of the predicted
validation tokens: ``kT`` over the characters they cover; 1.0 for
characters, so bits per character = ``bits_per_token * tokens_per_char``),
``unknown`` (validation characters not in the training split's vocabulary,
char only), ``chars_train``, ``chars_validation``, ``tokens_train``,
``tokens_validation``, ``validation_dropped_chars``, ``block_size``,
``stride``, ``source``.
"""

import os
from typing import NamedTuple, Optional

import numpy as np

from funcnet import tasks
from funcnet.data import registry, text_folder, tokenize
from funcnet.data.text_file import read_text
from funcnet.data.dataset import Dataset
from funcnet.data.streamed import Rows
from funcnet.errors import ConfigError, DataError

NAME = "text"


def builtin() -> str:
  """The built-in corpus: ``pydoc_data.topics.topics``' values in sorted-key
  order (no download; ~465k characters of English and Python)."""
  from pydoc_data.topics import topics
  return "".join(topics[k] for k in sorted(topics))


class Corpus(NamedTuple):
  """The tokens of both splits.

  Attributes:
    train: the training tokens, an int array or a
      :class:`funcnet.data.text_folder.TokenFile` (on disk).
    validation: ``(n_val,)`` int32, the validation tokens.
    val_ends: ``(n_val,)`` the character offset where each validation token
      ends, or None: one token per character.
    tokenizer: the :mod:`funcnet.data.tokenize` tokenizer.
    name: the dataset's name.
    info: the facts of :mod:`funcnet.data.text`'s ``info`` known before
      windows are cut.
  """
  train: object
  validation: np.ndarray
  val_ends: Optional[np.ndarray]
  tokenizer: object
  name: str
  info: dict


def corpus(path: str = "", tokenizer: str = "char",
           vocab_size: int = 512) -> Corpus:
  """The corpus ``path`` (``""``: the built-in one), split by position and
  tokenized with ``tokenizer`` fit on its training split."""
  if tokenizer not in tokenize.KINDS:
    raise ConfigError(f"data.tokenizer = {tokenizer!r}; expected one of "
                      f"{', '.join(tokenize.KINDS)}")
  _check_int("vocab_size", vocab_size, 256)
  text_ = read_text(path) if path else builtin()
  n = text_folder.n_train_chars(len(text_))
  train_text, val_text = text_[:n], text_[n:]
  tok = tokenize.build(tokenizer, train_text, vocab_size)
  train, val = tok.encode(train_text), tok.encode(val_text)
  unknown = (int(np.count_nonzero(val == tok.unknown))
             if hasattr(tok, "unknown") else 0)
  name = os.path.basename(path) if path else NAME
  return Corpus(train, val, None if tok.kind == "char" else
                tok.ends(val_text), tok, name, {
                    "chars_train": n, "chars_validation": len(val_text),
                    "unknown": unknown,
                    "source": os.path.abspath(path) if path else
                    "pydoc_data.topics"})


def _check_int(key, value, least):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
      or value < least:
    raise ConfigError(f"data.{key} = {value!r}; expected an integer >= "
                      f"{least}")


def _gather(tokens, starts: np.ndarray, width: int) -> np.ndarray:
  """``(k, width)`` int32: ``tokens[s : s + width]`` for each start ``s``."""
  if isinstance(tokens, np.ndarray):
    return tokens[starts[:, None] + np.arange(width)].astype(np.int32)
  return tokens.gather(starts, width)


def windows(c: Corpus, block_size: int = 64, stride: int = 1,
            val_tokens: int = 0) -> Dataset:
  """The :class:`Dataset` of windows of ``c`` (the module docstring)."""
  _check_int("block_size", block_size, 1)
  _check_int("stride", stride, 1)
  _check_int("val_tokens", val_tokens, 0)
  T = block_size
  v = c.validation[:val_tokens] if val_tokens else c.validation
  if T >= len(v):
    raise DataError(f"text {c.name}: data.block_size = {T} is not smaller "
                    f"than the {len(v)} tokens of the validation split; "
                    "expected a smaller block_size or a longer text")
  n_train = len(c.train)
  if T + 1 > n_train:
    raise DataError(f"text {c.name}: data.block_size = {T} needs {T + 1} "
                    f"training tokens, the training split has {n_train}; "
                    "expected a smaller block_size or a longer text")
  k = (len(v) - 1) // T
  ends = (c.val_ends if c.val_ends is not None
          else np.arange(1, len(c.validation) + 1))
  covered = int(ends[k * T] - ends[0])  # characters of the predicted tokens
  v = np.asarray(v[:k * T + 1], np.int32)
  n_rows = (n_train - T - 1) // stride + 1
  train = c.train

  def read(rows):
    w = _gather(train, rows * stride, T + 1)
    return np.ascontiguousarray(w[:, :-1]), np.ascontiguousarray(w[:, 1:])

  V = c.tokenizer.vocab_size
  info = {"tokenizer": c.tokenizer.to_json(), "tokenizer_kind":
          c.tokenizer.kind, "vocab_size": V,
          "tokens_per_char": k * T / covered, **c.info,
          "tokens_train": n_train, "tokens_validation": len(c.validation),
          "validation_dropped_chars": int(c.info["chars_validation"]
                                          - ends[k * T]),
          "block_size": T, "stride": stride}
  return Dataset(
      x_train=Rows((n_rows, T), np.int32, read),
      y_train=Rows((n_rows, T), np.int32),
      x_test=v[:-1].reshape(k, T), y_test=v[1:].reshape(k, T),
      task=tasks.LANGUAGE.name, n_classes=V, name=c.name, info=info)


def text(path: str = "", block_size: int = 64, stride: int = 1,
         tokenizer: str = "char", vocab_size: int = 512,
         val_tokens: int = 0) -> Dataset:
  """Windows of the text ``path`` (``""``: the built-in corpus), as the
  module docstring says.

  Raises:
    DataError: a missing, empty, binary or non-UTF-8 file; a block size
      not smaller than the validation split's tokens.
    ConfigError: a bad option; ``bpe`` without the ``[bpe]`` extra.
  """
  return windows(corpus(path, tokenizer, vocab_size), block_size, stride,
                 val_tokens)


def folder_corpus(path: str, tokenizer: str = "char") -> Corpus:
  """The corpus of a token folder written by ``funcnet data convert``
  (:mod:`funcnet.data.text_writer`)."""
  meta, train, val, tok = text_folder.open_folder(path)
  if tokenizer != tok.kind:
    raise ConfigError(f"data.tokenizer = {tokenizer!r}, but the token folder "
                      f"{path} holds {tok.kind!r} tokens; expected "
                      f"{tok.kind!r}")
  info = {k: meta[k] for k in ("chars_train", "chars_validation", "unknown")}
  return Corpus(train, val, None, tok, meta["name"],
                {**info, "source": os.path.abspath(path)})


def from_folder(path: str, block_size: int = 64, stride: int = 1,
                tokenizer: str = "char", vocab_size: int = 512,
                val_tokens: int = 0) -> Dataset:
  """The dataset of :func:`text` from a token folder (``data.name = DIR``):
  the training tokens stay on disk and are read by window; the validation
  tokens (the first ``val_tokens``, when not 0) are read into memory.
  ``vocab_size`` is the folder's and is ignored."""
  del vocab_size
  return windows(folder_corpus(path, tokenizer), block_size, stride,
                 val_tokens)


def corpus_of(name: str, path: str = "", tokenizer: str = "char",
              vocab_size: int = 512) -> Corpus:
  """The corpus of ``data.name = name``: the text dataset or a token
  folder (``funcnet baseline`` reads it); anything else is refused."""
  if name == NAME:
    return corpus(path, tokenizer, vocab_size)
  if text_folder.is_folder(name):
    return folder_corpus(name, tokenizer)
  raise ConfigError(f"data.name = {name!r} is not text; expected {NAME!r} "
                    "(with data.path) or a token folder of funcnet data "
                    "convert")


def train_tokens(c: Corpus) -> np.ndarray:
  """The training tokens of ``c`` in memory, int32 (read whole from a token
  folder)."""
  if isinstance(c.train, np.ndarray):
    return c.train
  return c.train.read(0, len(c.train))


def is_text_source(src) -> bool:
  """Whether ``funcnet data convert SRC`` is text: the built-in corpus's
  name or a path that is not a ``.npz`` / ``.csv``."""
  s = os.fspath(src)
  return s == NAME or ((os.sep in s or "." in os.path.basename(s)
                        or os.path.isfile(s))
                       and os.path.splitext(s)[1].lower() not in
                       (".npz", ".csv"))


registry.register(registry.Source(
    NAME, text, tasks.LANGUAGE.name,
    "English text of CPython's language reference (pydoc_data.topics, "
    "465k characters) or the UTF-8 file data.path, in windows of "
    "data.block_size tokens (data.tokenizer char | bpe)"))
