"""Checkpoints of a :class:`funcnet.train.TrainState` with orbax-checkpoint.

On disk, a step holds the arrays ``{params, opt_state, epoch}`` and, in
orbax's custom metadata (inside its atomic commit, under the manifest),
the state's small host-side fields: ``early_stopping``, ``position``,
``step`` and ``initial_loss`` (the last two since issue 22; a checkpoint
without them restores them as 0 and None).

orbax writes each checkpoint into a temporary folder and renames it only
once complete, so a process killed in the middle of a save leaves the
previous checkpoints readable and the half-written one ignored. Arrays are
stored as tensorstore/zarr with JSON metadata: nothing is unpickled on load.
Restoring needs the structure of the state (``optax`` states are named
tuples), which the caller provides from a fresh ``init``.

Damage after the save (a truncated, zeroed or overwritten file, a deleted
one, a flipped bit) is caught by a manifest of checksums: once orbax has
renamed a step into place, :class:`Saver` writes ``funcnet_sha256.json``
into it (the sha256 of every other file of the step; orbax ignores the
extra file). :func:`restore_newest_good` checks it before restoring, and
a step that fails the check, or that orbax cannot read, is reported in one
line and the next older one is tried. orbax alone does not notice a
flipped byte in an array's data: it restores the array with a wrong value
(tests/test_checkpoint_integrity.py shows it). :func:`set_aside` renames a
damaged step to a name orbax ignores, so that a resumed run can write that
epoch again.

With several processes (:mod:`funcnet.parallel`) every process calls
``save`` and ``restore``: each writes and reads only its own shards of the
global arrays, and orbax synchronises the processes around the commit. The
folder must then be one that every host sees (a shared filesystem, or a
``gs://`` URL, which is passed to orbax as is; URLs get no manifest). A
checkpoint restores onto any layout: the template's shardings decide, so a
run saved on 8 devices resumes or evaluates on one.
"""

import contextlib
import gc
import os
import sys
import time
from typing import Callable, NamedTuple, Optional

import jax
import numpy as np

from funcnet.errors import CheckpointError
from funcnet.run import manifest, orbax_noise
from funcnet.train.state import TrainState

_ASIDE = ".damaged-"  # <step>.damaged-<unix time>: no step name to orbax
_EARLY_STOPPING = "early_stopping"  # its key in orbax's custom metadata
_POSITION = "position"  # a streamed run's place inside an epoch (same place)
# TrainState's fields kept in the custom metadata, not as arrays
_METADATA = (_EARLY_STOPPING, _POSITION, "step", "initial_loss")
_EXTRA = "extra"  # a caller's own JSON (a sweep group's monitors), or absent


def _ocp():
  """``orbax.checkpoint``, imported on first use: it takes ~0.3 s (with
  tensorstore), which a run that finds no checkpoint to resume need not pay
  before its first epoch (issue 15)."""
  import orbax.checkpoint as ocp
  return ocp


def _is_url(directory) -> bool:
  return "://" in os.fspath(directory)


def _where(directory) -> str:
  return os.fspath(directory) if _is_url(directory) else os.path.abspath(directory)


def _manager(directory, keep=None, create=False, asynchronous=False):
  ocp = _ocp()
  opts = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=create,
      enable_async_checkpointing=asynchronous)
  # Quiet: orbax warns about every step whose _CHECKPOINT_METADATA is
  # missing while listing them; whether that step is usable is for
  # ``restore_newest_good`` to say, in one line.
  with orbax_noise.quiet():
    return ocp.CheckpointManager(_where(directory), options=opts)


def _exists(directory) -> bool:
  if _is_url(directory):
    from etils import epath  # orbax's own path layer (gs:// needs gcsfs)
    return epath.Path(directory).exists()
  return os.path.isdir(directory)


def latest_epoch(directory):
  """The epoch of the newest complete checkpoint in ``directory``, or None.

  Complete means renamed into place by orbax; whether it is intact is only
  known on restore (:func:`restore_newest_good`).
  """
  if not _exists(directory):
    return None
  with _manager(directory) as mgr:
    return mgr.latest_step()


class Saver:
  """Saves a :class:`~funcnet.train.state.TrainState` every call, keeping
  the last ``keep``.

  Checkpoints are numbered by ``state.epoch``, or with ``by_step`` by
  ``state.step``: a run streamed from shards, which may also save inside
  an epoch (``state.position`` then says where).

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

  Each step gets its checksum manifest (:func:`funcnet.run.manifest.write`, process 0,
  local folders only) as soon as orbax is certainly done with it: at once
  for a synchronous save; for an asynchronous one at the next ``save``
  (which orbax would make wait for it anyway) or at ``close``.

  The state's host-side fields (``early_stopping``, ``position``, ``step``,
  ``initial_loss``: small JSON-able values) go into the step's orbax
  metadata (``_CHECKPOINT_METADATA``), inside orbax's atomic commit and
  under the manifest; restores return them in :attr:`Restored.state`.
  """

  def __init__(self, directory, keep: int, by_step: bool = False):
    self.directory = directory
    self._mgr = None
    self._keep, self._by_step = keep, by_step
    self._async = jax.process_count() == 1
    self._unsealed = []  # saved steps still without a manifest

  def save(self, state: TrainState, extra: Optional[dict] = None) -> None:
    """:meth:`_save`, with a failure to write (a full disk, a folder gone
    read-only) as one line: :class:`CheckpointError`, exit 2.

    ``extra``: JSON the caller wants restored with this step (returned as
    :attr:`Restored.extra`), kept in the same metadata as the state's
    host-side fields, so inside the atomic commit and under the manifest
    (a sweep group keeps its variants' histories there)."""
    with self._writing():
      self._save(state, extra)

  @contextlib.contextmanager
  def _writing(self):
    try:
      yield
    except CheckpointError:
      raise
    except Exception as e:  # orbax/tensorstore raise many kinds
      if _from_jax(e):
        # A collective failed, not the disk: with several processes,
        # orbax's save waits for every one, and a peer that died meanwhile
        # surfaces here ("Gloo AllGather failed: Connection reset by
        # peer"); cli's multi-process path names it and leaves at once.
        raise
      # (orbax_noise.drop_late_noise ran when the manager was made, in _save)
      orbax_noise.silence_stderr_at_exit()
      with orbax_noise.quiet():
        gc.collect()
      raise CheckpointError(
          f"a checkpoint could not be written to {str(self.directory)!r} "
          f"({_write_reason(e)}); expected a folder with space that this "
          "process can write (the earlier checkpoints are intact)") from None

  def _save(self, state: TrainState, extra: Optional[dict] = None) -> None:
    """Saves ``state`` as checkpoint ``state.step`` (``by_step``) or
    ``state.epoch``: ``{params, opt_state, epoch}`` as arrays, the rest as
    metadata."""
    if self._mgr is None:
      # Before anything is written: a write failing on orbax's threads
      # leaves tasks that complain later, when they are collected.
      orbax_noise.drop_late_noise()
      self._mgr = _manager(self.directory, self._keep, create=True,
                           asynchronous=self._async)
    step = int(state.step if self._by_step else state.epoch)
    if step in self._mgr.all_steps():
      return
    # Before the next save starts: orbax deletes the steps past ``keep``
    # while finishing that save, which must not overlap our hashing.
    self._seal()
    arrays = {"params": state.params, "opt_state": state.opt_state,
              "epoch": state.epoch}
    if self._async:
      # A copy on the device, never donated: orbax reads it after we return.
      arrays = jax.tree_util.tree_map(
          lambda a: jax.device_put(a, a.sharding, may_alias=False)
          if isinstance(a, jax.Array) else a, arrays)
    custom = {k: getattr(state, k) for k in _METADATA}
    if extra is not None:
      custom[_EXTRA] = extra
    self._mgr.save(step, args=_ocp().args.StandardSave(arrays),
                   custom_metadata=custom)
    self._unsealed.append(step)
    if not self._async:
      self._seal()

  def _seal(self) -> None:
    """Waits for orbax's pending save, then writes the missing manifests."""
    self._mgr.wait_until_finished()
    steps, self._unsealed = self._unsealed, []
    if jax.process_index() != 0 or _is_url(self.directory):
      return
    for step in steps:
      step_dir = os.path.join(str(self._mgr.directory), str(step))
      if os.path.isdir(step_dir):  # absent if orbax failed to finalise it
        manifest.write(step_dir)

  def close(self) -> None:
    """Returns once every save is on disk (with its manifest)."""
    if self._mgr is None:
      return
    try:
      with self._writing():
        self._seal()
    except CheckpointError:
      with contextlib.suppress(Exception):  # it may repeat the error
        self._mgr.close()
      self._mgr = None
      raise
    mgr, self._mgr = self._mgr, None
    with self._writing():
      mgr.close()


# --- Restoring the newest good checkpoint -----------------------------------


class Damaged(NamedTuple):
  """A step that :func:`restore_newest_good` skipped.

  Attributes:
    epoch: its step number.
    path: its folder.
    reason: what is wrong, e.g. ``sha256 of default/d/ab12 differs``.
    moved_to: where :func:`set_aside` put it (``move_damaged``), or None.
  """
  epoch: int
  path: str
  reason: str
  moved_to: Optional[str] = None


class Restored(NamedTuple):
  """What :func:`restore_newest_good` returns.

  Attributes:
    state: the :class:`~funcnet.train.state.TrainState` saved: params (in
      the template's structure and shardings), optimizer state (None when
      only params were asked for), epoch, and the metadata fields as
      :meth:`Saver.save` had them (``position`` None: a checkpoint at the
      end of ``epoch``; ``early_stopping`` None: none, or a checkpoint from
      before it was saved).
    damaged: the :class:`Damaged` newer steps tried first, newest first;
      empty when the newest was good.
    extra: the ``extra`` JSON :meth:`Saver.save` was given, or None.
  """
  state: TrainState
  damaged: tuple
  extra: Optional[dict] = None


def _reason(e: BaseException) -> str:
  """The first meaningful line of an orbax/tensorstore error.

  orbax wraps tensorstore's error in one that repeats the whole store spec
  (its ``str`` holds ``<bound method pybind11_...>``): the innermost cause
  says what is wrong, and its ``[tensorstore_spec=...]`` tail is cut.
  """
  while e.__cause__ is not None:
    e = e.__cause__
  text = str(e)
  for tail in (" [tensorstore_spec", "See full TensorStore details",
               "<bound method"):
    text = text.split(tail)[0]
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  line = lines[0][:200] if lines else ""
  if not line or (not isinstance(e, ValueError) and type(e) is not Exception):
    line = f"{type(e).__name__}: {line}" if line else type(e).__name__
  return line


def _from_jax(e: BaseException) -> bool:
  """Whether ``e`` is, or was raised from, a JAX runtime error."""
  seen = set()
  while e is not None and id(e) not in seen:
    if isinstance(e, jax.errors.JaxRuntimeError):
      return True
    seen.add(id(e))
    e = e.__cause__ or e.__context__
  return False


def _write_reason(e: BaseException) -> str:
  """Why a write failed: the OS's words when tensorstore quotes an
  ``os_error_code`` (``File too large``, ``No space left on device``),
  else :func:`_reason`'s line."""
  import re
  while e.__cause__ is not None:
    e = e.__cause__
  if isinstance(e, OSError) and e.errno:
    return os.strerror(e.errno)
  code = re.search(r"os_error_code='?(\d+)", str(e))
  return os.strerror(int(code.group(1))) if code else _reason(e)


def _agreed(ok: bool, reason: Optional[str], decide_on_zero: bool):
  """``(ok, reason)`` the same on every process.

  With several processes a step is good only if it is for all of them
  (else some would restore it and others not, and wait for each other
  forever); ``decide_on_zero``: process 0's answer is everyone's (for the
  checksums, which only process 0 computes).
  """
  if jax.process_count() == 1:
    return ok, reason
  from jax.experimental import multihost_utils
  if decide_on_zero:
    all_ok = bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))
  else:
    all_ok = bool(np.all(multihost_utils.process_allgather(np.int32(ok))))
  if not all_ok and ok:
    reason = ("process 0 found it damaged" if decide_on_zero
              else "another process cannot read it")
  return all_ok, reason


def _try(mgr, step_dir, step, target, args, checksums: bool):
  """``(state, None)``, or ``(None, reason)`` when the step is damaged.

  Raises:
    CheckpointError: the step matches its manifest, yet orbax cannot
      restore it into ``target``: it is intact but of another model.
  """
  orbax_noise.drop_late_noise()
  reason = None
  if checksums and jax.process_index() == 0:
    reason = manifest.check(step_dir)
  ok, reason = _agreed(reason is None, reason, decide_on_zero=True)
  if not ok:
    return None, reason
  verified = checksums and os.path.exists(
      os.path.join(step_dir, manifest.MANIFEST))
  try:
    with orbax_noise.quiet():
      state = dict(mgr.restore(step, args=args(target)))
      custom = mgr.metadata(step).custom_metadata or {}
      for k in _METADATA + (_EXTRA,):
        state[k] = custom.get(k)
  except Exception as e:  # orbax/tensorstore raise many kinds
    state, reason = None, _reason(e)
  if state is None:
    orbax_noise.silence_stderr_at_exit()
    # Only now is the error's traceback, which holds the failed tasks and
    # coroutines, unreferenced: collected here, they complain in silence.
    with orbax_noise.quiet():
      gc.collect()
  ok, reason = _agreed(state is not None, reason, decide_on_zero=False)
  if not ok and verified:
    raise CheckpointError(
        f"checkpoint {step_dir!r} is intact but does not fit this model "
        f"({reason}); expected the config it was saved with")
  return (state, None) if ok else (None, reason)


def _print_to_stderr(line: str) -> None:
  if jax.process_index() == 0:
    print(f"funcnet: {line}", file=sys.stderr)


def restore_newest_good(directory, template: TrainState, *, epoch=None,
                        on_damaged: Optional[Callable[[str], None]] = None,
                        move_damaged: bool = False) -> Restored:
  """The newest intact checkpoint in ``directory``, skipping damaged ones.

  Steps are tried newest first. A step is damaged when it does not match
  its checksum manifest (a file changed, missing or added since the save)
  or when orbax cannot read it; a step without a manifest (an older
  checkpoint, or a process killed between orbax's commit and the
  manifest's write) is restored as it is. Each damaged step followed by an
  older one is reported in one line, ``checkpoint DIR/9 is damaged (sha256
  of default/d/ab12 differs); falling back to epoch 6``, through
  ``on_damaged`` (default: printed to stderr by process 0). Nothing on disk
  changes unless ``move_damaged``: a resume sets the damaged steps aside
  (:func:`set_aside`) so that it can write those epochs again; an
  evaluation only reads.

  Args:
    directory: the checkpoint folder (local, or a ``gs://`` URL, which is
      not checksummed).
    template: a :class:`~funcnet.train.state.TrainState` whose ``params``
      and ``opt_state`` have the structure, shapes, dtypes and shardings
      to restore into (a fresh ``init``, or ``jax.ShapeDtypeStruct``
      leaves; their values are not used). ``opt_state`` None: the params
      alone (a model trained elsewhere: evaluation, fine-tuning).
    epoch: restore this step or fail; no fallback.
    on_damaged: called with each one-line report.
    move_damaged: once a good step is restored, :func:`set_aside` the
      damaged newer ones (nothing moves when none is good).

  Returns:
    :class:`Restored` ``(state, damaged)``.

  Raises:
    CheckpointError: no checkpoint; every one damaged (one line naming the
      folder and what is wrong with the newest); ``epoch`` missing or
      damaged; or an intact checkpoint that does not fit the templates.
  """
  if not _exists(directory):
    raise CheckpointError(f"no checkpoint in {directory!r}; expected a run "
                          "folder written by funcnet train")
  with _manager(directory) as mgr:
    r = _newest_good(mgr, directory, template.params, template.opt_state,
                     epoch, on_damaged or _print_to_stderr)
  if move_damaged and r.damaged:
    r = r._replace(damaged=tuple(d._replace(moved_to=set_aside(directory,
                                                               d.epoch))
                                 for d in r.damaged))
  return r


def _newest_good(mgr, directory, params, opt_state, epoch, report):
  """:func:`restore_newest_good` with the folder's orbax manager open."""
  steps = sorted(mgr.all_steps(), reverse=True)
  if not steps:
    raise CheckpointError(f"no checkpoint in {directory!r}; expected a run "
                          "folder written by funcnet train")
  if epoch is not None:
    if epoch not in steps:
      raise CheckpointError(
          f"no checkpoint of epoch {epoch} in {directory!r}; expected one "
          f"of {sorted(steps)}")
    steps = [epoch]

  ocp = _ocp()
  if opt_state is None:
    target = {"params": params, "epoch": 0}

    def args(t):  # the params alone: the optimizer state is not read
      return ocp.args.PyTreeRestore(
          t, restore_args=ocp.checkpoint_utils.construct_restore_args(t),
          partial_restore=True)
  else:
    target = {"params": params, "opt_state": opt_state, "epoch": 0}
    args = ocp.args.StandardRestore
  target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)

  root = _where(directory)
  checksums = not _is_url(directory)
  damaged = []
  for i, step in enumerate(steps):
    step_dir = os.path.join(root, str(step))
    state, reason = _try(mgr, step_dir, step, target, args, checksums)
    if state is not None:
      return Restored(TrainState(
          state["params"], state.get("opt_state"), int(state["epoch"]),
          int(state["step"] or 0), state[_EARLY_STOPPING], state[_POSITION],
          state["initial_loss"]), tuple(damaged), state[_EXTRA])
    damaged.append(Damaged(step, step_dir, reason))
    if i + 1 < len(steps):
      report(f"checkpoint {step_dir} is damaged ({reason}); falling back "
             f"to epoch {steps[i + 1]}")
  newest = damaged[0]
  if epoch is not None:
    raise CheckpointError(
        f"checkpoint {newest.path!r} is damaged ({newest.reason}); expected "
        "an intact checkpoint (omit the epoch to use the newest good one)")
  older = len(damaged) - 1
  raise CheckpointError(
      f"no intact checkpoint in {directory!r}: the newest, epoch "
      f"{newest.epoch}, is damaged ({newest.reason})"
      + (f", and so {'is' if older == 1 else 'are'} the {older} older "
         f"one{'s' if older > 1 else ''}" if older else "")
      + "; expected a complete checkpoint written by funcnet train")


def restore(directory, params, opt_state, epoch=None, on_damaged=None):
  """``(epoch, params, opt_state)`` from the newest good (or given) checkpoint.

  ``params`` and ``opt_state`` are templates with the right structure,
  shapes and dtypes (a fresh ``init``); their values are not used. Damaged
  checkpoints are skipped and reported as in :func:`restore_newest_good`,
  which also returns the skipped ones and the early-stopping counters.

  Raises:
    CheckpointError: as :func:`restore_newest_good`.
  """
  r = restore_newest_good(directory, TrainState(params, opt_state),
                          epoch=epoch, on_damaged=on_damaged).state
  return r.epoch, r.params, r.opt_state


def restore_params(directory, params, epoch=None, on_damaged=None):
  """``(epoch, params)`` alone: for a model trained elsewhere (evaluation,
  fine-tuning), whose optimizer state is of no use and need not be rebuilt.

  Raises:
    CheckpointError: as :func:`restore_newest_good`.
  """
  r = restore_newest_good(directory, TrainState(params), epoch=epoch,
                          on_damaged=on_damaged).state
  return r.epoch, r.params


def set_aside(directory, epoch: int) -> str:
  """Renames the damaged step ``epoch`` to ``<epoch>.damaged-<unix time>``.

  orbax takes only digit names for steps, so the renamed folder is neither
  restored nor counted against ``keep`` nor deleted, and a resumed run can
  save that epoch again (:class:`Saver` skips an epoch already present).
  It stays beside the good ones for a person to inspect or delete. Call
  it before the :class:`Saver` that writes that epoch again is created
  (orbax lists the steps once). Process 0 renames; with several
  processes, all wait for it.

  Returns:
    The new path (as process 0 named it, on process 0).

  Raises:
    CheckpointError: there is no such step.
  """
  root = _where(directory)
  src = os.path.join(root, str(epoch))
  if not _is_url(directory) and not os.path.isdir(src):
    raise CheckpointError(f"no checkpoint of epoch {epoch} in {directory!r} "
                          "to set aside; expected a step folder")
  stamp = int(time.time())
  dst, n = os.path.join(root, f"{epoch}{_ASIDE}{stamp}"), 0
  if jax.process_index() == 0:
    if _is_url(directory):
      from etils import epath
      while epath.Path(dst).exists():
        n += 1
        dst = os.path.join(root, f"{epoch}{_ASIDE}{stamp}-{n}")
      epath.Path(src).rename(dst)
    else:
      while os.path.exists(dst):  # two set-asides of one epoch in a second
        n += 1
        dst = os.path.join(root, f"{epoch}{_ASIDE}{stamp}-{n}")
      os.rename(src, dst)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"funcnet set_aside {epoch}")
  return dst
