"""Compute accounting: parameters, their bytes, and FLOPs of a forward pass
and of a training step, counted from the model's layers and checked against
XLA's own count of the compiled step.

The layer count (:func:`count_forward`, :func:`count_step`) walks the program the model's
``logits`` traces to (its jaxpr: the layers as they run, for every kind, a
registered one or a user's), with the usual convention of 2 FLOPs per
multiply-add:

  dense / attention   ``dot_general``: 2 x (output elements) x (contracted
                      size), so a dense layer is ``2 m n_in n_out``, QK^T is
                      ``2 m H T^2 d_head`` and PV the same
  convolution         ``conv_general_dilated``: 2 x (output elements) x
                      (C_in / groups) x (kernel size)
  recurrences         a ``scan`` over T counts its body T times
  elementwise         1 per output element (add, mul, exp, tanh, max,
                      select, ...); a reduction 1 per input element, argmax
                      too; moves (reshape, transpose, slice, gather,
                      broadcast, convert) and comparisons 0

A training step (:func:`count_step`) is counted as the literature does
(Kaplan et al. 2020, "forward + backward = 3 x forward"), made exact where
the program says more, by following which values depend on the params:

  a product ``a @ b`` (dense, conv, QK^T, PV)   once more for each operand
      that needs a gradient: 3x inside the net (dC/dW and dC/da), 2x in the
      first layer (the input needs none), 1x on the input alone
  an elementwise op  1x when linear (add, sub, sum: the gradient passes
      through), a product 1 + its operands needing a gradient, anything
      else (tanh, exp, max, div, ...) 3x: forward, derivative, chain product
  a select           1x, 2x when a picked operand needs a gradient (its
      gradient is another select: the tiled max-pool's one-hot pick); an
      argmax 1x (an index has no gradient)
  a slice            of a value that needs a gradient: 1 add an element in
      the backward (its gradient padded back and summed into the
      operand's: a convolution's K windows, a fused product's parts)
  the loss           2x (its value and dC/dz)
  the optimizer      its own update program (``optimizer.update`` and
                     ``apply_updates``), counted once::

  F_step = sum_ops factor x F_op + 2 F_loss + F_update

The check (:func:`xla_flops`) is XLA's ``cost_analysis()["flops"]`` of the
real step (the run's gradient source and optimizer), compiled
(``jax.jit(step).lower(...).compile()``) or only lowered (milliseconds;
what every run's summary.json carries); its scans are unrolled for it
(:func:`unrolled_scans`: XLA counts a loop's body once). XLA counts
multiply-adds the same way and elementwise ops once each.
``tests/test_compute.py`` holds the two within 10% for each model kind at
tiny sizes (fast) and every shipped config at its own (slow); measured
(6 December 2026, the convolution as im2col, the tiled max-pool as argmax
and select): -8.7% (the tiny CNN) to -2.3% at tiny sizes; the MNIST-1D
CNNs, ResNet and Transformer within 1% (lowered).

An adversarial training step (``grads`` an :class:`funcnet.train.
adversarial.Adversarial`) adds its attacks (:func:`count_attack`): on the
``k = round(ratio b)`` attacked rows, ``n`` input gradients (FGSM 1, PGD
``steps``), each a forward and the backward to the input only (the walk
with only ``x`` needing a gradient: a product 2x, the params' dC/dW never
taken), plus the loss 2x, plus the attack's own arithmetic (sign, step,
projection) counted from its program::

  F_step(adversarial) = F_step + n (F_dx + 2 F_loss)[k rows] + F_update

Not counted: dropout's masks (the count traces the evaluation forward).
"""

import contextlib
import math
import os
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import losses, optimizers

# Primitives that only move or relabel data: no arithmetic.
_FREE = frozenset((
    "reshape", "broadcast_in_dim", "transpose", "slice", "dynamic_slice",
    "dynamic_update_slice", "gather", "scatter", "concatenate", "squeeze",
    "expand_dims", "convert_element_type", "copy", "copy_p", "iota", "pad",
    "rev", "stop_gradient", "device_put", "bitcast_convert_type",
    "random_bits", "random_seed", "random_wrap", "random_unwrap",
    "threefry2x32", "shift_right_logical", "shift_left", "or", "and", "not",
    "xor", "eq", "ne", "lt", "le", "gt", "ge", "sort",
    "split", "clamp", "sign", "floor", "ceil", "round", "is_finite",
    "random_fold_in", "random_split", "sharding_constraint", "optimization_barrier",
))
_REDUCE = frozenset(("reduce_sum", "reduce_max", "reduce_min", "reduce_prod",
                     "cumsum", "cumlogsumexp", "cummax", "reduce_precision",
                     "argsort", "reduce_and", "reduce_or"))


class Flops(NamedTuple):
  """FLOPs split by kind: ``matmul`` (dot_general and convolutions, 2 per
  multiply-add) and ``elementwise`` (1 per element)."""
  matmul: float
  elementwise: float

  @property
  def total(self) -> float:
    return self.matmul + self.elementwise

  def __add__(self, other):
    return Flops(self.matmul + other.matmul,
                 self.elementwise + other.elementwise)

  def scale(self, k: float) -> "Flops":
    return Flops(k * self.matmul, k * self.elementwise)


def _size(aval) -> int:
  return int(np.prod(aval.shape)) if hasattr(aval, "shape") else 1


def _dot_flops(eqn) -> float:
  """``2 x out elements x contracted size`` of one ``dot_general``."""
  (contract, _), _ = eqn.params["dimension_numbers"]
  lhs = eqn.invars[0].aval
  k = int(np.prod([lhs.shape[d] for d in contract])) if contract else 1
  return 2.0 * _size(eqn.outvars[0].aval) * k


def _conv_flops(eqn) -> float:
  """``2 x out elements x (C_in / groups) x kernel size``: the kernel's
  elements over its output features, whatever the layout."""
  rhs = eqn.invars[1].aval
  dn = eqn.params["dimension_numbers"]
  out_feat = rhs.shape[dn.rhs_spec[0]]
  return 2.0 * _size(eqn.outvars[0].aval) * _size(rhs) / out_feat


def _sub_deps(eqn, deps):
  """``[(jaxpr, times, deps of its inputs)]`` inside one equation: a scan's
  body ``length`` times (its carries as depending on the params whenever
  anything does: after one step they do), each branch of a cond (the
  caller keeps the dearest), any other inner program once."""
  p, anyd = eqn.params, any(deps)
  if eqn.primitive.name == "scan":
    nc, nk = p["num_consts"], p["num_carry"]
    d = list(deps[:nc]) + [anyd] * nk + list(deps[nc + nk:])
    return [(p["jaxpr"], p["length"], d)]
  if eqn.primitive.name == "cond":
    return [("branches", p["branches"], list(deps[1:]))]
  subs = []
  for v in p.values():
    for j in (v if isinstance(v, (tuple, list)) else (v,)):
      inner = getattr(j, "jaxpr", j)
      if hasattr(inner, "eqns"):
        d = list(deps) if len(inner.invars) == len(deps) else \
            [anyd] * len(inner.invars)
        subs.append((j, 1, d))
  return subs


# Linear operations whose derivative moves the gradient through unchanged
# (a sum's is a broadcast, an add's the identity): no backward arithmetic.
_LINEAR = frozenset(("add", "sub", "neg", "reduce_sum", "add_any", "cumsum"))


def _factor(name: str, ins: list) -> int:
  """How many times a training step does one elementwise operation of the
  forward: once on the input alone; a linear one once (see ``_LINEAR``); a
  product once more for each operand that needs a gradient; anything else
  (a nonlinearity: its forward, its derivative, the chain product) 3x."""
  if not any(ins) or name in _LINEAR:
    return 1
  if name == "mul":
    return 1 + sum(ins)
  return 3


def _walk(jaxpr, deps) -> tuple[Flops, Flops]:
  """``(forward, training step)`` FLOPs of a jaxpr whose inputs depend on
  the params as ``deps`` says (one bool an input).

  The step's factor per operation, by what needs a gradient: a product
  ``a @ b`` costs its forward once more for each operand that depends on
  the params (dC/dW for a weight, dC/da for an activation: 3x inside the
  network, 2x in the first layer, whose input needs no gradient); the
  elementwise ones by :func:`_factor`; operations on the input alone 1x.
  """
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  dep = dict(zip(jaxpr.invars, deps))
  fwd = step = Flops(0.0, 0.0)
  for eqn in jaxpr.eqns:
    ins = [bool(dep.get(a, False)) if not hasattr(a, "val") else False
           for a in eqn.invars]
    anyd, name = any(ins), eqn.primitive.name
    if name in ("dot_general", "conv_general_dilated"):
      f = _dot_flops(eqn) if name == "dot_general" else _conv_flops(eqn)
      fwd += Flops(f, 0.0)
      step += Flops(f * (1 + ins[0] + ins[1]), 0.0)
    elif name == "slice" and anyd:
      # Its gradient is padded back and summed into its operand's (the K
      # windows of a convolution's im2col, a fused product's parts): one
      # add an element.
      step += Flops(0.0, float(_size(eqn.outvars[0].aval)))
    elif name in ("argmax", "argmin"):
      # an index: one compare an input element, and no gradient
      e = float(_size(eqn.invars[0].aval))
      fwd += Flops(0.0, e)
      step += Flops(0.0, e)
    elif name == "select_n":
      # one pick an element; its gradient is another select when a picked
      # operand needs one (the predicate never does)
      e = float(_size(eqn.outvars[0].aval))
      fwd += Flops(0.0, e)
      step += Flops(0.0, e * (1 + any(ins[1:])))
    elif name in _FREE:
      pass
    else:
      subs = _sub_deps(eqn, ins)
      if not subs:  # arithmetic: one FLOP an output (a reduction: input) element
        e = float(_size(eqn.invars[0].aval) if name in _REDUCE
                  else sum(_size(v.aval) for v in eqn.outvars))
        fwd += Flops(0.0, e)
        step += Flops(0.0, e * _factor(name, ins))
      for j, times, d in subs:
        if j == "branches":
          f, t = max((_walk(b, d) for b in times), key=lambda ft: ft[1].total)
        else:
          f, t = _walk(j, d)
        fwd, step = fwd + f.scale(times), step + t.scale(times)
    for o in eqn.outvars:
      dep[o] = anyd
  return fwd, step


def count_jaxpr(jaxpr) -> Flops:
  """FLOPs of a (closed) jaxpr, by the rules of the module docstring."""
  jaxpr_ = getattr(jaxpr, "jaxpr", jaxpr)
  return _walk(jaxpr_, [False] * len(jaxpr_.invars))[0]


def count_forward(model, params, x) -> Flops:
  """FLOPs of ``model.logits(params, x)`` for the batch ``x`` (arrays or
  ``jax.ShapeDtypeStruct``; nothing is computed)."""
  return count_jaxpr(jax.make_jaxpr(model.logits)(params, x))


def param_count(params) -> tuple[int, int]:
  """``(parameters, bytes)`` of a params tree (arrays or shape structs)."""
  leaves = jax.tree_util.tree_leaves(params)
  n = sum(_size(a) for a in leaves)
  b = sum(_size(a) * jnp.dtype(a.dtype).itemsize for a in leaves)
  return int(n), int(b)


def _deps(dependent: bool, tree) -> list:
  return [dependent] * len(jax.tree_util.tree_leaves(tree))


def count_step(model, loss, optimizer, params, x, y) -> tuple[Flops, float]:
  """``(forward, step)``: FLOPs of ``model.logits`` on the batch ``x`` and
  of one training step on ``(x, y)``: the model's and the loss's operations
  by their factors (:func:`_walk`), plus the optimizer's update counted
  from its own program (``optimizer.update`` and ``apply_updates``).
  Arguments may be shape structs; nothing is computed."""
  fwd, step = _walk(jax.make_jaxpr(model.logits)(params, x),
                    _deps(True, params) + _deps(False, x))
  z = jax.eval_shape(model.logits, params, x)
  # The loss: its forward and its derivative dC/dz (2x; no chain product
  # before it, the upstream gradient being 1).
  loss_fwd, _ = _walk(
      jax.make_jaxpr(lambda z, y: losses.mean(
          loss, model.output_activation, z,
          losses.prepare_targets(loss, y, z.shape, z.dtype)))(z, y),
      _deps(True, z) + _deps(False, y))
  opt_state = jax.eval_shape(optimizer.init, params)

  def update(g, s, p):
    u, s = optimizer.update(g, s, p)
    return optimizers.apply_updates(p, u), s
  opt = count_jaxpr(jax.make_jaxpr(update)(params, opt_state, params))
  return fwd, step.total + 2 * loss_fwd.total + opt.total


def count_attack(model, loss, adv, params, x, y) -> Flops:
  """FLOPs of adversarial training's attacks in one step on the batch
  ``(x, y)`` (shape structs suffice): ``n (F_dx + 2 F_loss) + F_update``
  on its first ``round(adv.ratio b)`` rows (module docstring). The attack
  starts at ``x`` (the random start's draw is 0 FLOPs, its projection is
  counted in ``F_update`` once)."""
  from funcnet.train import adversarial
  k = adversarial.n_adversarial(int(x.shape[0]), adv.ratio)
  if k == 0:
    return Flops(0.0, 0.0)
  xk = jax.ShapeDtypeStruct((k, *x.shape[1:]), x.dtype)
  yk = jax.ShapeDtypeStruct((k, *y.shape[1:]), y.dtype)
  _, dx = _walk(jax.make_jaxpr(model.logits)(params, xk),
                _deps(False, params) + _deps(True, xk))
  z = jax.eval_shape(model.logits, params, xk)
  loss_fwd = count_jaxpr(jax.make_jaxpr(lambda z, y: losses.mean(
      loss, model.output_activation, z,
      losses.prepare_targets(loss, y, z.shape, z.dtype)))(z, yk))
  n = 1 if adv.method == "fgsm" else int(adv.steps)

  def free_gradient(params, u, t, key=None):  # the update's own arithmetic
    del params, t, key
    return 0.0, u
  update = count_jaxpr(jax.make_jaxpr(lambda u, t: adversarial.examples(
      adv, free_gradient, params, u, t, None))(xk, yk))
  return (dx + loss_fwd.scale(2)).scale(n) + update


def xla_flops(compiled) -> Optional[float]:
  """The ``flops`` entry of XLA's cost analysis of a compiled (or lowered)
  program: a
  dict, or (older JAX) a list of one dict per computation, summed; None
  where the backend gives none."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # noqa: BLE001 - some backends raise instead of None
    return None
  if cost is None:
    return None
  if isinstance(cost, dict):
    cost = [cost]
  flops = [c.get("flops") for c in cost if c and c.get("flops") is not None]
  return float(sum(flops)) if flops else None


class Compute(NamedTuple):
  """A model's compute at batch ``batch``: see :func:`account`."""
  params: int
  param_bytes: int
  batch: int
  forward: Flops                  # of the whole batch
  train_step_flops: float         # counted from the layers
  xla_train_step_flops: Optional[float]

  @property
  def forward_flops_per_example(self) -> float:
    return self.forward.total / self.batch

  def record(self, steps: int, train_seconds: Optional[float] = None) -> dict:
    """summary.json's ``compute`` for a run of ``steps`` steps that trained
    for ``train_seconds`` (None: no achieved FLOP/s)."""
    total = self.train_step_flops * steps
    return {
        "params": self.params, "param_bytes": self.param_bytes,
        "forward_flops_per_example": self.forward_flops_per_example,
        "train_step_flops": self.train_step_flops,
        "xla_train_step_flops": self.xla_train_step_flops,
        "batch_size": self.batch,
        "total_train_flops": total,
        "achieved_flops_per_s": (total / train_seconds
                                 if train_seconds and steps else None),
    }


def make_step(model, loss, optimizer, grads="manual"):
  """``step(params, opt_state, x, y) -> (params, opt_state, C)``: one plain
  training step (gradient, update), the program XLA's count is taken of."""
  from funcnet.train import step as step_lib
  vg = step_lib.gradient_fn(model, loss, grads)

  def step(params, opt_state, x, y):
    c, g = vg(params, x, y)
    updates, opt_state = optimizer.update(g, opt_state, params)
    return optimizers.apply_updates(params, updates), opt_state, c
  return step


@contextlib.contextmanager
def unrolled_scans():
  """``jax.lax.scan`` unrolled, and ``jax.lax.fori_loop`` with Python-int
  bounds (PGD's steps) a Python loop, while the step is traced for XLA's
  count: XLA's cost analysis counts a while loop's body once, whatever its
  trip count, so a recurrence over T steps would read as one step.
  Unrolled, the same arithmetic is counted T times (the program is only
  lowered and compiled for its count, never run)."""
  scan, fori_loop = jax.lax.scan, jax.lax.fori_loop

  def unrolled(*args, **kw):
    kw["unroll"] = True
    return scan(*args, **kw)

  def unrolled_fori(lower, upper, body, init, **kw):
    if not (isinstance(lower, int) and isinstance(upper, int)):
      return fori_loop(lower, upper, body, init, **kw)
    for i in range(lower, upper):
      init = body(i, init)
    return init
  jax.lax.scan, jax.lax.fori_loop = unrolled, unrolled_fori
  try:
    yield
  finally:
    jax.lax.scan, jax.lax.fori_loop = scan, fori_loop


def account(model, loss, optimizer, x, y, grads="manual", dtype=jnp.float32,
            xla: Optional[str] = "compiled") -> Compute:
  """Counts one training step of ``model`` on the batch ``(x, y)`` (arrays
  or shape structs) from its layers (an adversarial step's attacks too:
  ``grads`` an ``Adversarial``), and takes XLA's count of the real
  step: ``xla="compiled"`` of the optimised program (what runs; a
  compilation, seconds), ``"lowered"`` of the program before XLA's passes
  (``Lowered.cost_analysis()``, milliseconds: fusion and simplification
  may remove a few percent), None not at all. ``dtype``: the params'.
  Nothing runs."""
  if xla not in ("compiled", "lowered", None):
    raise ValueError(f"xla={xla!r}: expected 'compiled', 'lowered' or None")
  from funcnet.train import adversarial
  # the key's shape only: jax.random.key(0) itself compiles two programs
  params = jax.eval_shape(lambda k: model.init(k, dtype),
                          jax.eval_shape(jax.random.key, 0))
  n, nbytes = param_count(params)
  fwd, counted = count_step(model, loss, optimizer, params, x, y)
  if isinstance(grads, adversarial.Adversarial):
    counted += count_attack(model, loss, grads, params, x, y).total
  measured = None
  if xla:
    step = make_step(model, loss, optimizer, grads)
    opt_state = jax.eval_shape(optimizer.init, params)
    with unrolled_scans():
      lowered = jax.jit(step).lower(params, opt_state, x, y)
    measured = xla_flops(lowered.compile() if xla == "compiled" else lowered)
  return Compute(n, nbytes, int(x.shape[0]), fwd, counted, measured)


def agreement(c: Compute) -> Optional[float]:
  """``counted / XLA - 1``, or None without XLA's count."""
  if not c.xla_train_step_flops:
    return None
  return c.train_step_flops / c.xla_train_step_flops - 1.0


def human(flops: float) -> str:
  """``1.23 GFLOP`` style."""
  if flops is None or not math.isfinite(flops):
    return "n/a"
  for unit, k in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
    if abs(flops) >= k:
      return f"{flops / k:.3g} {unit}FLOP"
  return f"{flops:.3g} FLOP"


RAPL = "/sys/class/powercap"


def rapl_joules(root: str = RAPL) -> Optional[tuple]:
  """The machine's energy counters now: ``((joules, wrap joules), ...)``
  of each package domain ``intel-rapl:N`` (Linux RAPL, ``energy_uj`` and
  ``max_energy_range_uj``), or None where none is readable (another OS, a
  VM, a counter readable by root only)."""
  try:
    names = sorted(n for n in os.listdir(root)
                   if n.startswith("intel-rapl:") and n.count(":") == 1)
    out = []
    for n in names:
      with open(os.path.join(root, n, "energy_uj")) as f:
        e = int(f.read())
      with open(os.path.join(root, n, "max_energy_range_uj")) as f:
        wrap = int(f.read())
      out.append((e * 1e-6, wrap * 1e-6))
  except (OSError, ValueError):
    return None
  return tuple(out) or None


def rapl_used(start, end) -> Optional[float]:
  """Joules between two :func:`rapl_joules` readings, each counter's wrap
  at ``max_energy_range_uj`` undone (one wrap at most: a package's counter
  wraps after hours at full power); None without both readings."""
  if not start or not end or len(start) != len(end):
    return None
  return sum((e - s) % w if w > 0 else e - s
             for (s, w), (e, _) in zip(start, end))


def energy(record: dict, seconds: float, rapl=None,
           power_watts: float = 0.0) -> dict:
  """``record`` (a summary's ``compute``) with its energy: ``energy_j`` the
  RAPL counters' joules over the ``seconds`` of training (``rapl``: the
  start and end readings), where readable; else, with ``power_watts`` > 0
  (the user's figure, ``run.power_watts``), ``energy_estimate_j`` =
  watts x seconds with its assumption spelled out; neither otherwise."""
  used = rapl_used(*rapl) if rapl else None
  if used is not None:
    record["energy_j"] = used
    record["energy_source"] = "Linux RAPL package counters"
  elif power_watts and power_watts > 0:
    record["energy_estimate_j"] = power_watts * seconds
    record["energy_assumption"] = (f"{power_watts:g} W (run.power_watts) x "
                                   f"{seconds:.1f} s of training")
  return record


def line(record: dict) -> str:
  """One line of a summary's ``compute``: ``params 73.4k (294 kB), forward
  1.2 MFLOP/example, step 277 MFLOP, run 1.1 TFLOP, 3.2 GFLOP/s``."""
  parts = [f"params {record['params']:,} ({record['param_bytes']:,} bytes)",
           f"forward {human(record['forward_flops_per_example'])}/example",
           f"step {human(record['train_step_flops'])}",
           f"run {human(record['total_train_flops'])}"]
  if record.get("achieved_flops_per_s"):
    parts.append(f"{human(record['achieved_flops_per_s'])}/s")
  if record.get("energy_j") is not None:
    parts.append(f"energy {record['energy_j']:.4g} J (RAPL)")
  elif record.get("energy_estimate_j") is not None:
    parts.append(f"energy ~{record['energy_estimate_j']:.4g} J "
                 f"(assumed {record['energy_assumption']})")
  return ", ".join(parts)
