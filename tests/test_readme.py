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


def test_the_check_backward_example_prints_the_table_shown(capsys):
  heading = "## Checking your own backward"
  exec(compile(_block_after(heading), "README.md", "exec"),
       {"__name__": "__main__"})
  printed = capsys.readouterr().out.splitlines()
  text = (ROOT / "README.md").read_text()
  blocks = re.findall(r"```\w*\n(.*?)```", text[text.index(heading):], re.S)
  shown = blocks[1].splitlines()  # the report under the python block
  # The same rows and verdict; the last digits of the rounding errors may
  # differ between machines, so the words and shapes are compared.
  assert [l.split()[:3] for l in printed] == [l.split()[:3] for l in shown]
  assert printed[-1] == shown[-1] == "OK (rtol 1e-07, atol 1e-09)"
