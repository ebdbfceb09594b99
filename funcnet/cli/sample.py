"""``funcnet sample``: text from a language model's run
(:func:`funcnet.lm.sampler.sample`), its prompt encoded and the result
decoded with the run's own tokenizer (``tokenizer.json``)."""

import sys
import time

from funcnet.cli import common

NAME = "sample"
HELP = "generate text from a language model's run"
DESCRIPTION = (
    "Loads the newest intact checkpoint of a language model's run folder "
    "(data.name = 'text'), feeds it the prompt and draws --length tokens, "
    "all in one compiled program (a key/value cache for a GPT). "
    "--temperature 0 is greedy and deterministic. Prints the prompt and "
    "what follows it.")


def add_arguments(p) -> None:
  p.add_argument("--run", required=True, metavar="DIR", help="a run folder")
  p.add_argument("--prompt", default="\n", metavar="TEXT",
                 help="the text to continue (default: a newline)")
  p.add_argument("--length", type=int, default=500, metavar="N",
                 help="tokens to draw (default 500)")
  p.add_argument("--temperature", type=float, default=0.8, metavar="T",
                 help="softmax temperature, >= 0; 0: greedy (default 0.8)")
  p.add_argument("--top-k", type=int, default=0, metavar="K",
                 help="draw from the K likeliest tokens only (0: all)")
  p.add_argument("--top-p", type=float, default=1.0, metavar="P",
                 help="draw from the smallest set of likeliest tokens whose "
                 "probability reaches P (1: all)")
  p.add_argument("--seed", type=int, default=0, metavar="S",
                 help="the sampling key's seed (default 0)")
  p.add_argument("--plot-attention", metavar="FILE",
                 help="a gpt: also draw each head's attention weights on the "
                 "prompt into FILE (a PNG)")
  p.add_argument("--plot-grad-norms", metavar="FILE",
                 help="an rnn_lm: also draw ||dC/dh_t|| through the prompt's "
                 "time steps into FILE (a PNG)")


def run(args) -> int:
  from funcnet.lm import sampler
  from funcnet.run import rundir
  sampler.check_settings(args.temperature, args.top_k, args.top_p, args.length)
  tokenizer_json = rundir.read_tokenizer(args.run, "--run")
  common.start_jax(rundir.read_config(args.run, what="--run"))
  import jax
  from funcnet.data import tokenize
  from funcnet.experiment.loaded import load_run
  tok = tokenize.from_json(tokenizer_json)
  ids = tokenize.encode_prompt(tok, args.prompt)
  loaded = load_run(args.run)
  if args.plot_attention or args.plot_grad_norms:
    from funcnet.lm import plots
    if args.plot_attention:
      plots.attention(loaded.model, loaded.params, ids,
                      [tok.decode([int(i)]) for i in ids], args.plot_attention)
    if args.plot_grad_norms:
      plots.time_grad_norms(loaded.model, loaded.params, ids,
                            args.plot_grad_norms)
  t0 = time.perf_counter()
  out = sampler.sample(loaded.model, loaded.params, ids, args.length,
                       key=jax.random.key(args.seed),
                       temperature=args.temperature, top_k=args.top_k,
                       top_p=args.top_p)
  out = jax.device_get(out)
  common.log(f"{args.length} tokens in {time.perf_counter() - t0:.2f} s "
             "(compilation included)")
  sys.stdout.write(args.prompt + tok.decode(out[len(ids):].tolist()) + "\n")
  return 0
