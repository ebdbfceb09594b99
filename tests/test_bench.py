"""``funcnet bench`` on a tiny size: the table, the JSON records, the sweep
plot, and the FLOP count against XLA's own. Speed targets are read from the
benchmark (docs/performance.md), never asserted here."""

import json
import os
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import autodiff, cli
from funcnet.bench import step_time
from funcnet.models import mlp

TINY = ["bench", "steps", "--sizes", "tiny", "--repeats", "2", "--min-time", "0.01",
        "--peak-size", "64"]
KEYS = {"size", "grads", "mode", "steps_per_s", "gflops", "peak_gflops",
        "fraction_of_peak"}


# The command end to end (~9 s); the fast suite times steps through
# test_bench_models_times_and_sizes_both_gradient_sources.
@pytest.mark.slow
def test_bench_prints_the_table_and_writes_the_records(tmp_path, capsys):
  path = tmp_path / "step_time.json"
  assert cli.main(TINY + ["--json", str(path)]) == 0
  out = capsys.readouterr().out
  assert "size   dtype     grads    mode" in out
  assert "peak: 64x64 float32 matmul" in out
  assert "tiny float32 scan/loop: manual" in out and "memory (tiny)" in out
  assert "tiny float32 (scan+norms)/scan: manual" in out

  records = json.loads(path.read_text())
  assert [(r["grads"], r["mode"]) for r in records] == [
      (g, m) for g in ("manual", "autodiff")
      for m in ("loop", "scan", "scan+norms")]
  flops = 6 * 8 * (16 * 8 + 8 * 4)          # tiny: [16, 8, 4], batch 8
  for r in records:
    assert KEYS <= set(r) and r["size"] == "tiny" and r["dtype"] == "float32"
    assert all(isinstance(r[k], float) and r[k] > 0 for k in
               ("steps_per_s", "gflops", "peak_gflops", "fraction_of_peak"))
    assert r["steps_per_s_low"] <= r["steps_per_s"] <= r["steps_per_s_high"]
    assert r["gflops"] == pytest.approx(flops * r["steps_per_s"] / 1e9)
    assert r["fraction_of_peak"] == pytest.approx(r["gflops"] / r["peak_gflops"])
    assert r["ms_per_step"] == pytest.approx(1e3 / r["steps_per_s"])
    assert f"{r['ms_per_step']:.4f}" in out


@pytest.mark.slow  # compiles the 1024-wide MLP of the batch sweep
def test_sweep_table_and_plot(tmp_path, capsys):
  png = tmp_path / "sweep.png"
  assert cli.main(TINY + ["--grads", "autodiff", "--modes", "scan", "--sweep",
                          "--sweep-widths", "8", "--sweep-batches", "4",
                          "--plot", str(png)]) == 0
  out = capsys.readouterr().out
  assert "sweep (scan, autodiff)" in out
  assert "[784, 8, 8, 10]" in out and out.count("[784, 1024, 1024, 10]") == 1
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args,words", [
    (["--sizes", "huge"], ["huge", "tiny, small, medium, large"]),
    (["--grads", "numeric"], ["numeric", "manual, autodiff"]),
    (["--plot", "x.png"], ["--plot", "--sweep"]),
    (["--repeats", "0"], ["--repeats"]),
])
def test_bad_options_are_one_line_errors(args, words, capsys):
  assert cli.main(["bench", "steps", *args]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and all(w in err for w in words)


def test_step_flops_is_the_usual_six_m_sum_of_weights():
  assert step_time.step_flops([784, 1024, 1024, 10], 512) == \
      6 * 512 * (784 * 1024 + 1024 * 1024 + 1024 * 10)
  assert step_time.step_flops([64, 32, 10], 32) == 6 * 32 * (64 * 32 + 32 * 10)


def test_xla_counts_the_flops_the_docstring_says():
  # Independent count: XLA's cost analysis of the compiled gradient. It
  # skips delta_0 (nobody needs dC/dx), so it is F - 2 m n_0 n_1, plus the
  # elementwise work, which is small at these widths.
  sizes, m = [64, 256, 256, 10], 128
  model = mlp(sizes, activation="sigmoid", output_activation="sigmoid")
  params = model.init(jax.random.key(0), jnp.float32)
  x = jnp.zeros((m, 64), jnp.float32)
  y = jnp.zeros((m, 10), jnp.float32)
  cost = jax.jit(autodiff.value_and_grad(model, "mse")).lower(
      params, x, y).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  want = step_time.step_flops(sizes, m) - 2 * m * sizes[0] * sizes[1]
  assert cost["flops"] == pytest.approx(want, rel=0.03)


# 2**-9 s (about 2 ms): a binary fraction, so fake times add up exactly.
UNIT = 2.0 ** -9


def _fake_measure(monkeypatch, slow=None):
  """``step_time.measure`` on a fake clock that advances only inside ``run``.

  Each call ``run(k)`` takes exactly ``k * UNIT`` (times ``slow[i]`` for
  call ``i``), so calibration and timing are deterministic: no stall of the
  machine can change what is asserted.
  """
  clock = types.SimpleNamespace(now=0.0)
  monkeypatch.setattr(step_time, "time",
                      types.SimpleNamespace(perf_counter=lambda: clock.now))
  calls = []

  def run(k):
    clock.now += k * UNIT * (slow or {}).get(len(calls), 1)
    calls.append(k)

  return step_time.measure(run, repeats=3, min_time=0.02), calls


def test_measure_times_whole_repeats_after_warm_up(monkeypatch):
  t, calls = _fake_measure(monkeypatch)
  n = len(calls)
  # The timed repeats are the last three calls; slow them by 1x, 3x and 2x
  # (the same calls as before: calibration does not depend on them).
  t, calls = _fake_measure(monkeypatch, slow={n - 3: 1, n - 2: 3, n - 1: 2})
  assert len(calls) == n
  assert calls[0] == 1                                # compile call
  assert calls[-3:] == [t.units] * 3 and t.repeats == 3
  # Calibration (calls[1:-3]) raises k until one call takes min_time, and
  # that k is the one timed: 3 repeats of >= 20 ms, >= 11 units each.
  cal = calls[1:-3]
  assert cal[0] == 1 and cal == sorted(set(cal)) and cal[-1] == t.units
  assert cal[-2] * UNIT < 0.02 <= t.units * UNIT and t.units >= 11
  # Seconds per unit: median, fastest and slowest repeat.
  assert (t.low, t.median, t.high) == (UNIT, 2 * UNIT, 3 * UNIT)


def test_measure_reads_the_wall_clock():
  """The same on real time, 2 ms of busy-waiting per unit.

  Asserted only what a stall cannot break on a loaded machine: a stall makes
  the calls it hits slower, never faster (and may end calibration early).
  """
  calls = []

  def run(k):
    calls.append(k)
    end = time.perf_counter() + 0.002 * k
    while time.perf_counter() < end:
      pass

  t = step_time.measure(run, repeats=3, min_time=0.02)
  assert calls[0] == 1 and calls[-3:] == [t.units] * 3
  assert 0.002 <= t.low <= t.median <= t.high
  # Seconds, not milliseconds: fails only if every repeat stalls for 0.5 s
  # per unit.
  assert t.low < 0.5


def test_the_models_benchmark_finds_the_shipped_configs():
  # funcnet bench models reads configs/<name>.toml beside the package; a
  # path counted from the wrong folder found nothing once the module moved.
  from funcnet.bench import model_steps
  from funcnet.run import plot_process
  import funcnet
  repo = os.path.dirname(os.path.dirname(os.path.abspath(funcnet.__file__)))
  assert model_steps._config_path("mnist1d_cnn") == os.path.join(
      repo, "configs", "mnist1d_cnn.toml")
  assert os.path.isfile(model_steps._config_path("mnist1d_cnn"))
  assert plot_process._ROOT == repo


# --- the subcommands: each reaches its benchmark with the flags it was given -

def _record_calls(monkeypatch, module, **fakes):
  """Replaces ``module``'s functions by fakes that record their arguments."""
  calls = []
  for name, result in fakes.items():
    def fake(*a, _name=name, _result=result, **kw):
      calls.append((_name, a, {k: v for k, v in kw.items() if k != "log"}))
      return _result
    monkeypatch.setattr(module, name, fake)
  return calls


def test_each_subcommand_runs_its_benchmark(monkeypatch, tmp_path, capsys):
  from funcnet.bench import data_io, model_steps, startup, sweep_speed
  models = _record_calls(monkeypatch, model_steps, run=[{"m": 1}],
                         format_table="models table")
  assert cli.main(["bench", "models", "--repeats", "2", "--min-time", "0.5"]) == 0
  assert cli.main(["bench", "models", "digits_mlp", "mnist1d_cnn",
                   "--json", str(tmp_path / "m.json")]) == 0
  assert models[0] == ("run", (("mnist1d_cnn", "mnist1d_gru",
                                "mnist1d_transformer", "text_gpt"),),
                       {"rounds": 3, "repeats": 2, "min_time": 0.5,
                        "peak_size": 0, "peers": None,
                        "modes": ("loop", "scan")})
  assert models[2][1] == (["digits_mlp", "mnist1d_cnn"],)
  assert cli.main(["bench", "models", "--no-peers", "--rounds", "5"]) == 0
  assert models[4][2]["peers"] is False and models[4][2]["rounds"] == 5
  assert cli.main(["bench", "models", "--peers"]) == 0
  assert models[6][2]["peers"] is True
  assert cli.main(["bench", "models", "--modes", "scan, loop,scan"]) == 0
  assert models[8][2]["modes"] == ("scan", "loop")
  assert json.loads((tmp_path / "m.json").read_text()) == [{"m": 1}]

  sweeps = _record_calls(monkeypatch, sweep_speed, run=[], format_table="")
  assert cli.main(["bench", "sweep", "digits_mlp:4", "--epochs", "2"]) == 0
  assert cli.main(["bench", "sweep"]) == 0
  assert sweeps[0] == ("run", (["digits_mlp:4"],),
                       {"epochs": 2, "commands": False})
  assert sweeps[2][1] == (("digits_mlp:16", "mnist1d_cnn:16", "digits_mlp:64",
                           "mnist1d_cnn:64"),)
  assert cli.main(["bench", "sweep", "mnist1d_gru:16", "--commands"]) == 0
  assert sweeps[4] == ("run", (["mnist1d_gru:16"],),
                       {"epochs": 5, "commands": True})

  data = _record_calls(monkeypatch, data_io, run=[], format_table="",
                       train={}, format_train="", memory={},
                       format_memory="memory table")
  assert cli.main(["bench", "data", "shards", "d", "--repeats", "1"]) == 0
  assert [c[0] for c in data] == ["run", "format_table"]
  assert cli.main(["bench", "data", "shards", "d", "--train",
                   "--epochs", "4"]) == 0
  assert data[-2] == ("train", ("d", "mnist1d_mlp"), {"epochs": 4,
                                                     "rounds": 5})
  assert cli.main(["bench", "data", "memory-cap", "64"]) == 0
  assert data[-2] == ("memory", (64.0,), {})

  starts = _record_calls(monkeypatch, startup, run={}, format_table="")
  assert cli.main(["bench", "startup", "--repeats", "3"]) == 0
  assert starts[0] == ("run", (3,), {})
  assert "memory table" in capsys.readouterr().out


@pytest.mark.parametrize("argv,words", [
    (["bench"], ["needs a benchmark", "steps, models, data, sweep"]),
    (["bench", "data"], ["shards DIR", "memory-cap"]),
    (["bench", "data", "memory-cap", "0"], ["memory-cap 0", "> 0"]),
    (["bench", "models", "--repeats", "0"], ["--repeats"]),
    (["bench", "models", "--rounds", "0"], ["--rounds"]),
    (["bench", "models", "--modes", "loop,eager"], ["--modes", "loop, scan"]),
    (["bench", "sweep", "digits_mlp:2"], ["'digits_mlp:2'", "multiple of 4"]),
    (["bench", "sweep", "digits_mlp"], ["'digits_mlp'", "CONFIG:N"]),
])
def test_a_subcommand_without_its_part_is_a_one_line_error(argv, words, capsys):
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and all(w in err for w in words)


def test_the_old_flags_are_gone_and_a_typo_is_answered(capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["bench", "--startup"])
  assert e.value.code == 2
  with pytest.raises(SystemExit) as e:
    cli.main(["bench", "stpes"])
  assert e.value.code == 2
  assert "did you mean 'steps'?" in capsys.readouterr().err


def test_a_config_name_is_found_in_the_shipped_configs():
  # bench models, bench sweep and bench data shards --train take names
  from funcnet.bench import model_steps
  for name in ("mnist1d_cnn", "digits_mlp", "mnist1d_mlp"):
    path = model_steps._config_path(name)
    assert os.path.isfile(path) and path.endswith(f"configs/{name}.toml")


@pytest.mark.slow  # four funcnet sweep subprocesses and four sweeps in-process
def test_bench_sweep_times_whole_commands_on_a_warm_cache():
  from funcnet.bench import sweep_speed
  rec, = sweep_speed.run(["digits_mlp:4"], epochs=1, commands=True,
                         log=lambda *a: None)
  # The untimed pass filled the cache: neither timed command compiled.
  assert rec["command_vectorised_compiled"] == 0
  assert rec["command_sequential_compiled"] == 0
  assert rec["command_speedup"] == pytest.approx(
      rec["command_sequential_s"] / rec["command_vectorised_s"])
  assert rec["steps_per_epoch"] == 1437 // 32  # digits: 80% of 1797, batch 32
  table = sweep_speed.format_table([rec])
  assert table.count("\n") == 2 and f"{rec['command_speedup']:.1f}x" in table


def test_the_models_benchmark_reads_text_windows_as_token_ids():
  # funcnet bench models text_gpt stopped with an internal error: the text
  # split is read by rows (a Rows object), and a batch was sliced from it
  # and cast to float32. Its batches are the windows' ids and next ids.
  from funcnet import config, experiment
  from funcnet.bench import model_steps
  cfg = config.load(model_steps._config_path("text_gpt"))
  setup = experiment.Setup(cfg)
  batches = model_steps._numpy_batches(setup)
  b, t = cfg["train"]["batch_size"], cfg["data"]["block_size"]
  assert len(batches) == 8
  for i, (x, y) in enumerate(batches):
    assert x.shape == y.shape == (b, t)
    assert np.issubdtype(x.dtype, np.integer), x.dtype
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])   # y: the next ids
    want_x, want_y = setup.ds.x_train.read(np.arange(i * b, (i + 1) * b))
    np.testing.assert_array_equal(x, want_x)
    np.testing.assert_array_equal(y, want_y)
