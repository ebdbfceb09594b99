"""JAX's persistent compilation cache: a second run compiles nothing.

On a CPU, XLA spends seconds compiling the programs of even a small run
(a training epoch alone takes 1-2 s here), more than the run itself
(issue 15). With the cache on, every compiled program is also written to
disk, keyed by the program, the JAX and XLA versions, the XLA flags and the
device, and the next process that needs the same program loads it instead.

  folder(on)   where the cache is, or None when it is off
  enable(on)   sets JAX's options; call it before the first compilation

The command line (``funcnet train``, ``sweep``, ``gradcheck``, ``eval``,
``study``) turns it on, unless ``run.compilation_cache = false`` or the
environment says otherwise:

  FUNCNET_COMPILATION_CACHE=off      (or 0, false, no): no cache
  FUNCNET_COMPILATION_CACHE=DIR      the cache in DIR
  unset                              <funcnet cache>/xla, i.e.
                                     $FUNCNET_CACHE/xla, else
                                     $XDG_CACHE_HOME/funcnet/xla, else
                                     ~/.cache/funcnet/xla (MNIST-1D's cache
                                     is beside it)

JAX's own ``JAX_COMPILATION_CACHE_DIR``, when set, wins: the cache is then
where the user put it for every JAX program.

Clearing it is deleting the folder (``rm -rf ~/.cache/funcnet/xla``); a run
then compiles again and refills it. It grows by a few hundred KiB per new
config (JAX evicts nothing unless the ``filelock`` package is installed and
``jax_compilation_cache_max_size`` is set). Like any compiled code, the
cache is trusted: keep it where only you can write.

A folder that cannot be written (read-only, or a file in the way) leaves the
cache off with a one-line note on stderr; the run goes on.
"""

import os
import sys
import tempfile
from typing import Optional

from funcnet import paths

ENV = "FUNCNET_COMPILATION_CACHE"
_OFF = ("0", "off", "false", "no")


def folder(on: bool = True) -> Optional[str]:
  """The cache folder ``enable(on)`` would use, or None when it is off.

  ``on`` is the config key ``run.compilation_cache``;
  ``$FUNCNET_COMPILATION_CACHE`` can turn the cache off or move it (see the
  module docstring).
  """
  env = os.environ.get(ENV, "").strip()
  if not on or env.lower() in _OFF:
    return None
  return env or os.path.join(paths.cache_root(), "xla")


def _writable(path: str) -> Optional[str]:
  """None when ``path`` is (made) a folder we can write a file into, else
  why not."""
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
      pass
  except OSError as e:
    return e.strerror or type(e).__name__
  return None


def enable(on: bool = True, note=None) -> Optional[str]:
  """Turns JAX's persistent compilation cache on; returns its folder, or
  None when it stays off.

  Every program is cached, however small or quick to compile
  (``jax_persistent_cache_min_compile_time_secs = 0``, no minimum size): a
  run's small programs (initialisation, evaluation) cost about as much to
  compile as its epoch does. Call before the first compilation; a program
  compiled earlier is not written. JAX reads the folder once, at its first
  compilation: a later call with another folder has no effect in that
  process.

  Args:
    on: ``run.compilation_cache`` of the config.
    note: where a one-line note goes when the folder cannot be used
      (default: stderr).
  """
  import jax
  if jax.config.jax_compilation_cache_dir:  # the user's JAX setting wins
    return jax.config.jax_compilation_cache_dir
  where = folder(on)
  if where is None:
    return None
  why = _writable(where)
  if why is not None:
    (note or (lambda s: print(s, file=sys.stderr)))(
        f"funcnet: note: compilation cache off, cannot write {where!r} "
        f"({why}); set {ENV}=DIR to move it or {ENV}=off to silence this")
    return None
  return use(where)


def use(where: str) -> str:
  """Points JAX's persistent cache at ``where`` and caches every program
  there, however small or quick to compile (see :func:`enable`); returns
  ``where``. No checks: :func:`enable` makes them, the test suite calls
  this for a temporary folder of its own."""
  import jax
  jax.config.update("jax_compilation_cache_dir", where)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  return where
