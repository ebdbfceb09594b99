"""The task registry: what a task means, declared once per task.

A task (``data.task`` in a config, ``Dataset.task``) says what the labels
are and how outputs are judged. Each is a :class:`Task`: its losses (the
default first), the output width it needs, what one example's labels look
like, the metrics evaluation computes from outputs and labels (jittable),
its headline metric and whether higher is better, whether its inputs are
standardised, and the one-line description of a dataset of it. Everything
that used to ask ``task == "..."`` asks the task instead, so a new task is
one :func:`register` call: nothing outside this module names a task.

  task            labels y, one example           output z   headline
  classification  an integer class in [0, k)      (k,)       accuracy, higher
  regression      (k,) float targets              (k,)       loss, lower
  ratings         a float rating, scalar          (1,)       loss, lower
  language        (T,) int32 next-token ids       (T, V)     bits_per_token, lower

Labels may carry position axes after the example's: a per-position task
(one label per position of a sequence, ``y (m, T)``, logits ``(m, T, V)``)
is a task whose metrics read the class axis only; the losses average over
every loss term (:func:`funcnet.losses.mean`). This module imports no JAX
at import time (``funcnet --help`` imports none); metrics import it when
called.
"""

import math
from typing import Callable, NamedTuple

from funcnet.errors import lookup


class Task(NamedTuple):
  """One task.

  Attributes:
    name: ``data.task`` in configs, ``Dataset.task`` of its datasets.
    losses: the loss names that suit it, the default first.
    n_outputs: ``(n_classes, label_shape, loss) -> int``, the model's output
      width for a dataset of ``n_classes`` (None unless classes) whose one
      example's label has shape ``label_shape`` (``y.shape[1:]``), trained
      with the loss called ``loss``.
    metrics: ``(z, a, y, yt) -> {name: scalar}``, jittable, the held-out
      metrics besides the loss: ``z (m, ..., n_out)`` the logits, ``a`` the
      outputs (the output activation of ``z``), ``y`` the labels as given
      (``(m, ...)`` integers or rows like ``z``) and ``yt`` the prepared
      targets (:func:`funcnet.losses.prepare_targets`, shaped like ``z``).
    metric_names: the keys ``metrics`` returns, in the order reports show
      them (evaluation adds ``loss`` before them).
    headline: the one metric that ranks runs (``"loss"`` or one of
      ``metric_names``): the best evaluation, a sweep's ranking, the metric
      progress lines, ``compare`` and the plots show first.
    higher_is_better: the headline's direction.
    standardize: whether ``data.standardize`` scales its inputs (not for
      inputs that are indices).
    classes: whether its labels are class indices (integers; a stratified
      split, ``data.classes``, ``data.train_per_class``).
    label_rank: the rank of one example's label: 0 a scalar (``y (m,)``),
      1 a row of targets (``y (m, k)``; a file's ``(m,)`` becomes
      ``(m, 1)``).
    inputs: ``"features"`` (numbers, ``x (m, *in_shape)``), ``"pairs"``
      (``x (m, 2)`` integer ``(user, item)`` indices, ``info["n_users"]``
      and ``info["n_items"]``; a CSV's columns ``user, item, rating``) or
      ``"tokens"`` (``x (m, T)`` integer token ids in ``[0, n_classes)``).
    label_doc: what one example's labels are, for docs and messages.
    describe: ``(n_classes, n_outputs, info) -> str``, what a dataset of it
      holds, for its one-line summary (``"10 classes"``).
  """
  name: str
  losses: tuple
  n_outputs: Callable
  metrics: Callable
  metric_names: tuple
  headline: str
  higher_is_better: bool
  standardize: bool = True
  classes: bool = False
  label_rank: int = 0
  inputs: str = "features"
  label_doc: str = ""
  describe: Callable = lambda n_classes, n_outputs, info: f"{n_outputs} outputs"


TASKS: dict = {}


def register(task: Task) -> Task:
  """Adds ``task`` to :data:`TASKS`; a name can be registered once."""
  if task.name in TASKS and TASKS[task.name] is not task:
    raise ValueError(f"task {task.name!r} is registered twice")
  if not task.losses:
    raise ValueError(f"task {task.name!r} has no loss")
  if task.headline != "loss" and task.headline not in task.metric_names:
    raise ValueError(f"task {task.name!r}: headline {task.headline!r} is "
                     f"neither 'loss' nor one of {task.metric_names}")
  TASKS[task.name] = task
  return task


def unregister(name: str) -> None:
  """Removes the task ``name`` (a test's own task, once the test is done)."""
  TASKS.pop(name, None)


def get(name: str) -> Task:
  """The task called ``name``; an ``UnknownNameError`` lists the known ones."""
  return lookup("task", name, TASKS)


def names() -> tuple:
  """The registered task names, in registration order."""
  return tuple(TASKS)


def file_names() -> tuple:
  """The tasks a data file may declare (``data.task``): all but the
  self-supervised one, whose targets ``[pretrain]`` makes from the inputs."""
  return tuple(n for n, t in TASKS.items() if t is not SELF_SUPERVISED)


def headline(name: str) -> tuple:
  """``(key, higher_is_better)`` of the task's headline in a history record:
  ``("test_accuracy", True)`` for classification."""
  task = get(name)
  return f"test_{task.headline}", task.higher_is_better


def evaluated_keys(name: str) -> tuple:
  """The ``test_<metric>`` keys an evaluation record of the task holds, the
  headline first, then the loss, then the other metrics: the keys (and
  their order) a run's summary and ``funcnet train``'s result line report."""
  task = get(name)
  order = [task.headline] + [k for k in ("loss",) + task.metric_names
                             if k != task.headline]
  return tuple(f"test_{k}" for k in order)


def of_keys(keys):
  """The task whose evaluation records hold the ``test_*`` keys among
  ``keys``, for readers of a history that lacks the task's name: of the
  tasks whose every key is there, the one with the most keys; None when
  none is, or two tie."""
  fits = [(len(evaluated_keys(n)), n) for n in TASKS
          if set(evaluated_keys(n)) <= set(keys)]
  fits.sort(reverse=True)
  if not fits or (len(fits) > 1 and fits[0][0] == fits[1][0]):
    return None
  return fits[0][1]


def best(history, name: str) -> dict:
  """The history's best evaluation by the task's headline (the first of
  equals), as ``{"epoch", "test_<metric>": ...}``; ``{}`` with none."""
  key, higher = headline(name)
  tests = [h for h in history if "test_loss" in h]
  if not tests:
    return {}
  b = (max if higher else min)(tests, key=lambda h: h[key])
  return {k: v for k, v in b.items() if k.startswith("test_") or k == "epoch"}


def loss_doc() -> str:
  """The losses with the tasks each suits, losses that suit the same tasks
  together: ``"cross_entropy | bce | hinge (classification) | ..."``."""
  by_loss = {}
  # Self-supervised targets come from [pretrain], whose objective sets the loss.
  for t in (t for t in TASKS.values() if t is not SELF_SUPERVISED):
    for loss in t.losses:
      by_loss.setdefault(loss, []).append(t.name)
  groups = {}
  for loss, ts in by_loss.items():
    groups.setdefault(", ".join(ts), []).append(loss)
  return " | ".join(f"{' | '.join(ls)} ({ts})" for ts, ls in groups.items())


# --- the tasks ---------------------------------------------------------------

def _accuracy(z, a, y, yt):
  """The share of labels equal to the predicted class: the argmax over the
  class axis (the last), or ``z > 0`` for one sigmoid output; one-hot
  label rows (``y`` with ``z``'s rank) are read by their argmax."""
  import jax.numpy as jnp
  pred = ((z[..., 0] > 0).astype(jnp.int32) if z.shape[-1] == 1
          else jnp.argmax(z, -1))
  labels = y if y.ndim < z.ndim else jnp.argmax(y, -1)
  return {"accuracy": jnp.mean(pred == labels)}


def _rmse(z, a, y, yt):
  """The root mean squared error of the outputs, over every output."""
  import jax.numpy as jnp
  return {"rmse": jnp.sqrt(jnp.mean((a - yt) ** 2))}


def _rmse_mae(z, a, y, yt):
  """rmse and the mean absolute error of the predicted ratings."""
  import jax.numpy as jnp
  err = a - yt
  return {"rmse": jnp.sqrt(jnp.mean(err ** 2)), "mae": jnp.mean(jnp.abs(err))}


def _classes_out(n_classes, label_shape, loss) -> int:
  # Two classes under bce: one sigmoid unit, p(class 1).
  return 1 if loss == "bce" and n_classes == 2 else n_classes


CLASSIFICATION = register(Task(
    "classification", ("cross_entropy", "bce", "hinge"), _classes_out,
    _accuracy, ("accuracy",), "accuracy", True, classes=True,
    label_doc="(m,) int32 class labels in [0, n_classes)",
    describe=lambda n_classes, n_out, info: f"{n_classes} classes"))

REGRESSION = register(Task(
    "regression", ("mse", "mae", "huber"),
    lambda n_classes, label_shape, loss: math.prod(label_shape) or 1,
    _rmse, ("rmse",), "loss", False, label_rank=1,
    label_doc="(m, k) float32 targets",
    describe=lambda n_classes, n_out, info: f"{n_out} targets"))

RATINGS = register(Task(
    "ratings", ("mse", "mae", "huber"), lambda n_classes, label_shape, loss: 1,
    _rmse_mae, ("rmse", "mae"), "loss", False, standardize=False,
    inputs="pairs",
    label_doc="(m,) float32 ratings of (user, item) index pairs",
    describe=lambda n_classes, n_out, info: (f"{info.get('n_users')} users x "
                                             f"{info.get('n_items')} items")))


# Self-supervised pretraining (``[pretrain]``): the targets are made from the
# inputs (masked inputs and their masks, or none for contrastive pairs), the
# loss is the objective's own; no labels, so no metric but the loss.
SELF_SUPERVISED = register(Task(
    "self_supervised", ("mse",), lambda n_classes, label_shape, loss: 0,
    lambda z, a, y, yt: {}, (), "loss", False, label_rank=1,
    label_doc="made from the inputs by [pretrain] (no labels)",
    describe=lambda n_classes, n_out, info: "unlabelled inputs"))


def _bits_perplexity(z, a, y, yt):
  """Bits per token and perplexity of next-token logits ``z (m, T, V)`` for
  labels ``y (m, T)``, over every position of every window::

    H = mean_{i,t} [logsumexp(z_it) - z_it[y_it]]      nats per token
    bits_per_token = H / ln 2,   perplexity = exp(H)

  (bits per character is ``bits_per_token * info["tokens_per_char"]``:
  1 for a character tokenizer). Evaluation is one call on the whole held-out
  split (:func:`funcnet.train.make_evaluate`), so this is its exact mean.
  """
  import jax
  import jax.numpy as jnp
  z = z.astype(jnp.promote_types(z.dtype, jnp.float32))  # bf16 logits: sums in f32
  picked = jnp.take_along_axis(z, y[..., None].astype(jnp.int32), -1)[..., 0]
  h = jnp.mean(jax.nn.logsumexp(z, axis=-1) - picked)
  return {"bits_per_token": h / math.log(2), "perplexity": jnp.exp(h)}


LANGUAGE = register(Task(
    "language", ("cross_entropy",),
    # n_classes of a text dataset is its vocabulary size V.
    lambda n_classes, label_shape, loss: n_classes,
    _bits_perplexity, ("bits_per_token", "perplexity"), "bits_per_token",
    False, standardize=False, label_rank=1, inputs="tokens",
    label_doc="(m, T) int32 next-token ids in [0, V): y[:, t] = x[:, t + 1]",
    describe=lambda n_classes, n_out, info: (
        f"{n_out} tokens ({info.get('tokenizer_kind', 'tokens')})")))

DEFAULT = CLASSIFICATION.name
"""The task of data that names none (an array pair given to ``fit``)."""
