"""Post-training quantization (funcnet.quantize, ``funcnet quantize``):
codes and scales against a plain numpy loop, the quantized model's logits
against a numpy forward pass on ``q * s``, int8 in what is saved and its
size, a trained digits MLP quantized through the command and evaluated by
``funcnet eval`` within half a point of its float accuracy, refusals."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet
from funcnet import cli
from funcnet.quantize import activations, weights


def _reference(w):
  """Per output channel (last axis), by a loop: scale, codes."""
  w = np.asarray(w, np.float64)
  flat = w.reshape(-1, w.shape[-1])
  scale, q = np.zeros(w.shape[-1]), np.zeros_like(flat)
  for j in range(w.shape[-1]):
    amax = max(abs(v) for v in flat[:, j])
    scale[j] = np.float32(amax / 127) if amax > 0 else 1.0
    q[:, j] = [min(127, max(-127, round(v / scale[j]))) for v in flat[:, j]]
  return q.reshape(w.shape), scale


def test_codes_and_scales_are_a_numpy_loops_per_output_channel():
  rng = np.random.default_rng(0)
  w = rng.normal(size=(3, 4, 5)).astype(np.float32)   # a (k, c_in, c_out) kernel
  w[..., 2] = 0.0                                     # a dead channel: scale 1
  w[1, 2, 4] = -9.0                                   # one channel's max is < 0
  qw = weights.quantize_array(w)
  q, scale = _reference(w)
  assert qw.q.dtype == np.int8 and qw.scale.dtype == np.float32
  assert qw.scale.shape == (5,)
  np.testing.assert_allclose(qw.scale, scale, rtol=0)
  np.testing.assert_array_equal(qw.q, q)
  assert qw.q[1, 2, 4] == -127 and np.all(np.abs(qw.q) <= 127)
  # the round trip is within half a step of each channel
  err = np.abs(q * scale - w)
  assert np.all(err <= scale / 2 * (1 + 1e-6))
  # round half to even, as the reference's round(): 2.5 steps -> 2
  half = np.array([[127.0], [2.5]], np.float32)
  assert weights.quantize_array(half).q[:, 0].tolist() == [127, 2]


def test_the_quantized_model_reads_int8_and_computes_q_times_s():
  rng = np.random.default_rng(1)
  model = funcnet.mlp([6, 8, 3], activation="relu")
  params = jax.device_get(model.init(jax.random.key(0)))
  qparams = weights.quantize(params)
  qmodel = weights.model_on(model)
  x = rng.normal(size=(5, 6)).astype(np.float32)
  z = jax.jit(qmodel.logits)(qparams, x)
  # numpy forward pass on the dequantised weights, biases untouched
  (w1, b1), (w2, b2) = [(weights.quantize_array(p["W"]), p["b"])
                        for p in params]
  h = np.maximum(x @ (w1.q * w1.scale.astype(np.float64)) + b1, 0)
  ref = h @ (w2.q * w2.scale.astype(np.float64)) + b2
  np.testing.assert_allclose(z, ref, rtol=1e-5, atol=1e-5)
  # what the program takes in is the int8 codes, not float weights
  ins = jax.make_jaxpr(qmodel.logits)(qparams, x).in_avals
  assert [str(a.dtype) for a in ins].count("int8") == 2
  assert all(a.dtype != jnp.int8 or a.ndim == 2 for a in ins)


def test_int8_activations_are_a_numpy_integer_product():
  rng = np.random.default_rng(2)
  model = funcnet.mlp([6, 8, 3], activation="relu")
  qparams = weights.quantize(jax.device_get(model.init(jax.random.key(1))))
  calib = [rng.normal(size=(7, 6)).astype(np.float32) for _ in range(2)]
  x = rng.normal(size=(5, 6)).astype(np.float32)
  s_x = activations.calibrate(model, qparams, calib)
  qmodel = activations.model_on(model, s_x)
  z = jax.jit(qmodel.logits)(qparams, x)
  # reference: scales from the float forward pass, integer products in int64
  (w1, b1), (w2, b2) = [(p["W"], p["b"]) for p in qparams]
  deq = [w.q * w.scale.astype(np.float64) for w in (w1, w2)]
  h_cal = [np.maximum(c @ deq[0] + b1, 0) for c in calib]
  ref_s = [max(np.abs(c).max() for c in calib) / 127,
           max(np.abs(h).max() for h in h_cal) / 127]
  np.testing.assert_allclose(s_x, ref_s, rtol=1e-5)

  def int_layer(a, w, s):
    qa = np.clip(np.round(a / s), -127, 127).astype(np.int64)
    return (qa @ w.q.astype(np.int64)) * s * w.scale

  h = np.maximum(int_layer(x, w1, s_x[0]) + b1, 0)
  np.testing.assert_allclose(z, int_layer(h, w2, s_x[1]) + b2, rtol=1e-4,
                             atol=1e-4)
  # the program multiplies int8 by int8 into int32
  hlo = jax.jit(qmodel.logits).lower(qparams, x).as_text()
  dots = [l for l in hlo.splitlines() if "stablehlo.dot_general" in l]
  assert len(dots) == 2 and all("xi8>" in l and "xi32>" in l for l in dots)


def test_saved_codes_are_int8_and_four_times_smaller(tmp_path):
  model = funcnet.mlp([64, 128, 10])
  params = jax.device_get(model.init(jax.random.key(0)))
  path = str(tmp_path / "q.npz")
  weights.save(path, weights.quantize(params))
  with np.load(path) as f:
    stored = {k: f[k] for k in f.files}
  codes = [k for k in stored if k.endswith("|q")]
  assert len(codes) == 2 and all(stored[k].dtype == np.int8 for k in codes)
  assert all(stored[k].dtype == np.float32 for k in stored if "|" not in k)
  n_w, n_b = 64 * 128 + 128 * 10, 128 + 10
  # the arrays: weights 4 bytes -> 1; biases stay 4 and gain 4 of scale each
  assert sum(a.nbytes for a in stored.values()) == n_w + 8 * n_b
  # the file: those bytes plus the .npy / zip headers, a few hundred each
  assert 0 < os.path.getsize(path) - (n_w + 8 * n_b) < 400 * len(stored)
  fp = str(tmp_path / "f.npz")
  np.savez(fp, *[np.asarray(a) for a in jax.tree_util.tree_leaves(params)])
  assert os.path.getsize(fp) / os.path.getsize(path) > 3.2
  back = weights.load(path, params)
  for a, b in zip(jax.tree_util.tree_leaves(back),
                  jax.tree_util.tree_leaves(weights.quantize(params))):
    np.testing.assert_array_equal(a, b)


TINY = ["train.epochs=8", "optimizer.learning_rate=0.01",
        "model.mlp.hidden=[32]", "train.batch_size=64", "run.plots=false"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("runs") / "digits")
  assert cli.main(["train", *[a for o in TINY for a in ("--set", o)],
                   "--progress", "never", "--out", out]) == 0
  return out


def test_a_digits_mlp_quantized_by_the_command_keeps_its_accuracy(
    run, tmp_path, capsys):
  out = str(tmp_path / "int8")
  capsys.readouterr()
  assert cli.main(["quantize", "--run", run, "--out", out,
                   "--repeats", "2"]) == 0
  printed = capsys.readouterr().out
  assert "test_accuracy" in printed and "smaller" in printed
  float_acc = funcnet.load_run(run).evaluate()["test_accuracy"]
  assert float_acc > 0.9
  assert cli.main(["eval", "--run", out]) == 0
  quant = json.loads(capsys.readouterr().out)
  assert abs(quant["test_accuracy"] - float_acc) <= 0.005
  with open(os.path.join(out, "quantize.json")) as f:
    report = json.load(f)
  assert report["float"]["test_accuracy"] == pytest.approx(float_acc)
  assert report["quantized"]["test_accuracy"] == pytest.approx(
      quant["test_accuracy"])
  with np.load(os.path.join(out, "quantized.npz")) as f:
    assert sorted(str(f[k].dtype) for k in f.files if k.endswith("|q")) \
        == ["int8", "int8"]
  n_w, n_b = 64 * 32 + 32 * 10, 32 + 10
  assert report["array_bytes"] == {"float": 4 * (n_w + n_b),
                                   "quantized": n_w + 8 * n_b}
  assert report["params_bytes"]["quantized"] == os.path.getsize(
      os.path.join(out, "quantized.npz"))


def test_weights_and_activations_through_the_command(run, tmp_path, capsys):
  out = str(tmp_path / "a8")
  assert cli.main(["quantize", "--run", run, "--out", out, "--repeats", "1",
                   "--mode", "weights+activations"]) == 0
  capsys.readouterr()
  float_acc = funcnet.load_run(run).evaluate()["test_accuracy"]
  quant = funcnet.load_run(out).evaluate()
  assert abs(quant["test_accuracy"] - float_acc) <= 0.005
  with np.load(os.path.join(out, "quantized.npz")) as f:
    assert f["activations|scale"].shape == (2,)


@pytest.mark.parametrize("argv, words", [
    (["--bits", "4"], "--bits 4: expected one of 8"),
    (["--bits", "16"], "--bits 16"),
    (["--mode", "everything"], "--mode 'everything'"),
])
def test_bad_requests_are_one_line_and_exit_2(run, argv, words, capsys):
  assert cli.main(["quantize", "--run", run, *argv]) == 2
  err = capsys.readouterr().err
  assert words in err and err.count("\n") == 1


def test_a_missing_or_quantized_run_is_one_line(run, tmp_path, capsys):
  assert cli.main(["quantize", "--run", str(tmp_path / "nope")]) == 2
  err = capsys.readouterr().err
  assert "nope" in err and err.count("\n") == 1
  assert cli.main(["quantize", "--run", run, "--out", run]) == 2
  assert "the run folder itself" in capsys.readouterr().err
  other = tmp_path / "other"   # a folder that holds some run
  other.mkdir()
  (other / "config.json").write_text("{}")
  assert cli.main(["quantize", "--run", run, "--out", str(other)]) == 2
  assert "holds a run" in capsys.readouterr().err
  assert os.listdir(other) == ["config.json"]


# --- magnitude pruning (funcnet prune), on the same trained run -----------

def test_global_masks_remove_the_k_smallest_weights_and_no_bias():
  from funcnet.prune import magnitude
  rng = np.random.default_rng(3)
  params = [{"W": rng.normal(size=(4, 5)), "b": rng.normal(size=5) * 1e-6},
            {"W": rng.normal(size=(3, 5, 2)) * 0.1, "b": np.zeros(2)}]
  params[0]["W"][0, :2] = 0.5  # a tie
  m = magnitude.masks(params, 0.6)
  # reference: the 60% smallest |w| over both layers, by a sort in numpy
  both = np.concatenate([np.abs(params[0]["W"]).ravel(),
                         np.abs(params[1]["W"]).ravel()])
  k = int(0.6 * both.size)
  kept = np.concatenate([m[0]["W"].ravel(), m[1]["W"].ravel()])
  assert kept.sum() == both.size - k
  assert np.abs(both[kept == 0]).max() <= np.abs(both[kept == 1]).min()
  assert m[0]["b"].tolist() == [1.0] * 5 and m[1]["b"].tolist() == [1.0] * 2
  # the small second layer loses more than the first: the cut is global
  assert m[1]["W"].mean() < m[0]["W"].mean()
  assert magnitude.sparsity(magnitude.apply(params, m)) == pytest.approx(
      k / both.size)


@pytest.mark.slow  # an orbax save and a fine-tuning compile: ~4 s of CPU
def test_a_run_pruned_by_the_command_keeps_its_zeros(run, tmp_path, capsys):
  out = str(tmp_path / "pruned")
  assert cli.main(["prune", "--run", run, "--sparsity", "0.5",
                   "--epochs", "1", "--out", out]) == 0
  capsys.readouterr()
  pruned = funcnet.load_run(out)
  with np.load(os.path.join(out, "masks.npz")) as f:
    masks = {k: f[k] for k in f.files}
  ws = [np.asarray(p["W"]) for p in pruned.params]
  assert [masks[f"[{i}]['W']"].shape for i in range(2)] == \
      [w.shape for w in ws]
  for i, w in enumerate(ws):  # fine-tuning left every pruned weight at 0
    assert np.all(w[~masks[f"[{i}]['W']"]] == 0)
  n = sum(w.size for w in ws)
  assert sum(np.count_nonzero(w == 0) for w in ws) == n // 2
  with open(os.path.join(out, "prune.json")) as f:
    report = json.load(f)
  assert report["finetuned"]["test_accuracy"] == pytest.approx(
      pruned.evaluate()["test_accuracy"])
  assert cli.main(["prune", "--run", run, "--sparsity", "1"]) == 2
  err = capsys.readouterr().err
  assert "--sparsity 1.0: expected a fraction in [0, 1)" in err
  assert err.count("\n") == 1
