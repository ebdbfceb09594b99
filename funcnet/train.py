"""The training loop: one jitted call per epoch, for any model.

``fit(model, loss, optimizer, data, ...)`` trains a :class:`funcnet.model.Model`
with an optax-compatible optimizer (funcnet's own or optax's) and gradients
from the hand-written backprop (``grads="manual"``, MLPs) or ``jax.grad``
(``grads="autodiff"``).

One epoch is one call of a jitted function (``make_epoch``):

  perm   = permutation(key_e, n)                 key_e = fold_in(key, epoch)
  X_b    = x[perm[: B*b]].reshape(B, b, ...)     B = n // b mini-batches of b
  scan over s = 0..B-1:
    C_s, g_s  = value_and_grad(params, X_b[s], Y_b[s], key=fold_in(key_d, s))
    u_s, opt  = optimizer.update(g_s, opt, params)
    params    = params + u_s                      (w := w - eta dC/dw for sgd)

``params`` and the optimizer state are donated, so XLA updates them in place;
nothing leaves the device inside an epoch. The last ``n mod b`` examples of
each shuffled epoch are dropped (a fresh permutation each epoch means every
example is seen). Full-batch gradient descent is ``batch_size = n``;
stochastic gradient descent is ``batch_size = 1``.

Divergence guard: each step also keeps ``last_good``, the params whose loss
was last finite. The first non-finite loss stops the run after that epoch
(``history`` says where) and ``fit`` returns ``last_good``.

Keys: ``fold_in(key, epoch)`` makes epoch ``e`` independent of how the run got
there, so a resumed run (``start_epoch``) repeats an uninterrupted one
bit for bit.
"""

import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnet import autodiff, backprop, losses
from funcnet.errors import ConfigError, DivergenceError
from funcnet.model import Model


class EpochMetrics(NamedTuple):
  """What one jitted epoch returns besides params and optimizer state.

  Attributes:
    loss: mean training loss over the epoch's steps (scalar).
    grad_norms: ``(n_groups,)`` mean per-layer gradient norm ``||dC/dθ_l||``.
    param_norm: global norm of the params at the end of the epoch.
    update_norm: mean global norm of the updates ``u_s``.
    bad_step: index of the first step with a non-finite loss, -1 if none.
  """
  loss: jnp.ndarray
  grad_norms: jnp.ndarray
  param_norm: jnp.ndarray
  update_norm: jnp.ndarray
  bad_step: jnp.ndarray


class FitResult(NamedTuple):
  """``fit``'s result: final (or last good) params, optimizer state, history."""
  params: Any
  opt_state: Any
  history: list
  stopped: Optional[str]


def layer_groups(params) -> list[str]:
  """Names of the per-layer groups whose gradient norms are tracked.

  An MLP's params are a list of layers (``layer 1``, ...); other models'
  top-level dict keys (``conv1``, ``head``, ...) are the groups.
  """
  if isinstance(params, (list, tuple)):
    return [f"layer {i + 1}" for i in range(len(params))]
  if isinstance(params, dict):
    return [str(k) for k in sorted(params)]
  return ["params"]


def group_norms(tree) -> jnp.ndarray:
  """``(n_groups,)`` the global norm of each group of :func:`layer_groups`."""
  if isinstance(tree, (list, tuple)):
    groups = list(tree)
  elif isinstance(tree, dict):
    groups = [tree[k] for k in sorted(tree)]
  else:
    groups = [tree]
  return jnp.stack([optax.global_norm(g) for g in groups])


def gradient_fn(model: Model, loss, grads: str):
  """``(params, x, y, key) -> (C, g)`` from the chosen gradient source."""
  if grads == "manual":
    if model.kind != "mlp":
      raise ConfigError(
          f"grads = 'manual' needs an mlp (the hand-written backprop covers "
          f"MLPs); model.kind is {model.kind!r}; use grads = 'autodiff'")
    return backprop.value_and_grad(model, loss)
  if grads == "autodiff":
    return autodiff.value_and_grad(model, loss)
  raise ConfigError(f"grads {grads!r}: expected 'manual' or 'autodiff'")


def make_epoch(model: Model, loss, optimizer: optax.GradientTransformation,
               batch_size: int, grads: str = "autodiff", *, jit: bool = True,
               data_sharding=None):
  """The function that runs one epoch; jitted with params and state donated.

  Returns ``epoch(params, opt_state, key, x, y) -> (params, opt_state,
  EpochMetrics)`` with ``x: (n, *in_shape)``, ``y: (n, ...)``.
  ``data_sharding`` (optional) constrains each mini-batch's leading axis
  to be split over devices (see :mod:`funcnet.parallel`).
  """
  vg = gradient_fn(model, loss, grads)

  def epoch(params, opt_state, key, x, y):
    n = x.shape[0]
    n_batches = n // batch_size
    k_perm, k_drop = jax.random.split(key)
    perm = jax.random.permutation(k_perm, n)[: n_batches * batch_size]
    xb = x[perm].reshape((n_batches, batch_size) + x.shape[1:])
    yb = y[perm].reshape((n_batches, batch_size) + y.shape[1:])

    def step(carry, inputs):
      params, opt_state, last_good, bad_step = carry
      s, xs, ys = inputs
      if data_sharding is not None:
        xs = jax.lax.with_sharding_constraint(xs, data_sharding)
        ys = jax.lax.with_sharding_constraint(ys, data_sharding)
      c, g = vg(params, xs, ys, jax.random.fold_in(k_drop, s))
      finite = jnp.isfinite(c)
      bad_step = jnp.where((bad_step < 0) & ~finite, s, bad_step)
      last_good = jax.tree_util.tree_map(
          lambda p, q: jnp.where(bad_step < 0, p, q), params, last_good)
      updates, opt_state = optimizer.update(g, opt_state, params)
      params = optax.apply_updates(params, updates)
      return (params, opt_state, last_good, bad_step), (
          c, group_norms(g), optax.global_norm(updates))

    init = (params, opt_state, params, jnp.array(-1, jnp.int32))
    (params, opt_state, last_good, bad_step), (cs, gn, un) = jax.lax.scan(
        step, init, (jnp.arange(n_batches), xb, yb))
    params = jax.tree_util.tree_map(
        lambda p, q: jnp.where(bad_step < 0, p, q), params, last_good)
    return params, opt_state, EpochMetrics(
        jnp.mean(cs), jnp.mean(gn, axis=0), optax.global_norm(params),
        jnp.mean(un), bad_step)

  return jax.jit(epoch, donate_argnums=(0, 1)) if jit else epoch


def make_evaluate(model: Model, loss, task: str):
  """``evaluate(params, x, y) -> dict`` of held-out metrics, jitted.

  classification: ``loss`` and ``accuracy`` (argmax of ``z``, or ``z > 0`` for
  one sigmoid output); regression: ``loss`` and ``rmse``; ratings: ``loss``,
  ``rmse`` and ``mae`` of the predicted ratings.
  """
  @jax.jit
  def evaluate(params, x, y):
    z = model.logits(params, x)
    yt = losses.prepare_targets(loss, y, model.n_out, z.shape[0], z.dtype)
    out = {"loss": losses.mean(loss, model.output_activation, z, yt)}
    if task == "classification":
      pred = (z[:, 0] > 0).astype(jnp.int32) if model.n_out == 1 else jnp.argmax(z, -1)
      labels = y if y.ndim == 1 else jnp.argmax(y, -1)
      out["accuracy"] = jnp.mean(pred == labels)
    else:
      a = model.apply(params, x)
      err = a - yt
      out["rmse"] = jnp.sqrt(jnp.mean(err ** 2))
      if task == "ratings":
        out["mae"] = jnp.mean(jnp.abs(err))
    return out
  return evaluate


def _to_host(tree) -> dict:
  return {k: float(v) for k, v in tree.items()}


def fit(model: Model, loss, optimizer: optax.GradientTransformation, data, *,
        epochs: int, batch_size: int, key, grads: str = "autodiff",
        params=None, opt_state=None, start_epoch: int = 0,
        patience: Optional[int] = None, eval_every: int = 1,
        lr_schedule: Optional[Callable] = None, task: Optional[str] = None,
        dtype=jnp.float32, callback: Optional[Callable] = None,
        raise_on_nan: bool = False, data_sharding=None,
        place: Optional[Callable] = None) -> FitResult:
  """Trains ``model`` on ``data``; returns params, optimizer state and history.

  Args:
    model: any :class:`funcnet.model.Model`.
    loss: a loss name (see :mod:`funcnet.losses`).
    optimizer: an ``optax.GradientTransformation``.
    data: an object with ``x_train, y_train, x_test, y_test`` (and ``task``),
      e.g. a :class:`funcnet.data.Dataset`. ``x_test`` may be ``None``.
    epochs: the epoch to stop at (counting from 0, so a resumed run passes
      the same ``epochs`` and a later ``start_epoch``).
    batch_size: examples per step, ``1 <= batch_size <= n_train``.
    key: a PRNG key; ``init`` uses ``fold_in(key, 0)`` when ``params`` is None,
      epoch ``e`` uses ``fold_in(fold_in(key, 1), e)``.
    grads: ``"autodiff"`` or ``"manual"``.
    params, opt_state, start_epoch: to resume.
    patience: stop when the held-out loss has not improved for this many
      evaluations (None: never); the best params are *not* swapped in.
    eval_every: evaluate every this many epochs (and at the last one).
    lr_schedule: ``count -> lr``, only to record the learning rate.
    task: "classification", "regression" or "ratings" (default: ``data.task``).
    dtype: the float dtype of params and inputs.
    callback: ``callback(record, params, opt_state)`` after each epoch; a
      truthy return stops training.
    raise_on_nan: raise :class:`DivergenceError` instead of returning.
    data_sharding, place: hooks for :mod:`funcnet.parallel`: how a
      mini-batch is sharded, and a function placing ``(x, y)`` on devices.

  Returns:
    A :class:`FitResult`. ``history`` is a list of JSON-ready dicts, one per
    epoch: ``epoch, step, train_loss, grad_norms, param_norm, update_norm,
    lr, time`` and, on evaluation epochs, ``test_<metric>``.
  """
  task = task or getattr(data, "task", "classification")
  n = int(np.shape(data.x_train)[0])
  if not 1 <= batch_size <= n:
    raise ConfigError(
        f"batch_size {batch_size} must be between 1 and the {n} training "
        "examples")
  losses.check_pair(loss, model.output_activation)
  k_init, k_train = jax.random.split(key)
  if params is None:
    params = model.init(k_init, dtype)
  if opt_state is None:
    opt_state = optimizer.init(params)

  def as_arrays(x, y):
    x = jnp.asarray(x, dtype) if np.issubdtype(np.asarray(x).dtype, np.floating) \
        else jnp.asarray(x)
    y = jnp.asarray(y)
    if jnp.issubdtype(y.dtype, jnp.floating):
      y = y.astype(dtype)
    return place(x, y) if place is not None else (x, y)

  x, y = as_arrays(data.x_train, data.y_train)
  has_test = getattr(data, "x_test", None) is not None
  if has_test:
    x_test, y_test = as_arrays(data.x_test, data.y_test)
  epoch_fn = make_epoch(model, loss, optimizer, batch_size, grads,
                        data_sharding=data_sharding)
  evaluate = make_evaluate(model, loss, task)
  groups = layer_groups(params)
  steps_per_epoch = n // batch_size
  history, stopped = [], None
  best, since_best = np.inf, 0
  t0 = time.perf_counter()
  for e in range(start_epoch, epochs):
    params, opt_state, m = epoch_fn(params, opt_state,
                                    jax.random.fold_in(k_train, e), x, y)
    m = jax.device_get(m)
    step = (e + 1) * steps_per_epoch
    record = {
        "epoch": e + 1, "step": step, "train_loss": float(m.loss),
        "grad_norms": dict(zip(groups, map(float, m.grad_norms))),
        "param_norm": float(m.param_norm), "update_norm": float(m.update_norm),
    }
    if lr_schedule is not None:
      record["lr"] = float(lr_schedule(step))
    if m.bad_step >= 0:
      stopped = (f"loss became non-finite at epoch {e + 1}, step "
                 f"{e * steps_per_epoch + int(m.bad_step) + 1}; kept the last "
                 "params with a finite loss")
      record["train_loss"] = float("nan")
    elif has_test and ((e + 1 - start_epoch) % eval_every == 0 or e + 1 == epochs):
      metrics = _to_host(jax.device_get(evaluate(params, x_test, y_test)))
      record.update({f"test_{k}": v for k, v in metrics.items()})
      if patience is not None:
        if metrics["loss"] < best - 1e-12:
          best, since_best = metrics["loss"], 0
        else:
          since_best += 1
          if since_best >= patience:
            stopped = (f"early stopping at epoch {e + 1}: held-out loss has "
                       f"not improved for {patience} evaluations")
    record["time"] = time.perf_counter() - t0
    history.append(record)
    if callback is not None and callback(record, params, opt_state):
      stopped = stopped or f"stopped by callback at epoch {e + 1}"
    if stopped:
      break
  if stopped and stopped.startswith("loss became") and raise_on_nan:
    raise DivergenceError(stopped)
  return FitResult(params, opt_state, history, stopped)


def predict(model: Model, params, x):
  """``model.apply`` on a host array, jitted; ``(m, *in_shape) -> (m, n_out)``."""
  return jax.jit(model.apply)(params, jnp.asarray(x))
