"""``funcnet quantize``: post-training int8 quantization of a run
(:func:`funcnet.experiment.quantize.quantize_run`)."""

from funcnet.cli import common

NAME = "quantize"
HELP = "quantize a trained run's weights to int8 and report what it costs"
DESCRIPTION = (
    "Loads the newest intact checkpoint of a run folder, quantizes every "
    "weight matrix and kernel to signed integers (symmetric, one scale per "
    "output channel: s = max|W| / 127, q = round(W / s)); biases and norms "
    "stay float. Writes a quantized run folder (--out, default RUN-int8: "
    "quantized.npz with the int8 codes and scales, config.json, model.json, "
    "stats.npz, quantize.json) that funcnet eval evaluates on the int8 "
    "arrays, and prints the test metric, the params' size on disk and the "
    "evaluation time, float against quantized.")


def add_arguments(p) -> None:
  p.add_argument("--run", required=True, metavar="DIR", help="a run folder")
  p.add_argument("--bits", type=int, default=8, metavar="B",
                 help="bits per weight (supported: 8; default 8)")
  p.add_argument("--mode", default="weights", metavar="MODE",
                 help="weights (weight-only, dequantised at the matmul; "
                 "default) or weights+activations (each weight's matmul an "
                 "int8 x int8 product, activations per tensor calibrated on "
                 "8 training batches of 128)")
  p.add_argument("--out", metavar="DIR",
                 help="the quantized run folder (default: RUN-int<bits>)")
  p.add_argument("--repeats", type=int, default=20, metavar="N",
                 help="timed evaluations of each model (default 20)")
  common.import_flag(p)


def run(args) -> int:
  from funcnet.errors import ConfigError
  from funcnet.experiment import quantize
  from funcnet.run import rundir
  if args.repeats < 1:
    raise ConfigError(f"--repeats {args.repeats}: expected >= 1")
  common.do_imports(args)
  quantize.check_request(args.run, args.bits, args.mode, args.out)
  common.start_jax(rundir.read_config(args.run, what="--run"))
  quantize.quantize_run(args.run, args.bits, args.mode, args.out,
                        repeats=args.repeats)
  return 0
