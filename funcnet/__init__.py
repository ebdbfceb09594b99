"""funcnet: neural networks as pure JAX functions, with backprop written out by hand.

The public surface, one list (each name lives in a small module of its own):

  funcnet.mlp(sizes, ...)                 -> Model(init, logits, apply, ...)
  funcnet.models.cnn / rnn / transformer / matrix_factorization / ncf
  funcnet.backprop.value_and_grad(m, loss)  hand-written BP1-BP4
  funcnet.autodiff.value_and_grad(m, loss)  jax.value_and_grad
  funcnet.gradcheck.compare(m, loss, params, x, y)
  funcnet.check_backward(forward, backward, *inputs)   any hand-written backward
  funcnet.check_model_backward / check_jvp / check_hvp  (funcnet/check.py)
  funcnet.optimizers.sgd / momentum / ... / adamw, funcnet.schedules.*
  funcnet.data.load(name), funcnet.fit(model, loss, opt, data, ...)  (train.fit)
  funcnet.config.load(path), funcnet.experiment.train_and_evaluate(cfg, dir)
  funcnet.load_run(dir)  a run folder: model, params, config, data, predict, ...
  funcnet.register_kind(name, build, ...)  a model kind of your own, for configs
  funcnet.parallel (meshes, multi-process), funcnet.bench.step_time (benchmarks)

Every name is imported on first use (PEP 562 module ``__getattr__``):
``import funcnet`` itself imports neither JAX nor any submodule, so the
command line answers ``funcnet --help`` without starting JAX (issue 15).
``funcnet.mlp``, ``funcnet.train`` and ``from funcnet import train`` work as
if imported eagerly, as does any other submodule (``funcnet.experiment``).
"""

import importlib
import importlib.util

__version__ = "0.1.0"

# Public names defined in a submodule: name -> that module.
_NAMES = {"FuncnetError": "funcnet.errors", "Model": "funcnet.model",
          "mlp": "funcnet.models", "fit": "funcnet.train",
          "load_run": "funcnet.experiment", "check_backward": "funcnet.check",
          "check_model_backward": "funcnet.check", "check_jvp": "funcnet.check",
          "check_hvp": "funcnet.check", "register_kind": "funcnet.models.user"}

__all__ = [
    "FuncnetError", "Model", "activations", "autodiff", "backprop",
    "check_backward", "check_hvp", "check_jvp", "check_model_backward", "data",
    "errors", "fit", "gradcheck", "initializers", "load_run", "losses", "mlp",
    "models", "optimizers", "register_kind", "schedules", "train",
]


def __getattr__(name: str):
  if name in _NAMES:
    value = getattr(importlib.import_module(_NAMES[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value
  if not name.startswith("_") and importlib.util.find_spec(f"funcnet.{name}"):
    # Importing a submodule binds it here as well.
    return importlib.import_module(f"funcnet.{name}")
  raise AttributeError(f"module 'funcnet' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(__all__))
