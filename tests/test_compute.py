"""Compute accounting (funcnet/train/compute.py): FLOPs counted from the
model's layers against independent references.

* XLA's own count of the training step (``cost_analysis()``), the issue's
  bar: within 10%. Fast: each model kind of the shipped configs at tiny
  sizes, XLA's count of the lowered step (no compilation), and of the
  compiled step for the MLP. Slow: every shipped config at its
  own sizes against XLA's count of its lowered step (the compiled one is
  within 10% too, measured in the issue's report, but the LSTM's unrolled
  step compiles for two minutes);
* an MLP's forward and step by hand: ``2 m sum n_{l-1} n_l`` products
  forward, ``3x`` inside the net and ``2x`` for the first layer.
"""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import optimizers
from funcnet.model import DataSpec
from funcnet.models import registry
from funcnet.train import compute

FEATURES = DataSpec("signals", "classification", (12,), "float32", 3)
TEXT = DataSpec("text", "language", (8,), "int32", 11)

# kind, table overrides, data, loss, batch
CASES = [
    ("mlp", {"hidden": [32, 16]}, FEATURES, "cross_entropy", 16),
    ("cnn", {"channels": [4, 8], "hidden": [8]}, FEATURES, "cross_entropy", 8),
    ("gru", {"hidden": 32}, FEATURES, "cross_entropy", 8),
    ("transformer", {"d_model": 8, "n_heads": 2, "n_layers": 1, "d_ff": 16},
     FEATURES, "cross_entropy", 8),
    ("gpt", {"n_layers": 1, "n_heads": 2, "d_model": 16}, TEXT,
     "cross_entropy", 4),
]


def _batch(spec, m):
  x = jax.ShapeDtypeStruct((m, *spec.in_shape), jnp.dtype(spec.x_dtype))
  y_shape = (m, *spec.in_shape) if spec.task == "language" else (m,)
  return x, jax.ShapeDtypeStruct(y_shape, jnp.int32)


@pytest.mark.parametrize("kind,over,spec,loss,m", CASES,
                         ids=[c[0] for c in CASES])
def test_layer_count_agrees_with_xla_within_ten_percent(kind, over, spec,
                                                        loss, m):
  table = {**registry.get(kind).defaults, **over}
  model = registry.from_config(kind, table, spec)
  x, y = _batch(spec, m)
  c = compute.account(model, loss, optimizers.adamw(1e-3), x, y,
                      xla="compiled" if kind == "mlp" else "lowered")
  assert c.xla_train_step_flops > 0
  assert abs(compute.agreement(c)) < 0.10, (c.train_step_flops,
                                            c.xla_train_step_flops)
  n = sum(int(np.prod(a.shape)) for a in
          jax.tree_util.tree_leaves(model.init(jax.random.key(0))))
  assert (c.params, c.param_bytes) == (n, 4 * n)


def test_mlp_forward_and_step_products_by_hand():
  model = registry.from_config(
      "mlp", {**registry.get("mlp").defaults, "hidden": [32, 16]}, FEATURES)
  x, y = _batch(FEATURES, 16)
  c = compute.account(model, "cross_entropy", optimizers.sgd(0.1), x, y,
                      xla=None)
  sizes = (12, 32, 16, 3)
  products = [2 * 16 * a * b for a, b in zip(sizes[:-1], sizes[1:])]
  assert c.forward.matmul == sum(products)
  _, step = compute._walk(
      jax.make_jaxpr(model.logits)(
          jax.eval_shape(model.init, jax.random.key(0)), x),
      [True] * 6 + [False])
  # dC/dx of the input is never needed: the first layer's product twice.
  assert step.matmul == 2 * products[0] + 3 * sum(products[1:])


def test_xla_flops_reads_a_dict_or_a_list_of_dicts():
  class Fake:
    def __init__(self, cost):
      self.cost = cost

    def cost_analysis(self):
      return self.cost
  assert compute.xla_flops(Fake({"flops": 5.0})) == 5.0
  assert compute.xla_flops(Fake([{"flops": 2.0}, {"flops": 3.0}])) == 5.0
  assert compute.xla_flops(Fake(None)) is None
  assert compute.xla_flops(Fake([{}])) is None


CONFIGS = sorted(glob.glob(os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
    "*.toml")))


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS,
                         ids=[os.path.basename(p)[:-5] for p in CONFIGS])
def test_every_shipped_config_step_agrees_with_xla(path):
  from funcnet import config as config_lib, experiment
  from funcnet.errors import ConfigError
  try:
    setup = experiment.Setup(config_lib.load(path))
  except ConfigError as e:  # a fine-tuning config before its pre-training
    pytest.skip(str(e))
  c = setup.compute("lowered")
  assert abs(compute.agreement(c)) < 0.10, (c.train_step_flops,
                                            c.xla_train_step_flops)


def _rapl(root, joules, wrap):
  for i, (e, w) in enumerate(zip(joules, wrap)):
    d = root / f"intel-rapl:{i}"
    d.mkdir(exist_ok=True)
    (d / "energy_uj").write_text(f"{int(e * 1e6)}\n")
    (d / "max_energy_range_uj").write_text(f"{int(w * 1e6)}\n")
  sub = root / "intel-rapl:0:0"  # a subzone (core): inside package 0
  sub.mkdir(exist_ok=True)
  (sub / "energy_uj").write_text("1\n")


def test_energy_from_rapl_counters_with_a_wrap(tmp_path):
  _rapl(tmp_path, [100.0, 7.0], [1000.0, 1000.0])
  start = compute.rapl_joules(str(tmp_path))
  _rapl(tmp_path, [130.0, 2.0], [1000.0, 1000.0])  # package 1 wrapped
  end = compute.rapl_joules(str(tmp_path))
  rec = compute.energy({}, 10.0, (start, end), power_watts=50.0)
  assert rec["energy_j"] == pytest.approx(30.0 + (1000.0 - 7.0 + 2.0))
  assert "energy_estimate_j" not in rec


def test_energy_is_only_estimated_from_the_users_power_figure(tmp_path):
  assert compute.rapl_joules(str(tmp_path / "none")) is None
  assert compute.energy({}, 4.0, (None, None)) == {}
  rec = compute.energy({}, 4.0, (None, None), power_watts=25.0)
  assert rec["energy_estimate_j"] == 100.0
  assert "25 W" in rec["energy_assumption"]
  assert "energy_j" not in rec
  line = compute.line({"params": 3, "param_bytes": 12,
                       "forward_flops_per_example": 10.0,
                       "train_step_flops": 2e6, "total_train_flops": 4e9,
                       "achieved_flops_per_s": None, **rec})
  assert "2 MFLOP" in line and "4 GFLOP" in line and "assumed 25 W" in line


# --- adversarial training: the attacks inside the step ------------------------

def _adv(method, steps=3, ratio=0.5):
  from funcnet.train.adversarial import Adversarial
  return Adversarial(method, 0.3, ratio, -3.0, 3.0, steps, None, "manual")


@pytest.mark.parametrize("kind,over,adv", [
    ("mlp", {"hidden": [32, 16]}, _adv("fgsm")),
    ("mlp", {"hidden": [32, 16]}, _adv("pgd", ratio=1.0)),
    # the attack's count agrees with XLA's as the model's own step does
    # (4 and 8 channels: -8% plain, -10% with PGD; 8 and 16: -1%, -3%)
    ("cnn", {"channels": [8, 16], "hidden": [16]}, _adv("pgd"))],
    ids=["mlp-fgsm", "mlp-pgd", "cnn-pgd"])
def test_an_adversarial_step_with_its_attacks_agrees_with_xla(kind, over, adv):
  table = {**registry.get(kind).defaults, **over}
  model = registry.from_config(kind, table, FEATURES)
  x, y = _batch(FEATURES, 8)
  plain = compute.account(model, "cross_entropy", optimizers.adamw(1e-3), x,
                          y, xla="lowered")
  c = compute.account(model, "cross_entropy", optimizers.adamw(1e-3), x, y,
                      adv, xla="lowered")
  assert c.xla_train_step_flops > plain.xla_train_step_flops
  assert abs(compute.agreement(c)) < 0.10, (c.train_step_flops,
                                            c.xla_train_step_flops)


def test_an_attacks_products_by_hand():
  # k = 4 of 8 rows attacked by 3 PGD steps, each a forward and the
  # backward to the input alone: 2x every product, the first layer's too
  model = registry.from_config(
      "mlp", {**registry.get("mlp").defaults, "hidden": [32, 16]}, FEATURES)
  x, y = _batch(FEATURES, 8)
  params = jax.eval_shape(model.init, jax.random.key(0))
  f = compute.count_attack(model, "cross_entropy", _adv("pgd"), params, x, y)
  sizes = (12, 32, 16, 3)
  assert f.matmul == 3 * 2 * sum(2 * 4 * a * b
                                 for a, b in zip(sizes[:-1], sizes[1:]))
  assert compute.count_attack(model, "cross_entropy", _adv("fgsm", ratio=0.0),
                              params, x, y).total == 0
