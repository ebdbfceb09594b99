"""The ``saddle-points`` study and the ``funcnet study`` command: run quick,
the claim asserted on the numbers it produced, against references written
here (closed forms of gradient descent). (The textbook study's tests are in
tests/test_study_textbook.py.)"""

import json
import math
import os
import subprocess
import sys

import pytest

from funcnet import studies
from funcnet.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
ENV.pop("JAX_ENABLE_X64", None)


def _files(out, names):
  missing = [n for n in names if not os.path.isfile(os.path.join(out, n))]
  assert not missing, f"missing in {out}: {missing}"


# --- the saddle-points study ----------------------------------------------------

def _sgd_saddle_steps(y0, lr, escape):
  """On x^2 - y^2, sgd maps y to (1 + 2 lr) y: the first t with |y_t| > escape."""
  return math.ceil(math.log(escape / y0) / math.log(1 + 2 * lr))


def _sgd_quadratic_steps(start, lr, tol):
  """On 0.1 x^2 + 2 y^2, sgd maps x to (1 - 0.2 lr) x and y to (1 - 4 lr) y."""
  x, y = start
  for t in range(100000):
    if 0.1 * x ** 2 + 2 * y ** 2 < tol:
      return t
    x, y = (1 - 0.2 * lr) * x, (1 - 4 * lr) * y
  raise AssertionError("sgd never reached the tolerance")


@pytest.mark.slow
def test_saddle_points_study(tmp_path):
  r = studies.run("saddle-points", out=str(tmp_path), quick=True)
  p = r["params"]
  _files(tmp_path, ["README.md", "table.md", "results.json", "saddle.png",
                    "quadratic.png", "rosenbrock.png", "wells.png", "deep_linear.png"])
  assert {"sgd", "momentum", "adam"} <= set(p["optimizers"])

  saddle = r["surfaces"]["saddle"]
  lr = p["lr_saddle"][0]
  want = _sgd_saddle_steps(saddle["start"][1], lr, p["escape"])
  assert want < p["steps"]
  # float32 rounding may move the crossing by a step.
  assert abs(saddle["steps"]["sgd"] - want) <= 1
  assert saddle["steps"]["momentum"] is not None
  assert saddle["steps"]["momentum"] < saddle["steps"]["sgd"]
  assert abs(saddle["final_point"]["sgd"][1]) > p["escape"]

  quad = r["surfaces"]["quadratic"]
  want = _sgd_quadratic_steps(quad["start"], p["lr_quadratic"][0], p["tol"])
  assert abs(quad["steps"]["sgd"] - want) <= 1

  # The deep linear network: sgd's plateau outlasts adam's and momentum's.
  deep = r["deep_linear"]["leave_plateau"]
  limit = p["deep_steps"]
  sgd = deep["sgd"] if deep["sgd"] is not None else limit + 1
  for name in ("adam", "momentum"):
    assert deep[name] is not None and deep[name] < sgd, (name, deep)
  assert all(v < r["deep_linear"]["initial_loss"] for v in r["deep_linear"]["final_loss"].values())


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "funcnet.cli", "study", *args],
                        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_study_cli_runs_a_study(tmp_path):
  # A fresh process (JAX import and compiles): 5-9 s on the 2-core machine.
  # One optimizer keeps its compiles few (6 s, not 10 s), and checks that a
  # TOML list reaches the study through --set.
  out = tmp_path / "sp"
  proc = _cli("saddle-points", "--quick", "--set", 'optimizers=["sgd"]', "--out", str(out))
  assert proc.returncode == 0, proc.stderr
  assert f"{out}/README.md" in proc.stdout
  _files(out, ["README.md", "table.md", "results.json", "saddle.png", "deep_linear.png"])
  with open(out / "results.json") as f:
    results = json.load(f)
  assert results["quick"] and results["params"]["optimizers"] == ["sgd"]
  assert list(results["surfaces"]["saddle"]["steps"]) == ["sgd"]


def test_study_cli_rejects_an_unknown_parameter(tmp_path):
  proc = _cli("saddle-points", "--quick", "--set", "nonexistent=1",
              "--out", str(tmp_path / "bad"))
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("funcnet: error:"), proc.stderr
  assert "nonexistent" in lines[0]
  assert not (tmp_path / "bad").exists()     # refused before anything ran


@pytest.mark.parametrize("override", ["lr_saddle=[0.1]", "optimizers=['lbfgs']"])
def test_saddle_points_rejects_bad_parameters(tmp_path, override):
  with pytest.raises(ConfigError, match="expected"):
    studies.run("saddle-points", out=str(tmp_path), quick=True, overrides=[override])
