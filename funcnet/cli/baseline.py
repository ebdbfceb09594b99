"""``funcnet baseline``: the Kneser-Ney n-gram baseline of a text config
(:class:`funcnet.models.ngram.KneserNey`), one row per order."""

import time

from funcnet.cli import common
from funcnet.errors import ConfigError

NAME = "baseline"
HELP = "validation bits per character of a Kneser-Ney n-gram on a text config"
DESCRIPTION = (
    "Fits an interpolated modified Kneser-Ney n-gram (Chen & Goodman 1998) "
    "of each order on the training split of the config's text (data.name = "
    "text or a token folder; data.path, data.tokenizer) and scores the "
    "validation tokens a language model's evaluation predicts (each after "
    "the first, in windows of data.block_size; the n-gram sees the n-1 "
    "tokens before each, across window edges). Prints order, validation "
    "bits per character, perplexity per character and seconds; writes "
    "nothing unless --out.")


def add_arguments(p) -> None:
  common.config_flags(p)
  p.add_argument("--orders", default="1-8", metavar="A-B|N,N",
                 help="orders to fit, a range or a list (default 1-8)")
  p.add_argument("--out", metavar="FILE", help="also write the rows as JSON")


def parse_orders(text: str) -> list:
  """``"1-8"`` or ``"2,4,8"`` as a sorted list of orders >= 1."""
  try:
    if "-" in text:
      lo, hi = (int(v) for v in text.split("-"))
      orders = list(range(lo, hi + 1))
    else:
      orders = sorted({int(v) for v in text.split(",")})
  except ValueError:
    orders = []
  if not orders or orders[0] < 1 or orders[-1] > 32:
    raise ConfigError(f"--orders {text!r}: expected a range like 1-8 or a "
                      "list like 2,4,8 of orders in 1..32")
  return orders


def baseline(cfg, orders, log=print) -> list:
  """The rows of ``funcnet baseline``: ``{"order", "val_bpc", "ppl_char",
  "bits_per_token", "seconds"}`` per order."""
  import numpy as np
  from funcnet.data import text
  from funcnet.models.ngram import KneserNey
  d = cfg["data"]
  c = text.corpus_of(d["name"], d["path"], d["tokenizer"], d["vocab_size"])
  ds = text.windows(c, d["block_size"], d["stride"], d["val_tokens"])
  train = text.train_tokens(c)
  # The tokens a model's evaluation predicts are y_test: v[1 : kT + 1];
  # their contexts run back into the training split's last tokens.
  tail = train[max(len(train) - orders[-1] + 1, 0):]
  seq = np.r_[tail, ds.x_test.ravel(), ds.y_test[-1, -1:]]
  tpc, V = ds.info["tokens_per_char"], ds.info["vocab_size"]
  log(f"{ds.name}: {len(train):,} training tokens, {ds.y_test.size:,} "
      f"validation tokens predicted, {V} tokens ({ds.info['tokenizer_kind']}),"
      f" {tpc:.4f} tokens per character")
  log(f"{'order':>5}  {'val_bpc':>8}  {'ppl/char':>8}  {'bits/tok':>8}  "
      f"{'seconds':>7}")
  rows = []
  for n in orders:
    t0 = time.perf_counter()
    bpt = KneserNey(train, n, V).bits(seq, len(tail) + 1, n)
    bpc = bpt * tpc
    rows.append({"order": n, "val_bpc": bpc, "ppl_char": 2.0 ** bpc,
                 "bits_per_token": bpt,
                 "seconds": time.perf_counter() - t0})
    log(f"{n:>5}  {bpc:8.4f}  {2.0 ** bpc:8.3f}  {bpt:8.4f}  "
        f"{rows[-1]['seconds']:7.2f}")
  return rows


def run(args) -> int:
  from funcnet import config as config_lib
  cfg = config_lib.load(args.config, args.overrides)
  rows = baseline(cfg, parse_orders(args.orders))
  common.write_json(args.out, rows)
  return 0
