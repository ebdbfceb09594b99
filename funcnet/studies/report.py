"""What every study writes: ``results.json``, ``table.md``, ``README.md``, figures."""

import json
import math
import os

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402,F401  (re-exported for studies)


def _jsonable(v):
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)  # JSON has no NaN/inf
  if isinstance(v, dict):
    return {str(k): _jsonable(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_jsonable(x) for x in v]
  if hasattr(v, "tolist"):
    return _jsonable(v.tolist())
  return v


def write_json(out: str, results: dict) -> str:
  path = os.path.join(out, "results.json")
  with open(path, "w") as f:
    json.dump(_jsonable(results), f, indent=2)
    f.write("\n")
  return path


def fmt(x, f: str = "{:.3g}") -> str:
  """A number for a table or a caption; ``–`` for None (not reached,
  diverged)."""
  return "–" if x is None else f.format(x)


def markdown_table(header, rows, fmt="{:.4g}") -> str:
  """A Markdown table; floats formatted with ``fmt``."""
  def cell(v):
    return fmt.format(v) if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(map(str, header)) + " |",
           "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


def write_text(out: str, name: str, text: str) -> str:
  path = os.path.join(out, name)
  with open(path, "w") as f:
    f.write(text.rstrip() + "\n")
  return path


def write_readme(out: str, title: str, claim, measured: str,
                 figures=(), table: str = "", command: str = "",
                 params=None) -> str:
  """``README.md``: the claim, the command, what this run measured, the
  figures and the table (also written alone as ``table.md``).

  ``claim`` is the list of clauses of :mod:`funcnet.studies.claims` (each
  printed with whether it held; the table of clauses joins ``table.md``), or
  a sentence for a study not yet written as clauses. ``params``: every
  parameter the run used (seeds included), printed under the command.
  """
  from funcnet.studies import claims as claims_lib
  decided = not isinstance(claim, str)
  if decided:
    table = (table + "\n\n" if table else "") + claims_lib.table(claim)
  if table:
    write_text(out, "table.md", table)
  text = claims_lib.markdown(claim) if decided else claim
  parts = [f"# {title}", "", f"**Claim.** {text}", ""]
  if command:
    parts += ["```", command, "```", ""]
  if params:
    parts += ["Parameters: " + ", ".join(f"`{k}={v!r}`" for k, v in
                                         sorted(params.items())), ""]
  parts += [f"**Measured.** {measured}", ""]
  parts += [f"![{os.path.splitext(f)[0]}]({f})" for f in figures]
  if table:
    parts += ["", table]
  return write_text(out, "README.md", "\n".join(parts))


def save(fig, out: str, name: str) -> str:
  """Saves and closes a figure as ``out/name``; returns ``name``."""
  fig.tight_layout()
  fig.savefig(os.path.join(out, name), dpi=110)
  plt.close(fig)
  return name
