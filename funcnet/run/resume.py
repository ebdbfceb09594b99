"""What a resumed run may change, and what it may not.

``funcnet train --out R --resume`` continues R's saved config;
``--set`` and ``--config`` may ask for a different one. A resumed run is
only worth anything if it equals the run never stopped, so the requested
config is compared with ``R/config.json`` before anything in R is touched:

- keys that change what is computed (the model and so the checkpoint's
  shapes, the data and its split, the optimizer and its state, the seed,
  the loss, dtypes, evaluation schedule and early stopping) must be equal:
  otherwise one line naming each differing key and its two values, exit 2,
  and R stays as it was;
- keys that only say how long to train, where to report, how often to save,
  or on which devices (:data:`SAFE`) may change; the change is kept in
  ``config.json`` and recorded as an event line in ``metrics.jsonl``
  (``{"event": "resume", "epoch": E, "changed": {key: [old, new]}}``).

A different device layout (``parallel.*``) is safe in this sense: the
checkpoint restores onto any mesh (see :mod:`funcnet.run.checkpoints`), and the
run continues with the same numbers up to the order of float sums.
"""

import os

from funcnet.errors import ConfigError

# Dotted keys, or a table's prefix ending in ".", that a resume may change.
SAFE = ("name", "train.epochs", "train.compare_grads", "train.chunk_steps",
        "run.checkpoint_every", "run.checkpoint_every_steps",
        "run.keep_checkpoints", "run.plots",
        "run.progress", "run.tensorboard", "run.compilation_cache",
        "run.power_watts",
        "parallel.")


def flat(cfg: dict, prefix: str = "") -> dict:
  """``{"train.epochs": 30, ...}``: every leaf of a nested config."""
  out = {}
  for k, v in cfg.items():
    if isinstance(v, dict):
      out.update(flat(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


def is_safe(key: str) -> bool:
  return any(key == s or (s.endswith(".") and key.startswith(s))
             for s in SAFE)


def resolve_checkpoint_dir(cfg: dict) -> dict:
  """``cfg`` with a relative ``run.checkpoint_dir`` made absolute (from the
  working directory), so that a resume from another directory finds the
  same checkpoints; URLs (``gs://``) and the default ``""`` stay."""
  d = cfg["run"]["checkpoint_dir"]
  if d and "://" not in d and not os.path.isabs(d):
    cfg = {**cfg, "run": {**cfg["run"], "checkpoint_dir": os.path.abspath(d)}}
  return cfg


def changes(saved: dict, requested: dict) -> dict:
  """``{key: [saved value, requested value]}`` for every differing leaf."""
  a = flat(resolve_checkpoint_dir(saved))
  b = flat(resolve_checkpoint_dir(requested))
  return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b))
          if a.get(k) != b.get(k)}


def check(run: str, saved: dict, requested: dict) -> dict:
  """The safe changes a resume of ``run`` asks for (``{key: [old, new]}``).

  Raises:
    ConfigError: a key outside :data:`SAFE` differs; the message names
      every such key with both values.
  """
  diff = changes(saved, requested)
  unsafe = {k: v for k, v in diff.items() if not is_safe(k)}
  if unsafe:
    shown = "; ".join(f"{k} = {old!r} in the run, {new!r} asked"
                      for k, (old, new) in unsafe.items())
    raise ConfigError(
        f"--resume {run!r}: the config differs in keys a resume cannot "
        f"change ({shown}); expected the run's own config (only "
        "train.epochs, run.* reporting and checkpoint cadence, and "
        "parallel.* may change), or a new --out")
  return diff
