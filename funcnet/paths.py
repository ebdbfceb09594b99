"""Where funcnet keeps files between runs: one cache root.

  cache_root()   $FUNCNET_CACHE, else $XDG_CACHE_HOME/funcnet, else
                 ~/.cache/funcnet (not created here)

What lives under it: MNIST-1D's ``.npz`` (:mod:`funcnet.data.bundled`)
and JAX's compiled programs in ``xla/`` (:mod:`funcnet.run.compile_cache`). Both
ask this module, so neither reaches into the other for the folder.
"""

import os


def cache_root() -> str:
  """funcnet's cache folder (not created here).

  ``$FUNCNET_CACHE`` if set, else ``$XDG_CACHE_HOME/funcnet``, else
  ``~/.cache/funcnet``.
  """
  if os.environ.get("FUNCNET_CACHE"):
    return os.environ["FUNCNET_CACHE"]
  if os.environ.get("XDG_CACHE_HOME"):
    return os.path.join(os.environ["XDG_CACHE_HOME"], "funcnet")
  return os.path.join(os.path.expanduser("~"), ".cache", "funcnet")
