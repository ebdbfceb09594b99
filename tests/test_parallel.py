"""Scale-out: data parallel and FSDP over fake CPU devices, several processes
over 127.0.0.1, mixed precision, gradient accumulation, the TPU recipe.

The reference is always the plain single-device run from the same seed:
the same global batch, the same examples in each step. Training on D
devices must end with the same params up to float32 rounding. Plain SGD
is used where it matters, since adam's update hardly changes when the
gradient is scaled, and a gradient D times too large (the ``shard_map``
pitfall) must fail these tests.

Anything that needs more than one device runs in a subprocess: this pytest
process already started a one-device CPU backend (and conftest turns on
float64). Every subprocess has a timeout and is killed if it outlives it.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import autodiff, backprop, config, mlp, parallel
from funcnet.train import precision
from funcnet.run import checkpoints
from funcnet.errors import ConfigError
from funcnet.models import cnn
from helpers import read_json, read_jsonl, start_processes, wait_all

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
for _k in ("JAX_ENABLE_X64", "XLA_FLAGS", "JAX_NUM_CPU_DEVICES"):
  ENV.pop(_k, None)

# float32 tolerance for params after a few epochs: the only difference
# between 1 and D devices is the order of the gradient sums.
PARAM_TOL = 2e-5


def _run(args, timeout):
  """A subprocess, killed (with its children) if it outlives ``timeout``."""
  proc = subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          start_new_session=True)
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate()
    pytest.fail(f"{args[:4]} did not finish in {timeout} s:\n{err[-2000:]}")
  return subprocess.CompletedProcess(args, proc.returncode, out, err)


# --- one process, several fake devices --------------------------------------

# Trains each case twice from one seed, on the plain single-device path and
# on a mesh of ``n`` devices, and prints what the tests compare.
WORKER = r'''
import json, os, sys
spec = json.loads(sys.argv[1])
if spec.get("quick_compile"):  # LLVM unoptimized: the fast tests compile
  os.environ["XLA_FLAGS"] = "--xla_backend_optimization_level=0"  # 2x faster
from funcnet import parallel
parallel.cpu_devices(spec["devices"])   # before JAX starts its backend
import functools
import jax, jax.numpy as jnp, numpy as np, optax
from funcnet import data, mlp, train
from funcnet.train import precision
from funcnet.errors import ConfigError
from funcnet.models import cnn, matrix_factorization, ncf, rnn, transformer

digits = functools.cache(lambda: data.standardize(data.load("digits")))

@functools.cache
def blobs():  # digits' shapes without loading scikit-learn (2 s)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(512, 64)).astype(np.float32)
  y = np.argmax(x @ rng.normal(size=(64, 10)), 1)
  return data.Dataset(x, y, None, None, "classification", 10, "blobs")

images = lambda c: blobs() if c.get("data") == "blobs" else digits()
ratings = functools.cache(lambda: data.load("ratings"))
nu = lambda: ratings().info["n_users"]
ni = lambda: ratings().info["n_items"]
BUILD = {
    "mlp": lambda c: (mlp([64, *np.ravel(c.get("hidden", 32)).tolist(), 10],
                          activation="relu", output_activation="softmax",
                          init="he", dropout=c.get("dropout", 0.0)),
                      "cross_entropy", images(c)),
    "cnn": lambda c: (cnn((64,), 10, image_shape=(8, 8),
                          channels=c.get("channels", (4, 8))),
                      "cross_entropy", images(c)),
    "rnn": lambda c: (rnn((64,), 10, hidden=16, input_features=8),
                      "cross_entropy", images(c)),
    "gru": lambda c: (rnn((64,), 10, hidden=16, input_features=8, cell="gru"),
                      "cross_entropy", images(c)),
    "transformer": lambda c: (transformer((64,), 10, d_model=16, n_heads=2,
                                          n_layers=1, d_ff=32, patch=8),
                              "cross_entropy", images(c)),
    "mf": lambda c: (matrix_factorization(nu(), ni(), rank=4), "mse", ratings()),
    "ncf": lambda c: (ncf(nu(), ni(), embed=4, hidden=(8,)), "mse", ratings()),
}

def leaves(t):
  return [np.asarray(a, np.float64) for a in jax.tree_util.tree_leaves(t)]

out = {"device_count": jax.device_count()}
for c in spec["cases"]:
  model, loss, ds = BUILD[c["model"]](c)
  opt = (optax.adam(1e-2, eps=c.get("eps", 1e-8)) if c.get("opt") == "adam"
         else optax.sgd(c.get("lr", 0.1)))
  cd = jnp.bfloat16 if c.get("bf16") else None
  kw = train.FitOptions(
      epochs=c.get("epochs", 2), batch_size=c.get("batch", 64),
      key=jax.random.key(0), grads=c.get("grads", "autodiff"),
      mixed=precision.Mixed(cd), norms=c.get("norms", True))
  ref = train.fit(model, loss, opt, ds, options=kw)
  plan = parallel.make_plan(c["n"], fsdp=c.get("fsdp", 1),
                            fsdp_min_size=c.get("fsdp_min_size", 0))
  res = train.fit(model, loss, opt, ds, options=kw._replace(
      plan=plan, mixed=precision.Mixed(cd, c.get("accumulate", 1))))
  a, b = leaves(ref.state.params), leaves(res.state.params)
  r = {
      "max_abs_diff": max(float(np.max(np.abs(x - y))) for x, y in zip(a, b)),
      "param_scale": max(float(np.max(np.abs(x))) for x in a),
      "moved": max(float(np.max(np.abs(x - y))) for x, y in
                   zip(leaves(model.init(jax.random.split(jax.random.key(0))[0])), a)),
      "loss_1": [h["train_loss"] for h in ref.history],
      "loss_n": [h["train_loss"] for h in res.history],
      "gn_ratio": [gn / g1 for h1, hn in zip(ref.history, res.history)
                   for g1, gn in zip(h1.get("grad_norms", {}).values(),
                                     hn.get("grad_norms", {}).values())],
      "specs": sorted({str(p.sharding.spec) for p in jax.tree_util.tree_leaves(res.state.params)}),
      "n_devices": len(jax.tree_util.tree_leaves(res.state.params)[0].sharding.device_set),
  }
  if c.get("layout"):  # where every leaf's pieces lie on the mesh
    pos = {d: ij for ij, d in np.ndenumerate(plan.mesh.devices)}
    r["layout"] = {
        jax.tree_util.keystr(k): {
            "shape": list(a.shape), "spec": list(a.sharding.spec),
            "shards": [[*pos[sh.device], [list(i.indices(m)[:2]) for i, m in
                                          zip(sh.index, a.shape)]]
                       for sh in a.addressable_shards]}
        for k, a in jax.tree_util.tree_flatten_with_path(
            {"params": res.state.params, "opt_state": res.state.opt_state})[0]}
  if c.get("hlo"):
    params, st = plan.place((ref.state.params, opt.init(ref.state.params)))
    ep = train.make_epoch(model, loss, opt, kw.batch_size, kw.grads,
                          prebatched=True, layout=train.Layout(
                              plan.batch_sharding, plan.shardings((params, st))))
    n = len(ds.y_train) // kw.batch_size
    xb = jax.ShapeDtypeStruct((n, kw.batch_size) + ds.x_train.shape[1:],
                              jnp.float32, sharding=plan.epoch_sharding)
    yb = jax.ShapeDtypeStruct((n, kw.batch_size), jnp.int32,
                              sharding=plan.epoch_sharding)
    hlo = ep.lower(params, st, plan.replicate(jax.random.key(1)), xb, yb).compile().as_text()
    r["collectives"] = {k: hlo.count(k + "(") + hlo.count(k + "-start(")
                        for k in ("all-reduce", "all-gather", "reduce-scatter")}
    # A batch that does not split evenly over the devices is refused.
    try:
      plan.check_batch(kw.batch_size + 1)
      r["uneven_batch"] = "accepted"
    except ConfigError as e:
      r["uneven_batch"] = str(e)
    r["local_rows"] = plan.local_rows(kw.batch_size).tolist()
  out[c["id"]] = r
print("RESULT " + json.dumps(out))
'''


def _workers(devices, cases, timeout, quick_compile=False):
  r = _run([sys.executable, "-c", WORKER,
            json.dumps({"devices": devices, "cases": cases,
                        "quick_compile": quick_compile})], timeout)
  assert r.returncode == 0, r.stderr[-3000:]
  line = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):])


def _same_training(r, tol=PARAM_TOL):
  """D devices end where 1 device does; gradients are not D times off."""
  assert r["moved"] > 1e-2  # training did change the params
  assert r["max_abs_diff"] <= tol * max(1.0, r["param_scale"]), r
  np.testing.assert_allclose(r["loss_n"], r["loss_1"], rtol=1e-4)
  np.testing.assert_allclose(r["gn_ratio"], 1.0, rtol=1e-4)


def test_two_fake_devices_train_like_one_and_all_reduce_the_gradient():
  out = _workers(2, [{"id": "mlp", "model": "mlp", "n": 2, "hidden": 16,
                      "batch": 32, "hlo": True}], timeout=180)
  assert out["device_count"] == 2
  r = out["mlp"]
  _same_training(r)
  assert r["n_devices"] == 2 and r["specs"] == ["P()"]
  assert r["collectives"]["all-reduce"] >= 1, r["collectives"]
  assert "expected a multiple of 2" in r["uneven_batch"]
  assert r["local_rows"] == list(range(32))  # one process holds every row


def _check_fsdp_layout(layout, split, data, fsdp):
  """Each leaf lies as docs/parallel.md says: ``split[path]`` is the axis on
  "fsdp" (None: replicated); the device at mesh position (i, j) holds piece
  j of that axis and all of the others, whatever its data row i."""
  assert set(layout) == set(split), sorted(layout)
  for path, leaf in layout.items():
    shape, axis = leaf["shape"], split[path]
    spec = [None] * len(shape)
    if axis is not None:
      spec[axis] = "fsdp"
    assert leaf["spec"] + [None] * (len(shape) - len(leaf["spec"])) == spec, \
        (path, leaf["spec"])
    assert sorted((i, j) for i, j, _ in leaf["shards"]) == \
        [(i, j) for i in range(data) for j in range(fsdp)], path
    for i, j, index in leaf["shards"]:
      want = [[0, n] for n in shape]
      if axis is not None:
        k = shape[axis] // fsdp
        want[axis] = [j * k, (j + 1) * k]
      assert index == want, (path, i, j, index)


def test_fsdp_splits_params_and_adam_state_and_trains_like_one_device():
  # MLP 64-128-15-10 on 4 devices, data=2 x fsdp=2, fsdp_min_size=100: each
  # array of >= 100 entries has its largest axis divisible by 2 on "fsdp".
  split = {"[0]['W']": 1,     # (64, 128)
           "[0]['b']": 0,     # (128,)
           "[1]['W']": 0,     # (128, 15)
           "[1]['b']": None,  # (15,): no axis divisible by 2
           "[2]['W']": 1,     # (15, 10): 15 is odd, so the smaller axis
           "[2]['b']": None}  # (10,): divisible, but below fsdp_min_size
  # Adam's eps is raised from 1e-8 to 1e-3: mu / (sqrt(nu) + eps) turns the
  # rounding of a gradient entry near 0 into a change of up to the learning
  # rate (1e-5 here with 1e-8). Its update hardly sees a gradient 2x or 4x
  # off, but the gradient norms compared by _same_training do.
  out = _workers(4, [{"id": "fsdp", "model": "mlp", "hidden": [128, 15],
                      "n": 4, "fsdp": 2, "fsdp_min_size": 100, "opt": "adam",
                      "eps": 1e-3, "data": "blobs", "layout": True}],
                 timeout=180, quick_compile=True)
  r = out["fsdp"]
  _same_training(r)
  want = {"['opt_state'][0].count": None}  # adam's mu and nu follow W and b
  for part in ("['params']", "['opt_state'][0].mu", "['opt_state'][0].nu"):
    want.update({part + k: a for k, a in split.items()})
  _check_fsdp_layout(r["layout"], want, data=2, fsdp=2)


@pytest.mark.slow
def test_cnn_gru_and_transformer_on_two_fake_devices_train_like_one():
  # Plain SGD: a gradient off by a factor moves the params far from the
  # 1-device ones, so the gradient norms are left out (they cost compile
  # time), and the CNN has one conv layer (a (3, 3, 4, 8) kernel's random
  # init alone compiles for 3 s on a CPU).
  cases = [{"id": "cnn", "model": "cnn", "channels": [4]},
           {"id": "gru", "model": "gru"},
           {"id": "transformer", "model": "transformer"}]
  cases = [{**c, "n": 2, "epochs": 1, "batch": 32, "data": "blobs",
            "norms": False} for c in cases]
  out = _workers(2, cases, timeout=180, quick_compile=True)
  assert out["device_count"] == 2
  for c in cases:
    r = out[c["id"]]
    print(f"{c['id']:12s} 1 vs 2 devices: max |dparam| {r['max_abs_diff']:.2g} "
          f"(largest param {r['param_scale']:.2g})")
    assert r["n_devices"] == 2 and r["specs"] == ["P()"], c["id"]
    _same_training(r)


# Every model, 1 device against 8, in two halves: one subprocess each, so
# that xdist's two workers share them. LLVM unoptimized (quick_compile), as
# the other mesh tests but the first: the claim is 8 devices = 1, which
# does not need XLA's optimized machine code (together 61 -> 41 s here;
# the two-device MLP test keeps the defaults, so one test of the mesh runs
# what a user's run compiles).
EIGHT_DEVICE_CASES = {
    "mlp": [
        {"id": "mlp_autodiff", "model": "mlp", "n": 8, "epochs": 3, "hlo": True},
        {"id": "mlp_manual", "model": "mlp", "n": 8, "epochs": 3, "grads": "manual"},
        {"id": "mlp_dropout_adam", "model": "mlp", "n": 8, "dropout": 0.2,
         "opt": "adam"},
        {"id": "mlp_fsdp", "model": "mlp", "n": 8, "fsdp": 2, "hlo": True},
        {"id": "mlp_accumulate", "model": "mlp", "n": 8, "accumulate": 2,
         "grads": "manual"},
        {"id": "mlp_bf16", "model": "mlp", "n": 8, "bf16": True},
        {"id": "mf", "model": "mf", "n": 8, "lr": 1.0},
        {"id": "ncf", "model": "ncf", "n": 8, "lr": 1.0},
    ],
    "cnn_rnn_transformer": [
        {"id": "cnn", "model": "cnn", "n": 8},
        {"id": "rnn", "model": "rnn", "n": 8},
        {"id": "gru", "model": "gru", "n": 8},
        {"id": "transformer", "model": "transformer", "n": 8},
        {"id": "transformer_fsdp", "model": "transformer", "n": 8, "fsdp": 4},
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("half", list(EIGHT_DEVICE_CASES))
def test_eight_fake_devices_train_every_model_like_one(half):
  cases = EIGHT_DEVICE_CASES[half]
  out = _workers(8, cases, timeout=900, quick_compile=True)
  assert out["device_count"] == 8
  for c in cases:
    r = out[c["id"]]
    print(f"{c['id']:18s} 1 vs 8 devices: max |dparam| {r['max_abs_diff']:.2g} "
          f"(largest param {r['param_scale']:.2g}), grad-norm ratio "
          f"{max(r['gn_ratio'], key=lambda v: abs(v - 1)):.6f}")
    assert r["n_devices"] == 8, c["id"]
    if c.get("bf16"):  # bfloat16 sums in another order round differently
      assert r["max_abs_diff"] <= 2e-2 * max(1.0, r["param_scale"]), r
      np.testing.assert_allclose(r["gn_ratio"], 1.0, rtol=2e-2)
    else:
      _same_training(r)
  if half == "mlp":
    rep = out["mlp_autodiff"]
    assert rep["specs"] == ["P()"]
    assert rep["collectives"]["all-reduce"] >= 1
    # FSDP: params split over the fsdp axis, gathered for the step.
    assert "P('fsdp',)" in out["mlp_fsdp"]["specs"]
    assert out["mlp_fsdp"]["collectives"]["all-gather"] >= 1
  else:
    assert any("fsdp" in s for s in out["transformer_fsdp"]["specs"])


# --- each process feeds only its own rows -----------------------------------

# Plan.epoch_batches on 4 fake devices (data=4, and data=2 x fsdp=2): the
# global (B, b, ...) arrays, and the pieces every device holds. Then, with
# no jax.distributed, what process p of 2 would feed: the sharding's map of
# addressable devices is narrowed to the two devices process p owns in a
# 2-process run (make_plan groups the mesh by process, so mesh devices
# 2p, 2p + 1), and the local data epoch_batches hands to
# make_array_from_process_local_data is caught.
ROWS = r'''
import json, sys
spec = json.loads(sys.argv[1])
from funcnet import parallel
parallel.cpu_devices(4)
import jax, numpy as np
from jax.sharding import NamedSharding

x = np.asarray(spec["x"], np.float32)
y = np.asarray(spec["y"], np.int32)
order, b = np.asarray(spec["order"]), spec["batch"]
out = {}
for fsdp in (1, 2):
  plan = parallel.make_plan(4, fsdp=fsdp)
  pos = {d: ij for ij, d in np.ndenumerate(plan.mesh.devices)}
  xb, yb = plan.epoch_batches(order, x, y, b)
  r = {"xb": np.asarray(xb).tolist(), "yb": np.asarray(yb).tolist(),
       "spec": str(xb.sharding.spec),
       "shards": [[*pos[s.device], [list(i.indices(n)[:2])
                                    for i, n in zip(s.index, xb.shape)],
                   np.asarray(s.data).tolist(), np.asarray(t.data).tolist()]
                  for s, t in zip(xb.addressable_shards,
                                  yb.addressable_shards)]}
  full = NamedSharding.addressable_devices_indices_map
  make = jax.make_array_from_process_local_data
  for p in range(2):
    mine = set(plan.mesh.devices.flat[2 * p:2 * p + 2])
    NamedSharding.addressable_devices_indices_map = lambda self, shape: {
        d: i for d, i in full(self, shape).items() if d in mine}
    fed = []
    jax.make_array_from_process_local_data = (
        lambda sharding, local, shape: fed.append(np.asarray(local).tolist()))
    try:
      r[f"rows_{p}"] = plan.local_rows(b).tolist()
      plan.epoch_batches(order, x, y, b)
    finally:
      NamedSharding.addressable_devices_indices_map = full
      jax.make_array_from_process_local_data = make
    r[f"fed_{p}"] = fed
  out[f"fsdp{fsdp}"] = r
print("RESULT " + json.dumps(out))
'''


def test_each_device_and_process_gets_its_own_rows_of_every_step():
  from funcnet import train
  n, b = 29, 8  # B = 3 steps; the last 5 examples of the epoch are dropped
  x = np.arange(n * 6, dtype=np.float32).reshape(n, 2, 3)
  y = np.arange(n) * 10
  order = train.batch_order(jax.random.key(3), 1, n, b)
  r = _run([sys.executable, "-c", ROWS, json.dumps(
      {"x": x.tolist(), "y": y.tolist(), "order": order.tolist(), "batch": b})],
           timeout=120)
  assert r.returncode == 0, r.stderr[-3000:]
  out = json.loads([l for l in r.stdout.splitlines()
                    if l.startswith("RESULT ")][-1][len("RESULT "):])
  want_x = x[order].reshape(3, b, 2, 3)
  want_y = y[order].reshape(3, b)
  for fsdp in (1, 2):
    r = out[f"fsdp{fsdp}"]
    np.testing.assert_array_equal(r["xb"], want_x)
    np.testing.assert_array_equal(r["yb"], want_y)
    assert r["spec"] == "P(None, ('data', 'fsdp'))"
    # P(None, ("data", "fsdp")): device (i, j) holds block i * fsdp + j of
    # b / 4 = 2 rows of every step.
    assert sorted((i, j) for i, j, *_ in r["shards"]) == \
        [(i, j) for i in range(4 // fsdp) for j in range(fsdp)]
    for i, j, index, xs, ys in r["shards"]:
      k = i * fsdp + j
      rows = slice(2 * k, 2 * k + 2)
      assert index == [[0, 3], [2 * k, 2 * k + 2], [0, 2], [0, 3]]
      np.testing.assert_array_equal(xs, want_x[:, rows])
      np.testing.assert_array_equal(ys, want_y[:, rows])
    # Process p of 2 loads rows [4p, 4p + 4) of every step, x then y.
    for p in range(2):
      rows = np.arange(b).reshape(2, 4)[p]
      assert r[f"rows_{p}"] == rows.tolist()
      assert len(r[f"fed_{p}"]) == 2
      np.testing.assert_array_equal(r[f"fed_{p}"][0], want_x[:, rows])
      np.testing.assert_array_equal(r[f"fed_{p}"][1], want_y[:, rows])


# --- several processes over 127.0.0.1 ---------------------------------------

SMALL = ["--set", "model.mlp.hidden=[16]", "--set", "train.batch_size=32",
         "--set", "optimizer.name=sgd", "--set", "optimizer.learning_rate=0.1",
         "--set", "run.plots=false", "--set", "run.checkpoint_every=1"]


def _train(*args):
  return [sys.executable, "-m", "funcnet.cli", "train", *SMALL, *args]


def _processes(n, args, cpu_devices=2, heartbeat=10):
  return start_processes(
      n, ["train", *SMALL, *args, "--set",
          f"parallel.heartbeat_timeout={heartbeat}", "--set",
          "parallel.shutdown_timeout=30"],
      cwd=ROOT, env=ENV, cpu_devices=cpu_devices)


def _ckpt_params(run):
  from funcnet import experiment
  with open(os.path.join(run, "config.json")) as f:
    cfg = config.from_dict(json.load(f))
  with jax.enable_x64(False):
    setup = experiment.Setup(cfg)
    p, s = setup.init_state()
    return checkpoints.restore(os.path.join(run, "checkpoints"), p, s)


@pytest.mark.slow
def test_two_processes_of_two_devices_match_one_process(tmp_path):
  ref = str(tmp_path / "ref")
  r = _run(_train("--set", "train.epochs=4", "--out", ref), timeout=300)
  assert r.returncode == 0, r.stderr

  run = str(tmp_path / "mp")
  procs = _processes(2, ["--set", "train.epochs=2", "--out", run])
  (out0, err0), (out1, err1) = wait_all(procs, timeout=400)
  assert [p.returncode for p in procs] == [0, 0], err0[-2000:] + err1[-2000:]
  assert "device 4 x cpu (mesh data=4 fsdp=1, 2 processes)" in out0
  assert "result test_accuracy" in out0
  assert "result" not in out1 and "train " not in out1  # process 0 reports
  assert "Traceback" not in err0 + err1

  # Resumed by both processes from their collective checkpoint.
  procs = _processes(2, ["--set", "train.epochs=4", "--out", run, "--resume"])
  (out0, err0), (out1, err1) = wait_all(procs, timeout=400)
  assert [p.returncode for p in procs] == [0, 0], err0[-2000:] + err1[-2000:]
  assert f"resuming {run} from epoch 2" in out0

  # (the resume's event line records train.epochs 2 -> 4)
  lines = [l for l in read_jsonl(os.path.join(run, "metrics.jsonl"))
           if "event" not in l]
  assert [l["epoch"] for l in lines] == [1, 2, 3, 4]  # written once, by process 0
  ref_lines = read_jsonl(os.path.join(ref, "metrics.jsonl"))
  np.testing.assert_allclose([l["train_loss"] for l in lines],
                             [l["train_loss"] for l in ref_lines], rtol=1e-4)
  summary = read_json(os.path.join(run, "summary.json"))
  assert summary["process_count"] == 2 and summary["devices_used"] == 4

  e1, p1, s1 = _ckpt_params(ref)
  e2, p2, s2 = _ckpt_params(run)  # an 4-device checkpoint restores on one
  assert e1 == e2 == 4
  diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
             for a, b in zip(jax.tree_util.tree_leaves(p1),
                             jax.tree_util.tree_leaves(p2)))
  print(f"2 processes x 2 devices vs 1 device, 4 epochs: max |dparam| {diff:.2g}")
  assert diff <= PARAM_TOL


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0])
def test_a_process_that_dies_stops_the_other_within_the_heartbeat(tmp_path,
                                                                   victim):
  run = str(tmp_path / "die")
  heartbeat = 5
  procs = _processes(2, ["--set", "train.epochs=1000", "--out", run],
                     heartbeat=heartbeat)
  try:
    metrics = os.path.join(run, "metrics.jsonl")
    deadline = time.time() + 300
    while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
      assert time.time() < deadline, "training never started"
      assert all(p.poll() is None for p in procs), procs[0].stderr.read()[-2000:]
      time.sleep(0.1)
    os.killpg(procs[victim].pid, signal.SIGKILL)
    t0 = time.time()
    other = procs[1 - victim]
    _, err = other.communicate(timeout=heartbeat + 60)  # bounded, not a hang
    waited = time.time() - t0
  finally:
    wait_all(procs, timeout=5)
  assert other.returncode != 0
  # Either JAX's coordination service aborts it (the peer's heartbeats
  # stopped, or the coordinator's socket closed), or a collective in flight
  # fails first and funcnet.cli leaves at once with one line naming it.
  clear = ("another task died", "heartbeat timeout",
           f"funcnet: error: process {1 - victim} of 2 failed")
  assert any(c in err for c in clear), err[-2000:]
  print(f"process {1 - victim} stopped {waited:.1f} s after process {victim} "
        f"was killed (heartbeat timeout {heartbeat} s)")
  assert waited < heartbeat + 30


# --- precision and accumulation, in-process ---------------------------------

def _mlp_batch(key, m=12, dtype=jnp.float64):
  model = mlp([5, 7, 3], activation="tanh", output_activation="softmax",
              init="xavier")
  params = model.init(key, dtype)
  x = jax.random.normal(jax.random.fold_in(key, 1), (m, 5), dtype)
  y = jax.random.randint(jax.random.fold_in(key, 2), (m,), 0, 3)
  return model, params, x, y


@pytest.mark.parametrize("source, k", [("manual", 2), ("autodiff", 3),
                                       ("cnn", 6)])
def test_accumulated_gradient_equals_the_whole_batch(getkey, source, k, x64):
  key = getkey()
  if source == "cnn":
    model = cnn((16,), 3, image_shape=(4, 4), channels=(2,))
    params = model.init(key, jnp.float64)
    x = jax.random.normal(jax.random.fold_in(key, 1), (12, 16), jnp.float64)
    y = jax.random.randint(jax.random.fold_in(key, 2), (12,), 0, 3)
    vg = autodiff.value_and_grad(model, "cross_entropy")
  else:
    model, params, x, y = _mlp_batch(key)
    vg = (backprop if source == "manual" else autodiff).value_and_grad(
        model, "cross_entropy")
  c, g = vg(params, x, y)
  ca, ga = jax.jit(precision.accumulate(vg, k))(params, x, y, None)
  assert float(ca) == pytest.approx(float(c), rel=1e-12)
  for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(ga)):
    np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("source", ["manual", "autodiff"])
def test_bfloat16_compute_keeps_float32_params_loss_and_gradients(getkey,
                                                                  source):
  model, params, x, y = _mlp_batch(getkey(), m=64, dtype=jnp.float32)
  from funcnet import train
  c32, g32 = train.gradient_fn(model, "cross_entropy", source)(params, x, y)
  c16, g16 = jax.jit(train.gradient_fn(model, "cross_entropy", source,
                                       jnp.bfloat16))(params, x, y, None)
  assert c16.dtype == jnp.float32 and np.isfinite(float(c16))
  assert float(c16) == pytest.approx(float(c32), rel=2e-2)
  worst = 0.0
  for a, b in zip(jax.tree_util.tree_leaves(g32), jax.tree_util.tree_leaves(g16)):
    assert b.dtype == jnp.float32
    worst = max(worst, float(jnp.linalg.norm(b - a) / jnp.linalg.norm(a)))
  assert 1e-5 < worst < 5e-2  # really computed in bfloat16, and close


@pytest.mark.slow
def test_bfloat16_digits_accuracy_within_a_point_of_float32(tmp_path):
  def train(name, *sets):
    return subprocess.Popen(
        [sys.executable, "-m", "funcnet.cli", "train", "--config",
         "configs/digits_mlp.toml", "--set", "run.plots=false", *sets,
         "--out", str(tmp_path / name)], cwd=ROOT, env=ENV,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
  procs = [train("f32"), train("bf16", "--set", "train.compute_dtype=bfloat16")]
  outs = wait_all(procs, timeout=600)
  assert [p.returncode for p in procs] == [0, 0], outs
  acc = {}
  for name in ("f32", "bf16"):
    s = read_json(tmp_path / name / "summary.json")
    lines = read_jsonl(tmp_path / name / "metrics.jsonl")
    assert all(np.isfinite(l["train_loss"]) for l in lines)
    acc[name] = s["test_accuracy"]
  print(f"digits test accuracy: float32 {acc['f32']:.4f}, "
        f"bfloat16 compute {acc['bf16']:.4f}")
  assert acc["f32"] > 0.95
  assert abs(acc["bf16"] - acc["f32"]) <= 0.01


# --- setup errors, in-process -----------------------------------------------

def test_plans_that_do_not_fit_the_devices_are_refused():
  jax.devices()  # this process has one CPU device, already started
  assert parallel.make_plan(0) is None and parallel.make_plan(1) is None
  with pytest.raises(ConfigError, match="only 1 devices are present"):
    parallel.make_plan(2)
  with pytest.raises(ConfigError, match="does not divide"):
    parallel.make_plan(0, fsdp=3)
  with pytest.raises(ConfigError, match="before JAX starts"):
    parallel.cpu_devices(4)
  with pytest.raises(ConfigError, match="go together"):
    parallel.initialize("127.0.0.1:1234")
  with pytest.raises(ConfigError, match="expected 0..1"):
    parallel.initialize("127.0.0.1:1234", 2, 2)
  with pytest.raises(ConfigError, match="out of range"):
    config.load(None, ["parallel.fsdp=0"])
  with pytest.raises(ConfigError, match="expected one of"):
    config.load(None, ["train.compute_dtype=float16"])


def test_accumulate_must_divide_the_batch():
  from funcnet import experiment
  cfg = config.load(None, ["train.accumulate=3", "train.batch_size=32"])
  with pytest.raises(ConfigError, match="accumulate = 3 does not divide batch_size = 32"):
    with jax.enable_x64(False):
      experiment.Setup(cfg)


def test_cli_refuses_half_a_process_description():
  r = _run([sys.executable, "-m", "funcnet.cli", "train", "--coordinator",
            "127.0.0.1:1", "--out", "unused"], timeout=120)
  assert r.returncode == 2
  assert r.stderr.count("\n") == 1 and "go together" in r.stderr


# --- the TPU recipe ----------------------------------------------------------

def test_tpu_recipe_dry_run_prints_the_exact_commands():
  r = _run(["bash", "scripts/tpu/tpu.sh", "--dry-run", "--name", "fn",
            "--zone", "us-central2-b", "--type", "v4-32", "--bucket",
            "gs://b", "all", "delete", "--", "--config",
            "configs/digits_mlp.toml", "--set", "model.mlp.hidden=[64, 64]"],
           timeout=60)
  assert r.returncode == 0, r.stderr
  cmds = [shlex.split(l[2:]) for l in r.stdout.splitlines() if l.startswith("+ ")]
  tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
  assert cmds[0] == tpu + ["create", "fn", "--zone=us-central2-b",
                           "--accelerator-type=v4-32",
                           "--version=tpu-ubuntu2204-base"]
  assert cmds[-1] == tpu + ["delete", "fn", "--zone=us-central2-b", "--quiet"]
  ssh = [c for c in cmds if c[:5] == tpu + ["ssh"]]
  assert all("--worker=all" in c for c in ssh)
  remote = [c[c.index("--command") + 1] for c in ssh]
  assert any("pip install -q -e \".[tpu]\"" in c for c in remote)
  run = [c for c in remote if "funcnet train" in c][0]
  args = shlex.split(run.split("funcnet train", 1)[1].split("2>&1")[0])
  assert args == ["--distributed", "--out", "runs/fn", "--progress", "never",
                  "--set", "run.checkpoint_dir=gs://b/fn", "--config",
                  "configs/digits_mlp.toml", "--set", "model.mlp.hidden=[64, 64]"]
  fetch = [c for c in cmds if c[:5] == tpu + ["scp"] and "--recurse" in c][0]
  assert "--worker=0" in fetch and "fn:funcnet/runs/fn" in fetch

  bad = _run(["bash", "scripts/tpu/tpu.sh", "--dry-run", "--bucket", "b", "run"],
             timeout=60)
  assert bad.returncode == 2 and "expected gs://BUCKET" in bad.stderr
