"""The ``saddle-points`` study: its decision on hand-made numbers (a
diverged method included), its pieces against closed forms, and one quick
run whose numbers are checked against a float64 numpy gradient descent."""

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from funcnet import studies
from funcnet.errors import ConfigError
from funcnet.studies import claims, report, saddle_points as sp
from funcnet.studies import saddle_points_report as sp_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
ENV.pop("JAX_ENABLE_X64", None)


def _files(out, names):
  missing = [n for n in names if not os.path.isfile(os.path.join(out, n))]
  assert not missing, f"missing in {out}: {missing}"


# --- the decision, on hand-made numbers -----------------------------------------

def _o(steps, lr=0.1, diverged=False, std=None):
  return sp.outcome(lr, steps, diverged, std)


def _measured(**change):
  views = {"shared": {"sgd": _o(349, 0.01), "momentum": _o(72, 0.01), "adam": _o(77, 0.01)},
           "tuned": {"sgd": _o(20, 1.0), "momentum": _o(10, 0.5), "adam": _o(1, 1.0)}}
  m = {"saddle": views, "quadratic": views, "rosenbrock": views,
       "wells": {"deepest": 2, "runs": 12},
       "deep": {"tuned": {"sgd": _o(400.0, std=40), "momentum": _o(120.0, std=10),
                          "adam": _o(20.0, std=5)}},
       "seeds": 3}
  m.update(change)
  return m


P = {"optimizers": ["sgd", "momentum", "adam"], "margin": 0.1}


def test_decide_holds_and_fails_with_the_numbers():
  held = sp.decide(_measured(), P)
  assert [c["holds"] for c in held] == [True] * 8
  # sgd faster at its tuned rate: the tuned saddle clause fails, the shared one holds.
  views = {"shared": _measured()["saddle"]["shared"],
           "tuned": {"sgd": _o(38, 0.1), "momentum": _o(72, 0.01), "adam": _o(1, 1.0)}}
  got = sp.decide(_measured(saddle=views), P)
  assert got[0]["holds"] is True and got[1]["holds"] is False
  assert "momentum 72 steps at lr 0.01 vs sgd 38 steps at lr 0.1" == got[1]["evidence"]
  # A one-step gap is the resolution of a step count, not "sooner".
  views = {**views, "tuned": {**views["tuned"], "sgd": _o(7, 1.0), "momentum": _o(6, 1.0)}}
  assert sp.decide(_measured(saddle=views), P)[1]["holds"] is False


def test_a_diverged_method_fails_its_clause_and_says_diverged():
  deep = {"tuned": {"sgd": _o(400.0, std=40), "momentum": _o(None, 0.5, diverged=True),
                    "adam": _o(20.0, std=5)}}
  c = claims.find(sp.decide(_measured(deep=deep), P),
                  "in the deep linear network, at each one's tuned rate, momentum")
  assert c["holds"] is False and "momentum diverged at lr 0.5" in c["evidence"]
  # sgd diverged: momentum, which left, is sooner.
  deep["tuned"]["sgd"] = _o(None, 2.0, diverged=True)
  deep["tuned"]["momentum"] = _o(120.0, std=10)
  c = claims.find(sp.decide(_measured(deep=deep), P), "in the deep linear network, at each "
                  "one's tuned rate, momentum")
  assert c["holds"] is True and "sgd diverged at lr 2" in c["evidence"]


def test_seeds_spread_and_missing_optimizers_leave_clauses_untested():
  # Means 10% apart but within the seeds' stds: not "sooner".
  deep = {"tuned": {"sgd": _o(100.0, std=30), "momentum": _o(80.0, std=30),
                    "adam": _o(20.0, std=1)}}
  got = sp.decide(_measured(deep=deep), P)
  assert got[6]["holds"] is False and got[7]["holds"] is True
  one_seed = sp.decide(_measured(seeds=1), P)
  assert one_seed[6]["holds"] is None and "needs >= 3" in one_seed[6]["evidence"]
  no_adam = sp.decide(_measured(), {**P, "optimizers": ["sgd", "momentum"]})
  assert no_adam[2]["holds"] is None and "adam" in no_adam[2]["evidence"]
  assert sp.decide(_measured(wells={"deepest": 7, "runs": 12}), P)[5]["holds"] is False


def test_tune_takes_the_fewest_steps_without_diverging():
  rows = [_o(None, 1e-3), _o(300, 1e-2), _o(40, 0.1), _o(None, 1.0, diverged=True)]
  assert sp.tune(rows) == 2
  assert sp.tune([_o(None, 1.0, diverged=True), _o(None, 0.1)]) is None
  assert sp.tune([_o(5, 0.1), _o(5, 0.2)]) == 0   # the smaller rate on a tie


def test_leave_steps_counts_the_first_step_below_the_plateau():
  t = np.arange(10.0)
  curves = np.stack([np.stack([8 * 0.8 ** t, np.full(10, 8.0),
                               np.r_[8.0, 90.0, np.full(8, 1.0)]])])  # (1, 3, 10)
  steps, bad = sp.leave_steps(curves, 0.5, 10.0)
  want = int(np.ceil(math.log(0.5) / math.log(0.8) + 1e-12))  # 0.8^t < 0.5
  assert steps.tolist() == [[want, -1, -1]]
  assert bad.tolist() == [[False, False, True]]


def test_a_failed_clause_titles_the_figure_as_failed(tmp_path, monkeypatch):
  titles = []
  monkeypatch.setattr(report, "save",
                      lambda fig, out, name: titles.append(fig.axes[0].get_title()))
  deep = {"tuned": {"sgd": _o(30.0, std=1), "momentum": _o(120.0, std=10),
                    "adam": _o(20.0, std=5)}}
  p = {**P, "plateau": 0.5, "deep_depth": 2, "deep_width": 2, "deep_init_scale": 0.2,
       "seeds": [0, 1, 2]}
  results = {"claims": sp.decide(_measured(deep=deep), p),
             "deep_linear": {"tuned": {n: {**o, "index": 0} for n, o in deep["tuned"].items()},
                             "initial_loss": 1.0}}
  curves = {n: np.ones((3, 1, 5)) for n in p["optimizers"]}
  sp_report.plot_deep(str(tmp_path), {"curves": curves}, results, p)
  assert titles[0].startswith("NOT: tuned rates: momentum leaves the plateau")
  readme = report.write_readme(str(tmp_path), "t", results["claims"], "m")
  text = pathlib.Path(readme).read_text()
  assert "**FAILS**: in the deep linear network, at each one's tuned rate, momentum" in text


# --- one quick run ---------------------------------------------------------------

def _sgd_saddle(y0, lr, escape, ceiling, steps):
  """sgd on x^2 - y^2 from (1, y0) in float64: ``(steps, diverged)``."""
  x, y = 1.0, y0
  for t in range(steps):
    if abs(y) > escape:
      return t, False
    x, y = (1 - 2 * lr) * x, (1 + 2 * lr) * y
    if x * x - y * y > ceiling:
      return None, True
  return None, False


def _sgd_quadratic_steps(start, lr, tol, steps):
  x, y = start
  for t in range(steps + 1):
    if 0.1 * x ** 2 + 2 * y ** 2 < tol:
      return t
    x, y = (1 - 0.2 * lr) * x, (1 - 4 * lr) * y
    if abs(y) > 1e100:  # diverged
      return None
  return None


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  return studies.run("saddle-points", out=str(tmp_path_factory.mktemp("sp")), quick=True)


@pytest.mark.slow
def test_saddle_points_quick_run_against_numpy_gradient_descent(quick):
  r, p = quick, quick["params"]
  _files(r["out"], ["README.md", "table.md", "results.json", "saddle.png", "quadratic.png",
                    "rosenbrock.png", "wells.png", "deep_linear.png", "lr_sensitivity.png"])
  saddle = r["surfaces"]["saddle"]
  for o in saddle["grid"]["sgd"] + [saddle["shared"]["sgd"]]:
    want, bad = _sgd_saddle(1e-3, o["lr"], p["escape"], saddle["divergence_ceiling"],
                            p["steps"])
    assert o["diverged"] == bad, o
    # float32 rounding may move the crossing by a step.
    assert (o["steps"] is None) == (want is None) and abs((o["steps"] or 0) - (want or 0)) <= 1
  quad = r["surfaces"]["quadratic"]
  for o in quad["grid"]["sgd"]:
    want = _sgd_quadratic_steps(quad["start"], o["lr"], p["tol"], p["steps"])
    if not o["diverged"]:
      assert abs((o["steps"] or 0) - (want or 0)) <= 1, (o, want)
  fastest = min((o for o in quad["grid"]["sgd"] if o["steps"] is not None),
                key=lambda o: o["steps"])
  assert quad["tuned"]["sgd"]["lr"] == fastest["lr"]
  # The clauses are in results.json and the README, one status each.
  saved = json.loads(pathlib.Path(r["out"], "results.json").read_text())
  assert [c["clause"] for c in saved["claims"]] == [c["clause"] for c in r["claims"]]
  readme = pathlib.Path(r["out"], "README.md").read_text()
  assert "--quick" in readme and "`seeds=[0]`" in readme
  for c in r["claims"]:
    assert f"**{claims.status(c)}**: {c['clause']}" in readme
  assert claims.find(r["claims"], "in the deep linear network")["holds"] is None  # 1 seed


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "funcnet.cli", "study", *args],
                        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_study_cli_runs_a_study(tmp_path):
  # A fresh process (JAX import and compiles); one optimizer keeps its
  # compiles few, and checks that a TOML list reaches the study through --set.
  out = tmp_path / "sp"
  proc = _cli("saddle-points", "--quick", "--set", 'optimizers=["sgd"]', "--out", str(out))
  assert proc.returncode == 0, proc.stderr
  assert f"{out}/README.md" in proc.stdout
  _files(out, ["README.md", "table.md", "results.json", "saddle.png", "deep_linear.png"])
  with open(out / "results.json") as f:
    results = json.load(f)
  assert results["quick"] and results["params"]["optimizers"] == ["sgd"]
  assert list(results["surfaces"]["saddle"]["tuned"]) == ["sgd"]
  assert "--set 'optimizers=[\"sgd\"]'" in results["command"]
  assert results["claims"][0]["holds"] is None  # momentum was not run


def test_study_cli_rejects_an_unknown_parameter(tmp_path):
  proc = _cli("saddle-points", "--quick", "--set", "nonexistent=1",
              "--out", str(tmp_path / "bad"))
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("funcnet: error:"), proc.stderr
  assert "nonexistent" in lines[0]
  assert not (tmp_path / "bad").exists()     # refused before anything ran


@pytest.mark.parametrize("override", ["lr_saddle=[0.1]", "optimizers=['lbfgs']",
                                      "lr_grid=[]", "seeds=[]", "diverge_factor=0.5"])
def test_saddle_points_rejects_bad_parameters(tmp_path, override):
  with pytest.raises(ConfigError, match="expected"):
    studies.run("saddle-points", out=str(tmp_path), quick=True, overrides=[override])
