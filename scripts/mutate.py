"""Mutation testing: does the fast suite catch these realistic bugs?

  python scripts/mutate.py                    # every mutant of tests/mutants.toml
  python scripts/mutate.py --only ID [ID ...] # some of them
  python scripts/mutate.py --list             # ids, files and descriptions
  python scripts/mutate.py -j 1 --pytest-workers 2 --markdown table.md

A mutant is one realistic bug, written down as an exact snippet of a file
and its replacement (``tests/mutants.toml``). For each mutant the tool
copies the repository once per job into a temporary folder (the working
tree is never touched), replaces the snippet there, and runs the fast
suite (``pytest -m "not slow"``) on the copy, or only the test files or
``-k`` expression the mutant names as its guards. The mutant is

  killed    the tests failed (or could not be collected: the bug breaks an
            import), which is what a good suite does;
  survived  every test passed: a bug the suite cannot see;
  timeout   the tests ran past ``--timeout`` (a hang counts as caught, and
            is listed apart so that a too-short timeout is noticed);
  error     the snippet is not in the file, or is there more than once, or
            pytest could not run (a bad test path): the mutant list needs
            fixing, and this counts neither way.

The kill rate is (killed + timeout) / (killed + timeout + survived). The
exit status is 0 when no mutant survived or errored, 1 otherwise.
Standard library only (``tomllib``: Python 3.11).
"""

import argparse
import concurrent.futures
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_LIST = os.path.join(ROOT, "tests", "mutants.toml")
# Never copied: the environment, git's store, caches and run outputs.
SKIP = {".git", ".venv", "venv", "__pycache__", ".pytest_cache",
        ".hypothesis", "runs", "build", "dist", "shared"}


class Mutant(NamedTuple):
  id: str
  file: str         # relative to the repository root
  find: str         # exact snippet, present exactly once
  replace: str
  description: str
  tests: tuple      # pytest paths or node ids; () = the whole fast suite
  k: str            # a pytest -k expression, or ""


class Result(NamedTuple):
  mutant: Mutant
  status: str       # killed | survived | timeout | error
  by: str           # the first failing test, or why it is an error
  seconds: float


def load(path):
  """The mutants of a TOML file of ``[[mutant]]`` tables (ids unique)."""
  with open(path, "rb") as f:
    data = tomllib.load(f)
  mutants, seen = [], set()
  for i, m in enumerate(data.get("mutant", [])):
    missing = {"id", "file", "find", "replace", "description"} - set(m)
    if missing:
      raise SystemExit(f"mutate: mutant {i + 1} of {path} lacks "
                       f"{', '.join(sorted(missing))}")
    if m["id"] in seen:
      raise SystemExit(f"mutate: mutant id {m['id']!r} twice in {path}")
    seen.add(m["id"])
    tests = m.get("tests", [])
    mutants.append(Mutant(m["id"], m["file"], m["find"], m["replace"],
                          m["description"],
                          tuple([tests] if isinstance(tests, str) else tests),
                          m.get("k", "")))
  return mutants


def copy_tree(dest):
  """The repository's files (not its environment or caches) under ``dest``."""
  def ignore(folder, names):
    del folder
    return [n for n in names if n in SKIP or n.endswith(".egg-info")]
  shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)


def apply(copy, m):
  """Replace ``m.find`` by ``m.replace`` in the copy; returns the file's
  original text, or raises ValueError when the snippet is not there once."""
  path = os.path.join(copy, m.file)
  if not os.path.isfile(path):
    raise ValueError(f"no file {m.file}")
  with open(path) as f:
    text = f.read()
  n = text.count(m.find)
  if n != 1:
    raise ValueError(f"snippet found {n} times in {m.file}")
  with open(path, "w") as f:
    f.write(text.replace(m.find, m.replace))
  return text


def first_failure(output):
  """The first ``FAILED``/``ERROR`` node id of pytest's short summary."""
  found = re.search(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", output, re.M)
  if found:
    return found.group(1).split("tests/", 1)[-1]
  if "errors during collection" in output or "ImportError" in output:
    return "(collection)"
  return "(see log)"


def run_one(copy, m, args):
  start = time.time()
  try:
    original = apply(copy, m)
  except ValueError as e:
    return Result(m, "error", str(e), 0.0)
  try:
    cmd = [sys.executable, "-m", "pytest", *(m.tests or ["tests"]),
           "-m", "not slow", "-q", "-x", "-p", "no:cacheprovider",
           "-p", "no:randomly"]
    if args.pytest_workers:
      cmd += ["-n", str(args.pytest_workers)]
    if m.k:
      cmd += ["-k", m.k]
    # FUNCNET_MUTATE: tests/conftest.py's Hypothesis profile (no shrinking)
    env = dict(os.environ, PYTHONPATH=copy, PYTHONDONTWRITEBYTECODE="1",
               FUNCNET_MUTATE="1")
    proc = subprocess.Popen(cmd, cwd=copy, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
      out, _ = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.communicate()
      return Result(m, "timeout", f"> {args.timeout} s", time.time() - start)
    seconds = time.time() - start
    if args.log_dir:
      with open(os.path.join(args.log_dir, f"{m.id}.log"), "w") as f:
        f.write(out)
    # pytest: 0 all passed, 1 some failed, 2 collection errors/interrupted,
    # 3 internal error, 4 usage error, 5 no tests collected.
    if proc.returncode == 0:
      return Result(m, "survived", "", seconds)
    if proc.returncode in (1, 2):
      return Result(m, "killed", first_failure(out), seconds)
    tail = out.strip().splitlines()[-1:] or [""]
    return Result(m, "error", f"pytest exit {proc.returncode}: {tail[0]}",
                  seconds)
  finally:
    with open(os.path.join(copy, m.file), "w") as f:
      f.write(original)


def markdown(results, wall):
  counted = [r for r in results if r.status != "error"]
  caught = sum(r.status in ("killed", "timeout") for r in counted)
  lines = ["| mutant | file | status | killed by | time (s) |",
           "|---|---|---|---|---|"]
  for r in results:
    lines.append(f"| `{r.mutant.id}` | {r.mutant.file} | {r.status} | "
                 f"{r.by.replace('|', '/')} | {r.seconds:.0f} |")
  rate = 100.0 * caught / len(counted) if counted else 0.0
  lines += ["", f"Killed {caught} of {len(counted)} ({rate:.1f}%); "
            f"{sum(r.status == 'error' for r in results)} errors; "
            f"{wall / 60:.1f} min wall."]
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--mutants", default=DEFAULT_LIST,
                 help="the TOML list (default tests/mutants.toml)")
  p.add_argument("--only", nargs="+", metavar="ID", help="these mutants only")
  p.add_argument("--list", action="store_true", help="list and exit")
  # On 2 cores, -j 2 with single-process pytest ran 4 mutants in 16 s, -j 1
  # with pytest -n 2 in 78 s: xdist's start-up costs more than the tests, and
  # -x stops a single process at the first failure (docs/testing.md).
  p.add_argument("-j", "--jobs", type=int, default=2,
                 help="mutants tested side by side, each on its own copy "
                      "(default 2)")
  p.add_argument("--pytest-workers", type=int, default=0,
                 help="pytest -n for each mutant (default 0: no xdist)")
  p.add_argument("--timeout", type=float, default=600,
                 help="seconds per mutant (default 600)")
  p.add_argument("--whole-suite", action="store_true",
                 help="run the whole fast suite for every mutant, not its "
                      "named guards")
  p.add_argument("--log-dir", help="pytest's output per mutant, ID.log")
  p.add_argument("--markdown", help="write the result table here too")
  args = p.parse_args(argv)

  mutants = load(args.mutants)
  if args.only:
    unknown = set(args.only) - {m.id for m in mutants}
    if unknown:
      raise SystemExit(f"mutate: no mutant {', '.join(sorted(unknown))}")
    mutants = [m for m in mutants if m.id in args.only]
  if args.list:
    for m in mutants:
      print(f"{m.id:40s} {m.file:34s} {m.description}")
    return 0
  if args.whole_suite:
    mutants = [m._replace(tests=(), k="") for m in mutants]
  if args.log_dir:
    os.makedirs(args.log_dir, exist_ok=True)

  start = time.time()
  results, lock = [], threading.Lock()
  with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
    copies = queue.Queue()
    for j in range(max(1, args.jobs)):
      copy = os.path.join(tmp, f"copy{j}")
      copy_tree(copy)
      copies.put(copy)

    def job(m):
      copy = copies.get()
      try:
        r = run_one(copy, m, args)
      finally:
        copies.put(copy)
      with lock:
        results.append(r)
        print(f"{len(results):3d}/{len(mutants)} {r.status:8s} "
              f"{r.seconds:6.1f}s {m.id}  {r.by}", flush=True)
      return r

    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
      list(pool.map(job, mutants))
  order = {m.id: i for i, m in enumerate(mutants)}
  results.sort(key=lambda r: order[r.mutant.id])
  table = markdown(results, time.time() - start)
  print()
  print(table)
  if args.markdown:
    with open(args.markdown, "w") as f:
      f.write(table + "\n")
  for r in results:
    if r.status == "survived":
      print(f"survived: {r.mutant.id}: {r.mutant.description}")
  bad = [r for r in results if r.status in ("survived", "error")]
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main())
