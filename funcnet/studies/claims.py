"""A study's claim as clauses decided by its own numbers.

A study does not print its claim as fixed text: it states the claim as a
list of *clauses*, each computed from the study's measurements with a stated
threshold, and keeps the numbers the decision rests on as its *evidence*::

  claims = [
      claims.clause("L2 raises mean test accuracy by at least 1 point",
                     holds=gain >= 0.01,
                     evidence=f"{acc_l2:.3f} ± {sd_l2:.3f} vs {acc_none:.3f} ± {sd_none:.3f}"),
      claims.clause("the best rate grows linearly with batch (slope CI holds 1)",
                     holds=None,  # this run cannot test it
                     evidence="--quick: 2 batch sizes, no interval"),
  ]

``holds`` is True, False, or None where this run cannot test the clause
(``--quick`` runs too few seeds or sizes; the evidence says why). The study
returns the list as ``results["claims"]``; ``results.json`` carries it, and
everything a reader sees is written from it: the README's claim section
(:func:`markdown`), the table of clauses appended to ``table.md``
(:func:`table`) and figure titles (:func:`title`). A clause that failed is
printed as failed, never dropped.

Keep the decision separate from the measurement (a ``decide(measured, p)``
function of plain numbers): a test can then feed it perturbed numbers and
check that the README, the table and the titles follow.
"""

from typing import Optional

HOLDS, FAILS, UNTESTED = "holds", "FAILS", "not tested"


def clause(text: str, holds: Optional[bool], evidence: str) -> dict:
  """One clause of a claim (JSON-ready).

  Args:
    text: the clause as a sentence a reader checks, with its threshold
      ("... by at least 3 points", "... within 10%").
    holds: whether the numbers support it; None when this run cannot test it.
    evidence: the numbers it rests on (and, for None, why it is untested).
  """
  if holds is not None:
    holds = bool(holds)  # numpy bools are not JSON
  return {"clause": text, "holds": holds, "evidence": evidence}


def status(c: dict) -> str:
  """``"holds"``, ``"FAILS"`` or ``"not tested"``."""
  return UNTESTED if c["holds"] is None else (HOLDS if c["holds"] else FAILS)


def verdict(claims) -> str:
  """One line for the whole claim: how many clauses held, failed, untested."""
  held = sum(c["holds"] is True for c in claims)
  failed = [c["clause"] for c in claims if c["holds"] is False]
  untested = sum(c["holds"] is None for c in claims)
  line = f"{held} of {len(claims)} clauses hold"
  if failed:
    line += f"; {len(failed)} FAIL"
  if untested:
    line += f"; {untested} not tested by this run"
  return line


def markdown(claims) -> str:
  """The README's claim section: the verdict, then each clause with its
  status and evidence."""
  lines = [f"{verdict(claims)}.", ""]
  for c in claims:
    lines.append(f"- **{status(c)}**: {c['clause']} ({c['evidence']})")
  return "\n".join(lines)


def table(claims) -> str:
  """A Markdown table of the clauses (appended to ``table.md``)."""
  def cell(s):
    return str(s).replace("|", "\\|")
  rows = ["| clause | status | evidence |", "|---|---|---|"]
  rows += [f"| {cell(c['clause'])} | {status(c)} | {cell(c['evidence'])} |"
           for c in claims]
  return "\n".join(rows)


def title(c: dict, short: Optional[str] = None) -> str:
  """A figure title from a clause: its text (or ``short``) when it holds,
  prefixed with ``NOT:`` when it failed and ``untested:`` when this run could
  not decide it, so a figure never states what its numbers contradict."""
  text = short or c["clause"]
  return {HOLDS: text, FAILS: f"NOT: {text}", UNTESTED: f"untested: {text}"}[status(c)]


def find(claims, prefix: str) -> dict:
  """The clause whose text starts with ``prefix`` (for titles)."""
  for c in claims:
    if c["clause"].startswith(prefix):
      return c
  raise KeyError(f"no clause starts with {prefix!r}")
