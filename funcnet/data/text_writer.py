"""Writing a text as a token folder (:mod:`funcnet.data.text_folder`) in
bounded memory: ``funcnet data convert BOOK.txt DIR``.

  convert(src, dst) -> meta     a text file, or "text" (the built-in corpus)

Two streaming passes over the file, ``CHUNK`` bytes at a time, so memory
stays bounded whatever the file's size: the first checks it (no NUL byte,
UTF-8: the byte offset of the first bad one), counts its characters and
notes where each distinct character first occurs; the vocabulary (the
character tokenizer's) is the characters whose first occurrence lies in
the training split (the first ``floor(0.9 n)`` characters), so no extra
pass over the training split is needed. The second encodes and appends to
``tokens.npy``. Everything goes into ``DIR.tmp-<pid>``, renamed when whole,
removed on an error or a signal (:mod:`funcnet.data.shard_writer`'s rules).
"""

import json
import os
import shutil

import numpy as np

from funcnet import tasks
from funcnet.data import shard_writer, text, text_file, tokenize
from funcnet.data.text_folder import FORMAT, META, TOKENS, n_train_chars

CHUNK = 4 << 20         # bytes of text read at a time
_UNICODE = 0x110000     # code points


def _file_chunks(path):
  """``() -> iterator of (byte offset, bytes)`` over ``path``, CHUNK bytes
  at a time."""
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
  seen = np.zeros(_UNICODE, bool)  # a byte per character read, not eight
  n = 0
  for cps in text_file.code_point_chunks(where, chunks()):
    new = ~seen[cps]
    if new.any():
      pos = np.flatnonzero(new)
      u, i = np.unique(cps[pos], return_index=True)
      first[u] = n + pos[i]
      seen[u] = True
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


def convert(src, dst) -> dict:
  """``funcnet data convert SRC DST`` of a text
  (:func:`funcnet.data.text.is_text_source`): the file ``src``, or the
  built-in corpus when ``src`` is its name."""
  if os.fspath(src) == text.NAME:
    return write_text(text.builtin(), dst, text.NAME)
  return write(os.fspath(src), dst)
