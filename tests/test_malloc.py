"""funcnet.run.malloc: glibc keeps a step's freed scratch memory for the
next one instead of mapping, and faulting in, new pages each time."""

import os
import subprocess
import sys

import pytest

from funcnet.run import malloc

# Allocates and frees 40 MiB (above the 32 MiB glibc raises its threshold
# to by itself) six times, and prints the page faults of the last five.
CYCLES = """
import resource, sys
import numpy as np
if sys.argv[1] == "tune":
  from funcnet.run import malloc
  print(malloc.tune(), end=" ")
def cycle():
  a = np.ones(5 << 20)
  del a
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
  cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

# The same on a thread, as XLA:CPU allocates a program's temporaries, with
# blocks of 96 MiB: above the 64 MiB a thread's own arena can hold, so
# glibc maps each anew unless every thread shares the main heap.
THREAD_CYCLES = """
import resource, sys, threading
import numpy as np
if sys.argv[1].startswith("tune"):
  from funcnet.run import malloc
  print(malloc.tune(one_arena=sys.argv[1] == "tune-one-arena"), end=" ")
out = []
def cycle():
  a = np.ones(12 << 20)
  del a
def work():
  cycle()
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(5):
    cycle()
  out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
t = threading.Thread(target=work)
t.start()
t.join()
print(out[0])
"""

glibc = pytest.mark.skipif(not malloc._glibc(), reason="glibc's mallopt only")


def _faults(mode, code=CYCLES, **env):
  env = {**{k: v for k, v in os.environ.items()
            if k not in malloc._USERS + (malloc.ENV,)}, **env}
  out = subprocess.run([sys.executable, "-c", code, mode], env=env,
                       capture_output=True, text=True, check=True).stdout
  return out.split()


@glibc
def test_tuned_a_freed_block_is_reused_without_page_faults():
  # each fresh 40 MiB block is faulted in again under glibc's own policy
  assert int(_faults("default")[-1]) > 1000
  assert _faults("tune") == ["True", "0"]


@glibc
def test_with_one_arena_a_block_freed_on_another_thread_is_reused_too():
  # mapped anew each time (4 KiB pages, or 2 MiB ones where the kernel
  # backs the mapping with transparent huge pages: 48 faults a block),
  # under glibc's policy and under the thresholds alone
  assert int(_faults("default", THREAD_CYCLES)[-1]) >= 5 * 40
  told, faults = _faults("tune", THREAD_CYCLES)
  assert told == "True" and int(faults) >= 5 * 40
  assert _faults("tune-one-arena", THREAD_CYCLES) == ["True", "0"]


@glibc
def test_the_users_own_malloc_settings_or_default_leave_glibc_alone():
  for env in ({"FUNCNET_MALLOC": "default"},
              {"MALLOC_TRIM_THRESHOLD_": "131072"},
              {"MALLOC_ARENA_MAX": "4"}):
    told, faults = _faults("tune", **env)
    assert told == "False" and int(faults) > 1000


def test_the_command_tunes_before_anything_runs(monkeypatch):
  from funcnet import cli
  called = []
  monkeypatch.setattr(malloc, "tune", lambda: called.append(1) or True)
  with pytest.raises(SystemExit):  # argparse's --help
    cli.main(["--help"])
  assert called == [1]


def test_the_step_benchmarks_alone_ask_for_one_arena(monkeypatch):
  from funcnet import cli
  from funcnet.bench import lm_step, model_steps
  asked = []
  monkeypatch.setattr(malloc, "tune", lambda one_arena=False:
                      asked.append(one_arena) or True)
  monkeypatch.setattr(model_steps, "run", lambda *a, **k: [])
  monkeypatch.setattr(model_steps, "format_table", lambda r: "")
  monkeypatch.setattr(lm_step, "run", lambda *a, **k: {})
  assert cli.main(["bench", "models", "--no-peers"]) == 0
  assert cli.main(["bench", "gpt"]) == 0
  assert asked == [False, True, False, True]
  asked.clear()
  with pytest.raises(SystemExit):
    cli.main(["train", "--help"])
  assert asked == [False]
