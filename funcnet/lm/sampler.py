"""Sampling from a language model: one compiled program for the whole length.

  tokens = sample(model, params, prompt, length, key=key,
                  temperature=1.0, top_k=0, top_p=1.0)

Token by token, through the model's ``decoder`` (:class:`funcnet.model.Model`:
a GPT's key/value cache, a recurrent model's ``(h, c)``): the prompt is fed
one token at a time, then each new token is drawn from the logits of the
last one fed and fed in turn. The whole loop is one ``lax.scan`` inside one
``jax.jit``: no Python loop per token, one compilation per (model, prompt
length, length, top-k).

Drawing a token from the logits ``z`` (``V`` of them):

  temperature T = 0      the argmax (greedy: deterministic, no key used)
  T > 0                  p = softmax(z / T), then
  top_k = k > 0          keep the k largest p (ties at the k-th kept), renormalise
  top_p = q < 1          keep the smallest set of largest p whose sum reaches q
                         (nucleus sampling, Holtzman et al. 2020), renormalise

A model with a context limit (a GPT's ``block_size`` learned positions: its
decoder refuses ``max_len`` beyond it) samples past it with a sliding
window: when the cache is full (``W = block_size`` positions), it is
refilled from the last ``W // 2`` tokens at positions ``0 .. W/2 - 1`` (one
pass of ``W / 2`` decoder steps, in the same compiled loop) and decoding
goes on. Each next-token distribution is then exactly the model's full
forward on the tokens since the window's start (between ``W / 2`` and
``W`` of them): what :func:`window_starts` says, and what
tests/test_sample.py checks against ``model.logits``. (nanoGPT recomputes
the whole last ``W`` tokens for every new token; this costs two decoder
steps per token at most, and keeps at least half the context.)
"""

import functools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.errors import ConfigError, ShapeError


def check_settings(temperature: float, top_k: int, top_p: float,
                   length: int) -> None:
  """Raises a one-line :class:`ConfigError` for a setting out of range."""
  if not (isinstance(temperature, (int, float)) and temperature >= 0
          and np.isfinite(temperature)):
    raise ConfigError(f"temperature = {temperature}; expected a number >= 0 "
                      "(0: greedy)")
  if not isinstance(top_k, (int, np.integer)) or top_k < 0:
    raise ConfigError(f"top_k = {top_k}; expected an integer >= 0 (0: off)")
  if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
    raise ConfigError(f"top_p = {top_p}; expected 0 < top_p <= 1 (1: off)")
  if not isinstance(length, (int, np.integer)) or length < 1:
    raise ConfigError(f"length = {length}; expected an integer >= 1")


def context_limit(model):
  """The most positions the model's decoder holds (a GPT's ``block_size``),
  or None for a recurrent model, which reads any length.

  Asked of the decoder itself (traced only, nothing allocated): one that
  refuses ``max_len`` past ``in_shape[0]`` has a limit."""
  if model.decoder is None:
    raise ConfigError(f"model kind {model.kind!r} is not a language model "
                      "(it has no decoder); expected a run of a language "
                      "model (data.name = 'text')")
  block = int(model.in_shape[0])
  params = jax.eval_shape(model.init, jax.random.key(0))
  try:
    jax.eval_shape(lambda p: model.decoder(p, 1, block + 1)[0], params)
  except ShapeError:
    return block
  return None


def filter_logits(z, temperature, top_k: int, top_p):
  """The log-probabilities a token is drawn from: ``z (..., V)`` divided by
  ``temperature > 0``, with everything outside the top ``top_k`` (0: all)
  and the nucleus ``top_p`` (1: all) set to ``-inf``."""
  z = z / temperature
  if top_k:
    kth = jax.lax.top_k(z, top_k)[0][..., -1:]
    z = jnp.where(z < kth, -jnp.inf, z)
  p = jax.nn.softmax(z, axis=-1)
  order = jnp.argsort(-p, axis=-1)
  sorted_p = jnp.take_along_axis(p, order, axis=-1)
  # A token is kept when the mass before it (larger tokens) is below top_p:
  # the first token always is, so the set is never empty.
  before = jnp.cumsum(sorted_p, axis=-1) - sorted_p
  keep_sorted = before < top_p
  keep = jnp.zeros_like(keep_sorted).at[
      jnp.arange(z.shape[0])[:, None], order].set(keep_sorted)
  return jax.nn.log_softmax(jnp.where(keep, z, -jnp.inf), axis=-1)


def window_starts(n_prompt: int, length: int, limit):
  """``(n_prompt + length - 1,)``: for each decoder step ``i`` (feeding
  token ``i``), the index of the first token in the model's context then:
  0 without a limit; with a limit ``W``, the start of the current window
  (moved on by ``W // 2`` tokens each time the cache fills)."""
  starts, start = [], 0
  for i in range(n_prompt + length - 1):
    if limit is not None and i - start == limit:
      start = i - limit // 2
    starts.append(start)
  return np.array(starts, np.int64)


@functools.lru_cache(maxsize=16)
def _program(decoder, length: int, top_k: int, limit, with_logits: bool):
  """The jitted sampler of one ``decoder`` and setting (kept, so a second
  call with the same ones compiles nothing; a Model itself is not
  hashable, its decoder function is)."""
  return jax.jit(partial(_sample, decoder, length=length, top_k=top_k,
                         limit=limit, with_logits=with_logits))


def _sample(decoder, params, prompt, key, temperature, top_p, *, length: int,
            top_k: int, limit, with_logits: bool):
  """``(m, P) -> (m, P + length)`` tokens (and each step's logits)."""
  m, n_prompt = prompt.shape
  n = n_prompt + length
  max_len = limit if limit is not None else n
  carry0, step = decoder(params, m, max_len)
  buf = jnp.zeros((m, n), jnp.int32).at[:, :n_prompt].set(prompt)

  def refill(buf, i):
    """A fresh cache holding tokens ``i - W/2 .. i - 1`` at positions
    ``0 .. W/2 - 1``; token ``i`` then goes in at position ``W/2``."""
    half = limit // 2
    def feed(j, c):
      tok = jax.lax.dynamic_index_in_dim(buf, i - half + j, axis=1,
                                         keepdims=False)
      return step(c, tok, j)[0]
    return jax.lax.fori_loop(0, half, feed, carry0)

  def body(state, i):
    carry, buf, pos, key = state
    if limit is not None:
      full = pos == limit
      carry = jax.lax.cond(full, lambda c: refill(buf, i), lambda c: c,
                           carry)
      pos = jnp.where(full, limit // 2, pos)
    tok = jax.lax.dynamic_index_in_dim(buf, i, axis=1, keepdims=False)
    carry, z = step(carry, tok, pos)
    key, k_draw = jax.random.split(key)
    greedy = jnp.argmax(z, axis=-1)
    drawn = jax.random.categorical(
        k_draw, filter_logits(z, jnp.maximum(temperature, 1e-6), top_k, top_p))
    nxt = jnp.where(temperature == 0, greedy, drawn).astype(jnp.int32)
    # Inside the prompt the next token is given; past it, it is drawn.
    given = jax.lax.dynamic_index_in_dim(buf, i + 1, axis=1, keepdims=False)
    nxt = jnp.where(i + 1 < n_prompt, given, nxt)
    buf = jax.lax.dynamic_update_index_in_dim(buf, nxt, i + 1, axis=1)
    return (carry, buf, pos + 1, key), (z if with_logits else None)

  (_, buf, _, _), zs = jax.lax.scan(
      body, (carry0, buf, jnp.int32(0), key), jnp.arange(n - 1))
  return buf, zs


def sample(model, params, prompt, length: int, *, key=None,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           with_logits: bool = False):
  """``length`` tokens drawn after ``prompt``.

  Args:
    model: a language model (:class:`funcnet.model.Model` with a
      ``decoder``).
    params: its params.
    prompt: ``(P,)`` or ``(m, P)`` int token ids, ``P >= 1``.
    length: tokens to draw.
    key: a PRNG key (unused when ``temperature == 0``).
    temperature, top_k, top_p: see the module's docstring.
    with_logits: also return each step's logits.

  Returns:
    ``(m, P + length)`` int32 tokens (``(P + length,)`` for a 1-D prompt),
    prompt first; with ``with_logits``, also ``(P + length - 1, m, V)``:
    the logits after feeding token ``i``, from which token ``i + 1`` was
    drawn (inside the prompt: what the model predicted for it).
  """
  check_settings(temperature, top_k, top_p, length)
  prompt = np.asarray(prompt)
  one = prompt.ndim == 1
  prompt = prompt[None] if one else prompt
  if prompt.ndim != 2 or prompt.shape[1] < 1:
    raise ShapeError(f"prompt has shape {prompt.shape}; expected (P,) or "
                     "(m, P) token ids with P >= 1")
  if np.any((prompt < 0) | (prompt >= model.n_out)):
    raise ConfigError(f"prompt holds token ids outside 0..{model.n_out - 1}")
  if top_k > model.n_out:
    raise ConfigError(f"top_k = {top_k} is more than the {model.n_out} "
                      f"tokens; expected 0..{model.n_out}")
  key = jax.random.key(0) if key is None else key
  program = _program(model.decoder, int(length), int(top_k),
                     context_limit(model), bool(with_logits))
  tokens, zs = program(params, jnp.asarray(prompt, jnp.int32), key,
                       jnp.float32(temperature), jnp.float32(top_p))
  tokens = tokens[0] if one else tokens
  return (tokens, zs) if with_logits else tokens
