"""Knowledge distillation (Hinton et al. 2015): ``[distill]`` made into a
loss and targets.

  load_teacher(cfg, ds, model)   the teacher run, checked against the student
  teacher_logits(teacher, ds)    its logits on the student's training inputs
  distill(cfg, ds, teacher)      (loss, dataset): the distillation loss and the
                                 data with the teacher's logits in its targets

The teacher runs once, before training: its logits ``(m, n)`` for every
training input are appended to the labels, ``y_train (m, n + 1)`` (the
label last, as a float), so a shuffled batch carries its own soft targets
and the compiled epoch stays one call (:func:`funcnet.losses.distillation`
reads them). The test split keeps its labels: its loss is the plain
cross-entropy, comparable with a student trained from labels alone.

The teacher reads the inputs as it was trained to: the student's
standardised inputs are taken back to raw units with the student's
statistics and standardised again with the teacher's own (``stats.npz``),
unless the two are equal.

The run is read as :func:`funcnet.load_run` reads it
(:func:`funcnet.run.rundir.load_trained`; ``load_run`` itself sits above
:mod:`funcnet.experiment.setup`, which calls this).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import losses, tasks
from funcnet.errors import ConfigError, FuncnetError

_WHAT = "config key 'distill.teacher' ="

# The shipped configs (a teacher run named after one is trained from it).
_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "configs")

# Teacher inputs per compiled call: bounded memory for a large split.
_CHUNK = 4096


def enabled(cfg) -> bool:
  """Whether the config distils (``distill.teacher`` names a run)."""
  return bool(cfg["distill"]["teacher"])


def load_teacher(cfg, ds, model):
  """The run ``distill.teacher`` names (a ``rundir.Trained``), checked.

  Raises:
    ConfigError: no such run folder (or no checkpoint), data that are not
      classification, ``train.loss`` other than cross-entropy, or a teacher
      whose input shape or output width differs from the student's.
  """
  from funcnet.run import rundir
  path = cfg["distill"]["teacher"]
  if ds.task != tasks.CLASSIFICATION.name:
    raise ConfigError(
        f"config key 'distill.teacher' needs classification data; "
        f"{ds.name!r} is {ds.task} data; expected distill.teacher = \"\"")
  if cfg["train"]["loss"] != "cross_entropy":
    raise ConfigError(
        f"config key 'train.loss' = {cfg['train']['loss']!r} with "
        "distill.teacher: distillation replaces the loss; expected "
        "train.loss = 'cross_entropy'")
  if not os.path.isdir(path):
    raise ConfigError(f"{_WHAT} {path!r}: no such run folder; expected "
                      f"a trained run: {_how_to_train(path)}")
  try:
    teacher = rundir.load_trained(path, _WHAT)
  except FuncnetError as e:
    raise ConfigError(str(e).splitlines()[0]) from None
  t_in, s_in = tuple(teacher.model.in_shape), tuple(model.in_shape)
  if t_in != s_in:
    raise ConfigError(f"{_WHAT} {path!r}: the teacher takes inputs of shape "
                      f"{t_in}, the student {s_in}; expected the same data")
  if teacher.model.n_out != model.n_out:
    raise ConfigError(
        f"{_WHAT} {path!r}: the teacher has {teacher.model.n_out} outputs, "
        f"the student {model.n_out}; expected the same classes")
  return teacher


def _how_to_train(path: str) -> str:
  """The command that makes the teacher run ``path``: with the shipped
  config of its name (``runs/mnist1d_cnn``: ``configs/mnist1d_cnn.toml``)
  when there is one."""
  config = os.path.join(_CONFIGS, os.path.basename(os.path.normpath(path))
                        + ".toml")
  if os.path.isfile(config):
    rel = os.path.relpath(config)
    return (f"funcnet train --config {config if rel.startswith('..') else rel}"
            f" --out {path}")
  return f"funcnet train --config TEACHER.toml --out {path}"


def _stats(ds):
  info = ds.info
  if "mean" not in info:
    return None
  return tuple(np.asarray(a, np.float64) for a in (info["mean"], info["std"]))


def teacher_inputs(x, student_stats, teacher_stats):
  """The student's inputs ``x (m, *in_shape)`` as the teacher was trained
  on them: ``raw = x std_s + mean_s`` (or ``x`` when the student did not
  standardise), then ``(raw - mean_t) / std_t`` (or raw when the teacher
  did not); ``x`` itself when both used the same statistics."""
  x = np.asarray(x)
  if not np.issubdtype(x.dtype, np.floating):  # ids, tokens: as they are
    return x
  same = (student_stats is None) == (teacher_stats is None) and (
      student_stats is None or all(
          np.array_equal(np.asarray(a, np.float64), b)
          for a, b in zip(teacher_stats, student_stats)))
  if same:
    return x
  raw = np.asarray(x, np.float64)
  if student_stats is not None:
    raw = raw * student_stats[1] + student_stats[0]
  if teacher_stats is not None:
    mean, std = (np.asarray(a, np.float64) for a in teacher_stats)
    raw = (raw - mean) / std
  return raw.astype(x.dtype)


def teacher_logits(teacher, ds) -> np.ndarray:
  """The teacher's logits ``(m, n)`` (float32 or its dtype) for the
  student's training inputs, in evaluation mode (no dropout), computed in
  chunks of one compiled program."""
  x = teacher_inputs(ds.x_train, _stats(ds), teacher.stats)
  dtype = jnp.dtype(teacher.cfg["train"]["dtype"])
  if np.issubdtype(x.dtype, np.floating):
    x = x.astype(dtype)
  logits = jax.jit(teacher.model.logits)
  out = [np.asarray(logits(teacher.params, x[i:i + _CHUNK]))
         for i in range(0, len(x), _CHUNK)]
  return np.concatenate(out)


def distill(cfg, ds, teacher):
  """``(loss, ds)``: :func:`funcnet.losses.distillation` at the config's
  temperature and alpha, and ``ds`` with ``y_train`` replaced by the
  teacher's logits and the label, ``(m, n + 1)`` float32."""
  d = cfg["distill"]
  z_t = teacher_logits(teacher, ds)
  labels = np.asarray(ds.y_train)
  y = np.concatenate([z_t.astype(np.float32),
                      labels[..., None].astype(np.float32)], axis=-1)
  loss = losses.distillation(d["temperature"], d["alpha"])
  return loss, ds._replace(y_train=y)
