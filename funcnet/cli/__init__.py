"""The ``funcnet`` command: a thin layer of flags over :mod:`funcnet.experiment`.

  funcnet train     [--config FILE] [--set key=value ...] [--out DIR]
                    [--resume | --auto-resume]
                    [--cpu-devices N] [--coordinator HOST:PORT --num-processes N
                    --process-id I | --distributed]
  funcnet gradcheck [--config FILE] [--set key=value ...] [--batch N]
  funcnet eval      --run DIR
  funcnet sample    --run DIR [--prompt TEXT] [--length N] [--temperature T]
                    [--top-k K] [--top-p P] [--seed S]
  funcnet attack    --run DIR [--method fgsm,pgd] [--eps 0.5,1,2,4,8]
                    [--steps N] [--step-size R] [--no-random-start]
                    [--targeted [--target-class K|next]] [--source S] [--out DIR]
  funcnet explain   --run DIR [--method saliency,grad_x_input,smoothgrad,ig,
                    attention,sanity] [--examples N|I,J] [--source manual|autodiff]
                    [--steps M] [--out DIR]
  funcnet quantize  --run DIR [--bits 8] [--mode weights|weights+activations]
                    [--out DIR]
  funcnet prune     --run DIR --sparsity P [--epochs N] [--learning-rate LR]
                    [--out DIR]
  funcnet sweep     [--config FILE] [--set ...] --grid KEY=V1,V2 ... [--out DIR]
                    [--sequential] | --out DIR --resume
                    | --search optuna --space KEY=DIST ...
  funcnet study     NAME [--out DIR] [--quick] [--set key=value ...] | --list
  funcnet compare   RUN RUN ... [--out DIR]
  funcnet data      convert SRC DST [--shard-rows N] | generate DST --train N ...
                    (SRC a text file or text: a token folder)
  funcnet bench     steps [--sizes small,large] [--sweep] [--plot FILE]
                    | models [CONFIG ...] | data shards DIR [--train]
                    | data memory-cap MB | sweep [CONFIG:N ...] | startup | gpt
                    (each with [--json FILE])
  funcnet baseline  [--config FILE] [--set ...] [--orders 1-8] [--out FILE]

One module per command in this package, each with ``NAME``, ``HELP``,
``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> int``; a new
command is a new module added to :data:`COMMANDS`. A command with actions
(``data``, ``bench``) gives each action's parser its own ``run`` with
``set_defaults(handler=...)``. Nothing here imports JAX before a command runs:
``funcnet --help`` stays fast (tests/test_startup.py).

The exit statuses are :data:`funcnet.cli.parser.EXIT_STATUS` (the README's
table, printed by ``funcnet --help``); the command
turns :class:`funcnet.errors.FuncnetError` into one line on stderr and its
code, ``OSError`` into 2, anything else into 70 with its traceback.
"""

import atexit
import os
import sys
import threading

from funcnet import timings
from funcnet.run import malloc
from funcnet.cli import (attack, baseline, bench, compare, data, evaluate,
                         explain, gradcheck, prune, quantize, sample, study,
                         sweep, train)
from funcnet.cli.parser import build_parser
from funcnet.errors import FuncnetError

COMMANDS = (train, gradcheck, evaluate, sample, explain, attack, quantize,
            prune, baseline, sweep, study, compare, data, bench)

INTERNAL = 70  # sysexits.h's EX_SOFTWARE

__all__ = ["COMMANDS", "INTERNAL", "main"]


def main(argv=None) -> int:
  """Runs one command; returns its exit status.

  Called without ``argv`` (the ``funcnet`` console script, ``python -m
  funcnet.cli``), it is the program: once the command has returned, every
  file is written and no other thread runs, it runs the ``atexit`` handlers,
  flushes stdout and stderr and ends the process with ``os._exit``. That
  skips the interpreter's teardown (freeing every module, JAX's client and
  its threads): 0.4-0.6 s of a one-epoch ``funcnet train`` here, a sixth of
  its time (issue 15). With ``argv`` (tests, scripts) the status comes back.
  """
  code = _main(argv)
  if argv is None and _alone():
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
  return code


def _alone() -> bool:
  """No other thread running and no multi-process run to leave in step."""
  jax = sys.modules.get("jax")
  if jax is not None and jax.distributed.is_initialized():
    return False
  return all(t is threading.main_thread() or t.daemon or not t.is_alive()
             for t in threading.enumerate())


def _os_error(e: OSError) -> str:
  """``"filesystem: 'runs/x/config.json' No space left on device"``."""
  where = f" {e.filename!r}" if e.filename else ""
  return f"filesystem:{where} {e.strerror or e}"


def _main(argv) -> int:
  timings.start()
  # before any XLA program allocates: its scratch memory reused from step
  # to step rather than mapped and faulted in again (funcnet.run.malloc)
  malloc.tune()
  parser = build_parser(COMMANDS)
  args = parser.parse_args(argv)
  if getattr(args, "one_arena", False):  # step benchmarks, before JAX starts
    malloc.tune(one_arena=True)
  if args.command is None:
    parser.print_help()
    return 2
  try:
    return args.handler(args)
  except FuncnetError as e:
    print(f"funcnet: {e.label}: {e}", file=sys.stderr)
    return e.exit_code
  except KeyboardInterrupt:
    print("funcnet: interrupted; checkpoints already written stay", file=sys.stderr)
    return 130
  except OSError as e:
    # The filesystem said no (read-only, full, a file where a folder should
    # be, ...) somewhere the checks before training could not foresee.
    print(f"funcnet: error: {_os_error(e)}; expected a path this process "
          "can write, with space left", file=sys.stderr)
    return 2
  except Exception:
    return _internal_error()
  finally:
    timings.write(args.command)  # only with FUNCNET_TIMINGS=FILE


def _internal_error() -> int:
  """A bug: its traceback, then exit 70 (or, in a multi-process run, leave
  at once)."""
  import traceback
  traceback.print_exc()
  jax = sys.modules.get("jax")
  if jax is not None and jax.distributed.is_initialized():
    # The other processes wait for this one inside a collective. A normal
    # exit would hold them at the shutdown barrier for
    # parallel.shutdown_timeout; leaving at once stops its heartbeats, so
    # they stop within parallel.heartbeat_timeout instead.
    e = sys.exc_info()[1]
    what = (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
    print(f"funcnet: error: process {jax.process_index()} of "
          f"{jax.process_count()} failed ({what}); leaving at once so the "
          "other processes stop too", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(INTERNAL)
  print(f"funcnet: internal error (exit {INTERNAL}): a bug in funcnet; "
        "please report it with the traceback above", file=sys.stderr)
  return INTERNAL
