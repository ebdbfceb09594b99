"""``funcnet bench gpt``: one training step of the character GPT, funcnet
(hand-written backward and ``jax.grad``) against the same model in PyTorch,
on the same CPU, in one run.

The problem is the issue's: 4 layers, 4 heads, width 128, context 128,
batch 32, a vocabulary of 96, float32, AdamW (lr 3e-4, betas 0.9/0.95,
weight decay 0.1 on every parameter), no dropout. The PyTorch model is
nanoGPT's architecture written out below (token and learned position
embeddings; pre-LN blocks of causal multi-head attention with ``q, k, v``
projections and an output projection, and a GELU MLP of width ``4 d``; a
final layer norm; the output head tied to the token embedding), so both
sides do the same arithmetic: the parameter counts are compared before
timing.

  steps/s       of a loop of jitted steps (funcnet) and of eager
                ``loss.backward(); opt.step()`` (PyTorch, all its threads),
                measured alternately ``rounds`` times so all meet the same
                load; the ratios are of the medians
  MFU           model FLOPs per step / seconds per step / the machine's
                float32 matmul peak (:func:`step_time.matmul_peak`, 2048^2),
                with the FLOPs of a step ``6 N_matmul B T + 12 L B T^2 d``
                (the weights' six FLOPs per parameter per token, forward and
                backward, and the attention scores and mixing; PaLM's
                appendix B)

PyTorch is an optional extra (``pip install -e ".[bench]"``); without it
the command says so in one line.
"""

import math
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnet import model as model_lib
from funcnet.bench import step_time
from funcnet.errors import needs_extra


class Problem(NamedTuple):
  n_layers: int = 4
  n_heads: int = 4
  d_model: int = 128
  block: int = 128
  batch: int = 32
  vocab: int = 96


def _torch():
  try:
    import torch
  except ImportError:
    raise needs_extra("funcnet bench gpt", "bench", "torch") from None
  return torch


def step_flops(p: Problem, n_matmul: int) -> float:
  """``6 N B T + 12 L B T^2 d`` (see the module's docstring)."""
  tokens = p.batch * p.block
  return 6.0 * n_matmul * tokens + 12.0 * p.n_layers * tokens * p.block * p.d_model


def matmul_params(p: Problem) -> int:
  """Parameters that enter a matmul per token: the blocks' projections and
  the tied head (the embeddings' lookups and the norms do no matmul)."""
  d = p.d_model
  return p.n_layers * (4 * d * d + 2 * 4 * d * d) + p.vocab * d


def torch_gpt(p: Problem, torch):
  """nanoGPT's model in PyTorch, the shapes of funcnet's ``gpt`` kind."""
  nn, F = torch.nn, torch.nn.functional
  d, h = p.d_model, p.n_heads

  class Block(nn.Module):
    def __init__(self):
      super().__init__()
      self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
      self.q, self.k, self.v = (nn.Linear(d, d), nn.Linear(d, d, bias=False),
                                nn.Linear(d, d))
      self.o = nn.Linear(d, d)
      self.ff1, self.ff2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
      b, t, _ = x.shape
      y = self.ln1(x)
      split = lambda a: a.view(b, t, h, d // h).transpose(1, 2)  # noqa: E731
      a = F.scaled_dot_product_attention(split(self.q(y)), split(self.k(y)),
                                         split(self.v(y)), is_causal=True)
      x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
      return x + self.ff2(F.gelu(self.ff1(self.ln2(x))))

  class GPT(nn.Module):
    def __init__(self):
      super().__init__()
      self.tok = nn.Embedding(p.vocab, d)
      self.pos = nn.Embedding(p.block, d)
      self.blocks = nn.ModuleList([Block() for _ in range(p.n_layers)])
      self.ln = nn.LayerNorm(d)

    def forward(self, x, y):
      e = self.tok(x) + self.pos(torch.arange(x.shape[1]))
      for blk in self.blocks:
        e = blk(e)
      z = self.ln(e) @ self.tok.weight.T        # the tied head
      return F.cross_entropy(z.reshape(-1, p.vocab), y.reshape(-1))

  return GPT()


def _torch_runner(p: Problem, batches):
  torch = _torch()
  torch.manual_seed(0)
  net = torch_gpt(p, torch)
  opt = torch.optim.AdamW(net.parameters(), lr=3e-4, betas=(0.9, 0.95),
                          weight_decay=0.1)
  tb = [(torch.from_numpy(x).long(), torch.from_numpy(y).long())
        for x, y in batches]
  n_params = sum(v.numel() for v in net.parameters())

  def run(k):
    for i in range(k):
      x, y = tb[i % len(tb)]
      opt.zero_grad(set_to_none=True)
      net(x, y).backward()
      opt.step()
  return run, n_params


def _funcnet_runner(model, batches, grads: str):
  opt = optax.adamw(3e-4, b1=0.9, b2=0.95, weight_decay=0.1)
  step = step_time.make_step(model, "cross_entropy", opt, grads)
  params = model.init(jax.random.key(0))
  state = [params, opt.init(params)]
  jb = [(jnp.asarray(x), jnp.asarray(y)) for x, y in batches]

  def run(k):
    params, opt_state = state
    c = None
    for i in range(k):
      params, opt_state, c = step(params, opt_state, *jb[i % len(jb)])
    jax.block_until_ready((params, opt_state, c))
    state[:] = params, opt_state
  return run


def build_model(p: Problem):
  """funcnet's ``gpt`` kind at the problem's sizes, no dropout."""
  from funcnet.models import registry
  spec = model_lib.DataSpec(name="bench", task="language", in_shape=(p.block,),
                            x_dtype="int32", n_out=p.vocab)
  return registry.from_config(
      "gpt", {"n_layers": p.n_layers, "n_heads": p.n_heads,
              "d_model": p.d_model, "d_ff": 4 * p.d_model, "dropout": 0.0},
      spec)


def run(p: Problem = Problem(), *, rounds: int = 3, repeats: int = 3,
        min_time: float = 1.0, log: Callable = print) -> dict:
  """Times the three steps; returns the measurements as a dict."""
  torch = _torch()
  rng = np.random.default_rng(0)
  text = rng.integers(0, p.vocab, size=p.batch * (p.block + 1) * 4)
  batches = []
  for i in range(4):
    w = text[i * p.batch * (p.block + 1):(i + 1) * p.batch * (p.block + 1)]
    w = w.reshape(p.batch, p.block + 1).astype(np.int32)
    batches.append((w[:, :-1], w[:, 1:]))
  model = build_model(p)
  n_jax = sum(int(np.size(v)) for v in
              jax.tree_util.tree_leaves(model.init(jax.random.key(0))))
  runners = {"manual": _funcnet_runner(model, batches, "manual"),
             "autodiff": _funcnet_runner(model, batches, "autodiff")}
  runners["pytorch"], n_torch = _torch_runner(p, batches)
  log(f"gpt {p.n_layers} layers x {p.n_heads} heads, width {p.d_model}, "
      f"context {p.block}, batch {p.batch}: {n_jax:,} params in funcnet, "
      f"{n_torch:,} in PyTorch; torch {torch.__version__} on "
      f"{torch.get_num_threads()} threads")
  for r in runners.values():
    r(2)                                  # compile / warm up
  times = {k: [] for k in runners}
  for _ in range(rounds):
    for k, r in runners.items():
      times[k].append(step_time.measure(r, repeats=repeats,
                                        min_time=min_time).median)
  sec = {k: float(np.median(v)) for k, v in times.items()}
  peak = step_time.matmul_peak(2048, repeats=3, min_time=0.5)["gflops"]
  flops = step_flops(p, matmul_params(p))
  out = {"problem": p._asdict(), "params_funcnet": n_jax,
         "params_pytorch": n_torch, "torch": torch.__version__,
         "steps_per_s": {k: 1.0 / s for k, s in sec.items()},
         "funcnet_over_pytorch": sec["pytorch"] / sec["autodiff"],
         "manual_over_pytorch": sec["pytorch"] / sec["manual"],
         "manual_over_autodiff": sec["autodiff"] / sec["manual"],
         "step_gflop": flops / 1e9, "matmul_peak_gflops": peak,
         "mfu": {k: flops / s / 1e9 / peak for k, s in sec.items()}}
  for k, s in sec.items():
    log(f"  {k:9s} {1 / s:7.2f} steps/s   MFU {out['mfu'][k]:.1%}")
  log(f"  funcnet (autodiff) / PyTorch {out['funcnet_over_pytorch']:.2f}x, "
      f"manual / PyTorch {out['manual_over_pytorch']:.2f}x, manual / autodiff "
      f"{out['manual_over_autodiff']:.2f}x; matmul peak {peak:.0f} GFLOP/s, "
      f"{flops / 1e9:.2f} GFLOP a step")
  return out
