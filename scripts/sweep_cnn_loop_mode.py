"""The 16-variant MNIST-1D CNN sweep (3 epochs, no compile cache) with the
variant loop forced: ``vmap`` or ``map`` (argument), printing each epoch's
seconds, to compare the two layouts inside the real epoch program.

  PYTHONPATH=$PWD FUNCNET_COMPILATION_CACHE=off python scripts/sweep_cnn_loop_mode.py vmap
"""
import sys, time, os
from funcnet import config as config_lib, experiment, sweep
from funcnet.sweep import engine
from funcnet.bench import sweep_speed
mode = sys.argv[1]
engine.variant_loop = lambda *a, **k: mode
cfg = config_lib.load("configs/mnist1d_cnn.toml", ["train.epochs=3", "run.plots=false"])
grid = sweep_speed._grid(cfg, 16)
experiment.build_dataset(cfg)
t0 = time.perf_counter()
res = sweep.run(cfg, grid, log=lambda *a: None)
h = res.variants[0].history
print(mode, f"total {time.perf_counter()-t0:.1f} s; epoch times", [round(b["time"] - a["time"], 3) for a, b in zip(h, h[1:])], "first", round(h[0]["time"], 2), os.getloadavg())
