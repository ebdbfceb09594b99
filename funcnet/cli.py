"""The ``funcnet`` command: a thin layer of flags over :mod:`funcnet.experiment`.

  funcnet train     [--config FILE] [--set key=value ...] [--out DIR]
                    [--resume | --auto-resume]
                    [--cpu-devices N] [--coordinator HOST:PORT --num-processes N
                    --process-id I | --distributed]
  funcnet gradcheck [--config FILE] [--set key=value ...] [--batch N]
  funcnet eval      --run DIR
  funcnet sweep     [--config FILE] [--set ...] --grid KEY=V1,V2 ... [--out DIR]
                    [--sequential] | --search optuna --space KEY=DIST ...
  funcnet study     NAME [--out DIR] [--quick] [--set key=value ...] | --list
  funcnet compare   RUN RUN ... [--out DIR]
  funcnet data      convert SRC DST [--shard-rows N] | generate DST --train N ...
  funcnet bench     [--sizes small,large] [--json FILE] [--sweep] [--plot FILE]
                    [--models [CONFIG,...]] [--startup] [--data DIR]

Exit status (the README's table):
  0   done
  1   funcnet gradcheck: the gradients disagree
  2   a user mistake or a filesystem problem (bad config, data file, name,
      run folder, checkpoint; a folder that cannot be written; a full disk),
      one line on stderr; usage errors too (argparse)
  3   training diverged (NaN/inf loss; the last good checkpoint stays)
  70  an internal error: a bug in funcnet, with its traceback (please report)
  75  funcnet train stopped by SIGTERM (preemption) after saving; --resume
  130 stopped by SIGINT (Ctrl-C); funcnet train saves first, as for 75
"""

import argparse
import atexit
import json
import os
import sys
import threading

from funcnet import timings
from funcnet.errors import FuncnetError

EPILOG = """examples:
  funcnet train                                   # the default: an MLP on digits
  funcnet train --config configs/xor_textbook.toml
  funcnet train --config configs/digits_mlp.toml --set train.epochs=5 --out runs/try
  funcnet train --out runs/try --resume           # continue from the latest checkpoint
  until funcnet train --out runs/spot --auto-resume; do [ $? = 75 ] || break; done
  funcnet train --cpu-devices 8 --out runs/dp8    # data parallel over 8 simulated devices
  funcnet train --out runs/mp --coordinator 127.0.0.1:7777 --num-processes 2 --process-id 0
  funcnet gradcheck --config configs/digits_mlp.toml
  funcnet eval --run runs/try
  funcnet sweep --grid optimizer.learning_rate=0.01,0.001 --grid seed=0,1,2,3
  funcnet sweep --search optuna --space optimizer.learning_rate=loguniform:1e-4,1e-1
  funcnet data convert mnist1d shards/mnist1d        # then --set data.name='shards/mnist1d'
  funcnet study --list
  funcnet bench --sizes small,large --json step_time.json
Every config key, its default and meaning: configs/README.md."""


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="funcnet", description="Train neural networks written as pure JAX "
      "functions; compare hand-written backprop with jax.grad.",
      epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", metavar="COMMAND")

  def config_flags(q):
    q.add_argument("--config", metavar="FILE",
                   help="a TOML config (default: the built-in digits MLP)")
    q.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=5 "
                   "(repeatable; values are TOML: 0.1, [64,64], true, adam)")

  def device_flags(q):
    d = q.add_argument_group(
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

  t = sub.add_parser("train", help="train a model from a config into a run folder",
                     description="Train from a config; writes config.json, "
                     "metrics.jsonl, summary.json, plots and checkpoints.")
  config_flags(t)
  t.add_argument("--out", metavar="DIR",
                 help="run folder (default: runs/<config name>-<time>)")
  t.add_argument("--resume", action="store_true",
                 help="continue the run in --out from its newest good "
                 "checkpoint, with its saved config (or --config), plus any "
                 "--set that only changes train.epochs, run.* reporting or "
                 "parallel.*; exit 2 without a checkpoint")
  t.add_argument("--auto-resume", action="store_true",
                 help="--resume when --out holds a checkpoint, else start it "
                 "(for a retry loop on preemptible machines; exit 75 means "
                 "SIGTERM stopped it after saving)")
  t.add_argument("--progress", choices=("auto", "always", "never"),
                 help="progress bar (default: run.progress)")
  device_flags(t)

  g = sub.add_parser("gradcheck", help="manual vs autodiff vs finite "
                     "differences, per layer, on a batch of the config's data")
  config_flags(g)
  g.add_argument("--batch", type=int, metavar="N",
                 help="examples in the batch (default 8, or the whole "
                 "training split when it is smaller)")

  e = sub.add_parser("eval", help="evaluate a run's latest checkpoint on its "
                     "test split")
  e.add_argument("--run", required=True, metavar="DIR", help="a run folder")

  sw = sub.add_parser(
      "sweep", help="train many variants of a config in one compiled program "
      "(a grid, or an Optuna search)",
      description="Trains the cross product of the --grid values (every other "
      "key from the config). Variants that differ only in numbers the step "
      "reads (learning rate, optimizer and schedule hyperparameters, L2, "
      "clip norm, dropout) or in seed, epochs, patience or initialiser train "
      "together in one vectorised program; other keys split the grid into "
      "groups. Writes results.csv, results.md, best.toml, sweep.json, "
      "heatmap.png, curves.png and variants/ into --out.")
  config_flags(sw)
  sw.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                  help="a swept key and its values (repeatable; values are "
                  "TOML, e.g. model.mlp.hidden=[64],[128,128])")
  sw.add_argument("--out", metavar="DIR",
                  help="sweep folder (default: sweeps/<config name>-<time>)")
  sw.add_argument("--sequential", action="store_true",
                  help="train the variants one at a time with the ordinary "
                  "loop (to compare, or to debug)")
  sw.add_argument("--search", choices=("optuna",),
                  help="search with Optuna instead of a grid (the [sweep] extra)")
  sw.add_argument("--space", action="append", default=[], metavar="KEY=DIST",
                  help="with --search: KEY=loguniform:LOW,HIGH | uniform:LOW,HIGH"
                  " | int:LOW,HIGH | logint:LOW,HIGH | choice:V1,V2,... "
                  "(repeatable)")
  sw.add_argument("--trials", type=int, default=32, metavar="N",
                  help="with --search: trials in all (default 32)")
  sw.add_argument("--parallel", type=int, default=8, metavar="K",
                  help="with --search: trials trained at once (default 8)")
  device_flags(sw)

  st = sub.add_parser("study", help="run a study: a classic claim about "
                      "backprop or gradient descent as figures and numbers",
                      description="Runs one study into a folder with its "
                      "figures, table.md, results.json and README.md; see "
                      "docs/studies.md.")
  st.add_argument("name", nargs="?", metavar="NAME", help="the study "
                  "(--list shows them)")
  st.add_argument("--list", action="store_true", help="list the studies")
  st.add_argument("--out", metavar="DIR",
                  help="output folder (default: studies/<name>-<time>)")
  st.add_argument("--quick", action="store_true",
                  help="a small version that runs in seconds")
  st.add_argument("--set", dest="overrides", action="append", default=[],
                  metavar="KEY=VALUE", help="change a study parameter "
                  "(repeatable; --list shows them)")

  cmp = sub.add_parser("compare", help="overlay the curves of run folders "
                       "(train runs or sweep variants) in one PNG and a table",
                       description="Reads each run folder's metrics.jsonl "
                       "and summary.json and writes compare.png (training "
                       "loss, test metric, per-layer gradient norms per "
                       "epoch) and compare.md (per run: status, epochs, final "
                       "training loss and test metrics) into --out.")
  cmp.add_argument("runs", nargs="+", metavar="RUN", help="a run folder "
                   "(funcnet train --out, or a sweep's variants/NNN)")
  cmp.add_argument("--out", metavar="DIR",
                   help="output folder (default: compare-<time>)")

  b = sub.add_parser("bench", help="steps/s of a training step (manual and "
                     "autodiff, Python loop and scanned epoch) against the "
                     "device's matmul peak",
                     description="Times one SGD step of a sigmoid MLP (mse) "
                     "per size, gradient source and mode, and a square matmul "
                     "on the same device; see docs/performance.md.")
  b.add_argument("--sizes", default="small,large", metavar="A,B",
                 help="comma-separated: tiny, small, medium, large "
                 "(default small,large)")
  b.add_argument("--grads", default="manual,autodiff", metavar="A,B",
                 help="gradient sources (default manual,autodiff)")
  b.add_argument("--modes", default="loop,scan,scan+norms", metavar="A,B",
                 help="of loop (a Python loop of jitted steps), scan "
                 "(train.fit, one jitted make_epoch per epoch, norms=False), "
                 "scan+norms (fit's default per-layer norms) (default all "
                 "three)")
  b.add_argument("--dtypes", metavar="A,B",
                 help="float dtypes (default float32, plus bfloat16 on GPU)")
  b.add_argument("--repeats", type=int, default=5, metavar="N",
                 help="timed repeats after warm-up (default 5)")
  b.add_argument("--min-time", type=float, default=1.0, metavar="S",
                 help="seconds each repeat runs at least (default 1.0)")
  b.add_argument("--peak-size", type=int, metavar="N",
                 help="n of the n x n peak matmul (default 2048 on CPU, 8192 "
                 "on GPU/TPU)")
  b.add_argument("--sweep", action="store_true",
                 help="also time the large MLP across widths and batches")
  b.add_argument("--sweep-widths", metavar="A,B", help="hidden widths of the "
                 "sweep (default 128,256,512,1024,2048)")
  b.add_argument("--sweep-batches", metavar="A,B", help="batches of the "
                 "sweep (default 32,64,128,256,512,1024)")
  b.add_argument("--plot", metavar="FILE", help="with --sweep: write a PNG "
                 "of time per step against FLOPs per step")
  b.add_argument("--json", metavar="FILE", help="write the records as a JSON "
                 "list")
  b.add_argument("--sweeps", nargs="?", const="default", metavar="A:N,B:N",
                 help="instead: vectorised sweeps against the same variants "
                 "trained one at a time (default digits_mlp:16, "
                 "mnist1d_cnn:16, digits_mlp:64, mnist1d_cnn:64)")
  b.add_argument("--epochs", type=int, default=5, metavar="N",
                 help="with --sweeps: epochs per variant (default 5)")
  b.add_argument("--startup", action="store_true",
                 help="instead: wall time of 'funcnet train --set "
                 "train.epochs=1' (cold and warm compilation cache, in fresh "
                 "processes) against importing JAX and running one op, with "
                 "a breakdown (--repeats rounds)")
  b.add_argument("--models", nargs="?", const="default", metavar="A,B",
                 help="instead: one training step of application configs "
                 "(default the MNIST-1D cnn, gru, transformer), hand-written "
                 "vs autodiff gradients, time and XLA temp memory")
  b.add_argument("--data", metavar="DIR",
                 help="instead: examples/s of the shards loader alone on "
                 "DIR (funcnet data convert), batch 128, with and without "
                 "prefetch")
  b.add_argument("--data-train", nargs="?", const="mnist1d_mlp",
                 metavar="CONFIG", help="with --data: also train CONFIG "
                 "(default mnist1d_mlp; DIR must hold its dataset's shards) "
                 "from memory and from DIR, alternately (--repeats rounds), "
                 "and compare steps/s and the final params")
  b.add_argument("--data-epochs", type=int, default=8, metavar="N",
                 help="with --data-train: epochs per run, >= 3 (default 8)")
  b.add_argument("--data-memory", type=float, metavar="CAP_MB",
                 help="instead: generate a set of 3 x CAP_MB MiB of shards "
                 "(in $TMPDIR, removed after), train it for one epoch in a "
                 "subprocess and report its peak RSS against the cap")

  da = sub.add_parser("data", help="write datasets as ArrayRecord shards for "
                      "streaming (the [data] extra)",
                      description="Writes a shards folder (meta.json, "
                      "stats.npz, train-*.array_record, test-*.array_record) "
                      "that training reads by row; see funcnet.data.shards.")
  dsub = da.add_subparsers(dest="data_command", metavar="ACTION")
  dc = dsub.add_parser("convert", help="any dataset funcnet loads (a name, "
                       ".npz or .csv) into shards")
  dc.add_argument("src", metavar="SRC", help="a dataset name (digits, "
                  "mnist1d, ...) or an .npz / .csv file")
  dc.add_argument("dst", metavar="DST", help="the shards folder to create "
                  "(must not exist, or be empty)")
  dc.add_argument("--shard-rows", type=int, metavar="N",
                  help="examples per shard file (default: about 128 MiB)")
  dc.add_argument("--set", dest="overrides", action="append", default=[],
                  metavar="KEY=VALUE", help="data.seed (the split), "
                  "data.label (a CSV's label column), data.task (a file's "
                  "task), as in a config (repeatable)")
  dg = dsub.add_parser("generate", help="a synthetic classification set "
                       "(x ~ N(0, 1), y = argmax(x @ W)), written chunk by "
                       "chunk, never whole in memory")
  dg.add_argument("dst", metavar="DST", help="the shards folder to create")
  dg.add_argument("--train", type=int, required=True, metavar="N",
                  help="training examples")
  dg.add_argument("--test", type=int, required=True, metavar="N",
                  help="test examples")
  dg.add_argument("--shape", required=True, metavar="D[,D..]",
                  help="one example's shape, e.g. 784 or 28,28")
  dg.add_argument("--classes", type=int, required=True, metavar="K",
                  help="classes (the teacher's outputs)")
  dg.add_argument("--seed", type=int, default=0, metavar="S",
                  help="seed of the teacher and the inputs (default 0)")
  dg.add_argument("--chunk-rows", type=int, default=8192, metavar="N",
                  help="examples generated at a time (bounds the memory; "
                  "default 8192)")
  dg.add_argument("--shard-rows", type=int, metavar="N",
                  help="examples per shard file (default: about 128 MiB)")
  return p


def _plots_likely(args) -> bool:
  """A cheap guess, before JAX, whether this run draws plots in this process.

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


def _cmd_train(args) -> int:
  plotter = None
  if _plots_likely(args):
    # First: it imports matplotlib on the other core while this process
    # imports JAX (funcnet.run.plot_process).
    from funcnet.run import plot_process
    plotter = plot_process.start()
  try:
    return _train_with(args, plotter)
  finally:
    if plotter is not None:
      plotter.close()


def _train_with(args, plotter) -> int:
  with timings.phase("imports"):
    import jax
    from funcnet import config as config_lib, experiment
    from funcnet.run import rundir
  with timings.phase("config"):
    if (args.resume or args.auto_resume) and not args.out:
      raise FuncnetError(f"{'--resume' if args.resume else '--auto-resume'} "
                         "needs --out DIR naming the run to continue")
    if args.auto_resume:  # a retry loop's flag: resume if there is anything
      args.resume = rundir.resumable(args.out)
    if args.resume and not args.config:
      # The run's own config, plus any --set; train_and_evaluate compares
      # the result with it (funcnet.run.resume) before touching the folder.
      cfg = rundir.read_config(args.out, args.overrides, "--resume: run folder")
    else:
      cfg = config_lib.load(args.config, args.overrides)
  if args.progress:
    cfg["run"]["progress"] = args.progress
  _start_jax(cfg, args)
  if jax.process_count() > 1 and not args.out:
    raise FuncnetError("several processes need --out DIR, the same run folder "
                       "in every process")
  workdir = args.out or experiment.default_workdir(cfg)
  summary = experiment.train_and_evaluate(
      cfg, workdir, resume=args.resume, progress=cfg["run"]["progress"],
      plotter=plotter)
  if jax.process_index() != 0:
    return 0  # process 0 reports; the others wrote only checkpoint shards
  shown = {k: summary[k] for k in ("test_accuracy", "test_loss", "test_rmse",
                                   "steps_per_s") if summary.get(k) is not None}
  print("result " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
  files = sorted(f for f in os.listdir(workdir)
                 if not f.endswith(".tmp") and not f.startswith("."))
  print(f"run folder {workdir}: {', '.join(files)}")
  return 0


def _start_jax(cfg, args=None) -> None:
  """What must precede JAX's first compilation: the persistent compilation
  cache (:mod:`funcnet.run.compile_cache`, ``run.compilation_cache``), the
  ``FUNCNET_TIMINGS`` counters and, with ``args``, the devices."""
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


def _cmd_gradcheck(args) -> int:
  from funcnet import config as config_lib, experiment
  cfg = config_lib.load(args.config, args.overrides)
  _start_jax(cfg)
  report, heading = experiment.gradcheck(cfg, args.batch)
  print(heading)
  print(report)
  return 0 if report.ok() else 1


def _cmd_eval(args) -> int:
  from funcnet import experiment
  from funcnet.run import rundir
  _start_jax(rundir.read_config(args.run, what="--run"))
  print(json.dumps(experiment.evaluate(args.run), indent=2))
  return 0


def _cmd_sweep(args) -> int:
  import time
  from funcnet import config as config_lib
  cfg = config_lib.load(args.config, args.overrides)
  _start_jax(cfg, args)
  out = args.out or os.path.join(
      "sweeps", f"{cfg['name']}-{time.strftime('%Y%m%d-%H%M%S')}")
  import jax
  if args.search:
    if jax.process_count() > 1:
      raise FuncnetError("--search runs in one process (Optuna's storage has "
                         "one writer); expected a grid sweep on several")
    if args.grid or args.sequential:
      raise FuncnetError("--search takes --space, not --grid or --sequential")
    from funcnet.sweep import search
    space = search.parse_space(args.space)
    search.run(cfg, space, trials=args.trials, parallel=args.parallel, out=out)
    return 0
  if args.space:
    raise FuncnetError("--space needs --search optuna; a grid is --grid KEY=V1,V2")
  from funcnet import sweep
  grid = sweep.parse_grid(args.grid)
  if os.path.exists(os.path.join(out, "results.csv")):
    raise FuncnetError(f"--out {out!r} already holds a sweep; expected a new "
                       "folder")
  sweep.run(cfg, grid, out, sequential=args.sequential,
            log=print if jax.process_index() == 0 else (lambda *a: None))
  return 0


def _cmd_study(args) -> int:
  from funcnet import studies
  if args.list:
    for name, study in studies.STUDIES.items():
      print(f"{name:22s}{study.claim}")
      print(" " * 22 + "parameters: " + ", ".join(
          f"{k}={json.dumps(v)}" for k, v in study.defaults.items()))
    return 0
  if not args.name:
    raise FuncnetError("funcnet study needs a NAME; expected one of "
                       f"{', '.join(studies.STUDIES)} (or --list)")
  from funcnet import config as config_lib
  _start_jax(config_lib.DEFAULTS)  # a study has no config: the default, on
  result = studies.run(args.name, args.out, args.quick, args.overrides)
  print(f"study {args.name}: {result['out']}/README.md "
        f"({result['wall_time_s']:.1f} s)")
  return 0


def _cmd_compare(args) -> int:
  from funcnet.run import compare
  result = compare.compare(args.runs, args.out or compare.default_out())
  print(result["table"])
  print(f"compare: {', '.join(result['files'])}")
  return 0


def _write_json(path, records) -> None:
  """``--json FILE``: the records as indented JSON (nothing without it)."""
  if path:
    with open(path, "w") as f:
      json.dump(records, f, indent=2)
      f.write("\n")


def _cmd_bench(args) -> int:
  from funcnet.bench import step_time

  def names(text):
    return [t.strip() for t in text.split(",") if t.strip()] if text else None

  def ints(text, flag):
    try:
      return [int(t) for t in names(text)]
    except ValueError:
      raise FuncnetError(f"{flag} {text!r}: expected comma-separated "
                         "integers") from None

  if args.repeats < 1 or args.min_time <= 0:
    raise FuncnetError("--repeats must be >= 1 and --min-time > 0")
  if args.startup:
    from funcnet.bench import startup
    result = startup.run(
        args.repeats, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(startup.format_table(result))
    _write_json(args.json, result)
    return 0
  if args.sweeps:
    from funcnet.bench import sweep_speed
    cases = (sweep_speed.CASES if args.sweeps == "default"
             else names(args.sweeps))
    records = sweep_speed.run(
        cases, epochs=args.epochs,
        log=lambda line: print(line, file=sys.stderr, flush=True))
    print(sweep_speed.format_table(records))
    _write_json(args.json, records)
    return 0
  if args.data_memory is not None:
    if args.data_memory <= 0:
      raise FuncnetError(f"--data-memory {args.data_memory:g}: expected a "
                         "cap in MiB > 0")
    from funcnet.bench import data_io
    rec = data_io.memory(
        args.data_memory,
        log=lambda line: print(line, file=sys.stderr, flush=True))
    print(data_io.format_memory(rec))
    _write_json(args.json, rec)
    return 0
  if args.data_train and not args.data:
    raise FuncnetError("--data-train trains from the shards in --data DIR; "
                       "expected --data DIR with it")
  if args.data:
    from funcnet.bench import data_io
    log = lambda line: print(line, file=sys.stderr, flush=True)
    records = data_io.run(args.data, batch_size=128, steps=300,
                             rounds=args.repeats, log=log)
    print(data_io.format_table(records))
    if args.data_train:
      rec = data_io.train(args.data, args.data_train,
                             epochs=args.data_epochs, rounds=args.repeats,
                             log=log)
      print()
      print(data_io.format_train(rec))
      records = {"loader": records, "train": rec}
    _write_json(args.json, records)
    return 0
  if args.models:
    from funcnet.bench import model_steps
    configs = (model_steps.CONFIGS if args.models == "default"
               else names(args.models))
    records = model_steps.run(
        configs, repeats=args.repeats, min_time=args.min_time,
        log=lambda line: print(line, file=sys.stderr, flush=True))
    print(model_steps.format_table(records))
    _write_json(args.json, records)
    return 0
  if args.plot and not args.sweep:
    raise FuncnetError("--plot draws the sweep; expected --sweep with it")
  sweep = {}
  if args.sweep_widths:
    sweep["sweep_widths"] = ints(args.sweep_widths, "--sweep-widths")
  if args.sweep_batches:
    sweep["sweep_batches"] = ints(args.sweep_batches, "--sweep-batches")
  result = step_time.run(
      names(args.sizes), names(args.grads), names(args.modes),
      names(args.dtypes), repeats=args.repeats, min_time=args.min_time,
      peak_size=args.peak_size, sweep=args.sweep,
      log=lambda line: print(line, file=sys.stderr, flush=True), **sweep)
  print(step_time.format_table(result))
  if args.json:
    _write_json(args.json, step_time.records_json(result))
    print(f"records written to {args.json}")
  if args.plot:
    print(f"sweep plot written to {step_time.plot_sweep(result, args.plot)}")
  return 0


def _cmd_data(args) -> int:
  """``funcnet data convert|generate``: one line saying what was written."""
  from funcnet.data import shard_writer
  if args.data_command is None:
    raise FuncnetError("funcnet data needs an action; expected convert or "
                       "generate")
  if args.shard_rows is not None and args.shard_rows < 1:
    raise FuncnetError(f"--shard-rows {args.shard_rows}: expected a positive "
                       "integer")
  if args.data_command == "convert":
    from funcnet import config as config_lib
    opts = {"seed": 0, "label": "label", "task": "classification"}
    for text in args.overrides:
      key, value = config_lib.parse_override(text)
      if not key.startswith("data.") or key[5:] not in opts:
        raise FuncnetError(f"--set {text!r}: funcnet data convert takes "
                           f"{', '.join('data.' + k for k in opts)}")
      opts[key[5:]] = value
    meta = shard_writer.convert(args.src, args.dst,
                                shard_rows=args.shard_rows, **opts)
  else:
    try:
      shape = tuple(int(d) for d in args.shape.split(","))
    except ValueError:
      shape = ()
    if not shape or min(shape) < 1:
      raise FuncnetError(f"--shape {args.shape!r}: expected positive integers "
                         "separated by commas, e.g. 784 or 28,28")
    if args.train < 1 or args.test < 0 or args.classes < 2 \
        or args.chunk_rows < 1:
      raise FuncnetError("funcnet data generate needs --train >= 1, --test "
                         ">= 0, --classes >= 2 and --chunk-rows >= 1")
    meta = shard_writer.generate(args.dst, args.train, args.test, shape,
                                 args.classes, args.seed, args.chunk_rows,
                                 shard_rows=args.shard_rows)
  sp = meta["splits"]
  shards = len(sp["train"]["shards"]) + len(sp["test"]["shards"])
  print(f"wrote {args.dst}: {meta['name']}, {sp['train']['n']} train + "
        f"{sp['test']['n']} test examples in {shards} shards, "
        f"{meta['bytes']:,} bytes")
  return 0


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


INTERNAL = 70  # sysexits.h's EX_SOFTWARE


def _os_error(e: OSError) -> str:
  """``"cannot write 'runs/x/config.json': No space left on device"``."""
  where = f" {e.filename!r}" if e.filename else ""
  return f"filesystem:{where} {e.strerror or e}"


def _main(argv) -> int:
  timings.start()
  parser = _parser()
  args = parser.parse_args(argv)
  if args.command is None:
    parser.print_help()
    return 2
  try:
    return {"train": _cmd_train, "gradcheck": _cmd_gradcheck,
            "eval": _cmd_eval, "bench": _cmd_bench, "study": _cmd_study,
            "sweep": _cmd_sweep, "compare": _cmd_compare,
            "data": _cmd_data}[args.command](args)
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
    if "jax" in sys.modules and sys.modules["jax"].distributed.is_initialized():
      # The other processes wait for this one inside a collective. A normal
      # exit would hold them at the shutdown barrier for
      # parallel.shutdown_timeout; leaving at once stops its heartbeats, so
      # they stop within parallel.heartbeat_timeout instead.
      import traceback
      traceback.print_exc()
      jax = sys.modules["jax"]
      e = sys.exc_info()[1]
      what = (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
      print(f"funcnet: error: process {jax.process_index()} of "
            f"{jax.process_count()} failed ({what}); leaving at once so the "
            "other processes stop too", file=sys.stderr, flush=True)
      sys.stdout.flush()
      os._exit(INTERNAL)
    import traceback
    traceback.print_exc()
    print(f"funcnet: internal error (exit {INTERNAL}): a bug in funcnet; "
          "please report it with the traceback above", file=sys.stderr)
    return INTERNAL
  finally:
    timings.write(args.command)  # only with FUNCNET_TIMINGS=FILE


if __name__ == "__main__":
  sys.exit(main())
