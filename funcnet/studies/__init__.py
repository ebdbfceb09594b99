"""Studies: the classic claims about backprop and gradient descent, as runs.

``funcnet study NAME`` runs one study into a folder holding its figures
(PNG), ``table.md`` (the numbers behind them), ``results.json`` and a
``README.md`` that states the claim and what this run measured.

  study                  the claim it checks
  textbook               the article's numpy network = funcnet manual = autodiff
  vanishing-exploding    gradient norm per layer against depth, activation, init
  saddle-points          optimizers on 2-D surfaces and a deep linear network
  learning-rate-batch    best rate vs batch (slope, 95% interval), stability limit
  lr-strategies          fixed, decayed and adaptive learning rates side by side
  regularisation         none, L2, dropout, early stopping: the generalisation gap
  architecture           width x depth: where depth helps and where it stops
  efficiency             distilled, int8 and pruned models: accuracy vs size,
                         FLOPs and latency
  labels                 scratch vs self-supervised pretraining, with few labels

Each study is one module of this package that registers a :class:`Study`
(importing the package imports every module, as :mod:`funcnet.models`
does). A study has parameters with defaults (``--set key=value`` changes
them) and a smaller ``quick`` set (``--quick``: seconds, for tests). It is
built from the library's own pieces (models, optimizers, ``train.fit``,
``funcnet.sweep``), not private copies.
"""

import importlib
import pkgutil

from funcnet.studies.registry import STUDIES, Study, get, register, run

for _module in pkgutil.iter_modules(__path__):
  if _module.name not in ("registry", "report"):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["STUDIES", "Study", "get", "register", "run"]
