"""The progress bar draws on a terminal only."""

import io

from funcnet.run.progress import Progress


class _Tty(io.StringIO):
  def isatty(self):
    return True


def test_draws_on_a_terminal_and_not_elsewhere():
  record = {"epoch": 3, "train_loss": 0.25, "test_accuracy": 0.5}
  tty, pipe = _Tty(), io.StringIO()
  for stream in (tty, pipe):
    bar = Progress(3, 0, "auto", stream=stream)
    bar.update(record)
    bar.close()
  assert "epoch 3/3" in tty.getvalue() and "acc 0.500" in tty.getvalue()
  assert pipe.getvalue() == ""
  forced = io.StringIO()
  bar = Progress(3, 0, "always", stream=forced)
  bar.update(record)
  assert "[##############################]" in forced.getvalue()
  silent = _Tty()
  Progress(3, 0, "never", stream=silent).update(record)
  assert silent.getvalue() == ""
