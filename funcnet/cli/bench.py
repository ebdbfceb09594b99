"""``funcnet bench steps|models|data|sweep|startup``: one subcommand per
benchmark of :mod:`funcnet.bench`; see docs/performance.md.

  steps    one MLP training step against the device's matmul peak
           (:mod:`funcnet.bench.step_time`)
  models   one training step of application configs, manual vs autodiff,
           beside the same models in Flax, Equinox and PyTorch
           (:mod:`funcnet.bench.model_steps`, :mod:`funcnet.bench.peers`)
  data     ``data shards DIR``: the shards loader, and with ``--train`` a
           config trained from memory and from the shards;
           ``data memory-cap MB``: a dataset 3x larger than a memory cap,
           trained, its peak RSS against the cap (:mod:`funcnet.bench.data_io`)
  sweep    a vectorised sweep against its variants one at a time
           (:mod:`funcnet.bench.sweep_speed`)
  startup  the time to a first result, cold and warm
           (:mod:`funcnet.bench.startup`)
  gpt      the character GPT's training step, manual and autodiff, against
           the same model in PyTorch (:mod:`funcnet.bench.lm_step`)

Each prints a table on stdout (progress on stderr) and, with ``--json
FILE``, writes its records.
"""

import argparse

from funcnet.cli import common
from funcnet.errors import FuncnetError

NAME = "bench"
HELP = "time training steps, models, data loading, sweeps or startup"
DESCRIPTION = ("One benchmark per subcommand (funcnet bench SUBCOMMAND "
               "--help); see docs/performance.md for the numbers measured.")


def run(args) -> int:
  """``funcnet bench`` without a subcommand."""
  raise FuncnetError("funcnet bench needs a benchmark; expected steps, "
                     "models, data, sweep, startup or gpt")


def add_arguments(p) -> None:
  sub = p.add_subparsers(dest="bench_command", metavar="BENCHMARK")
  _steps_arguments(sub.add_parser(
      "steps", help="steps/s of an MLP training step (manual and autodiff, "
      "Python loop and scanned epoch) against the device's matmul peak",
      description="Times one SGD step of a sigmoid MLP (mse) per size, "
      "gradient source and mode, and a square matmul on the same device."))
  _models_arguments(sub.add_parser(
      "models", help="one training step of application configs, hand-written "
      "vs autodiff gradients (time and XLA temp memory), beside the same "
      "models in Flax, Equinox and PyTorch"))
  _data_arguments(sub.add_parser(
      "data", help="the shards loader (and training from shards vs memory), "
      "or a dataset larger than a memory cap"))
  _sweep_arguments(sub.add_parser(
      "sweep", help="vectorised sweeps against the same variants trained one "
      "at a time"))
  _startup_arguments(sub.add_parser(
      "startup", help="wall time of 'funcnet train --set train.epochs=1' "
      "(cold and warm compilation cache, in fresh processes) against "
      "importing JAX and running one op, with a breakdown"))
  _gpt_arguments(sub.add_parser(
      "gpt", help="the character GPT's training step (4 layers, width 128, "
      "context 128, batch 32), manual and autodiff, against the same model "
      "in PyTorch on the same CPU, with MFU"))


def _json_flag(p) -> None:
  p.add_argument("--json", metavar="FILE", help="write the records as JSON")


def _repeats_flag(p, default: int, what: str) -> None:
  p.add_argument("--repeats", type=int, default=default, metavar="N",
                 help=f"{what} (default {default})")


def _names(text):
  return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _ints(text, flag):
  try:
    return [int(t) for t in _names(text)]
  except ValueError:
    raise FuncnetError(f"{flag} {text!r}: expected comma-separated "
                       "integers") from None


def _check_repeats(args) -> None:
  if args.repeats < 1 or getattr(args, "min_time", 1.0) <= 0:
    raise FuncnetError("--repeats must be >= 1 and --min-time > 0")


# --- steps -------------------------------------------------------------------

def _steps_arguments(p) -> None:
  p.set_defaults(handler=steps)
  p.add_argument("--sizes", default="small,large", metavar="A,B",
                 help="comma-separated: tiny, small, medium, large "
                 "(default small,large)")
  p.add_argument("--grads", default="manual,autodiff", metavar="A,B",
                 help="gradient sources (default manual,autodiff)")
  p.add_argument("--modes", default="loop,scan,scan+norms", metavar="A,B",
                 help="of loop (a Python loop of jitted steps), scan "
                 "(train.fit, one jitted make_epoch per epoch, norms=False), "
                 "scan+norms (fit's default per-layer norms) (default all "
                 "three)")
  p.add_argument("--dtypes", metavar="A,B",
                 help="float dtypes (default float32, plus bfloat16 on GPU)")
  _repeats_flag(p, 5, "timed repeats after warm-up")
  p.add_argument("--min-time", type=float, default=1.0, metavar="S",
                 help="seconds each repeat runs at least (default 1.0)")
  p.add_argument("--peak-size", type=int, metavar="N",
                 help="n of the n x n peak matmul (default 2048 on CPU, 8192 "
                 "on GPU/TPU)")
  p.add_argument("--sweep", action="store_true",
                 help="also time the large MLP across widths and batches")
  p.add_argument("--sweep-widths", metavar="A,B", help="hidden widths of the "
                 "sweep (default 128,256,512,1024,2048)")
  p.add_argument("--sweep-batches", metavar="A,B", help="batches of the "
                 "sweep (default 32,64,128,256,512,1024)")
  p.add_argument("--plot", metavar="FILE", help="with --sweep: write a PNG "
                 "of time per step against FLOPs per step")
  _json_flag(p)


def steps(args) -> int:
  from funcnet.bench import step_time
  _check_repeats(args)
  if args.plot and not args.sweep:
    raise FuncnetError("--plot draws the sweep; expected --sweep with it")
  grid = {}
  if args.sweep_widths:
    grid["widths"] = _ints(args.sweep_widths, "--sweep-widths")
  if args.sweep_batches:
    grid["batches"] = _ints(args.sweep_batches, "--sweep-batches")
  result = step_time.run(
      _names(args.sizes), _names(args.grads), _names(args.modes),
      _names(args.dtypes), repeats=args.repeats, min_time=args.min_time,
      peak_size=args.peak_size,
      sweep=step_time.Sweep(**grid) if args.sweep else None, log=common.log)
  print(step_time.format_table(result))
  if args.json:
    common.write_json(args.json, step_time.records_json(result))
    print(f"records written to {args.json}")
  if args.plot:
    print(f"sweep plot written to {step_time.plot_sweep(result, args.plot)}")
  return 0


# --- models ------------------------------------------------------------------

def _models_arguments(p) -> None:
  # every contestant's temporaries reused from step to step, XLA's threads'
  # included (funcnet.run.malloc: what it costs compilation, and why a
  # training run does without)
  p.set_defaults(handler=models, one_arena=True)
  p.add_argument("configs", nargs="*", metavar="CONFIG",
                 help="config names or TOML files (default the MNIST-1D cnn, "
                 "gru, transformer and text_gpt)")
  _repeats_flag(p, 5, "timed repeats after warm-up")
  p.add_argument("--min-time", type=float, default=1.0, metavar="S",
                 help="seconds each repeat runs at least (default 1.0)")
  p.add_argument("--peak-size", type=int, default=0, metavar="N",
                 help="also measure the matmul peak with N x N products and "
                 "set each step's GFLOP/s against it (default 0: not)")
  p.add_argument("--rounds", type=int, default=3, metavar="N",
                 help="rounds in which every contestant is timed in turn; "
                 "each one's median is reported (default 3)")
  p.add_argument("--peers", action=argparse.BooleanOptionalAction,
                 default=None, help="also time the models written in Flax, "
                 "Equinox and PyTorch (default: those whose library "
                 "imports; a missing one is named in one line)")
  p.add_argument("--modes", default="loop,scan", metavar="M[,M]",
                 help="how each JAX contestant's steps are run, its faster "
                 "one reported: loop (a Python loop of jitted steps), scan "
                 "(the steps scanned in one jitted call, as funcnet train "
                 "runs an epoch); default loop,scan")
  _json_flag(p)


def _modes(text: str) -> tuple:
  from funcnet.bench import model_steps
  modes = tuple(m.strip() for m in text.split(",") if m.strip())
  wrong = [m for m in modes if m not in model_steps.MODES]
  if wrong or not modes:
    raise FuncnetError(f"--modes {text!r}: expected loop, scan or loop,scan")
  return tuple(dict.fromkeys(modes))


def models(args) -> int:
  from funcnet.bench import model_steps
  _check_repeats(args)
  if args.rounds < 1:
    raise FuncnetError("--rounds must be >= 1")
  records = model_steps.run(args.configs or model_steps.CONFIGS,
                            rounds=args.rounds, repeats=args.repeats,
                            min_time=args.min_time, log=common.log,
                            peak_size=args.peak_size, peers=args.peers,
                            modes=_modes(args.modes))
  print(model_steps.format_table(records))
  common.write_json(args.json, records)
  return 0


# --- data --------------------------------------------------------------------

def _data_arguments(p) -> None:
  p.set_defaults(handler=_data_needs_a_mode)
  sub = p.add_subparsers(dest="data_mode", metavar="MODE")
  s = sub.add_parser(
      "shards", help="examples/s of the shards loader alone on DIR, batch "
      "128, with and without prefetch; with --train, training from memory "
      "against training from DIR")
  s.set_defaults(handler=data_shards)
  s.add_argument("dir", metavar="DIR", help="a shards folder (funcnet data "
                 "convert)")
  s.add_argument("--train", nargs="?", const="mnist1d_mlp", metavar="CONFIG",
                 help="also train CONFIG (default mnist1d_mlp; DIR must hold "
                 "its dataset's shards) from memory and from DIR, "
                 "alternately (--repeats rounds), and compare steps/s and "
                 "the final params")
  s.add_argument("--epochs", type=int, default=8, metavar="N",
                 help="with --train: epochs per run, >= 3 (default 8)")
  _repeats_flag(s, 5, "rounds of each mode")
  _json_flag(s)
  m = sub.add_parser(
      "memory-cap", help="generate a set of 3 x CAP_MB MiB of shards (in "
      "$TMPDIR, removed after), train it for one epoch in a subprocess and "
      "report its peak RSS against the cap")
  m.set_defaults(handler=data_memory_cap)
  m.add_argument("cap_mb", type=float, metavar="CAP_MB",
                 help="the memory cap in MiB")
  _json_flag(m)


def _data_needs_a_mode(args) -> int:
  raise FuncnetError("funcnet bench data needs a mode; expected shards DIR "
                     "or memory-cap CAP_MB")


def data_shards(args) -> int:
  from funcnet.bench import data_io
  _check_repeats(args)
  records = data_io.run(args.dir, batch_size=128, steps=300,
                        rounds=args.repeats, log=common.log)
  print(data_io.format_table(records))
  if args.train:
    rec = data_io.train(args.dir, args.train, epochs=args.epochs,
                        rounds=args.repeats, log=common.log)
    print()
    print(data_io.format_train(rec))
    records = {"loader": records, "train": rec}
  common.write_json(args.json, records)
  return 0


def data_memory_cap(args) -> int:
  if args.cap_mb <= 0:
    raise FuncnetError(f"memory-cap {args.cap_mb:g}: expected a cap in "
                       "MiB > 0")
  from funcnet.bench import data_io
  rec = data_io.memory(args.cap_mb, log=common.log)
  print(data_io.format_memory(rec))
  common.write_json(args.json, rec)
  return 0


# --- sweep, startup ----------------------------------------------------------

def _sweep_arguments(p) -> None:
  p.set_defaults(handler=sweep)
  p.add_argument("cases", nargs="*", metavar="CONFIG:N",
                 help="a config and its variants, e.g. mnist1d_gru:16 or "
                 "mnist1d_transformer:16 (default digits_mlp:16, "
                 "mnist1d_cnn:16, digits_mlp:64, mnist1d_cnn:64)")
  p.add_argument("--epochs", type=int, default=5, metavar="N",
                 help="epochs per variant (default 5)")
  p.add_argument("--commands", action="store_true",
                 help="also time whole 'funcnet sweep' commands, vectorised "
                 "and --sequential, as subprocesses (same warm cache)")
  _json_flag(p)


def _check_cases(cases) -> None:
  """``CONFIG:N``, N a positive multiple of 4 (4 learning rates x N/4 seeds)."""
  for case in cases:
    name, _, n = case.partition(":")
    if not name or not n.isdigit() or int(n) < 4 or int(n) % 4:
      raise FuncnetError(f"bench sweep {case!r}: expected CONFIG:N with N a "
                         "multiple of 4, e.g. digits_mlp:16")


def sweep(args) -> int:
  from funcnet.bench import sweep_speed
  _check_cases(args.cases)
  records = sweep_speed.run(args.cases or sweep_speed.CASES,
                            epochs=args.epochs, commands=args.commands,
                            log=common.log)
  print(sweep_speed.format_table(records))
  common.write_json(args.json, records)
  return 0


def _startup_arguments(p) -> None:
  p.set_defaults(handler=startup)
  _repeats_flag(p, 5, "rounds, each a cold and a warm run")
  _json_flag(p)


def startup(args) -> int:
  from funcnet.bench import startup as startup_bench
  _check_repeats(args)
  result = startup_bench.run(args.repeats, log=common.log)
  print(startup_bench.format_table(result))
  common.write_json(args.json, result)
  return 0


def _gpt_arguments(p) -> None:
  p.set_defaults(handler=gpt, one_arena=True)  # as bench models: steps by call
  _repeats_flag(p, 3, "rounds, each timing the three steps in turn")
  _json_flag(p)


def gpt(args) -> int:
  from funcnet.bench import lm_step
  _check_repeats(args)
  result = lm_step.run(rounds=args.repeats, log=common.log)
  common.write_json(args.json, result)
  return 0
