"""The receiver's 3D-2D CNN: fills dropped frames and blocks of a received clip.

Input: the kept blocks (from the synthesis transform) in place in an otherwise empty clip, and a
mask channel that says which pixels were received. Why 3D then 2D: a dropped frame or block is best
predicted from the same place in neighbouring frames, so the first stage is 3D convolutions over
(T, H, W) at quarter resolution (cheap, and a wide receptive field in time: each layer adds two
frames); the second stage is 2D convolutions per frame at full resolution, fed with the upsampled
3D features and the received pixels, to restore sharp spatial detail. Received pixels are passed
through untouched, `out = mask * received + (1 - mask) * predicted`, so the network only has to
learn to fill holes and never degrades what was sent.

Computation runs in `dtype` (bfloat16 on accelerators); parameters and the output are float32.
"""

from __future__ import annotations

from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp

__all__ = ["Decoder", "SpaceTimeConv"]


class SpaceTimeConv(nnx.Module):
  """A 3D convolution over (T, H, W) computed as one 2D convolution over time-stacked frames.

  Each output frame t sees frames t-k//2 .. t+k//2 (zeros beyond the clip), stacked along channels,
  so the kernel is [kh, kw, k*C_in, C_out]: mathematically a 3D convolution with "SAME" padding in
  time. Why not `nnx.Conv` with a 3D kernel: XLA's CPU backend runs 3D convolutions ~10x slower
  than 2D ones (measured: 14 GFLOP/s, which made the decoder 20x slower than the whole ViT on the
  synthetic config; BENCHMARKS.md "Models"); on accelerators the two forms cost the same.
  """

  def __init__(self, in_features: int, out_features: int, *, temporal_kernel: int = 3,
               spatial_kernel: int = 3, strides: int = 1, dtype: Any = jnp.float32,
               rngs: nnx.Rngs):
    if temporal_kernel % 2 != 1:
      raise ValueError(f"temporal_kernel must be odd (centred in time), got {temporal_kernel}")
    self.temporal_kernel = int(temporal_kernel)
    self.conv = nnx.Conv(self.temporal_kernel * in_features, out_features,
                         (spatial_kernel, spatial_kernel), strides=strides, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    """x [B,T,H,W,C] -> [B,T,H',W',C_out]."""
    b, t = x.shape[:2]
    half = self.temporal_kernel // 2
    padded = jnp.pad(x, ((0, 0), (half, half), (0, 0), (0, 0), (0, 0)))
    stacked = jnp.concatenate([padded[:, i:i + t] for i in range(self.temporal_kernel)], axis=-1)
    y = self.conv(stacked.reshape(b * t, *stacked.shape[2:]))
    return y.reshape(b, t, *y.shape[1:])


class Decoder(nnx.Module):
  """3D-2D CNN decoder. Built from `config.model.decoder` (see `from_config`)."""

  def __init__(self, *, width: int = 32, temporal_layers: int = 2, spatial_layers: int = 2,
               dtype: Any = jnp.float32, rngs: nnx.Rngs):
    if width < 1 or temporal_layers < 0 or spatial_layers < 1:
      raise ValueError(f"decoder needs width >= 1, temporal_layers >= 0, spatial_layers >= 1; got "
                       f"{width}, {temporal_layers}, {spatial_layers}")
    self.dtype = dtype
    w = int(width)
    conv3 = dict(dtype=dtype, rngs=rngs)
    self.down_1 = SpaceTimeConv(4, w, strides=2, **conv3)
    self.down_2 = SpaceTimeConv(w, 2 * w, strides=2, **conv3)
    self.temporal = nnx.List([SpaceTimeConv(2 * w, 2 * w, **conv3) for _ in range(temporal_layers)])
    conv2 = dict(kernel_size=(3, 3), dtype=dtype, rngs=rngs)
    self.up_2 = nnx.Conv(2 * w, w, **conv2)
    self.up_1 = nnx.Conv(w, w, **conv2)
    self.spatial = nnx.List([nnx.Conv(w + 4, w, **conv2)] +
                            [nnx.Conv(w, w, **conv2) for _ in range(spatial_layers - 1)])
    self.out = nnx.Conv(w, 3, **conv2)

  @classmethod
  def from_config(cls, decoder_config, *, rngs: nnx.Rngs) -> "Decoder":
    c = decoder_config
    return cls(width=c.width, temporal_layers=c.temporal_layers, spatial_layers=c.spatial_layers,
               dtype=jnp.dtype(c.dtype), rngs=rngs)

  def __call__(self, received, mask):
    """received float 0..255 [B,T,H,W,3] (anything where mask is 0), mask [B,T,H,W,1] in {0, 1}
    -> clip float32 0..255 [B,T,H,W,3], equal to `received` wherever mask is 1."""
    received = jnp.asarray(received, jnp.float32)
    mask = jnp.asarray(mask, jnp.float32)
    if received.ndim != 5 or received.shape[-1] != 3 or mask.shape != received.shape[:-1] + (1,):
      raise ValueError(f"decoder expects received [B,T,H,W,3] and mask [B,T,H,W,1]; got "
                       f"{tuple(received.shape)} and {tuple(mask.shape)}")
    b, t, h, w, _ = received.shape
    if h % 4 or w % 4:
      raise ValueError(f"decoder needs H and W divisible by 4 (two 2x downsamplings), got {h}x{w}")
    # Missing pixels are 0 after normalisation (mid-grey), not -1 (black): the mask says "unknown".
    x = jnp.concatenate([(received / 127.5 - 1.0) * mask, mask], axis=-1).astype(self.dtype)
    half = jax.nn.gelu(self.down_1(x))             # [B,T,H/2,W/2,w]
    quarter = jax.nn.gelu(self.down_2(half))       # [B,T,H/4,W/4,2w]
    for conv in self.temporal:
      quarter = quarter + jax.nn.gelu(conv(quarter))
    # Back to full resolution per frame (nearest upsampling + 3x3 conv: no checkerboard).
    up = jnp.repeat(jnp.repeat(quarter, 2, axis=2), 2, axis=3).reshape(b * t, h // 2, w // 2, -1)
    half = half.reshape(b * t, h // 2, w // 2, -1) + jax.nn.gelu(self.up_2(up))
    up = jax.nn.gelu(self.up_1(jnp.repeat(jnp.repeat(half, 2, axis=1), 2, axis=2)))  # [BT,H,W,w]
    y = jnp.concatenate([up, x.reshape(b * t, h, w, -1)], axis=-1)
    for conv in self.spatial:
      y = jax.nn.gelu(conv(y))
    predicted = (self.out(y).astype(jnp.float32).reshape(b, t, h, w, 3) + 1.0) * 127.5
    predicted = jnp.clip(predicted, 0.0, 255.0)
    return mask * received + (1.0 - mask) * predicted
