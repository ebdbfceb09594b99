"""The README's code runs as written."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _block_after(heading: str, lang: str = "python") -> str:
  text = (ROOT / "README.md").read_text()
  after = text[text.index(heading):]
  m = re.search(rf"```{lang}\n(.*?)```", after, re.S)
  return m.group(1)


def test_the_api_in_ten_lines_runs_as_written(capsys):
  code = _block_after("## The API in ten lines")
  lines = [l for l in code.splitlines() if l.strip()]
  assert len(lines) <= 10, lines
  # In a namespace of its own, as a reader's script: nothing defined
  # beforehand (warnings are errors here, as everywhere in the suite). In
  # process, not a fresh interpreter: JAX's import would cost 4 s of the
  # fast loop, and the code imports what it uses itself.
  exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})
  out = capsys.readouterr().out
  assert "OK" in out and "layer 2 b" in out
