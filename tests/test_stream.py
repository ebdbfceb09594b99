"""ArrayRecord shards (funcnet.data.shards, shard_writer, prefetch): what is written reads back
exactly, in any order, standardised bit for bit as the in-memory path; the
streamed statistics against numpy's float64 ones; refusals in one line.

Everything runs on the bundled digits or small arrays made here (~5 s).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from funcnet import cli, data, paths
from funcnet.data import prefetch, shard_writer, shards
from funcnet.errors import ConfigError, DataError, Preempted

pytest.importorskip("grain")
pytest.importorskip("array_record")


@pytest.fixture(scope="module")
def digits_shards(tmp_path_factory):
  """``(shards, raw digits)``: digits converted with small shards, so reads
  cross shard boundaries."""
  dst = tmp_path_factory.mktemp("stream") / "digits"
  shard_writer.convert("digits", str(dst), shard_rows=500)
  return shards.Shards(dst), data.load("digits", standardize=False)


def _folder_bytes(path):
  return {f: (path / f).read_bytes() for f in sorted(os.listdir(path))}


def test_convert_writes_the_sizes_shapes_and_shards(digits_shards):
  sh, raw = digits_shards
  assert (sh.name, sh.task, sh.n_classes) == ("digits", "classification", 10)
  assert (sh.n_train, sh.n_test) == (1437, 360)
  assert (sh.x_shape, sh.x_dtype, sh.y_shape, sh.y_dtype) == (
      (64,), np.float32, (), np.int32)
  with open(os.path.join(sh.path, "meta.json")) as f:
    meta = json.load(f)
  assert meta["format"] == shards.FORMAT
  assert meta["splits"]["train"]["shards"] == [
      f"train-0000{i}-of-00003.array_record" for i in range(3)]
  assert meta["splits"]["train"]["shard_rows"] == [500, 500, 437]
  assert meta["splits"]["test"]["shards"] == [
      "test-00000-of-00001.array_record"]
  assert meta["record_bytes"] == 64 * 4 + 4
  assert set(os.listdir(sh.path)) == {
      "meta.json", "stats.npz", *meta["splits"]["train"]["shards"],
      *meta["splits"]["test"]["shards"]}
  info = sh.dataset_info()
  assert (info["name"], info["task"], info["n_classes"], info["n_train"],
          info["n_test"], info["in_shape"], info["n_outputs"]) == (
              "digits", "classification", 10, 1437, 360, (64,), 10)
  assert sh.summary().startswith("digits (shards ")
  assert sh.summary().endswith(data.summary(raw).split(": ", 1)[1])


def test_read_in_a_random_order_equals_the_raw_arrays(digits_shards):
  sh, raw = digits_shards
  perm = np.random.default_rng(0).permutation(sh.n_train)
  x, y = sh.read("train", perm, standardize=False)
  assert x.dtype == np.float32 and y.dtype == np.int32
  np.testing.assert_array_equal(x, raw.x_train[perm])
  np.testing.assert_array_equal(y, raw.y_train[perm])
  # Repeats, a long run (read in one call), and the test split.
  rows = np.r_[3, 3, 1436, np.arange(600, 1300), 0].astype(np.int64)
  x, y = sh.read("train", rows, standardize=False)
  np.testing.assert_array_equal(x, raw.x_train[rows])
  np.testing.assert_array_equal(y, raw.y_train[rows])
  x, y = sh.read("test", np.arange(sh.n_test)[::-1], standardize=False)
  np.testing.assert_array_equal(x, raw.x_test[::-1])
  x, y = sh.read("train", np.array([], np.int64))
  assert x.shape == (0, 64) and y.shape == (0,)


def test_grains_data_source_reads_the_same_records(digits_shards):
  sh, raw = digits_shards
  src = sh.source("train")      # grain.python.ArrayRecordDataSource
  assert len(src) == sh.n_train
  rows = [1436, 0, 499, 500, 1000]
  rec = sh.decode(src.__getitems__(rows))
  np.testing.assert_array_equal(rec["x"], raw.x_train[rows])
  np.testing.assert_array_equal(rec["y"], raw.y_train[rows])
  assert sh.decode([src[7]])["y"][0] == raw.y_train[7]
  sh.close()                    # and reading again reopens
  np.testing.assert_array_equal(sh.read("train", rows, False)[0],
                                raw.x_train[rows])


def test_standardized_read_equals_data_standardize_bit_for_bit(digits_shards):
  sh, raw = digits_shards
  ref = data.standardize(raw, stats=(sh.mean, sh.std))
  perm = np.random.default_rng(1).permutation(sh.n_train)
  x, y = sh.read("train", perm)
  assert x.dtype == np.float32
  assert x.tobytes() == ref.x_train[perm].tobytes()
  np.testing.assert_array_equal(y, raw.y_train[perm])
  x, _ = sh.read("test", np.arange(sh.n_test))
  assert x.tobytes() == ref.x_test.tobytes()


def test_streamed_statistics_equal_numpys_float64_ones(digits_shards):
  sh, raw = digits_shards
  x = raw.x_train.astype(np.float64)
  std = x.std(axis=0)
  assert sh.mean.dtype == sh.std.dtype == np.float64
  np.testing.assert_allclose(sh.mean, x.mean(axis=0), rtol=1e-12, atol=0)
  np.testing.assert_allclose(sh.std, np.where(std > 0, std, 1.0), rtol=1e-12,
                             atol=0)
  assert (std == 0).any() and (sh.std[std == 0] == 1).all()


def test_uneven_chunks_equal_one_chunk(tmp_path):
  rng = np.random.default_rng(2)
  x = (rng.standard_normal((300, 3, 2)) * 5 + 7).astype(np.float32)
  y = rng.integers(0, 4, 300).astype(np.int32)
  xt, yt = x[:20], y[:20]
  cuts = [0, 1, 1, 50, 173, 299, 300]    # an empty chunk too
  uneven = [(x[a:b], y[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
  m1 = shard_writer.write(tmp_path / "one", {"train": [(x, y)], "test": [(xt, yt)]},
                    name="toy", task="classification", n_classes=4,
                    shard_rows=64)
  m2 = shard_writer.write(tmp_path / "many", {"train": iter(uneven),
                                        "test": [(xt, yt)]},
                    name="toy", task="classification", n_classes=4,
                    shard_rows=64)
  assert m1 == m2
  a, b = shards.Shards(tmp_path / "one"), shards.Shards(tmp_path / "many")
  rows = rng.permutation(300)
  for std in (False, True):
    xa, ya = a.read("train", rows, std)
    xb, yb = b.read("train", rows, std)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
  ref = ((x[rows] - b.mean) / b.std).astype(np.float32)
  assert xa.tobytes() == ref.tobytes()
  np.testing.assert_allclose(b.mean, x.astype(np.float64).mean(0), rtol=1e-12)
  np.testing.assert_allclose(b.std, x.astype(np.float64).std(0), rtol=1e-12)
  assert b.x_shape == (3, 2)


def test_chunks_of_another_shape_are_refused(tmp_path):
  x = np.zeros((4, 3), np.float32)
  y = np.zeros(4, np.int32)
  with pytest.raises(DataError, match=r"chunk 1: examples x \(2,\)") as e:
    shard_writer.write(tmp_path / "bad", {"train": [(x, y), (x[:, :2], y)],
                                    "test": []},
                 name="toy", task="classification", n_classes=2)
  assert "\n" not in str(e.value)
  assert os.listdir(tmp_path) == []   # the temporary folder is gone too


@pytest.mark.parametrize("kind", ["npz", "csv"])
def test_npz_and_csv_sources_read_back_exactly(tmp_path, kind):
  rng = np.random.default_rng(3)
  x = rng.integers(-20, 20, (50, 4)).astype(np.float64) / 4
  y = np.arange(50) % 3
  if kind == "npz":
    src = tmp_path / "d.npz"
    np.savez(src, x=x.reshape(50, 2, 2), y=y, x_test=x[:7].reshape(7, 2, 2),
             y_test=y[:7])
  else:
    src = tmp_path / "d.csv"
    lines = ["a,b,label,c,d"] + [
        f"{r[0]},{r[1]},{c},{r[2]},{r[3]}" for r, c in zip(x, y)]
    src.write_text("\n".join(lines) + "\n")
  raw = data.load(str(src), seed=5, label="label", standardize=False)
  shard_writer.convert(str(src), str(tmp_path / "sh"), seed=5)
  sh = shards.Shards(tmp_path / "sh")
  assert (sh.n_train, sh.n_test) == (len(raw.y_train), len(raw.y_test))
  assert sh.x_shape == raw.x_train.shape[1:]
  for split, xs, ys in (("train", raw.x_train, raw.y_train),
                        ("test", raw.x_test, raw.y_test)):
    rows = np.random.default_rng(4).permutation(len(ys))
    xr, yr = sh.read(split, rows, standardize=False)
    np.testing.assert_array_equal(xr, xs[rows])
    np.testing.assert_array_equal(yr, ys[rows])


def test_prefetcher_keeps_order_and_bounds_what_runs_ahead():
  started, lock = [], threading.Lock()

  def fn(i):
    with lock:
      started.append(i)
    return i * i

  def items():
    yield from range(50)

  p = prefetch.Prefetcher(fn, items(), depth=3, threads=2)
  got = []
  for v in p:
    got.append(v)
    if len(got) == 5:
      # the consumer holds item 4; at most 3 more were handed out
      assert max(started) <= 4 + 3
  assert got == [i * i for i in range(50)]
  assert list(prefetch.Prefetcher(fn, [])) == []


def test_prefetcher_raises_the_same_exception_and_stops():
  err = KeyError("row 7")

  def fn(i):
    if i == 7:
      raise err
    return i

  p = prefetch.Prefetcher(fn, range(100), depth=2, threads=2)
  got = []
  with pytest.raises(KeyError) as e:
    for v in p:
      got.append(v)
  assert e.value is err
  assert got == list(range(7))
  assert list(p) == []          # closed: nothing more
  with pytest.raises(ConfigError):
    prefetch.Prefetcher(fn, [], depth=0)


def test_prefetched_shard_reads_equal_direct_reads(digits_shards):
  sh, _ = digits_shards
  batches = list(np.random.default_rng(6).permutation(1408).reshape(11, 128))
  with prefetch.Prefetcher(lambda r: sh.read("train", r), batches, depth=4,
                         threads=4) as p:
    for (x, y), rows in zip(p, batches):
      xd, yd = sh.read("train", rows)
      assert x.tobytes() == xd.tobytes() and (y == yd).all()


def test_convert_refuses_an_existing_destination_untouched(tmp_path):
  dst = tmp_path / "dst"
  dst.mkdir()
  (dst / "keep.txt").write_text("mine")
  before = _folder_bytes(dst)
  with pytest.raises(DataError, match="already exists") as e:
    shard_writer.convert("digits", str(dst))
  assert "\n" not in str(e.value)
  assert _folder_bytes(dst) == before
  assert sorted(os.listdir(tmp_path)) == ["dst"]   # no temporary left
  (tmp_path / "file").write_text("x")
  with pytest.raises(DataError, match="already exists"):
    shard_writer.convert("digits", str(tmp_path / "file"))
  empty = tmp_path / "empty"
  empty.mkdir()                 # an empty folder is taken
  shard_writer.convert("xor", str(empty))
  assert shards.Shards(empty).n_train == 4


@pytest.mark.parametrize("make", ["missing", "empty", "file", "bad_json",
                                  "other_format", "missing_shard",
                                  "cut_shard"])
def test_a_folder_that_is_not_shards_is_one_line(tmp_path, make):
  path = tmp_path / "x"
  if make == "empty":
    path.mkdir()
  elif make == "file":
    path.write_text("hello")
  elif make == "bad_json":
    path.mkdir()
    (path / "meta.json").write_text("{not json")
  elif make == "other_format":
    path.mkdir()
    (path / "meta.json").write_text('{"format": "something-else"}')
  elif make == "missing_shard":
    shard_writer.convert("xor", str(path))
    os.remove(path / "test-00000-of-00001.array_record")
  elif make == "cut_shard":     # a copy cut short
    shard_writer.convert("xor", str(path))
    shard = path / "train-00000-of-00001.array_record"
    shard.write_bytes(shard.read_bytes()[:-100])
  with pytest.raises(DataError, match="expected a folder written by funcnet "
                     "data convert") as e:
    shards.Shards(path)
  assert "\n" not in str(e.value)


def test_out_of_range_rows_are_refused(digits_shards):
  sh, _ = digits_shards
  for rows in ([0, 1437], [-1], [[1, 2]], [0.5]):
    with pytest.raises(IndexError):
      sh.read("train", np.array(rows))
  with pytest.raises(DataError, match="split 'valid'"):
    sh.read("valid", np.array([0]))


def test_missing_extra_is_one_line(monkeypatch, tmp_path):
  # None in sys.modules makes an import fail, as if not installed; the
  # submodules too, which an import finds there without their package.
  for name in list(sys.modules):
    if name.split(".")[0] in ("array_record", "grain"):
      monkeypatch.setitem(sys.modules, name, None)
  monkeypatch.setitem(sys.modules, "array_record", None)
  monkeypatch.setitem(sys.modules, "grain", None)
  with pytest.raises(ConfigError) as e:
    shard_writer.convert("xor", str(tmp_path / "x"))
  assert str(e.value) == shards.NEEDS_EXTRA
  assert os.listdir(tmp_path) == []


def test_generate_reads_back_labels_of_its_teacher(tmp_path):
  meta = shard_writer.generate(tmp_path / "g", n_train=300, n_test=40,
                         x_shape=(3, 4), n_classes=5, seed=7, chunk_rows=64,
                         shard_rows=128)
  assert meta["splits"]["train"]["shard_rows"] == [128, 128, 44]
  sh = shards.Shards(tmp_path / "g")
  assert (sh.n_train, sh.n_test, sh.x_shape, sh.n_classes) == (
      300, 40, (3, 4), 5)
  # The teacher as the docstring documents it, recomputed here.
  w = np.random.default_rng([7, 0]).standard_normal((12, 5))
  x_ref = np.random.default_rng([7, 1]).standard_normal((300, 12),
                                                         dtype=np.float32)
  x, y = sh.read("train", np.arange(300), standardize=False)
  np.testing.assert_array_equal(x.reshape(300, 12), x_ref)
  np.testing.assert_array_equal(y, np.argmax(x_ref.astype(np.float64) @ w, 1))
  assert y.dtype == np.int32 and len(np.unique(y)) == 5
  xt, yt = sh.read("test", np.arange(40), standardize=False)
  np.testing.assert_array_equal(
      yt, np.argmax(xt.reshape(40, 12).astype(np.float64) @ w, 1))
  # The chunking does not change the data.
  shard_writer.generate(tmp_path / "g2", 300, 40, (3, 4), 5, seed=7, chunk_rows=300)
  x2, y2 = shards.Shards(tmp_path / "g2").read("train", np.arange(300), False)
  assert x2.tobytes() == x.tobytes() and (y2 == y).all()


def test_data_convert_command_exits_0_then_2(tmp_path):
  dst = tmp_path / "digits"
  cmd = [sys.executable, "-m", "funcnet.cli", "data", "convert", "digits",
         str(dst)]
  first = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
  assert first.returncode == 0, first.stderr
  out = first.stdout.strip().splitlines()
  assert len(out) == 1 and "1437 train + 360 test examples" in out[0]
  assert "shards" in out[0] and "bytes" in out[0]
  second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
  assert second.returncode == 2
  assert len(second.stderr.strip().splitlines()) == 1
  assert "already exists" in second.stderr


def test_data_commands_in_process(tmp_path, capsys):
  assert cli.main(["data", "convert", "nope", str(tmp_path / "a")]) == 2
  assert "unknown dataset 'nope'" in capsys.readouterr().err
  assert cli.main(["data", "convert", str(tmp_path / "no.npz"),
                   str(tmp_path / "a")]) == 2
  assert "no such file" in capsys.readouterr().err
  assert cli.main(["data", "convert", "digits", str(tmp_path / "a"),
                   "--set", "data.epochs=3"]) == 2
  assert "takes data.seed" in capsys.readouterr().err
  assert cli.main(["data", "convert", "spirals", str(tmp_path / "s"),
                   "--set", "data.seed=3", "--shard-rows", "100"]) == 0
  assert "in 10 shards" in capsys.readouterr().out
  sh, raw = shards.Shards(tmp_path / "s"), data.load("spirals", seed=3,
                                                      standardize=False)
  np.testing.assert_array_equal(sh.read("train", [0, 5], False)[0],
                                raw.x_train[[0, 5]])
  assert cli.main(["data", "generate", str(tmp_path / "g"), "--train", "100",
                   "--test", "10", "--shape", "2,3", "--classes", "3"]) == 0
  assert "100 train + 10 test" in capsys.readouterr().out
  assert shards.Shards(tmp_path / "g").x_shape == (2, 3)
  assert cli.main(["data", "generate", str(tmp_path / "h"), "--train", "100",
                   "--test", "10", "--shape", "2,x", "--classes", "3"]) == 2
  assert "--shape" in capsys.readouterr().err


def test_bench_data_times_every_mode(tmp_path, capsys):
  from funcnet.bench import data_io
  shard_writer.convert("xor", str(tmp_path / "xor"))
  records = data_io.run(tmp_path / "xor", batch_size=2, steps=5, rounds=1,
                           threads=(1, 2), log=lambda line: None)
  assert [r["mode"] for r in records] == ["memory", "read", "prefetch 1",
                                          "prefetch 2"]
  assert all(r["examples_per_s"] > 0 for r in records)
  assert "| prefetch 2 | 2 | 2 | 2 |" in data_io.format_table(records)


def test_bench_data_command_prints_the_table(digits_shards, capsys):
  sh, _ = digits_shards
  assert cli.main(["bench", "data", "shards", sh.path, "--repeats", "1"]) == 0
  out = capsys.readouterr().out
  assert "| loader | threads | depth | batch | examples/s |" in out
  assert "| prefetch 4 | 4 | 4 | 128 |" in out


def test_importing_the_module_imports_neither_grain_nor_array_record():
  code = ("import sys, funcnet.data, funcnet.data.shards, "
          "funcnet.data.shard_writer, funcnet.data.prefetch; "
          "print(sorted({m.split('.')[0] for m in sys.modules} & "
          "{'grain', 'array_record'}))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=60, check=True).stdout
  assert out.strip() == "[]"


# --- writing stopped: a full disk, a set too large, a signal (issue 22) ------

@pytest.mark.parametrize("argv", [
    ["generate", "g", "--train", "2000", "--test", "10", "--shape", "64",
     "--classes", "3"],
    ["convert", "digits", "g"]], ids=["generate", "convert"])
def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing(
    tmp_path, argv):
  # RLIMIT_FSIZE: a write past 20,000 bytes fails with EFBIG, as a full
  # disk's with ENOSPC; the first shard (2000 x 260 bytes) cannot fit.
  from helpers import with_limits
  r = subprocess.run(with_limits([sys.executable, "-m", "funcnet.cli", "data",
                                  *argv], RLIMIT_FSIZE=20000),
                     cwd=tmp_path, capture_output=True, text=True, timeout=120)
  assert r.returncode == 2, r.stderr
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1, r.stderr
  assert lines[0].startswith("funcnet: error: filesystem: 'g.tmp-")
  assert "/train-00000.partial' File too large" in lines[0]
  assert os.listdir(tmp_path) == []      # neither g nor its temporary folder


def test_the_generate_sizes_are_counted_from_the_shapes(tmp_path):
  # disk: 12 examples x (6 float32 + 1 int32 + ArrayRecord's 48-byte
  # header); memory: 40 bytes per number of a 4-row chunk, and the float64
  # 6 x 3 teacher
  assert shard_writer.need(10, 2, 6, 3, chunk_rows=4) == {
      "disk": 12 * (28 + 48), "memory": 40 * 4 * 6 + 8 * 6 * 3}
  assert shard_writer.need(3, 2, 6, 3, chunk_rows=4)["memory"] \
      == 40 * 3 * 6 + 8 * 6 * 3      # a chunk is never more than the split
  # a lower bound of what is written, and not far below it
  meta = shard_writer.generate(tmp_path / "g", 20000, 40, (16,), 4)
  disk = shard_writer.need(20000, 40, 16, 4, 8192)["disk"]
  assert disk <= meta["bytes"] < 1.25 * disk


def test_generate_refuses_what_does_not_fit_before_writing(tmp_path, capsys,
                                                           monkeypatch):
  # 1e12 x 100,000 float32 is 400 PB: once this ran for 75 s and took
  # 15.6 GB of memory before anything stopped it.
  start = time.monotonic()
  assert cli.main(["data", "generate", str(tmp_path / "g"), "--train",
                   str(10**12), "--test", "10", "--shape", "100000",
                   "--classes", "10"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "need at least 400 PB on disk" in err[0]
  assert "expected fewer examples (--train, --test)" in err[0]
  assert time.monotonic() - start < 5 and os.listdir(tmp_path) == []
  # memory: the disk has room, a chunk does not fit
  monkeypatch.setattr(paths, "host_memory", lambda: (10**6, "the host"))
  assert cli.main(["data", "generate", str(tmp_path / "g"), "--train",
                   "100", "--test", "10", "--shape", "1000",
                   "--classes", "10"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "need about 4.08 MB of memory" in err[0]
  assert "the host has 1 MB available" in err[0]
  assert "expected a smaller --chunk-rows or --shape" in err[0]
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 75),
                                      (signal.SIGINT, 130)])
def test_a_signal_while_writing_removes_the_temporary_folder(tmp_path, sig,
                                                             code):
  if threading.current_thread() is not threading.main_thread():
    pytest.skip("signal handlers are the main thread's")
  before = signal.getsignal(sig)
  x, y = np.zeros((10, 3), np.float32), np.zeros(10, np.int32)

  def chunks():
    yield x, y
    assert any(".tmp-" in f for f in os.listdir(tmp_path))  # being written
    os.kill(os.getpid(), sig)
    yield x, y

  with pytest.raises(Preempted) as e:
    shard_writer.write(tmp_path / "s", {"train": chunks(), "test": [(x, y)]},
                       name="t", task="classification", n_classes=2)
  assert e.value.exit_code == code
  assert str(e.value).startswith(f"{signal.Signals(sig).name}: ")
  assert os.listdir(tmp_path) == []
  assert signal.getsignal(sig) is before


def test_sigterm_stops_data_generate_with_75_and_no_folder_left(tmp_path):
  # 3,000,000 x 16 float32: a few seconds of writing, stopped as the first
  # shard appears
  p = subprocess.Popen([sys.executable, "-m", "funcnet.cli", "data",
                        "generate", "g", "--train", "3000000", "--test", "10",
                        "--shape", "16", "--classes", "3"],
                       cwd=tmp_path, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 60
  while not any(f.endswith(".partial") for d in os.listdir(tmp_path)
                for f in os.listdir(tmp_path / d)) and p.poll() is None:
    assert time.monotonic() < deadline
    time.sleep(0.02)
  p.send_signal(signal.SIGTERM)
  _, err = p.communicate(timeout=60)
  assert p.returncode == 75, err
  assert err.strip().splitlines() == [
      "funcnet: stopped: SIGTERM: g was not written (its partial folder is "
      "removed)"]
  assert os.listdir(tmp_path) == []
