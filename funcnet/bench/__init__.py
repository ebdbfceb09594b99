"""Benchmarks behind ``funcnet bench SUBCOMMAND``, one module each
(:mod:`funcnet.cli.bench` maps the subcommands onto them).

  step_time    one MLP training step against the machine's matmul peak
               (``bench steps``)
  model_steps  every config's model: manual vs autodiff steps per second
               (``bench models``)
  data_io      shards vs memory (``bench data shards DIR``), and a dataset
               larger than a memory cap (``bench data memory-cap MB``)
  sweep_speed  a vectorised sweep against its variants one at a time
               (``bench sweep``)
  startup      where the time to a first result goes, cold and warm
               (``bench startup``)

Speed is measured here, never in timed tests; docs/performance.md records
the numbers with the machine they were measured on.
"""
