"""The classic baseline of a language model: an interpolated Kneser-Ney
n-gram, in numpy (not a model kind: nothing here trains by gradient).

  lm = KneserNey(train_tokens, max_order=8, vocab_size=V)
  lm.bits(seq, start, order)     mean -log2 p(seq[i] | seq[i-n+1:i]), i >= start
  lm.probs(history, order)       (m, V): p(w | each history's last n-1 tokens)

Interpolated *modified* Kneser-Ney (Chen & Goodman 1998, "An empirical
study of smoothing techniques for language modeling", eq. 17 and 19): with
``h`` the ``n-1`` tokens before ``w`` and ``h'`` the last ``n-2`` of them,

  p_n(w | h) = [max(c(hw) - D(c(hw)), 0) + gamma(h) p_{n-1}(w | h')] / c(h.)
  gamma(h)   = D_1 N_1(h.) + D_2 N_2(h.) + D_3+ N_3+(h.)
  p_0(w)     = 1 / V

where ``c(h.) = sum_w c(hw)`` and ``N_r(h.)`` is the number of ``w`` with
``c(hw) = r`` (``N_3+``: ``>= 3``). At the highest order ``c`` is the raw
count in the training tokens; at every lower order it is the continuation
count ``N_1+(. h w)``, the number of distinct tokens seen before ``hw``. A
context never seen as one (``c(h.) = 0``) gives the next order down
unchanged. Each order has its own discounts, from its counts' count-of-
counts ``n_r`` (the number of n-grams counted ``r`` times)::

  Y = n_1 / (n_1 + 2 n_2),  D_1 = 1 - 2Y n_2/n_1,  D_2 = 2 - 3Y n_3/n_2,
  D_3+ = 3 - 4Y n_4/n_3,    each clipped to [0, r]

and, when some ``n_1..n_4`` is 0 (a tiny text), ``D_1 = D_2 = D_3+ = Y``
(absolute discounting's estimate, Ney et al. 1994), or 0.5 when ``Y`` is
undefined. Every ``p_k(. | h)`` sums to 1 over the ``V`` tokens.

How it is computed: an n-gram is an integer id. The ids of order ``k`` are
the sorted distinct codes ``id_{k-1}(h) * V + w`` of the training tokens'
k-grams (``id_0 = 0``), so every lookup (a training k-gram, a query's) is
one ``np.searchsorted``, and counts are ``np.bincount``: the orders 1-8 of
a 420k-character text fit and score in a few seconds, no Python loop per
token.
"""

from typing import NamedTuple

import numpy as np


class _Counts(NamedTuple):
  """One order's counts, raw or continuation, and what they give.

  ``counts (U,)`` per n-gram id; per context id: ``total`` = c(h.),
  ``gamma`` = D_1 N_1 + D_2 N_2 + D_3+ N_3+; ``D (4,)`` = (0, D_1, D_2,
  D_3+), indexed by min(count, 3).
  """
  counts: np.ndarray
  total: np.ndarray
  gamma: np.ndarray
  D: np.ndarray


def discounts(counts: np.ndarray) -> np.ndarray:
  """``(0, D_1, D_2, D_3+)`` of one order from its counts (module docstring)."""
  n1, n2, n3, n4 = (np.count_nonzero(counts == r) for r in (1, 2, 3, 4))
  y = n1 / (n1 + 2 * n2) if n1 + n2 > 0 else 0.5
  if min(n1, n2, n3, n4) == 0:
    d = [y, y, y] if n1 and n2 else [0.5, 0.5, 0.5]
  else:
    d = [1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3]
  return np.array([0.0] + [min(max(v, 0.0), r) for r, v in
                           zip((1, 2, 3), d)])


def _lookup(keys: np.ndarray, codes: np.ndarray) -> np.ndarray:
  """The index of each code in the sorted ``keys``, -1 where absent (and
  where ``codes`` is negative: an unknown context)."""
  if len(keys) == 0:
    return np.full(codes.shape, -1, np.int64)
  j = np.minimum(np.searchsorted(keys, codes), len(keys) - 1)
  return np.where((codes >= 0) & (keys[j] == codes), j, -1)


class KneserNey:
  """Interpolated modified Kneser-Ney of orders ``1..max_order`` over
  ``vocab_size`` tokens, fit on ``tokens`` (the module docstring)."""

  def __init__(self, tokens, max_order: int, vocab_size: int):
    s = np.asarray(tokens, np.int64)
    if max_order < 1 or vocab_size < 1 or s.ndim != 1 or len(s) == 0:
      raise ValueError("expected tokens (n,) with n >= 1, max_order >= 1, "
                       "vocab_size >= 1")
    if s.min() < 0 or s.max() >= vocab_size:
      raise ValueError(f"tokens outside [0, {vocab_size})")
    self.V, self.max_order = int(vocab_size), int(max_order)
    self.keys, ids = [], []        # per order k = 1..K
    prev = np.zeros(len(s), np.int64)   # id_0: the one empty context
    for k in range(1, self.max_order + 1):
      # the k-gram ending at i: context id_{k-1} of the (k-1)-gram ending
      # at i - 1 (none before position k - 1)
      ctx = prev if k == 1 else np.r_[-1, prev[:-1]]
      codes = np.where(ctx >= 0, ctx * self.V + s, -1)
      keys = np.unique(codes[codes >= 0])
      self.keys.append(keys)
      prev = _lookup(keys, codes)
      ids.append(prev)
    raw = [np.bincount(g[g >= 0], minlength=len(kk))
           for g, kk in zip(ids, self.keys)]
    # N_1+(. w_k): distinct (k+1)-grams whose last k tokens are w_k: each
    # (k+1)-gram id once, with the id of its suffix (the k-gram ending at
    # the same position).
    cont = []
    for k in range(1, self.max_order):
      suffix = np.full(len(self.keys[k]), -1, np.int64)
      at = ids[k] >= 0
      suffix[ids[k][at]] = ids[k - 1][at]
      cont.append(np.bincount(suffix, minlength=len(self.keys[k - 1])))
    self.raw = [self._by_context(k, c) for k, c in enumerate(raw, 1)]
    self.cont = [self._by_context(k, c) for k, c in enumerate(cont, 1)]

  def _by_context(self, k: int, counts: np.ndarray) -> _Counts:
    D = discounts(counts)
    n_ctx = 1 if k == 1 else len(self.keys[k - 2])
    ctx = self.keys[k - 1] // self.V
    w = lambda x: np.bincount(ctx, weights=x, minlength=n_ctx)
    return _Counts(counts.astype(np.float64), w(counts),
                   w(D[np.minimum(counts, 3)]), D)

  def _ids(self, seqs: np.ndarray, order: int) -> list:
    """``ids[k-1] (M, L)``: the order-k n-gram id ending at each position
    of ``seqs`` (-1: unseen in training, or too near the start)."""
    ids, prev = [], np.zeros(seqs.shape, np.int64)
    for k in range(1, order):
      ctx = prev if k == 1 else np.pad(prev[:, :-1], ((0, 0), (1, 0)),
                                       constant_values=-1)
      prev = _lookup(self.keys[k - 1], np.where(ctx >= 0, ctx * self.V + seqs,
                                                -1))
      ids.append(prev)
    return ids

  def _p(self, ctx_ids: list, w: np.ndarray, order: int) -> np.ndarray:
    """p(w | context), ``ctx_ids[k-1]`` the id of the order-k context
    (``(k-1)``-gram) of each query, ``w`` the tokens, any equal shapes."""
    p = np.full(w.shape, 1.0 / self.V)
    for k in range(1, order + 1):
      level = self.raw[k - 1] if k == order else self.cont[k - 1]
      ctx = ctx_ids[k - 1]
      j = _lookup(self.keys[k - 1], np.where(ctx >= 0, ctx * self.V + w, -1))
      c = np.where(j >= 0, level.counts[np.maximum(j, 0)], 0.0)
      known = ctx >= 0
      tot = np.where(known, level.total[np.maximum(ctx, 0)], 0.0)
      gam = np.where(known, level.gamma[np.maximum(ctx, 0)], 0.0)
      kept = np.maximum(c - level.D[np.minimum(c, 3).astype(np.int64)], 0.0)
      p = np.where(tot > 0, (kept + gam * p) / np.where(tot > 0, tot, 1.0), p)
    return p

  def _check(self, order: int) -> None:
    if not 1 <= order <= self.max_order:
      raise ValueError(f"order {order}; expected 1..{self.max_order}")

  def logprobs(self, seq, start: int, order: int) -> np.ndarray:
    """``log p(seq[i] | seq[i-order+1 : i])`` for ``i = start..len-1``
    (natural log; fewer tokens of context near ``seq``'s start)."""
    self._check(order)
    s = np.asarray(seq, np.int64)[None]
    ids = self._ids(s, order)
    # the order-k context of position i is the (k-1)-gram ending at i - 1
    ctx = [np.zeros(s.shape, np.int64)] + [
        np.pad(g[:, :-1], ((0, 0), (1, 0)), constant_values=-1) for g in ids]
    p = self._p([c[0, start:] for c in ctx], s[0, start:], order)
    return np.log(p)

  def bits(self, seq, start: int, order: int) -> float:
    """Mean bits per token of ``seq[start:]``, each predicted from the
    ``order - 1`` tokens before it (:meth:`logprobs`)."""
    return float(-np.mean(self.logprobs(seq, start, order)) / np.log(2))

  def probs(self, history, order: int) -> np.ndarray:
    """``(m, V)``: ``p(w | h)`` for every token ``w``, ``h`` the last
    ``order - 1`` tokens of each row of ``history (m, L)``."""
    self._check(order)
    h = np.asarray(history, np.int64)
    m, L = h.shape
    ids = self._ids(h, order)
    ctx = [np.zeros(m, np.int64)] + [g[:, L - 1] for g in ids]
    w = np.broadcast_to(np.arange(self.V), (m, self.V))
    return self._p([np.broadcast_to(c[:, None], (m, self.V)) for c in ctx],
                   w, order)
