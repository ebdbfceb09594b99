"""TensorBoard event files for a run: one scalar per number of each epoch record.

``metrics.jsonl`` stays the record of a run; this writes the same numbers as
TensorBoard scalars at global step ``record["step"]`` so runs can be compared
live. Tags are grouped so TensorBoard puts related curves side by side:

  train_loss, test_loss       -> loss/train, loss/test
  test_<metric> (accuracy...) -> test/<metric>
  grad_norms[<layer group>]   -> grad_norm/<layer_group>  (spaces -> "_")
  param_norm, update_norm, lr, epoch -> the same name

``time`` (wall clock, not a metric) and ``step`` (the x axis) are not written,
nor are NaN or infinite values: a diverged epoch leaves a gap, not a spike.

tensorboardX is an optional extra (``pip install -e ".[tensorboard]"``),
imported only by :func:`open_writer`.
"""

import math
import numbers
import os

from funcnet.errors import needs_extra

_SKIP = ("step", "time")


def _is_number(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def scalars(record: dict) -> dict[str, float]:
  """``{tag: value}`` for the finite numbers of an epoch ``record``."""
  out = {}
  for key, v in record.items():
    if key in _SKIP:
      continue
    if key == "grad_norms":
      # tensorboardX would rewrite "layer 1" to "layer_1" itself, with a log
      # line each time; do it here so the tag is the one documented above.
      out.update({f"grad_norm/{g.replace(' ', '_')}": n for g, n in v.items()})
    elif key in ("train_loss", "test_loss"):
      out[f"loss/{key[:-5]}"] = v
    elif key.startswith("test_"):
      out[f"test/{key[5:]}"] = v
    else:
      out[key] = v
  return {t: float(v) for t, v in out.items()
          if _is_number(v) and math.isfinite(v)}


class Writer:
  """``write(record)`` after each epoch, then ``close()``; or use ``with``."""

  def __init__(self, summary_writer):
    self._w = summary_writer

  def write(self, record: dict) -> None:
    for tag, value in scalars(record).items():
      self._w.add_scalar(tag, value, global_step=int(record["step"]))

  def close(self) -> None:
    self._w.flush()
    self._w.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def open_writer(logdir: str | os.PathLike, purge_step=None) -> Writer:
  """A :class:`Writer` of a new event file in ``logdir`` (created if needed).

  ``purge_step``: a resumed run's first new step; TensorBoard then hides
  the events of steps ``>= purge_step`` that the stopped run wrote after its
  checkpoint, which the resumed run writes again."""
  try:
    import tensorboardX
  except ImportError as err:
    raise needs_extra("run.tensorboard = true", "tensorboard",
                      "tensorboardX") from err
  return Writer(tensorboardX.SummaryWriter(logdir=os.fspath(logdir),
                                            purge_step=purge_step))
