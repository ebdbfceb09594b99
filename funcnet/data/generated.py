"""Generated datasets: XOR, two spirals, two moons, a sine regression, and
low-rank ratings. Each is drawn from ``np.random.default_rng(seed)`` only
(``xor`` draws nothing), and its docstring gives the generating formula.
"""

import numpy as np

from funcnet.data import registry
from funcnet.data.dataset import Dataset, _split
from funcnet.errors import ConfigError


def _check_count(name, key, value, least=1):
  if not isinstance(value, (int, np.integer)) or value < least:
    raise ConfigError(f"dataset {name!r}: {key}={value!r}; expected an "
                      f"integer >= {least}")


# --- classification and regression sets --------------------------------------

def xor() -> Dataset:
  """The four XOR points; the test set is the training set.

  x ``(4, 2)`` float32 corners of the unit square, y ``(4,)`` int32 with
  ``y = x1 xor x2``. No line separates the classes, which is why one hidden
  layer is needed.
  """
  x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
  y = np.array([0, 1, 1, 0], np.int32)
  return Dataset(x, y, x.copy(), y.copy(), "classification", 2, "xor", {})


def spirals(n: int = 1000, noise: float = 0.05, turns: float = 1.5,
            test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """Two interleaved spirals, one class each.

  For class ``c`` in {0, 1} and ``t ~ U(0, 1)``:
  ``r = 0.1 + 0.9 t``, ``theta = 2 pi turns t + c pi``,
  ``x = r (cos theta, sin theta) + noise * N(0, I)``.
  The two arms lie ``0.9 / (2 turns)`` apart radially (0.3 by default).

  Returns x ``(m, 2)`` float32 and y ``(m,)`` int32, ``n`` points in all
  (``n // 2`` in class 0), split stratified with ``test_fraction`` to test.
  """
  _check_count("spirals", "n", n, 4)
  rng = np.random.default_rng(seed)
  c = (np.arange(n) >= n // 2).astype(np.int32)
  t = rng.uniform(0, 1, n)
  r = 0.1 + 0.9 * t
  theta = 2 * np.pi * turns * t + c * np.pi
  x = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
  x = x + noise * rng.standard_normal((n, 2))
  return _split("spirals", x.astype(np.float32), c, "classification", 2,
                {"noise": noise, "turns": turns}, test_fraction, rng)


def moons(n: int = 1000, noise: float = 0.1, test_fraction: float = 0.2,
          seed: int = 0) -> Dataset:
  """Two interleaving half circles (scikit-learn's ``make_moons`` shape).

  For ``theta ~ U(0, pi)``: class 0 is ``(cos theta, sin theta)``, class 1 is
  ``(1 - cos theta, 0.5 - sin theta)``, each plus ``noise * N(0, I)``.

  Returns x ``(m, 2)`` float32 and y ``(m,)`` int32, ``n`` points in all,
  split stratified with ``test_fraction`` to test.
  """
  _check_count("moons", "n", n, 4)
  rng = np.random.default_rng(seed)
  c = (np.arange(n) >= n // 2).astype(np.int32)
  theta = rng.uniform(0, np.pi, n)
  x = np.where(c[:, None] == 0,
               np.stack([np.cos(theta), np.sin(theta)], axis=1),
               np.stack([1 - np.cos(theta), 0.5 - np.sin(theta)], axis=1))
  x = x + noise * rng.standard_normal((n, 2))
  return _split("moons", x.astype(np.float32), c, "classification", 2,
                {"noise": noise}, test_fraction, rng)


def regression(n: int = 1000, n_features: int = 2, noise: float = 0.1,
               test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """A smooth nonlinear regression set, ``y = sin(x . w) + noise * eps``.

  ``x ~ N(0, I)`` of shape ``(n, n_features)``; ``w`` is a random direction of
  length 2, so ``x . w ~ N(0, 4)`` spans a few periods of the sine;
  ``eps ~ N(0, 1)``. Targets are ``(m, 1)`` float32.

  ``info["noise_std"]`` is ``noise``, the test RMSE of the true function
  (up to sampling error); ``info["w"]`` is ``w``.
  """
  _check_count("regression", "n", n, 2)
  _check_count("regression", "n_features", n_features)
  rng = np.random.default_rng(seed)
  w = rng.standard_normal(n_features)
  w *= 2 / np.linalg.norm(w)
  x = rng.standard_normal((n, n_features))
  y = np.sin(x @ w)[:, None] + noise * rng.standard_normal((n, 1))
  return _split("regression", x.astype(np.float32), y.astype(np.float32),
                "regression", None, {"noise_std": noise, "w": w},
                test_fraction, rng)


# --- ratings for recommenders -------------------------------------------------

def ratings(n_users: int = 500, n_items: int = 300, rank: int = 5,
            density: float = 0.1, noise_std: float = 0.5, mean: float = 3.5,
            test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """Ratings of known low-rank structure plus Gaussian noise.

  ``r_ui = mu + b_u + b_i + p_u . q_i + eps``, with ``mu = mean``,
  ``b_u, b_i ~ N(0, 0.3^2)``, ``p_u, q_i ~ N(0, rank^(-1/2) I_rank)`` (so
  ``p_u . q_i`` has variance 1) and ``eps ~ N(0, noise_std^2)``. Ratings are
  not rounded or clipped, which would break the noise floor below.

  ``round(density * n_users * n_items)`` distinct (user, item) pairs are
  observed, chosen uniformly; ``test_fraction`` of them, chosen at random,
  are held out. x ``(m, 2)`` int32 ``(user, item)``, y ``(m,)`` float32.

  ``info`` holds ``n_users``, ``n_items``, ``rank``, ``noise_std`` (the test
  RMSE a perfect model reaches, up to sampling error) and ``true``: the
  generating ``mu``, ``b_user (n_users,)``, ``b_item (n_items,)``,
  ``p (n_users, rank)`` and ``q (n_items, rank)``.
  """
  _check_count("ratings", "n_users", n_users)
  _check_count("ratings", "n_items", n_items)
  _check_count("ratings", "rank", rank)
  if not 0 < density <= 1:
    raise ConfigError(f"dataset 'ratings': density={density!r}; expected a "
                      f"number in (0, 1]")
  n_obs = round(density * n_users * n_items)
  if n_obs < 2:
    raise ConfigError(
        f"dataset 'ratings': density={density!r} observes {n_obs} of "
        f"{n_users} x {n_items} pairs; expected at least 2")
  rng = np.random.default_rng(seed)
  true = {"mu": float(mean),
          "b_user": 0.3 * rng.standard_normal(n_users),
          "b_item": 0.3 * rng.standard_normal(n_items),
          "p": rng.standard_normal((n_users, rank)) * rank ** -0.25,
          "q": rng.standard_normal((n_items, rank)) * rank ** -0.25}
  pairs = rng.choice(n_users * n_items, size=n_obs, replace=False)
  u, i = np.divmod(pairs, n_items)
  r = (true["mu"] + true["b_user"][u] + true["b_item"][i]
       + np.sum(true["p"][u] * true["q"][i], axis=1)
       + noise_std * rng.standard_normal(n_obs))
  x = np.stack([u, i], axis=1).astype(np.int32)
  info = {"n_users": n_users, "n_items": n_items, "rank": rank,
          "noise_std": noise_std, "true": true}
  return _split("ratings", x, r.astype(np.float32), "ratings", None, info,
                test_fraction, rng)


registry.register(registry.Source(
    "xor", xor, "classification", "the 4 XOR points, train = test"))
registry.register(registry.Source(
    "spirals", spirals, "classification", "two interleaved spirals, 2 classes"))
registry.register(registry.Source(
    "moons", moons, "classification",
    "two interleaving half circles, 2 classes"))
registry.register(registry.Source(
    "regression", regression, "regression",
    "y = sin(x . w) + noise, targets (m, 1)"))
registry.register(registry.Source(
    "ratings", ratings, "ratings",
    "low-rank ratings plus Gaussian noise, for recommenders"))
