"""The application models written in other frameworks, the contestants of
``funcnet bench models`` beside funcnet's own step.

The contract. Each framework has one module, ``flax_models`` (flax.linen),
``equinox_models`` and ``torch_models`` (PyTorch eager), and each exposes

  build(model, cfg, batches, seed=0) -> Peer

for a funcnet :class:`funcnet.model.Model` of kind ``cnn``, ``gru``,
``transformer`` or ``gpt`` whose ``spec`` gives the shapes, the config
``cfg`` it was built from (its optimizer, schedule and clipping), and
``batches``, a list of ``(x: (m, *in_shape) float32, y: (m,) int32)`` numpy
mini-batches of the config's batch size (the GPT's: ``x, y: (m, T)`` int32
ids, ``y`` the next ones; its loss is the mean cross-entropy over every
position). The peer is the same network: the same layers, widths,
kernels, dropout sites and rate, and the same number of parameters (checked
by :func:`build_all` against the funcnet model's), float32, trained with the
config's optimizer (optax for the JAX peers, ``torch.optim`` for PyTorch)
and learning-rate schedule, on the cross-entropy of its logits. A spec the
peer cannot write (a 2-D CNN, a cls token, ...) raises :class:`Unsupported`.

A :class:`Peer` holds

  name    ``"flax"``, ``"equinox"`` or ``"pytorch"``
  params  its parameter count
  run     ``run(k)``: ``k`` training steps (forward with dropout, loss,
          backward, optimizer update) on the batches in turn, returning
          only when they are done (the contract of
          :func:`funcnet.bench.step_time.measure`); the JAX peers' step is
          one jitted call with params and optimizer state donated
          (:func:`common.jax_runner`, which funcnet's own step uses too)
  loss    ``loss(x, y) -> float``: the mean loss of the current params on a
          batch, without dropout
  info    what else the record should say (PyTorch: its thread counts)
  before_round  None, or called before each round of measurements (PyTorch
          chooses its thread count again: the machine's load changes
          between rounds, and with it the best count)
  scanned None, or ``run``'s steps ``lax.scan``-ned over every batch in
          one jitted call (``common.jax_runner(..., scan=True)``: a unit
          of ``scanned.steps`` steps), as ``funcnet train`` runs an epoch;
          the JAX peers have one, PyTorch eager does not

The libraries are optional: flax and equinox come with the ``test`` (or
``flax``/``equinox``) extra, torch with ``bench``. :func:`available` says
which import.
"""

import importlib
from typing import Callable, NamedTuple, Optional

FRAMEWORKS = ("flax", "equinox", "pytorch")
_MODULES = {"flax": ("flax_models", "flax", "flax"),
            "equinox": ("equinox_models", "equinox", "equinox"),
            "pytorch": ("torch_models", "torch", "bench")}


class Unsupported(ValueError):
  """A model spec a peer has no counterpart for (named in the message)."""


class Peer(NamedTuple):
  """One framework's model and training step (see the module docstring)."""
  name: str
  params: int
  run: Callable[[int], None]
  loss: Callable
  info: dict = {}
  before_round: Optional[Callable[[], None]] = None
  scanned: Optional[Callable[[int], None]] = None


def module(name: str):
  """The module of framework ``name``; ImportError when its library is missing."""
  mod, lib, _ = _MODULES[name]
  importlib.import_module(lib)
  return importlib.import_module(f"{__name__}.{mod}")


def available(names=FRAMEWORKS) -> tuple[dict, list]:
  """``({name: module}, notes)``: the peers whose library imports, and one
  line per missing one saying which extra installs it."""
  mods, notes = {}, []
  for name in names:
    try:
      mods[name] = module(name)
    except ImportError:
      _, lib, extra = _MODULES[name]
      notes.append(f"{name}: not measured, {lib} does not import "
                   f"(pip install -e \".[{extra}]\")")
  return mods, notes


def build_all(model, cfg, batches, names=FRAMEWORKS, seed: int = 0):
  """``({name: Peer}, notes)`` for every available peer that can write
  ``model``; each one's parameter count is checked against ``model``'s.

  Raises:
    RuntimeError: a peer whose parameter count differs from funcnet's (a
      bug in the peer: the comparison would not be of the same model).
  """
  import jax
  import numpy as np
  n = sum(int(np.size(a)) for a in
          jax.tree_util.tree_leaves(model.init(jax.random.key(0))))
  mods, notes = available(names)
  peers = {}
  for name, mod in mods.items():
    try:
      peer = mod.build(model, cfg, batches, seed=seed)
    except Unsupported as e:
      notes.append(f"{name}: not measured, {e}")
      continue
    if peer.params != n:
      raise RuntimeError(f"the {name} {model.kind} has {peer.params:,} "
                         f"parameters, funcnet's {n:,}; expected the same")
    peers[name] = peer
  return peers, notes
