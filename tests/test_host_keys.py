"""train.host_keys: threefry keys in numpy, held to jax.random bit for bit
(the seed's key, split, fold_in, fit's run keys), for either setting of
jax_threefry_partitionable."""

import jax
import numpy as np
import pytest

from funcnet.train import host_keys
from funcnet.train.loop import _run_keys

SEEDS = [0, 1, 7, 12345, 2**31 - 1]


def _bits(k):
  return np.asarray(jax.random.key_data(k))


def test_the_cipher_is_the_published_threefry_2x32_20():
  # Random123's known-answer vectors for threefry2x32_20 (kat_vectors):
  # counter, key -> output
  cases = [((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
           ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF),
            (0x1CB996FC, 0xBB002BE7)),
           ((0x243F6A88, 0x85A308D3), (0x13198A2E, 0x03707344),
            (0xC4923A9C, 0x483DF7A0))]
  for (x1, x2), (k1, k2), want in cases:
    y = host_keys.threefry2x32(k1, k2, np.uint32([x1]), np.uint32([x2]))
    assert (int(y[0][0]), int(y[1][0])) == want


@pytest.mark.parametrize("partitionable", [True, False])
def test_split_and_fold_in_are_jax_random_s(partitionable):
  with jax.threefry_partitionable(partitionable):
    for seed in SEEDS:
      key = jax.random.key(seed)
      for n in (1, 2, 3, 8):
        np.testing.assert_array_equal(host_keys.split(_bits(key), n),
                                      _bits(jax.random.split(key, n)))
      for d in (0, 1, 5, 2**32 - 1):
        np.testing.assert_array_equal(host_keys.fold_in(_bits(key), d),
                                      _bits(jax.random.fold_in(key, d)))


def test_the_seed_s_key_is_jax_random_key():
  for seed in SEEDS:
    got = host_keys.random_key(seed)
    assert jax.random.key_impl(got) == jax.random.key_impl(jax.random.key(0))
    np.testing.assert_array_equal(_bits(got), _bits(jax.random.key(seed)))


@pytest.mark.parametrize("raw", [False, True])
def test_fit_s_run_keys_are_the_compiled_ones(raw):
  for seed in SEEDS:
    key = jax.random.PRNGKey(seed) if raw else jax.random.key(seed)
    assert host_keys.usable(key)
    for epoch in (0, 1, 9):
      got, want = host_keys.run_keys(key, epoch), jax.jit(_run_keys)(key, epoch)
      for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(_bits(g) if not raw else g,
                                      _bits(w) if not raw else w)


def test_traced_and_other_keys_are_not_usable():
  assert not host_keys.usable(jax.random.key(0, impl="rbg"))
  seen = []
  jax.jit(lambda k: seen.append(host_keys.usable(k)) or k)(jax.random.key(0))
  assert seen == [False]
  assert not host_keys.usable(np.zeros(3, np.uint32))
