"""From a config to what a run is made of: data, model, optimizer, checks.

  build_dataset(cfg)       the dataset the config names, standardised when asked
  build_model(cfg, ds)     the model, sized to the data
  build_optimizer(cfg, m)  (schedule, optimizer), wrapped for fine-tuning
  build_adversarial(cfg, ds)  adversarial training's attack in model units
  check(cfg, ds, model)    cross-key checks that need the data
  Setup(cfg)               all of them, checked, with the run's key, its
                           initial state and ``fit`` as the config says
                           (``[distill]``: the teacher's logits in the
                           targets, the distillation loss; see
                           :mod:`funcnet.experiment.distill`; ``[pretrain]``:
                           a self-supervised objective's model, loss and
                           targets, :mod:`funcnet.experiment.pretrain`)

Every check runs before anything is compiled or written, so a mistake is
one line (:mod:`funcnet.errors`).
"""

import functools
import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import backprop, config as config_lib, data, finetune, losses
from funcnet import initializers, parallel, tasks, train
from funcnet.data import streamed
from funcnet.experiment import distill, pretrain
from funcnet.errors import ConfigError
from funcnet.models import registry
from funcnet.run import preflight
from funcnet.train import program_cache
from funcnet.train import adversarial, precision

def build_dataset(cfg, stats=None) -> data.Dataset:
  """The dataset the config names: its classes (``data.classes``), few labels
  (``data.train_per_class``), then standardised when asked (and the task
  standardises: not ratings, whose inputs are indices),
  with the training split's statistics or the given ``(mean, std)``."""
  d = cfg["data"]
  if streamed.is_shards(d["name"]):  # on disk, read by rows as it trains
    for key in ("classes", "train_per_class", "validation"):
      if d[key]:
        raise ConfigError(
            f"config key 'data.{key}' selects examples, which a dataset "
            f"streamed from shards ({d['name']!r}) cannot; expected it "
            "applied before funcnet data convert")
    return streamed.load(d["name"], d["standardize"], stats)
  # Raw: the classes and examples are chosen first, then standardised.
  ds = data.load(d["name"], seed=d["seed"], standardize=False,
                 **data.options(d["name"], d))
  if d["classes"]:
    ds = data.select_classes(ds, d["classes"])
  if d["train_per_class"]:
    ds = data.few_per_class(ds, d["train_per_class"], d["seed"])
  if d["validation"]:
    ds = data.hold_out(ds, d["validation"], d["seed"])
  if d["standardize"] and tasks.get(ds.task).standardize:
    ds = data.standardize(ds, stats)
  return ds


def n_outputs(cfg, ds) -> int:
  """Output width, the task's (:attr:`funcnet.tasks.Task.n_outputs`): e.g.
  one unit for two classes under bce, else the data's width."""
  return data.n_outputs(ds, cfg["train"]["loss"])


def build_model(cfg, ds):
  """The model ``cfg["model"]`` describes, sized to the dataset."""
  kind = cfg["model"]["kind"]
  return registry.from_config(kind, cfg["model"][kind],
                              data.spec(ds, n_outputs(cfg, ds)))


def check(cfg, ds, model) -> None:
  """Cross-key checks that need the data, made before anything is written
  or compiled: loss vs task, batch size, gradient source, dtype. (Whether
  the run fits in memory is :class:`Setup`'s last check, once the optimizer
  and the device plan are built.)"""
  t = cfg["train"]
  losses.get(t["loss"])  # an unknown name lists the known ones
  allowed = tasks.get(ds.task).losses
  if t["loss"] not in allowed:
    raise ConfigError(f"config key 'train.loss' = {t['loss']!r} does not suit "
                      f"the {ds.task} data {ds.name!r}; expected one of "
                      f"{', '.join(allowed)}")
  train.check_batch(t["batch_size"], len(ds.y_train), t["accumulate"])
  if t["grads"] == "manual":
    backprop.value_and_grad(model, t["loss"])  # raises for a kind without one
  if t["dtype"] == "float64" and not jax.config.jax_enable_x64:
    raise ConfigError("config key 'train.dtype' = 'float64' needs 64-bit JAX; "
                      "expected JAX_ENABLE_X64=1 in the environment")


def build_optimizer(cfg, model, fine_tuning: bool = False):
  """``(schedule, optimizer)`` from ``[schedule]`` and ``[optimizer]``; when
  ``fine_tuning``, wrapped for ``[finetune]`` (a frozen or slower body).

  Also called with traced hyperparameters in ``cfg`` (:mod:`funcnet.sweep`
  builds each variant's optimizer inside its compiled step)."""
  schedule = config_lib.schedule_from_config(cfg)
  optimizer = config_lib.optimizer_from_config(cfg, schedule)
  if fine_tuning:
    ft = cfg["finetune"]
    optimizer = finetune.optimizer(optimizer, model, ft["freeze_body"],
                                   ft["body_lr_scale"])
  return schedule, optimizer


def build_adversarial(cfg, ds):
  """``[adversarial]`` as a :class:`funcnet.train.Adversarial` in the
  model's input units (eps / std per feature, the dataset's valid range
  standardised; :func:`funcnet.train.adversarial.from_raw`), its source
  ``train.grads``; None when ``method = "none"``.

  Raises:
    ConfigError: an attack on integer inputs (ids, tokens), which have no
      L-infinity ball.
  """
  a = cfg["adversarial"]
  if a["method"] == "none":
    return None
  dtype = np.dtype(ds.x_train.dtype)
  if not np.issubdtype(dtype, np.floating):
    raise ConfigError(
        f"config key 'adversarial.method' = {a['method']!r} needs real-valued "
        f"inputs; the {ds.task} data {ds.name!r} has {dtype.name} inputs "
        "(ids or tokens); expected adversarial.method = 'none'")
  stats = (ds.info["mean"], ds.info["std"]) if "mean" in ds.info else None
  return adversarial.from_raw(
      a["method"], a["eps"], a["ratio"], stats=stats,
      valid_range=data.valid_range(cfg["data"]["name"]), steps=a["steps"],
      step_size=a["step_size"] or None, source=cfg["train"]["grads"])


def _batch_shapes(ds, dtype, rows: int = 2):
  """``(x, y)`` as ``jax.ShapeDtypeStruct`` s of a ``rows``-example batch
  as fit feeds it (float inputs in ``dtype``)."""
  def struct(a):
    dt = np.dtype(a.dtype)
    return jax.ShapeDtypeStruct((rows, *np.shape(a)[1:]),
                                dtype if np.issubdtype(dt, np.floating) else dt)
  return struct(ds.x_train), struct(ds.y_train)


# Config tables, and train keys, the evaluation program does not read: the
# optimizer and its schedule, the seed, how long and how often to train and
# evaluate, the run folder's settings, the config's name. (The model, the
# data, the loss and what changes it stay: distillation, pretraining,
# adversarial training, fine-tuning.)
NOT_EVALUATED = ("optimizer", "schedule", "seed", "name", "run")
NOT_EVALUATED_TRAIN = ("epochs", "patience", "restore_best", "eval_every")


class Setup:
  """Everything built from a config: data, model, schedule, optimizer.

  ``ds``: the dataset, when the caller already built it from this config
  (:mod:`funcnet.sweep` builds each distinct one once for many variants).
  """

  def __init__(self, cfg, ds=None):
    self.cfg = cfg
    ft, t = cfg["finetune"], cfg["train"]
    # Fine-tuning: the trained run first, since its input statistics scale
    # this data (see funcnet.finetune).
    self.pretrained = (finetune.load_pretrained(ft["from_run"])
                       if ft["from_run"] else None)
    self.ds = ds if ds is not None else build_dataset(
        cfg, self.pretrained and self.pretrained.stats)
    self.model = build_model(cfg, self.ds)
    check(cfg, self.ds, self.model)
    self.loss = t["loss"]
    if pretrain.enabled(cfg):  # the objective's model, loss and targets
      self.model, self.loss, self.ds = pretrain.prepare(cfg, self.ds)
      if t["grads"] == "manual":
        backprop.value_and_grad(self.model, self.loss)
    # Distillation: the teacher is read and checked now, run at the end.
    self.teacher = (distill.load_teacher(cfg, self.ds, self.model)
                    if distill.enabled(cfg) else None)
    self.schedule, self.optimizer = build_optimizer(
        cfg, self.model, self.pretrained is not None)
    self.dtype = jnp.dtype(t["dtype"])
    self.adversarial = build_adversarial(cfg, self.ds)
    if self.adversarial is not None:  # shapes only: a kind without dC/dx
      adversarial.check_traces(self.model, t["loss"], t["grads"],
                               *_batch_shapes(self.ds, self.dtype),
                               self.dtype)
    cd = t["compute_dtype"]
    # None keeps the plain step (bit-identical to a run without the key).
    self.mixed = precision.Mixed(
        None if cd in ("same", self.dtype.name) else jnp.dtype(cd),
        t["accumulate"])
    self.evaluation = train.Evaluation(t["eval_every"], t["patience"] or None,
                                       t["restore_best"])
    # None on one device: the single-device path, unchanged.
    self.plan = parallel.plan_from_config(cfg)
    if self.plan is not None:
      self.plan.check_batch(t["batch_size"], t["accumulate"])
    # Last: the run must fit in memory (shapes only, nothing allocated; a
    # model too large for the machine is refused before its init runs).
    # (remembered on disk for a config seen before: its residuals are
    # traced, 0.05-0.3 s of a warm run)
    before = self._identity()
    preflight.check_memory(
        {**cfg, "train": {**t, "loss": self.loss}}, self.model, self.ds,
        self.optimizer, self.plan,
        estimator=lambda *a: program_cache.remembered(
            "preflight", before, lambda: preflight.estimate(*a)))
    # The data as the config builds them, what a caller may pass back as
    # ``ds`` (a sweep's next variant); ``ds`` itself may carry a teacher's.
    self.built_ds = self.ds
    if self.teacher is not None:  # after every check: the teacher's logits
      self.loss, self.ds = distill.distill(cfg, self.ds, self.teacher)

  @functools.cached_property
  def key(self):
    """``jax.random.key(cfg["seed"])``, the run's one key; made on first use,
    after every check (it is a compiled call, if a small one)."""
    return program_cache.random_key(self.cfg["seed"])

  @functools.cached_property
  def program_identity(self):
    """What decides this Setup's programs besides their arguments' shapes,
    as a digest (:mod:`funcnet.train.program_cache` keys its executables
    by it): the resolved config (model, loss, optimizer, schedule, dtype,
    ...), the loss and task it came to, the data's name, shapes, dtypes and
    ``info`` (its statistics scale an adversarial budget, which the step
    holds as a constant). None where the cache is not used: a mesh plan,
    data streamed from shards."""
    return self._identity()

  @functools.cached_property
  def evaluation_identity(self):
    """:attr:`program_identity` less what the evaluation program does not
    read (:data:`NOT_EVALUATED`): variants of a sequential sweep that differ
    in learning rate share one evaluation program."""
    cfg = {k: v for k, v in self.cfg.items() if k not in NOT_EVALUATED}
    cfg["train"] = {k: v for k, v in cfg["train"].items()
                    if k not in NOT_EVALUATED_TRAIN}
    return self._identity(cfg)

  def _identity(self, cfg=None):
    """:attr:`program_identity` of ``self.ds`` and ``self.loss`` as they
    are now, with ``cfg`` in place of ``self.cfg`` when given (a sweep's
    group: its swept values are the program's arguments, not its code)."""
    if self.plan is not None or streamed.is_streamed(self.ds):
      return None
    ds = self.ds
    splits = [(np.shape(a), str(getattr(a, "dtype", type(a))))
              for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test)]
    return program_cache.digest((self.cfg if cfg is None else cfg, self.loss,
                                 ds.name, ds.task,
                                 ds.n_classes, splits, ds.info,
                                 self.pretrained is not None))

  @property
  def stats(self):
    """``(mean, std)`` the inputs were standardised with, or None."""
    info = self.ds.info
    return (info["mean"], info["std"]) if "mean" in info else None

  def init_state(self, place: bool = True, meanwhile=None):
    """Params and optimizer state exactly as ``train.fit`` would make them.

    One compiled call (key split, ``model.init``, the fine-tuned head,
    ``optimizer.init``), shared by every Setup whose call is the same
    program (:func:`_compiled`). Op by op, every initialiser and zero state
    compiled a program per array shape: ten of a default run's 26
    compilations, 3.5 s (issue 15). The params are bit for bit those of
    ``model.init`` run op by op (see :mod:`funcnet.initializers`).

    Laid out on the plan's mesh when there is one and ``place`` (so a
    checkpoint restores straight into that layout).

    ``meanwhile(shapes)``: called with the state's shapes (``(params,
    opt_state)`` of ``jax.ShapeDtypeStruct``s) before the program runs,
    while XLA compiles it on a thread when it compiles (the program cache
    on, a cold cache): the caller's next work, done in that time
    (``funcnet train`` begins fit's programs there, :meth:`prepare_fit`).
    """
    init = self.initializer()
    args = (self.key,
            None if self.pretrained is None else self.pretrained.params)
    # from funcnet's program cache when it is on (a warm run traces
    # nothing), else one executable per process and program text
    identity = self.program_identity
    use_cache = identity is not None and program_cache.folder() is not None
    if use_cache:
      program = program_cache.compiled(init, args, identity, quick=True,
                                       background=meanwhile is not None)
      if meanwhile is not None:
        meanwhile(program.out_info)
      state = program(*args)
    else:
      state = _compiled(init, *args)(*args)
      if meanwhile is not None:
        meanwhile(jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state))
    return state if self.plan is None or not place else self.plan.place(state)

  def prepare_fit(self, state) -> None:
    """:func:`funcnet.train.prepare` for :meth:`fit` from ``state`` (a
    ``train.TrainState``, whose arrays may be shapes): its first programs
    begun compiling on threads."""
    train.prepare(self.model, self.loss, self.optimizer, self.ds,
                  options=self._fit_options(), state=state)

  def initializer(self, optimizer=None):
    """``init(key, pretrained) -> (params, opt_state)``, the pure function
    :meth:`init_state` compiles: ``model.init`` from the first half of
    ``split(key)`` (as ``train.fit`` draws it), the fine-tuned run's body
    (``pretrained``: its params, or None), ``optimizer.init``. ``optimizer``
    replaces this Setup's (a sweep passes one built from traced values)."""
    model, dtype = self.model, self.dtype
    optimizer = optimizer or self.optimizer

    def init(key, pretrained):
      k_init, _ = jax.random.split(key)
      params = model.init(k_init, dtype)
      if pretrained is not None:  # the run's body, this init's new head
        params = finetune.replace_head(model, pretrained, params)
      return params, optimizer.init(params)
    # every draw in a few vectorised ones: the same bits, compiled faster
    return initializers.batched(init)

  def options(self) -> train.FitOptions:
    """``train.fit``'s options as the config says."""
    t = self.cfg["train"]
    return train.FitOptions(
        epochs=t["epochs"], batch_size=t["batch_size"], key=self.key,
        grads=self.gradient(), dtype=self.dtype, evaluation=self.evaluation,
        mixed=self.mixed, plan=self.plan, lr_schedule=self.schedule,
        chunk_steps=t["chunk_steps"])

  def gradient(self, source=None):
    """The step's gradient (``train.fit``'s ``grads``): ``source`` (None:
    ``train.grads``), or adversarial training's
    :class:`funcnet.train.Adversarial` with that source."""
    source = source or self.cfg["train"]["grads"]
    if self.adversarial is None:
      return source
    return self.adversarial._replace(source=source)

  def fit(self, state=None, *, callbacks=train.Callbacks(), **overrides):
    """``train.fit`` as the config says, from ``state`` (a
    ``train.TrainState`` to resume; None: a fresh one, or the fine-tuned
    run's body with a new head); ``overrides`` replace fields of
    :meth:`options` (``grads=self.gradient("manual")``, ``norms=False``)."""
    if self.pretrained is not None and state is None:
      state = train.TrainState(*self.init_state())
    return train.fit(self.model, self.loss, self.optimizer, self.ds,
                     options=self._fit_options(**overrides),
                     state=state, callbacks=callbacks)

  def _fit_options(self, **overrides) -> train.FitOptions:
    """:meth:`options` with the program identities: fit's programs are this
    Setup's model, loss and optimizer under the options, which fit adds to
    the identity."""
    return self.options()._replace(
        programs=self.program_identity,
        evaluation_programs=self.evaluation_identity, **overrides)

  def compute(self, xla="lowered"):
    """:func:`funcnet.train.compute.account` of one training step at the
    config's batch size (``xla``: its argument; the default, XLA's count
    of the lowered step, costs no compilation)."""
    from funcnet.train import compute
    t = self.cfg["train"]
    x, y = _batch_shapes(self.ds, self.dtype, t["batch_size"])
    source = t["grads"] if isinstance(t["grads"], str) else "manual"
    # adversarial training: the step with its attacks, counted and measured
    identity = self.program_identity
    # kept on this Setup too: a run counts while its programs compile
    # (experiment.loop's meanwhile) and reads it for the summary
    accounts = self.__dict__.setdefault("_accounts", {})
    if xla not in accounts:
      accounts[xla] = program_cache.remembered(
          f"compute-{xla}",
          identity and program_cache.digest((identity, source)),
          lambda: compute.account(self.model, self.loss, self.optimizer, x, y,
                                  self.gradient(source), self.dtype, xla=xla))
    return accounts[xla]

  def device(self) -> str:
    """``"cpu"``, or e.g. ``"8 x TPU v4 (mesh data=8 fsdp=1, 2 processes)"``."""
    return (self.plan.describe() if self.plan is not None
            else jax.devices()[0].device_kind)


_PROGRAMS: dict = {}


def _compiled(fn, *args):
  """``jax.jit(fn)`` compiled for ``args``, one executable per distinct program.

  jit caches by function, and each Setup makes its own ``init``: a sweep's
  variants (or a test's many Setups) would each compile the same program.
  Lowering is milliseconds, compiling a tenth of a second or more, so the
  executables are kept by a fingerprint of the lowered program's text (MLIR
  prints every constant in full). JAX's persistent cache, when on, keys its
  files the same way across processes.
  """
  # it runs once: program_cache.QUICK_TO_COMPILE's options, the same bits
  lowered = jax.jit(fn, compiler_options=program_cache.quick_options()
                    ).lower(*args)
  # The text says what is computed; the devices, where (the arguments'
  # placement, or the default device a context may have set).
  devices = [str(d) for a in jax.tree_util.tree_leaves(args)
             if isinstance(a, jax.Array) for d in a.devices()]
  # The arguments' shapes too: jit drops an unused one from the text (a
  # fine-tuned run's old head), and an executable takes only its own.
  shapes = [(np.shape(a), str(getattr(a, "dtype", type(a))))
            for a in jax.tree_util.tree_leaves(args)]
  # And the outputs' tree: Adam's and AdamW's states are the same arrays
  # (the same text) in named tuples of two classes; an executable hands
  # back the tree it was compiled for.
  key = hashlib.sha256(repr((lowered.as_text(), devices, shapes,
                             str(lowered.out_tree),
                             str(jax.config.jax_default_device))).encode()
                       ).hexdigest()
  if key not in _PROGRAMS:
    if len(_PROGRAMS) >= 64:  # a long-lived process: forget the oldest
      del _PROGRAMS[next(iter(_PROGRAMS))]
    _PROGRAMS[key] = lowered.compile()
  return _PROGRAMS[key]
