"""The multilayer perceptron as pure ``init``/``logits`` functions.

For layer sizes ``[n_0, n_1, ..., n_L]`` the network is (row vectors, one row
per example, ``a_0 = x``):

  z_l = a_{l-1} @ W_l + b_l        W_l: (n_{l-1}, n_l),  b_l: (n_l,),  z_l: (m, n_l)
  a_l = f(z_l)                     f = ``activation`` for l < L,
                                       ``output_activation`` for l = L

Params are a list of ``{"W": W_l, "b": b_l}``, one dict per layer, in order.
With ``dropout = p > 0`` and a key, each hidden output is multiplied by a
mask ``r_l / (1 - p)``, ``r_l ~ Bernoulli(1 - p)`` (inverted dropout, so
evaluation needs no rescaling); without a key there is no dropout.
"""

from typing import Sequence

import jax
import jax.numpy as jnp

from funcnet import activations, backprop, initializers, layers
from funcnet.errors import ConfigError
from funcnet.model import Model, check_input
from funcnet.models import registry


def mlp(sizes: Sequence[int], activation: str = "sigmoid",
        output_activation: str = "identity", init: str = "xavier",
        dropout: float = 0.0) -> Model:
  """A fully connected network.

  Args:
    sizes: ``[n_in, n_hidden..., n_out]``, at least two entries.
    activation: the hidden activation, by name (see :mod:`funcnet.activations`)
      or a pair of functions ``(f, f_prime)`` of one's own.
    output_activation: the output activation (a name or a pair);
      ``softmax`` is allowed only here.
    init: ``"normal"``, ``"xavier"`` or ``"he"`` for the weights; biases are 0.
    dropout: the probability of dropping a hidden unit in training, in [0, 1).

  Returns:
    A :class:`funcnet.model.Model` whose params are a list of
    ``{"W": (n_in, n_out), "b": (n_out,)}``.

  Example:
    >>> model = funcnet.mlp([784, 128, 10], activation="relu",
    ...                     output_activation="softmax", init="he")
    >>> params = model.init(jax.random.key(0))
    >>> model.apply(params, jnp.zeros((32, 784))).shape
    (32, 10)
  """
  sizes = list(layers.require_sizes("sizes", sizes, empty_ok=True))
  if len(sizes) < 2:
    raise ConfigError(f"sizes {sizes} must list at least an input and an "
                      "output width")
  hidden = layers.hidden_activation(activation)
  out = activations.get(output_activation)  # a name, or a pair of functions
  f_out, output_activation = out.f, out.name
  init_w = initializers.get(init)
  dropout = layers.require_rate("dropout", dropout)
  n_layers = len(sizes) - 1

  def init_fn(key, dtype=jnp.float32):
    keys = jax.random.split(key, n_layers)
    return [{"W": init_w(k, (n_in, n_out), dtype),
             "b": jnp.zeros((n_out,), dtype)}
            for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:])]

  def trace_fn(params, x, key=None):
    """The forward pass, every ``z_l`` and ``a_l`` kept: a
    :class:`funcnet.backprop.Trace`, what BP1-BP4 read. The logits are its
    ``z_L``; under ``jit`` the unused ``a_L`` costs nothing."""
    check_input(x, (sizes[0],), "mlp")
    masks = layers.dropout_masks(key, dropout, [(x.shape[0], n) for n in sizes[1:-1]],
                                 x.dtype)
    zs, acts = [], [x]
    for l, layer in enumerate(params):
      zs.append(acts[-1] @ layer["W"] + layer["b"])
      if l < len(params) - 1:
        a = hidden.f(zs[-1])
        if masks is not None:
          a = a * masks[l]
      else:
        a = f_out(zs[-1])
      acts.append(a)
    return backprop.Trace(zs, acts, masks)

  def logits_fn(params, x, key=None):
    return trace_fn(params, x, key).zs[-1]

  def kinks_fn(params, x):
    return jnp.concatenate([z.ravel() for z in trace_fn(params, x).zs[:-1]])

  spec = {"kind": "mlp", "sizes": sizes, "activation": hidden.name,
          "output_activation": output_activation, "init": init,
          "dropout": dropout}
  return Model(init_fn, logits_fn, output_activation, (sizes[0],), sizes[-1],
               spec, head=(-1,), backward=backprop.mlp_value_and_grad,
               kinks=kinks_fn if hidden.kink and n_layers > 1 else None,
               trace=trace_fn)


def _from_config(table, spec):
  if len(spec.in_shape) != 1:
    raise ConfigError(f"model.kind = 'mlp' needs flat inputs; dataset "
                      f"{spec.name!r} has examples of shape {spec.in_shape}")
  # Checked here, not as the builder's "sizes": the error names the key the
  # user wrote.
  hidden = layers.require_sizes("config key 'model.mlp.hidden'",
                                table["hidden"], empty_ok=True)
  return {"sizes": [spec.in_shape[0], *hidden, spec.n_out],
          "activation": table["activation"],
          "output_activation": table["output_activation"],
          "init": table["init"], "dropout": table["dropout"]}


def _shown(spec: dict) -> dict:
  """Without a hidden layer (``sizes = [n_in, n_out]``, logistic or linear
  regression) the hidden activation and dropout act on nothing."""
  if len(spec["sizes"]) > 2:
    return spec
  return {k: v for k, v in spec.items() if k not in ("activation", "dropout")}


KIND = registry.register(registry.Kind(
    "mlp", mlp, _from_config,
    defaults={"hidden": [64], "activation": "relu",
              "output_activation": "softmax", "init": "he", "dropout": 0.0},
    docs={"hidden": "hidden layer widths; input and output widths come from the data",
          "activation": "hidden activation: identity, sigmoid, tanh, relu, leaky_relu, elu, softplus, gelu, silu",
          "output_activation": "output activation: identity, sigmoid, softmax, ... (must suit the loss)",
          "init": "weight initialiser: normal | xavier | he (biases start at 0)",
          "dropout": "probability of dropping a hidden unit in training, in [0, 1)"},
    shown=_shown))
