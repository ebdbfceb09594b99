"""Checkpoints of ``{params, opt_state, epoch}`` with orbax-checkpoint.

orbax writes each checkpoint into a temporary folder and renames it only
once complete, so a process killed in the middle of a save leaves the
previous checkpoints readable and the half-written one ignored. Arrays are
stored as tensorstore/zarr with JSON metadata: nothing is unpickled on load.
Restoring needs the structure of the state (``optax`` states are named
tuples), which the caller provides from a fresh ``init``.

With several processes (:mod:`funcnet.parallel`) every process calls
``save`` and ``restore``: each writes and reads only its own shards of the
global arrays, and orbax synchronises the processes around the commit. The
folder must then be one that every host sees (a shared filesystem, or a
``gs://`` URL, which is passed to orbax as is). A checkpoint restores onto
any layout: the template's shardings decide, so a run saved on 8 devices
resumes or evaluates on one.
"""

import logging
import os

import jax

from funcnet.errors import CheckpointError

# orbax logs every save at INFO through absl; a training script's output
# should be its own.
logging.getLogger("absl").setLevel(logging.WARNING)


def _ocp():
  """``orbax.checkpoint``, imported on first use: it takes ~0.3 s (with
  tensorstore), which a run that finds no checkpoint to resume need not pay
  before its first epoch (issue 15)."""
  import orbax.checkpoint as ocp
  return ocp


def _is_url(directory) -> bool:
  return "://" in os.fspath(directory)


def _manager(directory, keep=None, create=False, asynchronous=False):
  ocp = _ocp()
  opts = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=create,
      enable_async_checkpointing=asynchronous)
  where = directory if _is_url(directory) else os.path.abspath(directory)
  return ocp.CheckpointManager(where, options=opts)


def latest_epoch(directory):
  """The epoch of the newest complete checkpoint in ``directory``, or None."""
  if _is_url(directory):
    from etils import epath  # orbax's own path layer (gs:// needs gcsfs)
    if not epath.Path(directory).exists():
      return None
  elif not os.path.isdir(directory):
    return None
  with _manager(directory) as mgr:
    return mgr.latest_step()


class Saver:
  """Saves ``{params, opt_state, epoch}`` every call, keeping the last ``keep``.

  In one process the saves are asynchronous: ``save`` copies the arrays on
  their device (the next epoch donates, i.e. overwrites, the buffers it was
  given) and returns; orbax writes them on its own threads while training
  goes on, finishing one save before it starts the next. ``close`` returns
  once every save is complete on disk; ``train_and_evaluate`` calls it
  before it writes the summary, and on any error. A process killed
  meanwhile leaves the checkpoint being written ignored (orbax renames it
  into place only once complete) and the earlier ones readable. With
  several processes the saves stay synchronous (orbax synchronises the
  processes around each commit).
  """

  def __init__(self, directory, keep: int):
    self.directory = directory
    self._mgr = None
    self._keep = keep
    self._async = jax.process_count() == 1

  def save(self, epoch: int, params, opt_state) -> None:
    if self._mgr is None:
      self._mgr = _manager(self.directory, self._keep, create=True,
                           asynchronous=self._async)
    if epoch in self._mgr.all_steps():
      return
    state = {"params": params, "opt_state": opt_state, "epoch": epoch}
    if self._async:
      # A copy on the device, never donated: orbax reads it after we return.
      state = jax.tree_util.tree_map(
          lambda a: jax.device_put(a, a.sharding, may_alias=False)
          if isinstance(a, jax.Array) else a, state)
    self._mgr.save(epoch, args=_ocp().args.StandardSave(state))
    if not self._async:
      self._mgr.wait_until_finished()

  def close(self) -> None:
    if self._mgr is not None:
      self._mgr.wait_until_finished()
      self._mgr.close()
      self._mgr = None


def _restore(directory, target, epoch, args):
  """``args(target)`` restored from the newest (or given) checkpoint."""
  step = epoch if epoch is not None else latest_epoch(directory)
  if step is None:
    raise CheckpointError(f"no checkpoint in {directory!r}; expected a run "
                          "folder written by funcnet train")
  ocp = _ocp()
  target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
  try:
    with _manager(directory) as mgr:
      return mgr.restore(step, args=args(target))
  except Exception as e:  # orbax/tensorstore raise many kinds; one line for people
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    raise CheckpointError(
        f"checkpoint {os.path.join(directory, str(step))!r} cannot be read "
        f"({type(e).__name__}: {first[:200]}); expected a complete orbax "
        "checkpoint — delete it to fall back to an earlier one") from None


def restore(directory, params, opt_state, epoch=None):
  """``(epoch, params, opt_state)`` from the newest (or given) checkpoint.

  ``params`` and ``opt_state`` are templates with the right structure,
  shapes and dtypes (a fresh ``init``); their values are not used.

  Raises:
    CheckpointError: no checkpoint, or one that is truncated or corrupted.
  """
  state = _restore(directory, {"params": params, "opt_state": opt_state,
                               "epoch": 0}, epoch, _ocp().args.StandardRestore)
  return int(state["epoch"]), state["params"], state["opt_state"]


def restore_params(directory, params, epoch=None):
  """``(epoch, params)`` alone: for a model trained elsewhere (evaluation,
  fine-tuning), whose optimizer state is of no use and need not be rebuilt.

  Raises:
    CheckpointError: as :func:`restore`.
  """
  def partial(target):
    ocp = _ocp()
    return ocp.args.PyTreeRestore(
        target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True)
  state = _restore(directory, {"params": params, "epoch": 0}, epoch, partial)
  return int(state["epoch"]), state["params"]
