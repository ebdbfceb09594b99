"""funcnet: neural networks as pure JAX functions, with backprop written out by hand.

The public surface, one list (each name lives in a small module of its own):

  funcnet.mlp(sizes, ...)                 -> Model(init, logits, apply, ...)
  funcnet.models.cnn / rnn / transformer / matrix_factorization / ncf
  funcnet.backprop.value_and_grad(m, loss)  hand-written BP1-BP4
  funcnet.autodiff.value_and_grad(m, loss)  jax.value_and_grad
  funcnet.gradcheck.compare(m, loss, params, x, y)
  funcnet.optimizers.sgd / momentum / ... / adamw, funcnet.schedules.*
  funcnet.data.load(name), funcnet.train.fit(model, loss, opt, data, ...)
  funcnet.config.load(path), funcnet.experiment.train_and_evaluate(cfg, dir)
  funcnet.parallel (meshes, multi-process), funcnet.bench (benchmarks)

Submodules that pull in heavy optional machinery (orbax, matplotlib) are
imported when used: ``import funcnet.experiment``.
"""

import jax.flatten_util  # noqa: F401  (gradcheck uses jax.flatten_util)

from funcnet import activations
from funcnet import autodiff
from funcnet import backprop
from funcnet import errors
from funcnet import gradcheck
from funcnet import initializers
from funcnet import losses
from funcnet import models
from funcnet import optimizers
from funcnet import schedules
from funcnet import data
from funcnet import train
from funcnet.errors import FuncnetError
from funcnet.models import mlp
from funcnet.model import Model

__version__ = "0.1.0"

__all__ = [
    "FuncnetError", "Model", "activations", "autodiff", "backprop", "data",
    "errors", "gradcheck", "initializers", "losses", "mlp", "models",
    "optimizers", "schedules", "train",
]
