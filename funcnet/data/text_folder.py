"""A text as a token folder on disk, read by window.

``funcnet data convert BOOK.txt DIR`` (:mod:`funcnet.data.text_writer`)
makes::

  DIR/meta.json    {"format": FORMAT, name, task, tokenizer (JSON), dtype,
                    n_tokens, n_train, chars_train, chars_validation,
                    unknown, source}
  DIR/tokens.npy   every character's token, training split then
                   validation, one flat array (uint16 when the vocabulary
                   fits, else uint32)

with the character tokenizer (:mod:`funcnet.data.tokenize`).

:func:`open_folder` reads it back: the training tokens as a
:class:`TokenFile`, read by ``os.pread`` (a ``np.memmap`` would do, but its
pages count as the process's resident memory as a run touches them, up to
the whole file), the validation tokens into memory.
"""

import json
import os
import weakref

import numpy as np

from funcnet.data import tokenize
from funcnet.errors import DataError

FORMAT = "funcnet-text-tokens-1"
META, TOKENS = "meta.json", "tokens.npy"


def n_train_chars(n: int) -> int:
  """Characters of the training split of a text of ``n``: ``floor(0.9 n)``
  (the first 90% train, the last 10% validate)."""
  return n * 9 // 10


def is_folder(path) -> bool:
  """Whether ``path`` is a token folder (its ``meta.json`` says FORMAT)."""
  if not isinstance(path, (str, os.PathLike)):
    return False
  meta = os.path.join(os.fspath(path), META)
  try:
    with open(meta) as f:
      return json.load(f).get("format") == FORMAT
  except (OSError, ValueError, AttributeError):
    return False


class TokenFile:
  """Tokens ``[lo, hi)`` of a flat ``.npy`` file, read by ``os.pread``.

  ``len(t)`` is ``hi - lo``; ``t.gather(starts, width)`` the ``(k,
  width)`` int32 windows at ``starts``; ``t.read(a, b)`` tokens ``[a, b)``.
  """

  def __init__(self, path: str, lo: int, hi: int):
    with open(path, "rb") as f:
      read_header = (np.lib.format.read_array_header_1_0
                     if np.lib.format.read_magic(f) == (1, 0)
                     else np.lib.format.read_array_header_2_0)
      shape, _, dtype = read_header(f)
      self._offset = f.tell()
    if len(shape) != 1 or hi > shape[0]:
      raise DataError(f"token file {path} holds {shape} tokens; expected a "
                      f"flat array of at least {hi}")
    self.dtype, self.lo, self.n = np.dtype(dtype), lo, hi - lo
    self._fd = os.open(path, os.O_RDONLY)
    weakref.finalize(self, os.close, self._fd)

  def __len__(self) -> int:
    return self.n

  def read(self, a: int, b: int) -> np.ndarray:
    item = self.dtype.itemsize
    at = self._offset + (self.lo + a) * item
    raw = os.pread(self._fd, (b - a) * item, at)
    return np.frombuffer(raw, self.dtype).astype(np.int32)

  def gather(self, starts, width: int) -> np.ndarray:
    item = self.dtype.itemsize
    at = self._offset + (self.lo + np.asarray(starts, np.int64)) * item
    raw = b"".join(os.pread(self._fd, width * item, int(p)) for p in at)
    return np.frombuffer(raw, self.dtype).reshape(-1, width).astype(np.int32)


def open_folder(path: str):
  """``(meta, train TokenFile, validation (n,) int32, tokenizer)``."""
  try:
    with open(os.path.join(path, META)) as f:
      meta = json.load(f)
    tok = tokenize.from_json(meta["tokenizer"])
    n, n_train = int(meta["n_tokens"]), int(meta["n_train"])
    tokens = os.path.join(path, TOKENS)
    train, val = TokenFile(tokens, 0, n_train), TokenFile(tokens, n_train, n)
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise DataError(f"token folder {path}: cannot be read ({e}); expected a "
                    "folder written by funcnet data convert") from None
  return meta, train, val.read(0, len(val)), tok
