"""Where funcnet keeps files between runs, and the room the machine has.

  cache_root()    $FUNCNET_CACHE, else $XDG_CACHE_HOME/funcnet, else
                  ~/.cache/funcnet (not created here)
  free_disk(p)    bytes free to this user on the filesystem that holds p
  host_memory()   (bytes, where): the memory free to this process, the
                  host's or its container's, whichever is less
  human(n)        n bytes for a message: "12.3 GB"

What lives under the cache root: MNIST-1D's ``.npz``
(:mod:`funcnet.data.bundled`) and JAX's compiled programs in ``xla/``
(:mod:`funcnet.run.compile_cache`). Both ask this module, so neither
reaches into the other for the folder. The pre-flights (a run's,
:mod:`funcnet.run.preflight`; ``funcnet data generate``'s,
:mod:`funcnet.data.shard_writer`) read the room here, before they allocate
or write anything.
"""

import os
import shutil
from typing import Optional


def cache_root() -> str:
  """funcnet's cache folder (not created here).

  ``$FUNCNET_CACHE`` if set, else ``$XDG_CACHE_HOME/funcnet``, else
  ``~/.cache/funcnet``.
  """
  if os.environ.get("FUNCNET_CACHE"):
    return os.environ["FUNCNET_CACHE"]
  if os.environ.get("XDG_CACHE_HOME"):
    return os.path.join(os.environ["XDG_CACHE_HOME"], "funcnet")
  return os.path.join(os.path.expanduser("~"), ".cache", "funcnet")


def free_disk(path) -> Optional[int]:
  """Bytes free to this user on the filesystem that holds ``path`` (or its
  nearest existing parent: ``path`` need not exist yet); None when unknown."""
  path = os.path.abspath(os.fspath(path))
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  try:
    return shutil.disk_usage(path).free
  except OSError:
    return None


def host_memory() -> tuple:
  """``(bytes, where)``: the memory free to this process.

  The host's available memory (``MemAvailable``), or the container's limit
  less its usage when that is smaller; ``where`` is ``"the host"`` or
  ``"the container"``, ``bytes`` None when unknown (no ``/proc/meminfo``).
  """
  host, box = _meminfo_available(), _cgroup_available()
  if box is not None and (host is None or box < host):
    return box, "the container"
  return host, "the host"


def _meminfo_available() -> Optional[int]:
  """``MemAvailable`` of ``/proc/meminfo`` in bytes (Linux), else the free
  physical pages (``os.sysconf``), else None."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024  # the file says kB: KiB
  except (OSError, ValueError, IndexError):
    pass
  try:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return None


# (limit, usage, stat file, its reclaimable page-cache line): cgroup v2, v1.
_CGROUPS = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current",
             "/sys/fs/cgroup/memory.stat", "inactive_file"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
             "/sys/fs/cgroup/memory/memory.usage_in_bytes",
             "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file"))


def _cgroup_available() -> Optional[int]:
  """What the container's memory limit leaves, or None without a limit.

  A container sees the host's ``MemAvailable`` but is killed at its own
  limit. Its usage counts page cache the kernel reclaims before killing
  anything; the inactive file pages are taken off, as ``docker stats`` and
  the kubelet do, so a container that has read much is not called full.
  """
  for limit_file, usage_file, stat_file, cache_line in _CGROUPS:
    try:
      with open(limit_file) as f:
        limit = f.read().strip()
      if limit == "max":
        return None
      with open(usage_file) as f:
        usage = int(f.read())
      cache = 0
      with open(stat_file) as f:
        for line in f:
          name, _, value = line.partition(" ")
          if name == cache_line:
            cache = int(value)
      return max(int(limit) - (usage - cache), 0)
    except (OSError, ValueError):
      continue
  return None


def human(n: float) -> str:
  """``n`` bytes in decimal units, three digits: ``"12.3 GB"``, ``"400 TB"``."""
  for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
    if abs(n) < 1000 or unit == "PB":
      return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
    n /= 1000
  raise AssertionError  # unreachable: the loop returns at "PB"
