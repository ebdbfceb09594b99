"""The pre-flight memory check (funcnet/run/preflight.py): a model too large for
the machine is refused in seconds without allocating; the estimate's exact
parts equal an independent count; no shipped config is refused."""

import glob
import json
import os
import subprocess
import sys
import time
import types

import jax
import numpy as np
import pytest

from funcnet import config, experiment, paths
from funcnet.run import preflight
from funcnet.data import bundled
from funcnet.errors import ConfigError
from helpers import with_limits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
for _k in ("JAX_ENABLE_X64", "XLA_FLAGS", "JAX_NUM_CPU_DEVICES"):
  ENV.pop(_k, None)

HUGE = "model.mlp.hidden=[10000000,10000000]"  # 1e14 weights: 400 TB in float32


def _pieces(cfg):
  """What ``experiment.Setup`` builds before its check: data, model, and the
  run's optimizer (fine-tuning's wrapper without the trained run)."""
  ds = experiment.build_dataset(cfg)
  model = experiment.build_model(cfg, ds)
  _, optimizer = experiment.build_optimizer(cfg, model,
                                            bool(cfg["finetune"]["from_run"]))
  return ds, model, optimizer


def _real_state(model, optimizer):
  """A small model's params and optimizer state, really made (one compiled
  call: op by op, each initialiser compiles its own program)."""
  params = jax.jit(model.init)(jax.random.key(0))
  return params, jax.jit(optimizer.init)(params)


def _nbytes(tree) -> int:
  return sum(np.asarray(a).size * np.asarray(a).dtype.itemsize
             for a in jax.tree_util.tree_leaves(tree))


# --- as a user runs it --------------------------------------------------------

def test_a_model_too_large_for_the_machine_is_refused_before_anything_allocates(
    tmp_path):
  out = tmp_path / "r"
  t0 = time.perf_counter()
  # A regression that allocates the params meets an allocation failure at
  # 4 GB instead of filling a shared machine; the wrapper measures the
  # command's own peak RSS.
  proc = subprocess.run(
      with_limits([sys.executable, "-m", "funcnet.cli", "train", "--set",
                   HUGE, "--out", str(out)], rss_file=tmp_path / "rss",
                  RLIMIT_DATA=4 << 30),
      cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
      text=True, timeout=120)
  wall = time.perf_counter() - t0
  stderr = proc.stderr
  rss = int((tmp_path / "rss").read_text())
  print(f"refused in {wall:.2f} s, child peak RSS {rss / 1e6:.0f} MB: {stderr}")

  assert proc.returncode == 2, stderr
  assert stderr.startswith("funcnet: error: the run needs about ")
  assert stderr.count("\n") == 1 and "Traceback" not in stderr
  assert "model.mlp.hidden" in stderr and "available" in stderr
  assert "params 400 TB" in stderr, stderr
  # The claim is "under 5 s"; a loaded 2-core machine gets slack here.
  assert wall < 15
  assert rss < 1.5e9  # the params alone would be 400 TB
  # The check comes before train_and_evaluate writes the run folder.
  assert not out.exists() or not any(out.iterdir())


def test_the_refusal_is_one_line_naming_the_parts_and_the_keys(monkeypatch):
  cfg = config.load(None, ["model.mlp.hidden=[20000,20000]"])
  ds, model, optimizer = _pieces(cfg)
  monkeypatch.setattr(preflight, "available", lambda device: (10**9, "the host"))
  with pytest.raises(ConfigError) as e:
    preflight.check_memory(cfg, model, ds, optimizer)
  msg = str(e.value)
  assert "\n" not in msg
  # 64*2e4 + 2e4*2e4 + 2e4*10 weights, 4e4 + 10 biases: 1.6e9 bytes
  assert "params 1.61 GB from model.mlp.hidden" in msg, msg
  assert "adam state 3.21 GB" in msg and "the host has 1 GB available" in msg
  assert msg.endswith("expected a smaller model.mlp.hidden"), msg


def test_the_message_names_the_key_that_makes_the_model_large(monkeypatch):
  """A CNN on the 8x8 digits: image_shape differs from its default too, but
  only the channels make it large."""
  cfg = config.load(None, ['model.kind="cnn"', "model.cnn.image_shape=[8,8]",
                           "model.cnn.channels=[3000,3000]"])
  ds, model, optimizer = _pieces(cfg)
  monkeypatch.setattr(preflight, "available", lambda device: (10**9, "the host"))
  with pytest.raises(ConfigError) as e:
    preflight.check_memory(cfg, model, ds, optimizer)
  msg = str(e.value)
  assert "params 324 MB from model.cnn.channels," in msg, msg
  assert "image_shape" not in msg
  assert msg.endswith("expected a smaller model.cnn.channels"), msg


def test_a_run_that_fits_passes_and_unknown_memory_refuses_nothing(monkeypatch):
  cfg = config.load(None, [])
  ds, model, optimizer = _pieces(cfg)
  est = preflight.check_memory(cfg, model, ds, optimizer)
  assert est["total"] == sum(est[p] for p in preflight.PARTS)
  monkeypatch.setattr(preflight, "available", lambda device: (None, "gpu:0"))
  huge = config.load(None, [HUGE])
  ds, model, optimizer = _pieces(huge)
  assert preflight.check_memory(huge, model, ds, optimizer) is None


# --- the estimate against independent counts ------------------------------------

@pytest.mark.parametrize("sets", [
    ["model.mlp.hidden=[32,16]"],
    ['model.kind="cnn"', "model.cnn.image_shape=[8,8]", "model.cnn.channels=[4,8]",
     "model.cnn.hidden=[12]"],
], ids=["mlp", "cnn"])
def test_params_and_adam_state_equal_a_count_of_a_real_init(sets):
  cfg = config.load(None, ['optimizer.name="adam"', *sets])
  ds, model, optimizer = _pieces(cfg)
  params, opt_state = _real_state(model, optimizer)
  est = preflight.estimate(cfg, model, ds, optimizer)

  p = _nbytes(params)
  assert est["params"] == est["gradients"] == p
  # adam: mu and nu, one each per param, and an int32 step count.
  assert est["opt_state"] == 2 * p + 4 == _nbytes(opt_state)
  # Two epochs of (n // b) * b rows: 64 float32 features and an int32 label.
  n, b = len(ds.y_train), cfg["train"]["batch_size"]
  assert est["batches"] == 2 * (n // b) * b * (64 * 4 + 4)
  assert est["test"] == len(ds.y_test) * (64 * 4 + 4)


@pytest.mark.parametrize("name, copies", [("sgd", 0), ("momentum", 1),
                                          ("adam", 2)])
def test_optimizer_state_is_what_its_init_makes(name, copies):
  cfg = config.load(None, [f'optimizer.name="{name}"'])
  ds, model, optimizer = _pieces(cfg)
  est = preflight.estimate(cfg, model, ds, optimizer)
  _, opt_state = _real_state(model, optimizer)
  assert est["opt_state"] == _nbytes(opt_state)
  assert copies * est["params"] <= est["opt_state"] <= copies * est["params"] + 8


def test_activations_follow_the_micro_batch():
  """Residuals of one (micro-)batch: twice the rows, twice the bytes;
  accumulate = 2 halves them and keeps a second gradient tree."""
  est = {}
  for sets in (["train.batch_size=32"], ["train.batch_size=64"],
               ["train.batch_size=64", "train.accumulate=2"]):
    cfg = config.load(None, sets)
    ds, model, optimizer = _pieces(cfg)
    est[tuple(sets)] = preflight.estimate(cfg, model, ds, optimizer)
  b32, b64, acc = est.values()
  assert b64["activations"] == 2 * b32["activations"] > 0
  assert acc["activations"] == b32["activations"]
  assert acc["gradients"] == 2 * acc["params"]
  # An MLP keeps at least its hidden layer's (b, 64) outputs.
  assert b32["activations"] >= 32 * 64 * 4


def test_a_data_parallel_plan_splits_the_batch_and_fsdp_the_params():
  """Four fake CPU devices, fsdp = 2 (a subprocess: this process's backend
  already has one device)."""
  script = """
import json, jax
jax.config.update("jax_num_cpu_devices", 4)
from funcnet import config, experiment, parallel
from funcnet.run import preflight
cfg = config.load(None, ["model.mlp.hidden=[1024]", "parallel.fsdp=2",
                         "train.batch_size=64"])
ds = experiment.build_dataset(cfg)
model = experiment.build_model(cfg, ds)
_, opt = experiment.build_optimizer(cfg, model)
plan = parallel.plan_from_config(cfg)
print(json.dumps([preflight.estimate(cfg, model, ds, opt),
                  preflight.estimate(cfg, model, ds, opt, plan)]))
"""
  r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=ENV,
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr
  one, per = json.loads(r.stdout.splitlines()[-1])
  # Every array of >= fsdp_min_size = 1024 entries is split in two; the
  # output bias (10,) stays whole.
  whole = 10 * 4
  assert per["params"] == (one["params"] - whole) // 2 + whole
  assert per["activations"] * 4 == one["activations"]
  assert per["batches"] * 4 == one["batches"]
  assert per["test"] == one["test"]


# --- what is free ---------------------------------------------------------------

def test_the_host_memory_is_meminfo_available():
  if not os.path.exists("/proc/meminfo"):
    pytest.skip("no /proc/meminfo here")
  free, where = preflight.available(jax.devices("cpu")[0])
  with open("/proc/meminfo") as f:
    kb = next(int(l.split()[1]) for l in f if l.startswith("MemAvailable:"))
  assert where in ("the host", "the container")
  if where == "the host":  # it moves as other processes run: 10% slack
    assert abs(free - kb * 1024) < 0.1 * kb * 1024


def test_a_container_limit_below_the_host_is_the_one_that_counts(tmp_path,
                                                                 monkeypatch):
  (tmp_path / "max").write_text("8000000000\n")
  (tmp_path / "current").write_text("5000000000\n")
  (tmp_path / "stat").write_text("anon 1\ninactive_file 1000000000\n")
  monkeypatch.setattr(paths, "_CGROUPS", ((
      str(tmp_path / "max"), str(tmp_path / "current"), str(tmp_path / "stat"),
      "inactive_file"),))
  monkeypatch.setattr(paths, "_meminfo_available", lambda: 20 * 10**9)
  cpu = jax.devices("cpu")[0]
  # limit - (usage - reclaimable page cache)
  assert preflight.available(cpu) == (4 * 10**9, "the container")
  (tmp_path / "max").write_text("max\n")
  assert preflight.available(cpu) == (20 * 10**9, "the host")


def test_an_accelerator_reports_its_limit_less_what_is_in_use():
  gpu = types.SimpleNamespace(
      platform="gpu", id=1, device_kind="Fake GPU",
      memory_stats=lambda: {"bytes_limit": 80 * 10**9, "bytes_in_use": 10**9})
  assert preflight.available(gpu) == (79 * 10**9, "gpu:1 (Fake GPU)")
  bare = types.SimpleNamespace(platform="tpu", id=0, device_kind="Fake TPU",
                               memory_stats=lambda: None)
  assert preflight.available(bare) == (None, "tpu:0 (Fake TPU)")


def test_human_sizes():
  assert [paths.human(n) for n in (0, 999, 1000, 12_345_678_901,
                                       4 * 10**14, 1.6 * 10**15)] == [
      "0 B", "999 B", "1 kB", "12.3 GB", "400 TB", "1.6 PB"]


# --- no shipped config is refused -----------------------------------------------

CONFIGS = [None] + sorted(glob.glob(os.path.join(ROOT, "configs", "*.toml")))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.basename(
    p or "default"))
def test_no_shipped_config_is_refused(path):
  cfg = config.load(path, [])
  if cfg["data"]["name"] == "mnist1d" and not os.path.exists(
      bundled._mnist1d_path(paths.cache_root())):
    pytest.skip("MNIST-1D is not cached here; making it takes seconds")
  ds, model, optimizer = _pieces(cfg)
  free, where = preflight.available()
  est = preflight.estimate(cfg, model, ds, optimizer)
  assert free is None or est["total"] < free, (where, est)
  experiment.check(cfg, ds, model)  # the check every run goes through
