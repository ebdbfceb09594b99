"""What the Flax and Equinox adapters share: the :class:`funcnet.model.Model`
around a pure forward, and the one-line error for a missing extra."""

import functools
import importlib
import inspect

import jax
import jax.numpy as jnp

from funcnet.adapters.plain import cast_floats
from funcnet.errors import ShapeError, needs_extra
from funcnet.model import Model, check_input


def require(module: str, what: str, extra: str):
  """``import module``, or the one-line ``ConfigError`` naming the extra
  that installs it (``pip install -e ".[extra]"``)."""
  try:
    return importlib.import_module(module)
  except ImportError:
    raise needs_extra(what, extra, extra) from None


def is_factory(obj) -> bool:
  """Whether ``obj`` reads as a function ``key -> module`` (a function, a
  class, a bound method or a ``functools.partial``), not another library's
  module instance that merely happens to be callable."""
  return (inspect.isfunction(obj) or inspect.isclass(obj)
          or inspect.ismethod(obj) or isinstance(obj, functools.partial))


def model_of(library: str, forward, params, init, in_shape, *,
             output_activation: str, kinked: bool, x_dtype, name: str) -> Model:
  """A funcnet ``Model`` from a library module's pure forward.

  Args:
    library: ``"flax"`` or ``"equinox"`` (the spec's ``kind``, for messages).
    forward: ``(params, x, key) -> z``, ``x: (m, *in_shape)``, ``z: (m,
      n_out)`` or ``(m, T, n_out)``; ``key`` None means evaluation.
    params: the module's own params, plain (see :mod:`.plain`).
    init: ``key -> params`` drawing fresh ones, or None: ``model.init``
      then returns ``params`` whatever the key (a module built once).
    in_shape: the shape of one example.
    output_activation, kinked: as for funcnet's own models (``kinked``: the
      module has a relu-like kink, so the gradient check's finite
      differences use the one-sided test, see :mod:`funcnet.gradcheck`).
    x_dtype: the inputs' dtype (token ids: an integer dtype).
    name: the module's class name, for the spec and messages.
  """
  in_shape = tuple(int(d) for d in in_shape)
  z = jax.eval_shape(forward, params,
                     jax.ShapeDtypeStruct((2, *in_shape), x_dtype), None)
  if z.ndim < 2 or z.shape[0] != 2:
    raise ShapeError(f"{library} module {name} maps a batch of 2 examples "
                     f"{in_shape} to shape {z.shape}; expected (2, n_out)")
  what = f"{library} module {name}"

  def init_fn(key, dtype=jnp.float32):
    return cast_floats(params if init is None else init(key), dtype)

  def logits(p, x, key=None):
    check_input(x, in_shape, what)
    return forward(p, x, key)

  return Model(init_fn, logits, output_activation, in_shape, int(z.shape[-1]),
               {"kind": library, "module": name, "kinked": bool(kinked)})
