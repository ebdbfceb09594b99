"""A library's parameter tree as funcnet's plain params, and back.

A Flax ``nnx.State`` or an Equinox module is a pytree whose nodes are the
library's own classes. funcnet's params are plain dicts and lists
(docs/architecture.md, STYLE.md), so the adapters keep the library's tree
structure closed over and hand funcnet the same leaves rearranged:

  leaf path ("layers", 0, "weight")  ->  params["layers"][0]["weight"]

A node whose children are indexed 0..n-1 becomes a list (so funcnet's
per-layer gradient norms read ``layers 1``, ``layers 2``, ...), any other
node a dict with string keys. :class:`Plain` maps both ways; the way back
works on traced arrays, so it runs inside ``jit`` and ``grad``.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from funcnet.errors import ConfigError


def components(path) -> tuple:
  """A pytree key path as plain keys: dict keys and attribute names as they
  are, sequence indices as ints."""
  out = []
  for k in path:
    if isinstance(k, jax.tree_util.SequenceKey):
      out.append(k.idx)
    elif isinstance(k, jax.tree_util.DictKey):
      out.append(k.key)
    elif isinstance(k, jax.tree_util.GetAttrKey):
      out.append(k.name)
    elif isinstance(k, jax.tree_util.FlattenedIndexKey):
      out.append(k.key)
    else:
      out.append(str(k))
  return tuple(out)


def _finalize(trie: dict, prefix: tuple, where: dict):
  """The plain skeleton of ``trie`` (a nested dict of keys; leaf ``i`` is
  the tuple ``("leaf", i)``): lists for nodes keyed 0..n-1, string-keyed
  dicts otherwise, None at the leaves. Records in ``where[i]`` the access
  path of leaf ``i`` in it."""
  if isinstance(trie, tuple):
    where[trie[1]] = prefix
    return None
  keys = list(trie)
  if keys and all(isinstance(k, int) for k in keys) and \
      sorted(keys) == list(range(len(keys))):
    return [_finalize(trie[i], prefix + (i,), where) for i in range(len(keys))]
  names = [str(k) for k in keys]
  if len(set(names)) != len(names):
    raise ConfigError(f"parameter keys {keys} collide as strings at "
                      f"{'/'.join(map(str, prefix)) or 'the root'}")
  return {str(k): _finalize(trie[k], prefix + (str(k),), where) for k in keys}


class Plain(NamedTuple):
  """The map between a library tree and plain params.

  Attributes:
    treedef: the library tree's structure (its leaves in flatten order).
    paths: ``paths[i]``, the keys of leaf ``i`` in the plain params.
    skeleton: the plain params' structure, None at every leaf.
  """
  treedef: object
  paths: tuple
  skeleton: object

  def to_plain(self, leaves):
    """Plain params holding ``leaves`` (in ``treedef``'s leaf order)."""
    return _fill(self.skeleton, dict(zip(self.paths, leaves)), ())

  def from_plain(self, params):
    """The library's tree with the leaves of plain ``params``."""
    return jax.tree_util.tree_unflatten(
        self.treedef, [_get(params, p) for p in self.paths])


def _fill(skeleton, values, prefix):
  if isinstance(skeleton, list):
    return [_fill(s, values, prefix + (i,)) for i, s in enumerate(skeleton)]
  if isinstance(skeleton, dict):
    return {k: _fill(s, values, prefix + (k,)) for k, s in skeleton.items()}
  return values[prefix]


def _get(params, path):
  for k in path:
    params = params[k]
  return params


def plain_of(tree, keys: Callable = components):
  """``(params, plain)``: ``tree``'s leaves as plain params, and the
  :class:`Plain` that maps them back. ``keys(path)`` turns a leaf's key path
  into plain keys (default :func:`components`)."""
  with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
  trie: dict = {}
  for i, (path, _) in enumerate(with_paths):
    node, ks = trie, keys(path)
    if not ks:
      raise ConfigError("the module's parameters are one bare array; "
                        "expected them inside the module's fields")
    for k in ks[:-1]:
      node = node.setdefault(k, {})
    node[ks[-1]] = ("leaf", i)
  where: dict = {}
  skeleton = _finalize(trie, (), where)
  plain = Plain(treedef, tuple(where[i] for i in range(len(with_paths))),
                skeleton)
  return plain.to_plain([leaf for _, leaf in with_paths]), plain


def cast_floats(params, dtype):
  """``params`` with every floating leaf cast to ``dtype`` (init's
  ``dtype`` argument, as funcnet's own models take it)."""
  def cast(v):
    v = jnp.asarray(v)
    return v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v
  return jax.tree_util.tree_map(cast, params)
