"""The training loop: one jitted call per epoch, for any model.

``fit(model, loss, optimizer, data, options=FitOptions(...))`` trains a
:class:`funcnet.model.Model` with an optax-compatible optimizer (funcnet's
own or optax's) and gradients from the hand-written backward of its kind
(``grads="manual"``) or ``jax.grad`` (``grads="autodiff"``):

  perm   = batch_order(key, epoch, n, b)          on the host, numpy's shuffle
  X_b    = x[perm].reshape(B, b, ...)             B = n // b mini-batches of b
  loop over s = 0..B-1 (in the jitted call):
    C_s, g_s  = value_and_grad(params, X_b[s], Y_b[s], key=fold_in(key_d, s))
    u_s, opt  = optimizer.update(g_s, opt, params)
    params    = params + u_s                      (w := w - eta dC/dw for sgd)

The last ``n mod b`` examples of each shuffled epoch are dropped (a fresh
permutation each epoch means every example is seen). Full-batch gradient
descent is ``batch_size = n``; stochastic gradient descent is
``batch_size = 1``.

One job per module:

  state       TrainState: params, optimizer state, epoch, step, early
              stopping, stream position (what fit, checkpoints and
              callbacks pass around)
  step        train_step(state, batch) -> (state, metrics), gradient_fn,
              the per-step metrics and their epoch means
  programs    make_epoch / make_chunk: the jitted epoch and chunk, with the
              divergence guard
  feed        batch_order, and the feed: InMemoryFeed / StreamedFeed, each
              epoch(e) and close()
  monitor     Monitor: history, evaluation epochs, early stopping, the
              divergence verdict
  evaluate    make_evaluate: held-out metrics
  precision   mixed precision and gradient accumulation (wrappers of vg)
  adversarial adversarial training: each batch mixed with FGSM or PGD
              attacks on it, made inside the step (a wrapper of vg)
  loop        fit, FitOptions, Callbacks, FitResult; prepare (fit's first
              programs begun compiling ahead of it)
  program_cache  compiled programs on disk by what decides them (a warm
              run loads them without tracing)

On several devices (``FitOptions(plan=...)``, see :mod:`funcnet.parallel`)
each process gathers its rows of ``X_b[s]`` in the same ``batch_order`` on
the host, the epoch takes the global ``(B, b, ...)`` arrays split over the
devices, and the step above runs unchanged; XLA sums the gradient over
devices. ``mixed`` (bfloat16, micro-batches) wraps ``value_and_grad``.
"""

from funcnet.train.adversarial import Adversarial
from funcnet.train.evaluate import make_evaluate, predict
from funcnet.train.feed import (CHUNK_BYTES, CHUNKS_IN_FLIGHT, Chunk,
                                InMemoryFeed, StreamedFeed, as_arrays,
                                batch_order, check_batch, chunk_length)
from funcnet.train.loop import (Callbacks, FitOptions, FitResult, fit,
                                prepare)
from funcnet.train.monitor import (LOSS_GROWTH_LIMIT, STATUSES, Evaluation,
                                   Monitor)
from funcnet.train.programs import Layout, make_chunk, make_epoch
from funcnet.train.state import TrainState
from funcnet.train.step import (Batch, EpochMetrics, epoch_metrics,
                                gradient_fn, layer_groups, layer_subtrees,
                                metric_zeros, step_norms, train_step)

__all__ = [
    "Adversarial", "Batch", "CHUNK_BYTES", "CHUNKS_IN_FLIGHT", "Callbacks", "Chunk",
    "EpochMetrics", "Evaluation", "FitOptions", "FitResult", "InMemoryFeed",
    "LOSS_GROWTH_LIMIT", "Layout", "Monitor", "STATUSES", "StreamedFeed",
    "TrainState", "as_arrays", "batch_order", "check_batch", "chunk_length",
    "epoch_metrics", "fit", "gradient_fn", "layer_groups", "layer_subtrees",
    "make_chunk", "make_epoch", "make_evaluate", "metric_zeros", "predict",
    "prepare", "step_norms", "train_step",
]
