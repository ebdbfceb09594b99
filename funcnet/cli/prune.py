"""``funcnet prune``: magnitude pruning of a run (global or per layer, at
once or gradually), fine-tuned with its masks (:func:`funcnet.experiment.prune.prune_run`)."""

from funcnet.cli import common

NAME = "prune"
HELP = "prune a trained run's smallest weights and fine-tune the rest"
DESCRIPTION = (
    "Loads the newest intact checkpoint of a run folder, sets the smallest "
    "--sparsity fraction of its weights (matrices and kernels, ranked by "
    "|w| over all layers at once, or --scope layer: each layer to the "
    "sparsity; biases stay) to zero, fine-tunes --epochs with Adam keeping "
    "them zero (--schedule gradual: the masks recomputed at the start of each "
    "of the first --ramp-epochs epochs along Zhu & Gupta's cubic "
    "s_t = s_f (1 - (1 - t/n)^3)), and writes a run folder (--out; by default "
    "the run's name and pruned<percent>) with the checkpoint, masks.npz and "
    "prune.json; "
    "prints the test metric dense, pruned and fine-tuned.")


def add_arguments(p) -> None:
  p.add_argument("--run", required=True, metavar="DIR", help="a run folder")
  p.add_argument("--sparsity", type=float, required=True, metavar="P",
                 help="fraction of the weights to remove, in [0, 1)")
  p.add_argument("--epochs", type=int, default=10, metavar="N",
                 help="fine-tuning epochs with the masks held (default 10)")
  p.add_argument("--learning-rate", type=float, default=1e-3, metavar="LR",
                 help="Adam's learning rate for fine-tuning (default 1e-3)")
  p.add_argument("--scope", choices=("global", "layer"), default="global",
                 help="rank weights over all layers (global, the default) "
                 "or cut each layer to the sparsity (layer)")
  p.add_argument("--schedule", choices=("oneshot", "gradual"),
                 default="oneshot",
                 help="prune once before fine-tuning (oneshot, the default) "
                 "or along the cubic schedule (gradual)")
  p.add_argument("--ramp-epochs", type=int, metavar="N",
                 help="gradual: epochs the sparsity rises over (default: "
                 "half of --epochs)")
  p.add_argument("--out", metavar="DIR",
                 help="the pruned run folder (default: RUN-pruned<percent>)")
  common.import_flag(p)


def run(args) -> int:
  from funcnet.experiment import prune
  from funcnet.run import rundir
  common.do_imports(args)
  prune.check_request(args.run, args.sparsity, args.epochs,
                      args.learning_rate, args.out, args.scope, args.schedule,
                      args.ramp_epochs)
  common.start_jax(rundir.read_config(args.run, what="--run"))
  prune.prune_run(args.run, args.sparsity, args.epochs, args.learning_rate,
                  args.out, scope=args.scope, sched=args.schedule,
                  ramp_epochs=args.ramp_epochs)
  return 0
