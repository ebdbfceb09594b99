"""From a resolved config to a trained run folder, and back.

This is the library behind ``funcnet train``, ``gradcheck`` and ``eval``;
the command line only parses flags (see :mod:`funcnet.cli`), and the run
folder is :mod:`funcnet.run.rundir`'s.

  Setup(cfg)                          data, model, schedule, optimizer, checked
  train_and_evaluate(cfg, workdir)    trains into a run folder; the summary
  evaluate(run)                       a run's latest checkpoint on its test split
  gradcheck(cfg, batch)               manual vs autodiff vs finite differences
  load_run(run)                       a run folder in Python: LoadedRun

One job per module: ``setup`` (what a config builds), ``loop`` (the run
loop, a :class:`~funcnet.experiment.loop.Run` with one method per phase),
``summary`` (the summary record), ``verify`` (evaluate, gradcheck,
compare-training), ``loaded`` (a run folder in Python), ``attack`` (a run
under FGSM / PGD, ``funcnet attack``), ``distill`` (``[distill]``: a
teacher run's logits in the targets, the distillation loss), ``pretrain``
(``[pretrain]``: a self-supervised objective's model, loss and targets).
"""

from funcnet.experiment.loaded import LoadedRun, load_run
from funcnet.experiment.loop import Run, train_and_evaluate
from funcnet.experiment.setup import (Setup, build_adversarial, build_dataset,
                                      build_model, build_optimizer, check,
                                      n_outputs)
from funcnet.experiment.summary import default_workdir
from funcnet.experiment.verify import compare_training, evaluate, gradcheck

__all__ = [
    "LoadedRun", "Run", "Setup", "build_adversarial", "build_dataset",
    "build_model", "build_optimizer", "check", "compare_training",
    "default_workdir", "evaluate", "gradcheck", "load_run", "n_outputs",
    "train_and_evaluate",
]
