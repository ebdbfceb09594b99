"""The model registry: every model kind, declared once, in its own module.

A kind is a :class:`Kind`: its name (``model.kind`` in a config, and
``spec["kind"]`` of the models it builds), its builder, how a config table
and a dataset become the builder's arguments, and its ``[model.<name>]``
config table (defaults, one doc line per key). Each module of
:mod:`funcnet.models` registers its kinds when imported, and importing
:mod:`funcnet.models` imports every module in the folder, so a new kind is
one new module (plus its config and tests): nothing outside
``funcnet/models/`` names a kind.

A kind from outside the package (a user's own, :func:`funcnet.register_kind`
in :mod:`funcnet.models.user`) is registered the same way, at any time:
whoever keeps a table per kind (the config's ``[model.<kind>]`` tables)
listens with :func:`on_register`. An installed package may also declare
kinds as entry points of the group :data:`ENTRY_POINTS` (the entry
point's name is the kind's); :func:`find` loads one only when its kind is
asked for and not registered.

What a built model carries for the rest of the library (where its head is,
its hand-written backward) is on the :class:`funcnet.model.Model` itself.
"""

import json
from typing import Callable, NamedTuple, Optional

from funcnet.errors import ConfigError, FuncnetError
from funcnet.model import DataSpec


class Kind(NamedTuple):
  """One model kind.

  Attributes:
    name: ``model.kind`` in configs, ``spec["kind"]`` of its models.
    build: the builder, ``build(**kwargs) -> Model``; a model's ``spec``
      without ``kind`` and ``kinked`` is such a ``kwargs``.
    from_config: ``(table, spec) -> kwargs`` for ``build``: the
      ``[model.<name>]`` table, sized to the data ``spec`` (a
      :class:`funcnet.model.DataSpec`: input shape, ``n_out`` outputs, id
      ranges). Raises :class:`ConfigError` when the data does not suit the
      kind.
    defaults: the config table's keys and default values.
    docs: one line per key of ``defaults``. (No ranges: the builder checks
      its arguments, the one place each is checked, and
      :func:`from_config` names the table in its error.)
    task: the data task the kind needs (``"classification"``,
      ``"ratings"``); None: any.
    shown: ``spec -> spec`` less what does not apply to that model (an MLP
      without a hidden layer has no hidden activation), for
      :func:`describe`; None: all of it.
  """
  name: str
  build: Callable
  from_config: Callable
  defaults: dict
  docs: dict
  task: Optional[str] = None
  shown: Optional[Callable] = None


KINDS: dict = {}

ENTRY_POINTS = "funcnet.models"
"""The entry-point group an installed package declares its kinds in: ``mine =
"my_package.models"`` (a module that registers ``mine`` when imported) or
``"my_package.models:KIND"`` (a :class:`Kind`)."""

_LISTENERS: list = []


def on_register(listener: Callable) -> None:
  """Calls ``listener(kind)`` for every kind registered, now and later."""
  _LISTENERS.append(listener)
  for kind in list(KINDS.values()):
    listener(kind)


def register(kind: Kind, replace: bool = False) -> Kind:
  """Adds ``kind`` to :data:`KINDS`; a name can be registered once (or,
  with ``replace``, again: a user's module imported anew)."""
  if kind.name in KINDS and KINDS[kind.name] is not kind and not replace:
    raise ValueError(f"model kind {kind.name!r} is registered twice")
  missing = set(kind.defaults) ^ set(kind.docs)
  if missing:  # every key documented, every documented key real
    raise ValueError(f"model kind {kind.name!r}: keys without a doc line or "
                     f"docs without a key: {sorted(missing)}")
  KINDS[kind.name] = kind
  for listener in _LISTENERS:
    listener(kind)
  return kind


def find(name: str) -> Optional[Kind]:
  """The kind called ``name``: registered, or declared by an installed
  package's entry point (loaded now); None when neither."""
  if name not in KINDS and isinstance(name, str):
    from importlib.metadata import entry_points
    for ep in entry_points(group=ENTRY_POINTS, name=name):
      loaded = ep.load()  # the package's module registers its kinds
      if isinstance(loaded, Kind) and loaded.name not in KINDS:
        register(loaded)
      break
  return KINDS.get(name)


def get(name: str) -> Kind:
  """The kind called ``name``, or a one-line :class:`ConfigError`."""
  kind = find(name)
  if kind is None:
    raise ConfigError(f"config key 'model.kind' = {name!r}; expected one of "
                      f"{', '.join(KINDS)}, or a kind of your own with the "
                      "module that registers it named in [model] import")
  return kind


def describe(spec: dict) -> str:
  """One line saying what a model is, as a run's first lines show it:
  ``mlp {"sizes": [40, 10], ...}``, without the arguments that do not apply
  to it (:attr:`Kind.shown`)."""
  kind = get(spec["kind"])
  shown = {k: v for k, v in spec.items() if k != "kind"}
  return f"{kind.name} {json.dumps(kind.shown(shown) if kind.shown else shown)}"


def rebuild(spec: dict):
  """The model a ``spec`` (``model.spec``, e.g. saved in a run) describes."""
  kwargs = {k: v for k, v in spec.items() if k not in ("kind", "kinked")}
  return get(spec["kind"]).build(**kwargs)


def from_config(name: str, table: dict, spec: DataSpec):
  """The ``name`` model of the config table ``table``, sized to the data
  ``spec`` (:func:`funcnet.data.spec` of a dataset)."""
  kind = get(name)
  if kind.task is not None and spec.task != kind.task:
    raise ConfigError(f"model.kind = {name!r} needs {kind.task} data; "
                      f"{spec.name!r} is {spec.task} data")
  kwargs = kind.from_config(table, spec)  # its errors name their keys
  try:
    return kind.build(**kwargs)
  except FuncnetError as e:  # the builder checks its arguments: name the table
    raise ConfigError(f"config [model.{name}]: {e}") from None
