"""initializers.batched: every draw of an init in a few vectorised calls,
the params bit for bit those of the same init run op by op."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import initializers, models

SIZES = [(250, 300), (10,), (64, 64), (7, 3, 5), (10,)]


def _mixed(key):
  """Normal, He and Xavier draws of several sizes: the bits of the
  75,000-entry draw and of the 4,096-entry one fill a group (rows padded
  to 75,000; a third would pass the limit, twice what is drawn plus
  2**16), the other five a second."""
  ks = jax.random.split(key, 7)
  return {"n": [initializers.normal(k, s) for k, s in zip(ks, SIZES)],
          "he": initializers.he(ks[5], (64, 10)),
          "x": initializers.xavier(ks[6], (5, 3, 8))}


def _reference(key):
  """The same draws as JAX makes them op by op, shaped, the scale applied
  after (what every initialiser's bits were defined by)."""
  ks = jax.random.split(key, 7)
  r = math.sqrt(6.0 / (5 * 3 + 5 * 8))
  return {"n": [jax.random.normal(k, s) for k, s in zip(ks, SIZES)],
          "he": jax.random.normal(ks[5], (64, 10)) * np.float32(math.sqrt(2 / 64)),
          "x": jax.random.uniform(ks[6], (5, 3, 8), jnp.float32, -r, r)}


def _draws(fn, *args) -> int:
  """How many draws ``fn`` makes: ``random_bits`` in its jaxpr once dead
  code is gone (a batched init's first pass), nested calls included (a
  normal draws uniform bits too)."""
  from jax._src.interpreters import partial_eval as pe  # JAX's own DCE

  def count(jaxpr):
    n = 0
    for eqn in jaxpr.eqns:
      n += eqn.primitive.name == "random_bits"
      for v in eqn.params.values():
        for sub in v if isinstance(v, (list, tuple)) else [v]:
          inner = getattr(sub, "jaxpr", sub)
          if hasattr(inner, "eqns"):
            n += count(inner)
    return n
  jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
  return count(pe.dce_jaxpr(jaxpr, [True] * len(jaxpr.outvars))[0])


def _equal(a, b):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b),
                  strict=True):
    assert x.shape == y.shape and x.dtype == y.dtype
    np.testing.assert_array_equal(x, y)


def test_a_batched_init_gives_the_bits_of_each_draw_op_by_op():
  key = jax.random.key(3)
  _equal(jax.jit(initializers.batched(_mixed))(key), _reference(key))


def test_a_batched_init_draws_once_per_group():
  key = jax.random.key(0)
  assert _draws(_mixed, key) == 7
  assert _draws(initializers.batched(_mixed), key) == 2


@pytest.mark.parametrize("build", [
    lambda: models.mlp([5, 7, 3], init="he"),
    lambda: models.cnn((16,), 4, channels=[3, 5], hidden=[6]),
    lambda: models.gpt.gpt(16, 11, n_layers=2, n_heads=2, d_model=8),
], ids=["mlp", "cnn", "gpt"])
def test_a_batched_model_init_is_its_init_op_by_op(build):
  model, key = build(), jax.random.key(5)
  want = model.init(key)  # op by op
  got = jax.jit(initializers.batched(model.init))(key)
  _equal(got, want)
  assert _draws(initializers.batched(model.init), key) < _draws(model.init, key)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float16, jnp.bfloat16])
def test_a_batched_init_of_other_floats_gives_their_bits(dtype, x64):
  # float64 from 64-bit bits, float16 from 16-bit ones; bfloat16 (7
  # mantissa bits: JAX draws 8-bit bits for it) drawn alone, as op by op
  def init(key):
    ks = jax.random.split(key, 3)
    return [initializers.normal(ks[0], (6, 7), dtype),
            initializers.xavier(ks[1], (3, 4), dtype),
            initializers.he(ks[2], (5, 2), dtype)]

  key = jax.random.key(6)
  ks = jax.random.split(key, 3)
  r = math.sqrt(6.0 / 7)
  want = [jax.random.normal(ks[0], (6, 7), dtype),
          jax.random.uniform(ks[1], (3, 4), dtype, -r, r),
          jax.random.normal(ks[2], (5, 2), dtype) * np.asarray(
              math.sqrt(2 / 5), dtype)]
  _equal(jax.jit(initializers.batched(init))(key), want)
  assert _draws(initializers.batched(init), key) == (
      3 if dtype == jnp.bfloat16 else 1)


def test_draws_inside_a_transformation_of_the_init_are_drawn_there():
  # a user's init that vmaps its layers: those keys belong to the vmap's
  # trace and cannot be drawn outside it; the init's own draws still are
  def init(key):
    ks = jax.random.split(key, 4)
    stacked = jax.vmap(lambda k: initializers.he(k, (4, 6)))(ks[:3])
    return stacked, initializers.normal(ks[3], (5,)), initializers.normal(
        ks[0], (7,))

  key = jax.random.key(8)
  _equal(jax.jit(initializers.batched(init))(key),
         jax.tree_util.tree_map(np.asarray, init(key)))
  # the two outer normals in one call, the vmapped He draw its own
  assert _draws(initializers.batched(init), key) == 2


def test_without_partitionable_threefry_an_init_is_not_batched():
  # JAX's older threefry numbers a draw's entries by its size: a row of the
  # longest draw would not start with a shorter one's bits.
  key = jax.random.key(1)
  with jax.threefry_partitionable(False):
    want = jax.tree_util.tree_map(np.asarray, _mixed(key))  # op by op
    _equal(jax.jit(initializers.batched(_mixed))(key), want)
    assert _draws(initializers.batched(_mixed), key) == 7


def test_an_init_that_changes_its_draws_when_traced_again_still_gets_them():
  calls = []

  def fickle(key):  # its second trace asks for other shapes
    calls.append(None)
    n = 3 if len(calls) == 1 else 4
    ks = jax.random.split(key, 2)
    return [initializers.normal(ks[0], (n,)), initializers.normal(ks[1], (2,))]

  key = jax.random.key(2)
  ks = jax.random.split(key, 2)
  got = jax.jit(initializers.batched(fickle))(key)
  _equal(got, [jax.random.normal(ks[0], (4,)), jax.random.normal(ks[1], (2,))])
  assert len(calls) == 2


def test_op_by_op_a_batched_init_is_the_init():
  calls = []

  def init(key):
    calls.append(None)
    return initializers.normal(key, (4,))

  key = jax.random.key(4)
  _equal(initializers.batched(init)(key), jax.random.normal(key, (4,)))
  assert len(calls) == 1  # traced once: nothing to batch without a trace
