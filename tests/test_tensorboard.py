"""TensorBoard event files, read back by a hand-written TFRecord reader."""

import importlib
import math
import struct
import sys

import pytest
from tensorboardX.proto import event_pb2  # in the test extra

import funcnet
from funcnet.errors import ConfigError
from funcnet.run.tensorboard import open_writer

NAN, INF = float("nan"), float("inf")

RECORDS = [
    {"epoch": 1, "step": 45, "train_loss": 0.9,
     "grad_norms": {"layer 1": 0.2, "layer 2": 0.1}, "param_norm": 12.3,
     "update_norm": 0.01, "lr": 0.001, "time": 1.2, "test_loss": 0.5,
     "test_accuracy": 0.9},
    # No test keys, no update_norm, an infinite group norm.
    {"epoch": 2, "step": 90, "train_loss": 0.6,
     "grad_norms": {"conv": 0.3, "head": INF}, "param_norm": 12.5,
     "lr": 0.0005, "time": 2.4},
    # Diverged: train_loss and one group norm are NaN.
    {"epoch": 3, "step": 135, "train_loss": NAN,
     "grad_norms": {"blocks": NAN, "head": 0.4}, "param_norm": 12.6,
     "time": 3.6, "test_loss": 0.7, "test_rmse": 0.3, "test_mae": 0.2},
]

# Written out by hand from RECORDS, not computed by funcnet.run.tensorboard.
EXPECTED = {
    ("epoch", 45): 1, ("loss/train", 45): 0.9,
    ("grad_norm/layer_1", 45): 0.2, ("grad_norm/layer_2", 45): 0.1,
    ("param_norm", 45): 12.3, ("update_norm", 45): 0.01, ("lr", 45): 0.001,
    ("loss/test", 45): 0.5, ("test/accuracy", 45): 0.9,
    ("epoch", 90): 2, ("loss/train", 90): 0.6, ("grad_norm/conv", 90): 0.3,
    ("param_norm", 90): 12.5, ("lr", 90): 0.0005,
    ("epoch", 135): 3, ("grad_norm/head", 135): 0.4, ("param_norm", 135): 12.6,
    ("loss/test", 135): 0.7, ("test/rmse", 135): 0.3, ("test/mae", 135): 0.2,
}


def _crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc ^= byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  """TFRecord's masked CRC: rotate right by 15 bits, add 0xa282ead8."""
  crc = _crc32c(data)
  return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _read_events(path):
  """The ``Event`` protos of a TFRecord file, with both CRCs checked."""
  buf, pos, events = path.read_bytes(), 0, []
  while pos < len(buf):
    header = buf[pos:pos + 8]
    (length,) = struct.unpack("<Q", header)
    (length_crc,) = struct.unpack("<I", buf[pos + 8:pos + 12])
    data = buf[pos + 12:pos + 12 + length]
    (data_crc,) = struct.unpack("<I", buf[pos + 12 + length:pos + 16 + length])
    assert length_crc == _masked_crc(header) and data_crc == _masked_crc(data)
    events.append(event_pb2.Event.FromString(data))
    pos += 16 + length
  assert pos == len(buf)  # no trailing partial record
  return events


def test_scalars_round_trip_through_the_event_file(tmp_path):
  with open_writer(tmp_path) as writer:
    for record in RECORDS:
      writer.write(record)
  (path,) = tmp_path.glob("events.out.tfevents.*")
  triples = [(v.tag, e.step, v.simple_value)
             for e in _read_events(path) for v in e.summary.value]
  written = [(tag, step) for tag, step, _ in triples]
  assert len(written) == len(set(written))  # each scalar written once
  assert set(written) == set(EXPECTED)
  for tag, step, value in triples:
    assert value == pytest.approx(EXPECTED[tag, step], rel=1e-6), (tag, step)
  assert all(math.isfinite(value) for _, _, value in triples)
  assert ("loss/train", 135) not in written and ("grad_norm/head", 90) not in written
  assert not any(tag in ("time", "step") for tag, _ in written)


def test_missing_extra_is_a_one_line_config_error(tmp_path, monkeypatch):
  # None in sys.modules makes ``import tensorboardX`` raise ImportError. The
  # module is imported afresh meanwhile, which also checks that importing it
  # does not need tensorboardX.
  monkeypatch.setitem(sys.modules, "tensorboardX", None)
  monkeypatch.delitem(sys.modules, "funcnet.run.tensorboard")
  monkeypatch.delattr(funcnet, "tensorboard", raising=False)
  fresh = importlib.import_module("funcnet.run.tensorboard")
  with pytest.raises(ConfigError) as info:
    fresh.open_writer(tmp_path)
  message = str(info.value)
  assert 'pip install -e ".[tensorboard]"' in message and "\n" not in message
  assert info.value.exit_code == 2
  assert list(tmp_path.iterdir()) == []
