"""funcnet.lm.sample against plain-numpy references, on two toy language
models whose decoders are easy to check: a bigram table (no context limit)
and a windowed model whose logits depend on the sum of the tokens in its
context and on the position (a context limit of W, like a GPT's)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet.errors import ConfigError, ShapeError
from funcnet.lm import sampler as lm
from funcnet.model import Model

V = 7


def bigram(T=8):
  """z_t = B[x_t]."""
  def decoder(params, m, max_len):
    def step(carry, tok, t):
      return carry, params["B"][tok]
    return jnp.zeros((m,), jnp.int32), step
  return Model(init=lambda key, dtype=jnp.float32: {
      "B": jax.random.normal(key, (V, V), dtype) * 2},
      logits=lambda p, x, key=None: p["B"][x], output_activation="softmax",
      in_shape=(T,), n_out=V, spec={"kind": "toy"}, decoder=decoder)


def windowed(W=6):
  """z_t = E[(x_0 + ... + x_t) mod V] + P[t], positions t < W."""
  def logits(p, x, key=None):
    s = jnp.cumsum(x, axis=1) % V
    return p["E"][s] + p["P"][: x.shape[1]]

  def decoder(params, m, max_len):
    if max_len > W:
      raise ShapeError(f"max_len {max_len} > {W}")
    def step(carry, tok, t):
      carry = (carry + tok) % V
      return carry, params["E"][carry] + params["P"][t]
    return jnp.zeros((m,), jnp.int32), step

  def init(key, dtype=jnp.float32):
    k1, k2 = jax.random.split(key)
    return {"E": jax.random.normal(k1, (V, V), dtype) * 3,
            "P": jax.random.normal(k2, (W, V), dtype)}
  return Model(init=init, logits=logits, output_activation="softmax",
               in_shape=(W,), n_out=V, spec={"kind": "toy"}, decoder=decoder)


def test_greedy_equals_the_argmax_chain_and_repeats():
  model = bigram()
  params = model.init(jax.random.key(1))
  B = np.asarray(params["B"])
  out = np.asarray(lm.sample(model, params, [3, 1], 12, temperature=0))
  ref = [3, 1]
  for _ in range(12):
    ref.append(int(np.argmax(B[ref[-1]])))
  np.testing.assert_array_equal(out, ref)
  again = lm.sample(model, params, [3, 1], 12, temperature=0,
                    key=jax.random.key(99))
  np.testing.assert_array_equal(out, np.asarray(again))


def test_the_window_slides_and_each_step_equals_the_full_forward():
  W = 6
  model = windowed(W)
  params = model.init(jax.random.key(2))
  assert lm.context_limit(model) == W
  assert lm.context_limit(bigram()) is None
  prompt = np.array([1, 4, 2])
  tokens, zs = lm.sample(model, params, prompt, 17, key=jax.random.key(3),
                         with_logits=True)
  tokens, zs = np.asarray(tokens), np.asarray(zs)[:, 0]
  starts = lm.window_starts(len(prompt), 17, W)
  assert starts.max() > 0  # the window did slide
  E, P = np.asarray(params["E"]), np.asarray(params["P"])
  for i, s in enumerate(starts):
    # the full forward on the window's tokens, in numpy: its last position
    full = E[np.sum(tokens[s:i + 1]) % V] + P[i - s]
    np.testing.assert_allclose(zs[i], full, atol=1e-5)
    assert i + 1 - s <= W and (s == 0 or i + 1 - s > W // 2)


def test_filter_logits_keeps_top_k_and_the_nucleus():
  z = jnp.log(jnp.array([[0.4, 0.3, 0.15, 0.1, 0.05]]))
  keep = lambda **kw: np.isfinite(np.asarray(lm.filter_logits(z, 1.0, **kw)))[0]
  np.testing.assert_array_equal(keep(top_k=2, top_p=1.0), [1, 1, 0, 0, 0])
  # the smallest set of the largest p whose sum reaches 0.8: 0.4+0.3+0.15
  np.testing.assert_array_equal(keep(top_k=0, top_p=0.8), [1, 1, 1, 0, 0])
  np.testing.assert_array_equal(keep(top_k=0, top_p=0.01), [1, 0, 0, 0, 0])
  p = np.exp(np.asarray(lm.filter_logits(z, 1.0, top_k=2, top_p=1.0)))[0]
  np.testing.assert_allclose(p[:2], [0.4 / 0.7, 0.3 / 0.7], rtol=1e-6)
  # temperature: softmax(z / T)
  p = np.exp(np.asarray(lm.filter_logits(z, 0.5, top_k=0, top_p=1.0)))[0]
  q = np.array([0.4, 0.3, 0.15, 0.1, 0.05]) ** 2
  np.testing.assert_allclose(p, q / q.sum(), rtol=1e-5)


def test_top_k_one_is_greedy_and_draws_follow_the_distribution():
  model = bigram()
  params = model.init(jax.random.key(4))
  g = lm.sample(model, params, [2], 10, temperature=0)
  k1 = lm.sample(model, params, [2], 10, top_k=1, key=jax.random.key(5))
  np.testing.assert_array_equal(np.asarray(g), np.asarray(k1))
  # 2000 one-token draws after token 2 against softmax(B[2]).
  out = np.asarray(lm.sample(model, params, np.full((2000, 1), 2), 1,
                             key=jax.random.key(6)))[:, 1]
  freq = np.bincount(out, minlength=V) / len(out)
  p = np.exp(np.asarray(params["B"][2]))
  np.testing.assert_allclose(freq, p / p.sum(), atol=0.04)


@pytest.mark.parametrize("kw", [dict(temperature=-0.1), dict(top_k=-1),
                                dict(top_p=0.0), dict(top_p=1.5),
                                dict(top_k=V + 1)])
def test_bad_settings_are_one_line(kw):
  model = bigram()
  params = model.init(jax.random.key(0))
  with pytest.raises(ConfigError) as e:
    lm.sample(model, params, [1], 3, **kw)
  assert "\n" not in str(e.value)
