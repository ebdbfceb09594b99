"""Models from other libraries: a Flax or Equinox module as a funcnet Model.

  from funcnet.adapters import from_flax, from_equinox
  model = from_flax(module, in_shape=(64,))      # nnx.Module, key -> nnx.Module,
                                                 # or linen.Module
  model = from_equinox(module, in_shape=(64,))   # eqx.Module or key -> eqx.Module
  funcnet.fit(model, "cross_entropy", opt, data, options=...)
  funcnet.gradcheck.compare(model, "cross_entropy", params, x, y)

Each adapter splits the module once into its floating parameters, handed
to funcnet as a plain pytree of dicts and lists (:mod:`.plain`), and the
rest of the module, closed over statically; ``logits(params, x, key)``
puts them back together and calls the module. Randomness, ``init`` and
what is refused (mutable state such as batch statistics) are described in
:mod:`.flax` and :mod:`.equinox`.

Optional extras: neither library is a dependency of funcnet, and funcnet's
own models import neither. The adapters import them when called; a
missing one is a one-line ``ConfigError`` naming the extra
(``pip install -e ".[flax]"`` / ``".[equinox]"``).
"""

from funcnet.adapters.equinox import from_equinox
from funcnet.adapters.flax import from_flax

__all__ = ["from_equinox", "from_flax"]
