"""Check any hand-written derivative against JAX and finite differences.

A checker, not part of the hand-written path: it calls ``jax.vjp``,
``jax.jvp`` and ``jax.grad`` to get the independent references.

  check_backward(forward, backward, *inputs)   a layer's (output, cache) /
                                               backward(cache, dy) pair
  check_model_backward(model, loss, params, x, y)   a Model's ``backward``
                                               (:func:`funcnet.gradcheck.compare`)
  check_jvp(f, jvp, *inputs)                   a forward-mode ``jvp``
  check_hvp(f, hvp, x)                         a Hessian-vector product

Everything runs in float64 (floating inputs are cast; integer inputs such as
embedding ids stay integers and get no gradient). For ``check_backward``,
with a random cotangent ``c`` of the output ``y = forward(*inputs)[0]``:

  manual_i = backward(cache, c)[i]            the hand-written dC/dx_i
  vjp_i    = jax.vjp(forward(...)[0])(c)[i]   every entry, ``n_cotangents`` c's
  fd_k     = (L(x + h e_k) - L(x - h e_k)) / 2h,   L(x) = <c, forward(x)[0]>

finite differences on every entry of a small input, a seeded sample of
``MAX_ENTRIES`` for a bigger one. An entry whose ``x ± h e_k`` straddles a
kink (relu at 0, a max changing winner) is skipped and counted: exactly when
``kinks(*inputs)`` returns the kinked pre-activations (one changes sign),
else when the one-sided differences disagree, ``|fwd - bwd| > KINK_TOL *
max(|fd|, 1)`` (a smooth L gives ``|fwd - bwd| ~ h |L''|``).

An entry passes when ``|manual - ref| <= atol + rtol * |ref|`` (numpy's
``allclose``); against finite differences, whose own error is ``O(h^2) +
O(eps_mach |L| / h)``, with ``FD_RTOL`` and ``FD_ATOL * max(1, |L|)``. A
report with nothing checked (no floating input, or every difference
skipped) never passes.
"""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

MAX_ENTRIES = 30     # finite-difference entries per argument (a seeded sample)
KINK_TOL = 1e-4      # one-sided differences further apart than this: a kink
FD_RTOL = 1e-5       # manual vs finite differences
FD_ATOL = 1e-8
VMAP_ENTRIES = 2 ** 20  # up to this many shifted input entries at once


class Row(NamedTuple):
  """One argument (one floating leaf of it)'s errors; ``fd_*`` None when not
  compared with finite differences."""
  name: str
  shape: tuple
  max_abs: float
  max_rel: float
  worst: tuple         # the index of the entry furthest over its tolerance
  ok_ref: bool
  fd_abs: Optional[float]
  fd_rel: Optional[float]
  fd_checked: int
  fd_skipped: int
  ok_fd: bool


def _fmt(v):
  return "-" if v is None else f"{v:.1e}"


class Report(NamedTuple):
  """Per-argument errors of a hand-written derivative; ``ok()`` the verdict,
  ``str(report)`` an aligned table, ``raise_if_wrong()`` a pytest assert."""
  rows: list
  reference: str = "jax.vjp"
  rtol: float = 1e-7
  atol: float = 1e-9
  fd: bool = True

  def failures(self) -> list:
    """One line per failed comparison, and one when nothing was checked."""
    bad = []
    if not any(int(np.prod(r.shape)) for r in self.rows):
      bad.append("nothing was checked (no floating input with entries)")
    for r in self.rows:
      if not r.ok_ref:
        bad.append(f"{r.name}: manual vs {self.reference} max abs "
                   f"{r.max_abs:.1e}, rel {r.max_rel:.1e} at {r.worst}")
      if r.fd_abs is not None and not r.ok_fd:
        bad.append(f"{r.name}: manual vs finite differences max abs "
                   f"{r.fd_abs:.1e}, rel {r.fd_rel:.1e}")
      if r.fd_abs is not None and r.fd_checked == 0 and np.prod(r.shape):
        bad.append(f"{r.name}: no finite-difference entry checked "
                   f"({r.fd_skipped} straddled a kink)")
    return bad

  def ok(self) -> bool:
    return not self.failures()

  def raise_if_wrong(self) -> "Report":
    """Raises ``AssertionError(str(self))`` unless ``ok()``; returns self."""
    if not self.ok():
      raise AssertionError("\n" + str(self))
    return self

  def __str__(self):
    head = ["arg", "shape", "max abs", "max rel", "worst at",
            "fd abs", "fd rel", "fd n", "skipped"]
    body = [[r.name, "x".join(map(str, r.shape)) or "()", _fmt(r.max_abs),
             _fmt(r.max_rel), str(tuple(int(i) for i in r.worst)),
             _fmt(r.fd_abs), _fmt(r.fd_rel), str(r.fd_checked),
             str(r.fd_skipped)] for r in self.rows]
    widths = [max(len(row[j]) for row in [head] + body) for j in range(len(head))]
    line = lambda row: "  ".join(  # noqa: E731
        c.ljust(w) if j == 0 else c.rjust(w)
        for j, (c, w) in enumerate(zip(row, widths)))
    lines = [f"manual vs {self.reference} (max abs, max rel, worst entry)"
             + (" and vs central finite differences" if self.fd else ""),
             line(head), "-" * len(line(head))] + [line(b) for b in body]
    skipped = sum(r.fd_skipped for r in self.rows)
    if skipped:
      lines.append(f"{skipped} finite-difference entries skipped: x ± h "
                   "straddled a kink")
    tol = f"(rtol {self.rtol:.0e}, atol {self.atol:.0e})"
    lines.append(("OK " + tol) if self.ok()
                 else "FAILED " + tol + ":\n  " + "\n  ".join(self.failures()))
    return "\n".join(lines)


def _to64(tree):
  """Floating leaves as float64 numpy arrays (numpy, not jnp: an eager cast
  compiles a program per shape), other leaves as they are."""
  def cast(v):
    return np.asarray(v, np.float64) if _is_float(v) else v
  return jax.tree_util.tree_map(cast, tree)


def _is_float(v) -> bool:
  return jnp.issubdtype(jnp.asarray(v).dtype, jnp.floating)


def _name(i, path) -> str:
  """``arg 1``, or ``arg 0 W`` for a leaf of a dict/list input."""
  words = [f"arg {i}"]
  for k in path:
    words.append(str(getattr(k, "key", getattr(k, "idx", k))))
  return " ".join(words)


def _compare(manual, ref, rtol, atol):
  """``(max_abs, max_rel, worst index, ok)`` of ``manual`` against ``ref``."""
  m, r = np.asarray(manual, np.float64), np.asarray(ref, np.float64)
  if m.shape != r.shape:
    raise AssertionError(f"a gradient has shape {m.shape}; its input has "
                         f"{r.shape}")
  if m.size == 0:
    return 0.0, 0.0, (), True
  err = np.abs(m - r)
  rel = np.where(err > atol, err / np.maximum(np.abs(r), 1e-300), 0.0)
  over = err / (atol + rtol * np.abs(r))
  worst = tuple(int(i) for i in np.unravel_index(
      int(np.nanargmax(np.nan_to_num(over, nan=np.inf))), m.shape))
  ok = bool(np.all(err <= atol + rtol * np.abs(r)))
  return float(np.max(err)), float(np.max(rel)), worst, ok


class _Split(NamedTuple):
  """The inputs' floating leaves as one flat vector, and how to rebuild them."""
  flat: jnp.ndarray
  rebuild: object   # flat -> the inputs tuple
  names: list
  shapes: list
  sizes: list


def _split(inputs) -> _Split:
  leaves = [(i, p, v) for i, x in enumerate(inputs)
            for p, v in jax.tree_util.tree_flatten_with_path(x)[0]]
  kept = [(i, p, v) for i, p, v in leaves if _is_float(v)]
  shapes = [tuple(np.shape(v)) for _, _, v in kept]
  sizes = [int(np.size(v)) for _, _, v in kept]
  flat = np.concatenate([np.ravel(v) for _, _, v in kept] or [np.zeros(0)])
  treedef = jax.tree_util.tree_structure(tuple(inputs))

  def rebuild(theta):
    parts, start = [], 0
    for shape, size in zip(shapes, sizes):
      parts.append(jnp.reshape(theta[start:start + size], shape))
      start += size
    it = iter(parts)
    return jax.tree_util.tree_unflatten(
        treedef, [next(it) if _is_float(v) else v for _, _, v in leaves])
  return _Split(flat, rebuild, [_name(i, p) for i, p, _ in kept], shapes, sizes)


def _float_leaves(grads, inputs, n):
  """The gradients of the floating leaves, in ``_split``'s order."""
  if not isinstance(grads, (tuple, list)) or len(grads) != n:
    raise AssertionError(f"backward must return a tuple of {n} gradients, one "
                         f"per input; it returned {type(grads).__name__}")
  out = []
  for g, x in zip(grads, inputs):
    for gv, xv in zip(jax.tree_util.tree_leaves(g, is_leaf=lambda v: v is None)
                      if g is not None else [None] * len(jax.tree_util.tree_leaves(x)),
                      jax.tree_util.tree_leaves(x)):
      if _is_float(xv):
        if gv is None:
          raise AssertionError("backward returned None for a floating input")
        out.append(gv)
  return out


def _entries(sizes, seed):
  """Flat indices per leaf: all of a small one, a seeded sample of a big one."""
  rng = np.random.default_rng(seed)
  return [np.arange(s) if s <= MAX_ENTRIES
          else np.sort(rng.choice(s, MAX_ENTRIES, replace=False)) for s in sizes]


def _fd_indices(sizes, seed):
  """The chosen entries per leaf, and all of them as one flat index vector."""
  chosen = _entries(sizes, seed)
  offsets = np.cumsum([0] + list(sizes[:-1]))
  idx = np.concatenate([off + c for off, c in zip(offsets, chosen)] or
                       [np.zeros(0, np.int64)]).astype(np.int32)
  return chosen, idx


def _fd_values(loss, kinks, flat, idx, eps):
  """``L(x ± h e_k)`` for every ``k`` in ``idx``, ``L(x)``, and the kink
  signs on both sides: traced inside :func:`check_backward`'s one program.
  Small problems evaluate every shifted point at once (``vmap``: quicker to
  compile); big ones one after another (``lax.map``), so memory stays one
  copy of the inputs."""
  def probe(i, h):
    theta = flat.at[i].add(h)
    k = kinks(theta) if kinks is not None else jnp.zeros((0,))
    return loss(theta), jnp.sign(jnp.ravel(k))
  both = jnp.concatenate([idx, idx])
  steps = jnp.concatenate([jnp.full(idx.shape, eps), jnp.full(idx.shape, -eps)])
  if flat.size * both.size <= VMAP_ENTRIES:
    c, s = jax.vmap(probe)(both, steps)
  else:
    c, s = jax.lax.map(lambda a: probe(*a), (both, steps))
  n = idx.shape[0]
  return (c[:n], s[:n]), (c[n:], s[n:]), loss(flat)


def _fd_runs(chosen, plus, minus, c0, eps, exact):
  """Per leaf: its sampled flat indices, the central differences there, and
  a kept mask (False: the entry straddles a kink)."""
  (c_plus, s_plus), (c_minus, s_minus) = plus, minus
  c_plus, c_minus, c0 = np.asarray(c_plus), np.asarray(c_minus), float(c0)
  fd = (c_plus - c_minus) / (2 * eps)
  if exact:
    keep = np.asarray(np.all(np.asarray(s_plus) == np.asarray(s_minus), axis=1))
  else:
    fwd, bwd = (c_plus - c0) / eps, (c0 - c_minus) / eps
    keep = np.abs(fwd - bwd) <= KINK_TOL * np.maximum(np.abs(fd), 1.0)
  out, start = [], 0
  for c in chosen:
    out.append((c, fd[start:start + len(c)], keep[start:start + len(c)]))
    start += len(c)
  return out


def _rows(split, manual_runs, ref_runs, fd_runs, c0, rtol, atol):
  """One Row per floating leaf from the runs' manual/reference leaves."""
  rows = []
  fd_atol = FD_ATOL * max(1.0, abs(c0))
  for j, (name, shape) in enumerate(zip(split.names, split.shapes)):
    for m in manual_runs[:1]:
      if np.shape(m[j]) != shape:
        raise AssertionError(f"{name}: backward's gradient has shape "
                             f"{np.shape(m[j])}; the input has {shape}")
    stats = [_compare(m[j], r[j], rtol, atol) for m, r in zip(manual_runs, ref_runs)]
    worst_run = max(range(len(stats)), key=lambda k: (not stats[k][3], stats[k][0]))
    max_abs = max(s[0] for s in stats)
    max_rel = max(s[1] for s in stats)
    fd_abs = fd_rel = None
    checked = skipped = 0
    ok_fd = True
    if fd_runs:
      chosen, fd, keep = fd_runs[j]
      m = np.asarray(manual_runs[0][j], np.float64).ravel()[chosen][keep]
      fd_abs, fd_rel, _, ok_fd = _compare(m, fd[keep], FD_RTOL, fd_atol)
      checked, skipped = int(keep.sum()), int((~keep).sum())
    rows.append(Row(name, shape, max_abs, max_rel, stats[worst_run][2],
                    all(s[3] for s in stats), fd_abs, fd_rel, checked,
                    skipped, ok_fd))
  return rows


def check_backward(forward, backward, *inputs, seed: int = 0,
                   n_cotangents: int = 3, fd: bool = True, eps: float = 1e-6,
                   rtol: float = 1e-7, atol: float = 1e-9,
                   kinks=None) -> Report:
  """Checks a hand-written backward against ``jax.vjp`` and finite differences.

  Args:
    forward: ``forward(*inputs) -> (y, cache)``; ``y`` an array or pytree.
    backward: ``backward(cache, dy) -> (dx_0, ..., dx_{n-1})``, one gradient
      per input in order, each shaped like its input (a pytree for a params
      dict; None for an integer input).
    *inputs: arrays or pytrees; floating leaves are cast to float64.
    seed: draws the cotangents ``dy ~ N(0, 1)`` and the sampled entries.
    n_cotangents: cotangents compared with ``jax.vjp`` (the first also by
      finite differences).
    fd: also compare with central finite differences.
    eps: the finite-difference step ``h``.
    rtol, atol: per-entry tolerance against ``jax.vjp``.
    kinks: optional ``(*inputs) -> array`` of kinked pre-activations (e.g.
      the ``z`` before a relu), for the exact kink test.

  Returns:
    A :class:`Report`, one row per floating leaf of each input.

  Example::

    def fwd(x, W): return x @ W, (x, W)
    def bwd(cache, dy): x, W = cache; return dy @ W.T, x.T @ dy
    check_backward(fwd, bwd, x, W).raise_if_wrong()
  """
  with jax.enable_x64(True):
    inputs = tuple(_to64(inputs))
    split = _split(inputs)
    if split.flat.size == 0:
      return Report([], "jax.vjp", rtol, atol, fd)
    y = lambda theta: forward(*split.rebuild(theta))[0]  # noqa: E731
    out_shapes = jax.eval_shape(y, split.flat)
    leaves, out_def = jax.tree_util.tree_flatten(out_shapes)
    rng = np.random.default_rng(seed)
    cts = [jax.tree_util.tree_unflatten(
        out_def, [rng.standard_normal(o.shape) for o in leaves])
           for _ in range(n_cotangents)]
    chosen, idx = _fd_indices(split.sizes, seed) if fd else ([], np.zeros(0))

    # One compiled program: the hand-written backward for every cotangent,
    # jax.vjp's, and the finite differences of <c_0, y(x)>.
    @jax.jit
    def run(flat, cts, idx):
      xs = split.rebuild(flat)
      _, cache = forward(*xs)
      manual = [_float_leaves(backward(cache, ct), xs, len(xs)) for ct in cts]
      _, vjp = jax.vjp(y, flat)
      ref = [vjp(ct)[0] for ct in cts]
      if not fd:
        return manual, ref, None

      def loss(theta):
        return sum(jnp.vdot(c, o) for c, o in zip(
            jax.tree_util.tree_leaves(cts[0]), jax.tree_util.tree_leaves(y(theta))))
      kink_of = None if kinks is None else (
          lambda theta: kinks(*split.rebuild(theta)))
      return manual, ref, _fd_values(loss, kink_of, flat, idx, eps)

    manual_runs, refs, fd_out = run(split.flat, cts, idx)
    ref_runs = [_unflat_like(split, r) for r in refs]
    fd_runs, c0 = [], 0.0
    if fd:
      c0 = float(fd_out[2])
      fd_runs = _fd_runs(chosen, *fd_out, eps, kinks is not None)
    return Report(_rows(split, manual_runs, ref_runs, fd_runs, c0, rtol, atol),
                  "jax.vjp", rtol, atol, fd)


def _unflat_like(split, flat):
  """A flat vector as the floating leaves' arrays, in ``_split``'s order."""
  out, start = [], 0
  for shape, size in zip(split.shapes, split.sizes):
    out.append(np.asarray(flat[start:start + size]).reshape(shape))
    start += size
  return out


def check_model_backward(model, loss, params, x, y, **kwargs):
  """Checks a :class:`funcnet.Model`'s hand-written ``backward`` against
  ``jax.grad`` and finite differences, per parameter leaf.

  A thin entry point to :func:`funcnet.gradcheck.compare` (the same check
  ``funcnet gradcheck`` prints; ``kwargs`` are its ``eps``, ``max_entries``,
  ``key``, ``kink_tol``), refusing a model without a backward. The returned
  report has ``ok()``, ``str()`` and ``raise_if_wrong()``.
  """
  from funcnet import gradcheck
  if model.backward is None:
    raise ValueError(f"this {model.kind} model has no hand-written backward "
                     "(Model.backward is None): nothing to check")
  return gradcheck.compare(model, loss, params, x, y, **kwargs)


def _tangents(tree, rng):
  """``N(0, 1)`` entries shaped like ``tree``'s leaves (float0 zeros for an
  integer leaf, as jax.jvp wants)."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  return jax.tree_util.tree_unflatten(treedef, [
      rng.standard_normal(np.shape(v)) if _is_float(v)
      else np.zeros(np.shape(v), jax.dtypes.float0) for v in leaves])


def _named_leaves(tree, prefix):
  return [(" ".join([prefix] + [str(getattr(k, "key", getattr(k, "idx", k)))
                                for k in p]), v)
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _second_order(pairs, fd_pairs, reference, rtol, atol) -> Report:
  """Rows from ``[(name, manual, ref)]`` runs and ``[(name, manual, fd)]``."""
  rows = []
  names = list(dict.fromkeys(n for n, _, _ in pairs))
  for name in names:
    stats = [_compare(m, r, rtol, atol) for n, m, r in pairs if n == name]
    shape = np.shape([m for n, m, _ in pairs if n == name][0])
    fds = [_compare(m, f, FD_RTOL, FD_ATOL * max(1.0, float(np.max(np.abs(f)))))
           for n, m, f in fd_pairs if n == name]
    worst = max(stats, key=lambda s: (not s[3], s[0]))
    rows.append(Row(name, shape, max(s[0] for s in stats),
                    max(s[1] for s in stats), worst[2], all(s[3] for s in stats),
                    fds[0][0] if fds else None, fds[0][1] if fds else None,
                    int(np.prod(shape)) if fds else 0, 0,
                    all(f[3] for f in fds)))
  return Report(rows, reference, rtol, atol, bool(fd_pairs))


def check_jvp(f, jvp, *inputs, seed: int = 0, n_tangents: int = 3,
              eps: float = 1e-6, rtol: float = 1e-7, atol: float = 1e-9) -> Report:
  """Checks a hand-written forward mode against ``jax.jvp``.

  ``jvp(inputs, tangents) -> (f(*inputs), J t)`` with ``inputs`` and
  ``tangents`` tuples (tangents shaped like the inputs). For ``n_tangents``
  random ``t ~ N(0, 1)``, compares the primal output and the tangent output
  with ``jax.jvp(f, inputs, t)``; the first tangent also with the central
  difference ``(f(x + h t) - f(x - h t)) / 2h`` (every entry).
  """
  with jax.enable_x64(True):
    inputs = tuple(_to64(inputs))
    rng = np.random.default_rng(seed)
    ts = [tuple(_tangents(inputs, rng)) for _ in range(n_tangents)]

    @jax.jit  # one program; the inputs and tangents are its constants
    def run():
      runs = [(jvp(inputs, t), jax.jvp(f, inputs, t)) for t in ts]
      shift = lambda s: tuple(jax.tree_util.tree_map(  # noqa: E731
          lambda x, dx: x + s * dx if _is_float(x) else x, inputs, ts[0]))
      fd_t = jax.tree_util.tree_map(lambda a, b: (a - b) / (2 * eps),
                                    f(*shift(eps)), f(*shift(-eps)))
      return runs, fd_t

    runs, fd_t = run()
    pairs, fd_pairs = [], []
    for i, ((out, t_out), (ref_out, ref_t)) in enumerate(runs):
      for what, m, r in (("out", out, ref_out), ("tangent", t_out, ref_t)):
        pairs += [(n, a, b) for (n, a), (_, b) in
                  zip(_named_leaves(m, what), _named_leaves(r, what))]
      if i == 0:
        fd_pairs += [(n, a, b) for (n, a), (_, b) in
                     zip(_named_leaves(t_out, "tangent"),
                         _named_leaves(fd_t, "tangent"))]
    return _second_order(pairs, fd_pairs, "jax.jvp", rtol, atol)


def check_hvp(f, hvp, x, *, seed: int = 0, n_vectors: int = 3,
              eps: float = 1e-6, rtol: float = 1e-7, atol: float = 1e-9) -> Report:
  """Checks a hand-written Hessian-vector product ``hvp(x, v) = H(x) v`` of a
  scalar ``f(x)`` (``x`` an array or pytree, ``v`` shaped like it) against
  JAX's forward-over-reverse ``jax.jvp(jax.grad(f), (x,), (v,))``, and the
  first ``v`` against ``(grad f(x + h v) - grad f(x - h v)) / 2h``.
  """
  with jax.enable_x64(True):
    x = _to64(x)
    rng = np.random.default_rng(seed)
    vs = [_tangents(x, rng) for _ in range(n_vectors)]
    grad = jax.grad(f)

    @jax.jit  # one program; x and the vectors are its constants
    def run():
      runs = [(hvp(x, v), jax.jvp(grad, (x,), (v,))[1]) for v in vs]
      step = lambda s: jax.tree_util.tree_map(  # noqa: E731
          lambda a, b: a + s * b, x, vs[0])
      fd = jax.tree_util.tree_map(lambda a, b: (a - b) / (2 * eps),
                                  grad(step(eps)), grad(step(-eps)))
      return runs, fd

    runs, fd = run()
    pairs = [(n, a, b) for m, r in runs for (n, a), (_, b) in
             zip(_named_leaves(m, "Hv"), _named_leaves(r, "Hv"))]
    fd_pairs = [(n, a, b) for (n, a), (_, b) in
                zip(_named_leaves(runs[0][0], "Hv"), _named_leaves(fd, "Hv"))]
    return _second_order(pairs, fd_pairs, "jax.jvp(jax.grad(f))", rtol, atol)
