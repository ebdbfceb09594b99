"""The dataset registry: every built-in dataset, declared once, beside its
loader.

A built-in dataset is a :class:`Source`: its name (``data.name`` in a
config), its loader, the task of its data and one line about it. Each
module of :mod:`funcnet.data` registers the sets it defines when imported,
and importing :mod:`funcnet.data` imports every module in the folder, so a
new dataset is its loader and one :func:`register` call: ``config.py``'s
doc line for ``data.name`` and ``funcnet data convert`` take the names from
here, and nothing outside ``funcnet/data/`` names a dataset.
"""

from typing import Callable, NamedTuple, Optional

from funcnet.errors import unknown


class Source(NamedTuple):
  """One built-in dataset.

  Attributes:
    name: ``data.name`` in configs, the :class:`funcnet.data.Dataset`'s
      ``name``.
    load: the loader, ``load(**options) -> Dataset``; it takes ``seed``
      when it draws anything (:func:`funcnet.data.load` passes it then).
    task: the task of its data (``"classification"``, ...).
    doc: one line: what the set is, its size.
    valid_range: ``(lo, hi)``, the values a raw input may take (digits'
      pixel intensities 0-16), which attacks clip to; None where the data
      has no natural bound (MNIST-1D's signals, generated points).
  """
  name: str
  load: Callable
  task: str
  doc: str
  valid_range: Optional[tuple] = None


DATASETS: dict = {}


def register(source: Source) -> Source:
  """Adds ``source`` to :data:`DATASETS`; a name can be registered once."""
  if source.name in DATASETS and DATASETS[source.name] is not source:
    raise ValueError(f"dataset {source.name!r} is registered twice")
  DATASETS[source.name] = source
  return source


def get(name: str) -> Source:
  """The dataset called ``name``, or a one-line ``UnknownNameError``."""
  if name not in DATASETS:
    raise unknown("dataset", name, DATASETS)
  return DATASETS[name]


def names() -> list[str]:
  """The registered names, sorted."""
  return sorted(DATASETS)


def valid_range(name) -> Optional[tuple]:
  """The raw input range ``(lo, hi)`` that dataset ``name`` states, or None
  (no statement, or not a registered name: a file or a shard folder)."""
  source = DATASETS.get(name) if isinstance(name, str) else None
  return source.valid_range if source is not None else None
