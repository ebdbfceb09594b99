"""A sweep's variants: the grid, each variant's config, and their groups.

``--grid KEY=V1,V2,...`` (repeatable) spans the cross product of its values,
every other key coming from the base config. Each variant is a full config,
built and checked as ``--set KEY=V`` would build it, so a swept key that the
chosen optimizer does not use is the same one-line error as in
``funcnet train``.

Variants that differ only in the keys below share one compiled program
(a *group*), trained side by side on a leading variant axis:

  TRACED   the step reads them as numbers: learning rate, the optimizer's
           and the schedule's hyperparameters, L2, clip norm, dropout rates.
           Swept ones enter the program as ``(V,)`` arrays; a value 0 that
           switches a stage off (clip, L2, warm-up, dropout) is a different
           program, so 0 and non-0 values fall into different groups.
  HOST     read on the host or at initialisation only: seed, epochs,
           patience, evaluation interval, the initialiser, run options.
  data.*   each variant's dataset is built from its config; variants whose
           datasets have the same shapes share a group (their arrays are
           stacked when their values differ, e.g. another ``data.seed``).

Any other key (batch size, widths, depth, model kind, optimizer name,
activation, dtype, gradient source) changes shapes or the program, and its
values split the grid into groups, run one after another.
"""

import copy
import itertools
import json
from typing import NamedTuple

from funcnet import config as config_lib
from funcnet.errors import ConfigError
from funcnet.models import registry

# Every number of [optimizer] and [schedule] (config.py holds the keys);
# the names and the implementation pick the program.
_OPTIMIZER = [k for k in config_lib.DEFAULTS["optimizer"]
              if k not in ("name", "impl")]
_SCHEDULE = [k for k in config_lib.DEFAULTS["schedule"] if k != "name"]

TRACED = ({f"optimizer.{k}" for k in _OPTIMIZER}
          | {f"schedule.{k}" for k in _SCHEDULE}
          | {"finetune.body_lr_scale"}
          | {f"model.{kind}.dropout" for kind, k in registry.KINDS.items()
             if "dropout" in k.defaults})

# Zero leaves a stage out of the program (see funcnet.tracing.is_off).
SWITCHES = ({"optimizer.l2", "optimizer.clip_norm", "schedule.warmup_steps"}
            | {k for k in TRACED if k.endswith(".dropout")})

HOST = ({"name", "seed", "train.epochs", "train.patience", "train.eval_every",
         "train.compare_grads"}
        | {k for k in config_lib.flatten(config_lib.DEFAULTS)
           if k.startswith("run.")}
        | {f"model.{kind}.{k}" for kind, spec in registry.KINDS.items()
           for k in ("init", "init_scale") if k in spec.defaults})


def split_values(text: str) -> list[str]:
  """``"a,[1,2],'x,y'"`` -> ``["a", "[1,2]", "'x,y'"]``: commas inside
  brackets or quotes do not split."""
  out, depth, quote, cur = [], 0, None, ""
  for ch in text:
    if quote:
      quote = None if ch == quote else quote
    elif ch in "\"'":
      quote = ch
    elif ch in "[{":
      depth += 1
    elif ch in "]}":
      depth -= 1
    elif ch == "," and depth == 0:
      out.append(cur.strip())
      cur = ""
      continue
    cur += ch
  if cur.strip():
    out.append(cur.strip())
  return out


def parse_grid(specs) -> dict:
  """``["optimizer.learning_rate=0.1,0.01", "seed=0,1"]`` -> ``{key: [values]}``
  (values parsed as TOML, as ``--set`` parses them), in the order given."""
  grid = {}
  for text in specs:
    if "=" not in text:
      raise ConfigError(f"--grid {text!r}: expected KEY=V1,V2,..., e.g. "
                        "optimizer.learning_rate=0.1,0.01")
    key, raw = text.split("=", 1)
    key = key.strip()
    values = [config_lib.parse_override(f"{key}={v}")[1]
              for v in split_values(raw)]
    if not values:
      raise ConfigError(f"--grid {text!r}: expected at least one value")
    if key in grid:
      raise ConfigError(f"--grid {key!r} is given twice; expected each key once")
    grid[key] = values
  return grid


def _toml(value) -> str:
  """A value as the right-hand side of ``--set`` (TOML)."""
  return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def variant_config(base: dict, assignment: dict) -> dict:
  """``base`` with ``assignment`` (``{key: value}``) set and checked, as
  ``--set`` would (a key the chosen optimizer does not use is an error)."""
  cfg = config_lib.from_dict(
      copy.deepcopy(base), [f"{k}={_toml(v)}" for k, v in assignment.items()])
  cfg["name"] = base["name"]
  return cfg


def expand(grid: dict) -> list[dict]:
  """The cross product of ``grid`` as assignments ``{key: value}``, the last
  key varying fastest."""
  keys = list(grid)
  return [dict(zip(keys, combo)) for combo in itertools.product(*grid.values())]


class Variant(NamedTuple):
  """One variant: its index, the swept values, and its whole config."""
  index: int
  assignment: dict
  cfg: dict


def variants(base: dict, assignments) -> list[Variant]:
  return [Variant(i, a, variant_config(base, a))
          for i, a in enumerate(assignments)]


def program_key(cfg: dict) -> str:
  """What must be equal for two variants to share a compiled program: every
  key but the traced, host and data ones, and which switches are on. (Data
  shapes are compared once the datasets are built.)"""
  flat = config_lib.flatten(cfg)
  kept = {k: v for k, v in flat.items()
          if k not in TRACED and k not in HOST and not k.startswith("data.")}
  kept.update({f"{k}:on": bool(flat[k]) for k in SWITCHES if k in flat})
  return json.dumps(kept, sort_keys=True)


def traced_keys(cfgs) -> list[str]:
  """The traced keys whose values differ between ``cfgs`` (one group): these
  enter its program as arrays."""
  flats = [config_lib.flatten(c) for c in cfgs]
  return sorted(k for k in TRACED if k in flats[0]
                and len({json.dumps(f[k]) for f in flats}) > 1)


def with_values(cfg: dict, values: dict) -> dict:
  """A shallow-copied config with ``values`` (``{"a.b": value}``) set; the
  values may be traced arrays (no checks: each variant's config was
  checked with its concrete values)."""
  out = copy.deepcopy(cfg)
  for key, v in values.items():
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
      node = node[p]
    node[parts[-1]] = v
  return out
