"""Fine-tuning: a trained run's body, a fresh head, and a frozen or slowed body.

A classifier's params split into a *head*, the last dense layer that maps
features to class scores, and the *body*, everything before it:

  z = h(x; θ_body) @ W_head + b_head        h: (m, d),  W_head: (d, k),  z: (m, k)

Fine-tuning from a run (``finetune.from_run``) keeps ``θ_body`` as the run's
latest checkpoint left it and draws a new ``W_head: (d, k)``, ``b_head: (k,)``
for this data's ``k`` classes (the config's seed, the model's initialiser).
Training then updates

  θ_head := θ_head + u_head                       (the configured optimizer)
  θ_body := θ_body                                (``freeze_body = true``)
  θ_body := θ_body + s · u_body                   (``freeze_body = false``,
                                                   s = ``body_lr_scale``)

where ``u`` is the optimizer's step computed on that part alone (its own
moments, clipping and decay; :func:`optax.multi_transform`). A frozen body
gets exact zeros (``optax.set_to_zero``), so its params stay bit for bit.

Where the head lives (:func:`head_path`):

  mlp                     params[-1]             {"W": (d, k), "b": (k,)}
  cnn                     params["dense"][-1]    (d = last dense width or features)
  rnn, gru, transformer   params["head"]

The body must match the run's in structure and shape (same ``[model]``
table apart from the class count and dropout); inputs are standardised with
the run's own training statistics, since the body learned on inputs scaled
that way (see :func:`funcnet.experiment.build_dataset`).
"""

import json
import os
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnet import checkpoints
from funcnet.errors import ConfigError


class Pretrained(NamedTuple):
  """What fine-tuning takes from a trained run.

  Attributes:
    run: the run folder.
    cfg: its resolved config (from ``config.json``).
    params: its params at the latest checkpoint.
    epoch: that checkpoint's epoch.
    stats: ``(mean, std)``, each of the input shape, that the run
      standardised its inputs with; None when it did not standardise.
  """
  run: str
  cfg: dict
  params: Any
  epoch: int
  stats: Optional[tuple]


def load_run(run) -> Pretrained:
  """The latest checkpoint of the run folder ``run`` with what it needs.

  The restore templates (structure, shapes, dtypes of params and optimizer
  state) come from rebuilding the run's own config, as ``funcnet eval`` does.

  Raises:
    ConfigError: ``run`` is not a run folder with a ``config.json``.
    CheckpointError: it has no readable checkpoint.
  """
  from funcnet import config as config_lib, experiment  # experiment imports us
  run = os.fspath(run)
  saved = os.path.join(run, "config.json")
  if not os.path.isfile(saved):
    raise ConfigError(f"config key 'finetune.from_run' = {run!r} has no "
                      "config.json; expected a run folder written by funcnet "
                      "train")
  with open(saved) as f:
    cfg = config_lib.from_dict(json.load(f))
  setup = experiment.Setup(cfg)
  params, opt_state = setup.init_state()
  ckpt_dir = cfg["run"]["checkpoint_dir"] or os.path.join(run, "checkpoints")
  epoch, params, _ = checkpoints.restore(ckpt_dir, params, opt_state)
  info = setup.ds.info
  stats = (info["mean"], info["std"]) if "mean" in info else None
  return Pretrained(run, cfg, params, epoch, stats)


def head_path(model) -> tuple:
  """The keys/indices from the params' root to the head's ``{"W", "b"}``."""
  kind = model.kind
  if kind == "mlp":
    return (-1,)
  if kind == "cnn":
    return ("dense", -1)
  if kind in ("rnn", "gru", "transformer"):
    return ("head",)
  raise ConfigError(f"fine-tuning replaces a classifier's head; model.kind = "
                    f"{kind!r} has none; expected mlp, cnn, rnn, gru or "
                    "transformer")


def get_at(tree, path):
  """``tree[path[0]][path[1]]...``."""
  for k in path:
    tree = tree[k]
  return tree


def set_at(tree, path, value):
  """A copy of ``tree`` with the node at ``path`` replaced (shallow copies
  along the path only; every other node is shared)."""
  if not path:
    return value
  k, rest = path[0], path[1:]
  if isinstance(tree, dict):
    return {**tree, k: set_at(tree[k], rest, value)}
  items = list(tree)
  items[k] = set_at(items[k], rest, value)
  return type(tree)(items) if isinstance(tree, tuple) else items


def labels(model, params):
  """``params``' structure with ``"head"`` at the head's leaves, else ``"body"``."""
  path = head_path(model)
  tags = jax.tree_util.tree_map(lambda _: "body", params)
  return set_at(tags, path, jax.tree_util.tree_map(lambda _: "head",
                                                   get_at(params, path)))


def replace_head(model, pretrained, fresh):
  """``pretrained``'s body with ``fresh``'s head, in ``fresh``'s dtypes.

  Args:
    model: the fine-tuning model (its head sized for the new classes).
    pretrained: params of the trained run (same body).
    fresh: ``model.init(key)``: the new head comes from here.

  Raises:
    ConfigError: the bodies differ in structure or in some array's shape.
  """
  path = head_path(model)
  params = set_at(pretrained, path, get_at(fresh, path))
  want = jax.tree_util.tree_structure(fresh)
  got = jax.tree_util.tree_structure(params)
  if got != want:
    raise ConfigError(
        f"the pre-trained run's {model.kind} params are laid out differently "
        f"from this config's model ({got} vs {want}); expected the run's "
        "[model] table (see its config.json)")
  bad = [(jax.tree_util.keystr(p), np.shape(a), np.shape(b)) for (p, a), b in
         zip(jax.tree_util.tree_leaves_with_path(params),
             jax.tree_util.tree_leaves(fresh)) if np.shape(a) != np.shape(b)]
  if bad:
    where, a, b = bad[0]
    raise ConfigError(
        f"the pre-trained run's param {where} has shape {a} but this config's "
        f"model needs {b} ({len(bad)} array(s) differ); expected the run's "
        "[model] table and input shape (see its config.json)")
  return jax.tree_util.tree_map(lambda a, b: jnp.asarray(a, b.dtype),
                                params, fresh)


def optimizer(base: optax.GradientTransformation, model, freeze_body: bool,
              body_lr_scale: float) -> optax.GradientTransformation:
  """``base`` on the head; zero (frozen) or ``body_lr_scale`` × ``base`` on the body.

  Each part gets its own copy of ``base``'s state, so the head's clipping,
  moments and decay do not see the body's gradients.
  """
  body = (optax.set_to_zero() if freeze_body
          else optax.chain(base, optax.scale(body_lr_scale)))
  return optax.multi_transform({"head": base, "body": body},
                               lambda params: labels(model, params))
