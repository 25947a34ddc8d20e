"""The receiver's 3D-2D CNN: fills dropped frames and blocks of a received clip.

Input: the kept blocks (from the synthesis transform) in place in an otherwise empty clip, and a
mask channel that says which pixels were received. The decoder starts from `temporal_fill`, the
per-pixel linear interpolation in time of what was received (a dropped frame is, to first order,
its neighbours), and predicts a residual over it. Why 3D then 2D: a dropped frame or block is best
predicted from the same place in neighbouring frames, so the first stage is 3D convolutions over
(T, H, W) at a coarse grid (cheap, and a wide receptive field in time: each layer adds two
frames); the second stage is 2D convolutions per frame on cells of `cell` x `cell` pixels, fed with
the upsampled 3D features, the received pixels and the fill, to restore spatial detail. Received
pixels are passed through untouched, `out = mask * received + (1 - mask) * predicted`, so the
network only has to learn to fill holes and never degrades what was sent.

Computation runs in `dtype` (bfloat16 on accelerators); parameters and the output are float32.
"""

from __future__ import annotations

from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp

__all__ = ["Decoder", "SpaceTimeConv", "space_to_depth", "depth_to_space", "temporal_fill"]


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


def space_to_depth(x, cell: int):
  """[N,H,W,C] -> [N,H/cell,W/cell,cell*cell*C]: each cell x cell patch becomes one position."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // cell, cell, w // cell, cell, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h // cell, w // cell, cell * cell * c)


def depth_to_space(x, cell: int):
  """Inverse of `space_to_depth`: [N,h,w,cell*cell*C] -> [N,h*cell,w*cell,C]."""
  n, h, w, d = x.shape
  c = d // (cell * cell)
  x = x.reshape(n, h, w, cell, cell, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h * cell, w * cell, c)


def temporal_fill(values, mask):
  """Linear interpolation in time of what was received, per pixel: the decoder's starting guess.

  values [B,T,H,W,C], mask [B,T,H,W,1] in {0, 1} (float: a straight-through mask keeps its
  gradient). For every missing pixel, the nearest received value at the same place before and
  after it, weighted by distance (the earlier or the later one alone at the clip's ends); received
  pixels are their own fill. Returns (fill [B,T,H,W,C], known [B,T,H,W,1]): known is 0 where that
  place was received in no frame (fill is 0 there: mid-grey after normalisation).

  The interpolation weights are a fixed rule of the mask, so they take no gradient: through them
  the mask's derivative is a ratio over a vanishing denominator at received pixels (measured: 1e6
  within 10 steps, which global-norm clipping turned into no step at all for the other
  parameters). The mask still learns through the values it gates here, the decoder's mask input
  and the final composite.

  Why: a dropped frame is, to first order, its neighbours (no motion), and a dropped block of a
  kept frame is the same block in the nearest frame that kept it. Starting from that guess and
  learning a residual, a freshly initialised decoder already gives the classifier a clip it
  recognises, so training spends its few steps on corrections, not on learning to copy.
  """
  values = values.astype(jnp.float32)
  gate = mask.astype(jnp.float32)
  mask = jax.lax.stop_gradient(gate)

  def sweep(xs, ms):
    def step(carry, inputs):
      value, known, age = carry
      x, m = inputs
      value = m * x + (1.0 - m) * value
      known = m + (1.0 - m) * known
      age = (1.0 - m) * (age + 1.0)
      return (value, known, age), (value, known, age)
    init = (jnp.zeros_like(xs[0]), jnp.zeros_like(ms[0]), jnp.zeros_like(ms[0]))
    return jax.lax.scan(step, init, (xs, ms))[1]

  xs, ms = jnp.moveaxis(values, 1, 0), jnp.moveaxis(mask, 1, 0)
  v_f, k_f, a_f = sweep(xs, ms)
  v_b, k_b, a_b = (a[::-1] for a in sweep(xs[::-1], ms[::-1]))
  w_f = k_f * (k_b * a_b + (1.0 - k_b))  # both sides known: weight by the other side's distance
  w_b = k_b * (k_f * a_f + (1.0 - k_f))
  fill = (w_f * v_f + w_b * v_b) / jnp.maximum(w_f + w_b, 1.0)  # w_f + w_b >= 1 where known
  known = 1.0 - (1.0 - k_f) * (1.0 - k_b)
  fill, known = jnp.moveaxis(fill, 0, 1), jnp.moveaxis(known, 0, 1)
  return gate * values + (1.0 - gate) * fill, known


class Decoder(nnx.Module):
  """3D-2D CNN decoder. Built as `Decoder(**entry.model.decoder)`.

  Everything runs on cells of `cell` x `cell` pixels (space-to-depth): the received pixels and the
  mask of a cell are one input vector, and the output layer predicts a cell's pixels at once
  (depth-to-space). Why cells and not full-resolution convolutions: a few-channel convolution at
  full resolution is memory-bound (on two CPU cores the earlier full-resolution decoder, 8 channels
  wide, took 73% of a STAE training step for 0.42 GFLOPs per clip; BENCHMARKS.md "Models"), while
  cells give the same receptive field with 16x fewer positions and wide, matmul-shaped layers.
  Blocks are coded whole (p >= 8 >= cell), so a cell is always entirely received or entirely
  missing.
  """

  def __init__(self, *, width: int = 32, temporal_layers: int = 2, spatial_layers: int = 2,
               cell: int = 4, dtype: Any = jnp.float32, rngs: nnx.Rngs):
    if width < 1 or temporal_layers < 0 or spatial_layers < 1 or cell < 1:
      raise ValueError(f"decoder needs width >= 1, temporal_layers >= 0, spatial_layers >= 1, "
                       f"cell >= 1; got {width}, {temporal_layers}, {spatial_layers}, {cell}")
    self.dtype = dtype = jnp.dtype(dtype)
    self.cell = int(cell)
    w = int(width)
    # Per pixel of a cell: received RGB (normalised) and mask, temporal fill RGB and whether known.
    cell_features = 8 * self.cell * self.cell
    self.stem = nnx.Linear(cell_features, w, dtype=dtype, rngs=rngs)
    conv3 = dict(dtype=dtype, rngs=rngs)
    self.down = SpaceTimeConv(w, 2 * w, strides=2, **conv3)
    self.temporal = nnx.List([SpaceTimeConv(2 * w, 2 * w, **conv3) for _ in range(temporal_layers)])
    conv2 = dict(kernel_size=(3, 3), dtype=dtype, rngs=rngs)
    self.up = nnx.Conv(2 * w, w, **conv2)
    self.spatial = nnx.List([nnx.Conv(w + cell_features, w, **conv2)] +
                            [nnx.Conv(w, w, **conv2) for _ in range(spatial_layers - 1)])
    # Zero-initialised: the network predicts a residual over `temporal_fill`, so a fresh decoder
    # returns the temporal interpolation of what was received (mid-grey where nothing was), not
    # noise: a frozen classifier sees a plausible clip from the first step.
    self.out = nnx.Conv(w, 3 * self.cell * self.cell, kernel_init=nnx.initializers.zeros_init(),
                        **conv2)

  def __call__(self, received, mask):
    """received float 0..255 [B,T,H,W,3] (anything where mask is 0), mask [B,T,H,W,1] in {0, 1}
    -> clip float32 0..255 [B,T,H,W,3], equal to `received` wherever mask is 1."""
    received = jnp.asarray(received, jnp.float32)
    mask = jnp.asarray(mask, jnp.float32)
    if received.ndim != 5 or received.shape[-1] != 3 or mask.shape != received.shape[:-1] + (1,):
      raise ValueError(f"decoder expects received [B,T,H,W,3] and mask [B,T,H,W,1]; got "
                       f"{tuple(received.shape)} and {tuple(mask.shape)}")
    b, t, h, w, _ = received.shape
    unit = 2 * self.cell
    if h % unit or w % unit:
      raise ValueError(f"decoder needs H and W divisible by {unit} (cells of {self.cell} pixels, "
                       f"then one 2x downsampling), got {h}x{w}; change the resolution or "
                       "config.model.decoder.cell")
    # Missing pixels are 0 after normalisation (mid-grey), not -1 (black): the mask says "unknown".
    normalised = (received / 127.5 - 1.0) * mask
    fill, known = temporal_fill(normalised, mask)
    x = jnp.concatenate([normalised, mask, fill, known], axis=-1).astype(self.dtype)
    cells = space_to_depth(x.reshape(b * t, h, w, 8), self.cell)      # [BT,h',w',8c^2]
    hc, wc = cells.shape[1:3]
    feat = jax.nn.gelu(self.stem(cells)).reshape(b, t, hc, wc, -1)     # [B,T,h',w',w]
    coarse = jax.nn.gelu(self.down(feat))                              # [B,T,h'/2,w'/2,2w]
    for conv in self.temporal:
      coarse = coarse + jax.nn.gelu(conv(coarse))
    # Back to cell resolution per frame (nearest upsampling + 3x3 conv: no checkerboard).
    up = jnp.repeat(jnp.repeat(coarse, 2, axis=2), 2, axis=3).reshape(b * t, hc, wc, -1)
    y = feat.reshape(b * t, hc, wc, -1) + jax.nn.gelu(self.up(up))
    y = jnp.concatenate([y, cells], axis=-1)
    for conv in self.spatial:
      y = jax.nn.gelu(conv(y))
    residual = depth_to_space(self.out(y).astype(jnp.float32), self.cell).reshape(b, t, h, w, 3)
    predicted = jnp.clip((fill + residual + 1.0) * 127.5, 0.0, 255.0)
    return mask * received + (1.0 - mask) * predicted
