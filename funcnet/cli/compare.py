"""``funcnet compare``: run folders' curves overlaid
(:func:`funcnet.run.compare.compare`)."""

NAME = "compare"
HELP = ("overlay the curves of run folders (train runs or sweep variants) in "
        "one PNG and a table")
DESCRIPTION = (
    "Reads each run folder's metrics.jsonl and summary.json and writes "
    "compare.png (training loss, test metric, per-layer gradient norms per "
    "epoch) and compare.md (per run: status, epochs, final training loss and "
    "test metrics) into --out.")


def add_arguments(p) -> None:
  p.add_argument("runs", nargs="+", metavar="RUN", help="a run folder "
                 "(funcnet train --out, or a sweep's variants/NNN)")
  p.add_argument("--out", metavar="DIR",
                 help="output folder (default: compare-<time>)")


def run(args) -> int:
  from funcnet.run import compare
  result = compare.compare(args.runs, args.out or compare.default_out())
  print(result["table"])
  print(f"compare: {', '.join(result['files'])}")
  return 0
