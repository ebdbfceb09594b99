"""Experiment configs: defaults for every key, TOML files, ``--set`` overrides.

A config is a nested dict. :data:`DEFAULTS` holds every key with its default
and :data:`DOCS` one line about it (``configs/README.md`` is generated from
them, so the two cannot drift). A TOML file in ``configs/`` overrides some
keys; ``--set section.key=value`` overrides any key afterwards, the value
parsed as TOML (``--set model.mlp.hidden=[64,64]``) or, failing that, taken
as a string (``--set optimizer.name=adam``).

Every mistake is a one-line :class:`funcnet.errors.ConfigError` naming the
key, the value and what was expected: unknown keys (with the nearest known
key suggested), wrong types, out-of-range values and unknown names.
"""

import copy
import difflib
import inspect
import json
import os
import tomllib
from typing import Any

from funcnet import data, optimizers, schedules, tasks
from funcnet.errors import ConfigError, FuncnetError
from funcnet.tracing import is_off
from funcnet.models import registry, user

# Each leaf: default value. Types are taken from the default (an int default
# also accepts nothing but ints; a float default accepts ints; a list default
# accepts lists whose items have the type of the default's items, and an
# empty default is a list of integers, see _LIST_ITEM). Keys whose default is
# None accept ints or floats/strings as documented in DOCS.

DEFAULTS: dict = {
    "name": "",
    "seed": 0,
    "data": {
        "name": "digits",
        "seed": 0,
        "label": "label",
        "task": tasks.DEFAULT,
        "standardize": True,
        "classes": [],
        "train_per_class": 0,
        "validation": 0.0,
        "path": "",
        "block_size": 64,
        "stride": 1,
        "tokenizer": "char",
        "vocab_size": 512,
        "val_tokens": 0,
    },
    # then one table per kind, from the registry
    "model": {"kind": "mlp", "import": ""},
    "train": {
        "loss": "cross_entropy",
        "epochs": 30,
        "batch_size": 32,
        "grads": "autodiff",
        "patience": 0,
        "restore_best": False,
        "eval_every": 1,
        "dtype": "float32",
        "compute_dtype": "same",
        "accumulate": 1,
        "chunk_steps": 0,
        "compare_grads": False,
    },
    "adversarial": {
        "method": "none",
        "eps": 0.0,
        "ratio": 0.5,
        "steps": 10,
        "step_size": 0.0,
    },
    "optimizer": {
        "name": "adam",
        "impl": "funcnet",
        "learning_rate": 1e-3,
        "beta": 0.9,
        "b1": 0.9,
        "b2": 0.999,
        "eps": 1e-8,
        "decay": 0.9,
        "initial_accumulator_value": 0.1,
        "weight_decay": 0.0,
        "l2": 0.0,
        "clip_norm": 0.0,
    },
    "schedule": {
        "name": "constant",
        "warmup_steps": 0,
        "decay_rate": 0.5,
        "decay_steps": 1000,
        "step_size": 1000,
        "alpha": 0.0,
    },
    "run": {
        "checkpoint_every": 10,
        "checkpoint_every_steps": 0,
        "keep_checkpoints": 3,
        "plots": True,
        "progress": "auto",
        "checkpoint_dir": "",
        "tensorboard": False,
        "compilation_cache": True,
        "power_watts": 0.0,
    },
    "finetune": {
        "from_run": "",
        "freeze_body": True,
        "body_lr_scale": 0.1,
    },
    "distill": {
        "teacher": "",
        "temperature": 4.0,
        "alpha": 0.9,
    },
    "pretrain": {
        "objective": "none",
        "layout": "signal",
        "mask_fraction": 0.25, "span": 4, "copies": 8,  # masked modelling
        "width": 64, "temperature": 0.2,  # contrastive
        "shift": 5, "scale": 0.4, "noise": 0.1,  # the contrastive views
    },
    "parallel": {
        "devices": 0,
        "fsdp": 1,
        "fsdp_min_size": 1024,
        "heartbeat_timeout": 60,
        "shutdown_timeout": 120,
        "init_timeout": 300,
    },
}

DOCS: dict = {
    "name": "run name; default: the config file's stem (run folders are runs/<name>-<time>)",
    "seed": "the one integer all randomness derives from (init, shuffling, dropout); 0 <= seed < 2**32",
    "data.seed": "seed of generated data and of splits (kept apart from `seed`, so the digits split stays fixed); 0 <= seed < 2**32",
    "data.label": "for .csv files: the label column's name (every other column is a feature)",
    "data.task": f"for files: {' | '.join(tasks.file_names())} (built-in sets know theirs)",
    "data.standardize": "standardise inputs with the training split's mean and std",
    "data.classes": "classification: keep only these labels, relabelled 0..k-1 in this order, in both splits ([]: all)",
    "data.train_per_class": "few labels: keep N training examples per class, the first in a data.seed shuffle (0: all; test split untouched)",
    "data.validation": "hold out this fraction of the training split (a data.seed shuffle) as the held-out split that evaluation, early stopping and restore_best read; the test split is then read once, for the final numbers (summary.json `test`); 0: the test split is the held-out split",
    "data.path": "text: a UTF-8 text file to train on (\"\": the built-in corpus, CPython's language reference); the first 90% of its characters train, the last 10% validate",
    "data.block_size": "text: tokens per window (the context a language model sees); validation is consecutive windows of this many",
    "data.stride": "text: tokens between the starts of consecutive training windows (1: every offset)",
    "data.tokenizer": "text: char (one id per character of the training split, plus unknown) | bpe (byte-level BPE, the [bpe] extra)",
    "data.vocab_size": "text with data.tokenizer = bpe: tokens in the vocabulary (256 bytes, then merges)",
    "data.val_tokens": "text: validate on the first N validation tokens only (0: all of them; a corpus larger than memory)",
    "model.import": "the module that registers a kind of your own, imported before the config is read: a module name on sys.path, or a path to a .py file relative to the config file (\"\": none; see funcnet.register_kind)",
    "train.loss": f"{tasks.loss_doc()}; hinge needs an identity output",
    "train.epochs": "passes over the training data",
    "train.batch_size": "examples per gradient step (= n_train for full-batch gradient descent)",
    "train.grads": "manual (the hand-written backward of every layer, funcnet/layers) | autodiff (jax.grad)",
    "train.patience": "early stopping: evaluations without held-out improvement before stopping (0: off)",
    "train.restore_best": "end with the params of the evaluation with the lowest held-out loss (the optimizer state stays the last); cannot be resumed",
    "train.eval_every": "evaluate on the held-out split every this many epochs",
    "train.dtype": "parameter and input dtype: float32 | float64 (float64 needs JAX_ENABLE_X64=1)",
    "train.compute_dtype": "forward/backward dtype: same (as train.dtype) | bfloat16 (params, optimizer state and gradients stay train.dtype; logits cast back before the loss) | float32",
    "train.accumulate": "micro-batches per step: the step's gradient is their mean (same as the whole batch's, less memory); must divide train.batch_size",
    "train.chunk_steps": "data streamed from shards (data.name = a folder of funcnet data convert): steps per compiled call, each chunk's batches read a chunk ahead (0: the epoch, up to 64 MB of batches); in-memory data runs one call per epoch",
    "train.compare_grads": "also train with the other gradient source from the same seed and record the parameter difference",
    "adversarial.method": "adversarial training: none | fgsm | pgd, attacks made inside each step from the current params (real-valued inputs only)",
    "adversarial.eps": "the L-infinity radius in the data's raw units (digits: pixel intensities 0..16), eps / std per feature for standardised inputs; attacks clip to the dataset's valid range",
    "adversarial.ratio": "the fraction of each batch replaced by its attack, in [0, 1] (1: all adversarial)",
    "adversarial.steps": "pgd: steps of the attack (random start, projection onto the eps ball)",
    "adversarial.step_size": "pgd: each step's size in raw units (0: 2.5 eps / steps)",
    "optimizer.impl": "funcnet (the update rules written out here) | optax (the production library)",
    "optimizer.learning_rate": "eta in w := w - eta dC/dw (the peak rate under a schedule)",
    # the keys of one optimizer or schedule: _add_users() puts its name first
    "optimizer.beta": "the velocity decay",
    "optimizer.b1": "first-moment decay",
    "optimizer.b2": "second-moment decay",
    "optimizer.eps": "the epsilon in the denominator",
    "optimizer.decay": "the squared-gradient decay",
    "optimizer.initial_accumulator_value": "the accumulator's starting value",
    "optimizer.weight_decay": "decoupled weight decay",
    "optimizer.l2": "L2 weight decay added to the gradient (g + l2 w) before any optimizer",
    "optimizer.clip_norm": "clip gradients to this global norm before the update (0: off)",
    "schedule.warmup_steps": "linear warm-up from 0 over this many steps before the schedule (0: none)",
    "schedule.decay_rate": "the decay rate",
    "schedule.decay_steps": "the decay horizon in steps",
    "schedule.step_size": "multiply by decay_rate every this many steps",
    "schedule.alpha": "the final rate as a fraction of the peak",
    "run.checkpoint_every": "save a checkpoint every this many epochs (and at the end)",
    "run.checkpoint_every_steps": "data streamed from shards: also save every this many steps inside an epoch (at the next chunk's end; 0: only at epoch ends); a resume continues from that step",
    "run.keep_checkpoints": "how many of the latest checkpoints to keep",
    "run.plots": "write loss/accuracy and gradient-norm plots as PNG",
    "run.progress": "auto (a bar on a terminal) | always | never",
    "run.tensorboard": "also write TensorBoard event files into the run folder (needs the [tensorboard] extra: tensorboardX)",
    "run.compilation_cache": "keep compiled programs on disk, so the next run of the same program compiles nothing: in $FUNCNET_COMPILATION_CACHE, else ~/.cache/funcnet/xla (`FUNCNET_COMPILATION_CACHE=off` turns it off too; delete the folder to clear it)",
    "run.power_watts": "the machine's power draw in watts while training, your figure: summary.json's compute then carries energy_estimate_j = watts x training seconds with that assumption; 0: no estimate (energy is reported only where Linux RAPL counters are readable)",
    "run.checkpoint_dir": "where checkpoints go (default: <run folder>/checkpoints); on several hosts a folder they all see, e.g. gs://bucket/run",
    "finetune.from_run": "a run folder to fine-tune from: its checkpoint gives the body, the head is made afresh for this data's classes (\"\": train from scratch)",
    "finetune.freeze_body": "fine-tuning: zero updates for everything but the head",
    "finetune.body_lr_scale": "fine-tuning with freeze_body = false: the body's learning rate is optimizer.learning_rate times this",
    "distill.teacher": "knowledge distillation (Hinton et al. 2015): a classifier's run folder whose logits on the training inputs become soft targets (\"\": train from labels alone); needs train.loss = cross_entropy",
    "distill.temperature": "distillation: T > 0 softening both softmaxes; the soft term is scaled by T^2",
    "distill.alpha": "distillation: the soft term's weight in [0, 1]; C = alpha T^2 KL(teacher to student) + (1 - alpha) cross-entropy",
    "pretrain.objective": "self-supervised pretraining on the training split's inputs, labels unread: masked (hide spans or patches, reconstruct them; MSE on the hidden positions) | contrastive (SimCLR: two augmented views, NT-Xent) | none; fine-tune the run after with finetune.from_run",
    "pretrain.layout": "how the inputs are laid out: signal (1-D: spans of `span` positions, shifts roll the signal) | image (a square image flattened: `span` x `span` patches, shifts roll rows and columns)",
    "pretrain.mask_fraction": "masked: the share of spans or patches hidden in each input, in (0, 1) (hidden inputs are set to 0, the standardised mean)",
    "pretrain.span": "masked: positions per hidden span (signal) or a square patch's side (image); must divide the signal's length or the image's side",
    "pretrain.copies": "masked: masked versions of each training input, each with its own random mask (the epoch sees them all)",
    "pretrain.width": "contrastive: the width of the projection the loss reads (the model's last layer, replaced by fine-tuning); masked: ignored, the reconstruction has the input's size",
    "pretrain.temperature": "contrastive: NT-Xent's temperature t > 0 on cosine similarities",
    "pretrain.shift": "contrastive: each view rolled by a random k in [-shift, shift] positions (image: rows and columns apart), as MNIST-1D's translate",
    "pretrain.scale": "contrastive: each view's amplitude times 1 + scale (u - 1/2), u ~ U(0, 1), as MNIST-1D's scale",
    "pretrain.noise": "contrastive: i.i.d. Gaussian noise of this standard deviation (standardised units) added to each view",
    "parallel.devices": "devices to train on: 0 = every device of every process (data parallel when more than one), 1 = the single-device path, N = the first N (one process)",
    "parallel.fsdp": "devices along the fsdp mesh axis that split params and optimizer state (1: replicate them); must divide the device count",
    "parallel.fsdp_min_size": "arrays with fewer entries stay replicated under fsdp",
    "parallel.heartbeat_timeout": "several processes: seconds without a heartbeat after which a process counts as dead and the others stop",
    "parallel.shutdown_timeout": "several processes: seconds a finished process waits for the others at exit",
    "parallel.init_timeout": "several processes: seconds to wait for every process to join",
}

CHOICES = {
    "data.task": tasks.file_names(),
    "data.tokenizer": ("char", "bpe"),
    "train.grads": ("manual", "autodiff"),
    "train.dtype": ("float32", "float64"),
    "train.compute_dtype": ("same", "float32", "bfloat16"),
    "adversarial.method": ("none", "fgsm", "pgd"),
    "pretrain.objective": ("none", "masked", "contrastive"),
    "pretrain.layout": ("signal", "image"),
    "optimizer.impl": ("funcnet", "optax"),
    "run.progress": ("auto", "always", "never"),
}

# Seeds go to jax.random.key and numpy's default_rng. numpy refuses
# negative seeds; jax takes up to 2**63 - 1 but, in its default 32-bit
# mode, keeps only the low 32 bits (key(2**32) == key(0)), so larger seeds
# would silently repeat smaller ones. [0, 2**32) is what both take as
# distinct seeds.
SEED_RANGE = (0, 2**32 - 1)

# (key, low, high, low inclusive): numbers must lie in range (high is
# inclusive). The optimizer's and the schedule's hyperparameters are not
# here: their own modules check them, when validate() builds them.
RANGES = [
    ("train.epochs", 1, None, True), ("train.batch_size", 1, None, True),
    ("train.patience", 0, None, True), ("train.eval_every", 1, None, True),
    ("run.checkpoint_every", 1, None, True),
    ("run.checkpoint_every_steps", 0, None, True),
    ("train.chunk_steps", 0, None, True), ("run.keep_checkpoints", 1, None, True),
    ("train.accumulate", 1, None, True),
    ("data.train_per_class", 0, None, True),
    ("data.validation", 0.0, 1.0, True),
    ("data.block_size", 1, None, True), ("data.stride", 1, None, True),
    ("data.vocab_size", 256, None, True), ("data.val_tokens", 0, None, True),
    ("finetune.body_lr_scale", 0.0, None, True),
    ("parallel.devices", 0, None, True), ("parallel.fsdp", 1, None, True),
    ("parallel.fsdp_min_size", 0, None, True),
    ("parallel.heartbeat_timeout", 1, None, True),
    ("parallel.shutdown_timeout", 1, None, True),
    ("parallel.init_timeout", 1, None, True),
    ("adversarial.eps", 0.0, None, True), ("adversarial.ratio", 0.0, 1.0, True),
    ("adversarial.steps", 1, None, True), ("adversarial.step_size", 0.0, None, True),
    ("distill.temperature", 0.0, None, False),
    ("distill.alpha", 0.0, 1.0, True),
    ("pretrain.span", 1, None, True), ("pretrain.copies", 1, None, True),
    ("pretrain.width", 1, None, True), ("pretrain.temperature", 0.0, None, False),
    ("pretrain.shift", 0, None, True), ("pretrain.scale", 0.0, 2.0, True),
    ("pretrain.noise", 0.0, None, True),
    ("seed", *SEED_RANGE, True), ("data.seed", *SEED_RANGE, True),
]


def _add_model_table(kind: registry.Kind) -> None:
  """The ``[model.<kind>]`` table: the kind's defaults and docs (each kind
  declares its own; its builder checks the values). Called for every kind
  the registry holds, and for each one registered later (a user's kind,
  :func:`funcnet.register_kind`), so no table is missing whenever the kind
  was registered."""
  DEFAULTS["model"][kind.name] = kind.defaults
  for key in [k for k in DOCS if k.startswith(f"model.{kind.name}.")]:
    del DOCS[key]  # a kind registered anew: its old keys go
  DOCS.update({f"model.{kind.name}.{k}": v for k, v in kind.docs.items()})
  DOCS["model.kind"] = (f"which model: {' | '.join(registry.KINDS)} (each "
                        "has its [model.<kind>] table)")


def _add_names() -> None:
  """The doc lines that list names, from the registries that hold them:
  the datasets (:mod:`funcnet.data.registry`), the model kinds, the
  optimizers and the schedules. A new one is listed with no edit here."""
  DOCS["data.name"] = (f"a built-in dataset ({', '.join(data.DATASETS)}) or "
                       "a path to a .npz/.csv file, a shards folder or a text's token folder "
                       "(funcnet data convert)")
  DOCS["optimizer.name"] = " | ".join(optimizers.OPTIMIZERS)
  DOCS["schedule.name"] = " | ".join(n for n in schedules.SCHEDULES
                                     if n != "warmup")


registry.on_register(_add_model_table)
_add_names()


def flatten(tree: dict, prefix: str = "") -> dict:
  """``{"a": {"b": 1}} -> {"a.b": 1}``."""
  out = {}
  for k, v in tree.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(flatten(v, key + "."))
    else:
      out[key] = v
  return out


def _type_name(v) -> str:
  if isinstance(v, bool):
    return "a boolean"
  if isinstance(v, int):
    return "an integer"
  if isinstance(v, float):
    return "a number"
  if isinstance(v, str):
    return "a string"
  if isinstance(v, list):
    return "a list"
  return type(v).__name__


# The item type of a list-valued key with an empty default ([]: "none"),
# which has no item to take it from. Every list key holds integers (widths,
# channels, labels, a shape); a list of floats or strings would need its
# default to show one.
_LIST_ITEM = 0

# "expected a list of ..." for each item type.
_PLURAL = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


def _check_items(key: str, value: list, default: list) -> list:
  """The items of ``value`` checked against the type of ``default``'s
  items, as :func:`_coerce` checks a scalar (a float list takes ints and
  makes them floats; bools are not ints)."""
  like = default[0] if default else _LIST_ITEM
  out = []
  for item in value:
    try:
      out.append(_coerce(key, item, like))
    except ConfigError:
      # "a float", not "a number": 64.5 is refused for not being an integer.
      what = "a float" if isinstance(item, float) else _type_name(item)
      raise ConfigError(
          f"config key {key!r} = {value!r}: item {item!r} is {what}; "
          f"expected a list of {_PLURAL.get(type(like), type(like).__name__)}"
          ) from None
  return out


def _suggest(key: str, known) -> str:
  close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
  if not close:
    tail = key.rsplit(".", 1)[-1]
    close = [k for k in known if k.rsplit(".", 1)[-1] == tail][:1]
  return f"; did you mean {close[0]!r}?" if close else ""


def _coerce(key: str, value, default):
  """``value`` checked against the type of ``default``."""
  if isinstance(default, bool):
    if isinstance(value, bool):
      return value
  elif isinstance(default, int):
    if isinstance(value, int) and not isinstance(value, bool):
      return value
  elif isinstance(default, float):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
  elif isinstance(default, str):
    if isinstance(value, str):
      return value
  elif isinstance(default, list):
    if isinstance(value, list):
      return _check_items(key, value, default)
  raise ConfigError(
      f"config key {key!r} = {value!r} is {_type_name(value)}; expected "
      f"{_type_name(default)} (like the default {default!r})")


def _set(cfg: dict, key: str, value, explicit: set) -> None:
  """``cfg[key] = value`` checked against the default's type; ``key`` (or,
  for a table, each key in it) is added to ``explicit``."""
  known = flatten(DEFAULTS)
  if key not in known:
    if isinstance(value, dict):
      for k, v in value.items():
        _set(cfg, f"{key}.{k}", v, explicit)
      return
    raise ConfigError(f"unknown config key {key!r}{_suggest(key, known)}")
  node = cfg
  parts = key.split(".")
  for p in parts[:-1]:
    node = node[p]
  node[parts[-1]] = _coerce(key, value, known[key])
  explicit.add(key)


def _merge(cfg: dict, tree: dict, explicit: set, prefix: str = "") -> None:
  known = flatten(DEFAULTS)
  for k, v in tree.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict) and key not in known:
      if not any(kk.startswith(key + ".") for kk in known):
        near = {kk.rsplit(".", kk.count(".") - key.count("."))[0] for kk in known}
        raise ConfigError(f"unknown config section {key!r}{_suggest(key, near)}")
      _merge(cfg, v, explicit, key + ".")
    else:
      _set(cfg, key, v, explicit)


def parse_override(text: str) -> tuple[str, Any]:
  """``"a.b=value"`` -> ``("a.b", value)``, the value parsed as TOML."""
  if "=" not in text:
    raise ConfigError(f"--set {text!r}: expected key=value, e.g. train.epochs=5")
  key, raw = text.split("=", 1)
  key, raw = key.strip(), raw.strip()
  try:
    value = tomllib.loads(f"v = {raw}")["v"]
  except tomllib.TOMLDecodeError:
    value = raw
  return key, value


# Keys of [optimizer] and [schedule] that every optimizer / schedule uses;
# the others belong to the ones whose function takes them.
_COMMON = {"optimizer": {"name", "impl", "learning_rate", "l2", "clip_norm"},
           "schedule": {"name", "warmup_steps"}}


def uses(section: str, name: str) -> set:
  """The keys of ``[optimizer]`` or ``[schedule]`` that ``name`` uses."""
  table = optimizers.OPTIMIZERS if section == "optimizer" else schedules.SCHEDULES
  fn = table.get(name)
  own = set(inspect.signature(fn).parameters) if fn is not None else set()
  return _COMMON[section] | (own - {"lr"})  # a schedule's lr: the optimizer's


def _add_users() -> None:
  """Each key of one optimizer or schedule is documented with the names of
  those that read it, as their functions' signatures say (:func:`uses`):
  ``adam / adamw: first-moment decay``."""
  for section, table in (("optimizer", optimizers.OPTIMIZERS),
                         ("schedule", schedules.SCHEDULES)):
    for key in DEFAULTS[section]:
      if key not in _COMMON[section]:
        users = [n.removesuffix("_decay") for n in table
                 if n != "warmup" and key in uses(section, n)]
        DOCS[f"{section}.{key}"] = f"{' / '.join(users)}: {DOCS[f'{section}.{key}']}"


_add_users()


def _check_applies(cfg: dict, explicit) -> None:
  """A key the user set that the chosen optimizer, schedule or model kind
  does not read would be silently ignored: one line instead."""
  kind = cfg["model"]["kind"]
  for key in sorted(explicit):
    section, _, rest = key.partition(".")
    if section in _COMMON:
      name = cfg[section]["name"]
      if rest not in uses(section, name):
        users = [n for n in (optimizers.OPTIMIZERS if section == "optimizer"
                             else schedules.SCHEDULES)
                 if rest in uses(section, n) and n != "warmup"]
        raise ConfigError(
            f"config key {key!r} does not apply to {section}.name = {name!r}; "
            f"expected it only with {section}.name = {' | '.join(users)}, or "
            f"one of {', '.join(sorted(uses(section, name) - {'name'}))}")
    elif section == "model" and rest not in ("kind", "import") \
        and rest.split(".")[0] != kind:
      raise ConfigError(
          f"config key {key!r} belongs to model.kind = {rest.split('.')[0]!r}; "
          f"this config's model.kind is {kind!r}; expected [model.{kind}] "
          f"keys, or model.kind = {rest.split('.')[0]!r}")


def _check_built(cfg: dict) -> None:
  """The schedule and the optimizer, built once: their modules check every
  hyperparameter (one site for each value, also for Python callers)."""
  try:
    schedule_from_config(cfg)
  except FuncnetError as e:
    raise ConfigError(f"config [schedule] with optimizer.learning_rate = "
                      f"{cfg['optimizer']['learning_rate']!r}: {e}") from None
  try:
    optimizer_from_config(cfg, schedules.constant(1.0))
  except FuncnetError as e:
    raise ConfigError(f"config [optimizer]: {e}") from None


def schedule_from_config(cfg):
  """``count -> lr`` from ``[schedule]``, peaking at ``optimizer.learning_rate``."""
  s, lr = cfg["schedule"], cfg["optimizer"]["learning_rate"]
  if s["name"] not in schedules.SCHEDULES or s["name"] == "warmup":
    raise ConfigError(
        f"config key 'schedule.name' = {s['name']!r}; expected one of "
        f"{', '.join(n for n in schedules.names() if n != 'warmup')} "
        "(warm-up is schedule.warmup_steps)")
  own = uses("schedule", s["name"]) - _COMMON["schedule"]
  sched = schedules.get(s["name"], lr=lr, **{k: s[k] for k in own})
  if not is_off(s["warmup_steps"]):
    sched = schedules.warmup(sched, s["warmup_steps"])
  return sched


def optimizer_from_config(cfg, schedule):
  """``[optimizer]`` as a chain (clip, L2 decay, the update rule)
  with ``schedule`` as its learning rate."""
  o = cfg["optimizer"]
  name = o["name"]
  if name not in optimizers.OPTIMIZERS:
    raise ConfigError(f"config key 'optimizer.name' = {name!r}; expected one "
                      f"of {', '.join(optimizers.names())}")
  hyper = {k: o[k] for k in uses("optimizer", name) - _COMMON["optimizer"]}
  if name == "adamw":
    if not is_off(o["l2"]):
      raise ConfigError("config key 'optimizer.l2' does not apply to adamw; "
                        "expected optimizer.weight_decay (decoupled) instead")
    decay = hyper.pop("weight_decay")
  else:
    decay = None if is_off(o["l2"]) else o["l2"]
  clip = None if is_off(o["clip_norm"]) else o["clip_norm"]
  return optimizers.build(name, schedule, impl=o["impl"],
                          clip_norm=clip, weight_decay=decay,
                          **hyper)


def validate(cfg: dict, explicit=()) -> dict:
  """Choice and range checks, the model kind, the optimizer and schedule
  (built once), and the keys in ``explicit`` (those the user set) against
  what the chosen optimizer, schedule and model kind use; returns ``cfg``.
  Checks that need the data (loss vs task, batch size) come later, in
  :class:`funcnet.experiment.Setup`."""
  flat = flatten(cfg)
  for key, options in CHOICES.items():
    if flat[key] not in options:
      raise ConfigError(f"config key {key!r} = {flat[key]!r}; expected one of "
                        f"{', '.join(options)}")
  registry.get(cfg["model"]["kind"])
  for key, lo, hi, inclusive in RANGES:
    if key not in flat:
      continue
    v = flat[key]
    too_low = lo is not None and (v < lo if inclusive else v <= lo)
    too_high = hi is not None and v > hi
    if too_low or too_high:
      want = (f"{'>=' if inclusive else '>'} {lo}" if hi is None
              else f"in [{lo}, {hi}]")
      raise ConfigError(f"config key {key!r} = {v!r} is out of range; expected {want}")
  _check_built(cfg)
  _check_applies(cfg, explicit)
  return cfg


def _user_kind(tree: dict, overrides, base) -> str:
  """Imports the module that registers the config's kind, when the config
  names one (``model.import`` in the file, ``base`` its folder, or in
  ``--set``), then finds the kind (an installed package's entry point is
  loaded here), before the kind's table is read. Returns the module as a
  saved config names it (a file's absolute path)."""
  model = tree.get("model") if isinstance(tree.get("model"), dict) else {}
  ref, kind = model.get("import", ""), model.get("kind")
  for text in overrides:
    key, value = parse_override(text)
    if key == "model.import":
      ref, base = value, None  # a --set path: from the working directory
    elif key == "model.kind":
      kind = value
  if isinstance(ref, str) and ref:
    ref = user.import_module(ref, base)
  if isinstance(kind, str):
    registry.get(kind)
  return ref


def require_kind(tree: dict) -> None:
  """A saved config's kind must be registered already: reading a config
  never imports the module it names (:mod:`funcnet.models.user`)."""
  model = tree.get("model") if isinstance(tree.get("model"), dict) else {}
  kind, ref = model.get("kind"), model.get("import") or ""
  if not isinstance(kind, str) or registry.find(kind) is not None:
    return
  if ref:
    raise ConfigError(
        f"model.kind = {kind!r} is not registered; the config names the "
        f"module {ref!r} (model.import), which funcnet does not import from "
        f"a saved config by itself; expected --import {ref} (funcnet eval, "
        f"funcnet train --resume), funcnet.load_run(dir, imports=[{ref!r}]), "
        "importing it yourself first, or an installed 'funcnet.models' "
        "entry point")
  raise ConfigError(
      f"model.kind = {kind!r} is not registered, and the config names no "
      "module for it; expected the module that registers it imported first "
      "(--import MODULE, funcnet.load_run(dir, imports=[...])) or an "
      "installed 'funcnet.models' entry point")


def from_dict(tree: dict, overrides=()) -> dict:
  """A config from a nested dict (e.g. a run's ``config.json``), checked.

  Imports nothing: a kind of the user's own must be registered already
  (its module imported by the caller, or an installed entry point), else a
  one-line :class:`ConfigError` names the module the config records."""
  require_kind(tree)
  cfg, explicit = copy.deepcopy(DEFAULTS), set()
  _merge(cfg, tree, set())  # a saved config holds every key: not "set"
  for text in overrides:
    _set(cfg, *parse_override(text), explicit)
  return validate(cfg, explicit)


def load(path=None, overrides=()) -> dict:
  """The resolved config: defaults, then the TOML file, then ``overrides``.

  A config that names a module (``[model] import``) has it imported first
  (:func:`funcnet.models.user.import_module`): the user named it.

  Args:
    path: a ``.toml`` file or None for the defaults alone.
    overrides: ``"key=value"`` strings (the ``--set`` flags).
  """
  explicit, tree, base = set(), {}, None
  if path is not None:
    path = os.fspath(path)
    base = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(path):
      raise ConfigError(f"config file {path!r} does not exist")
    try:
      with open(path, "rb") as f:
        tree = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
      raise ConfigError(f"config file {path!r} is not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
      raise ConfigError(f"config file {path!r} cannot be read: {e}") from None
  module = _user_kind(tree, overrides, base)  # before its table is read
  cfg = copy.deepcopy(DEFAULTS)  # with the tables of the kinds it registered
  if path is not None:
    _merge(cfg, tree, explicit)
    if not cfg["name"]:
      cfg["name"] = os.path.splitext(os.path.basename(path))[0]
  for text in overrides:
    _set(cfg, *parse_override(text), explicit)
  if cfg["model"]["import"]:  # a file by its absolute path, for the run
    cfg["model"]["import"] = module
  if not cfg["name"]:
    cfg["name"] = "default"
  return validate(cfg, explicit)


def to_json(cfg: dict) -> str:
  return json.dumps(cfg, indent=2, sort_keys=True)


def markdown_table() -> str:
  """Every key, its default and its doc line, as a Markdown table."""
  rows = ["| key | default | meaning |", "| --- | --- | --- |"]
  for key, default in flatten(DEFAULTS).items():
    rows.append(f"| `{key}` | `{json.dumps(default)}` | {DOCS.get(key, '')} |")
  return "\n".join(rows)
