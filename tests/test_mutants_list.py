"""tests/mutants.toml stays runnable: every mutant's snippet is in its file
exactly once and its guard tests exist, so a rewrite of the code under a
mutant is noticed in the fast loop (not at the next mutation run, as three
stale mutants were when the studies were rewritten)."""

import os
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(ROOT, "tests", "mutants.toml"), "rb") as f:
  MUTANTS = tomllib.load(f)["mutant"]


@pytest.mark.parametrize("m", MUTANTS, ids=[m["id"] for m in MUTANTS])
def test_each_mutant_applies_once_and_names_existing_tests(m):
  with open(os.path.join(ROOT, m["file"]), encoding="utf-8") as f:
    text = f.read()
  assert text.count(m["find"]) == 1, f"{m['id']}: snippet found {text.count(m['find'])} times"
  assert m["find"] != m["replace"]
  for t in m.get("tests", []):
    assert os.path.exists(os.path.join(ROOT, t.split("::")[0])), t


def test_mutant_ids_are_unique():
  ids = [m["id"] for m in MUTANTS]
  assert len(ids) == len(set(ids))
