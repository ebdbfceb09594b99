"""``funcnet data convert|generate``: datasets written as ArrayRecord shards
for streaming (:mod:`funcnet.data.shard_writer`)."""

from funcnet.errors import FuncnetError

NAME = "data"
HELP = "write datasets as ArrayRecord shards for streaming (the [data] extra)"
DESCRIPTION = ("Writes a shards folder (meta.json, stats.npz, "
               "train-*.array_record, test-*.array_record) that training "
               "reads by row; see funcnet.data.shards.")


def add_arguments(p) -> None:
  sub = p.add_subparsers(dest="data_command", metavar="ACTION")
  c = sub.add_parser("convert", help="any dataset funcnet loads (a name, "
                     ".npz or .csv) into shards")
  c.set_defaults(handler=convert)
  c.add_argument("src", metavar="SRC", help="a dataset name (digits, "
                 "mnist1d, ...) or an .npz / .csv file; or a UTF-8 text "
                 "file (any other name), written in bounded memory as a "
                 "token folder of characters (funcnet.data.text_folder)")
  c.add_argument("dst", metavar="DST", help="the shards folder to create "
                 "(must not exist, or be empty)")
  _shard_rows(c)
  c.add_argument("--set", dest="overrides", action="append", default=[],
                 metavar="KEY=VALUE", help="data.seed (the split), "
                 "data.label (a CSV's label column), data.task (a file's "
                 "task), as in a config (repeatable)")
  g = sub.add_parser("generate", help="a synthetic classification set "
                     "(x ~ N(0, 1), y = argmax(x @ W)), written chunk by "
                     "chunk, never whole in memory")
  g.set_defaults(handler=generate)
  g.add_argument("dst", metavar="DST", help="the shards folder to create")
  g.add_argument("--train", type=int, required=True, metavar="N",
                 help="training examples")
  g.add_argument("--test", type=int, required=True, metavar="N",
                 help="test examples")
  g.add_argument("--shape", required=True, metavar="D[,D..]",
                 help="one example's shape, e.g. 784 or 28,28")
  g.add_argument("--classes", type=int, required=True, metavar="K",
                 help="classes (the teacher's outputs)")
  g.add_argument("--seed", type=int, default=0, metavar="S",
                 help="seed of the teacher and the inputs (default 0)")
  g.add_argument("--chunk-rows", type=int, default=8192, metavar="N",
                 help="examples generated at a time (bounds the memory; "
                 "default 8192)")
  _shard_rows(g)


def _shard_rows(p) -> None:
  p.add_argument("--shard-rows", type=int, metavar="N",
                 help="examples per shard file (default: about 128 MiB)")


def run(args) -> int:
  """``funcnet data`` without an action."""
  raise FuncnetError("funcnet data needs an action; expected convert or "
                     "generate")


def _check_shard_rows(args) -> None:
  if args.shard_rows is not None and args.shard_rows < 1:
    raise FuncnetError(f"--shard-rows {args.shard_rows}: expected a positive "
                       "integer")


def convert(args) -> int:
  from funcnet import config as config_lib
  from funcnet.data import shard_writer, text, text_writer
  _check_shard_rows(args)
  if text.is_text_source(args.src):
    if args.overrides or args.shard_rows is not None:
      raise FuncnetError("funcnet data convert of a text takes no --set or "
                         "--shard-rows; expected SRC DST alone")
    meta = text_writer.convert(args.src, args.dst)
    print(f"wrote {args.dst}: {meta['name']}, {meta['chars_train']:,} "
          f"train + {meta['chars_validation']:,} validation characters, "
          f"{meta['unknown']} unknown, {meta['bytes']:,} bytes")
    return 0
  opts = {"seed": 0, "label": "label",
          "task": config_lib.DEFAULTS["data"]["task"]}
  for text in args.overrides:
    key, value = config_lib.parse_override(text)
    if not key.startswith("data.") or key[5:] not in opts:
      raise FuncnetError(f"--set {text!r}: funcnet data convert takes "
                         f"{', '.join('data.' + k for k in opts)}")
    opts[key[5:]] = value
  return _report(args.dst, shard_writer.convert(
      args.src, args.dst, shard_rows=args.shard_rows, **opts))


def generate(args) -> int:
  from funcnet.data import shard_writer
  _check_shard_rows(args)
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
  return _report(args.dst, shard_writer.generate(
      args.dst, args.train, args.test, shape, args.classes, args.seed,
      args.chunk_rows, shard_rows=args.shard_rows))


def _report(dst, meta) -> int:
  """One line saying what was written."""
  sp = meta["splits"]
  shards = len(sp["train"]["shards"]) + len(sp["test"]["shards"])
  print(f"wrote {dst}: {meta['name']}, {sp['train']['n']} train + "
        f"{sp['test']['n']} test examples in {shards} shards, "
        f"{meta['bytes']:,} bytes")
  return 0
