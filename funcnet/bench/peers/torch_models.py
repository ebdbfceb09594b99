"""The MNIST-1D CNN, GRU and Transformer and the character GPT in PyTorch,
run eagerly, the shapes of a funcnet model's spec (contract: :mod:`funcnet.bench.peers`).

Channels first for the convolutions (PyTorch's layout); attention through
``F.scaled_dot_product_attention`` with ``q, k, v`` projections of which
``k`` has no bias, as funcnet's. The GRU is funcnet's cell written out (its
candidate reads ``(r * h) Wh_n``, one bias per gate), since ``nn.GRU``'s
has another candidate and twice the biases: a step in Python per time step,
the input products of every step computed before the loop and the update
and reset gates' recurrent products as one.

The step is ``zero_grad; loss.backward(); [clip_grad_norm_]; opt.step();
sched.step()`` with the config's optimizer (``torch.optim.Adam``/``AdamW``)
and its learning-rate schedule as a ``LambdaLR`` table.
"""

import os
import time
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from funcnet.bench.peers import Peer, Unsupported, common


class CNN(nn.Module):
  """conv (same) -> relu -> max pool per layer; flatten (or average);
  dropout before every linear layer; relu between them."""

  def __init__(self, s, in_channels, length):
    super().__init__()
    chans = [in_channels] + list(s["channels"])
    self.convs = nn.ModuleList(
        nn.Conv1d(a, b, s["kernel_size"], padding="same")
        for a, b in zip(chans[:-1], chans[1:]))
    for _ in s["channels"]:
      length //= s["pool"]
    widths = ([chans[-1] * (1 if s["global_pool"] else length)]
              + list(s["hidden"]) + [s["n_classes"]])
    self.denses = nn.ModuleList(nn.Linear(a, b)
                                for a, b in zip(widths[:-1], widths[1:]))
    self.drop = nn.Dropout(s["dropout"])
    self.pool, self.global_pool = s["pool"], s["global_pool"]

  def forward(self, x):
    a = x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 2)   # (m, C, L)
    for conv in self.convs:
      a = F.relu(conv(a))
      if self.pool > 1:
        a = F.max_pool1d(a, self.pool)
    h = a.mean(dim=2) if self.global_pool else a.flatten(1)
    for j, dense in enumerate(self.denses):
      h = dense(self.drop(h))
      if j < len(self.denses) - 1:
        h = F.relu(h)
    return h


class GRU(nn.Module):
  """funcnet's GRU cell (see the module docstring), dropout on the final
  state, a linear head."""

  def __init__(self, s, steps, features):
    super().__init__()
    h = s["hidden"]
    self.wx = nn.Parameter(nn.init.xavier_uniform_(torch.empty(features, 3 * h)))
    self.b = nn.Parameter(torch.zeros(3 * h))
    self.wh_ur = nn.Parameter(nn.init.xavier_uniform_(torch.empty(h, 2 * h)))
    self.wh_n = nn.Parameter(nn.init.xavier_uniform_(torch.empty(h, h)))
    self.head = nn.Linear(h, s["n_classes"])
    self.drop = nn.Dropout(s["dropout"])
    self.steps, self.hidden = steps, h

  def forward(self, x):
    m, hidden = x.shape[0], self.hidden
    gx = torch.addmm(self.b, x.reshape(m * self.steps, -1), self.wx)
    gx = gx.reshape(m, self.steps, 3 * hidden)
    h = x.new_zeros(m, hidden)
    for t in range(self.steps):
      g = gx[:, t]
      u, r = torch.sigmoid(g[:, :2 * hidden] + h @ self.wh_ur).chunk(2, dim=1)
      n = torch.tanh(g[:, 2 * hidden:] + (r * h) @ self.wh_n)
      h = torch.lerp(n, h, u)                     # (1 - u) n + u h
    return self.head(self.drop(h))


class Block(nn.Module):
  """A pre-LN block, dropout on both residual branches (``causal``: a
  decoder's)."""

  def __init__(self, d, heads, d_ff, rate, causal=False):
    super().__init__()
    self.causal = causal
    self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
    self.q, self.k, self.v = (nn.Linear(d, d), nn.Linear(d, d, bias=False),
                              nn.Linear(d, d))
    self.o = nn.Linear(d, d)
    self.ff1, self.ff2 = nn.Linear(d, d_ff), nn.Linear(d_ff, d)
    self.drop, self.heads = nn.Dropout(rate), heads

  def forward(self, e):
    m, t, d = e.shape
    u = self.ln1(e)
    split = lambda a: a.view(m, t, self.heads, -1).transpose(1, 2)  # noqa: E731
    a = F.scaled_dot_product_attention(split(self.q(u)), split(self.k(u)),
                                       split(self.v(u)), is_causal=self.causal)
    e = e + self.drop(self.o(a.transpose(1, 2).reshape(m, t, d)))
    return e + self.drop(self.ff2(F.gelu(self.ff1(self.ln2(e)))))


class Transformer(nn.Module):
  """Conv stem (gelu), tokens of ``patch`` steps, a linear embedding plus
  learned positions, dropout, pre-LN blocks, a final layer norm, the mean
  over tokens, a linear head."""

  def __init__(self, s, features, tokens):
    super().__init__()
    chans = [features] + list(s["stem_channels"])
    d = s["d_model"]
    self.stem = nn.ModuleList(
        nn.Conv1d(a, b, s["stem_kernel"], padding="same")
        for a, b in zip(chans[:-1], chans[1:]))
    self.embed = nn.Linear(chans[-1] * (s["in_shape"][0] // tokens), d)
    self.pos = nn.Parameter(0.02 * torch.randn(tokens, d))
    self.drop = nn.Dropout(s["dropout"])
    self.blocks = nn.ModuleList(Block(d, s["n_heads"], s["d_ff"], s["dropout"])
                                for _ in range(s["n_layers"]))
    self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, s["n_classes"])
    self.length, self.tokens = s["in_shape"][0], tokens

  def forward(self, x):
    h = x.reshape(x.shape[0], self.length, -1).transpose(1, 2)   # (m, C, L)
    for conv in self.stem:
      h = F.gelu(conv(h))
    e = self.embed(h.transpose(1, 2).reshape(x.shape[0], self.tokens, -1))
    e = self.drop(e + self.pos)
    for block in self.blocks:
      e = block(e)
    return self.head(self.ln(e).mean(dim=1))


class GPT(nn.Module):
  """Token embedding plus learned positions, dropout, causal pre-LN blocks,
  a final layer norm, the head tied to the token embedding (``h E^T``, no
  bias), as :mod:`funcnet.models.gpt`."""

  def __init__(self, s):
    super().__init__()
    d = s["d_model"]
    self.tok = nn.Embedding(s["vocab"], d)
    self.pos = nn.Parameter(0.02 * torch.randn(s["block_size"], d))
    nn.init.normal_(self.tok.weight, std=0.02)
    self.drop = nn.Dropout(s["dropout"])
    self.blocks = nn.ModuleList(
        Block(d, s["n_heads"], s["d_ff"], s["dropout"], causal=True)
        for _ in range(s["n_layers"]))
    self.ln = nn.LayerNorm(d)

  def forward(self, x):                                    # x: (m, T) ids
    e = self.drop(self.tok(x) + self.pos[:x.shape[1]])
    for block in self.blocks:
      e = block(e)
    return self.ln(e) @ self.tok.weight.T                  # (m, T, V)


def _cnn(s):
  length, channels = common.cnn_shape(s)
  return CNN(s, channels, length)


def _gru(s):
  return GRU(s, *common.gru_shape(s))


def _transformer(s):
  _, features, tokens = common.transformer_shape(s)
  return Transformer(s, features, tokens)


MODELS = {"cnn": _cnn, "gru": _gru, "transformer": _transformer, "gpt": GPT}
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def network(spec: dict) -> nn.Module:
  """The PyTorch module of a funcnet model's spec.

  Raises:
    Unsupported: a kind or option this module does not write.
  """
  make = MODELS.get(spec["kind"])
  if make is None:
    raise Unsupported(f"no PyTorch {spec['kind']}")
  return make(spec)


def optimizer(cfg, params):
  """``(optimizer, scheduler, clip_norm or None)`` of the config: Adam or
  AdamW (decoupled decay ``lr * lambda * w``, as optax's) with its
  schedule as a table."""
  o = cfg["optimizer"]
  make = OPTIMIZERS.get(o["name"])
  if make is None:
    raise Unsupported(f"its optimizer is {o['name']!r}; expected adam or adamw")
  kw = {"lr": o["learning_rate"], "betas": (o["b1"], o["b2"]), "eps": o["eps"]}
  if make is torch.optim.AdamW:
    kw["weight_decay"] = o["weight_decay"]
  opt = make(params, **kw)
  table = common.schedule_table(cfg) / o["learning_rate"]
  sched = torch.optim.lr_scheduler.LambdaLR(
      opt, lambda t: float(table[min(t, len(table) - 1)]))
  clip = o["clip_norm"] if o["clip_norm"] and o["clip_norm"] > 0 else None
  return opt, sched, clip


def best_threads(run, counts) -> int:
  """The thread count of ``counts`` at which ``run(2)`` is fastest (after
  one warm-up step at each). On a loaded machine OpenMP's workers wait for
  one another at every parallel region, and all the cores can be 10x
  slower than one; PyTorch is measured at its best count, chosen here."""
  times = {}
  for n in counts:
    torch.set_num_threads(n)
    run(1)
    t0 = time.perf_counter()
    run(2)
    times[n] = time.perf_counter() - t0
  return min(times, key=times.get)


def _inputs(x) -> torch.Tensor:
  """A batch as a tensor: token ids as int64 (``nn.Embedding``'s), the
  rest float32."""
  x = np.asarray(x)
  if np.issubdtype(x.dtype, np.integer):
    return torch.from_numpy(x.astype(np.int64))
  return torch.from_numpy(np.array(x, np.float32))


def _cross_entropy(z, y):
  """The mean cross-entropy over every prediction, ``z: (..., n)``."""
  return F.cross_entropy(z.reshape(-1, z.shape[-1]), y.reshape(-1))


def build(model, cfg, batches, seed: int = 0,
          threads: Optional[int] = None) -> Peer:
  """The PyTorch peer of ``model`` (see :mod:`funcnet.bench.peers`), on
  ``threads`` threads (None: the faster of 1 and all cores, by
  :func:`best_threads`, chosen again before each round by the peer's
  ``before_round``: under load two threads can be 10x slower than one,
  and an idle trial followed by a loaded round voided a Transformer row;
  process-wide, as ``torch.set_num_threads`` is)."""
  torch.manual_seed(seed)
  net = network(model.spec)
  opt, sched, clip = optimizer(cfg, net.parameters())
  tb = [(_inputs(x), torch.from_numpy(np.array(y)).long())
        for x, y in batches]

  def run(k):
    net.train()
    for i in range(k):
      x, y = tb[i % len(tb)]
      opt.zero_grad(set_to_none=True)
      _cross_entropy(net(x), y).backward()
      if clip is not None:
        nn.utils.clip_grad_norm_(net.parameters(), clip)
      opt.step()
      sched.step()

  def loss(x, y):
    net.eval()
    with torch.no_grad():
      return float(_cross_entropy(net(_inputs(x)),
                                  torch.from_numpy(np.array(y)).long()))

  info = {"threads": []}   # the count of each round, in order

  def choose():
    info["threads"].append(threads if threads is not None else best_threads(
        run, sorted({1, os.cpu_count() or 1})))
    torch.set_num_threads(info["threads"][-1])

  choose()
  n = sum(p.numel() for p in net.parameters())
  return Peer("pytorch", n, run, loss, info, before_round=choose)
