"""Self-supervised pretraining: ``[pretrain]`` made into a model, a loss and
targets built from the inputs alone (the labels are never read).

  enabled(cfg)                 whether the config pretrains
  check(cfg, ds)               the table against the data, one line each
  prepare(cfg, ds)             (model, loss, ds) of the objective
  hide(n, rng, m, ...)         masks of spans or patches, (m, n) in {0, 1}
  augment(x, key, ...)         one random view of each input (jittable)
  paired(base, ...)            the model of two views: z (m, 2, p)

**masked** (masked modelling, as MAE / BERT for signals): each training
input ``x (n,)`` is copied ``copies`` times, each copy with its own mask
``M`` hiding ``round(mask_fraction x n / span)`` spans of ``span``
positions (``layout = "image"``: ``span x span`` patches of the square
image); the model reads ``x (1 - M)`` (hidden inputs at 0, the
standardised mean) and its last layer reconstructs all ``n`` inputs; the
loss is :data:`funcnet.losses.MASKED_MSE`, the squared error on the hidden
positions only. The targets ``y = [x, M] (m, 2n)`` carry each copy's own
mask, so a shuffled batch needs nothing else and the compiled epoch is the
usual one. The held-out split gets one mask per input (seed fixed), so its
loss is comparable across epochs and runs.

**contrastive** (SimCLR, Chen et al. 2020): the model is :func:`paired`,
which draws two random views of each input of the batch from the step's
key (MNIST-1D's own transforms: a roll of up to ``shift`` positions, an
amplitude factor ``1 + scale (u - 1/2)``, i.i.d. Gaussian noise of std
``noise``), runs the kind's model on the ``2m`` views and returns their
embeddings ``z (m, 2, width)``; the loss is
:func:`funcnet.losses.nt_xent`. Fresh views every step; evaluation (no
key) uses fixed views (key 0). Its hand-written backward is the kind's own
on the ``2m`` views, with NT-Xent's derivative reshaped to them.

Either way the model is the config's ``[model]`` kind with its last layer
``width`` wide (masked: ``n``); its params are the kind's, so the run
folder holds a model of that kind (``model.json``), and fine-tuning
(``finetune.from_run``) keeps its body and draws a classifier head.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import data, losses, tasks
from funcnet.errors import ConfigError
from funcnet.model import Model
from funcnet.models import registry

# The held-out split's masks and the evaluation's views: fixed draws.
_EVAL_SEED = 0


def enabled(cfg) -> bool:
  """Whether the config pretrains (``pretrain.objective`` is not none)."""
  return cfg["pretrain"]["objective"] != "none"


def _geometry(p, n: int) -> tuple:
  """``(side, blocks)``: the image's side (None for a signal) and the
  number of spans or patches an input of ``n`` values holds."""
  span = p["span"]
  if p["layout"] == "image":
    side = int(round(n ** 0.5))
    if side * side != n:
      raise ConfigError(f"config key 'pretrain.layout' = 'image' needs square "
                        f"images; the inputs have {n} values; expected "
                        "layout = 'signal'")
    if side % span:
      raise ConfigError(f"config key 'pretrain.span' = {span} does not divide "
                        f"the image's side {side}; expected a divisor of {side}")
    return side, (side // span) ** 2
  if n % span:
    raise ConfigError(f"config key 'pretrain.span' = {span} does not divide "
                      f"the signal's length {n}; expected a divisor of {n}")
  return None, n // span


def check(cfg, ds) -> None:
  """``[pretrain]`` against the data and the other tables.

  Raises:
    ConfigError: inputs that are not real numbers, a combination with
      distillation or adversarial training, a span that does not tile the
      input, or a mask that hides nothing or everything.
  """
  p = cfg["pretrain"]
  what = f"config key 'pretrain.objective' = {p['objective']!r}"
  if not np.issubdtype(np.dtype(ds.x_train.dtype), np.floating):
    raise ConfigError(f"{what} needs real-valued inputs; {ds.name!r} has "
                      f"{np.dtype(ds.x_train.dtype).name} inputs; expected "
                      "pretrain.objective = 'none'")
  for key, off in (("distill.teacher", ""), ("adversarial.method", "none")):
    section, name = key.split(".")
    if cfg[section][name] != off:
      raise ConfigError(f"{what} trains without labels; {key} needs them; "
                        f"expected {key} = {off!r} while pretraining")
  if not 0 < p["mask_fraction"] < 1:
    raise ConfigError(f"config key 'pretrain.mask_fraction' = "
                      f"{p['mask_fraction']!r} is out of range; expected in "
                      "(0, 1)")
  if p["objective"] == "masked":
    _, blocks = _geometry(p, int(np.prod(ds.x_train.shape[1:])))
    k = int(round(p["mask_fraction"] * blocks))
    if not 0 < k < blocks:
      raise ConfigError(
          f"config key 'pretrain.mask_fraction' = {p['mask_fraction']} hides "
          f"{k} of {blocks} spans; expected a fraction hiding at least one "
          "and not all")


def hide(n: int, rng, m: int, span: int, fraction: float,
         side=None) -> np.ndarray:
  """``M (m, n)`` float32 masks: in each row exactly ``k = round(fraction x
  blocks)`` of the row's blocks set to 1, drawn without replacement; a
  block is ``span`` consecutive positions of a signal, or (``side``: a
  ``side x side`` image flattened row by row) a ``span x span`` patch."""
  blocks = n // span if side is None else (side // span) ** 2
  k = int(round(fraction * blocks))
  chosen = np.argsort(rng.random((m, blocks)), axis=1) < k  # (m, blocks)
  if side is None:
    return np.repeat(chosen, span, axis=1).astype(np.float32)
  per_row = side // span
  grid = chosen.reshape(m, per_row, per_row)
  img = np.repeat(np.repeat(grid, span, axis=1), span, axis=2)
  return img.reshape(m, n).astype(np.float32)


def _masked_split(x, masks):
  """``(x (1 - M), [x, M])`` for inputs ``x (m, *in_shape)``."""
  flat = x.reshape(len(x), -1).astype(np.float32)
  shown = (flat * (1 - masks)).reshape(x.shape).astype(x.dtype)
  return shown, np.concatenate([flat, masks], axis=1)


def masked_dataset(ds, p, seed: int):
  """``ds`` as masked modelling's data: ``copies`` masked copies of each
  training input (``rng = default_rng(seed)``), one per held-out input
  (a fixed draw; with ``data.validation``, the test split's too);
  targets ``[x, M]``; the task :data:`SELF_SUPERVISED`."""
  n = int(np.prod(ds.x_train.shape[1:]))
  side, _ = _geometry(p, n)
  draw = functools.partial(hide, n, span=p["span"],
                           fraction=p["mask_fraction"], side=side)
  x = np.concatenate([ds.x_train] * p["copies"])
  x_train, y_train = _masked_split(x, draw(np.random.default_rng(seed), len(x)))
  def held_out(x):  # a fixed draw: every run scores the same masks
    return _masked_split(x, draw(np.random.default_rng(_EVAL_SEED), len(x)))
  x_test, y_test = held_out(ds.x_test)
  info = ds.info
  if "test" in info:  # data.validation: the test split, read at the end
    info = {**info, "test": held_out(info["test"][0])}
  return ds._replace(x_train=x_train, y_train=y_train, x_test=x_test,
                     y_test=y_test, info=info, task=tasks.SELF_SUPERVISED.name)


def augment(x, key, shift: int, scale: float, noise: float, side=None):
  """One random view of each input ``x (m, *in_shape)``: rolled by ``k ~
  U{-shift..shift}`` positions (``side``: the flattened square image's
  rows and columns each by their own ``k``), times ``1 + scale (u - 1/2)``,
  plus ``noise`` x N(0, 1) per value; the shape and dtype of ``x``."""
  m = x.shape[0]
  flat = x.reshape(m, -1)
  n = flat.shape[1]
  k_shift, k_scale, k_noise = jax.random.split(key, 3)
  ks = jax.random.randint(k_shift, (m, 2), -shift, shift + 1)
  if side is None:
    idx = (jnp.arange(n)[None, :] - ks[:, :1]) % n
  else:  # row r, column c reads (r - k_r, c - k_c), wrapped
    r = (jnp.arange(side)[None, :] - ks[:, :1]) % side
    c = (jnp.arange(side)[None, :] - ks[:, 1:]) % side
    idx = (r[:, :, None] * side + c[:, None, :]).reshape(m, n)
  view = jnp.take_along_axis(flat, idx, axis=1)
  u = jax.random.uniform(k_scale, (m, 1), flat.dtype)
  view = view * (1 + scale * (u - 0.5))
  view = view + noise * jax.random.normal(k_noise, view.shape, flat.dtype)
  return view.reshape(x.shape).astype(x.dtype)


@functools.lru_cache(maxsize=None)
def _on_views(loss: losses.Loss) -> losses.Loss:
  """``loss`` of pairs ``z (m, 2, p)`` as a loss of the ``2m`` views'
  embeddings ``z (2m, p)`` (first views, then second views), what the
  kind's backward sees; its derivative reshaped the same way."""
  def pairs(z):
    m = z.shape[0] // 2
    return jnp.stack([z[:m], z[m:]], axis=1)

  def views(dz):
    return jnp.concatenate([dz[:, 0], dz[:, 1]])

  def value(z, y):
    return loss.batch(pairs(z), y)

  def grad(z, y):
    return views(loss.batch_grad(pairs(z), y))
  return losses.from_function(value, grad, name=loss.name)


def paired(base: Model, shift: int, scale: float, noise: float,
           side=None) -> Model:
  """The model of two views: ``logits(params, x, key) -> z (m, 2, p)``,
  ``z[:, v] = base.logits(params, view_v(x))`` with both views drawn by
  :func:`augment` from ``key`` (None: key 0, the fixed evaluation views).

  Its params, ``init`` and ``spec`` are ``base``'s (a run folder of it
  rebuilds ``base``); its backward is ``base``'s on the stacked views
  ``(2m, *in_shape)`` with the loss read through :func:`_on_views`.
  """
  def views(x, key):
    key = jax.random.key(_EVAL_SEED) if key is None else key
    k1, k2, k_drop = jax.random.split(key, 3)
    both = jnp.concatenate([augment(x, k1, shift, scale, noise, side),
                            augment(x, k2, shift, scale, noise, side)])
    return both, k_drop

  def logits(params, x, key=None):
    both, k_drop = views(x, key)
    z = base.logits(params, both, None if key is None else k_drop)
    m = x.shape[0]
    return jnp.stack([z[:m], z[m:]], axis=1)

  def backward(model, loss):
    loss = losses.get(loss)
    if loss.batch is None:
      raise ConfigError(f"the contrastive model's outputs are pairs of "
                        f"embeddings; loss {loss.name!r} does not read "
                        "them; expected losses.nt_xent")
    fn = base.backward(base, _on_views(loss))

    def value_and_grad(params, x, y, key=None):
      both, k_drop = views(x, key)
      y2 = jnp.zeros((both.shape[0],), both.dtype)  # not read
      return fn(params, both, y2, None if key is None else k_drop)
    return value_and_grad

  return base._replace(
      logits=logits, backward=None if base.backward is None else backward,
      kinks=None, trace=None, refresh=None)


def prepare(cfg, ds):
  """``(model, loss, ds)`` of ``[pretrain]``'s objective, from the labelled
  ``ds`` the config builds (its labels are dropped here)."""
  p = cfg["pretrain"]
  check(cfg, ds)
  kind = cfg["model"]["kind"]
  n = int(np.prod(ds.x_train.shape[1:]))
  if p["objective"] == "masked":
    model = registry.from_config(kind, cfg["model"][kind], data.spec(ds, n))
    return model, losses.MASKED_MSE, masked_dataset(ds, p, cfg["seed"])
  side, _ = _geometry({**p, "span": 1}, n)
  base = registry.from_config(kind, cfg["model"][kind],
                              data.spec(ds, p["width"]))
  model = paired(base, p["shift"], p["scale"], p["noise"], side)
  unlabelled = ds._replace(
      y_train=np.zeros((len(ds.x_train), 1), np.float32),
      y_test=np.zeros((len(ds.x_test), 1), np.float32),
      task=tasks.SELF_SUPERVISED.name)
  return model, losses.nt_xent(p["temperature"]), unlabelled
