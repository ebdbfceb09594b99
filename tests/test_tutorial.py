"""docs/your-own-layer.md runs as written: its Python blocks in order in one
namespace, the ``# my_layers.py`` blocks also written to that file, its
TOML block to ``prelu.toml``, and each ``funcnet ...`` line of its shell
blocks through ``funcnet.cli.main`` (the command, in this process)."""

import pathlib
import re
import shlex
import sys

import pytest

from funcnet import cli, config
from funcnet.models import registry, user

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "your-own-layer.md"
FILE_MARK = "# my_layers.py"


def blocks(text: str) -> list:
  """``(language, code)`` of every fenced block, in order."""
  return re.findall(r"^```(\w+)\n(.*?)^```", text, flags=re.S | re.M)


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
  """A working folder, and the registry as it was afterwards."""
  from funcnet import activations
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(registry, "KINDS", dict(registry.KINDS))
  monkeypatch.setitem(config.DEFAULTS, "model", dict(config.DEFAULTS["model"]))
  monkeypatch.setattr(config, "DOCS", dict(config.DOCS))
  monkeypatch.setattr(user, "_FILES", {})
  monkeypatch.setattr(activations, "ACTIVATIONS", dict(activations.ACTIVATIONS))
  monkeypatch.setattr(activations, "_OWN", {})
  yield tmp_path
  sys.modules.pop("my_layers", None)


def test_the_tutorial_runs_as_written(sandbox, capsys):
  found = blocks(DOC.read_text())
  langs = [lang for lang, _ in found]
  assert langs.count("toml") == 1 and "sh" in langs and langs.count("python") >= 6
  (sandbox / "my_layers.py").write_text(
      "\n".join(code for lang, code in found
                if lang == "python" and code.startswith(FILE_MARK)))
  (sandbox / "prelu.toml").write_text(next(c for lang, c in found if lang == "toml"))
  namespace = {"__name__": "tutorial"}
  for lang, code in found:
    if lang == "python":
      exec(compile(code, str(DOC), "exec"), namespace)
    elif lang == "sh":
      for line in code.splitlines():
        argv = shlex.split(line)
        assert argv[0] == "funcnet", line
        assert cli.main(argv[1:]) == 0, capsys.readouterr().err
  out = capsys.readouterr().out
  # what the reader is told to look at is there
  assert "OK (tolerances" in out
  # funcnet gradcheck's manual column holds the kind's own backward vs
  # jax.grad (a number, not "-"), for every parameter array
  for name in ("dense1 W", "dense1 b", "prelu alpha", "dense2 W", "dense2 b"):
    row = re.search(rf"^{name} +\S+ +\S+ +(\S+) +(\S+)", out, flags=re.M)
    assert row and float(row[1]) <= 1e-12 and float(row[2]) <= 1e-10, name
  run = namespace["run"]
  assert [r["epoch"] for r in run.metrics] == [1, 2]
  assert set(run.metrics[-1]["grad_norms"]) >= {"dense1", "prelu", "dense2"}
