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

Where the head lives is each model kind's to say (``Model.head``, read by
:func:`head_path`):

  mlp                     params[-1]             {"W": (d, k), "b": (k,)}
  cnn                     params["dense"][-1]    (d = last dense width or features)
  rnn, gru, transformer   params["head"]

The trained run is read by :func:`load_pretrained` (which says which config
trains it when the folder is missing) with
:func:`funcnet.run.rundir.load_trained`: its model
from ``model.json``, its params from its latest checkpoint and its input
statistics from ``stats.npz``, without rebuilding its data or optimizer.

The body must match the run's in structure and shape (same ``[model]``
table apart from the class count and dropout); inputs are standardised with
the run's own training statistics (``stats.npz``), since the body learned
on inputs scaled that way (see :func:`funcnet.experiment.build_dataset`).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.errors import ConfigError
from funcnet.optimizers import GradientTransformation

# The shipped configs (configs/*.toml beside the package), where the
# pre-training config of a shipped fine-tuning config lives.
_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "configs")


def load_pretrained(run: str):
  """``finetune.from_run``'s trained run (:func:`funcnet.run.rundir.load_trained`).

  A folder that does not exist yet is the usual first mistake (the
  pre-training run was not trained): when a shipped config bears its name
  (``runs/digits_pretrain_0to4`` and ``configs/digits_pretrain_0to4.toml``),
  the error names the command that trains it.

  Raises:
    ConfigError: ``run`` is no run folder.
    CheckpointError: it has no readable checkpoint.
  """
  from funcnet.run import rundir
  what = "config key 'finetune.from_run' ="
  if not os.path.isdir(run):
    name = os.path.basename(os.path.normpath(run))
    config = os.path.join(_CONFIGS, f"{name}.toml")
    if os.path.isfile(config):
      rel = os.path.relpath(config)
      shown = config if rel.startswith("..") else rel
      raise ConfigError(
          f"{what} {run!r}: no such run folder; train the pre-training run "
          f"first: funcnet train --config {shown} --out {run}")
  return rundir.load_trained(run, what)


def head_path(model) -> tuple:
  """The keys/indices from the params' root to the head's ``{"W", "b"}``
  (each model kind says where: ``model.head``)."""
  if model.head is None:
    raise ConfigError(f"fine-tuning replaces a classifier's head; model.kind = "
                      f"{model.kind!r} has none; expected a classifier (mlp, "
                      "cnn, rnn, gru, transformer)")
  return model.head


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


def optimizer(base: GradientTransformation, model, freeze_body: bool,
              body_lr_scale: float) -> GradientTransformation:
  """``base`` on the head; zero (frozen) or ``body_lr_scale`` × ``base`` on the body.

  Each part gets its own copy of ``base``'s state, so the head's clipping,
  moments and decay do not see the body's gradients. (optax imported here:
  a run that fine-tunes nothing does not pay for it.)
  """
  import optax
  body = (optax.set_to_zero() if freeze_body
          else optax.chain(base, optax.scale(body_lr_scale)))
  return optax.multi_transform({"head": base, "body": body},
                               lambda params: labels(model, params))
