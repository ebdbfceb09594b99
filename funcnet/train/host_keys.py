"""Threefry keys made on the host: ``jax.random.key``, ``split`` and
``fold_in`` in numpy, bit for bit.

A run makes a handful of keys outside its programs: the seed's key, fit's
``split`` into the init and training keys, each epoch's ``fold_in``. As JAX
calls each is a program: compiled on a cold start (threefry's hash, 0.05-0.07
s for fit's keys, 0.02 s for the seed's, plus their lowering), loaded from
the cache on a warm one. Here they are integer arithmetic of a few
microseconds, and the same bits: JAX's Threefry-2x32 (Salmon et al. 2011,
20 rounds) as ``jax/_src/random/threefry2x32.py`` applies it, for either
setting of ``jax_threefry_partitionable``; ``tests/test_host_keys.py``
holds every function to ``jax.random``.

Only concrete keys of JAX's default implementation take this path
(:func:`usable`); anything else (a traced key, another generator) goes to
JAX.
"""

import jax
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def threefry2x32(k1, k2, x1, x2):
  """The Threefry-2x32 block cipher of the counters ``(x1, x2)`` under the
  key ``(k1, k2)``: five groups of four rounds (add, rotate, xor), the key
  schedule injected after each. uint32 arrays in and out; wrapping adds."""
  with np.errstate(over="ignore"):  # uint32 adds wrap, as the cipher's do
    ks = [np.uint32(k1), np.uint32(k2),
          np.uint32(k1) ^ np.uint32(k2) ^ _PARITY]
    x = [np.asarray(x1, np.uint32) + ks[0], np.asarray(x2, np.uint32) + ks[1]]
    for i in range(5):
      for r in _ROTATIONS[i % 2]:
        x[0] = x[0] + x[1]
        x[1] = (x[1] << np.uint32(r)) | (x[1] >> np.uint32(32 - r))
        x[1] = x[0] ^ x[1]
      x[0] = x[0] + ks[(i + 1) % 3]
      x[1] = x[1] + (ks[(i + 2) % 3] + np.uint32(i + 1))
  return x


def _hash(key, count):
  """JAX's ``threefry_2x32(key, count)``: the counts' first half and
  second half (padded with a zero when odd) as the two counter words, the
  two outputs concatenated back."""
  flat = np.asarray(count, np.uint32).ravel()
  odd = flat.size % 2
  if odd:
    flat = np.concatenate([flat, np.zeros(1, np.uint32)])
  half = flat.size // 2
  y = threefry2x32(key[0], key[1], flat[:half], flat[half:])
  out = np.concatenate(y)
  return (out[:-1] if odd else out).reshape(np.shape(count))


def split(key, n: int):
  """``jax.random.split`` of the key data ``key`` (uint32 (2,)) into ``n``:
  ``(n, 2)``. Partitionable: key ``i`` hashes the counter ``(0, i)``; else
  the counts ``0 .. 2n - 1`` hashed together, read as pairs."""
  if jax.config.jax_threefry_partitionable:
    y = threefry2x32(key[0], key[1], np.zeros(n, np.uint32),
                     np.arange(n, dtype=np.uint32))
    return np.stack(y, axis=1)
  return _hash(key, np.arange(2 * n, dtype=np.uint32)).reshape(n, 2)


def fold_in(key, data: int):
  """``jax.random.fold_in(key, data)`` of the key data ``key``: the key's
  hash of ``data``'s own seed, ``(0, data)``."""
  return _hash(key, np.array([0, int(data) & 0xFFFFFFFF], np.uint32))


def threefry_default() -> bool:
  """Whether JAX's default generator (``jax.random.key``'s, and raw keys')
  is threefry."""
  return "threefry2x32" in str(jax.config.jax_default_prng_impl)


def usable(key) -> bool:
  """Whether ``key`` is a concrete key of JAX's threefry: a typed key of
  that implementation, or raw key data (uint32 ``(2,)``) while threefry is
  the default."""
  if isinstance(key, jax.core.Tracer):
    return False
  try:
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
      return key.shape == () and "threefry2x32" in str(
          jax.random.key_impl(key))
  except AttributeError:
    return False
  return (np.shape(key) == (2,) and np.dtype(key.dtype) == np.uint32
          and threefry_default())


def key_data(key) -> np.ndarray:
  """``key``'s data as numpy uint32 ``(2,)`` (a typed key's, or raw data)."""
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    return np.asarray(jax.random.key_data(key), np.uint32)
  return np.asarray(key, np.uint32)


def _like(key, data):
  """``data`` as keys of ``key``'s kind, placed as JAX places a new array
  (a typed key wraps it; nothing is compiled)."""
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(key))
  return jax.device_put(data)


def random_key(seed: int):
  """``jax.random.key(seed)`` for ``0 <= seed < 2**31``: the key data
  ``(seed >> 32, seed & 0xFFFFFFFF)``, that is ``(0, seed)``."""
  return jax.random.wrap_key_data(np.array([0, seed], np.uint32),
                                  impl="threefry2x32")


def run_keys(key, epoch):
  """``train.loop._run_keys(key, epoch)``: ``(k_init, k_train,
  fold_in(k_train, epoch))`` from fit's ``key``, a :func:`usable` one."""
  k_init, k_train = split(key_data(key), 2)
  return (_like(key, k_init), _like(key, k_train),
          _like(key, fold_in(k_train, epoch)))
