"""Text data for language models, its tokenizers, the token folder and the
Kneser-Ney baseline (funcnet.data.text, tokenize, text_folder, text_writer;
funcnet.models.ngram; funcnet baseline).

Every expectation is computed another way: windows and ids by plain Python
slicing and ``sorted(set(...))``, the n-gram by a dict-of-tuples reference
and a small example worked by hand."""

import collections
import json
import math

import jax
import numpy as np
import pytest

from funcnet import cli, config, data, tasks
from funcnet.data import text, text_writer
from funcnet.errors import DataError
from funcnet.experiment import setup
from funcnet.models.ngram import KneserNey

# 100 characters: train the first 90, validate the last 10; "é" and "€"
# (2 and 3 UTF-8 bytes) cross chunk edges when converted 5 bytes at a time;
# "Z" and "!" appear only in the validation split.
TEXT = ("the cat sat on the mat, é and € too. " * 3)[:90] + "Zthe! cat."


def _file(tmp_path, content, name="t.txt"):
  p = tmp_path / name
  p.write_bytes(content if isinstance(content, bytes) else
                content.encode("utf-8"))
  return str(p)


def _ids(s, chars):
  return [chars.index(ch) if ch in chars else len(chars) for ch in s]


# --- splits, tokenizer, windows --------------------------------------------

def test_split_by_position_char_ids_and_round_trip(tmp_path):
  c = text.corpus(_file(tmp_path, TEXT))
  train, val = TEXT[:90], TEXT[90:]
  chars = sorted(set(train))
  assert c.tokenizer.vocab_size == len(chars) + 1
  np.testing.assert_array_equal(c.train, _ids(train, chars))
  np.testing.assert_array_equal(c.validation, _ids(val, chars))
  assert c.tokenizer.decode(c.train) == train
  tok = text.tokenize.from_json(c.tokenizer.to_json())  # as a run keeps it
  assert tok.decode(tok.encode(train)) == train
  # unseen characters: one unknown id each, counted, decoded as U+FFFD
  assert c.info["unknown"] == sum(ch not in chars for ch in val) == 2
  assert tok.decode(tok.encode("Z!")) == "\ufffd\ufffd"
  # a sampling prompt may not hold them
  np.testing.assert_array_equal(text.tokenize.encode_prompt(tok, "the"),
                                _ids("the", chars))
  with pytest.raises(DataError, match=r"outside the vocabulary \('!', 'Z'\)"):
    text.tokenize.encode_prompt(tok, "the Z!")


def test_windows_and_labels_are_the_next_tokens(tmp_path):
  T, s = 4, 3
  ds = text.text(_file(tmp_path, TEXT), T, s)
  chars = sorted(set(TEXT[:90]))
  u, v = _ids(TEXT[:90], chars), _ids(TEXT[90:], chars)
  n_rows = len(range(0, 90 - T, s))       # starts with a full label window
  assert ds.x_train.shape == (n_rows, T) and len(ds.y_train) == n_rows
  rows = np.array([0, 5, n_rows - 1])
  x, y = ds.x_train.read(rows)
  assert x.dtype == y.dtype == np.int32
  np.testing.assert_array_equal(x, [u[i * s:i * s + T] for i in rows])
  np.testing.assert_array_equal(y, [u[i * s + 1:i * s + T + 1] for i in rows])
  k = (10 - 1) // T                       # 2 windows, 1 character dropped
  np.testing.assert_array_equal(ds.x_test, [v[j * T:(j + 1) * T]
                                            for j in range(k)])
  np.testing.assert_array_equal(ds.y_test, [v[j * T + 1:(j + 1) * T + 1]
                                            for j in range(k)])
  assert ds.info["validation_dropped_chars"] == 10 - (k * T + 1)
  assert ds.info["tokens_per_char"] == 1.0
  spec = data.spec(ds)
  assert spec.in_shape == (T,) and spec.n_out == len(chars) + 1
  assert np.issubdtype(np.dtype(spec.x_dtype), np.integer)


def test_a_config_names_the_text_and_its_options(tmp_path):
  p = _file(tmp_path, TEXT)
  cfg = config.load(None, ['data.name="text"', f'data.path="{p}"',
                           "data.block_size=5", "data.stride=2"])
  ds = setup.build_dataset(cfg)
  assert ds.x_train.shape == (len(range(0, 90 - 5, 2)), 5)
  assert ds.task == tasks.LANGUAGE.name and data.n_outputs(ds) == \
      len(set(TEXT[:90])) + 1


def test_the_builtin_corpus_is_the_language_reference():
  from pydoc_data.topics import topics
  whole = "".join(topics[k] for k in sorted(topics))
  ds = data.load("text", block_size=64)
  n = len(whole) * 9 // 10
  assert ds.info["chars_train"] == n and len(whole) > 400_000
  assert ds.info["vocab_size"] == len(set(whole[:n])) + 1
  v = ds.info["chars_validation"]
  assert v == len(whole) - n and ds.y_test.size == (v - 1) // 64 * 64


def test_language_metrics_are_bits_and_perplexity():
  rng = np.random.default_rng(0)
  z = rng.standard_normal((3, 5, 7)).astype(np.float32)
  y = rng.integers(0, 7, (3, 5)).astype(np.int32)
  m = jax.jit(lambda z, y: tasks.get("language").metrics(z, None, y, None))(
      z, y)
  zz = z.astype(np.float64)
  logp = zz - np.log(np.exp(zz).sum(-1, keepdims=True))
  h = -np.mean(np.take_along_axis(logp, y[..., None], -1))
  np.testing.assert_allclose(float(m["bits_per_token"]), h / math.log(2),
                             rtol=1e-5)
  np.testing.assert_allclose(float(m["perplexity"]), math.exp(h), rtol=1e-5)


def test_bpe_round_trips_and_counts_characters(tmp_path):
  pytest.importorskip("tokenizers")
  words = "alpha beta gamma delta epsilon zeta eta theta iota kappa ".split()
  rng = np.random.default_rng(1)
  s = " ".join(rng.choice(words, 400)) + "\n"
  ds = text.text(_file(tmp_path, s), 8, 1, "bpe", 300)
  tok = text.tokenize.from_json(ds.info["tokenizer"])
  assert tok.vocab_size <= 300 and tok.decode(tok.encode(s)) == s
  assert tok.decode(tok.encode("é€ unseen")) == "é€ unseen"
  # bits per character = bits per token * tokens per character, counted
  # over the predicted tokens (ASCII: decoding them gives their characters)
  predicted = tok.decode(ds.y_test.ravel())
  assert ds.info["tokens_per_char"] == pytest.approx(
      ds.y_test.size / len(predicted), rel=1e-12)
  assert ds.info["tokens_per_char"] < 0.7


# --- user mistakes: one line, exit 2 ----------------------------------------

def _one_line(argv, capsys, *parts):
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "Traceback" not in err, err
  for part in parts:
    assert part in err, err
  return err


@pytest.mark.parametrize("content,parts", [
    (None, ["does not exist"]),
    (b"", ["is empty"]),
    (b"abc\x00def", ["NUL byte at byte 3", "binary"]),
    ("abcdéfgh".encode() + b"\xff tail", ["not UTF-8", "byte 9", "0xff"]),
])
def test_a_bad_text_file_is_one_line(tmp_path, capsys, content, parts):
  p = str(tmp_path / "t.txt") if content is None else _file(tmp_path, content)
  _one_line(["baseline", "--set", 'data.name="text"', "--set",
             f'data.path="{p}"'], capsys, p, *parts)
  # the streaming convert finds the same byte, 5 bytes at a time
  text_writer.CHUNK, chunk = 5, text_writer.CHUNK
  try:
    _one_line(["data", "convert", p, str(tmp_path / "out")], capsys, *parts)
  finally:
    text_writer.CHUNK = chunk
  assert not (tmp_path / "out").exists()


def test_a_block_as_long_as_the_validation_split_is_refused(tmp_path, capsys):
  p = _file(tmp_path, TEXT)
  _one_line(["baseline", "--set", 'data.name="text"', "--set",
             f'data.path="{p}"', "--set", "data.block_size=10"], capsys,
            "data.block_size = 10", "10 tokens of the validation split")


# --- the token folder ---------------------------------------------------------

def test_a_converted_folder_loads_the_same_windows(tmp_path, monkeypatch,
                                                   capsys):
  p = _file(tmp_path, TEXT)
  dst = str(tmp_path / "tokens")
  monkeypatch.setattr(text_writer, "CHUNK", 5)  # characters split by chunks
  assert cli.main(["data", "convert", p, dst]) == 0
  assert "wrote" in capsys.readouterr().out
  a = text.text(p, 4, 2)
  cfg = config.load(None, [f'data.name="{dst}"', "data.block_size=4",
                           "data.stride=2"])
  b = setup.build_dataset(cfg)
  assert b.x_train.shape == a.x_train.shape
  rows = np.arange(len(a.y_train))
  for u, w in zip(a.x_train.read(rows), b.x_train.read(rows)):
    np.testing.assert_array_equal(u, w)
  np.testing.assert_array_equal(a.x_test, b.x_test)
  np.testing.assert_array_equal(a.y_test, b.y_test)
  for k in ("tokenizer", "unknown", "chars_train", "chars_validation"):
    assert a.info[k] == b.info[k], k


# --- Kneser-Ney ---------------------------------------------------------------

def test_kneser_ney_by_hand():
  # a b a b a c c, V = 3. Order 2: raw bigram counts ab 2, ba 2, ac 1, cc 1
  # (n1 = n2 = 2, n3 = 0: D = Y = 2/6 = 1/3); unigram continuation counts
  # a 1 (after b), b 1 (after a), c 2 (after a, c) (n2 = 1, n3 = 0: D =
  # Y = 2/4): p1 = ((1-.5+1.5/3)/4, same, (2-.5+.5)/4) = (1/4, 1/4, 1/2).
  # p(b|a) = (2 - 1/3 + (2/3)(1/4)) / 3 = 11/18, and so on.
  lm = KneserNey([0, 1, 0, 1, 0, 2, 2], 2, 3)
  np.testing.assert_allclose(lm.probs([[0], [1], [2]], 2), [
      [1 / 18, 11 / 18, 6 / 18], [7 / 8, 1 / 24, 1 / 12],
      [1 / 12, 1 / 12, 5 / 6]], rtol=1e-13)
  # order 1, raw counts 3, 2, 2 (n1 = 0: D = 0.5): (3-.5+.5)/7, ...
  np.testing.assert_allclose(lm.probs([[0]], 1), [[3 / 7, 2 / 7, 2 / 7]],
                             rtol=1e-13)


def _reference(train, order, V):
  """Interpolated modified Kneser-Ney with dicts of tuples, from the
  formulas of Chen & Goodman (1998)."""
  def grams(k):
    return collections.Counter(tuple(train[i - k + 1:i + 1])
                               for i in range(k - 1, len(train)))
  levels = {}
  for k in range(1, order + 1):
    c = grams(k) if k == order else collections.Counter(
        g[1:] for g in grams(k + 1))
    n = [sum(v == r for v in c.values()) for r in (1, 2, 3, 4)]
    y = n[0] / (n[0] + 2 * n[1]) if n[0] + n[1] else 0.5
    if min(n):
      d = [1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1],
           3 - 4 * y * n[3] / n[2]]
    else:
      d = [y] * 3 if n[0] and n[1] else [0.5] * 3
    d = [min(max(x, 0), r) for r, x in zip((1, 2, 3), d)]
    by_ctx = collections.defaultdict(dict)
    for g, v in c.items():
      by_ctx[g[:-1]][g[-1]] = v
    levels[k] = (by_ctx, d)

  def p(k, h, w):
    if k == 0:
      return 1 / V
    by_ctx, d = levels[k]
    lower = p(k - 1, h[1:], w)
    seen = by_ctx.get(h, {})
    tot = sum(seen.values())
    if tot == 0:
      return lower
    gamma = sum(d[min(v, 3) - 1] for v in seen.values())
    c = seen.get(w, 0)
    return (max(c - (d[min(c, 3) - 1] if c else 0), 0) + gamma * lower) / tot
  return lambda h, w: p(order, tuple(h[len(h) - order + 1:] if order > 1
                                     else ()), w)


def test_kneser_ney_matches_a_dict_reference_and_sums_to_one():
  rng = np.random.default_rng(0)
  V = 5
  # a sticky chain, so counts of 1, 2, 3, 4 and more all occur
  train = [0]
  for _ in range(600):
    train.append(train[-1] if rng.random() < 0.4 else int(rng.integers(V)))
  seq = rng.integers(0, V, 40).tolist()
  lm = KneserNey(train, 4, V)
  for order in (1, 2, 3, 4):
    ref = _reference(train, order, V)
    want = [math.log(ref(seq[:i], seq[i])) for i in range(3, len(seq))]
    np.testing.assert_allclose(lm.logprobs(seq, 3, order), want, rtol=1e-12)
    # every distribution sums to 1, for seen and unseen contexts alike,
    # and equals the sum of the one-token probabilities, w by w
    hist = rng.integers(0, V, (6, 3))
    probs = lm.probs(hist, order)
    brute = [[math.exp(lm.logprobs(np.r_[h, w], 3, order)[0])
              for w in range(V)] for h in hist]
    np.testing.assert_allclose(probs, brute, rtol=1e-12)
    np.testing.assert_allclose(np.sum(brute, 1), 1.0, rtol=1e-12)


def test_baseline_prints_orders_and_writes_json_only_when_asked(
    tmp_path, capsys):
  p = _file(tmp_path, TEXT * 3)
  out = tmp_path / "kn.json"
  argv = ["baseline", "--set", 'data.name="text"', "--set",
          f'data.path="{p}"', "--set", "data.block_size=8", "--orders", "1-3"]
  assert cli.main(argv) == 0
  assert not out.exists()
  assert cli.main(argv + ["--out", str(out)]) == 0
  rows = json.loads(out.read_text())
  assert [r["order"] for r in rows] == [1, 2, 3]
  lines = capsys.readouterr().out.splitlines()
  assert lines[1].split()[:2] == ["order", "val_bpc"] and len(lines) == 10
  _one_line(argv[:-2] + ["--orders", "0-3"], capsys, "--orders")


def test_bpe_without_its_extra_names_the_install(tmp_path, monkeypatch):
  import sys
  from funcnet.errors import ConfigError
  monkeypatch.setitem(sys.modules, "tokenizers", None)
  with pytest.raises(ConfigError, match=r'pip install -e "\.\[bpe\]"'):
    text.corpus(_file(tmp_path, TEXT), "bpe")
