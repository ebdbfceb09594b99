"""Reading a user's text file: UTF-8, checked, whole or a chunk at a time.

  read_text(path) -> str              the whole file
  code_point_chunks(where, chunks)    a file of any size, decoded chunk by
                                      chunk (funcnet data convert)

A file is refused with one line (:class:`funcnet.errors.DataError`) when it
is missing, empty, binary (a NUL byte: the byte offset) or not UTF-8 (the
byte offset of the first bad byte).
"""

import codecs
import os

from funcnet.data import tokenize
from funcnet.errors import DataError


def fail(path, problem) -> DataError:
  return DataError(f"text file {path}: {problem}; expected a UTF-8 text file")


def check_bytes(path, raw: bytes, offset: int = 0) -> None:
  """Refuses a binary chunk ``raw`` (a NUL byte) that starts ``offset``
  bytes into ``path``."""
  nul = raw.find(b"\0")
  if nul >= 0:
    raise fail(path, f"has a NUL byte at byte {offset + nul}, so it is "
               "binary, not text")


def not_utf8(path, e: UnicodeDecodeError, offset: int = 0) -> DataError:
  """The error for bytes of ``path`` that are not UTF-8, ``offset`` the
  byte of ``path`` where ``e.object`` starts."""
  bad = e.object[e.start:e.start + 1].hex()
  return fail(path, f"is not UTF-8: byte {offset + e.start} (0x{bad}) "
              f"{e.reason}")


def check_file(path) -> str:
  """``path`` as a string, refused unless it is an existing file."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise fail(path, "does not exist")
  if not os.path.isfile(path):
    raise fail(path, "is not a file")
  return path


def read_text(path) -> str:
  """The text of the UTF-8 file ``path``, refused in one line when it is
  missing, empty, binary or not UTF-8."""
  path = check_file(path)
  with open(path, "rb") as f:
    raw = f.read()
  if not raw:
    raise fail(path, "is empty")
  check_bytes(path, raw)
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise not_utf8(path, e) from None


def code_point_chunks(where, chunks):
  """The code points ``(k,) uint32`` of each ``(byte offset, bytes)`` of
  ``chunks`` (an iterable), decoded as one UTF-8 text and checked as
  :func:`read_text` checks a whole file (a character split across two
  chunks is decoded whole). Refuses an empty text."""
  decoder = codecs.getincrementaldecoder("utf-8")("strict")
  end = 0
  for offset, raw in chunks:
    check_bytes(where, raw, offset)
    pending = len(decoder.getstate()[0])
    try:
      s = decoder.decode(raw)
    except UnicodeDecodeError as e:  # e.object: the pending bytes, then raw
      raise not_utf8(where, e, offset - pending) from None
    end = offset + len(raw)
    yield tokenize.code_points(s)
  if end == 0:
    raise fail(where, "is empty")
  pending = len(decoder.getstate()[0])
  try:
    decoder.decode(b"", final=True)
  except UnicodeDecodeError as e:  # a character cut off by the end
    raise not_utf8(where, e, end - pending) from None
