"""Small pure building blocks shared by the models: each an ``*_init`` and an apply.

Every block is a pair of functions in the style of ``stax``:

  params = foo_init(key, ..., dtype)    # a plain dict of arrays
  y      = foo(params, x, ...)          # pure; batched over leading axes

Arrays are channels-last and carry the batch on the leading axis ``m``.

  dense            y = x @ W + b                      x: (..., n_in)  W: (n_in, n_out)
                                                       b: (n_out,)     y: (..., n_out)
  conv             y[p, o] = b[o] + sum_{q, i} W[q, i, o] x[s p + q - pad, i]
                                                       x: (m, *spatial, c_in)
                                                       W: (*kernel, c_in, c_out)
                                                       y: (m, *spatial', c_out)
  max_pool         y[p] = max_{q in window} x[s p + q]      x: (m, *spatial, c)
  avg_pool         y[p] = mean over the window's in-bounds entries
  global_avg_pool  y = mean of x over the spatial axes       (m, *spatial, c) -> (m, c)
  global_max_pool  y = max of x over the spatial axes        (m, *spatial, c) -> (m, c)
  layer_norm       y = scale * (x - mean) / sqrt(var + eps) + bias, over the last
                   axis                                      x, y: (..., d)
  batch_norm       the same over every axis but the last (training mode: the
                   batch's statistics; inference: running ones) x, y: (..., d)
  dropout          y = x * r / (1 - rate),  r ~ Bernoulli(1 - rate)  (identity
                   without a key)
  self_attention   per head h:  Q_h = x Wq_h + bq_h,  K_h = x Wk_h,
                   V_h = x Wv_h + bv_h,
                   O_h = softmax(Q_h K_h^T / sqrt(d_head)) V_h,
                   y = sum_h O_h Wo_h + bo               x, y: (..., T, d_model)
                   (causal: key s > query q masked out of the softmax)
  embed            y = E[ids]                            ids: (...) ints,  E: (n, d)
  sinusoidal       PE[t, 2i] = sin(t / 10000^(2i/d)),  PE[t, 2i+1] = cos(same)
                                                       PE: (length, d)

Spatial output sizes (per axis, input ``n``, kernel or window ``k``, stride
``s``) follow XLA: ``"SAME"`` gives ``ceil(n / s)`` with the padding split
low ``total // 2`` / high the rest, ``total = max((out - 1) s + k - n, 0)``;
``"VALID"`` gives ``floor((n - k) / s) + 1``. See :func:`out_size`.

One module per family: ``dense``, ``conv``, ``pool``, ``norm``, ``batchnorm``,
``dropout``, ``attention``, ``embed``; ``checks`` holds the builders'
shared checks of hyperparameters (``require_*``), each raising a one-line
``ConfigError``. Every name is re-exported here (``layers.conv``).
"""

from funcnet.layers.attention import (attention_init, attention_weights,
                                      self_attention, self_attention_backward,
                                      self_attention_forward,
                                      self_attention_step)
from funcnet.layers.batchnorm import (batch_norm, batch_norm_backward,
                                      batch_norm_forward, batch_norm_inference,
                                      batch_norm_init, batch_norm_stats_init,
                                      batch_norm_update, batch_stats)
from funcnet.layers.checks import (hidden_activation, per_axis, require_choice,
                                   require_positive, require_positive_number,
                                   require_rate, require_sizes)
from funcnet.layers.conv import (PADDINGS, conv, conv_backward, conv_forward,
                                 conv_init, out_size, pads)
from funcnet.layers.dense import (activation_backward, activation_forward,
                                  dense, dense_backward, dense_forward,
                                  dense_init)
from funcnet.layers.dropout import (dropout, dropout_backward, dropout_forward,
                                    dropout_masks, keep_mask)
from funcnet.layers.embed import (embed, embed_backward, embed_forward,
                                  embedding_init, sinusoidal)
from funcnet.layers.norm import (layer_norm, layer_norm_backward,
                                 layer_norm_forward, layer_norm_init)
from funcnet.layers.pool import (avg_pool, avg_pool_backward,
                                 avg_pool_forward, global_avg_pool,
                                 global_avg_pool_backward,
                                 global_avg_pool_forward, global_max_pool,
                                 global_max_pool_backward,
                                 global_max_pool_forward, max_pool,
                                 max_pool_backward, max_pool_forward)
