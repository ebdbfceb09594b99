"""Gradient check: hand-written backprop vs ``jax.grad`` vs finite differences.

``compare(model, loss, params, x, y)`` casts everything to float64 and, for
every parameter array (``W`` and ``b`` of each layer of an MLP; every leaf of
other models), reports

  * manual vs autodiff on every entry (models whose kind has a hand-written
    backward, ``model.backward``),
  * autodiff vs central finite differences, and manual vs finite differences,
    on up to ``max_entries`` entries per array chosen with ``key``:

      dC/dθ_k ≈ (C(θ + h e_k) − C(θ − h e_k)) / (2h),   h = ``eps``.

Errors are reported as the largest absolute difference and the relative
error of the whole array, as in the literature (e.g. Ng's CS229 notes):

  rel(a, b) = ||a − b|| / max(||a|| + ||b||, tiny)

Kinks: the derivative of ``relu``/``leaky_relu`` jumps at ``z = 0``, and a
difference whose two sides straddle a kink measures neither side. For a
model that exposes its kinked pre-activations (``model.kinks``, e.g. an MLP
with such an activation), an entry is *skipped* when any of them changes
sign between ``θ − h e_k`` and ``θ + h e_k``; for other models whose
``spec["kinked"]`` is true, when the forward and
backward one-sided differences disagree by more than ``kink_tol`` relative
(a straddled kink shows as a jump there). The report counts skipped entries.

``report.ok()`` passes when manual vs autodiff ``rel <= 1e-10`` and both vs
finite differences ``rel <= 1e-6`` or, for arrays whose gradient is so small
that rounding dominates, ``abs <= max(1e-9, 4 eps64 |C| / h)`` (the
rounding noise of a central difference of a loss of size ``|C|``; 1e-9 for
``|C| <= 1.1`` at the default ``h = 1e-6``).
"""

from typing import NamedTuple, Optional

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from funcnet import autodiff, backprop
from funcnet.model import Model

TINY = 1e-300


class Row(NamedTuple):
  """One parameter array's errors; ``None`` where a comparison was not made."""
  name: str
  shape: tuple
  grad_norm: float
  manual_autodiff_abs: Optional[float]
  manual_autodiff_rel: Optional[float]
  autodiff_fd_abs: float
  autodiff_fd_rel: float
  manual_fd_abs: Optional[float]
  manual_fd_rel: Optional[float]
  fd_checked: int
  fd_skipped: int


def _abs_rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.size == 0:
    return 0.0, 0.0
  diff = np.abs(a - b)
  rel = np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), TINY)
  return float(diff.max()), float(rel)


def _fmt(v):
  return "       -" if v is None else f"{v:8.1e}"


class Report(NamedTuple):
  """Per-array gradient errors with pass/fail tolerances."""
  rows: list
  manual: bool
  rtol_manual: float = 1e-10
  rtol_fd: float = 1e-6
  atol_fd: float = 1e-9

  def failures(self) -> list[str]:
    """One line for each comparison over its tolerance, and for each array
    that finite differences did not really check: none of its entries, or
    most of them skipped (a check that checks nothing must not pass)."""
    bad = []
    for r in self.rows:
      tried = r.fd_checked + r.fd_skipped
      if tried and (r.fd_checked == 0 or r.fd_skipped > r.fd_checked):
        bad.append(f"{r.name}: only {r.fd_checked} of {tried} finite-"
                   "difference entries checked (the others straddled a kink)")
      if r.manual_autodiff_rel is not None and not (
          r.manual_autodiff_rel <= self.rtol_manual):
        bad.append(f"{r.name}: manual vs autodiff rel {r.manual_autodiff_rel:.2e}"
                   f" > {self.rtol_manual:.0e}")
      for what, rel, ab in (("autodiff", r.autodiff_fd_rel, r.autodiff_fd_abs),
                            ("manual", r.manual_fd_rel, r.manual_fd_abs)):
        if rel is not None and not (rel <= self.rtol_fd or ab <= self.atol_fd):
          bad.append(f"{r.name}: {what} vs finite differences rel {rel:.2e} > "
                     f"{self.rtol_fd:.0e} (abs {ab:.2e})")
    return bad

  def ok(self) -> bool:
    return not self.failures()

  def raise_if_wrong(self) -> "Report":
    """Raises ``AssertionError`` with the table unless ``ok()`` (a pytest
    assert); returns self."""
    if not self.ok():
      raise AssertionError("\n" + str(self))
    return self

  def __str__(self):
    w = max([14] + [len(r.name) + 1 for r in self.rows])
    head = (f"{'param':<{w}}{'shape':>12}{'|grad|':>10}  "
            f"{'man-auto abs':>12}{'rel':>9}  {'auto-fd abs':>11}{'rel':>9}  "
            f"{'man-fd abs':>10}{'rel':>9}  {'fd n':>5}{'skip':>5}")
    lines = [head, "-" * len(head)]
    for r in self.rows:
      lines.append(
          f"{r.name:<{w}}{'x'.join(map(str, r.shape)) or '()':>12}"
          f"{r.grad_norm:10.2e}  {_fmt(r.manual_autodiff_abs):>12}"
          f"{_fmt(r.manual_autodiff_rel):>9}  {_fmt(r.autodiff_fd_abs):>11}"
          f"{_fmt(r.autodiff_fd_rel):>9}  {_fmt(r.manual_fd_abs):>10}"
          f"{_fmt(r.manual_fd_rel):>9}  {r.fd_checked:5d}{r.fd_skipped:5d}")
    skipped = sum(r.fd_skipped for r in self.rows)
    if skipped:
      lines.append(f"{skipped} finite-difference entries skipped: their ±h "
                   "straddled a kink (relu/leaky_relu at z = 0)")
    lines.append(("OK" if self.ok() else "FAILED: " + "; ".join(self.failures()))
                 + f" (tolerances: manual-autodiff rel {self.rtol_manual:.0e}, "
                 f"fd rel {self.rtol_fd:.0e} or abs {self.atol_fd:.0e})")
    return "\n".join(lines)


def _leaf_name(path) -> str:
  """A param's row name, counting layers from 1 as the equations do:
  ``([0], ['W']) -> "layer 1 W"`` (an MLP's list of layers),
  ``(['conv'], [1], ['b']) -> "conv 2 b"``, ``(['fwd'], ['u'], ['Wx']) ->
  "fwd u Wx"``."""
  words = ["layer"] if path and isinstance(path[0], jax.tree_util.SequenceKey) else []
  for k in path:
    if isinstance(k, jax.tree_util.SequenceKey):
      words.append(str(k.idx + 1))
    elif isinstance(k, jax.tree_util.DictKey):
      words.append(str(k.key))
    else:
      words.append(jax.tree_util.keystr((k,)))
  return " ".join(words)


def _to64(tree):
  def cast(v):
    v = jnp.asarray(v)
    return v.astype(jnp.float64) if jnp.issubdtype(v.dtype, jnp.floating) else v
  return jax.tree_util.tree_map(cast, tree)


def compare(model: Model, loss, params, x, y, *, eps: float = 1e-6,
            max_entries: int = 32, key=None, kink_tol: float = 1e-3) -> Report:
  """Compares manual, autodiff and finite-difference gradients in float64.

  Args:
    model: any :class:`funcnet.model.Model`; manual backprop is compared
      when its kind has one (``model.backward``).
    loss: the loss name.
    params, x, y: as for :func:`funcnet.autodiff.value_and_grad`; cast to
      float64 here (integer labels and indices stay integers).
    eps: the finite-difference step ``h``.
    max_entries: entries per array checked by finite differences (all when
      the array is smaller).
    key: a PRNG key choosing those entries (default ``jax.random.key(0)``).
    kink_tol: see the module docstring (models other than MLPs).

  Returns:
    A :class:`Report`; ``str(report)`` is a table, ``report.ok()`` the verdict.
  """
  if key is None:
    key = jax.random.key(0)
  with jax.enable_x64(True):
    params, x, y = _to64(params), _to64(x), _to64(y)
    loss_of = autodiff.loss_fn(model, loss)
    _, auto = jax.jit(autodiff.value_and_grad(model, loss))(params, x, y)
    manual_ok = model.backward is not None
    if manual_ok:
      _, manual = jax.jit(backprop.value_and_grad(model, loss))(params, x, y)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    leaves_p = jax.tree_util.tree_flatten_with_path(params)[0]
    auto_leaves = jax.tree_util.tree_leaves(auto)
    man_leaves = jax.tree_util.tree_leaves(manual) if manual_ok else None

    # Kinks: the exact test where the model exposes its kinked
    # pre-activations (model.kinks), else the one-sided test.
    kinked_exact = model.kinks is not None
    kinked_other = not kinked_exact and bool(model.spec.get("kinked", False))

    def probe(theta):
      p = unravel(theta)
      c = loss_of(p, x, y)
      if kinked_exact:
        return c, jnp.sign(model.kinks(p, x))
      return c, jnp.zeros((0,))

    # One compiled function for every array: it takes a fixed-length vector
    # of flat indices and a step, and evaluates the loss at each perturbed
    # point one after another (lax.map), so memory stays at one copy of the
    # params however large the model.
    @jax.jit
    def shifted(idx, h):
      return jax.lax.map(lambda i: probe(flat.at[i].add(h)), idx)

    c0 = jax.jit(loss_of)(params, x, y) if kinked_other else None
    rows, offset, c_scale = [], 0, 1.0
    # Entry choice: one integer seed per array from the key, then numpy's
    # generator (jax.random.choice would compile once per array size).
    seeds = np.asarray(jax.random.randint(key, (len(leaves_p),), 0, 2**31 - 1))
    for i, (path, leaf) in enumerate(leaves_p):
      size = int(np.prod(leaf.shape))
      if size <= max_entries:
        idx = np.arange(size)
      else:
        idx = np.sort(np.random.default_rng(int(seeds[i])).choice(
            size, max_entries, replace=False))
      # Pad to max_entries so every array reuses the one compiled `shifted`.
      padded = np.full(max_entries, offset + (idx[-1] if len(idx) else 0))
      padded[:len(idx)] = offset + idx
      c_plus, s_plus = shifted(padded, eps)
      c_minus, s_minus = shifted(padded, -eps)
      k = len(idx)
      c_plus, c_minus = c_plus[:k], c_minus[:k]
      c_scale = max(c_scale, float(np.max(np.abs(c_plus), initial=0.0)))
      fd = np.asarray((c_plus - c_minus) / (2 * eps))
      keep = np.ones(k, bool)
      if kinked_exact:
        keep = np.asarray(jnp.all(s_plus[:k] == s_minus[:k], axis=1))
      elif kinked_other:
        fwd = np.asarray((c_plus - c0) / eps)
        bwd = np.asarray((c0 - c_minus) / eps)
        keep = np.abs(fwd - bwd) <= kink_tol * np.maximum(np.abs(fd), 1e-8)
      a = np.asarray(auto_leaves[i]).ravel()
      ad_abs, ad_rel = _abs_rel(a[idx][keep], fd[keep])
      if manual_ok:
        mval = np.asarray(man_leaves[i]).ravel()
        ma_abs, ma_rel = _abs_rel(mval, a)
        mf_abs, mf_rel = _abs_rel(mval[idx][keep], fd[keep])
      else:
        ma_abs = ma_rel = mf_abs = mf_rel = None
      rows.append(Row(_leaf_name(path), tuple(leaf.shape),
                      float(np.linalg.norm(a)), ma_abs, ma_rel, ad_abs, ad_rel,
                      mf_abs, mf_rel, int(keep.sum()), int((~keep).sum())))
      offset += size
  return Report(rows, manual_ok, atol_fd=_fd_floor(c_scale, eps))


def _fd_floor(c_scale: float, h: float) -> float:
  """The absolute tolerance of a central difference: rounding in ``C(θ ±
  h e_k)`` is ~eps64 |C| each, so the quotient carries ~eps64 |C| / h of
  noise whatever the gradient; an array whose gradient is that small (a
  GPT's query and key weights at init, where attention is near uniform) is
  judged by it, not by its relative error."""
  return max(1e-9, 4 * np.finfo(np.float64).eps * c_scale / h)
