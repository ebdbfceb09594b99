"""Claims decided by numbers: what a reader sees follows ``holds``."""

import json
import pytest

from funcnet import studies
from funcnet.studies import claims, registry


def _decide(gain):
  # A study's decision: a pure function of its numbers.
  return [claims.clause("the method gains at least 1 point", gain >= 1.0,
                        f"gain {gain:.2f} points"),
          claims.clause("it holds for 3 seeds", None, "--quick: 1 seed")]


def test_a_failed_clause_reads_as_failed_everywhere():
  held, failed = _decide(2.0), _decide(0.5)
  assert held[0]["holds"] is True and failed[0]["holds"] is False
  assert claims.verdict(held) == "1 of 2 clauses hold; 1 not tested by this run"
  assert "1 FAIL" in claims.verdict(failed)
  assert "**FAILS**: the method gains" in claims.markdown(failed)
  assert "**holds**: the method gains" in claims.markdown(held)
  assert "| FAILS |" in claims.table(failed)
  assert claims.title(failed[0], "gains").startswith("NOT: ")
  assert claims.title(held[0], "gains") == "gains"
  assert claims.title(held[1]).startswith("untested: ")
  assert claims.find(failed, "it holds")["holds"] is None
  with pytest.raises(KeyError):
    claims.find(failed, "nothing")


@pytest.mark.parametrize("gain", [2.0, 0.5])
def test_the_registry_writes_readme_table_and_json_from_the_claims(tmp_path, gain):
  def run(out, p):
    c = _decide(p["gain"])
    return {"claims": c, "readme": {"title": "toy", "measured": "numbers",
                                    "table": "| a |\n|---|\n| 1 |"}}
  study = registry.Study("toy-claims", "a toy", run, {"gain": 1.0, "seed": 0}, {})
  registry.register(study)
  try:
    out = str(tmp_path / "out")
    studies.run("toy-claims", out, quick=False, overrides=[f"gain={gain}"])
  finally:
    del registry.STUDIES["toy-claims"]
  readme = (tmp_path / "out" / "README.md").read_text()
  table = (tmp_path / "out" / "table.md").read_text()
  results = json.loads((tmp_path / "out" / "results.json").read_text())
  word = "holds" if gain >= 1 else "FAILS"
  assert f"**{word}**: the method gains" in readme
  assert f"| {word} |" in table and "| 1 |" in table
  assert results["claims"][0]["holds"] is (gain >= 1)
  assert "readme" not in results
  assert results["command"] == f"funcnet study toy-claims --set gain={gain} --out {out}"
  assert results["command"] in readme and "`seed=0`" in readme
