"""The plotting process (funcnet.run.plot_process): the same PNGs as drawing
in-process, its failures as one line, and a command that draws its plots
there, or here when it is gone."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from funcnet import cli, config, experiment
from funcnet.run import plot_process, plots
from funcnet.cli import common
from funcnet.errors import FuncnetError

PNG = b"\x89PNG\r\n\x1a\n"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _history(epochs=3):
  return [{"epoch": e, "step": 10 * e, "train_loss": 1.0 / e,
           "test_loss": 1.2 / e, "test_accuracy": 0.5 + 0.1 * e,
           "lr": 0.01, "grad_norms": {"layer 1": 0.1 * e, "layer 2": 0.2}}
          for e in range(1, epochs + 1)]


def _started():
  p = plot_process.start()
  if p is None:
    pytest.skip("one core: funcnet draws in-process")
  return p


def test_it_draws_the_same_pngs_as_drawing_in_process(tmp_path):
  here, there = tmp_path / "here", tmp_path / "there"
  here.mkdir(), there.mkdir()
  history = _history()
  history[1]["test_loss"] = float("nan")  # travels as JSON's NaN
  plots.write(history, str(here), title="t")
  p = _started()
  assert p.draw(history, there, "t")
  p.wait()
  for name in ("loss.png", "grad_norms.png"):
    a, b = (d / name for d in (here, there))
    assert b.read_bytes()[:8] == PNG
    assert a.read_bytes() == b.read_bytes(), name


def test_a_failed_drawing_is_one_line(tmp_path):
  p = _started()
  assert p.draw(_history(), tmp_path / "missing", "t")
  with pytest.raises(FuncnetError) as e:
    p.wait()
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith("the plots could not be drawn: ")
  assert "FileNotFoundError" in msg and "missing" in msg


def test_a_figure_that_fails_alone_is_one_line_and_the_other_is_written(
    tmp_path):
  # the two figures are drawn by two processes (a fork, on Linux): the
  # gradient norms' failure, in the fork, still fails the drawing
  history = [{k: v for k, v in h.items() if k != "grad_norms"}
             for h in _history()]
  p = _started()
  assert p.draw(history, tmp_path, "t")
  with pytest.raises(FuncnetError, match="KeyError: 'grad_norms'") as e:
    p.wait()
  assert "\n" not in str(e.value)
  assert (tmp_path / "loss.png").read_bytes()[:8] == PNG
  assert not (tmp_path / "grad_norms.png").exists()


def test_closed_unused_it_ends_at_once_without_drawing(tmp_path):
  p = _started()  # still importing matplotlib
  t0 = time.time()
  p.close()
  assert p._proc.returncode is not None and time.time() - t0 < 0.3
  p.close()  # twice is fine


def test_closed_while_drawing_it_finishes_the_pngs(tmp_path):
  p = _started()
  assert p.draw(_history(), tmp_path, "t")
  p.close()
  assert p._proc.returncode == 0
  for name in ("loss.png", "grad_norms.png"):
    assert (tmp_path / name).read_bytes()[:8] == PNG


def test_it_ignores_a_ctrl_c_of_the_process_group(tmp_path):
  p = _started()
  time.sleep(0.5)  # past the handler's installation, on a loaded machine
  os.kill(p._proc.pid, signal.SIGINT)
  os.kill(p._proc.pid, signal.SIGTERM)
  assert p.draw(_history(), tmp_path, "t")
  p.wait()
  assert (tmp_path / "loss.png").read_bytes()[:8] == PNG


def _gone():
  p = _started()
  p._proc.kill()
  p._proc.wait()
  return p


def test_a_plotter_that_is_gone_cannot_draw(tmp_path):
  assert not _gone().draw(_history(), tmp_path, "t")
  assert not os.listdir(tmp_path)


def test_a_run_whose_plotter_is_gone_draws_in_process(tmp_path):
  p = _gone()
  cfg = config.load(None, ["train.epochs=1", "model.mlp.hidden=[8]",
                           "run.progress=never"])
  experiment.train_and_evaluate(cfg, str(tmp_path / "run"), log=lambda *a: 0,
                                plotter=p)
  assert (tmp_path / "run" / "grad_norms.png").read_bytes()[:8] == PNG


def test_the_command_draws_in_the_plotting_process(tmp_path, monkeypatch,
                                                    capsys):
  def not_here(*a, **k):
    raise AssertionError("drawn in the command's process")
  monkeypatch.setattr(plots, "write", not_here)
  if plot_process._cores() < 2:
    pytest.skip("one core: funcnet draws in-process")
  run = tmp_path / "run"
  assert cli.main(["train", "--set", "train.epochs=2", "--set",
                   "model.mlp.hidden=[8]", "--progress", "never",
                   "--out", str(run)]) == 0
  for name in ("loss.png", "grad_norms.png"):
    assert (run / name).read_bytes()[:8] == PNG
  assert json.loads((run / "summary.json").read_text())["status"] == "finished"


def _args(config=None, overrides=(), **kw):
  base = dict(config=config, overrides=list(overrides), distributed=False,
              coordinator=None, num_processes=None)
  return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize("toml, overrides, likely", [
    (None, [], True),
    (None, ["run.plots=false"], False),
    (None, ["run.plots=false", "run.plots=true"], True),
    ("[run]\nplots = false\n", [], False),
    ("[run]\nplots = false\n", [" run.plots = true"], True),
    ("not toml [", [], True),  # config.load reports it
])
def test_the_guess_before_jax_reads_flags_and_the_config_file(
    tmp_path, toml, overrides, likely):
  path = None
  if toml is not None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
  assert common.plots_likely(_args(path, overrides)) is likely


def test_several_processes_draw_on_process_0_in_process():
  assert not common.plots_likely(_args(distributed=True))
  assert not common.plots_likely(_args(num_processes=2))


@pytest.mark.slow
def test_a_ctrl_c_of_the_terminal_still_leaves_the_plots(tmp_path):
  """SIGINT to the whole process group, as a terminal's Ctrl-C sends it:
  the command stops after the epoch (exit 130) and its plotter, which
  ignores the signal, draws the plots; no process is left behind."""
  import subprocess
  import sys
  from helpers import metrics_lines
  run = str(tmp_path / "run")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.Popen(
      [sys.executable, "-m", "funcnet.cli", "train", "--set",
       "train.epochs=100000", "--set", "model.mlp.hidden=[8]", "--progress",
       "never", "--out", run], cwd=root, env={**os.environ, "PYTHONPATH": root},
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      start_new_session=True)
  try:
    deadline = time.time() + 120
    while not metrics_lines(run) and time.time() < deadline:
      time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
  assert proc.returncode == 130, err
  said, stopped = err.splitlines()  # at the signal, then once saved
  assert said.startswith("funcnet: SIGINT received: saving a checkpoint")
  assert stopped.startswith("funcnet: stopped: SIGINT")
  for name in ("loss.png", "grad_norms.png"):
    assert (tmp_path / "run" / name).read_bytes()[:8] == PNG
  with pytest.raises(ProcessLookupError):  # the group is empty
    os.killpg(proc.pid, 0)


def test_the_warm_up_writes_nothing_and_changes_no_png(tmp_path, monkeypatch):
  # The plotting process draws a throwaway run first (plots.warm_up): it
  # leaves no file anywhere it could, and the PNGs drawn after it are the
  # bytes of those drawn in a process that never warmed up (the plotting
  # process above, against this one: either order).
  monkeypatch.chdir(tmp_path)
  before = set(os.listdir(tmp_path))
  plots.warm_up()
  assert set(os.listdir(tmp_path)) == before
  out = tmp_path / "after"
  out.mkdir()
  history = _history()
  plots.write(history, str(out), title="t")
  script = ("import sys; from funcnet.run import plots; "
            "import json; plots.write(json.loads(sys.argv[1]), sys.argv[2], "
            "title='t')")
  fresh = tmp_path / "fresh"
  fresh.mkdir()
  subprocess.run([sys.executable, "-c", script, json.dumps(history),
                  str(fresh)], check=True, cwd=ROOT)
  for name in ("loss.png", "grad_norms.png"):
    assert (out / name).read_bytes() == (fresh / name).read_bytes(), name


def _sweep_figures(keys=("optimizer.learning_rate", "model.mlp.hidden", "seed")):
  """A sweep's figure data (funcnet.run.sweep_figures), 2 x 2 x 2 variants
  over ``keys``' first two and seeds, one of them diverged (NaN)."""
  variants = []
  for lr in (0.1, 0.01):
    for hidden in ([8], [16]):
      for seed in (0, 1):
        bad = lr == 0.1 and seed == 1
        history = [{"epoch": e, "train_loss": float("nan") if bad and e > 1
                    else 1 / (e * lr * 100 + hidden[0]),
                    "test_accuracy": 0.5 + 0.1 * e + 0.01 * seed}
                   for e in (1, 2, 3)]
        values = dict(zip(("optimizer.learning_rate", "model.mlp.hidden",
                           "seed"), (lr, hidden, seed)))
        variants.append({"assignment": {k: values[k] for k in keys},
                         "history": history,
                         "final": float("nan") if bad else history[-1]["test_accuracy"]})
  return {"metric": "test_accuracy", "higher_is_better": True,
          "keys": list(keys), "variants": variants}


@pytest.mark.parametrize("keys, names", [
    (("optimizer.learning_rate", "model.mlp.hidden", "seed"),
     ["curves.png", "heatmap.png"]),   # two keys: the heatmap, by a fork
    (("seed",), ["curves.png"]),       # seeds alone: no summary figure
], ids=["heatmap", "seeds-only"])
def test_a_sweeps_figures_are_the_pngs_drawn_in_process(tmp_path, keys, names):
  from funcnet.run import sweep_figures
  here, there = tmp_path / "here", tmp_path / "there"
  here.mkdir(), there.mkdir()
  data = _sweep_figures(keys)
  assert sweep_figures.draw(data, str(here)) == names
  p = _started()
  assert p.draw_sweep(data, there)
  p.wait()
  assert sorted(os.listdir(there)) == sorted(names)
  for name in names:
    a, b = (d / name for d in (here, there))
    assert b.read_bytes()[:8] == PNG
    assert a.read_bytes() == b.read_bytes(), name


def _sweep_command(out):
  return ["sweep", "--set", "train.epochs=1", "--set", "model.mlp.hidden=[8]",
          "--set", "data.train_per_class=8", "--set", "train.batch_size=16",
          "--grid", "optimizer.learning_rate=0.1,0.01", "--out", str(out)]


def test_the_sweep_command_draws_in_the_plotting_process(tmp_path, monkeypatch,
                                                         capsys):
  from funcnet.run import sweep_figures
  if plot_process._cores() < 2:
    pytest.skip("one core: funcnet draws in-process")
  def not_here(*a, **k):
    raise AssertionError("drawn in the command's process")
  monkeypatch.setattr(sweep_figures, "curves", not_here)
  monkeypatch.setattr(sweep_figures, "summary", not_here)
  assert cli.main(_sweep_command(tmp_path / "sw")) == 0
  assert "curves.png, heatmap.png" in capsys.readouterr().out
  for name in ("curves.png", "heatmap.png"):
    assert (tmp_path / "sw" / name).read_bytes()[:8] == PNG


def test_a_sweep_whose_plotter_is_gone_draws_in_process(tmp_path):
  from funcnet import sweep
  cfg = config.load(None, _sweep_command(tmp_path)[2:10:2])
  sweep.run(cfg, {"optimizer.learning_rate": [0.1, 0.01]},
            str(tmp_path / "sw"), log=lambda *a: 0, plotter=_gone())
  for name in ("curves.png", "heatmap.png"):
    assert (tmp_path / "sw" / name).read_bytes()[:8] == PNG


def test_a_sweeps_heatmap_shows_each_cells_mean_over_seeds(tmp_path,
                                                          monkeypatch):
  # The cells' numbers against numpy's mean and spread of the finals,
  # grouped here by hand: rates on the rows (numbers in order), widths on
  # the columns (lists, in the order of their text: "[16]" < "[8]"); a cell
  # whose seeds all diverged shows NaN ("diverged").
  from funcnet.run import plots, sweep_figures
  made = []
  real = plots.Figure
  monkeypatch.setattr(plots, "Figure",
                      lambda *a, **k: made.append(real(*a, **k)) or made[-1])
  data = _sweep_figures()
  data["variants"][0]["final"] = float("nan")  # lr 0.1, [8], seed 0
  assert sweep_figures.summary(data, str(tmp_path / "h.png"))
  ax = made[-1].axes[0]
  shown = np.asarray(ax.images[0].get_array(), dtype=float)
  want = np.full((2, 2), np.nan)
  for i, lr in enumerate((0.01, 0.1)):      # sorted: 0.01 first
    for j, hidden in enumerate(([16], [8])):
      finals = [v["final"] for v in data["variants"]
                if v["assignment"]["optimizer.learning_rate"] == lr
                and v["assignment"]["model.mlp.hidden"] == hidden]
      assert len(finals) == 2
      if not all(np.isnan(finals)):
        want[i, j] = np.nanmean(finals)
  np.testing.assert_array_equal(np.isnan(shown), np.isnan(want))
  np.testing.assert_allclose(shown[~np.isnan(want)], want[~np.isnan(want)])
  texts = [t.get_text() for t in ax.texts]
  assert texts.count("diverged") == 1
  assert any("±" in t for t in texts)        # the two seeds' spread


def _search_figure():
  return {"metric": "test_loss", "higher_is_better": False, "finished": 5,
          "trials": [[0, 0.9], [1, 1.2], [2, 0.4], [4, 0.6]]}  # 3 failed


def test_a_searchs_figure_is_the_png_drawn_in_process(tmp_path):
  from funcnet.run import sweep_figures
  here, there = tmp_path / "here", tmp_path / "there"
  here.mkdir(), there.mkdir()
  sweep_figures.search(_search_figure(), str(here / "search.png"))
  p = _started()
  assert p.draw_search(_search_figure(), there)
  p.wait()
  assert os.listdir(there) == ["search.png"]
  assert (there / "search.png").read_bytes()[:8] == PNG
  assert (here / "search.png").read_bytes() == (there / "search.png").read_bytes()


def test_a_searchs_best_so_far_is_the_running_minimum(tmp_path, monkeypatch):
  from funcnet.run import plots, sweep_figures
  made = []
  real = plots.Figure
  monkeypatch.setattr(plots, "Figure",
                      lambda *a, **k: made.append(real(*a, **k)) or made[-1])
  sweep_figures.search(_search_figure(), str(tmp_path / "s.png"))
  trials, best = made[-1].axes[0].lines
  assert list(trials.get_xdata()) == [0, 1, 2, 4]
  # a loss: the best so far is the smallest, by hand
  assert list(best.get_ydata()) == [0.9, 0.9, 0.4, 0.4]


@pytest.mark.parametrize("gone", [False, True], ids=["there", "gone"])
def test_a_search_draws_in_its_plotter_or_here_when_it_is_gone(
    tmp_path, monkeypatch, gone):
  # the training stubbed (nothing compiles), as in tests/test_sweep.py
  pytest.importorskip("optuna")
  from funcnet import sweep
  from funcnet.run import sweep_figures
  from funcnet.sweep import results as results_lib, search

  def train_variants(vs, cache=None, log=print):
    return [sweep.VariantResult(
        v.index, v.assignment, v.cfg, "done", None,
        [{"epoch": 1, "train_loss": 0.1, "test_loss": 0.5 + v.index}],
        None, 0, 0.0, "regression") for v in vs]
  monkeypatch.setattr(sweep, "train_variants", train_variants)
  monkeypatch.setattr(results_lib, "write_variants", lambda vs, folder: None)
  if not gone:
    def not_here(*a, **k):
      raise AssertionError("drawn in the command's process")
    monkeypatch.setattr(sweep_figures, "search", not_here)
  base = config.load(None, ["data.name=regression", "train.loss=mse",
                            "model.mlp.output_activation=identity"])
  space = search.parse_space(["optimizer.learning_rate=loguniform:1e-4,0.1"])
  out = tmp_path / "s"
  search.run(base, space, trials=2, parallel=2, out=str(out),
             log=lambda *a: None, plotter=_gone() if gone else _started())
  assert (out / "search.png").read_bytes()[:8] == PNG
