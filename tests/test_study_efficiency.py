"""The ``efficiency`` study: run quick; its numbers against the run folders
it leaves (each run's own evaluation, a numpy count of its parameters, the
dense products of the MLP by hand), its verdicts re-derived from them."""

import json
import os

import jax
import numpy as np
import pytest

import funcnet
from funcnet import studies
from funcnet.quantize.weights import is_weight
from funcnet.studies import efficiency


@pytest.mark.slow  # three tiny trainings, two quantized, two pruned: 42 s at load 8
def test_quick_efficiency_study(tmp_path):
  r = studies.run("efficiency", out=str(tmp_path), quick=True)
  for name in ("README.md", "results.json", "table.md",
               "accuracy_vs_size.png", "accuracy_vs_sparsity.png"):
    assert os.path.isfile(tmp_path / name), name
  with open(tmp_path / "results.json") as f:
    assert "claims" in json.load(f)
  p, pts = efficiency.STUDY.quick, r["points"]
  for name, pt in pts.items():
    if name.endswith("int8"):
      continue
    run = funcnet.load_run(str(tmp_path / "runs" / name))
    leaves = [np.asarray(a) for a in jax.tree_util.tree_leaves(run.params)]
    assert pt["accuracy"] == pytest.approx(run.evaluate()["test_accuracy"],
                                           abs=1e-6)
    assert pt["params"] == sum(a.size for a in leaves)
    assert pt["nonzero_params"] == sum(np.count_nonzero(a) for a in leaves)
    assert pt["bytes"] >= 4 * pt["params"]  # float32, plus the .npz's headers
    if "pruned" in name:
      n_w = sum(a.size for a in leaves if is_weight(a))
      zeros = sum(np.count_nonzero(a == 0) for a in leaves if is_weight(a))
      assert zeros == int(np.floor(p["sparsities"][0] * n_w))
      assert pt["compressed_bytes"] < pts[name.split("-pruned")[0]][
          "compressed_bytes"]  # the zeros compress
  for base in ("teacher", "mlp-distilled"):
    # int8 codes: a byte per weight and a float32 scale per output channel,
    # where float32 holds four bytes per weight
    leaves = jax.tree_util.tree_leaves(
        funcnet.load_run(str(tmp_path / "runs" / base)).params)
    want = sum(a.size + 4 * a.shape[-1] if is_weight(a) else 4 * a.size
               for a in leaves)
    q, f = pts[f"{base}-int8"], pts[base]
    assert q["array_bytes"] == want and f["array_bytes"] == 4 * f["params"]
  # the MLP (40 -> 32 -> 10): 2 n_in n_out per dense layer, plus a few
  # elementwise ops per unit
  dense = 2 * (40 * 32 + 32 * 10)
  assert dense <= pts["mlp"]["flops"] <= dense + 4 * (32 + 10)
  # the clauses, decided by the numbers
  c = {x["clause"]: x["holds"] for x in r["claims"]}
  for fam in ("mlp",):
    assert c[f"the distilled {fam} beats the same {fam} trained from "
             "labels"] == (pts[f"{fam}-distilled"]["accuracy"]
                           > pts[fam]["accuracy"])
  for base in ("teacher", "mlp-distilled"):
    q, f = pts[f"{base}-int8"], pts[base]
    assert c[f"{base} with int8 weights is within 0.5 points of float with "
             "parameter arrays at least 3.5x smaller"] == (
        abs(q["accuracy"] - f["accuracy"]) <= 0.005 + 1e-9
        and f["array_bytes"] >= 3.5 * q["array_bytes"])
  assert c["the teacher pruned to 80% (global, fine-tuned) is within 1 "
           "point of dense"] == (pts["teacher-pruned80-global"]["accuracy"]
                                 >= pts["teacher"]["accuracy"] - 0.01)
  assert list(c.values())[-1] is None  # --quick prunes one way only
  readme = (tmp_path / "README.md").read_text()
  assert "clauses hold" in readme and "--quick" in readme
  assert "Measured" in (tmp_path / "README.md").read_text()
