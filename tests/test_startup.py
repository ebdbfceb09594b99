"""Time to first result (issue 15): what a run compiles, the persistent
compilation cache, imports a command does not need, the digits without
scikit-learn, initialisation as one compiled call with unchanged bits, and
checks before any compilation.

Subprocesses run the real command with ``FUNCNET_TIMINGS`` (what JAX
built, from ``jax.monitoring``) and a temporary compilation cache, never
the user's (tests/conftest.py turns it off for everything else).
"""

import collections
import csv
import io
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import config, data, experiment, initializers, timings, train
from funcnet.experiment import setup as experiment_setup
from funcnet.bench import startup
from funcnet.run import checkpoints, compile_cache
from funcnet.train import TrainState, program_cache
from helpers import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
ENV.pop("JAX_ENABLE_X64", None)
ENV.pop("JAX_COMPILATION_CACHE_DIR", None)

# What a default one-epoch run builds, each through
# funcnet.train.program_cache: the initial params and optimizer state
# (experiment.Setup.init_state), the epoch and the evaluation. The run's
# key and fit's keys are made on the host (train.host_keys): two programs
# fewer than on 7 December; the learning rate each record holds is the
# default's constant, tabled without a program (train.monitor.rate_tables;
# a schedule that varies is one program, `jit(rates)`, for every epoch's).
PROGRAMS = ["jit(init)", "jit(epoch)", "jit(evaluate)"]


def _python(*args, env=None, timeout=240):
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env or ENV,
                        capture_output=True, text=True, timeout=timeout)


def _train(out, cache, record, *sets):
  env = {**ENV, "FUNCNET_COMPILATION_CACHE": str(cache),
         "FUNCNET_TIMINGS": str(record), "FUNCNET_PROGRAM_CACHE": "1"}
  argv = ["-m", "funcnet.cli", "train", "--set", "train.epochs=1",
          "--progress", "never", "--out", str(out)]
  for s in sets:
    argv += ["--set", s]
  r = _python(*argv, env=env)
  with open(record) as f:
    return r, json.load(f)


@pytest.fixture(scope="module")
def cold_and_warm(tmp_path_factory):
  """The default config for one epoch, twice, on one new cache folder."""
  tmp = tmp_path_factory.mktemp("startup")
  cache = tmp / "xla"
  runs = [_train(tmp / name, cache, tmp / f"{name}.json")
          for name in ("cold", "warm")]
  for r, _ in runs:
    assert r.returncode == 0, r.stderr
  return tmp, cache, runs


@pytest.mark.slow
def test_a_default_run_compiles_what_it_needs_and_caches_it(cold_and_warm):
  tmp, cache, [(_, cold), _] = cold_and_warm
  # 26 before issue 15: each initialiser, split, fold_in, copy and
  # conversion compiled op by op. Each once; in no fixed order, since
  # init, the epoch and the evaluation compile on threads side by side.
  assert sorted(cold["names"]) == sorted(PROGRAMS), cold["names"]
  assert cold["compiled"] == len(PROGRAMS) and cold["cache_hits"] == 0
  # JAX's cache holds every program; funcnet's, those it keys itself, and
  # the two values it remembers (the pre-flight, the step's FLOPs)
  assert len([f for f in os.listdir(cache) if f.endswith("-cache")]) \
      == len(set(PROGRAMS))
  ours = sorted(f.split("-")[0] for f in os.listdir(cache / "programs"))
  assert ours == ["compute", "epoch", "evaluate", "init", "preflight"], ours


@pytest.mark.slow
def test_a_second_run_compiles_nothing_and_trains_the_same(cold_and_warm):
  tmp, _, [(_, cold), (_, warm)] = cold_and_warm
  assert sorted(warm["names"]) == sorted(cold["names"])
  assert warm["compiled"] == 0 and warm["cache_hits"] == len(PROGRAMS)
  # loaded without tracing, the learning rates' table too (the cold run
  # traced the model's steps, pre-flight and FLOP count)
  assert warm["traced"] == 0 and cold["traced"] > 10, (warm, cold)
  strip = lambda rs: [{k: v for k, v in r.items() if k != "time"} for r in rs]
  assert strip(read_jsonl(tmp / "cold" / "metrics.jsonl")) \
      == strip(read_jsonl(tmp / "warm" / "metrics.jsonl"))
  # every phase of the breakdown is there, and the final checkpoint is
  # complete before the command returns
  assert {"imports", "data", "init", "train", "save", "plots"} \
      <= set(warm["phases"])
  assert checkpoints.latest_epoch(str(tmp / "warm" / "checkpoints")) == 1


@pytest.mark.parametrize("sets, message", [
    (["train.batch_size=5000"], "larger than the 1437 training examples"),
    (["train.loss=mse"], "does not suit the classification data"),
], ids=["batch", "loss"])
def test_config_and_data_errors_come_before_any_compilation(tmp_path, sets,
                                                            message):
  r, rec = _train(tmp_path / "run", tmp_path / "xla", tmp_path / "t.json",
                  *sets)
  assert r.returncode == 2 and message in r.stderr, r.stderr
  assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
  assert rec["programs"] == 0


@pytest.mark.slow
def test_a_folder_holding_a_run_is_refused_before_the_data(cold_and_warm,
                                                          tmp_path):
  tmp, _, _ = cold_and_warm
  r, rec = _train(tmp / "cold", tmp_path / "xla", tmp_path / "t.json")
  assert r.returncode == 2 and "already holds checkpoints" in r.stderr
  assert rec["programs"] == 0 and "data" not in rec["phases"]


def test_help_starts_no_jax():
  r = _python("-X", "importtime", "-m", "funcnet.cli", "--help")
  assert r.returncode == 0 and "funcnet train" in r.stdout
  imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines()}
  assert not {"jax", "numpy", "orbax.checkpoint", "matplotlib"} & imported


def test_imports_are_lazy_but_every_public_name_is_there():
  # orbax and matplotlib only once a run saves or plots, scikit-learn never;
  # optax not for the default config's run (funcnet's optimizer), and
  # when a config asks for optax's (0.1 s of every run's start, issue 27)
  code = """
import sys
import funcnet
assert "jax" not in sys.modules and "funcnet.train" not in sys.modules
assert set(funcnet.__all__) <= set(dir(funcnet))
from funcnet import cli, experiment
from funcnet.run import rundir
funcnet.data.load("digits")
from funcnet import config
setup = experiment.Setup(config.load(None, []))
print(sorted(m for m in ("sklearn", "orbax.checkpoint", "matplotlib", "optax")
             if m in sys.modules))
experiment.Setup(config.load(None, ["optimizer.impl=optax"]))
print("optax" in sys.modules)
model = funcnet.mlp([3, 4, 2])
from funcnet import losses, train
assert funcnet.train is train and train.fit and funcnet.FuncnetError
assert funcnet.Model is type(model) and funcnet.experiment.Setup
try:
  funcnet.no_such_name
except AttributeError as e:
  print(e)
"""
  r = _python("-c", code)
  assert r.returncode == 0, r.stderr
  assert r.stdout.splitlines() == [
      "[]", "True", "module 'funcnet' has no attribute 'no_such_name'"]


def test_digits_are_scikit_learns_read_without_importing_it():
  from sklearn.datasets import load_digits
  x, y = data.bundled._load_digits()
  want_x, want_y = load_digits(return_X_y=True)
  assert x.dtype == want_x.dtype and y.dtype == want_y.dtype
  np.testing.assert_array_equal(x, want_x)
  np.testing.assert_array_equal(y, want_y)


def test_the_integer_csv_reader_is_loadtxt_or_declines():
  # random tables of integers with 1 to 15 digits: np.loadtxt's values
  rng = np.random.default_rng(0)
  for rows, cols, top in [(1, 1, 10), (7, 3, 17), (40, 65, 10**15 - 1)]:
    table = rng.integers(0, top, size=(rows, cols), endpoint=True)
    text = "".join(",".join(map(str, r)) + "\n" for r in table)
    got = data.bundled._integer_csv(text.encode())
    want = np.loadtxt(io.StringIO(text), delimiter=",", ndmin=2)
    assert got.dtype == want.dtype == np.float64
    np.testing.assert_array_equal(got, want)
  # anything else is left to loadtxt (None): a float, an empty field, a
  # missing last newline, CRLF, ragged rows, a sign, 16 digits
  for bad in [b"1.5,2\n", b"1,,2\n", b"1,2", b"1,2\r\n", b"1,2\n3\n",
              b"-1,2\n", b"1234567890123456,1\n", b""]:
    assert data.bundled._integer_csv(bad) is None, bad


# --- initialisation: one compiled call, the bits of op by op ----------------

def _shaped(init, key, shape, dtype):
  """The initialisers as written before issue 15 (a shaped draw, the scale
  multiplied op by op): what every run and test reference was made with."""
  fan_in, fan_out = initializers._fans(shape)
  if init == "normal":
    return jax.random.normal(key, shape, dtype)
  if init == "xavier":
    r = math.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, dtype, -r, r)
  return jax.random.normal(key, shape, dtype) * math.sqrt(2.0 / fan_in)


@pytest.mark.parametrize("init", ["normal", "xavier", "he"])
def test_initialisers_give_the_same_bits_op_by_op_and_jitted(init, getkey):
  shapes = [(64, 10), (5, 3, 8)]
  keys = [getkey() for _ in shapes]
  f = initializers.get(init)
  want = [_shaped(init, k, s, jnp.float32) for k, s in zip(keys, shapes)]
  eager = [f(k, s, jnp.float32) for k, s in zip(keys, shapes)]
  jitted = jax.jit(lambda ks: [f(k, s, jnp.float32)
                               for k, s in zip(ks, shapes)])(keys)
  for w, e, j in zip(want, eager, jitted):
    np.testing.assert_array_equal(e, w)
    np.testing.assert_array_equal(j, w)


def test_without_the_barrier_jit_would_round_he_differently(getkey):
  # Why initializers.scaled_normal has its barrier: XLA folds sqrt(2) of
  # jax.random.normal into the scale, one rounding instead of two.
  key, shape, c = getkey(), (64, 10), math.sqrt(2.0 / 64)
  folded = jax.jit(lambda k: jax.random.normal(k, shape) * c)(key)
  assert np.sum(np.asarray(folded) != np.asarray(_shaped("he", key, shape,
                                                         jnp.float32))) > 0


@pytest.mark.parametrize("sets", [
    [],
    pytest.param(["data.name=ratings", "model.kind=ncf", "train.loss=mse",
                  "model.ncf.hidden=[8]"], marks=pytest.mark.slow),
    pytest.param(["data.name=mnist1d", "model.kind=transformer",
                  "model.transformer.pool=cls"], marks=pytest.mark.slow),
], ids=["mlp", "ncf", "transformer"])
def test_setup_init_state_is_model_init_op_by_op(sets):
  setup = experiment.Setup(config.load(None, sets))
  params, opt_state = setup.init_state()
  k_init = jax.random.split(jax.random.key(setup.cfg["seed"]))[0]
  want = setup.model.init(k_init, setup.dtype)
  want_state = setup.optimizer.init(want)
  for a, b in zip(jax.tree_util.tree_leaves((params, opt_state)),
                  jax.tree_util.tree_leaves((want, want_state)), strict=True):
    np.testing.assert_array_equal(a, b)


def test_setups_whose_inits_are_the_same_program_keep_their_own_state_types():
  # Adam's and AdamW's states hold the same arrays, so their inits lower to
  # the same text; each Setup must still get its own optimizer's state
  # (it had AdamWState for Adam, and fit stopped in the while loop)
  for name in ("adamw", "adam", "adamw"):
    setup = experiment.Setup(config.load(None, [f"optimizer.name={name}"]))
    _, opt_state = setup.init_state()
    want = setup.optimizer.init(setup.model.init(jax.random.key(0)))
    assert (jax.tree_util.tree_structure(opt_state)
            == jax.tree_util.tree_structure(want))


def test_programs_run_once_compile_quick_and_give_the_default_bits(
    monkeypatch):
  # init, fit's keys and a bare fit's inits are compiled with XLA:CPU's
  # older fusion emitters and LLVM's level 1 (program_cache.QUICK_TO_COMPILE,
  # less what XLA_FLAGS sets: the fast loop sets both); the epoch and the
  # evaluation are jitted without options. The references below ask for
  # XLA's defaults explicitly, over the fast loop's XLA_FLAGS.
  quick = dict(program_cache.QUICK_TO_COMPILE)
  default = {"xla_cpu_use_fusion_emitters": True,
             "xla_backend_optimization_level": 2,
             "xla_cpu_parallel_codegen_split_count": 32}
  assert set(quick) == set(default)
  integers = dict(program_cache.INTEGERS_TO_COMPILE)
  assert integers == {**quick, "xla_backend_optimization_level": 0}
  monkeypatch.setattr(program_cache, "quick_options", lambda ints=False: dict(
      integers if ints else quick))
  setup = experiment.Setup(config.load(None, ["model.mlp.hidden=[16]"]))
  key, jit, seen = setup.key, jax.jit, []

  def spy(fn, *args, **kwargs):
    seen.append((getattr(fn, "__name__", "?"), kwargs.get("compiler_options")))
    return jit(fn, *args, **kwargs)

  monkeypatch.setattr(jax, "jit", spy)
  params = setup.init_state()
  program_cache.random_key(7)
  setup.fit(grads="autodiff", epochs=2, norms=False)
  train.fit(setup.model, setup.loss, setup.optimizer, setup.ds,
            options=setup.options()._replace(epochs=1))
  # keys of JAX's threefry are made on the host (train.host_keys); another
  # generator's compile quick, at level 0 (integers alone)
  rbg = setup.options()._replace(epochs=1, key=jax.random.key(3, impl="rbg"))
  train.fit(setup.model, setup.loss, setup.optimizer, setup.ds, options=rbg)
  with jax.default_prng_impl("rbg"):
    program_cache.random_key(8)
  monkeypatch.setattr(jax, "jit", jit)
  got = dict(seen)
  assert got["init"] == quick and got["_run_keys"] == integers
  assert got["_random_key"] == integers
  assert [n for n, _ in seen].count("_run_keys") == 1  # the rbg fit's
  assert got["epoch"] is None and got["evaluate"] is None
  assert ("init_fn", quick) in seen  # the bare fit's optimizer.init
  reference = jit(setup.initializer(), compiler_options=default)(key, None)
  for a, b in zip(jax.tree_util.tree_leaves(params),
                  jax.tree_util.tree_leaves(reference), strict=True):
    np.testing.assert_array_equal(a, b)


def test_quick_options_leave_what_xla_flags_sets(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
  assert program_cache.quick_options() == {
      "xla_cpu_use_fusion_emitters": False,
      "xla_cpu_parallel_codegen_split_count": 1}
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true "
                     "--xla_backend_optimization_level=3")
  assert program_cache.quick_options() == {
      "xla_cpu_parallel_codegen_split_count": 1}
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true "
                     "--xla_backend_optimization_level=3 "
                     "--xla_cpu_parallel_codegen_split_count=8")
  assert program_cache.quick_options() is None
  monkeypatch.setenv("XLA_FLAGS", "")
  assert program_cache.quick_options() == program_cache.QUICK_TO_COMPILE
  assert program_cache.quick_options(integers=True) == \
      program_cache.INTEGERS_TO_COMPILE


def test_a_fresh_one_epoch_fit_compiles_its_epoch_quick_to_the_same_numbers(
    monkeypatch):
  """A fresh fit of one short epoch compiles its epoch and evaluation with
  the quick options (they run once); two epochs, or a resumed fit's last
  one, keep XLA's defaults. The default MLP's params and metrics after the
  quick epoch equal, bit for bit, those of the same epoch compiled with
  XLA's defaults asked for explicitly; so are its metrics, but for the
  params' norm, a reduction whose order the older emitters may change: on
  an AVX2 CPU (AMD EPYC, 7 December 2026) it came out one ulp away, on
  the AVX-512 Xeon equal."""
  from funcnet.train import loop as train_loop
  quick = dict(program_cache.QUICK_TO_COMPILE)
  default = {"xla_cpu_use_fusion_emitters": True,
             "xla_backend_optimization_level": 2,
             "xla_cpu_parallel_codegen_split_count": 32}
  setup = experiment.Setup(config.load(None, ["model.mlp.hidden=[16]"]))
  calls, compiled = [], program_cache.compiled

  def spy(fn, args, identity, name=None, quick=False, **kw):
    calls.append((getattr(fn, "__name__", name), quick))
    return compiled(fn, args, identity, name, quick, **kw)

  monkeypatch.setattr(train_loop.program_cache, "compiled", spy)
  runs = {}
  for name, options in (("quick", quick), ("default", default)):
    monkeypatch.setattr(program_cache, "quick_options",
                        lambda ints=False, o=options: dict(o))
    calls.clear()
    r = setup.fit(epochs=1)
    runs[name] = r
    assert ("epoch", True) in calls and ("evaluate", True) in calls
  for a, b in zip(jax.tree_util.tree_leaves(runs["quick"].state.params),
                  jax.tree_util.tree_leaves(runs["default"].state.params),
                  strict=True):
    np.testing.assert_array_equal(a, b)
  [quick_h], [default_h] = runs["quick"].history, runs["default"].history
  np.testing.assert_allclose(quick_h.pop("param_norm"),
                             default_h.pop("param_norm"), rtol=2.4e-7, atol=0)
  assert quick_h == {**default_h, "time": quick_h["time"]}
  calls.clear()
  two = setup.fit(epochs=2)
  assert ("epoch", False) in calls and ("epoch", True) not in calls
  calls.clear()
  setup.fit(two.state._replace(epoch=1), epochs=2)  # resumed: its last epoch
  assert ("epoch", True) not in calls


def test_setups_of_the_same_program_share_one_executable():
  a, b = (experiment.Setup(config.load(None, [f"optimizer.learning_rate={lr}",
                                              "model.mlp.hidden=[7]"]))
          for lr in (0.1, 0.2))
  before = len(experiment_setup._PROGRAMS)
  a.init_state()
  b.init_state()
  assert len(experiment_setup._PROGRAMS) == before + 1


# --- the cache folder, the timings, the saver, the benchmark's table --------

def test_cache_folder_follows_the_config_and_the_environment(monkeypatch,
                                                              tmp_path):
  monkeypatch.setenv("FUNCNET_CACHE", str(tmp_path / "root"))
  monkeypatch.delenv(compile_cache.ENV, raising=False)
  assert compile_cache.folder() == str(tmp_path / "root" / "xla")
  assert compile_cache.folder(on=False) is None
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "there"))
  assert compile_cache.folder() == str(tmp_path / "there")
  for off in ("off", "0", "False", "no"):
    monkeypatch.setenv(compile_cache.ENV, off)
    assert compile_cache.folder() is None
  assert config.DEFAULTS["run"]["compilation_cache"] is True


def test_an_unusable_cache_folder_leaves_the_cache_off_with_a_note(
    monkeypatch, tmp_path, no_jax_cache):
  blocker = tmp_path / "a-file"
  blocker.write_text("")
  monkeypatch.setenv(compile_cache.ENV, str(blocker / "xla"))
  notes = []
  assert compile_cache.enable(note=notes.append) is None
  assert len(notes) == 1 and "compilation cache off" in notes[0]
  assert jax.config.jax_compilation_cache_dir is None  # JAX left untouched


@pytest.mark.slow
def test_a_run_with_an_unusable_cache_folder_goes_on_without_it(tmp_path):
  blocker = tmp_path / "a-file"
  blocker.write_text("")
  r, rec = _train(tmp_path / "run", blocker / "xla", tmp_path / "t.json")
  assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
  assert r.stderr.count("\n") == 1 and "compilation cache off" in r.stderr
  assert rec["compiled"] == len(PROGRAMS) and rec["cache_hits"] == 0


def test_an_async_save_is_a_copy_complete_after_close(tmp_path):
  params = {"W": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
  want = jax.tree_util.tree_map(np.asarray, params)
  saver = checkpoints.Saver(str(tmp_path / "ck"), keep=2)
  saver.save(TrainState(params, (), 1))
  for a in jax.tree_util.tree_leaves(params):
    a.delete()  # what the next epoch's donation does to them
  saver.close()
  template = jax.tree_util.tree_map(jnp.zeros_like, want)
  epoch, got, _ = checkpoints.restore(str(tmp_path / "ck"), template, ())
  assert epoch == 1
  for a, b in zip(jax.tree_util.tree_leaves(got),
                  jax.tree_util.tree_leaves(want)):
    np.testing.assert_array_equal(a, b)


def test_the_startup_table_sets_medians_against_the_floor():
  rec = lambda wall, compiled: {  # noqa: E731
      "wall_s": wall, "programs": 7, "compiled": compiled,
      "cache_hits": 7 - compiled, "compile_s": 1.0, "trace_s": 0.1,
      "lower_s": 0.2, "breakdown": dict.fromkeys(startup.PHASES, 0.1)}
  result = {"floor": [1.0, 2.0, 1.5], "cold": [rec(7, 7), rec(8, 7), rec(6, 7)],
            "warm": [rec(1.2, 0), rec(1.8, 0), rec(1.5, 0)],
            "load": ((0.5, 0, 0), (1.0, 0, 0))}
  table = startup.format_table(result)
  assert "floor (import jax, one op): 1.50 s [1.00, 2.00]" in table
  cold, warm = (next(line.split() for line in table.splitlines()
                     if line.startswith(m)) for m in ("cold", "warm"))
  assert cold == ["cold", "7.00", "4.67", "<=", "2.0", "missed", "7", "0"]
  assert warm == ["warm", "1.50", "1.00", "<=", "1.3", "met", "0", "7"]


def test_timings_count_phases_and_write_nothing_unasked(monkeypatch, tmp_path):
  monkeypatch.delenv(timings.ENV, raising=False)
  with timings.phase("unit-test"):
    pass
  assert "unit-test" in timings.snapshot()["phases"]
  timings.write("train")  # no file asked for: nothing happens
  monkeypatch.setenv(timings.ENV, str(tmp_path / "t.json"))
  timings.write("train")
  rec = json.loads((tmp_path / "t.json").read_text())
  assert rec["command"] == "train" and rec["compiled"] == rec["programs"] \
      - rec["cache_hits"]


@pytest.mark.slow
def test_bench_startup_runs_end_to_end():
  r = _python("-m", "funcnet.cli", "bench", "startup", "--repeats", "1",
              timeout=600)
  assert r.returncode == 0, r.stderr
  assert "floor (import jax, one op)" in r.stdout
  rows = [l.split() for l in r.stdout.splitlines()
          if l.startswith(("cold", "warm"))]
  assert [row[0] for row in rows] == ["cold", "warm"] * 2
  # warm: nothing compiled, all cached
  assert rows[1][-2:] == ["0", str(len(PROGRAMS))]


# --- funcnet's program cache: loaded without tracing, never a wrong one -----

@pytest.fixture
def program_dir(monkeypatch, tmp_path):
  """funcnet.train.program_cache on, in a temporary folder (JAX's own
  cache stays off, as tests/conftest.py leaves it)."""
  where = tmp_path / "programs"
  monkeypatch.setattr(program_cache, "folder", lambda: str(where))
  monkeypatch.setattr(program_cache, "_LOADED", {})
  return where


def _new_process():
  """Forget the executables this process holds, as a new process would."""
  program_cache._LOADED.clear()


def _new_affine():
  """``(f, c)``: ``f(w, x) = tanh(x w) + c`` with a ``c`` drawn for the
  call, a program new to this process and to JAX's cache (the suite's
  per-process cache, tests/conftest.py), which XLA compiles and this
  cache therefore keeps (a program JAX has already is not kept)."""
  c = float(np.random.default_rng().uniform(1, 2))
  return (lambda w, x: jnp.tanh(x @ w) + c), c


def test_a_cached_program_is_loaded_not_traced_and_computes_the_same(
    program_dir):
  w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
  x = np.arange(8, dtype=np.float32).reshape(2, 4) / 7
  affine, c = _new_affine()
  want = np.tanh(x @ w) + c  # numpy's reference
  traced = []
  f = lambda w, x: (traced.append(1), affine(w, x))[1]  # noqa: E731
  first = program_cache.compiled(f, (w, x), "affine")
  assert len(traced) == 1 and len(os.listdir(program_dir)) == 1
  _new_process()
  second = program_cache.compiled(f, (w, x), "affine")
  assert len(traced) == 1  # read from the file: nothing traced
  for g in (first, second):
    np.testing.assert_allclose(g(w, x), want, rtol=1e-6)
  np.testing.assert_array_equal(second(w, x), jax.jit(affine)(w, x))
  # other shapes: the jitted function, which traces for them
  np.testing.assert_allclose(second(w, x[:1]), want[:1], rtol=1e-6)
  assert len(traced) == 2


def test_a_damaged_or_mismatched_entry_is_never_run(program_dir):
  w = np.ones((4, 3), np.float32)
  x = np.ones((2, 4), np.float32)
  affine, c = _new_affine()
  program_cache.compiled(affine, (w, x), "affine")
  [entry] = program_dir.iterdir()
  entry.write_bytes(entry.read_bytes()[:100])  # a partial write
  _new_process()
  # what a new process would call: another function object of the same
  # program, which JAX's own cache now serves (not rewritten: a program
  # XLA did not compile here is not kept; it stays damaged, never run)
  affine2 = lambda w, x: jnp.tanh(x @ w) + c  # noqa: E731
  g = program_cache.compiled(affine2, (w, x), "affine")
  np.testing.assert_allclose(g(w, x), np.tanh(x @ w) + c, rtol=1e-6)
  assert program_cache._load(str(entry), (w, x)) is None
  entry.unlink()
  # a whole entry for other shapes, under this call's name: not used
  program_cache.compiled(_new_affine()[0], (w, x[:1]), "affine")
  [other] = program_dir.iterdir()
  assert program_cache._load(str(other), (w, x)) is None
  assert program_cache._load(str(other), (w, x[:1])) is not None
  # another identity is another entry
  program_cache.compiled(_new_affine()[0], (w, x), "affine, another")
  assert len(os.listdir(program_dir)) == 2


@pytest.mark.parametrize("seed", [0, 1, 42, 2**31 - 1])
def test_the_cached_key_is_jaxs_key(program_dir, seed):
  for _ in range(2):  # compiled, then loaded
    _new_process()
    got = program_cache.random_key(seed)
    np.testing.assert_array_equal(jax.random.key_data(got),
                                  jax.random.key_data(jax.random.key(seed)))


def test_variants_in_learning_rate_share_one_evaluation_program(program_dir):
  # a sequential sweep: each variant its own Setup; the evaluation reads
  # the model and the loss, not the optimizer, so the second variant's is
  # the first's, loaded from the cache, and only its epoch is new
  sets = ["train.epochs=1", "model.mlp.hidden=[11]"]
  a, b = (experiment.Setup(config.load(None, sets + [f"optimizer.learning_rate={lr}",
                                                      f"seed={seed}"]))
          for lr, seed in ((0.01, 0), (0.02, 3)))
  assert a.evaluation_identity == b.evaluation_identity
  assert a.program_identity != b.program_identity
  other = experiment.Setup(config.load(None, ["model.mlp.hidden=[12]"]))
  assert other.evaluation_identity != a.evaluation_identity
  a.fit()
  _new_process()
  lowered = []

  def on_duration(event, duration, **kwargs):
    if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
      lowered.append(str(kwargs.get("fun_name")))
  jax.monitoring.register_event_duration_secs_listener(on_duration)
  try:
    b.fit()
  finally:
    jax.monitoring.unregister_event_duration_listener(on_duration)
  assert "jit(epoch)" in lowered and "jit(evaluate)" not in lowered, lowered


def test_a_program_compiled_in_the_background_is_the_one_compiled_here(
    program_dir):
  w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
  x = np.arange(8, dtype=np.float32).reshape(2, 4) / 7
  affine, c = _new_affine()
  f = program_cache.compiled(affine, (w, x), "affine", background=True)
  # its outputs' shapes are known before it is built
  assert f.out_info.shape == (2, 3) and f.out_info.dtype == jnp.float32
  np.testing.assert_allclose(f(w, x), np.tanh(x @ w) + c, rtol=1e-6)
  assert not isinstance(f.exe, program_cache.Compiling)  # waited for
  [entry] = program_dir.iterdir()  # kept, as a program compiled here is
  _new_process()
  g = program_cache.compiled(_new_affine()[0], (w, x), "affine",
                             background=True)
  assert not isinstance(g.exe, program_cache.Compiling)  # loaded, not built
  np.testing.assert_allclose(g(w, x), np.tanh(x @ w) + c, rtol=1e-6)

  def fails():
    raise ValueError("XLA said no")
  bad = program_cache.Compiling(fails)
  with pytest.raises(ValueError, match="XLA said no"):
    bad.result()


def test_fits_programs_begun_while_init_compiles_are_compiled_once(
    program_dir):
  # funcnet train's order: init's program begun on a thread; meanwhile,
  # fit's epoch and evaluation begun from the state's shapes; then fit
  # takes them (waiting). Each program compiles once, and the run is the
  # run without any of it (the cache off), bit for bit.
  cfg = config.load(None, ["train.epochs=1", "model.mlp.hidden=[14]"])
  setup = experiment.Setup(cfg)
  built, shapes = [], []

  def on_duration(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
      built.append(str(kwargs.get("fun_name")))

  def meanwhile(s):
    shapes.append(s)
    setup.prepare_fit(TrainState(*s))
  jax.monitoring.register_event_duration_secs_listener(on_duration)
  try:
    state = TrainState(*setup.init_state(meanwhile=meanwhile))
    begun = sorted(os.path.basename(p).split("-")[0]
                   for p in program_cache._LOADED)
    run = setup.fit(state)
  finally:
    jax.monitoring.unregister_event_duration_listener(on_duration)
  [s] = shapes
  assert jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), s) == \
      jax.tree_util.tree_map(lambda a: (a.shape, a.dtype),
                             (state.params, state.opt_state))
  assert begun == ["epoch", "evaluate", "init"], begun  # before fit
  for name in ("jit(init)", "jit(epoch)", "jit(evaluate)"):
    assert built.count(name) == 1, built
  program_cache.folder, folder = (lambda: None), program_cache.folder
  try:
    plain = experiment.Setup(cfg).fit()
  finally:
    program_cache.folder = folder
  _assert_same_run(run, plain)
  for a, b in zip(jax.tree_util.tree_leaves(run.state),
                  jax.tree_util.tree_leaves(plain.state), strict=True):
    # committed to the device as fit's own (else every eager op on the
    # run's params, e.g. compare_grads' differences, compiles twice)
    assert getattr(a, "_committed", None) == getattr(b, "_committed", None)


def _assert_same_run(run, plain):
  """Two fits' histories (less their times) and states, equal bit for bit."""
  strip = lambda h: [{k: v for k, v in r.items() if k != "time"}  # noqa
                     for r in h]
  assert strip(run.history) == strip(plain.history)
  for a, b in zip(jax.tree_util.tree_leaves(run.state),
                  jax.tree_util.tree_leaves(plain.state), strict=True):
    np.testing.assert_array_equal(a, b)


def test_a_run_from_cached_programs_equals_one_without_them(monkeypatch,
                                                          tmp_path):
  # a config no other test trains: its programs are new to this process
  # and to JAX's cache, so the first run compiles them and keeps them
  cfg = config.load(None, ["train.epochs=1", "model.mlp.hidden=[13]"])
  program_dir = tmp_path / "programs"
  monkeypatch.setattr(program_cache, "folder", lambda: str(program_dir))
  monkeypatch.setattr(program_cache, "_LOADED", {})
  runs = []
  for _ in range(2):  # the first compiles and writes, the second loads
    _new_process()
    setup = experiment.Setup(cfg)
    runs.append(setup.fit(train.TrainState(*setup.init_state())))
  monkeypatch.undo()
  plain = experiment.Setup(cfg).fit()  # the cache off (tests/conftest.py)
  names = sorted(p.name.split("-")[0] for p in program_dir.iterdir())
  # (the keys are made on the host, the default's constant learning rate
  # tabled without a program: no program of theirs)
  assert sorted(names) == [
      "epoch", "evaluate", "init", "preflight"], names
  for run in runs:
    _assert_same_run(run, plain)


def test_a_program_jax_read_from_its_cache_is_run_but_not_kept(program_dir):
  """The crash that kept this cache opt-in for a day: an executable JAX
  read from its persistent cache, serialized, loads but fails when run
  (``NOT_FOUND: Function wrapped_sine not found``, jax 0.10.2, XLA:CPU).
  Here JAX's cache is tests/conftest.py's per-process one."""
  if not jax.config.jax_compilation_cache_dir:
    pytest.skip("needs JAX's persistent cache on (tests/conftest.py)")
  c = float(np.random.default_rng().uniform(2, 3))  # a program new to it
  w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
  x = np.arange(8, dtype=np.float32).reshape(2, 4) / 7
  want = np.sin(x @ w) * c
  body = lambda w, x: jnp.sin(x @ w) * c  # noqa: E731
  jitted = jax.jit(body)
  np.testing.assert_allclose(jitted(w, x), want, rtol=1e-6)  # JAX keeps it
  # JAX's in-memory caches hand the same executable back: not kept
  got = program_cache.compiled(jitted, (w, x), "sine")
  np.testing.assert_allclose(got(w, x), want, rtol=1e-6)
  assert not program_dir.exists() or not os.listdir(program_dir)
  # a program XLA compiles now is kept, and runs when loaded
  other = lambda w, x: jnp.sin(x @ w) * (c + 1)  # noqa: E731
  program_cache.compiled(other, (w, x), "sine, other")
  [entry] = program_dir.iterdir()
  # its entry lost (deleted by hand, damaged): JAX's cache, which holds it
  # under this entry's key, serves it; run, not kept
  entry.unlink()
  _new_process()
  again = lambda w, x: jnp.sin(x @ w) * (c + 1)  # noqa: E731
  got = program_cache.compiled(again, (w, x), "sine, other")
  np.testing.assert_allclose(got(w, x), np.sin(x @ w) * (c + 1), rtol=1e-6)
  assert not os.listdir(program_dir)
  _new_process()
  for name, k in (("sine", c), ("sine, other", c + 1)):
    g = program_cache.compiled(lambda w, x, k=k: jnp.sin(x @ w) * k, (w, x),
                               name)
    np.testing.assert_allclose(g(w, x), np.sin(x @ w) * k, rtol=1e-6)


def test_a_program_only_jaxs_cache_holds_is_compiled_and_kept(program_dir):
  """A program JAX's cache holds and no entry here does (compiled outside
  this cache, or before entries were listed by program): compiled once
  more, with this cache's key in its module, and kept; before, it was read
  from JAX's cache, not kept, and traced by every later run."""
  if not jax.config.jax_compilation_cache_dir:
    pytest.skip("needs JAX's persistent cache on (tests/conftest.py)")
  c = float(np.random.default_rng().uniform(3, 4))  # a program new to JAX
  w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
  x = np.arange(8, dtype=np.float32).reshape(2, 4) / 7
  outside = lambda w, x: jnp.cos(x @ w) * c  # noqa: E731
  jax.jit(outside)(w, x)  # JAX's cache has it now; this cache nothing
  traced = []
  body = lambda w, x: (traced.append(1), jnp.cos(x @ w) * c)[1]  # noqa: E731
  with program_cache._Compiles() as seen:
    got = program_cache.compiled(body, (w, x), "cosine")
  assert seen.fresh  # XLA compiled it: JAX's cache did not serve it
  np.testing.assert_allclose(got(w, x), np.cos(x @ w) * c, rtol=1e-6)
  assert len([p for p in program_dir.iterdir() if p.is_file()]) == 1
  _new_process()  # the next run loads it: nothing traced, the same numbers
  again = program_cache.compiled(body, (w, x), "cosine")
  assert len(traced) == 1
  np.testing.assert_array_equal(again(w, x), got(w, x))


_TreeA = collections.namedtuple("_TreeA", ["y"])
_TreeB = collections.namedtuple("_TreeB", ["y"])


def test_keys_of_one_program_share_its_entry_and_compile_it_once(
    program_dir, monkeypatch):
  """Two identities of one program (a sweep's variants, runs of two seeds,
  the keys before and after an edit of funcnet): the second loads the
  first's entry, compiles nothing, and keeps a copy under its own key. A
  program of the same text whose results are another tree, or compiled
  with other options, is another program."""
  c = float(np.random.default_rng().uniform(4, 5))  # new to this process
  w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
  x = np.arange(8, dtype=np.float32).reshape(2, 4) / 7
  want = np.tanh(x @ w) * c
  program_cache.compiled(lambda w, x: jnp.tanh(x @ w) * c, (w, x), "seed 0")
  _new_process()
  traced = []
  body = lambda w, x: (traced.append(1), jnp.tanh(x @ w) * c)[1]  # noqa: E731
  with program_cache._Compiles() as seen:
    got = program_cache.compiled(body, (w, x), "seed 1")
    assert seen._now() == seen._before  # no compilation, nor JAX's cache
  np.testing.assert_allclose(got(w, x), want, rtol=1e-6)
  assert len([p for p in program_dir.iterdir() if p.is_file()]) == 2
  _new_process()
  again = program_cache.compiled(body, (w, x), "seed 1")
  assert len(traced) == 1  # its own entry now: loaded, not traced
  np.testing.assert_array_equal(again(w, x), got(w, x))
  # the same text returning another tree (two state types of the same
  # fields, as two models' TrainStates): each its own
  # (a text new to this process, so that XLA compiles A's and it is kept;
  # A and B at the module's top level, so that their trees pickle)
  A, B = _TreeA, _TreeB
  program_cache.compiled(lambda w, x: A(jnp.tanh(x @ w) * (c + 1)), (w, x),
                         "A")
  got_b = program_cache.compiled(lambda w, x: B(jnp.tanh(x @ w) * (c + 1)),
                                 (w, x), "B")(w, x)
  assert type(got_b) is B
  np.testing.assert_allclose(got_b.y, np.tanh(x @ w) * (c + 1), rtol=1e-6)
  # the same text compiled with other options (quick ones; the fast
  # suite's XLA_FLAGS would leave none): compiled, not shared
  monkeypatch.setattr(program_cache, "quick_options",
                      lambda integers=False: {
                          "xla_cpu_parallel_codegen_split_count": 2})
  with program_cache._Compiles() as seen:
    quick = program_cache.compiled(body, (w, x), "seed 3", quick=True)
    assert seen._now()[1] > seen._before[1]
  np.testing.assert_allclose(quick(w, x), want, rtol=1e-6)


def test_a_change_in_the_config_is_another_identity():
  a, b, c = (experiment.Setup(config.load(None, sets)) for sets in (
      [], ["optimizer.learning_rate=0.002"], []))
  assert a.program_identity == c.program_identity
  assert a.program_identity != b.program_identity
  assert program_cache.digest({"x": np.zeros(3)}) \
      != program_cache.digest({"x": np.zeros(4)})


def test_an_edited_user_module_is_another_key(program_dir, tmp_path,
                                              monkeypatch):
  """A user's ``--import`` module puts its code in the program but not in
  the config: editing it must compile again, never load the old program."""
  from funcnet.models import user
  path = tmp_path / "mine_scale.py"
  path.write_text("def scale(x):\n  return 2.0 * x\n")
  mod = user._exec_file(str(path))
  monkeypatch.setitem(sys.modules, mod.__name__, mod)
  x = np.arange(3, dtype=np.float32)
  f = lambda x: sys.modules[mod.__name__].scale(x)  # noqa: E731
  np.testing.assert_array_equal(program_cache.compiled(f, (x,), "u")(x), 2 * x)
  _new_process()
  path.write_text("def scale(x):\n  return 3.0 * x + 0\n")  # another size
  os.utime(path, ns=(1, 1))                               # and mtime
  del sys.modules[mod.__name__]                           # a new process
  mod2 = user._exec_file(str(path))
  monkeypatch.setitem(sys.modules, mod.__name__, mod2)
  # a new function object: JAX keeps traces per function in a process
  f = lambda x: sys.modules[mod.__name__].scale(x)  # noqa: E731
  np.testing.assert_array_equal(program_cache.compiled(f, (x,), "u")(x), 3 * x)
  assert len(os.listdir(program_dir)) == 2


def test_user_stamp_resolves_a_modules_file_once_and_stats_the_users_again(
    tmp_path, monkeypatch):
  # Resolving ~1,300 modules' files took 40 ms a call, 7 calls a run.
  from funcnet.models import user
  program_cache.user_stamp()
  resolved, realpath = [], os.path.realpath
  monkeypatch.setattr(os.path, "realpath",
                      lambda p, *a, **k: resolved.append(p) or realpath(p, *a, **k))
  program_cache.user_stamp()
  assert resolved == []  # every loaded module's file resolved before
  path = tmp_path / "mine_stamp.py"
  path.write_text("X = 1\n")
  mod = user._exec_file(str(path))
  monkeypatch.setitem(sys.modules, mod.__name__, mod)
  del resolved[:]
  first = program_cache.user_stamp()
  assert (realpath(str(path)), 6) in {s[:2] for s in first}
  n = len(resolved)  # the new module's folder
  path.write_text("X = 22\n")  # an edit: stat'ed again, not remembered
  second = program_cache.user_stamp()
  assert (realpath(str(path)), 7) in {s[:2] for s in second}
  assert len(resolved) == n
  # a module loaded through a link is stamped by the file it points to
  target = tmp_path / "elsewhere" / "mine_target.py"
  target.parent.mkdir()
  target.write_text("Y = 333\n")
  (tmp_path / "mine_link.py").symlink_to(target)
  linked = user._exec_file(str(tmp_path / "mine_link.py"))
  monkeypatch.setitem(sys.modules, linked.__name__, linked)
  assert (realpath(str(target)), 8) in {
      s[:2] for s in program_cache.user_stamp()}


@pytest.mark.slow
@pytest.mark.parametrize("sequential", [True, False],
                         ids=["sequential", "vectorised"])
def test_a_warm_sweep_loads_its_programs_and_equals_the_cold_one(
    tmp_path, sequential):
  """Sequential: the case that found the crash (docs/performance.md, issue
  27), four variants trained one at a time in one process. Vectorised: the
  group's epoch and evaluation (sweep.engine._group_identity). Twice on one
  cache; the second run writes nothing there and gives the same table.
  Vectorised, JAX's own entries are deleted in between, so a program the
  second run did not load from funcnet's cache would be compiled afresh
  and written there under a new key. (Not so the sequential case: its
  variants' evaluations are one program under four identities, and JAX's
  cache gives the first one's to the other three, which funcnet does not
  keep; with JAX's entries deleted, the second run compiles and keeps one
  of them.)"""
  env = {**ENV, "FUNCNET_COMPILATION_CACHE": str(tmp_path / "xla"),
         "FUNCNET_PROGRAM_CACHE": "1"}
  programs = tmp_path / "xla" / "programs"
  tables, kept = [], []
  for name in ("cold", "warm"):
    r = _python("-m", "funcnet.cli", "sweep", "--set", "train.epochs=1",
                "--set", "run.plots=false", "--grid",
                "optimizer.learning_rate=0.1,0.2,0.3,0.4",
                *["--sequential"] * sequential,
                "--out", str(tmp_path / name), env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(tmp_path / name / "results.csv") as f:
      tables.append([{k: v for k, v in row.items() if " s" not in k}
                     for row in csv.DictReader(f)])
    kept.append({f: os.stat(programs / f).st_mtime_ns
                 for f in os.listdir(programs)})
    if not sequential:  # JAX's entries, not funcnet's
      for f in os.listdir(tmp_path / "xla"):
        if os.path.isfile(tmp_path / "xla" / f):
          os.remove(tmp_path / "xla" / f)
  assert len(tables[1]) == 4 and tables[0] == tables[1]
  assert len(kept[0]) >= (5 if sequential else 3)
  assert kept[1] == kept[0]
  if not sequential:
    assert {f.split("-")[0] for f in kept[0]} >= {"sweep_epoch",
                                                   "sweep_evaluate"}
