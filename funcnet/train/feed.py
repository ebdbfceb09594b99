"""The feed: each epoch's mini-batches, cut on the host in ``batch_order``.

  perm = batch_order(key, epoch, n, b)          numpy's shuffle, on the host
  X_b  = x[perm].reshape(B, b, ...)             B = n // b mini-batches of b

A feed is one object, ``feed.epoch(e)`` (the chunks of epoch ``e``, in
order) and ``feed.close()``:

- :class:`InMemoryFeed`: the training split in memory; epoch ``e`` is one
  chunk of all ``B`` steps, and epoch ``e + 1``'s ``X_b`` is cut on the
  host while the device runs epoch ``e``.
- :class:`StreamedFeed`: a training split streamed from shards
  (:mod:`funcnet.data.streamed`); epoch ``e`` is chunks of ``k`` steps,
  read a chunk ahead by one reader thread for the whole run.

Either way step ``s`` of epoch ``e`` sees the same examples, so the two
paths give the same params bit for bit. (A shuffle inside the jitted epoch
is XLA's sort, which on a CPU costs more than a small MLP's steps.) With a
:class:`funcnet.parallel.Plan`, each process ships only its own rows.
"""

from typing import Any, Iterator, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.errors import ConfigError


class Chunk(NamedTuple):
  """Some consecutive steps of one epoch, on the device.

  Attributes:
    epoch: the epoch, from 0.
    first: the epoch's step the chunk starts at.
    steps: the steps it holds (``<= K``; rows past them are padding).
    xb: ``(K, b, *in_shape)`` inputs, ``K >= steps``.
    yb: ``(K, b, ...)`` labels or targets.
  """
  epoch: int
  first: int
  steps: int
  xb: Any
  yb: Any


def key_bits(key) -> np.ndarray:
  """A PRNG key's raw bits on the host (a typed key or a legacy uint32 one)."""
  typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
  return np.asarray(jax.random.key_data(key) if typed else key)


def batch_order(key, epoch: int, n: int, batch_size: int) -> np.ndarray:
  """``(B * b,)`` int32: the example indices of an epoch's mini-batches, in order.

  A shuffle on the host, ``perm = numpy.random.default_rng([*bits(key),
  epoch]).permutation(n)[: B * b]``; step ``s`` takes ``perm[s b : (s + 1)
  b]``. It depends only on ``key`` and ``epoch``, so a resumed run repeats an
  uninterrupted one, and every process of a multi-host run (and the
  single-device path) computes the same order. Numpy's shuffle costs ~10 ns
  per example; XLA's sort-based ``jax.random.permutation`` costs ~0.5 us per
  example on a CPU, more than a small MLP's whole step.

  Args:
    key: the training key, or its ``jax.random.key_data`` bits as a numpy
      array (then nothing waits on the device).
    epoch: the epoch, from 0.
    n: examples in the training split.
    batch_size: ``b``; the last ``n mod b`` of the shuffled examples are
      dropped.
  """
  bits = key if isinstance(key, np.ndarray) else key_bits(key)
  rng = np.random.default_rng([*(int(v) for v in bits.ravel()), int(epoch)])
  return rng.permutation(n)[: (n // batch_size) * batch_size].astype(np.int32)


def check_batch(batch_size: int, n: int, accumulate: int = 1) -> None:
  """Raises a one-line ``ConfigError`` unless ``1 <= batch_size <= n`` and
  ``accumulate`` splits the batch into equal micro-batches."""
  if not 1 <= batch_size <= n:
    raise ConfigError(f"batch_size = {batch_size} is larger than the {n} "
                      f"training examples; expected 1..{n}"
                      if batch_size > n else
                      f"batch_size = {batch_size}; expected 1..{n}")
  if accumulate < 1 or batch_size % accumulate:
    raise ConfigError(f"accumulate = {accumulate} does not divide batch_size = "
                      f"{batch_size}; expected equal micro-batches")


def host_arrays(x, y, dtype):
  """``x`` and ``y`` as numpy arrays, floats in ``dtype`` (labels and ids
  keep their integer dtypes, as JAX canonicalises them)."""
  x, y = np.asarray(x), np.asarray(y)
  if np.issubdtype(x.dtype, np.floating):
    x = x.astype(dtype, copy=False)
  if np.issubdtype(y.dtype, np.floating):
    y = y.astype(dtype, copy=False)
  return x, y


def device_dtype(a, dtype):
  """The dtype :func:`as_arrays` gives the array (or streamed split) ``a``
  on the device: floats in ``dtype``, labels and ids in their own as JAX
  canonicalises them (int64 -> int32 without x64). Read off ``a.dtype``:
  nothing is converted."""
  own = np.dtype(a.dtype) if hasattr(a, "dtype") else np.asarray(a).dtype
  if np.issubdtype(own, np.floating):
    return jnp.dtype(dtype)
  return jax.dtypes.canonicalize_dtype(own)


def as_arrays(x, y, dtype):
  """``x`` and ``y`` as device arrays, floats in ``dtype`` (labels and ids
  keep their integer dtypes).

  Converted on the host, then copied over: ``jnp.asarray`` of a numpy array
  compiles a small program per shape and dtype, three of them in a run.
  """
  return tuple(jax.device_put(a) for a in host_arrays(x, y, dtype))


# A streamed chunk's batches on the host and the device, at most (0:
# chunk_steps = 0 means the whole epoch up to this).
CHUNK_BYTES = 64 << 20


def chunk_length(in_shape, dtype, batch_size: int, steps_per_epoch: int,
                 chunk_steps: int = 0) -> int:
  """Steps per call of a streamed epoch: ``chunk_steps``, or (0) as many as
  keep a chunk's inputs within :data:`CHUNK_BYTES`; at most the epoch."""
  row = int(np.prod(in_shape)) * np.dtype(dtype).itemsize
  k = chunk_steps or max(1, CHUNK_BYTES // max(row * batch_size, 1))
  return max(1, min(k, steps_per_epoch))


# Chunks held at once while streaming: the one the device runs, the one
# being read and ``depth`` = 2 prefetched (funcnet.run.preflight counts them).
CHUNKS_IN_FLIGHT = 4


class InMemoryFeed:
  """The chunks of a training split held in memory: one per epoch.

  ``x, y``: the split as host arrays; ``order_key``: the training key's
  bits (:func:`batch_order`); ``plan``: a :class:`funcnet.parallel.Plan`
  (each process ships its rows) or None; ``epochs``: the epochs the run
  will take, ``range(start, stop)``. The first epoch's batches are cut
  here; each later one while the device runs the one before.
  """

  def __init__(self, x, y, order_key, batch_size: int, plan=None, *,
               epochs: range):
    self.x, self.y, self.order_key = x, y, order_key
    self.batch_size, self.plan, self.stop = batch_size, plan, epochs.stop
    self.steps = len(x) // batch_size
    self._upcoming = (self._batches(epochs.start)
                      if epochs.start < epochs.stop else None)

  def _batches(self, e: int):
    x, y, b = self.x, self.y, self.batch_size
    order = batch_order(self.order_key, e, len(x), b)
    if self.plan is not None:
      return self.plan.epoch_batches(order, x, y, b)
    rows = (self.steps, b)
    return (jax.device_put(x[order].reshape(rows + x.shape[1:])),
            jax.device_put(y[order].reshape(rows + y.shape[1:])))

  @property
  def upcoming(self) -> tuple:
    """``(xb, yb)`` of the next epoch :meth:`epoch` will give, on the
    device (its program can be compiled for them before it runs)."""
    return self._upcoming

  def epoch(self, e: int) -> Iterator[Chunk]:
    """Epoch ``e`` as one chunk. Asked for the next chunk (the caller has
    dispatched this one's compiled call), it cuts epoch ``e + 1``'s batches
    on the host while the device runs epoch ``e``, then ends."""
    xb, yb = self._upcoming
    yield Chunk(e, 0, self.steps, xb, yb)
    self._upcoming = self._batches(e + 1) if e + 1 < self.stop else None

  def close(self) -> None:
    """Nothing to release (the interface :class:`StreamedFeed` needs)."""


class StreamedFeed:
  """The chunks of a training split streamed from shards.

  Each chunk's rows are read in :func:`batch_order`, as the in-memory
  epoch takes them, by one :class:`funcnet.data.prefetch.Prefetcher` thread
  for the whole run, two chunks ahead: across epoch ends too, so epoch
  ``e + 1``'s first chunk is read while epoch ``e``'s last one runs (a
  prefetcher per epoch made each epoch wait for its first read: 3-4% of an
  MNIST-1D MLP epoch). ``first_step`` (a resumed run's position in
  ``epochs.start``) skips the steps already done.

  A call of the chunk program costs 11-17 ms before its first step
  (docs/performance.md): a small ``train.chunk_steps`` pays it every chunk.
  """

  def __init__(self, rows, order_key, batch_size: int, dtype, plan=None, *,
               chunk_steps: int = 0, epochs: range, first_step: int = 0):
    from funcnet.data.prefetch import Prefetcher
    self.rows, self.dtype, self.plan = rows, dtype, plan
    self.b, self.steps = batch_size, len(rows) // batch_size
    self.k = chunk_length(rows.shape[1:], dtype, batch_size, self.steps,
                          chunk_steps)
    self._order_key, self._epochs, self._first = order_key, epochs, first_step
    self._feed = Prefetcher(self._load, self._items(), depth=2)

  def _items(self):
    """``(epoch, first step, rows)`` of every chunk left in the run."""
    b, k = self.b, self.k
    for e in self._epochs:
      order = batch_order(self._order_key, e, len(self.rows), b)
      start = self._first if e == self._epochs.start else 0
      for c in range(start, self.steps, k):
        yield e, c, order[c * b:min(c + k, self.steps) * b]

  def _read(self, order):
    return host_arrays(*self.rows.read(order), self.dtype)

  def _load(self, item) -> Chunk:
    e, c, order = item
    b, k = self.b, self.k
    steps = len(order) // b
    if self.plan is not None:
      xb, yb = self.plan.read_batches(order, self._read, b, k)
    else:
      x, y = self._read(order)
      pad = lambda a: np.concatenate(
          [a.reshape((steps, b) + a.shape[1:]),
           np.zeros((k - steps, b) + a.shape[1:], a.dtype)])
      xb, yb = jax.device_put(pad(x)), jax.device_put(pad(y))
    return Chunk(e, c, steps, xb, yb)

  def epoch(self, e: int) -> Iterator[Chunk]:
    """The chunks of epoch ``e`` left to run, as read ahead."""
    done: Optional[int] = None
    while done != self.steps:
      chunk = next(self._feed)
      assert chunk.epoch == e, (chunk.epoch, e)  # in step with the loop
      done = chunk.first + chunk.steps
      yield chunk

  def close(self) -> None:
    """Stops the reader thread."""
    self._feed.close()
