"""The training state: one pytree of everything a run changes as it trains.

  TrainState(params, opt_state, epoch, step, early_stopping, position,
             initial_loss)

``fit`` starts from one (or draws a fresh one), hands one to its callbacks,
and returns one in :class:`funcnet.train.loop.FitResult`; the checkpoints
(:class:`funcnet.run.checkpoints.Saver`) save one and restore one, so a
resumed run continues from exactly what the interrupted one had. The rest
of a run (the batch order, the dropout keys) follows from the key and
``epoch``.

The jitted programs carry only ``params`` and ``opt_state`` (the other
fields are counters and small host-side dicts, which would recompile the
program whenever their structure changes); ``fit`` advances ``epoch`` and
``step`` between calls.
"""

from typing import Any, NamedTuple, Optional


class TrainState(NamedTuple):
  """Where a run stands, as flax's ``TrainState`` (without its functions).

  Attributes:
    params: the model's params (any pytree).
    opt_state: the optimizer's state; None: ``optimizer.init(params)``.
    epoch: epochs completed (the next epoch to run, counting from 0).
    step: optimizer steps completed in the run,
      ``epoch * steps_per_epoch + position["step"]``.
    early_stopping: the early-stopping counters after ``epoch``
      (``{"best_test_loss", "evaluations_since_best"}``, as the epoch's
      record has them, see :class:`funcnet.train.monitor.Monitor`); None:
      none yet. A resumed run passes them back so it stops where the
      uninterrupted run would.
    position: inside epoch ``epoch`` of a run streamed from shards,
      ``{"step": s, "sums": [...]}``: its first ``s`` steps are done and
      their metric sums are ``sums`` (see
      :func:`funcnet.train.programs.make_chunk`); None: at the epoch's start.
    initial_loss: the first epoch's mean training loss, the reference of
      the divergence guard for a loss that grows without bound (see
      :data:`funcnet.train.monitor.LOSS_GROWTH_LIMIT`); None: no epoch yet.
  """
  params: Any
  opt_state: Any = None
  epoch: int = 0
  step: int = 0
  early_stopping: Optional[dict] = None
  position: Optional[dict] = None
  initial_loss: Optional[float] = None
