"""One run's bookkeeping between epochs: history, evaluation, stopping.

``fit`` keeps one :class:`Monitor`; :mod:`funcnet.sweep` keeps one per
variant, so a variant records, evaluates and stops exactly where the same
run alone would.

A run stops as ``"diverged"`` when an epoch's loss is not finite (the
jitted epoch's guard, see :mod:`funcnet.train.programs`), or when it stays
finite but has grown without bound: an epoch's mean training loss above

  LOSS_GROWTH_LIMIT * max(C_1, 1),      LOSS_GROWTH_LIMIT = 1e6

where ``C_1`` is the run's first epoch's mean loss (a loss that climbs to
1e20 in float32 would otherwise end as ``"done"``). The floor of 1 keeps
a run whose first loss is already tiny (a regression fitted at once) from
being called diverged for a rise that is still small in absolute terms.
A million times the first loss is no plateau or noisy epoch: a model that
got there is lost, and its params are no better than the last saved ones.
"""

from typing import Callable, NamedTuple, Optional

import jax
import numpy as np

from funcnet.train import program_cache
from funcnet.train.state import TrainState

STATUSES = ("done", "early_stopped", "diverged", "stopped")

# A finite epoch loss above this multiple of max(first epoch's loss, 1) is
# divergence (see the module doc).
LOSS_GROWTH_LIMIT = 1e6


class Evaluation(NamedTuple):
  """When ``fit`` evaluates on the held-out split, and when it stops early.

  Attributes:
    every: evaluate every this many epochs (and at the last one).
    patience: stop when the held-out loss has not improved for this many
      evaluations; None: never.
    restore_best: end with the params of the evaluation whose held-out loss
      was lowest (Keras's ``restore_best_weights``; the optimizer state stays
      the last one); False: the params where training stopped.
  """
  every: int = 1
  patience: Optional[int] = None
  restore_best: bool = False


class Monitor:
  """One run's history, when it evaluates, early stopping and the
  divergence verdict.

  Epoch ``e`` (from 0) is evaluated when ``e + 1`` is a multiple of
  ``evaluation.every``, or at the last epoch, unless it diverged; counted
  from the run's first epoch, not from where this process started, so a
  resumed run evaluates the epochs the uninterrupted one does. ``status``
  leaves ``"done"`` when the loss was not finite or grew past
  :data:`LOSS_GROWTH_LIMIT` (``"diverged"``), or the held-out loss has not
  improved for ``evaluation.patience`` evaluations (``"early_stopped"``).
  With patience, each record carries the counters
  (``record["early_stopping"] = {"best_test_loss",
  "evaluations_since_best"}``), which ``start`` (a resumed run's
  :class:`funcnet.train.state.TrainState`) restores, with the first
  epoch's loss (:attr:`initial_loss`).
  """

  def __init__(self, groups, steps_per_epoch: int, epochs: int,
               evaluation: Evaluation = Evaluation(), norms: bool = True,
               lr_schedule=None, has_test: bool = True,
               start: Optional[TrainState] = None,
               rates: Optional[np.ndarray] = None):
    self.groups, self.steps_per_epoch = groups, steps_per_epoch
    self.epochs, self.evaluation, self.norms = epochs, evaluation, norms
    self.lr_schedule, self.has_test = lr_schedule, has_test
    self.history, self.status, self.reason = [], "done", None
    es = (start.early_stopping if start is not None else None) or {}
    best = es.get("best_test_loss")
    self.best = np.inf if best is None else float(best)
    self.since_best = int(es.get("evaluations_since_best", 0))
    self.initial_loss = None if start is None else start.initial_loss
    self.improved = False  # the last evaluation set a new best held-out loss
    # every epoch's learning rate (rate_tables' row, else read at the first
    # record)
    self._lrs = None if rates is None else np.asarray(rates)

  def snapshot(self) -> dict:
    """Everything this monitor decides from, as JSON (NaN and inf kept as
    floats): ``history, status, reason, best, since_best, initial_loss``.
    A sweep's group checkpoint holds one per variant; :meth:`restore` puts
    it back, so a resumed variant evaluates, stops and records as the
    uninterrupted one. A copy: an asynchronous save may serialise it after
    the next epoch's record is appended (met: a step holding one record
    too many)."""
    return {"history": [dict(h) for h in self.history], "status": self.status,
            "reason": self.reason, "best": float(self.best),
            "since_best": self.since_best, "initial_loss": self.initial_loss}

  def restore(self, snap: dict) -> None:
    """The state :meth:`snapshot` returned."""
    self.history = list(snap["history"])
    self.status, self.reason = snap["status"], snap["reason"]
    self.best, self.since_best = float(snap["best"]), int(snap["since_best"])
    self.initial_loss = snap["initial_loss"]

  def wants_eval(self, e: int, bad_step) -> bool:
    """Whether epoch ``e`` (its ``bad_step`` from
    :class:`funcnet.train.step.EpochMetrics`) is evaluated on the held-out
    split."""
    return bool(self.has_test and bad_step < 0 and (
        (e + 1) % self.evaluation.every == 0 or e + 1 == self.epochs))

  def stop(self, reason: str) -> None:
    self.status, self.reason = "stopped", reason

  def early_stopping(self) -> Optional[dict]:
    """The counters as a record carries them; None without patience. (inf,
    nothing evaluated yet, is written as None by ``json_safe``.)"""
    if self.evaluation.patience is None:
      return None
    return {"best_test_loss": float(self.best),
            "evaluations_since_best": self.since_best}

  def after(self, e: int, m, metrics: Optional[dict], elapsed: float) -> dict:
    """Epoch ``e``'s history record, from its host-side ``EpochMetrics``
    ``m`` and held-out ``metrics`` (None when not evaluated); updates
    ``status``."""
    step = (e + 1) * self.steps_per_epoch
    record = {"epoch": e + 1, "step": step, "train_loss": float(m.loss)}
    if self.norms:
      record["grad_norms"] = dict(zip(self.groups, map(float, m.grad_norms)))
    record["param_norm"] = float(m.param_norm)
    if self.norms:
      record["update_norm"] = float(m.update_norm)
    if self.lr_schedule is not None:
      if self._lrs is None:
        self._lrs = epoch_rates(self.lr_schedule, self.steps_per_epoch,
                                self.epochs)
      record["lr"] = (float(self._lrs[e]) if e < len(self._lrs)
                      else float(self.lr_schedule(step)))
    if m.bad_step >= 0:
      self.status, self.reason = "diverged", (
          f"loss became non-finite at epoch {e + 1}, step "
          f"{e * self.steps_per_epoch + int(m.bad_step) + 1}; kept the last "
          "params with a finite loss")
      record["train_loss"] = float("nan")
    elif not self._grew(e, record["train_loss"]) and metrics is not None:
      record.update({f"test_{k}": v for k, v in metrics.items()})
      self._patience(e, metrics["loss"])
    if self.evaluation.patience is not None:
      record["early_stopping"] = self.early_stopping()
    record["time"] = elapsed
    self.history.append(record)
    return record

  def _grew(self, e: int, loss: float) -> bool:
    """Whether epoch ``e``'s finite ``loss`` passed the growth limit (then
    ``status`` is ``"diverged"``); the first epoch's loss is the reference."""
    if self.initial_loss is None:
      self.initial_loss = loss
      return False
    limit = LOSS_GROWTH_LIMIT * max(self.initial_loss, 1.0)
    if not loss > limit:
      return False
    self.status, self.reason = "diverged", (
        f"loss grew to {loss:.3g} at epoch {e + 1}, more than "
        f"{LOSS_GROWTH_LIMIT:.0e} x max(the first epoch's {self.initial_loss:.3g}"
        ", 1)")
    return True

  def _patience(self, e: int, loss: float) -> None:
    """Early stopping after an evaluation whose held-out loss is ``loss``;
    ``improved`` says whether it is the best so far."""
    patience = self.evaluation.patience
    self.improved = False
    if patience is None and not self.evaluation.restore_best:
      return
    if loss < self.best - 1e-12:
      self.best, self.since_best, self.improved = loss, 0, True
      return
    self.since_best += 1
    if patience is not None and self.since_best >= patience:
      self.status, self.reason = "early_stopped", (
          f"early stopping at epoch {e + 1}: held-out loss has not "
          f"improved for {patience} evaluations")


def epoch_rates(schedule: Callable, steps_per_epoch: int,
                epochs: int, identity: Optional[str] = None) -> np.ndarray:
  """``schedule(count)`` at the end of each epoch, ``count = (e + 1) *
  steps_per_epoch`` for ``e < epochs``, as numpy: one compiled call.

  A schedule called eagerly runs each of its ops as a program of its own:
  a warm-up and cosine decay is about 15 of them, each compiled on a cold
  run (0.02 s apiece on this 2-core CPU, 0.3 s of a one-epoch MNIST-1D
  run's first start) and dispatched at every record. Vectorised and jitted
  (the quick compile options: it runs once), it is one small program. A
  schedule written with Python control flow on ``count`` cannot be traced:
  it is called per epoch instead, as before (an empty table).

  ``identity``: a string that decides ``schedule`` (a Setup's
  ``program_identity``: its config holds the schedule and the learning
  rate); the program is then kept in funcnet's program cache, and a warm
  run loads it without tracing or lowering it (0.02 s of a warm one-epoch
  run, issue 27).
  """
  return rate_tables([schedule], steps_per_epoch, [epochs], identity)[0]


def rate_tables(schedules, steps_per_epoch: int, epochs,
                identity: Optional[str] = None) -> list:
  """:func:`epoch_rates` of several schedules (a sweep's variants, ``epochs``
  each theirs) from one compiled call: one program for all, not one per
  variant. When one of them cannot be traced, each is tabled alone (that
  one empty). ``identity``: as :func:`epoch_rates`', deciding every one of
  ``schedules``."""
  rates = [getattr(f, "constant", None) for f in schedules]
  if schedules and None not in rates:
    # constant rates (schedules.constant, the default): their table needs
    # no program, and a cold default run compiled one for it (0.04-0.08 s
    # of XLA beside the epoch's). The dtype is the jitted table's: JAX's
    # default float (float32 unless x64), so each record's rate is the same.
    dtype = jax.dtypes.canonicalize_dtype(float)
    return [np.full(e, r, dtype) for r, e in zip(rates, epochs)]
  counts = (np.arange(max(epochs, default=0), dtype=np.int32) + 1) \
      * steps_per_epoch

  def rates(c):
    return [jax.vmap(f)(c) for f in schedules]
  try:
    # (without an identity, compiled returns jit(rates) with the quick
    # options: the cache is then not used)
    out = program_cache.compiled(
        rates, (counts,),
        identity and program_cache.digest((identity, len(schedules))),
        name="rates", quick=True)(counts)
  except jax.errors.JAXTypeError:
    if len(schedules) == 1:
      return [np.zeros((0,))]
    return [rate_tables([f], steps_per_epoch, [e])[0]
            for f, e in zip(schedules, epochs)]
  return [np.asarray(t)[:e] for t, e in zip(out, epochs)]
