"""Compiled programs on disk by what decides them: a warm run traces nothing.

JAX's persistent cache (:mod:`funcnet.run.compile_cache`) keys a program by
its lowered text, so even a run that compiles nothing first traces every
jitted function to a jaxpr and lowers it to MLIR: 0.3-0.6 s of a default
one-epoch run's 2 s (issue 27), more than the run's own steps. This cache
keys the compiled executable by what *decides* the program instead, and a
warm run loads it without tracing:

  key = sha256(name, identity, argument tree + shapes + dtypes + weak types,
               environment)
  identity     what the caller vouches decides the function (``Setup``: the
               resolved config, the data's spec and statistics; see
               :attr:`funcnet.experiment.Setup.program_identity`)
  environment  jax, jaxlib, optax and funcnet versions; the size and mtime
               of every funcnet source file (an edited module is another
               key); JAX's config values; ``XLA_FLAGS``; the backend, its
               version and devices
  user code    the size and mtime of every imported module's file outside
               the Python installation (``--import``'s modules and files,
               the script that registered a kind, layer or loss: its code
               is in the program but not in the config); a ``__main__``
               without a file that defines functions or classes (code
               typed into ``python -c``, a notebook) turns the cache off
               for the call, since nothing could tell an edit

  compiled(fn, args, identity)  a callable for ``args``' shapes: the
      executable from ``<dir>/<name>-<key>.bin`` when present and whole,
      else ``jax.jit(fn).lower(*args).compile()``, written there
  at_first_call(fn, identity)  ``compiled`` for the arguments of the
      first call, where only the caller's loop knows them (``fit``'s
      epoch and evaluation, a sweep group's)
  random_key(seed)  ``jax.random.key(seed)``, made on the host (or one
      cached program for another generator)
  remembered(name, identity, compute)  a value decided by ``identity``
      (a shape-only estimate, a FLOP count), kept beside the programs
  digest(obj)       a sha256 of nested configs and arrays, for identities

It is on by default (``FUNCNET_PROGRAM_CACHE=0`` turns it off), and then
only where it is safe and simple: the persistent compilation cache
(:mod:`funcnet.run.compile_cache`) is on (its folder holds this one's,
``programs/``), one process, one device, an identity given. A file that
does not load, or whose argument tree and shapes do not match the call, is
never run: the program is compiled and the file replaced. An executable
is the one the jit call would have compiled, so the numbers are the same
bit for bit. Like JAX's cache, the folder is trusted: loading an
executable can run code, so keep it where only you can write.

Only an executable XLA has just compiled is written. One that JAX read
from its own persistent cache, or handed back from its in-memory caches
(which may hold one so read), serializes to a file that loads but fails
when called (jax 0.10.2, XLA:CPU: ``NOT_FOUND: Function wrapped_sine not
found``; the kernels' object code is not in it). :class:`_Compiles` tells
the two apart by JAX's own monitoring events in the compiling thread: a
backend compilation and no persistent-cache hit. Such a program is used
but not kept; the next process takes JAX's cache for it, as without this
one.

Keys differ where programs need not: a sweep's variants, runs that differ
in their seed, any key after an edit or upgrade of funcnet. So each entry
is also listed under a digest of its program (``programs-by-program/``:
the lowered text, trees, options and environment less the sources), and
a key that misses loads the entry of the same program and keeps a copy,
instead of compiling it, or reading it from JAX's cache where it could
not be kept. A program JAX's cache holds and no entry does is compiled
once more with this cache's key in its module (:func:`_tag`), and kept.

Files are written whole (a temporary file, then ``os.replace``), so two
processes writing one entry leave one of the two.
"""

import functools
import hashlib
import os
import pickle
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Callable, Optional

import jax
import numpy as np

from funcnet import timings
from funcnet.train import host_keys

SUBFOLDER = "programs"
_LOADED: dict = {}  # path -> executable, loaded or compiled in this process
_ENV_FINGERPRINT = None


ENV = "FUNCNET_PROGRAM_CACHE"


def folder() -> Optional[str]:
  """Where entries live, or None when the cache is off: turned off
  (``FUNCNET_PROGRAM_CACHE=0``), JAX's persistent cache off, or more than
  one process or device.

  It was opt-in for a day, for a crash a warm ``funcnet sweep
  --sequential`` showed (``NOT_FOUND: Function wrapped_broadcast not
  found`` when a loaded program ran): its later variants had stored
  executables JAX had read from its own cache, which do not serialize
  whole. Those are no longer written (module docstring); the sweep test
  of ``tests/test_startup.py`` runs that case."""
  if os.environ.get(ENV, "").lower() in ("0", "off", "false", "no"):
    return None
  base = jax.config.jax_compilation_cache_dir
  if not base or jax.process_count() != 1 or jax.local_device_count() != 1:
    return None
  return os.path.join(base, SUBFOLDER)


def _source_stamp() -> list:
  """``(path, size, mtime_ns)`` of every funcnet source file: 1 ms, where
  hashing their text costs 20 (an edit changes the mtime)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = []
  for where, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs if d != "__pycache__")
    for f in sorted(files):
      if f.endswith(".py"):
        st = os.stat(os.path.join(where, f))
        out.append((os.path.relpath(os.path.join(where, f), root), st.st_size,
                    st.st_mtime_ns))
  return out


@functools.cache
def _installed_roots() -> tuple:
  """The folders of the Python installation: its standard library and
  site-packages (a module there changes only with a version, which
  ``environment`` does not see for third-party packages: their files are
  stamped too unless they are jax's, numpy's and the like, below)."""
  import site
  import sysconfig
  roots = {sys.prefix, sys.base_prefix, sys.exec_prefix,
           sysconfig.get_paths()["stdlib"], *site.getsitepackages()}
  return tuple(os.path.realpath(r) + os.sep for r in roots if r)


_WHERE: dict = {}  # a module's __file__ -> its real path if the user's, else ""


@functools.lru_cache(maxsize=None)
def _real_folder(folder: str) -> str:
  return os.path.realpath(folder)


def _users_file(path: str, roots: tuple, own: str) -> str:
  """``path``'s real path when it is outside the Python installation and
  outside funcnet, else ``""``; remembered per path: resolving the ~1,300
  modules of a run took 40 ms a call, and a run looks up 7 entries (0.28 s
  of a 2 s warm run, issue 27). The first call resolves each folder once
  (a few hundred) and looks at each file for a link: 40 -> 13 ms."""
  real = _WHERE.get(path)
  if real is None:
    folder, base = os.path.split(path)
    real = os.path.join(_real_folder(folder), base)  # modules share folders
    if os.path.islink(real):
      real = os.path.realpath(real)
    if real.startswith(own) or real.startswith(roots):
      real = ""
    _WHERE[path] = real
  return real


def _loaded_modules() -> list:
  """``sys.modules``' items, from a copy of the dict. Another thread may be
  importing (``experiment.loop`` imports orbax on one while the run
  starts): ``list(sys.modules.items())`` iterates the live dict, and the
  tuples it builds can start a garbage collection whose finalizers let
  that thread add a module mid-way (``RuntimeError: dictionary changed
  size during iteration``, seen in ``funcnet bench startup``).
  ``dict.copy`` runs no Python code, so no other thread runs during it."""
  return list(sys.modules.copy().items())


def user_stamp() -> Optional[tuple]:
  """``(path, size, mtime_ns)`` of every loaded module's file outside the
  Python installation and outside funcnet (whose files
  :func:`environment` stamps), sorted; None when a ``__main__`` without a
  file defines functions or classes (nothing could tell their edit). Read at each lookup,
  not once a process: a user may import a module after the first
  program. Costs ~1 ms: where each module's file lies is resolved once
  a process, and only the user's files are stat'ed again."""
  roots = _installed_roots()
  own = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
  out = []
  for name, mod in _loaded_modules():
    path = getattr(mod, "__file__", None)
    if path is None:
      # Built-in and namespace modules have no file, nor does code typed
      # in (``python -c``, a notebook): a ``__main__`` that defines a
      # function or class could have put it in a program. (pytest-xdist's
      # workers run a ``__main__`` without a file that defines none.)
      if name == "__main__" and any(
          getattr(v, "__module__", None) == "__main__"
          for v in list(vars(mod).values())):
        return None
      continue
    if not os.path.isabs(path):
      # not a path but a label (torch.ops' "_ops.py"): no file of the
      # user's, and relative to nothing
      continue
    real = _users_file(path, roots, own)
    if not real:
      continue
    try:
      st = os.stat(real)
    except OSError:
      return None
    out.append((real, st.st_size, st.st_mtime_ns))
  return tuple(sorted(set(out)))


def _optax_version() -> str:
  """optax's version, from its installed metadata: a run whose optimizer
  is funcnet's does not import optax (funcnet.optimizers), and a program
  can still hold optax's code (``impl = "optax"``, a user's optimizer)."""
  from importlib import metadata
  try:
    return metadata.version("optax")
  except metadata.PackageNotFoundError:
    return ""


def environment() -> str:
  """A digest of everything outside a program's arguments and identity that
  could change what it compiles to (see the module docstring)."""
  global _ENV_FINGERPRINT
  if _ENV_FINGERPRINT is None:
    import funcnet
    jax_v, jaxlib_v, *xla = _compiler_environment()
    parts = (jax_v, jaxlib_v, _optax_version(), funcnet.__version__,
             _source_stamp(), *xla)
    _ENV_FINGERPRINT = hashlib.sha256(repr(parts).encode()).hexdigest()
  return _ENV_FINGERPRINT


def _compiler_environment() -> tuple:
  """What decides the executable XLA builds from a program's text besides
  its options: jax's and jaxlib's versions, JAX's config values,
  ``XLA_FLAGS``, the backend, its version and the devices. Part of
  :func:`environment`, and of :func:`_program_digest` (which leaves out
  the sources: they decide a program only through its text)."""
  import jaxlib
  backend = jax.devices()[0].client
  return (jax.__version__, jaxlib.version.__version__,
          sorted((k, repr(v)) for k, v in jax.config.values.items()),
          os.environ.get("XLA_FLAGS", ""), backend.platform,
          backend.platform_version,
          [(d.id, d.device_kind) for d in jax.devices()])


def _signature(args) -> tuple:
  """The argument tree, and each leaf's shape, dtype and weak type: what
  an executable's inputs must be."""
  leaves, tree = jax.tree_util.tree_flatten(args)
  sig = []
  for a in leaves:
    aval = jax.typeof(a)
    sig.append((tuple(aval.shape), str(aval.dtype),
                bool(getattr(aval, "weak_type", False))))
  return str(tree), tuple(sig)


def _matches(compiled, args) -> bool:
  """Whether a loaded executable takes exactly ``args``' tree and avals."""
  infos, tree = jax.tree_util.tree_flatten(compiled.args_info)
  if str(tree) != str(jax.tree_util.tree_structure((args, {}))):
    return False
  leaves = jax.tree_util.tree_leaves(args)
  if len(infos) != len(leaves):
    return False
  for info, a in zip(infos, leaves):
    want, have = info._aval, jax.typeof(a)
    if (tuple(want.shape) != tuple(have.shape) or want.dtype != have.dtype
        or bool(getattr(want, "weak_type", False))
        != bool(getattr(have, "weak_type", False))):
      return False
  return True


def _load(path: str, args):
  """The executable at ``path`` when it loads and takes ``args``, else None."""
  from jax.experimental import serialize_executable
  try:
    with open(path, "rb") as f:
      blob, in_tree, out_tree = pickle.load(f)
    compiled = serialize_executable.deserialize_and_load(
        blob, in_tree, out_tree, execution_devices=jax.devices()[:1])
  except Exception:  # absent, partial, from another build: compile instead
    return None
  return compiled if _matches(compiled, args) else None


def _store(path: str, compiled) -> bool:
  """Writes ``compiled`` to ``path`` whole, or not at all (an executable
  that cannot be serialized, a full disk: the next run compiles again);
  whether it did."""
  from jax.experimental import serialize_executable
  try:
    _write_whole(path, pickle.dumps(serialize_executable.serialize(compiled)))
  except Exception:  # noqa: BLE001
    return False
  return True


# XLA:CPU's older loop emitters for fusions, for programs that run once or
# for microseconds (the seed's key, ``init``, fit's keys): with them these
# compile in 60-65% of the time (a default run's init 0.43 -> 0.28 s, its
# keys 0.16 -> 0.09 s) to the same bits (the default MLP's params, the
# default run's metrics; tests/test_startup.py compares init with and
# without), and run slower, which such a program does not feel. The epoch
# and the evaluation use them only when a fit runs them once, and the epoch
# is short (``train.loop.QUICK_STEPS``): the small MLP's scanned step ran
# 30% slower with them, the GRU's 26% (docs/performance.md, "Quick to
# compile").
# And LLVM at optimisation level 1 (XLA's default is 2): every shipped
# config's init compiled in 8.9 s in all against 13.6 with the older
# emitters alone and 12.8 with neither, to the same bits (7 December 2026;
# level 0 changes init's bits by an ulp: it contracts no multiply-add).
# And LLVM's code generated as one module, not split in 32 for a thread
# pool (XLA's default): the same kernels (the same bits), with less CPU
# (the default run's init, epoch and evaluation 1.02 -> 0.69 s of CPU for
# 0.60 -> 0.58 s of wall), which a cold run, two cores busy with its
# programs compiling side by side, its plots' process and orbax's import,
# feels as wall time: 2.13 -> 1.80 s with the compilations side by side
# (docs/performance.md, "Cold start: programs compiled beside each other").
QUICK_TO_COMPILE = {"xla_cpu_use_fusion_emitters": False,
                    "xla_backend_optimization_level": 1,
                    "xla_cpu_parallel_codegen_split_count": 1}
# A program of integers alone (the keys: threefry's adds, xors and
# rotations) at level 0, which cannot change an integer: fit's keys
# compiled in 0.046-0.061 s against 0.069-0.081 at level 1.
INTEGERS_TO_COMPILE = {**QUICK_TO_COMPILE, "xla_backend_optimization_level": 0}


def quick_options(integers: bool = False) -> Optional[dict]:
  """``compiler_options`` for a program compiled to run once (see
  ``QUICK_TO_COMPILE``; ``integers``: one that computes integers alone,
  ``INTEGERS_TO_COMPILE``): the CPU's, less those ``XLA_FLAGS`` sets (the
  user's choice wins; the fast test suite's level 0 compiles quicker
  still); None on another backend, or when none is left."""
  if jax.default_backend() != "cpu":
    return None
  flags = os.environ.get("XLA_FLAGS", "")
  chosen = INTEGERS_TO_COMPILE if integers else QUICK_TO_COMPILE
  options = {k: v for k, v in chosen.items() if f"--{k}=" not in flags}
  return options or None


def compiled(fn: Callable, args: tuple, identity: Optional[str],
             name: Optional[str] = None, quick: bool = False,
             integers: bool = False, background: bool = False) -> Callable:
  """``fn`` (a ``jax.jit`` function, or a plain one to jit) for ``args``'
  shapes; its executable loaded from the cache when one matches.

  Args:
    fn: the function; ``jax.jit(fn)`` when it is not jitted already (a
      jitted one keeps its donation).
    args: the positional arguments it will be called with (their shapes,
      dtypes and tree; the values are not read).
    identity: a string that decides ``fn`` given the arguments' shapes (the
      caller vouches: equal strings, equal programs); None: no cache, ``fn``
      jitted as it is.
    name: the program's name (default ``fn.__name__``): the file's prefix,
      and ``jit(name)`` in ``FUNCNET_TIMINGS`` as JAX would name it.
    quick: a program that runs once: compiled with :func:`quick_options`
      (a plain ``fn`` jitted with them; a jitted one's ``lower(...)``
      compiled with them, its donation kept).
    integers: with ``quick``, a program of integers alone (keys):
      ``quick_options(integers=True)``.
    background: when it compiles, compile on a thread (:class:`Compiling`)
      and return at once; the first call waits for it. It is traced and
      lowered here, in the caller's thread (its JAX config contexts).

  Returns:
    The jitted ``fn`` when the cache is off or ``identity`` is None; else a
    :class:`Checked` executable (loaded, or compiled and written), which
    hands a call of other shapes to the jitted ``fn``.
  """
  options = quick_options(integers) if quick else None
  plain = not hasattr(fn, "lower")
  jitted = jax.jit(fn, compiler_options=options) if plain else fn
  # a jitted fn's own options are fixed: quick ones go to its compile()
  late = None if plain else options
  where = folder() if identity is not None else None
  user = user_stamp() if where is not None else None
  if user is None:  # no cache, or user code that no file stamps an edit of
    if late is None and not background:
      return jitted
    return Checked(_compile(jitted.lower(*args), late, None, background),
                   jitted, args)
  name = name or getattr(fn, "__name__", "program")
  name = "".join(c if c.isalnum() or c in "_." else "_" for c in name)
  key = hashlib.sha256(repr((name, identity, _signature(args),
                             environment(), user, options)).encode()
                       ).hexdigest()
  path = os.path.join(where, f"{name}-{key[:40]}.bin")
  if path in _LOADED:  # this process has it (a sweep's variants' keys)
    return Checked(_LOADED[path], jitted, args)
  t0 = time.perf_counter()
  exe = _load(path, args)
  if exe is not None:
    timings.loaded(f"jit({name})", time.perf_counter() - t0)
  else:
    exe = _compile(jitted.lower(*args), late, path, background,
                   (key, options, args, f"jit({name})"))
  if len(_LOADED) >= 64:  # a long-lived process: forget the oldest
    del _LOADED[next(iter(_LOADED))]
  _LOADED[path] = exe
  return Checked(exe, jitted, args)


_TAG = "funcnet.program"
_MODULES = threading.Lock()  # held while a lowered module's tag changes


def _tag(lowered, key: str) -> None:
  """Marks ``lowered``'s module with this cache's ``key`` (a module
  attribute, ``funcnet.program``), so that JAX's persistent cache keeps
  the program under a key of its own too, and XLA compiles it here.

  For a program no entry here holds (:func:`_load_same_program` found
  none) that JAX's cache does: one JAX compiled under funcnet before
  programs were listed by their digest, or outside this cache
  (``FUNCNET_PROGRAM_CACHE=0``, a plain ``jax.jit``). Read from JAX's
  cache, it could not be kept (module docstring), and every later run
  traced and lowered it again: after a one-line edit of funcnet, a warm
  default run's init phase 0.07 -> 0.41 s for good (issue 27). XLA
  ignores a module attribute it does not know; JAX's key hashes the
  module's text, attributes included. ``compiler_ir`` is the module
  ``compile`` compiles (jax 0.10); where it is not, nothing is tagged and
  the cache works as before."""
  try:
    module = lowered.compiler_ir("stablehlo")
    from jaxlib.mlir import ir
    with module.context:
      module.operation.attributes[_TAG] = ir.StringAttr.get(key)
  except Exception:  # noqa: BLE001 - another JAX's lowering: untagged
    pass


def _listing(path: str, digest: str) -> str:
  """Where the entry of ``digest``'s program is listed: beside the
  entries' folder (``programs-by-program/<digest>``, holding the entry's
  file name), so that folder holds entries alone."""
  return os.path.join(os.path.dirname(path) + "-by-program", digest[:40])


def _program_digest(lowered, options: Optional[dict]) -> Optional[str]:
  """A sha256 of what decides the executable XLA builds from ``lowered``:
  its text (no debug information), its argument and result trees (a
  loaded executable returns the stored one's), the compile options, and
  :func:`_compiler_environment`. None when the text cannot be had."""
  try:
    attributes = lowered.compiler_ir("stablehlo").operation.attributes
    if _TAG in attributes:  # a module lowered (and tagged) before
      del attributes[_TAG]
    text = lowered.as_text()
    trees = (str(lowered.in_tree), str(lowered.out_tree))
  except Exception:  # noqa: BLE001 - nothing shared, as before
    return None
  parts = (text, trees, sorted((options or {}).items()),
           _compiler_environment())
  return hashlib.sha256(repr(parts).encode()).hexdigest()


def _load_same_program(digest: Optional[str], path: str, args):
  """The entry of another key whose program is this one (``digest``),
  copied to ``path`` and loaded; None when there is none.

  Keys that differ where programs do not: the configs of a sweep's
  variants, or of runs that differ in their seed alone; every key after
  an edit or upgrade of funcnet whose programs did not change. Such a
  program compiled under one key is loaded under the others instead of
  compiled, and kept under each (JAX's cache would have served it, but an
  executable read from there cannot be kept: module docstring)."""
  if digest is None:
    return None
  where = os.path.dirname(path)
  try:
    with open(_listing(path, digest)) as f:
      source = os.path.join(where, os.path.basename(f.read().strip()))
    exe = _LOADED.get(source)  # this process has it: a sweep's variants
    if exe is None or isinstance(exe, Compiling):
      exe = _load(source, args)
    if exe is not None and source != path:
      with open(source, "rb") as f:
        _write_whole(path, f.read())
  except OSError:  # no such program here, or a file gone meanwhile
    return None
  return exe


def _write_whole(path: str, data: bytes) -> None:
  """``data`` to ``path`` through a temporary file and ``os.replace``:
  readers see the old file or the new one, never a part."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def _compile(lowered, options: Optional[dict], path: Optional[str],
             background: bool, entry: Optional[tuple] = None):
  """``lowered.compile(compiler_options=options)``, written to ``path``
  when XLA compiled it here (not JAX's cache: module docstring); on a
  :class:`Compiling` thread when ``background``.

  ``entry``: ``(key, all options, args, timings name)`` of the entry at
  ``path``: first the entry of the same program under another key is
  looked for (:func:`_load_same_program`), else the module is tagged
  with ``key`` (:func:`_tag`), and what XLA compiles is listed under its
  program. On the thread too: the program's text (7-10 ms for a default
  run's epoch) is printed beside the caller's tracing."""
  def build():
    same = None
    if path is not None and entry is not None:
      key, all_options, args, label = entry
      t0 = time.perf_counter()
      # One jitted function lowered twice for the same shapes gives the
      # same module object (JAX caches lowerings): its tag is read,
      # removed and set by one thread at a time. (Compiling it under two
      # keys at once, one thread tagging while XLA reads it on another,
      # is left alone: no caller lowers one function for two keys at once.)
      with _MODULES:
        same = _program_digest(lowered, all_options)
        exe = _load_same_program(same, path, args)
        if exe is None:
          _tag(lowered, key)
      if exe is not None:
        timings.loaded(label, time.perf_counter() - t0)
        return exe
    with _Compiles() as seen:
      exe = lowered.compile(compiler_options=options)
    if path is not None and seen.fresh and _store(path, exe) \
        and same is not None:
      try:
        _write_whole(_listing(path, same), os.path.basename(path).encode())
      except OSError:
        pass
    return exe
  return Compiling(build, lowered.out_info) if background else build()


class Compiling:
  """An executable XLA builds on a thread, while the caller's thread goes on
  (XLA releases the GIL as it compiles): ``result()`` waits for it and
  raises what compiling raised; calling it calls the executable.

  A cold one-epoch run begins init, then lowers and begins its epoch and
  evaluation, and traces its FLOP count while they compile: the Python
  work that followed each compilation now runs beside them. XLA holds no
  lock across compilations; on two cores what they wait for is CPU
  (docs/performance.md, "Cold start: programs compiled beside each
  other"). The thread is not a daemon: a process that ends while one
  compiles waits for it rather than tearing XLA down under it."""

  def __init__(self, build: Callable, out_info=None):
    self.out_info = out_info  # the outputs' shapes, known before it is built
    self._exe = self._error = None
    self._thread = threading.Thread(target=self._run, args=(build,),
                                    name="funcnet-compile")
    self._thread.start()

  def _run(self, build):
    try:
      self._exe = build()
    except BaseException as e:  # noqa: BLE001 - raised in the caller's thread
      self._error = e

  def result(self):
    self._thread.join()
    if self._error is not None:
      raise self._error
    return self._exe

  def __call__(self, *args):
    return self.result()(*args)


def at_first_call(fn: Callable, identity: Optional[str],
                  name: Optional[str] = None, quick: bool = False) -> Callable:
  """``fn``, called through :func:`compiled` for the arguments of its first
  call (their shapes decide the executable; the later calls reuse it);
  ``fn`` itself when neither ``identity`` nor ``quick`` asks for that.

  The callable returned has ``start(*args)``: the same, begun ahead of the
  first call and compiled in the background (:class:`Compiling`) when it
  compiles; the first call, with arguments of those shapes, waits for it."""
  if identity is None and not quick:
    return _Plain(fn)
  return _FirstCall(fn, identity, name, quick)


class _Plain:
  """``fn`` as :func:`at_first_call` hands it back when nothing is cached:
  ``start`` does nothing (jit compiles at the first call)."""

  def __init__(self, fn):
    self.fn = fn

  def start(self, *args):
    del args

  def __call__(self, *args):
    return self.fn(*args)


class _FirstCall:
  """:func:`at_first_call`'s callable: ``compiled`` for the first call's
  (or ``start``'s) arguments, then that executable for every call."""

  def __init__(self, fn, identity, name, quick):
    self.fn, self.identity, self.name, self.quick = fn, identity, name, quick
    self.exe = None

  def start(self, *args):
    if self.exe is None:
      self.exe = compiled(self.fn, args, self.identity, self.name,
                          quick=self.quick, background=True)

  def __call__(self, *args):
    if self.exe is None:
      self.exe = compiled(self.fn, args, self.identity, self.name,
                          quick=self.quick)
    return self.exe(*args)


class _Compiles:
  """Within the block, whether this thread compiled a program with XLA
  (``fresh``), rather than reading it from JAX's persistent cache or
  getting it from JAX's in-memory caches (no compilation event at all).

  JAX records, in the thread that compiles, the event
  ``/jax/compilation_cache/cache_hits`` for a persistent-cache read and
  the duration ``/jax/core/compile/backend_compile_duration`` for every
  backend compilation, read or compiled; the listeners below count them
  per thread (a plotting thread's compilation is not this one's)."""

  _counts = threading.local()
  _listening = False

  @classmethod
  def _listen(cls):
    if cls._listening:
      return
    cls._listening = True

    def bump(kind):
      c = cls._counts
      setattr(c, kind, getattr(c, kind, 0) + 1)

    jax.monitoring.register_event_listener(
        lambda event, **_: bump("hits")
        if event == "/jax/compilation_cache/cache_hits" else None)
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, _secs, **_: bump("compiles")
        if event == "/jax/core/compile/backend_compile_duration" else None)

  def _now(self):
    c = self._counts
    return getattr(c, "hits", 0), getattr(c, "compiles", 0)

  def __enter__(self):
    self._listen()
    self._before = self._now()
    self.fresh = False
    return self

  def __exit__(self, *exc):
    hits, compiles = self._now()
    self.fresh = hits == self._before[0] and compiles > self._before[1]
    return False


def remembered(name: str, identity: Optional[str], compute: Callable):
  """``compute()``, a value decided by ``identity`` (and the environment),
  kept beside the programs: a warm run reads it instead of tracing for it
  (the memory pre-flight's residuals, the FLOP count of a step). A value
  that does not read back is computed again; None identity, or the cache
  off: computed."""
  where = folder() if identity is not None else None
  user = user_stamp() if where is not None else None
  if user is None:
    return compute()
  key = hashlib.sha256(repr((name, identity, environment(), user)).encode()
                       ).hexdigest()
  path = os.path.join(where, f"{name}-{key[:40]}.pkl")
  try:
    with open(path, "rb") as f:
      return pickle.load(f)
  except Exception:  # absent or damaged
    pass
  value = compute()
  try:
    os.makedirs(where, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=where, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
      pickle.dump(value, f)
    os.replace(tmp, path)
  except Exception:
    pass
  return value


def _random_key(seed):
  return jax.random.key(seed)


def random_key(seed: int):
  """``jax.random.key(seed)``, bit for bit: made on the host
  (:mod:`funcnet.train.host_keys`, nothing compiled) when JAX's default
  generator is threefry and ``0 <= seed < 2**31``; else as one program,
  cached when the cache is on (JAX's eager call stages the seed, then runs
  threefry's seed: two programs to compile, each traced on every run).
  Seeds outside ``[0, 2**31)`` take JAX's call."""
  if not 0 <= int(seed) < 2**31:
    return jax.random.key(seed)
  if host_keys.threefry_default():
    return host_keys.random_key(int(seed))
  # jax.random.key converts a Python int through np.int64 to JAX's int
  # type; the same value, as the program's argument.
  arg = np.asarray(seed, jax.dtypes.canonicalize_dtype(np.int64))
  return compiled(_random_key, (arg,), "jax.random.key", quick=True,
                  integers=True)(arg)


def digest(obj) -> str:
  """A sha256 of ``obj``: dicts, lists, tuples and named tuples by their
  items, arrays by their shape, dtype and bytes (their ``repr`` elides the
  middle of a large one), anything else by its ``repr``."""
  h = hashlib.sha256()

  def feed(o):
    if isinstance(o, Mapping):
      h.update(b"{")
      for k in sorted(o, key=repr):
        feed(k)
        feed(o[k])
      h.update(b"}")
    elif isinstance(o, (list, tuple)):
      h.update(f"{type(o).__name__}(".encode())
      for v in o:
        feed(v)
      h.update(b")")
    elif isinstance(o, (np.ndarray, np.generic, jax.Array)):
      a = np.asarray(o)
      h.update(f"array{a.shape}{a.dtype}".encode())
      h.update(np.ascontiguousarray(a).tobytes())
    else:
      h.update(repr(o).encode())
    h.update(b",")
  feed(obj)
  return h.hexdigest()


class Checked:
  """A loaded executable that checks each call's argument shapes: a call of
  other shapes (an executable takes only its own) goes to the jitted
  function, which compiles for them as it always did."""

  def __init__(self, exe, jitted, args):
    self.exe, self.jitted, self.signature = exe, jitted, _signature(args)

  @property
  def out_info(self):
    """The outputs' shapes and dtypes (``jax.ShapeDtypeStruct``s), also
    while it compiles."""
    return self.exe.out_info

  def __call__(self, *args):
    if _signature(args) == self.signature:
      if isinstance(self.exe, Compiling):  # done by now, or waited for
        self.exe = self.exe.result()
      return self.exe(*args)
    return self.jitted(*args)
