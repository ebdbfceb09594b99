"""glibc's malloc told to keep freed memory for the next training step.

XLA:CPU allocates a program's temporaries with ``malloc`` at every call and
frees them when it returns (the MNIST-1D Transformer step's 54 MB, the GRU's
19 MB). glibc serves a block larger than its *mmap threshold* with a new
``mmap`` and gives it back with ``munmap`` when freed, so the next call's
block is fresh memory the kernel faults in, and zeroes, page by page: every
step pays for its scratch memory again. The threshold starts at 128 KiB and
rises by itself as such blocks are freed, but never above 32 MiB, and which
blocks it already covers depends on what ran before in the process: the
same Transformer step took 42-45 ms in a fresh process and 29 ms after the
CNN and GRU benchmarks had run in it (``funcnet bench models``).

And the threshold alone is not enough: XLA:CPU runs a program, and
allocates its temporaries, on threads of its own, and glibc gives each
thread an *arena* of its own, whose heaps are at most 64 MiB (on 64-bit):
a larger block from such a thread is always a fresh ``mmap``, whatever the
threshold. The character GPT's step has 104 MB of temporaries: with the
thresholds alone it still faulted in 27,700 pages (108 MB) at every step,
and a Python loop of its jitted steps ran at 113 ms a step against 88 ms
for the same step in a ``lax.scan`` of 8 (one call, one fault-in, for 8
steps).

:func:`tune` sets both the mmap threshold and the trim threshold (how much
free memory at the top of the heap glibc keeps rather than returning) to 1
GiB with ``mallopt``: blocks up to 1 GiB are then reused from the heap, at
the price of a process that keeps up to that much freed memory for its next
step instead of handing it back. Measured in fresh processes, alternated
(``docs/performance.md``, "malloc"): the Transformer's autodiff step 39.5
-> 31.7 ms (medians of 3), the GRU's and CNN's unchanged (their blocks fit
under the threshold glibc reaches by itself).

``tune(one_arena=True)`` also sets the number of arenas to 1: every thread
allocates from the main heap, which has no such cap, and the GPT's loop of
steps took 0 page faults and ran at its scanned speed (115.8 -> 89.9 ms;
scanned 87.6 -> 88.4 ms). Only the benchmarks that time steps call by call
ask for it (``funcnet bench models``, for every contestant alike, and
``bench gpt``: 3.82 -> 4.87 steps a second): it costs compilation dearly,
since XLA compiles on several threads and LLVM allocates at every turn,
and with one arena they take turns at its lock (a cold default ``funcnet
train``, 6 alternated rounds: 2.13 -> 2.85 s, its compilations 1.35 ->
2.30 s). A training run does not need it: an epoch is one call, so its
temporaries are faulted in once an epoch, not once a step.

The ``funcnet`` command calls it before anything runs (Linux with glibc
only; ``FUNCNET_MALLOC=default`` leaves glibc's own policy, and so does a
``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or
``MALLOC_ARENA_MAX`` the user set, or ``GLIBC_TUNABLES``); one arena must
be asked for before any thread but the main one has allocated (a thread
keeps the arena it first took): the command asks before JAX starts. A
script that imports funcnet can call it too; the library alone never
changes the process's allocator.
"""

import ctypes
import os
import sys

ENV = "FUNCNET_MALLOC"
THRESHOLD = 1 << 30  # bytes: 1 GiB
# mallopt's parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
_USERS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
          "MALLOC_ARENA_MAX", "GLIBC_TUNABLES")

_tuned = False      # the thresholds
_one_arena = False


def _glibc() -> bool:
  try:
    return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
  except (ValueError, OSError):  # not glibc (musl), or no such name
    return False


def tune(one_arena: bool = False) -> bool:
  """Sets glibc's mmap and trim thresholds to :data:`THRESHOLD` and, with
  ``one_arena``, its arenas to one (see the module docstring); returns
  whether they are set (now or by an earlier call). False, changing
  nothing: not Linux with glibc, ``FUNCNET_MALLOC=default``, the user's own
  malloc settings in the environment, or ``mallopt`` refused."""
  global _tuned, _one_arena
  if _tuned and (_one_arena or not one_arena):
    return True
  if os.environ.get(ENV, "").lower() in ("default", "off", "0", "no") \
      or any(v in os.environ for v in _USERS):
    return False
  if not sys.platform.startswith("linux") or not _glibc():
    return False
  try:
    mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
  except (OSError, AttributeError):
    return False
  if not _tuned:
    # mmap first: glibc turns its own raising of the threshold off at either
    _tuned = (mallopt(M_MMAP_THRESHOLD, THRESHOLD) == 1
              and mallopt(M_TRIM_THRESHOLD, THRESHOLD) == 1)
  if _tuned and one_arena:
    # one heap for every thread: XLA's allocate where its programs run,
    # and a thread's own arena maps any block over 64 MiB anew
    _one_arena = mallopt(M_ARENA_MAX, 1) == 1
    return _one_arena
  return _tuned
