"""Sweeps: every vectorised variant equals the same config trained alone.

The reference is always the ordinary path, ``funcnet train``'s
(``experiment.train_and_evaluate`` into a run folder, params read back from
its checkpoint, or ``Setup(cfg).fit()``): the same batch order, keys and
update, so params may differ only by the summation order of a batched
matmul (1e-5 relative in float32, 1e-10 in float64).
"""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from funcnet import config, experiment, sweep, tasks
from funcnet.run import rundir
from funcnet.errors import ConfigError
from funcnet.sweep import grid as grid_lib
from helpers import read_json, read_jsonl, start_processes, tree_rel, wait_all

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
for _k in ("JAX_ENABLE_X64", "JAX_NUM_CPU_DEVICES"):
  ENV.pop(_k, None)


def funcnet(*args, timeout=300):
  return subprocess.run([sys.executable, "-m", "funcnet.cli", *args], cwd=ROOT,
                        env=ENV, capture_output=True, text=True, timeout=timeout)


def _alone(cfg, tmp_path, name):
  """The config trained by funcnet train's path; its final params."""
  run = str(tmp_path / name)
  cfg = json.loads(json.dumps(cfg))
  cfg["run"]["plots"] = False
  experiment.train_and_evaluate(cfg, run, progress="never", log=lambda *a: None)
  return rundir.load_trained(run).params, read_jsonl(os.path.join(run, "metrics.jsonl"))


def test_four_vectorised_variants_equal_each_trained_alone(tmp_path):
  base = config.load(None, ["train.epochs=3", "model.mlp.hidden=[32]"])
  res = sweep.run(base, {"optimizer.learning_rate": [0.01, 0.002],
                         "seed": [0, 1]}, log=lambda *a: None)
  assert res.groups == 1 and len(res.variants) == 4
  finals = {round(v.final["test_loss"], 6) for v in res.variants}
  assert len(finals) == 4  # four different trainings, not one repeated
  # Alone: the two that differ in both keys (the slow suite's float64 test
  # compares all four).
  for v in (res.variants[0], res.variants[3]):
    params, history = _alone(v.cfg, tmp_path, f"v{v.index}")
    assert tree_rel(params, v.params) < 1e-5, v.assignment
    assert v.status == "done" and len(v.history) == len(history) == 3
    for a, b in zip(v.history, history):
      assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
      assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=1e-6)


@pytest.mark.slow
def test_float64_variants_equal_alone_to_1e10(x64):
  base = config.load(None, ["train.epochs=2", "train.dtype=float64",
                            "model.mlp.hidden=[16]", "optimizer.name=momentum"])
  res = sweep.run(base, {"optimizer.beta": [0.5, 0.9],
                         "optimizer.learning_rate": [0.05, 0.01]},
                  log=lambda *a: None)
  for v in res.variants:
    alone = experiment.Setup(v.cfg).fit()
    assert tree_rel(alone.state.params, v.params) < 1e-10, v.assignment


def test_a_diverging_variant_is_marked_and_the_others_finish(tmp_path):
  base = config.load(None, ["train.epochs=3", "optimizer.name=sgd",
                            "model.mlp.hidden=[32]"])
  res = sweep.run(base, {"optimizer.learning_rate": [0.05, 1e5]},
                  log=lambda *a: None)
  good, bad = res.variants
  assert bad.status == "diverged" and "non-finite" in bad.reason
  assert good.status == "done" and len(good.history) == 3
  assert good.final["test_accuracy"] > 0.8
  for v in (good, bad):  # the diverged one keeps fit's last good params
    alone = experiment.Setup(v.cfg).fit()
    assert alone.status == v.status and alone.reason == v.reason
    assert len(alone.history) == len(v.history)
    assert tree_rel(alone.state.params, v.params) < 1e-5


@pytest.mark.slow
def test_early_stopping_and_epochs_act_per_variant(tmp_path):
  base = config.load(None, ["model.mlp.hidden=[32]", "optimizer.name=sgd",
                            "optimizer.learning_rate=0.5"])
  res = sweep.run(base, {"train.patience": [1, 0], "train.epochs": [6, 3]},
                  log=lambda *a: None)
  assert res.groups == 1
  for v in res.variants:
    alone = experiment.Setup(v.cfg).fit()
    assert v.status == alone.status
    assert [h["epoch"] for h in v.history] == [h["epoch"] for h in alone.history]
    assert tree_rel(alone.state.params, v.params) < 1e-5


def test_early_stopping_and_epochs_act_per_variant_fast():
  """The slow test above on a smaller net and set: each variant stops as it
  would alone (the engine's per-variant patience and epochs). The one that
  stops early is trained alone; the others train the same steps (patience
  and epochs are read on the host), so their records are prefixes of the
  longest one's."""
  base = config.load(None, ["model.mlp.hidden=[4]", "optimizer.name=sgd",
                            "optimizer.learning_rate=2.0", "data.name=moons",
                            "train.batch_size=50"])
  res = sweep.run(base, {"train.patience": [1, 0], "train.epochs": [8, 2]},
                  log=lambda *a: None)
  assert res.groups == 1
  p1e8, p1e2, p0e8, p0e2 = res.variants
  alone = experiment.Setup(p1e8.cfg).fit()
  assert p1e8.status == alone.status == "early_stopped"
  assert [h["epoch"] for h in p1e8.history] == [h["epoch"] for h in
                                                alone.history]
  assert tree_rel(alone.state.params, p1e8.params) < 1e-5
  stop = len(p1e8.history)
  assert 2 < stop < 8  # it stops after epoch 2 and before 8
  assert (p0e8.status, p0e2.status, p1e2.status) == ("done",) * 3
  loss = lambda v: [h["train_loss"] for h in v.history]  # noqa: E731
  assert len(loss(p0e8)) == 8 and loss(p0e2) == loss(p0e8)[:2]
  assert loss(p1e8) == loss(p0e8)[:stop] and loss(p1e2) == loss(p0e8)[:2]


@pytest.mark.slow
def test_traced_schedule_and_dropout_and_stacked_data():
  base = config.load(None, [
      "train.epochs=2", "model.mlp.hidden=[16]", "data.name=moons",
      "train.batch_size=16", "schedule.name=exponential_decay",
      "schedule.decay_steps=20"])
  res = sweep.run(base, {"schedule.decay_rate": [0.5, 0.9],
                         "model.mlp.dropout": [0.1, 0.3],
                         "data.seed": [0, 1]}, log=lambda *a: None)
  assert res.groups == 1  # one program: arrays for the rates, stacked data
  for v in res.variants:
    alone = experiment.Setup(v.cfg).fit()
    assert tree_rel(alone.state.params, v.params) < 1e-5, v.assignment
    assert [h["lr"] for h in alone.history] == [h["lr"] for h in v.history]


@pytest.mark.slow
def test_shape_keys_and_switches_split_the_grid_into_groups():
  base = config.load(None, ["train.epochs=1", "model.mlp.hidden=[8]"])
  res = sweep.run(base, {"train.batch_size": [16, 32],
                         "optimizer.clip_norm": [0.0, 1.0],
                         "optimizer.learning_rate": [0.01, 0.02]},
                  log=lambda *a: None)
  assert res.groups == 4 and len(res.variants) == 8
  assert len({v.group for v in res.variants}) == 4
  for v in res.variants[::3]:
    alone = experiment.Setup(v.cfg).fit()
    assert tree_rel(alone.state.params, v.params) < 1e-5, v.assignment


def test_a_regression_sweep_ranks_the_smallest_loss_first(tmp_path):
  """Every other ranking test is a classification sweep; here the loss is
  the metric, lower is better, and the order is recomputed from the
  variants' own histories."""
  base = config.load(None, ["data.name=regression", "train.loss=mse",
                            "model.mlp.output_activation=identity",
                            "model.mlp.hidden=[8]", "train.epochs=2",
                            "optimizer.name=sgd", "run.plots=false"])
  rates = [1e-4, 0.05, 0.01]
  res = sweep.run(base, {"optimizer.learning_rate": rates},
                  out=str(tmp_path / "sw"), log=lambda *a: None)
  assert (res.metric, res.higher_is_better) == ("test_loss", False)
  losses = [v.history[-1]["test_loss"] for v in res.variants]
  assert len(set(losses)) == 3
  want = sorted(range(3), key=lambda i: losses[i])
  assert [v.index for v in res.ranked()] == want
  assert res.best.index == want[0] and res.best.final["test_loss"] == min(losses)
  # the files say the same: results.md best first, best.toml the best rate
  with open(tmp_path / "sw" / "results.md") as f:
    body = f.read().splitlines()[2:]
  assert [int(line.split("|")[1]) for line in body] == want
  best = config.load(str(tmp_path / "sw" / "best.toml"))
  assert best["optimizer"]["learning_rate"] == rates[want[0]]


def test_a_variant_without_a_final_metric_ranks_last():
  fake = lambda i, hist: sweep.VariantResult(  # noqa: E731
      i, {}, {}, "done", None, hist, None, 0, 0.0, "regression")
  variants = [fake(0, [{"epoch": 1, "test_loss": 2.0}]),
              fake(1, [{"epoch": 1, "test_loss": float("nan")}]),
              fake(2, [{"epoch": 1, "test_loss": 0.5}]), fake(3, [])]
  res = sweep.SweepResult(variants, [], *tasks.headline("regression"),
                          1, 0.0)
  assert [v.index for v in res.ranked()][:2] == [2, 0]
  cls = sweep.SweepResult(variants, [], *tasks.headline("classification"),
                          1, 0.0)
  assert (cls.metric, cls.higher_is_better) == ("test_accuracy", True)


def test_switches_and_shape_keys_split_programs_and_traced_values_do_not():
  """program_key alone (the slow test above trains such a grid): each
  switch on or off is another program; its nonzero values are one."""
  base = config.load(None, [])
  key = lambda **sets: grid_lib.program_key(grid_lib.variant_config(  # noqa
      base, {k.replace("__", "."): v for k, v in sets.items()}))
  assert key(optimizer__learning_rate=0.1) == key(optimizer__learning_rate=0.2)
  assert key(seed=1) == key(seed=2)
  assert key(train__batch_size=16) != key(train__batch_size=32)
  for switch, on, other in [("optimizer.clip_norm", 1.0, 2.0),
                            ("optimizer.l2", 1e-4, 1e-3),
                            ("model.mlp.dropout", 0.1, 0.3),
                            ("schedule.warmup_steps", 5, 10)]:
    assert switch in grid_lib.SWITCHES
    k = switch.replace(".", "__")
    assert key(**{k: 0 * on}) != key(**{k: on}), switch
    assert key(**{k: on}) == key(**{k: other}), switch


def test_a_groups_cached_programs_are_keyed_without_its_swept_values(
    monkeypatch):
  """The group's epoch and evaluation go to funcnet's program cache with an
  identity that leaves out the swept values (they are the programs'
  arguments: an Optuna batch of other rates loads the same programs) but
  keeps every value the program holds as a constant, swept or not; the
  slow test of tests/test_startup.py loads them in a second process."""
  from funcnet.sweep import engine
  small = ["train.epochs=1", "model.mlp.hidden=[8]"]

  def identity(grid, *sets):
    cfg = config.load(None, [*small, *sets])
    vs = grid_lib.variants(cfg, [dict(zip(grid, v)) for v in
                                 zip(*grid.values())])
    setups = [experiment.Setup(v.cfg) for v in vs]
    return engine._group_identity(setups[0], grid_lib.traced_keys(
        [s.cfg for s in setups]), True, True)

  lr = "optimizer.learning_rate"
  a = identity({lr: [0.1, 0.2]})
  assert a is not None and a == identity({lr: [0.3, 0.4]})
  assert a != identity({lr: [0.1, 0.2]}, "optimizer.name='momentum'")
  # a traced key not swept is a constant of the program
  assert identity({"seed": [0, 1]}, f"{lr}=0.1") \
      != identity({"seed": [0, 1]}, f"{lr}=0.2")
  # and the sweep asks the cache for both programs with that identity
  asked = []
  real = engine.program_cache.compiled
  monkeypatch.setattr(engine.program_cache, "compiled",
                      lambda fn, args, ident, name=None, **kw: asked.append(
                          (name, ident)) or real(fn, args, None, name, **kw))
  sweep.run(config.load(None, small), {lr: [0.1, 0.2]}, log=lambda *a: None)
  assert [x for x in asked if x[0] and x[0].startswith("sweep")] \
      == [("sweep_epoch", a), ("sweep_evaluate", a)]


def test_grid_parsing_and_checks():
  assert grid_lib.split_values("[64],[128, 128],'a,b',3") == [
      "[64]", "[128, 128]", "'a,b'", "3"]
  g = sweep.parse_grid(["model.mlp.hidden=[64],[32,32]", "seed=0,1"])
  assert g == {"model.mlp.hidden": [[64], [32, 32]], "seed": [0, 1]}
  with pytest.raises(ConfigError, match="expected KEY=V1,V2"):
    sweep.parse_grid(["seed"])
  base = config.load(None)
  with pytest.raises(ConfigError, match="does not apply"):
    sweep.run(base, {"optimizer.beta": [0.5, 0.9]}, log=lambda *a: None)
  with pytest.raises(ConfigError, match="unknown config key"):
    sweep.run(base, {"optimizer.learnin_rate": [0.1]}, log=lambda *a: None)


@pytest.mark.slow
def test_variants_split_over_devices_equal_one_device(tmp_path):
  """3 variants padded to 4 fake devices, against the same on 1 device."""
  script = """
import json, sys
from funcnet import parallel
parallel.cpu_devices(int(sys.argv[1]))
import jax, numpy as np
from funcnet import config, sweep
base = config.load(None, ["train.epochs=2", "model.mlp.hidden=[16]"])
res = sweep.run(base, {"optimizer.learning_rate": [0.01, 0.003, 0.001]},
                log=lambda *a: None)
print(json.dumps({"devices": jax.device_count(), "params": [
    [np.asarray(l).tolist() for l in jax.tree_util.tree_leaves(v.params)]
    for v in res.variants]}))
"""
  out = {}
  for d in (1, 4):
    r = subprocess.run([sys.executable, "-c", script, str(d)], cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    out[d] = json.loads(r.stdout.strip().splitlines()[-1])
  assert out[4]["devices"] == 4
  for a, b in zip(out[1]["params"], out[4]["params"]):
    assert tree_rel([np.asarray(x) for x in a], [np.asarray(x) for x in b]) < 1e-5


@pytest.mark.slow
def test_sweep_command_writes_its_folder_and_best_toml_reproduces(tmp_path):
  out = str(tmp_path / "sw")
  r = funcnet("sweep", "--set", "train.epochs=4", "--set", "model.mlp.hidden=[32]",
              "--grid", "optimizer.learning_rate=0.03,0.003",
              "--grid", "seed=0,1", "--out", out)
  assert r.returncode == 0, r.stderr[-2000:]
  for f in ("results.csv", "results.md", "best.toml", "sweep.json",
            "heatmap.png", "curves.png", "variants/003/metrics.jsonl"):
    assert os.path.exists(os.path.join(out, f)), f
  with open(os.path.join(out, "results.csv")) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4 and {r["status"] for r in rows} == {"done"}
  best = max(rows, key=lambda r: float(r["final test_accuracy"]))
  doc = read_json(os.path.join(out, "sweep.json"))
  assert len(doc["variants"]) == 4 and len(doc["variants"][0]["history"]) == 4
  # The markdown table is sorted best first.
  with open(os.path.join(out, "results.md")) as f:
    md = f.read().splitlines()
  assert md[2].startswith(f"| {best['variant']} |")

  run = str(tmp_path / "again")
  r = funcnet("train", "--config", os.path.join(out, "best.toml"), "--out", run,
              "--set", "run.plots=false")
  assert r.returncode == 0, r.stderr[-2000:]
  acc = read_json(os.path.join(run, "summary.json"))["test_accuracy"]
  assert abs(acc - float(best["final test_accuracy"])) <= 0.005

  seq = str(tmp_path / "seq")
  r = funcnet("sweep", "--set", "train.epochs=4", "--set", "model.mlp.hidden=[32]",
              "--grid", "optimizer.learning_rate=0.03,0.003",
              "--grid", "seed=0,1", "--out", seq, "--sequential")
  assert r.returncode == 0, r.stderr[-2000:]
  with open(os.path.join(seq, "results.csv")) as f:
    for a, b in zip(rows, csv.DictReader(f)):
      assert float(a["final test_loss"]) == pytest.approx(
          float(b["final test_loss"]), rel=1e-4)


def test_sweep_command_mistakes_are_one_line(tmp_path, capsys):
  from funcnet import cli  # in-process: the same main, without 3 s of start-up
  def err(*args):
    assert cli.main(list(args)) == 2
    e = capsys.readouterr().err
    assert e.count("\n") == 1 and e.startswith("funcnet: error: "), e
    return e
  assert "does not apply" in err("sweep", "--grid", "optimizer.beta=0.5,0.9",
                                 "--out", str(tmp_path / "a"))
  assert "--grid" in err("sweep", "--out", str(tmp_path / "b"))
  assert "KIND one of" in err("sweep", "--search", "optuna", "--space",
                              "optimizer.learning_rate=lognormal:1,2",
                              "--out", str(tmp_path / "c"))


def test_optuna_search_in_process_asks_an_interrupted_trial_again(tmp_path):
  """Fast (the kill-and-resume command test is slow): a regression search
  (minimise the loss) whose study holds a trial asked and never told, as a
  killed search leaves it; every number checked against the trials' run
  folders."""
  import optuna
  from funcnet.sweep import search
  base = config.load(None, ["data.name=regression", "train.loss=mse",
                            "model.mlp.output_activation=identity",
                            "model.mlp.hidden=[8]", "train.epochs=1",
                            "optimizer.name=sgd", "run.plots=false"])
  space = search.parse_space(["optimizer.learning_rate=loguniform:1e-4,0.1"])
  out = str(tmp_path / "s")
  os.makedirs(out)
  killed = optuna.create_study(
      study_name="funcnet", storage=f"sqlite:///{out}/optuna.db",
      direction="minimize")
  lr0 = killed.ask(space).params["optimizer.learning_rate"]
  lines = []
  study = search.run(base, space, trials=3, parallel=3, out=out, seed=0,
                     log=lines.append)
  assert "trial 0 was interrupted; asking for its values again" in lines
  done = [t for t in study.get_trials() if search.STATUS in t.user_attrs]
  assert len(done) == 3
  assert lr0 in [t.params["optimizer.learning_rate"] for t in done]
  for t in done:  # told the final test loss its run folder holds
    records = read_jsonl(os.path.join(out, "variants", f"{t.number:03d}",
                                      "metrics.jsonl"))
    assert t.value == [r for r in records if "test_loss" in r][-1]["test_loss"]
  best = min(done, key=lambda t: t.value)
  assert study.best_trial.number == best.number
  with open(os.path.join(out, "results.md")) as f:
    order = [int(line.split("|")[1]) for line in f.read().splitlines()[2:]]
  assert order == [t.number for t in sorted(done, key=lambda t: t.value)]
  got = config.load(os.path.join(out, "best.toml"))
  assert got["optimizer"]["learning_rate"] == best.params[
      "optimizer.learning_rate"]
  # the same --out with another space is refused, the folder kept
  with pytest.raises(ConfigError, match="another space"):
    search.run(base, search.parse_space(["train.batch_size=int:8,64"]),
               trials=4, parallel=1, out=out, log=lines.append)


def test_a_search_trial_is_told_its_final_metric_not_its_best(tmp_path,
                                                             monkeypatch):
  """Documented: each trial is told its final main metric. Trained trials
  rarely end worse than their best, so the training is stubbed with
  histories that do (nothing compiles)."""
  from funcnet.sweep import results as results_lib
  from funcnet.sweep import search

  def train_variants(vs, cache=None, log=print):
    del cache, log
    return [sweep.VariantResult(
        v.index, v.assignment, v.cfg, "done", None,
        [{"epoch": 1, "train_loss": 0.1, "test_loss": 0.25},
         {"epoch": 2, "train_loss": 0.1, "test_loss": 0.5 + v.index}],
        None, 0, 0.0, "regression") for v in vs]

  monkeypatch.setattr(sweep, "train_variants", train_variants)
  monkeypatch.setattr(results_lib, "write_variants", lambda vs, folder: None)
  base = config.load(None, ["data.name=regression", "train.loss=mse",
                            "model.mlp.output_activation=identity"])
  space = search.parse_space(["optimizer.learning_rate=loguniform:1e-4,0.1"])
  study = search.run(base, space, trials=2, parallel=2,
                     out=str(tmp_path / "s"), log=lambda *a: None)
  assert sorted((t.number, t.value) for t in study.trials) == [(0, 0.5),
                                                               (1, 1.5)]
  assert study.best_trial.number == 0


@pytest.mark.slow
def test_optuna_search_resumes_after_a_kill_and_beats_the_default(tmp_path):
  """32 trials in batches of 8; SIGKILLed after its first batch, then run
  again with the same flags: it finishes the 32 (the interrupted batch asked
  again), and its best trial beats the config's default learning rate."""
  import signal
  import time
  optuna = pytest.importorskip("optuna")
  out = str(tmp_path / "search")
  args = [sys.executable, "-m", "funcnet.cli", "sweep", "--search", "optuna",
          "--trials", "32", "--parallel", "8", "--set", "train.epochs=3",
          "--set", "model.mlp.hidden=[32]",
          "--space", "optimizer.learning_rate=loguniform:1e-4,1e-1",
          "--out", out]
  proc = subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, start_new_session=True)
  variants = os.path.join(out, "variants")
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None and not (
      os.path.isdir(variants) and len(os.listdir(variants)) >= 8):
    time.sleep(0.05)
  os.killpg(proc.pid, signal.SIGKILL)
  proc.communicate()
  first = len(os.listdir(variants))
  assert 8 <= first < 32, "the kill should land mid-search"

  r = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True,
                     timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  study = optuna.load_study(study_name="funcnet",
                            storage=f"sqlite:///{out}/optuna.db")
  trials = study.get_trials()
  finished = [t for t in trials if "funcnet_status" in t.user_attrs]
  assert len(finished) == 32
  assert not [t for t in trials if t.state.name == "RUNNING"]
  assert len(trials) <= 40  # at most one batch asked twice
  with open(os.path.join(out, "results.csv")) as f:
    assert len(list(csv.DictReader(f))) == 32

  default = config.load(None, ["train.epochs=3", "model.mlp.hidden=[32]"])
  baseline = experiment.Setup(default).fit().history[-1]["test_accuracy"]
  assert study.best_value > baseline
  best = config.load(os.path.join(out, "best.toml"))
  assert best["optimizer"]["learning_rate"] == pytest.approx(
      study.best_params["optimizer.learning_rate"])


def _looped_cnn_sweep(sets):
  """Two learning rates of a one-epoch CNN (``sets`` on top) swept in one
  program, which must loop its variants (``lax.map``) on one CPU device."""
  base = config.load(None, ["model.kind=cnn", "train.epochs=1", *sets])
  lines = []
  res = sweep.run(base, {"optimizer.learning_rate": [0.01, 0.001]},
                  log=lines.append)
  assert any("looped (lax.map)" in line for line in lines), lines
  return res


def test_a_1d_cnn_sweep_equals_each_variant_alone():
  """The MNIST-1D CNN's path (1-D convolutions as im2col products, max
  pools, a dense head; autodiff, the config's default), shrunk: both
  variants of one program differ, and the second equals its config trained
  alone by fit (one fit: each compiles its own program). The digits are
  read as 64-step signals of one channel."""
  res = _looped_cnn_sweep(["model.cnn.channels=[4, 4]",
                           "model.cnn.kernel_size=5", "model.cnn.hidden=[8]",
                           "model.cnn.global_pool=false",
                           "train.batch_size=128"])
  a, b = res.variants
  assert tree_rel(a.params, b.params) > 1e-3
  alone = experiment.Setup(b.cfg).fit()
  assert tree_rel(alone.state.params, b.params) < 1e-5, b.assignment
  assert b.history[-1]["train_loss"] == pytest.approx(
      alone.history[-1]["train_loss"], rel=1e-5)


@pytest.mark.slow
def test_convolution_variants_loop_in_one_program_and_equal_alone():
  """On one CPU device a CNN's variants run one after another inside the
  compiled step (lax.map: XLA's CPU grouped convolution is slow); the
  results are still each variant's own."""
  res = _looped_cnn_sweep(["model.cnn.image_shape=[8, 8]",
                           "model.cnn.channels=[4]", "train.batch_size=64"])
  for v in res.variants:
    alone = experiment.Setup(v.cfg).fit()
    assert tree_rel(alone.state.params, v.params) < 1e-5, v.assignment


@pytest.mark.slow
def test_two_processes_of_two_devices_sweep_like_one_process(tmp_path):
  """The variant axis split over 2 processes x 2 CPU devices (loopback):
  every variant's curve and final metrics equal the one-process sweep's,
  and only process 0 writes the folder."""
  common = ["--set", "train.epochs=2", "--set", "model.mlp.hidden=[16]",
            "--grid", "optimizer.learning_rate=0.01,0.003", "--grid", "seed=0,1"]
  ref = str(tmp_path / "ref")
  r = funcnet("sweep", *common, "--out", ref)
  assert r.returncode == 0, r.stderr[-2000:]
  run = str(tmp_path / "mp")
  procs = start_processes(
      2, ["sweep", *common, "--out", run, "--set", "parallel.heartbeat_timeout=10",
          "--set", "parallel.shutdown_timeout=30"], cwd=ROOT, env=ENV)
  outs = wait_all(procs, timeout=400)
  assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
  assert "on 4 devices" in outs[0][0]
  # Process 0 writes and reports (XLA's Gloo collectives print a line of
  # their own on every process).
  assert "group 1" not in outs[1][0] and "sweep folder" not in outs[1][0]
  a = read_json(os.path.join(ref, "sweep.json"))["variants"]
  b = read_json(os.path.join(run, "sweep.json"))["variants"]
  for u, w in zip(a, b):
    assert u["assignment"] == w["assignment"]
    np.testing.assert_allclose([h["train_loss"] for h in u["history"]],
                               [h["train_loss"] for h in w["history"]], rtol=1e-5)
    np.testing.assert_allclose(u["history"][-1]["test_loss"],
                               w["history"][-1]["test_loss"], rtol=1e-5)
