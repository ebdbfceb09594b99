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
GiB with ``mallopt``, and the number of arenas to 1 (every thread
allocates from the main heap, which has no such cap): blocks up to 1 GiB
are then reused from the heap, at the price of a process that keeps up to
that much freed memory for its next step instead of handing it back, and
of threads that take turns at one allocator's lock (XLA's threads allocate
per program call, not per element: no contention showed in the GPT's
scanned step, 87.6 against 88.4 ms). Measured in fresh processes, alternated
(``docs/performance.md``, "malloc"): the Transformer's autodiff step 39.5
-> 31.7 ms (medians of 3), the GRU's and CNN's unchanged (their blocks fit
under the threshold glibc reaches by itself); with one arena, the GPT's
hand-written step in a Python loop 115.8 -> 89.9 ms ("One arena").

The ``funcnet`` command calls it first thing (Linux with glibc only;
``FUNCNET_MALLOC=default`` leaves glibc's own policy, and so does a
``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or
``MALLOC_ARENA_MAX`` the user set, or ``GLIBC_TUNABLES``). It must run
before any thread but the main one has allocated (a thread keeps the
arena it first took): the command calls it before importing JAX. A script that imports funcnet can call it too; the
library alone never changes the process's allocator.
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

_tuned = False


def _glibc() -> bool:
  try:
    return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
  except (ValueError, OSError):  # not glibc (musl), or no such name
    return False


def tune() -> bool:
  """Sets glibc's mmap and trim thresholds to :data:`THRESHOLD` and its
  arenas to one (see the module docstring); returns
  whether they are set (now or by an earlier call). False, changing
  nothing: not Linux with glibc, ``FUNCNET_MALLOC=default``, the user's own
  malloc settings in the environment, or ``mallopt`` refused."""
  global _tuned
  if _tuned:
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
  # mmap first: glibc turns its own raising of the threshold off at either
  _tuned = (mallopt(M_MMAP_THRESHOLD, THRESHOLD) == 1
            and mallopt(M_TRIM_THRESHOLD, THRESHOLD) == 1
            # one heap for every thread: XLA's allocate where its programs
            # run, and a thread's own arena maps any block over 64 MiB anew
            and mallopt(M_ARENA_MAX, 1) == 1)
  return _tuned
