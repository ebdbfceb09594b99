"""Self-supervised pretraining (funcnet.losses.MASKED_MSE, losses.nt_xent,
funcnet.experiment.pretrain, the [pretrain] config table).

Each loss's value is checked against its formula in plain numpy and its
hand-written dC/dz against jax.grad in float64; a manual gradient through
a model (masked: an MLP; contrastive: a CNN on two views) against
autodiff's; the masks and views against numpy's own reading of them; each
mistake is one line. (Pretraining then fine-tuning: test_study_labels.py.)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import autodiff, backprop, cli, data, losses
from funcnet.experiment import pretrain
from funcnet.models import mlp


# --- the losses against numpy and jax.grad ------------------------------------

def _np_nt_xent(z, t):
  """NT-Xent by its definition, one row at a time."""
  h = np.concatenate([z[:, 0], z[:, 1]])
  u = h / np.linalg.norm(h, axis=1, keepdims=True)
  m2 = len(h)
  total = 0.0
  for k in range(m2):
    pos = (k + m2 // 2) % m2
    s = np.array([u[k] @ u[l] / t for l in range(m2) if l != k])
    total += -u[k] @ u[pos] / t + np.log(np.exp(s).sum())
  return total / m2


def test_both_losses_match_numpy_and_their_derivatives_jax_grad(x64):
  rng = np.random.default_rng(0)
  z, x = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
  hidden = (rng.random((5, 6)) < 0.4).astype(np.float64)
  y = np.concatenate([x, hidden], 1)
  pairs = rng.normal(size=(4, 2, 3))
  con = losses.nt_xent(0.3)

  @jax.jit
  def both(z, y, pairs):
    m = losses.MASKED_MSE
    return (m.batch(z, y), m.batch_grad(z, y), jax.grad(m.batch)(z, y),
            con.batch(pairs, None), con.batch_grad(pairs, None),
            jax.grad(con.batch)(pairs, None))
  c, g, g_ad, c_con, g_con, g_con_ad = both(z, y, pairs)
  np.testing.assert_allclose(
      c, ((z - x) ** 2 * hidden).sum() / hidden.sum(), rtol=1e-12)
  np.testing.assert_allclose(g, g_ad, rtol=0, atol=1e-10)
  np.testing.assert_allclose(c_con, _np_nt_xent(pairs, 0.3), rtol=1e-12)
  np.testing.assert_allclose(g_con, g_con_ad, rtol=0, atol=1e-10)


def test_a_manual_step_through_each_objective_equals_autodiffs(x64):
  """Masked: an MLP reconstructing its 8 inputs; contrastive: an MLP with
  dropout on two views drawn from the step's key (dropout from it too)."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(6, 8)))
  masks = pretrain.hide(8, rng, 6, span=2, fraction=0.5)
  shown, y = (jnp.asarray(a) for a in pretrain._masked_split(np.asarray(x),
                                                             masks))
  rec = mlp([8, 5, 8], "tanh", "identity")
  base = mlp([8, 6, 4], "tanh", "identity", dropout=0.2)
  pair = pretrain.paired(base, shift=2, scale=0.4, noise=0.1)
  con = losses.nt_xent(0.5)
  key = jax.random.key(3)
  p_rec = rec.init(jax.random.key(0), jnp.float64)
  p_pair = pair.init(jax.random.key(1), jnp.float64)

  @jax.jit
  def grads(p_rec, p_pair):
    return (backprop.value_and_grad(rec, losses.MASKED_MSE)(p_rec, shown, y),
            autodiff.value_and_grad(rec, losses.MASKED_MSE)(p_rec, shown, y),
            backprop.value_and_grad(pair, con)(p_pair, x, y, key),
            autodiff.value_and_grad(pair, con)(p_pair, x, y, key))
  (c_m, g_m), (c_a, g_a), (d_m, h_m), (d_a, h_a) = grads(p_rec, p_pair)
  np.testing.assert_allclose(c_m, c_a, rtol=1e-12)
  np.testing.assert_allclose(d_m, d_a, rtol=1e-12)
  for m, a in zip(jax.tree_util.tree_leaves((g_m, h_m)),
                  jax.tree_util.tree_leaves((g_a, h_a))):
    np.testing.assert_allclose(m, a, rtol=0, atol=1e-10)


# --- masks and views -----------------------------------------------------------

def test_masks_hide_whole_spans_and_patches_and_views_roll_as_numpy():
  rng = np.random.default_rng(2)
  spans = pretrain.hide(12, rng, 50, span=3, fraction=0.5)
  blocks = spans.reshape(50, 4, 3)
  assert (blocks.min(-1) == blocks.max(-1)).all()       # whole spans
  assert (blocks[..., 0].sum(1) == 2).all()             # 2 of 4 in each row
  patches = pretrain.hide(16, rng, 50, span=2, fraction=0.25, side=4)
  img = patches.reshape(50, 2, 2, 2, 2)                 # (m, R, r, C, c)
  assert (img.min((2, 4)) == img.max((2, 4))).all()     # whole 2x2 patches
  assert (img[:, :, 0, :, 0].sum((1, 2)) == 1).all()    # 1 of 4
  # No scale, no noise: each view is a roll (numpy's), by at most `shift`.
  x = rng.normal(size=(20, 9)).astype(np.float32)

  @jax.jit
  def views(x):
    return (pretrain.augment(x, jax.random.key(0), 2, 0.0, 0.0),
            pretrain.augment(x, jax.random.key(1), 1, 0.0, 0.0, side=3))
  signal, image = (np.asarray(v) for v in views(x))
  for xi, vi in zip(x, signal):
    assert any(np.array_equal(np.roll(xi, k), vi) for k in range(-2, 3))
  for xi, vi in zip(x.reshape(20, 3, 3), image.reshape(20, 3, 3)):
    assert any(np.array_equal(np.roll(xi, (a, b), (0, 1)), vi)
               for a in range(-1, 2) for b in range(-1, 2))


def test_with_a_validation_split_the_test_split_is_masked_too():
  """data.validation moves the test split to info["test"], read once at the
  end: masked modelling must mask it like the held-out split (it crashed
  on the raw inputs' shape)."""
  ds = data.hold_out(data.load("digits", seed=0, standardize=False), 0.25, 0)
  x_test = ds.info["test"][0]
  p = {"layout": "image", "span": 2, "mask_fraction": 0.25, "copies": 2}
  out = pretrain.masked_dataset(ds, p, seed=0)
  shown, target = out.info["test"]
  n = x_test[0].size
  flat = x_test.reshape(len(x_test), -1)
  mask = target[:, n:]
  assert target.shape == (len(x_test), 2 * n) and set(np.unique(mask)) == {0, 1}
  np.testing.assert_array_equal(target[:, :n], flat)
  np.testing.assert_array_equal(shown.reshape(len(x_test), -1), flat * (1 - mask))
  np.testing.assert_allclose(mask.mean(1), 0.25)       # 4 of 16 patches
  assert len(out.x_train) == 2 * len(ds.x_train)      # the copies


# --- mistakes (the pretrain -> fine-tune path: tests/test_study_labels.py) ---

@pytest.mark.parametrize("override, words", [
    ('pretrain.objective="rotation"', "pretrain.objective"),
    ("pretrain.mask_fraction=1.0", "(0, 1)"),
    ("pretrain.mask_fraction=0", "(0, 1)"),
    ("pretrain.span=7", "divide"),
])
def test_bad_pretraining_input_is_one_line_and_exit_status_2(
    tmp_path, capsys, override, words):
  objective = [] if "objective" in override else ['pretrain.objective="masked"']
  code = cli.main(["train", "--out", str(tmp_path / "r"), "--set",
                   'data.name="digits"', "--set", "train.epochs=1",
                   *sum((["--set", o] for o in objective + [override]), [])])
  err = capsys.readouterr().err.strip()
  assert code == 2 and len(err.splitlines()) == 1 and words in err
