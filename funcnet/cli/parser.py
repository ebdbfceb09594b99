"""The ``funcnet`` argument parser, built from the commands' table, with
the exit statuses in its help and "did you mean" for a mistyped name."""

import argparse
import difflib
import re

EXAMPLES = """examples:
  funcnet train                                   # the default: an MLP on digits
  funcnet train --config configs/xor_textbook.toml
  funcnet train --config configs/digits_mlp.toml --set train.epochs=5 --out runs/try
  funcnet train --out runs/try --resume           # continue from the latest checkpoint
  until funcnet train --out runs/spot --auto-resume; do [ $? = 75 ] || break; done
  funcnet train --cpu-devices 8 --out runs/dp8    # data parallel over 8 simulated devices
  funcnet train --out runs/mp --coordinator 127.0.0.1:7777 --num-processes 2 --process-id 0
  funcnet gradcheck --config configs/digits_mlp.toml
  funcnet eval --run runs/try
  funcnet attack --run runs/try --method fgsm,pgd --eps 0.5,1,2,4,8
  funcnet sweep --grid optimizer.learning_rate=0.01,0.001 --grid seed=0,1,2,3
  funcnet sweep --search optuna --space optimizer.learning_rate=loguniform:1e-4,1e-1
  funcnet data convert mnist1d shards/mnist1d        # then --set data.name='shards/mnist1d'
  funcnet study --list
  funcnet bench steps --sizes small,large --json step_time.json
Every config key, its default and meaning: configs/README.md."""

# The README's "Exit status" table, in the words of a terminal.
EXIT_STATUS = """exit status:
  0      done
  1      funcnet gradcheck: manual, autodiff and finite differences disagree
  2      a user mistake, printed as one line: a bad config key, type, value
         or name (the nearest key suggested), a bad data file, a run folder
         that is not one, in use, or would be changed by a resume, no intact
         checkpoint, a model too large for memory, a filesystem problem (a
         folder that cannot be written, a full disk, a file where a folder
         should be); also a wrong flag (argparse)
  3      the run diverged: its loss became NaN/inf, or grew past 1e6 x the
         first epoch's (at least 1e6); the last good checkpoint stays
  70     an internal error: a bug in funcnet, with its traceback; please
         report it
  75     funcnet train stopped by SIGTERM after saving its checkpoint and
         summary; --resume continues
  130    stopped by SIGINT (Ctrl-C); funcnet train saves first, as for 75
  128+N  killed by signal N before it could save (a second SIGTERM: 143;
         SIGKILL: 137; 134 when JAX's coordination service aborts a process
         whose peer died, see docs/parallel.md)"""


class Parser(argparse.ArgumentParser):
  """argparse, plus the nearest name when a command or choice is mistyped:
  ``funcnet trian`` says ``did you mean 'train'?`` (exit 2, as argparse)."""

  def error(self, message):
    m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
    if m:
      choices = re.findall(r"'([^']*)'", m.group(2))
      near = difflib.get_close_matches(m.group(1), choices, n=1)
      if near:
        message = f"{message}; did you mean '{near[0]}'?"
    super().error(message)


def build_parser(commands) -> argparse.ArgumentParser:
  """``funcnet``'s parser: one subparser per module of ``commands`` (each
  with ``NAME``, ``HELP``, ``DESCRIPTION``, ``add_arguments`` and ``run``),
  ``args.handler`` the command's (or its action's) ``run`` (not
  ``args.run``: that is ``funcnet eval --run``)."""
  p = Parser(
      prog="funcnet", description="Train neural networks written as pure JAX "
      "functions; compare hand-written backprop with jax.grad.",
      epilog=EXAMPLES + "\n\n" + EXIT_STATUS,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", metavar="COMMAND",
                         parser_class=Parser)
  for command in commands:
    q = sub.add_parser(command.NAME, help=command.HELP,
                       description=command.DESCRIPTION)
    q.set_defaults(handler=command.run)
    command.add_arguments(q)
  return p
