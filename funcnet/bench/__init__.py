"""Benchmarks behind ``funcnet bench``, one module each.

  step_time    one MLP training step against the machine's matmul peak
  model_steps  every config's model: manual vs autodiff steps per second
  data_io      shards vs memory, and a dataset larger than a memory cap
  sweep_speed  a vectorised sweep against its variants one at a time
  startup      where the time to a first result goes (cold and warm)

Speed is measured here, never in timed tests; docs/performance.md records
the numbers with the machine they were measured on.
"""
