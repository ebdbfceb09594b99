"""The study registry: every study, declared once, in its own module."""

import copy
import os
import time
from typing import Callable, NamedTuple

from funcnet.errors import ConfigError, unknown


class Study(NamedTuple):
  """One study.

  Attributes:
    name: ``funcnet study NAME``.
    claim: one sentence, the claim the study checks (README and ``--list``).
    run: ``run(out, params) -> dict``: runs the study with ``params`` (the
      defaults, updated by ``quick`` and ``--set``), writes its figures into
      the folder ``out`` and returns the results (JSON-ready), among them
      ``claims`` (:mod:`funcnet.studies.claims`: each clause with ``holds``
      and ``evidence``) and ``readme = {"title", "measured", "figures",
      "table"}``, from which :func:`run` writes ``README.md`` and
      ``table.md`` with the exact command and every parameter. (A study
      without ``readme`` writes them itself through
      :mod:`funcnet.studies.report`.)
    defaults: the study's parameters and their default values.
    quick: the parameters ``--quick`` changes (a run of a few seconds).
  """
  name: str
  claim: str
  run: Callable
  defaults: dict
  quick: dict


STUDIES: dict = {}


def register(study: Study) -> Study:
  if study.name in STUDIES and STUDIES[study.name] is not study:
    raise ValueError(f"study {study.name!r} is registered twice")
  extra = set(study.quick) - set(study.defaults)
  if extra:
    raise ValueError(f"study {study.name!r}: quick keys without a default: "
                     f"{sorted(extra)}")
  STUDIES[study.name] = study
  return study


def get(name: str) -> Study:
  if name not in STUDIES:
    raise unknown("study", name, STUDIES)
  return STUDIES[name]


def params(study: Study, quick: bool = False, overrides=()) -> dict:
  """The study's parameters: defaults, then ``quick``, then ``key=value``
  overrides (values parsed as TOML, checked against the default's type)."""
  from funcnet import config as config_lib
  out = copy.deepcopy(study.defaults)
  if quick:
    out.update(copy.deepcopy(study.quick))
  for text in overrides:
    key, value = config_lib.parse_override(text)
    if key not in out:
      raise ConfigError(f"study {study.name!r} has no parameter {key!r}; "
                        f"expected one of {', '.join(sorted(out))}")
    default = out[key]
    if isinstance(default, bool) != isinstance(value, bool) or (
        isinstance(default, (int, float)) and not isinstance(value, (int, float))) or (
        isinstance(default, (str, list)) and type(value) is not type(default)):
      raise ConfigError(f"study parameter {key!r} = {value!r}; expected a "
                        f"value like the default {default!r}")
    if isinstance(default, float) and isinstance(value, int):
      value = float(value)
    out[key] = value
  return out


def command_line(name: str, out: str, quick: bool = False,
                 overrides=()) -> str:
  """The command that reproduces a run: ``funcnet study NAME [--quick]
  [--set KEY=VALUE ...] --out OUT`` (each ``--set`` quoted for a shell)."""
  import shlex
  parts = ["funcnet", "study", name] + (["--quick"] if quick else [])
  for text in overrides:
    parts += ["--set", shlex.quote(text)]
  return " ".join(parts + ["--out", shlex.quote(out)])


def run(name: str, out=None, quick: bool = False, overrides=()) -> dict:
  """Runs the study ``name`` into ``out`` (default ``studies/<name>-<time>``);
  returns its results with ``"out"`` added."""
  study = get(name)
  p = params(study, quick, overrides)
  out = out or os.path.join("studies", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
  try:
    os.makedirs(out, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"--out {out!r} cannot be created: {e.strerror}") from None
  t0 = time.perf_counter()
  results = study.run(out, p)
  command = command_line(name, out, quick, overrides)
  results = {"study": name, "params": p, "quick": quick, "command": command,
             "wall_time_s": time.perf_counter() - t0, **results}
  from funcnet.studies import report
  readme = results.pop("readme", None)
  if readme is not None:
    report.write_readme(out, readme["title"], results["claims"],
                        readme["measured"], readme.get("figures", ()),
                        readme.get("table", ""), command, p)
  report.write_json(out, results)
  return {**results, "out": out}
