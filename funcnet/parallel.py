"""Scale-out: one SPMD training step over every device of every host.

funcnet builds no distribution layer of its own. It lays a
``jax.sharding.Mesh`` over all devices, says how each array is split
(``NamedSharding`` / ``PartitionSpec``) and lets ``jax.jit`` partition the
one training step of :mod:`funcnet.train`; XLA inserts the collectives. The
same code runs on a laptop CPU (one device, or ``cpu_devices(n)`` fake
ones), a GPU, a TPU VM and, after ``initialize`` (``jax.distributed``), on
many hosts:

  mesh       D = data * fsdp devices, axes ("data", "fsdp"), over all P
             processes; each process holds D / P of them
  batch      an epoch's mini-batches xb: (B, b, ...); axis 1 is split over
             all D devices, P(None, ("data", "fsdp")): every device holds
             b / D rows of every step
  params     replicated, P(), when fsdp = 1 (data parallelism); else each
             array of >= fsdp_min_size entries has its largest axis divisible
             by fsdp split over "fsdp" (FSDP / ZeRO-3: XLA all-gathers the
             weights for the step and reduce-scatters their gradients)
  opt state  laid out by the same shape rule, so adam's mu and nu follow W

The step computes exactly the single-device step,

  C = (1/b) sum_{i<b} C_i(θ),   g = dC/dθ,   θ := θ + update(g)

each device summing over its own b / D rows, and XLA all-reduces (sums) the
partial gradients, so g is the gradient of the global batch and every update
equals the single-device one up to float rounding (summation order). There
is no explicit ``psum``/``pmean`` here: inside ``jax.shard_map`` (with
``check_vma=True``) the gradient of a per-shard loss with respect to
replicated params already comes back summed over devices, and averaging it
once more gives a gradient D times too large. ``tests/test_parallel.py``
compares gradients and params against the single-device run, with plain
SGD, whose updates (unlike adam's) scale with the gradient.

Data: every process computes the epoch's permutation from the same key
(:func:`funcnet.train.batch_order`, the one the single-device path uses),
gathers only the rows its own devices hold, and
``jax.make_array_from_process_local_data`` assembles the global ``(B, b,
...)`` array. So step ``s`` sees the same examples on 1 device, on 8, or on
8 spread over 2 hosts. Keys and the test split are replicated.

Mixed precision and gradient accumulation, which a multi-device step uses
as any other step does, live in :mod:`funcnet.train.precision`.
"""

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from funcnet.errors import ConfigError

AXES = ("data", "fsdp")
BATCH = AXES  # the batch is split over both axes (FSDP is data parallel too)


# --- before JAX starts: fake CPU devices and several processes ------------

def _backend_started() -> bool:
  from jax._src import xla_bridge  # no public query exists in jax 0.10
  return xla_bridge.backends_are_initialized()


def cpu_devices(n: int) -> None:
  """Makes the CPU backend show ``n`` devices (to simulate a multi-device host).

  Same as ``XLA_FLAGS=--xla_force_host_platform_device_count=n``. Must run
  before anything starts JAX's backend (``jax.devices()``, any computation).

  Raises:
    ConfigError: ``n < 1``, or the backend has already started.
  """
  if n < 1:
    raise ConfigError(f"--cpu-devices {n}: expected a positive integer")
  if _backend_started():
    raise ConfigError("--cpu-devices must be applied before JAX starts its "
                      "backend; expected it before any jax.devices() or "
                      "computation")
  jax.config.update("jax_num_cpu_devices", n)


def initialize(coordinator: Optional[str] = None,
               num_processes: Optional[int] = None,
               process_id: Optional[int] = None, *,
               heartbeat_timeout: int = 60, shutdown_timeout: int = 120,
               init_timeout: int = 300) -> None:
  """Joins this process to a multi-process run (``jax.distributed.initialize``).

  With no coordinator, JAX detects the cluster itself (a Cloud TPU pod
  slice, SLURM, Open MPI, or ``JAX_COORDINATOR_ADDRESS`` and friends).
  Afterwards ``jax.devices()`` lists every process's devices and
  collectives between hosts work (gloo on CPU, NCCL on GPU, ICI/DCN on TPU).

  Failure is bounded: a process that dies stops sending heartbeats, and
  after ``heartbeat_timeout`` seconds the coordination service aborts the
  others ("Terminating process because the JAX distributed service detected
  fatal errors ... another task died"). At exit each process waits at most
  ``shutdown_timeout`` seconds for the others. A process that cannot reach
  the coordinator aborts after ``init_timeout`` seconds. (These aborts come
  from JAX's C++ runtime, exit status 134; Python cannot catch them.)

  Raises:
    ConfigError: a partial or inconsistent process description, or JAX's
      backend has already started.
  """
  given = [v is not None for v in (coordinator, num_processes, process_id)]
  if any(given) and not all(given):
    raise ConfigError("--coordinator, --num-processes and --process-id go "
                      "together; expected all three (or --distributed alone "
                      "to let JAX detect a TPU pod or SLURM cluster)")
  if num_processes is not None and not 0 <= process_id < num_processes:
    raise ConfigError(f"--process-id {process_id} with --num-processes "
                      f"{num_processes}: expected 0..{num_processes - 1}")
  if _backend_started():
    raise ConfigError("jax.distributed must be initialized before JAX starts "
                      "its backend; expected it first thing in the process")
  try:
    jax.distributed.initialize(
        coordinator, num_processes, process_id,
        initialization_timeout=init_timeout,
        heartbeat_timeout_seconds=heartbeat_timeout,
        shutdown_timeout_seconds=shutdown_timeout)
  except (ValueError, RuntimeError) as e:  # no cluster detected, bad address
    raise ConfigError(f"cannot start the distributed run: {e}; expected "
                      "--coordinator HOST:PORT --num-processes N --process-id I "
                      "or a detected TPU pod / SLURM / MPI cluster") from None


def is_main() -> bool:
  """Whether this is process 0, the one that writes metrics, plots, summary."""
  return jax.process_index() == 0


# --- the mesh and how arrays are laid out on it -----------------------------

class Plan(NamedTuple):
  """How one training run is laid out on devices.

  Attributes:
    mesh: a ``Mesh`` with axes ``("data", "fsdp")`` (``Auto`` axis types:
      ``jax.make_mesh`` defaults to explicit ones in jax 0.10, which would
      make sharding part of every array's type).
    fsdp_min_size: arrays with fewer entries stay replicated under FSDP
      (biases, norms: splitting them costs more in collectives than it saves).
  """
  mesh: Mesh
  fsdp_min_size: int = 1024

  @property
  def n_devices(self) -> int:
    return self.mesh.size

  @property
  def batch_sharding(self) -> NamedSharding:
    """One mini-batch ``(b, ...)``: rows split over every device."""
    return NamedSharding(self.mesh, P(BATCH))

  @property
  def epoch_sharding(self) -> NamedSharding:
    """An epoch's mini-batches ``(B, b, ...)``: axis 1 split over every device."""
    return NamedSharding(self.mesh, P(None, BATCH))

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  def sharding_of(self, shape) -> NamedSharding:
    """The layout of a parameter or optimizer-state array of ``shape``.

    Replicated unless FSDP is on and the array is large enough; then its
    largest axis that ``fsdp`` divides is split over ``"fsdp"`` (ties: the
    first such axis). A shape-only rule, so ``W`` and adam's ``mu_W``,
    ``nu_W`` always get the same layout.
    """
    k = self.mesh.shape["fsdp"]
    if k == 1 or math.prod(shape) < max(self.fsdp_min_size, 1):
      return self.replicated
    axes = [a for a in range(len(shape)) if shape[a] % k == 0]
    if not axes:
      return self.replicated
    a = max(axes, key=lambda i: (shape[i], -i))
    return NamedSharding(self.mesh, P(*([None] * a), "fsdp"))

  def shardings(self, tree):
    """A sharding for every array leaf of ``tree`` (by :meth:`sharding_of`)."""
    return jax.tree_util.tree_map(lambda a: self.sharding_of(np.shape(a)), tree)

  def place(self, tree):
    """``tree`` (the same host values in every process) as global arrays.

    Each process fills only its own devices' pieces
    (``jax.make_array_from_callback``), so no collective is needed; arrays
    already on this mesh are kept (or resharded on device).
    """
    def put(a):
      target = self.sharding_of(np.shape(a))
      if isinstance(a, jax.Array) and isinstance(a.sharding, NamedSharding) \
          and a.sharding.mesh == self.mesh:  # already global (e.g. restored)
        return a if a.sharding == target else jax.device_put(a, target)
      host = np.asarray(a)
      return jax.make_array_from_callback(host.shape, target,
                                          lambda idx: host[idx])
    return jax.tree_util.tree_map(put, tree)

  def replicate(self, tree):
    """``tree`` as global arrays with a full copy on every device."""
    def put(a):
      if isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(put(jax.random.key_data(a)),
                                        impl=jax.random.key_impl(a))
      host = np.asarray(a)
      return jax.make_array_from_callback(host.shape, self.replicated,
                                          lambda idx: host[idx])
    return jax.tree_util.tree_map(put, tree)

  def local_rows(self, batch_size: int) -> np.ndarray:
    """The rows of each global mini-batch that this process's devices hold.

    Sorted global row indices in ``[0, batch_size)``; contiguous on a mesh
    whose devices are grouped by process, but any layout works (this is the
    order ``make_array_from_process_local_data`` expects).
    """
    index = self.batch_sharding.addressable_devices_indices_map((batch_size,))
    rows = set()
    for (sl,) in index.values():
      rows.update(range(*sl.indices(batch_size)))
    return np.array(sorted(rows), dtype=np.int64)

  def epoch_batches(self, order, x, y, batch_size: int):
    """An epoch's ``(B, b, ...)`` mini-batches as global arrays.

    Args:
      order: ``(B * b,)`` example indices in step order (the same in every
        process: :func:`funcnet.train.batch_order`).
      x, y: the training split on the host, ``(n, ...)``.
      batch_size: ``b``.

    Returns:
      ``(xb, yb)`` sharded by :attr:`epoch_sharding`; this process builds
      only its own rows of every step.
    """
    order = np.asarray(order).reshape(-1, batch_size)
    mine = order[:, self.local_rows(batch_size)]  # (B, rows of this process)
    out = []
    for a in (x, y):
      a = np.asarray(a)
      out.append(jax.make_array_from_process_local_data(
          self.epoch_sharding, a[mine], order.shape + a.shape[1:]))
    return tuple(out)

  def read_batches(self, order, read, batch_size: int, steps: int):
    """A chunk of ``(steps, b, ...)`` mini-batches read by rows: for a
    training split streamed from shards (:mod:`funcnet.data.streamed`).

    Args:
      order: ``(k * b,)`` example indices of ``k <= steps`` steps, in step
        order (the same in every process).
      read: ``rows -> (x, y)``, the split's rows in that order.
      batch_size: ``b``.
      steps: the chunk's length; steps past ``k`` are zeros (padding the
        chunk function never reads).

    Returns:
      ``(xb, yb)`` sharded by :attr:`epoch_sharding`. This process reads
      only its own rows of every step (``read`` sees nothing else).
    """
    order = np.asarray(order).reshape(-1, batch_size)
    mine = order[:, self.local_rows(batch_size)]  # (k, rows of this process)
    out = []
    for a in read(mine.ravel()):
      a = a.reshape(mine.shape + a.shape[1:])
      if steps > a.shape[0]:
        a = np.concatenate([a, np.zeros((steps - a.shape[0],) + a.shape[1:],
                                        a.dtype)])
      out.append(jax.make_array_from_process_local_data(
          self.epoch_sharding, a, (steps, batch_size) + a.shape[2:]))
    return tuple(out)

  def check_batch(self, batch_size: int, accumulate: int = 1) -> None:
    """Raises ``ConfigError`` unless every device gets whole micro-batch rows."""
    unit = self.n_devices * accumulate
    if batch_size % unit:
      what = f"{self.n_devices} devices" + (
          f" x {accumulate} micro-batches" if accumulate > 1 else "")
      raise ConfigError(
          f"config key 'train.batch_size' = {batch_size} does not split over "
          f"{what}; expected a multiple of {unit} (the global batch is the "
          "same on any number of devices)")

  def describe(self) -> str:
    d = self.mesh.devices.flat[0]
    procs = jax.process_count()
    return (f"{self.n_devices} x {d.device_kind} "
            f"(mesh data={self.mesh.shape['data']} fsdp={self.mesh.shape['fsdp']}"
            f"{f', {procs} processes' if procs > 1 else ''})")


def make_plan(devices: int = 0, fsdp: int = 1, fsdp_min_size: int = 1024
              ) -> Optional[Plan]:
  """The mesh for a run, or None when it runs on one device.

  Args:
    devices: 0 for every device of every process; 1 for the single-device
      path (bit-identical to a laptop run); ``N`` for the first ``N``
      devices (one process only).
    fsdp: the size of the ``fsdp`` axis; must divide the device count.
    fsdp_min_size: see :class:`Plan`.

  Raises:
    ConfigError: sizes that do not fit the devices present.
  """
  total, procs = jax.device_count(), jax.process_count()
  n = total if devices == 0 else devices
  if procs > 1 and n != total:
    raise ConfigError(f"config key 'parallel.devices' = {devices} with {procs} "
                      f"processes; expected 0 (all {total} devices)")
  if not 1 <= n <= total:
    raise ConfigError(f"config key 'parallel.devices' = {devices}, but only "
                      f"{total} devices are present; expected 0..{total}")
  if fsdp < 1 or n % fsdp:
    raise ConfigError(f"config key 'parallel.fsdp' = {fsdp} does not divide "
                      f"the {n} devices; expected a divisor of {n}")
  if n == 1:
    return None
  # Grouped by process so each host's rows of a batch are one block; within
  # a process, jax's own order (on TPU, make_mesh's topology-aware order
  # matters for ICI bandwidth, so it is used where it applies).
  devs = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))[:n]
  try:
    mesh = jax.make_mesh((n // fsdp, fsdp), AXES, devices=devs,
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
  except (ValueError, NotImplementedError):
    mesh = Mesh(np.array(devs).reshape(n // fsdp, fsdp), AXES,
                axis_types=(jax.sharding.AxisType.Auto,) * 2)
  return Plan(mesh, fsdp_min_size)


def plan_from_config(cfg) -> Optional[Plan]:
  """:func:`make_plan` from the ``[parallel]`` section of a config."""
  p = cfg["parallel"]
  return make_plan(p["devices"], p["fsdp"], p["fsdp_min_size"])


__all__ = ["AXES", "Plan", "cpu_devices", "initialize", "is_main", "make_plan",
           "plan_from_config"]
