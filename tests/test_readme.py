"""The README's code runs as written."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _block_after(heading: str, lang: str = "python") -> str:
  text = (ROOT / "README.md").read_text()
  after = text[text.index(heading):]
  m = re.search(rf"```{lang}\n(.*?)```", after, re.S)
  return m.group(1)


def test_the_api_in_ten_lines_runs_as_written():
  code = _block_after("## The API in ten lines")
  lines = [l for l in code.splitlines() if l.strip()]
  assert len(lines) <= 10, lines
  # A fresh interpreter, as a reader's: nothing defined beforehand, and
  # warnings are errors as in the suite.
  r = subprocess.run([sys.executable, "-W", "error", "-c", code],
                     capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert r.returncode == 0, r.stderr
  assert "OK" in r.stdout and "layer 2 b" in r.stdout
