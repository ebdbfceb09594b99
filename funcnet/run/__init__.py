"""One training run's infrastructure: everything around the training loop.

  rundir         the run folder: config.json, model.json, stats.npz,
                 metrics.jsonl, summary.json; the one-writer lock
  checkpoints    a train.TrainState as an orbax checkpoint, with a sha256
                 manifest per step, the newest-good fallback
  orbax_noise    what orbax and tensorstore print that a run cannot act on
  resume         which config keys a resume may change
  preemption     SIGTERM / SIGINT: say so, finish the epoch, save, exit 75 / 130
  preflight      whether a run fits in memory, from shapes alone
  progress       the progress line on a terminal
  tensorboard    TensorBoard event files (the [tensorboard] extra)
  plots          the run's PNGs; plot_process draws them in a second process
  compile_cache  JAX's persistent compilation cache
  compare        several runs side by side (funcnet compare)

The layers below it (models, layers, losses, optimizers, train, data)
import nothing from here (tests/test_architecture.py checks it).
"""
