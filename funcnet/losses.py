"""Losses, each beside its hand-written derivative with respect to the output.

Every loss is a per-example sum over outputs, averaged over the batch:

  C = (1/m) sum_i C_i,   with, for an output row ``a`` and target row ``y``:

  ``"mse"``            C_i = 0.5 ||a - y||^2              dC_i/da = a - y
  ``"bce"``            C_i = -sum[y log a + (1-y) log(1-a)]   dC_i/da = (a - y) / (a (1 - a))
  ``"cross_entropy"``  C_i = logsumexp(z) - y . z = -sum y log softmax(z)
  ``"mae"``            C_i = sum_j |a_j - y_j|            dC_i/da = sign(a - y)
  ``"huber"``          C_i = sum_j h(a_j - y_j),  h(r) = r^2 / 2 (|r| <= 1),
                       |r| - 1/2 (|r| > 1)                dC_i/da = clip(a - y, -1, 1)
  ``"hinge"``          C_i = sum_{j != c} max(0, 1 + a_j - a_c),  c the class
                       dC_i/da_j = 1[1 + a_j - a_c > 0]  (j != c),
                       dC_i/da_c = -(the number of such j)

Shapes: ``a``, ``z`` and the prepared target ``y`` are ``(m, n_out)``, or
``(m, *T, n_out)`` for outputs with positions, one loss term per row of
``n_out`` (``C`` is then the mean over all ``m * prod(T)`` terms). Targets
may also be given one axis short of the logits (:func:`prepare_targets`):
integer class labels ``(m, *T)`` for ``cross_entropy`` and ``hinge``
(turned into one-hot rows), or ``(m, *T)`` values when ``n_out == 1``.

mse, bce and cross-entropy each have a *canonical* output activation
(identity, sigmoid and softmax). With it, the output error reduces to
``delta_L = a - y`` and the loss is computed stably from the pre-activation
``z`` (``bce = softplus(z) - y z``, ``ce = logsumexp(z) - y . z``) instead of
taking the log of a rounded probability.

``cross_entropy`` is softmax cross-entropy of the output layer's ``z``, so it
is allowed with a ``softmax`` output (the usual case, canonical) or an
``identity`` output, whose ``a = z`` are then the logits and whose
derivative is ``dC_i/da = softmax(a) - y``; ``bce`` needs outputs in (0, 1).

``mae``, ``huber`` and ``hinge`` have no canonical activation: none reduces
their ``delta_L`` to ``a - y``. They are meant for an identity output, with
which BP1 is ``delta_L = dC_i/da`` itself (the general ``dC/da * f'(z)``
with ``f' = 1``), and their values need no stable rewriting.

``mae`` and ``huber`` are robust regression losses: a residual beyond 1
pulls on ``a`` with a force of at most 1 rather than ``|a - y|``, so a few
outlying targets do not dominate the gradient. ``huber`` is mse within 1 of
the target and mae (less 1/2) beyond, smooth at the seam; ``mae`` has a kink
at ``a = y``, where ``grad`` takes the subgradient ``sign(0) = 0``.

A loss of one's own is a plain function ``C = fn(z, y)`` of the logits
``z (m, *T, n_out)`` and the targets as the data holds them (labels stay
labels), returning the batch's scalar loss, optionally with its
hand-written derivative ``dC/dz = grad(z, y)`` (shaped like ``z``, the
``1/m`` included) for the manual path: pass ``fn``, ``(fn, grad)`` or
:func:`from_function` wherever a loss name is taken (``fit``, the
backward passes, the gradient check). It reads the logits whatever the
model's output activation: apply your own ``softmax`` inside ``fn``.

``hinge`` is the multi-class SVM loss of Weston & Watkins (1999) (CS231n's
"SVM loss") on the output layer's scores ``a = z`` (identity output only):
each wrong class scoring within the margin 1 of the true class costs its
shortfall. At a margin exactly met (``1 + a_j - a_c = 0``), ``grad`` takes
the subgradient 0 for that class.
"""

import functools
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import activations
from funcnet.errors import ShapeError, lookup


class Loss(NamedTuple):
  """A loss by name with its derivative.

  Attributes:
    name: the config name.
    value: ``(a, y) -> (m,)`` per-example loss from the output ``a`` of a
      non-canonical output activation.
    grad: ``(a, y) -> (m, n)`` per-example ``dC_i/da``, likewise.
    canonical: the output activation for which ``delta_L = a - y``, or
      None where no activation gives that (mae, huber, hinge).
    from_logits: ``(z, y) -> (m,)`` the same loss computed stably from the
      output pre-activation, valid only with the canonical activation.
    outputs: the output activations this loss accepts (``None``: any).
    labels: whether ``(m,)`` integer targets are class labels, turned into
      one-hot rows (cross-entropy, hinge).
    batch: a loss of one's own (:func:`from_function`): ``(z, y) -> C``,
      the batch's scalar loss from the logits; None for the named losses.
    batch_grad: its hand-written ``(z, y) -> dC/dz`` (``z``'s shape), or
      None (autodiff only).
  """
  name: str
  value: Callable
  grad: Callable
  canonical: Optional[str]
  from_logits: Callable
  outputs: Optional[frozenset] = None
  labels: bool = False
  batch: Optional[Callable] = None
  batch_grad: Optional[Callable] = None


def _mse(a, y):
  return 0.5 * jnp.sum((a - y) ** 2, axis=-1)


def _bce(a, y):
  return -jnp.sum(y * jnp.log(a) + (1 - y) * jnp.log1p(-a), axis=-1)


def _bce_from_logits(z, y):
  # -[y log s(z) + (1-y) log(1-s(z))] = softplus(z) - y z. logaddexp(z, 0)
  # never overflows, and its derivative is sigmoid(z) everywhere; the usual
  # max(z, 0) + log1p(e^{-|z|}) form has kinks that cancel in value but not
  # under autodiff, which gets the gradient wrong at exactly z = 0.
  return jnp.sum(jnp.logaddexp(z, 0.0) - y * z, axis=-1)


def _ce_from_logits(z, y):
  return jax.nn.logsumexp(z, axis=-1) - jnp.sum(y * z, axis=-1)


def _mae(a, y):
  return jnp.sum(jnp.abs(a - y), axis=-1)


def _mae_grad(a, y):
  return jnp.sign(a - y)


HUBER_DELTA = 1.0
"""Where ``huber`` turns from quadratic to linear: ``|a - y| = HUBER_DELTA``."""


def _huber(a, y):
  r = jnp.abs(a - y)
  return jnp.sum(jnp.where(r <= HUBER_DELTA, 0.5 * r ** 2,
                           HUBER_DELTA * (r - 0.5 * HUBER_DELTA)), axis=-1)


def _huber_grad(a, y):
  return jnp.clip(a - y, -HUBER_DELTA, HUBER_DELTA)


HINGE_MARGIN = 1.0
"""The margin ``Delta`` of ``hinge``; fixing it at 1 loses nothing, as the
scale of the weights sets the scale of the scores (CS231n's notes)."""


def _hinge_margins(z, y):
  # 1 + z_j - z_c for every class j, with z_c = y . z the true class's score
  # (y a one-hot row); the true class's own entry, always 1, is masked by
  # (1 - y) wherever these are used.
  return HINGE_MARGIN + z - jnp.sum(y * z, axis=-1, keepdims=True)


def _hinge(z, y):
  # relu, not jnp.maximum(., 0): jax.grad of relu takes the same subgradient
  # 0 at a margin exactly met as _hinge_grad (maximum's would split it 1/2).
  return jnp.sum((1 - y) * jax.nn.relu(_hinge_margins(z, y)), axis=-1)


def _hinge_grad(z, y):
  # Each wrong class j with a positive margin pushes z_j up by 1 and z_c
  # down by 1: dC_i/dz_j = v_j for j != c, dC_i/dz_c = -sum_j v_j.
  v = (1 - y) * (_hinge_margins(z, y) > 0).astype(z.dtype)
  return v - y * jnp.sum(v, axis=-1, keepdims=True)


LOSSES = {
    "mse": Loss("mse", _mse, lambda a, y: a - y, "identity",
                lambda z, y: _mse(z, y)),
    "bce": Loss("bce", _bce, lambda a, y: (a - y) / (a * (1 - a)), "sigmoid",
                _bce_from_logits, frozenset({"sigmoid", "softmax"})),
    "cross_entropy": Loss("cross_entropy", _ce_from_logits,
                          lambda a, y: jax.nn.softmax(a, axis=-1) - y, "softmax",
                          _ce_from_logits, frozenset({"softmax", "identity"}),
                          labels=True),
    # No canonical activation (None): with the identity output they are
    # meant for, BP1 is delta_L = grad(a, y) by the general path.
    "mae": Loss("mae", _mae, _mae_grad, None, _mae),
    "huber": Loss("huber", _huber, _huber_grad, None, _huber),
    "hinge": Loss("hinge", _hinge, _hinge_grad, None, _hinge,
                  frozenset({"identity"}), labels=True),
}


_OWN: dict = {}  # (fn, grad) -> its Loss: the same object for the same pair


def from_function(fn: Callable, grad: Optional[Callable] = None,
                  name: Optional[str] = None) -> Loss:
  """A loss of one's own: ``C = fn(z, y)``, a scalar for the whole batch.

  Args:
    fn: ``(z, y) -> C`` from the logits ``z (m, *T, n_out)`` and the targets
      ``y`` as the data holds them (integer labels stay integers; float
      targets are cast to ``z``'s dtype).
    grad: the hand-written ``(z, y) -> dC/dz``, shaped like ``z`` (with
      the batch mean's ``1/m`` in it), for ``grads = "manual"``; None:
      autodiff only (the manual path says so in one line).
    name: for messages; default ``fn.__name__``.
  """
  if (fn, grad) not in _OWN:
    _OWN[fn, grad] = Loss(name or getattr(fn, "__name__", "loss"), None, None,
                          None, None, batch=fn, batch_grad=grad)
  return _OWN[fn, grad]


def get(name) -> Loss:
  """The loss called ``name``, or a loss of one's own given as ``fn`` or
  ``(fn, grad)`` (:func:`from_function`); an ``UnknownNameError`` names
  the known ones."""
  if isinstance(name, Loss):
    return name
  if callable(name):
    return from_function(name)
  if isinstance(name, (tuple, list)) and len(name) == 2 \
      and all(f is None or callable(f) for f in name) and callable(name[0]):
    return from_function(*name)
  return lookup("loss", name, LOSSES)


def names() -> list[str]:
  return sorted(LOSSES)


def check_pair(loss, output_activation: str) -> None:
  """Raises ``ShapeError`` when ``loss`` cannot follow ``output_activation``."""
  loss = get(loss)
  if loss.outputs is not None and output_activation not in loss.outputs:
    raise ShapeError(
        f"loss {loss.name!r} cannot follow output activation "
        f"{output_activation!r}; expected output_activation in "
        f"{sorted(loss.outputs)}")


def _concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def prepare_targets(loss, y, shape, dtype):
  """Targets shaped like the logits, of ``dtype``, checked against them.

  Which of labels or rows ``y`` holds is read off its rank relative to the
  logits, never off its sizes: with logits of shape ``(m, *T, n_out)``,

  * ``y (m, *T)`` (one axis short) holds one label per loss term: integer
    class indices for cross-entropy and hinge (turned into one-hot rows),
    or, when ``n_out == 1``, the one target of each term;
  * ``y (m, *T, n_out)`` (the logits' rank) holds target rows (one-hot
    rows, or regression targets) and is only cast.

  So ``(m, T)`` labels of logits ``(m, T, V)`` are labels even when
  ``T == V``; with logits ``(m, n_out)``, a ``(m, n_out)`` array is rows.

  Args:
    loss: a loss name or :class:`Loss`.
    y: labels or target rows, as above.
    shape: the logits' shape ``(m, *T, n_out)`` (``*T`` often empty).
    dtype: the dtype of the returned rows.

  Raises:
    ShapeError: mismatched batch sizes, a shape that is neither, non-integer
      labels, or labels out of ``[0, n_out)`` (checked when ``y`` is
      concrete, i.e. outside ``jit``).
  """
  loss = get(loss)
  y = jnp.asarray(y)
  shape = tuple(shape)
  batch, n_out = shape[0], shape[-1]
  if y.ndim == 0 or y.shape[0] != batch:
    raise ShapeError(
        f"x has {batch} examples but y has "
        f"{y.shape[0] if y.ndim else 'a scalar'}; expected the same batch size")
  if loss.batch is not None:  # one's own loss reads the targets as they are
    return y.astype(dtype) if jnp.issubdtype(y.dtype, jnp.floating) else y
  if y.ndim == len(shape) - 1 and y.shape == shape[:-1] and loss.labels:
    if not jnp.issubdtype(y.dtype, jnp.integer):
      raise ShapeError(
          f"{loss.name} labels of shape {y.shape} must be integers "
          f"(class indices) or one-hot rows of shape {shape}")
    if _concrete(y) and y.size:
      yn = np.asarray(y)
      lo, hi = int(yn.min()), int(yn.max())
      if lo < 0 or hi >= n_out:
        raise ShapeError(
            f"labels range over [{lo}, {hi}] but the model has {n_out} "
            f"outputs; expected labels in [0, {n_out - 1}]")
    return jax.nn.one_hot(y, n_out, dtype=dtype)
  if y.ndim == len(shape) - 1 and n_out == 1:
    y = y[..., None]
  if y.shape != shape:
    raise ShapeError(
        f"targets have shape {tuple(y.shape)}; expected {shape} to match "
        f"the model's {n_out} outputs")
  return y.astype(dtype)


def per_example(loss, output_activation: str, z, y):
  """Per-term loss ``(m, *T)`` from the output pre-activation ``z (m, *T, n)``
  (``(m,)`` per example for the usual ``z (m, n)``).

  Uses the stable from-logits form when ``output_activation`` is the loss's
  canonical one, else the loss of ``a = f(z)``. ``y`` is prepared.
  """
  loss = get(loss)
  if loss.batch is not None:
    raise ShapeError(f"loss {loss.name!r} is a function of the whole batch; "
                     "it has no per-example terms (expected losses.mean)")
  if output_activation == loss.canonical:
    return loss.from_logits(z, y)
  return loss.value(activations.get(output_activation).f(z), y)


def mean(loss, output_activation: str, z, y):
  """The mean loss ``C`` (a scalar) over every loss term of ``z (m, *T, n)``
  and the prepared ``y``: the batch mean for ``z (m, n)``, the mean over
  examples and positions for per-position outputs. A loss of one's own
  (:func:`from_function`) is its function's value."""
  loss = get(loss)
  if loss.batch is not None:
    return loss.batch(z, y)
  return jnp.mean(per_example(loss, output_activation, z, y))


# --- knowledge distillation ----------------------------------------------------

def _distill_parts(z, y):
  """``(teacher_logits, one_hot)`` from distillation targets ``y``:
  ``(m, *T, n + 1)`` rows of the teacher's ``n`` logits then the label
  (as a float), or plain labels ``(m, *T)`` (no teacher: the held-out
  split), whose teacher part is None."""
  n = z.shape[-1]
  if y.ndim == z.ndim - 1:
    return None, jax.nn.one_hot(y, n, dtype=z.dtype)
  return y[..., :n], jax.nn.one_hot(y[..., n].astype(jnp.int32), n,
                                    dtype=z.dtype)


@functools.lru_cache(maxsize=None)
def distillation(temperature: float, alpha: float) -> Loss:
  """Hinton et al. (2015)'s distillation loss, a loss of one's own
  (:func:`from_function`) from the student's logits ``z (m, *T, n)``.

  With ``p^T = softmax(z / T)`` the student's and ``q^T = softmax(z_t / T)``
  the teacher's softened distributions, and ``c`` the true class,

    C_i = alpha T^2 KL(q^T || p^T) + (1 - alpha) (logsumexp(z) - z_c)

  averaged over the ``m * prod(T)`` terms. ``T^2`` keeps the soft term's
  gradient the size of the hard term's as ``T`` grows (its gradient carries
  a ``1/T``). The hand-written derivative, per term, over the count:

    dC_i/dz = alpha T (p^T - q^T) + (1 - alpha) (softmax(z) - onehot(c))

  Targets ``y``: ``(m, *T, n + 1)``, the teacher's logits ``z_t`` with the
  label appended as a float (one array, so the batches are shuffled and
  fed as any target); or plain integer labels ``(m, *T)``, which give
  the cross-entropy alone (the held-out split has no teacher outputs, and
  its loss stays the usual one). ``alpha = 0`` is plain cross-entropy.

  The same ``(temperature, alpha)`` gives the same :class:`Loss` (one
  compiled step for one loss).
  """
  t, a = float(temperature), float(alpha)

  def distill(z, y):
    zt, onehot = _distill_parts(z, y)
    ce = jax.nn.logsumexp(z, axis=-1) - jnp.sum(onehot * z, axis=-1)
    if zt is None:
      return jnp.mean(ce)
    log_q = jax.nn.log_softmax(zt / t, axis=-1)
    kl = jnp.sum(jnp.exp(log_q) * (log_q - jax.nn.log_softmax(z / t, axis=-1)),
                 axis=-1)
    return jnp.mean(a * t * t * kl + (1 - a) * ce)

  def distill_grad(z, y):
    zt, onehot = _distill_parts(z, y)
    count = np.prod(z.shape[:-1])
    hard = jax.nn.softmax(z, axis=-1) - onehot
    if zt is None:
      return hard / count
    soft = jax.nn.softmax(z / t, axis=-1) - jax.nn.softmax(zt / t, axis=-1)
    return (a * t * soft + (1 - a) * hard) / count

  return from_function(distill, distill_grad,
                       name=f"distillation(T={t:g}, alpha={a:g})")


# --- self-supervised pretraining ------------------------------------------------

def _masked_parts(z, y):
  """``(x, M)`` from masked-modelling targets ``y (m, 2n)``: the clean
  inputs then the mask (1 hidden, 0 shown), each ``(m, n)`` like ``z``."""
  n = z.shape[-1]
  return y[..., :n], y[..., n:]


def _masked(z, y):
  x, hidden = _masked_parts(z, y)
  return jnp.sum(hidden * (z - x) ** 2) / jnp.sum(hidden)


def _masked_grad(z, y):
  x, hidden = _masked_parts(z, y)
  return 2 * hidden * (z - x) / jnp.sum(hidden)


MASKED_MSE = from_function(_masked, _masked_grad, name="masked_mse")
"""Masked modelling's loss, a loss of one's own (:func:`from_function`):
the mean squared error of the reconstruction ``z (m, n)`` over the hidden
positions only,

  C = sum_ij M_ij (z_ij - x_ij)^2 / sum_ij M_ij,
  dC/dz = 2 M (z - x) / sum_ij M_ij

(``M_ij = 1`` where input ``j`` of example ``i`` was hidden). Targets
``y (m, 2n)``: the clean inputs ``x`` then the mask ``M``, so a shuffled
batch carries its own masks (:mod:`funcnet.experiment.pretrain`)."""


# A norm's floor: an all-zero embedding has no direction.
_NORM_EPS = 1e-8


def _nt_xent_parts(z, temperature):
  """The quantities of NT-Xent for pairs ``z (m, 2, p)``: ``h (2m, p)``
  (first views, then second views), its norms ``r (2m, 1)``, ``u = h / r``,
  the similarities ``s = u u^T / t`` with the diagonal at -inf, and each
  row's positive ``pos (2m,)`` (``k + m`` for ``k < m``, ``k - m`` after)."""
  m = z.shape[0]
  h = jnp.concatenate([z[:, 0], z[:, 1]])
  r = jnp.sqrt(jnp.sum(h * h, axis=-1, keepdims=True) + _NORM_EPS ** 2)
  u = h / r
  s = jnp.where(jnp.eye(2 * m, dtype=bool), -jnp.inf, u @ u.T / temperature)
  pos = jnp.concatenate([jnp.arange(m) + m, jnp.arange(m)])
  return h, r, u, s, pos


@functools.lru_cache(maxsize=None)
def nt_xent(temperature: float) -> Loss:
  """SimCLR's NT-Xent (InfoNCE over the batch; Chen et al. 2020), a loss of
  one's own (:func:`from_function`) of the embeddings ``z (m, 2, p)`` of two
  views of each of ``m`` examples. The targets are not read.

  With the ``2m`` embeddings ``h_k`` (first views, then second views),
  ``u_k = h_k / ||h_k||``, ``s_kl = u_k . u_l / t`` and ``k+`` the other
  view of ``k``'s example:

    l_k = -s_{k,k+} + log sum_{l != k} exp(s_kl),    C = (1 / 2m) sum_k l_k

  Every ``l_k`` reads every embedding, so the derivative couples the batch.
  With ``P_kl = softmax_{l != k}(s_kl)`` (``P_kk = 0``) and
  ``G = (P - onehot(k+)) / 2m``, ``dC/ds = G``; ``s = U U^T / t`` gives

    dC/dU = (G + G^T) U / t

  and the normalisation ``u = h / ||h||`` passes back its tangent part,

    dC/dh_k = (dC/du_k - u_k (u_k . dC/du_k)) / ||h_k||

  (``||h||`` floored at 1e-8 inside the square root, the same on both
  paths). The same temperature gives the same :class:`Loss`.
  """
  t = float(temperature)

  def nt_xent_loss(z, y):
    del y  # self-supervised: the pairs are the targets
    _, _, _, s, pos = _nt_xent_parts(z, t)
    rows = jnp.arange(s.shape[0])
    return jnp.mean(jax.nn.logsumexp(s, axis=-1) - s[rows, pos])

  def nt_xent_grad(z, y):
    del y
    m = z.shape[0]
    _, r, u, s, pos = _nt_xent_parts(z, t)
    g = (jax.nn.softmax(s, axis=-1)
         - jax.nn.one_hot(pos, 2 * m, dtype=z.dtype)) / (2 * m)   # dC/ds
    du = (g + g.T) @ u / t                                        # dC/du
    dh = (du - u * jnp.sum(u * du, axis=-1, keepdims=True)) / r   # dC/dh
    return jnp.stack([dh[:m], dh[m:]], axis=1)

  return from_function(nt_xent_loss, nt_xent_grad, name=f"nt_xent(t={t:g})")
