"""A model kind of your own, registered from outside the package.

  import funcnet

  @funcnet.register_kind("mine", defaults={"width": 32},
                         docs={"width": "hidden units"})
  def mine(in_shape, n_out, width=32):
    return funcnet.Model(init, logits, "softmax", in_shape, n_out,
                         spec={"kind": "mine", "in_shape": list(in_shape),
                               "n_out": n_out, "width": width},
                         backward=...)

Once registered, the kind is a kind like the built-in ones: a config says
``[model] kind = "mine"`` and sets its ``[model.mine]`` keys (a key it does
not have is refused like any other), ``funcnet train`` and ``funcnet
gradcheck`` build it, a run folder of it evaluates and resumes. The
model's ``spec`` must be JSON (it is saved as ``model.json``) and, less
``kind`` (and ``kinked``), the builder's keyword arguments: that is how a
run's model is rebuilt without its data.

Importing code is the user's choice, never funcnet's: a config names the
module that registers its kind (``[model] import = "my_models"``, a module
on ``sys.path``, or ``"my_models.py"``, a file relative to the config),
which :func:`funcnet.config.load` imports (:func:`import_module`) before it
reads the kind's table. A run folder's saved config is never a reason to
import anything: ``funcnet eval --import``, ``load_run(dir, imports=...)``
say so explicitly. An installed package may declare its kinds as entry
points instead (:data:`funcnet.models.registry.ENTRY_POINTS`).
"""

import importlib
import importlib.util
import inspect
import os
import sys
from typing import Callable, Optional

from funcnet.errors import ConfigError
from funcnet.models import registry

# Files imported by path: real path -> module, so a second import of the
# same file is the same module (and registers nothing twice).
_FILES: dict = {}


def register_kind(name: str, build: Optional[Callable] = None, *,
                  from_config: Optional[Callable] = None,
                  defaults: Optional[dict] = None, docs: Optional[dict] = None,
                  task: Optional[str] = None, shown: Optional[Callable] = None):
  """Registers the model kind ``name``; as a decorator without ``build``.

  Args:
    name: ``model.kind`` in configs and ``spec["kind"]`` of its models.
    build: ``build(**kwargs) -> funcnet.Model``; its model's ``spec`` less
      ``kind`` must be such ``kwargs`` (the run folder rebuilds it so).
    from_config: ``(table, data_spec) -> kwargs`` for ``build``, from the
      ``[model.<name>]`` table and the data's
      :class:`funcnet.model.DataSpec`. None: the table's values, plus
      ``in_shape`` and ``n_out`` from the data when ``build`` takes
      parameters of those names.
    defaults: the ``[model.<name>]`` keys and their default values (None:
      no keys).
    docs: one line per key of ``defaults`` (``configs/README.md`` style).
    task: the data task the kind needs (``"classification"``, ...); None:
      any.
    shown: ``spec -> spec`` to describe a model in a run's first lines;
      None: all of its spec.

  Returns:
    ``build`` (so the decorator leaves the function as it was), or the
    decorator when ``build`` is None.

  Raises:
    ConfigError: ``name`` is one of funcnet's own kinds; a key without a
      doc line. (A kind of one's own registered again is replaced.)
  """
  if build is None:
    return lambda fn: register_kind(name, fn, from_config=from_config,
                                    defaults=defaults, docs=docs, task=task,
                                    shown=shown)
  defaults, docs = dict(defaults or {}), dict(docs or {})
  old = registry.KINDS.get(name)
  # A kind of one's own registered again replaces the old one (a notebook
  # cell run again, the module imported from a file after the session
  # defined it); funcnet's own kinds are never replaced.
  if old is not None and _where(old.build).startswith("funcnet."):
    raise ConfigError(f"model kind {name!r} is already registered by "
                      f"{_where(old.build)}; expected a new name for "
                      f"{_where(build)}")
  if set(defaults) ^ set(docs):
    raise ConfigError(f"model kind {name!r}: keys without a doc line or docs "
                      f"without a key: {sorted(set(defaults) ^ set(docs))}; "
                      "expected one doc line per key of defaults")
  registry.register(registry.Kind(name, build, from_config or _from_table(build),
                                  defaults, docs, task, shown), replace=True)
  return build


def _where(fn) -> str:
  return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}"


def _from_table(build: Callable) -> Callable:
  """The default ``from_config``: the table, plus ``in_shape`` and
  ``n_out`` from the data for a builder that takes them."""
  takes = inspect.signature(build).parameters

  def from_config(table: dict, spec) -> dict:
    sized = {"in_shape": tuple(spec.in_shape), "n_out": spec.n_out}
    return {**{k: v for k, v in sized.items() if k in takes}, **table}
  return from_config


def is_path(ref: str) -> bool:
  """Whether ``ref`` names a ``.py`` file rather than a module."""
  return ref.endswith(".py") or "/" in ref or os.sep in ref


def import_module(ref: str, base: Optional[str] = None,
                  what: str = "config key 'model.import'") -> str:
  """Imports the user's module ``ref``; returns how to name it again.

  Args:
    ref: a module name on ``sys.path`` (``"my_models"``,
      ``"lab.models"``), or a path to a ``.py`` file (``"my_models.py"``),
      relative to ``base``.
    base: the folder a relative path is read from (the config file's);
      None: the working directory.
    what: who names the module, for the error.

  Returns:
    ``ref`` for a module name, the file's absolute path for a file (what a
    run's saved config records).

  Raises:
    ConfigError: no such module or file. (An error inside the module is
      the module's own, and propagates as it is.)
  """
  if not is_path(ref):
    try:
      importlib.import_module(ref)
    except ModuleNotFoundError as e:
      if e.name is None or not ref.startswith(e.name):
        raise  # the module itself imports something missing
      raise ConfigError(f"{what} = {ref!r}: no module named {e.name!r} on "
                        "sys.path; expected an importable module (set "
                        "PYTHONPATH) or a path to a .py file") from None
    return ref
  path = os.path.realpath(os.path.join(base or os.getcwd(),
                                       os.path.expanduser(ref)))
  if not os.path.isfile(path):
    raise ConfigError(f"{what} = {ref!r}: no file {path!r}; expected a .py "
                      "file (a relative path is read from the config file's "
                      "folder) or a module name")
  if path not in _FILES:
    _FILES[path] = _exec_file(path)
  return path


def _exec_file(path: str):
  """The module of the file ``path``, imported under its stem (or, when
  another module holds that name, a name of its own)."""
  stem = os.path.splitext(os.path.basename(path))[0]
  held = sys.modules.get(stem)
  if held is not None:
    if os.path.realpath(getattr(held, "__file__", "") or "") == path:
      return held  # the user imported it by name already
    stem = f"funcnet_user_{stem}_{len(_FILES)}"
  spec = importlib.util.spec_from_file_location(stem, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[stem] = module
  try:
    spec.loader.exec_module(module)
  except BaseException:
    del sys.modules[stem]
    raise
  return module


def import_all(refs, base: Optional[str] = None,
               what: str = "--import") -> list:
  """:func:`import_module` of each of ``refs``; their canonical names."""
  return [import_module(r, base, what) for r in refs]
