"""A text as a token folder: written in bounded memory, read by window.

``funcnet data convert BOOK.txt DIR`` (:func:`write`) makes::

  DIR/meta.json    {"format": FORMAT, name, task, tokenizer (JSON), dtype,
                    n_tokens, n_train, chars_train, chars_validation,
                    unknown, source}
  DIR/tokens.npy   every character's token, training split then
                   validation, one flat array (uint16 when the vocabulary
                   fits, else uint32)

with the character tokenizer (:mod:`funcnet.data.tokenize`). Two streaming
passes over the file, ``CHUNK`` bytes at a time, so memory stays bounded
whatever the file's size: the first checks it (no NUL byte, UTF-8, the byte
offset of the first bad one), counts its characters and notes where each
distinct character first occurs; the vocabulary is the characters whose
first occurrence lies in the training split (the first ``floor(0.9 n)``
characters), so no second pass over the training split is needed. The
second encodes and appends. Everything goes into ``DIR.tmp-<pid>``, renamed
when whole (as :mod:`funcnet.data.shard_writer` does).

:func:`open_folder` reads it back: the training tokens as a
:class:`TokenFile`, read by ``os.pread`` (a ``np.memmap`` would do, but its
pages count as the process's resident memory as a run touches them, up to
the whole file), the validation tokens into memory.
"""

import json
import os
import shutil
import weakref

import numpy as np

from funcnet import tasks
from funcnet.data import text_file, tokenize
from funcnet.errors import DataError

FORMAT = "funcnet-text-tokens-1"
META, TOKENS = "meta.json", "tokens.npy"
CHUNK = 16 << 20        # bytes of text read at a time
_UNICODE = 0x110000     # code points


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
    raw = os.pread(self._fd, (b - a) * item, self._offset + (self.lo + a) * item)
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


# --- writing --------------------------------------------------------------------

def _file_chunks(path):
  """``() -> iterator of (byte offset, bytes)`` over ``path``, CHUNK at a time."""
  def chunks():
    with open(path, "rb") as f:
      offset = 0
      while raw := f.read(CHUNK):
        yield offset, raw
        offset += len(raw)
  return chunks


def _first_pass(where, chunks):
  """``(n characters, first[c])``: where each code point first occurs (-1:
  never)."""
  first = np.full(_UNICODE, -1, np.int64)
  n = 0
  for cps in text_file.code_point_chunks(where, chunks()):
    new = first[cps] < 0
    if new.any():
      pos = np.flatnonzero(new)
      u, i = np.unique(cps[pos], return_index=True)
      first[u] = n + pos[i]
    n += len(cps)
  return n, first


def _encode_into(f, where, chunks, tok, n_train, dtype) -> int:
  """Second pass: every token appended to ``f``; the unknown validation
  characters counted."""
  table = np.full(_UNICODE, tok.unknown, dtype)
  table[tokenize.code_points(tok.chars)] = np.arange(len(tok.chars))
  unknown, n = 0, 0
  for cps in text_file.code_point_chunks(where, chunks()):
    ids = table[cps]
    unknown += int(np.count_nonzero(ids[max(n_train - n, 0):] == tok.unknown))
    f.write(ids.tobytes())
    n += len(cps)
  return unknown


def _write(where, chunks, dst, name) -> dict:
  from funcnet.data import shard_writer
  dst = os.path.normpath(os.fspath(dst))
  shard_writer._check_dst(dst)  # the shards' rules: a new or empty folder
  n, first = _first_pass(where, chunks)
  n_train = n_train_chars(n)
  tok = tokenize.CharTokenizer("".join(
      map(chr, np.flatnonzero((first >= 0) & (first < n_train)))))
  dtype = np.dtype("<u2" if tok.vocab_size <= 1 << 16 else "<u4")
  tmp = f"{dst}.tmp-{os.getpid()}"
  if os.path.lexists(tmp):
    shutil.rmtree(tmp)
  with shard_writer._stop_on_signals(dst):
    os.makedirs(tmp)
    try:
      with open(os.path.join(tmp, TOKENS), "wb") as f:
        np.lib.format.write_array_header_1_0(f, {
            "descr": dtype.str, "fortran_order": False, "shape": (n,)})
        unknown = _encode_into(f, where, chunks, tok, n_train, dtype)
      meta = {"format": FORMAT, "name": name, "task": tasks.LANGUAGE.name,
              "tokenizer": tok.to_json(), "dtype": dtype.name, "n_tokens": n,
              "n_train": n_train, "chars_train": n_train,
              "chars_validation": n - n_train, "unknown": unknown,
              "source": where, "bytes": os.path.getsize(
                  os.path.join(tmp, TOKENS))}
      with open(os.path.join(tmp, META), "w") as f:
        json.dump(meta, f, indent=1)
      os.replace(tmp, dst)
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise
  return meta


def write(path: str, dst) -> dict:
  """The text file ``path`` as the token folder ``dst``; its meta.

  Raises:
    DataError: ``dst`` exists and is not an empty folder; ``path`` is
      missing, empty, binary or not UTF-8 (the byte offset).
  """
  text_file.check_file(path)
  return _write(path, _file_chunks(path), dst, os.path.basename(path))


def write_text(text: str, dst, name: str) -> dict:
  """The string ``text`` (the built-in corpus) as the token folder ``dst``."""
  raw = text.encode("utf-8")
  chunks = lambda: ((i, raw[i:i + CHUNK]) for i in range(0, len(raw), CHUNK))
  return _write(name, chunks, dst, name)
