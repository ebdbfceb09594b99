"""funcnet bench gpt compares like with like: the PyTorch model of
funcnet/bench/lm_step.py, given funcnet's GPT weights, computes the same
loss and the same gradients (PyTorch's autograd as the independent
reference). Needs the [bench] extra (torch); without it, the command says
so in one line."""

import sys

import jax
import numpy as np
import pytest

from funcnet import cli
from funcnet.bench import lm_step


def _load_into(net, params, torch):
  """funcnet's gpt params into the PyTorch model (Linear weights are
  (out, in): the transpose of x @ W)."""
  t = lambda a: torch.from_numpy(np.asarray(a, np.float32).copy())  # noqa: E731
  d = net.tok.weight.shape[1]
  with torch.no_grad():
    net.tok.weight.copy_(t(params["tok"]["E"]))
    net.pos.weight.copy_(t(params["pos"]["E"]))
    for blk, p in zip(net.blocks, params["blocks"]):
      for ln, q in ((blk.ln1, p["ln1"]), (blk.ln2, p["ln2"])):
        ln.weight.copy_(t(q["scale"])), ln.bias.copy_(t(q["bias"]))
      for name in ("q", "k", "v"):
        lin = getattr(blk, name)
        lin.weight.copy_(t(np.asarray(p["attn"][name]["W"]).reshape(d, d).T))
        if lin.bias is not None:
          lin.bias.copy_(t(np.asarray(p["attn"][name]["b"]).reshape(d)))
      blk.o.weight.copy_(t(np.asarray(p["attn"]["o"]["W"]).reshape(d, d).T))
      blk.o.bias.copy_(t(p["attn"]["o"]["b"]))
      for lin, q in ((blk.ff1, p["ff1"]), (blk.ff2, p["ff2"])):
        lin.weight.copy_(t(np.asarray(q["W"]).T)), lin.bias.copy_(t(q["b"]))
    net.ln.weight.copy_(t(params["ln"]["scale"]))
    net.ln.bias.copy_(t(params["ln"]["bias"]))


def test_the_pytorch_model_is_funcnets_gpt():
  torch = pytest.importorskip("torch")
  from funcnet import backprop
  p = lm_step.Problem(n_layers=2, n_heads=2, d_model=16, block=8, batch=3,
                      vocab=11)
  model = lm_step.build_model(p)
  params = model.init(jax.random.key(0))
  net = lm_step.torch_gpt(p, torch)
  n_torch = sum(v.numel() for v in net.parameters())
  assert n_torch == sum(np.size(v) for v in jax.tree_util.tree_leaves(params))
  _load_into(net, params, torch)
  rng = np.random.default_rng(0)
  w = rng.integers(0, p.vocab, (p.batch, p.block + 1)).astype(np.int32)
  x, y = w[:, :-1], w[:, 1:]
  c, g = jax.jit(backprop.value_and_grad(model, "cross_entropy"))(params, x, y)
  loss = net(torch.from_numpy(x).long(), torch.from_numpy(y).long())
  loss.backward()
  assert loss.item() == pytest.approx(float(c), rel=1e-5)
  # the tied embedding's gradient: head and lookup, both sides
  np.testing.assert_allclose(net.tok.weight.grad.numpy(), g["tok"]["E"],
                             atol=1e-5)
  np.testing.assert_allclose(net.blocks[0].ff1.weight.grad.numpy().T,
                             g["blocks"][0]["ff1"]["W"], atol=1e-5)


def test_without_torch_the_bench_is_one_line(monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, "torch", None)
  assert cli.main(["bench", "gpt"]) == 2
  err = capsys.readouterr().err
  assert '.[bench]' in err and len(err.strip().splitlines()) == 1
