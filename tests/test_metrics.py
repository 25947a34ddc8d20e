"""The report definitions: compression ratio, bits, accuracy loss."""

import numpy as np
import pytest

from stae_jax.evaluation import metrics


def test_compression_ratio_divides_raw_uint8_bytes_by_bitstream_bytes():
  assert metrics.raw_clip_bytes((16, 112, 112, 3)) == 602_112
  assert metrics.compression_ratio((16, 112, 112, 3), 9408) == pytest.approx(64.0)
  assert metrics.compression_ratio(np.zeros((2, 4, 6, 3)).shape, 12) == pytest.approx(12.0)
  with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
    metrics.compression_ratio((16, 112, 112), 100)
  with pytest.raises(ValueError, match="positive, finite byte count"):
    metrics.compression_ratio((16, 112, 112, 3), 0)


def test_bits_per_clip_and_per_pixel():
  assert metrics.bits_per_clip(1000) == 8000
  # 16x112x112 pixels = 200704; 9408 bytes = 75264 bits -> 0.375 bit per pixel.
  assert metrics.bits_per_pixel((16, 112, 112, 3), 9408) == pytest.approx(0.375)
  with pytest.raises(ValueError):
    metrics.bits_per_clip(-1)


def test_accuracy_loss_is_in_points():
  assert metrics.accuracy_loss_points(0.72, 0.67) == pytest.approx(5.0)
  assert metrics.accuracy_loss_points(0.5, 0.6) == pytest.approx(-10.0)  # A gain is negative loss.
  with pytest.raises(ValueError, match="fraction"):
    metrics.accuracy_loss_points(72.0, 67.0)
