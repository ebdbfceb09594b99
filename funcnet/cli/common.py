"""What several commands share: the config and device flags, the plotting
process, starting JAX (the compilation cache, the timings, the devices) and
writing ``--json``.

Nothing here imports JAX at import time: ``funcnet --help`` builds every
command's flags and must stay fast (tests/test_startup.py).
"""

import contextlib
import json
import sys

from funcnet import timings


def config_flags(p) -> None:
  """``--config FILE`` and ``--set KEY=VALUE`` (repeatable)."""
  p.add_argument("--config", metavar="FILE",
                 help="a TOML config (default: the built-in digits MLP)")
  p.add_argument("--set", dest="overrides", action="append", default=[],
                 metavar="KEY=VALUE",
                 help="override a config key, e.g. --set train.epochs=5 "
                 "(repeatable; values are TOML: 0.1, [64,64], true, adam)")


def plots_likely(args) -> bool:
  """A cheap guess, before JAX, whether this command (``funcnet train``,
  ``funcnet sweep``) draws plots in this process.

  A wrong guess costs time, never a result: a plotter not needed is closed,
  and plots are drawn in-process when there is none. So only what is read
  in microseconds is looked at: the ``--set run.plots=`` flags, the config
  file's ``[run] plots``, and several processes (only process 0 draws; its
  index is known after JAX starts).
  """
  import tomllib
  if args.distributed or args.coordinator or args.num_processes is not None:
    return False
  wanted = True  # the default
  if args.config:
    try:
      with open(args.config, "rb") as f:
        wanted = tomllib.load(f).get("run", {}).get("plots", True) is not False
    except (OSError, ValueError, AttributeError):
      pass  # config.load reports it
  for text in args.overrides:
    key, _, value = text.partition("=")
    if key.strip() == "run.plots":
      wanted = value.strip() != "false"
  return wanted


@contextlib.contextmanager
def plotter(args):
  """A plotting process (:func:`funcnet.run.plot_process.start`) for the
  command's figures, or None when :func:`plots_likely` says there will be
  none (or it cannot start); closed when the command ends.

  Started first thing: it imports matplotlib on the other core while the
  command imports JAX, and draws while the command writes its last files.
  """
  p = None
  if plots_likely(args):
    from funcnet.run import plot_process
    p = plot_process.start()
  try:
    yield p
  finally:
    if p is not None:
      p.close()


def import_flag(p) -> None:
  """``--import MODULE`` (repeatable): the user's own code, imported first."""
  p.add_argument("--import", dest="imports", action="append", default=[],
                 metavar="MODULE",
                 help="import this module first (a name on sys.path or a "
                 "path to a .py file), e.g. the one that registers a model "
                 "kind of your own; a run folder's config is never a reason "
                 "to import one by itself (repeatable)")


def do_imports(args) -> None:
  """Imports the ``--import`` modules (:func:`funcnet.models.user.import_all`)."""
  if args.imports:
    from funcnet.models import user
    user.import_all(args.imports)


def device_flags(p) -> None:
  """``--cpu-devices`` and the multi-process flags (docs/parallel.md)."""
  d = p.add_argument_group(
      "devices and processes", "The same config runs on one device or many; "
      "see docs/parallel.md. Applied before JAX starts.")
  d.add_argument("--cpu-devices", type=int, metavar="N",
                 help="simulate N devices on the CPU (jax_num_cpu_devices)")
  d.add_argument("--coordinator", metavar="HOST:PORT",
                 help="process 0's address: join a multi-process run "
                 "(with --num-processes and --process-id)")
  d.add_argument("--num-processes", type=int, metavar="N",
                 help="processes in the run (one per host, usually)")
  d.add_argument("--process-id", type=int, metavar="I",
                 help="this process's index, 0..N-1 (0 writes the files)")
  d.add_argument("--distributed", action="store_true",
                 help="join a multi-process run that JAX detects by itself "
                 "(Cloud TPU pod slice, SLURM, Open MPI, JAX_COORDINATOR_ADDRESS)")


def start_jax(cfg, args=None) -> None:
  """What must precede JAX's first compilation: the persistent compilation
  cache (:mod:`funcnet.run.compile_cache`, ``run.compilation_cache``), the
  ``FUNCNET_TIMINGS`` counters and, with ``args`` (parsed
  :func:`device_flags`), the devices."""
  from funcnet.run import compile_cache
  timings.listen()
  compile_cache.enable(cfg["run"]["compilation_cache"])
  if args is not None:
    _start_devices(args, cfg)


def _start_devices(args, cfg) -> None:
  """``--cpu-devices`` and ``jax.distributed``, before JAX's backend starts."""
  from funcnet import parallel
  if args.cpu_devices is not None:
    parallel.cpu_devices(args.cpu_devices)
  if args.distributed or args.coordinator or args.num_processes is not None \
      or args.process_id is not None:
    p = cfg["parallel"]
    parallel.initialize(args.coordinator, args.num_processes, args.process_id,
                        heartbeat_timeout=p["heartbeat_timeout"],
                        shutdown_timeout=p["shutdown_timeout"],
                        init_timeout=p["init_timeout"])


def log(line: str) -> None:
  """A benchmark's progress line: on stderr, so stdout holds the table."""
  print(line, file=sys.stderr, flush=True)


def write_json(path, records) -> None:
  """``--json FILE``: the records as indented JSON (nothing without it)."""
  if path:
    with open(path, "w") as f:
      json.dump(records, f, indent=2)
      f.write("\n")
