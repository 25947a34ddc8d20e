"""Motion inputs for the classifier: what moved between frames, and which way, at every pixel.

`VideoViT(inputs="motion")` feeds its tubelet embedding these channels instead of the clip alone.
Why: a tubelet embedding is linear in its pixels, and a linear map of a patch cannot say which way a
small object moved wherever it sits in that patch; a from-scratch ViT on two CPU cores learnt the
sense of motion only slowly from pixels (BENCHMARKS.md, "Classifier controls" and "Motion probes").
Two-stream action recognisers give the network optical flow beside the frames for this reason
(Simonyan and Zisserman 2014); here a cheap, differentiable stand-in is computed in the graph from
the (decoded) clip, so a compressed clip is scored by what survives of its motion.

From the normalised clip x [B, T, H, W, 3] (all differences central; borders repeat the edge value,
so no wrap-around at the frame's edges and the first/last frame take a one-sided half step):

  d  = (x[t+1] - x[t-1]) / 2                      temporal derivative, per colour channel
  gx, gy                                          spatial derivatives, per colour channel
  px = box(sum_c d * gx), py = box(sum_c d * gy)  brightness-constancy products (3x3 mean)
  e  = box(sum_c gx^2 + gy^2)
  u, v = clip(-(px, py) / (e + 0.01), +-3)        normal flow: the motion along the gradient,
                                                  in pixels per frame (I_t = -v . grad I)
  curl, div of box(box(u, v)) at a 3-pixel        rotation and expansion of the motion field
    spacing
  aniso = box(u^2 - v^2)                          horizontal against vertical motion energy

Channels, in order (MOTION_CHANNELS = 26): x (3), 4 d (3), then tanh of 3 px, 3 py, 2 u, 2 v,
12 curl, 12 div, 4 aniso; then the fine curl (1), colour-gated curls fine curl * x (3) and
curl * x (3), and colour-opponent gated fine curls fine curl * relu(c - 1) for c in (chroma,
-chroma) (6), chroma = x - its mean over the 3 channels. The gains bring each field to a
standard deviation of about 0.5-0.8 before the tanh on synthetic_actions training clips, and tanh
bounds the heavy tails of the products. Curl and
divergence are taken of the normal flow rather than of the products: on the actor's pixels the
clockwise/anticlockwise means were about 2 standard deviations apart that way and 1.4 from the
products (BENCHMARKS.md, the probes).

With `pool` > 1 every field is computed on the clip average-pooled `pool` x `pool` (4x cheaper),
except the fine curl: tanh(12 curl) of the full-resolution flow, then pooled, which separates
rotations better (d' 3.0-3.9 against 2.0-2.6 on the actor's pixels). Why the gated curls: a
rotation's curl lives on a few actor pixels, and summed over a whole frame it drowns in the curl
noise of the panning texture and the drifting distractors' edges (clockwise against anticlockwise
at d' 0.3 over the frame); weighted by the pixel's colour, the sum over a patch (what a tubelet
embedding computes) reads the curl of what has a given colour (d' 1.1 for the actor's colour
contrast, 1.6 rectified: BENCHMARKS.md "Motion probes, third round"). The colour gate still lets
the grey-ish texture's curl through (its normalised channels are far from 0); how far one channel
stands out of the pixel's channel mean, rectified past 1, shuts it out: one gate per
colour-opponent direction, none tied to a class's colour (d' 4 for the rotation pair's, against
1.5 for the plain colour gate; "Motion probes, fourth round").
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

MOTION_CHANNELS = 26
#: Colour-opponent gates of the fine curl: relu(+-chroma - OPPONENT_THRESHOLD) (module docstring).
OPPONENT_THRESHOLD = 1.0
#: tanh gains of px/py, u/v, curl/div and aniso (module docstring).
PRODUCT_GAIN, FLOW_GAIN, FIELD_GAIN, ANISOTROPY_GAIN = 3.0, 2.0, 12.0, 4.0
DIFFERENCE_SCALE = 4.0


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _shift(a: jax.Array, offset: int, axis: int) -> jax.Array:
  """b[i] = a[clip(i + offset)] along `axis`: a shift whose borders repeat the edge value
  (slices and a broadcast edge, no gather: XLA:CPU's gathers cost ~10x more here).

  Its gradient is `_shift_backward`, the adjoint written as one concatenation: XLA's own
  transpose of the slices and the concatenation is a zero-padded full-size array per shift, and
  the motion features' gradient took 1.3-1.6 s of a 3.3-3.9 s STAE training step on two cores
  (0.7 s now: BENCHMARKS.md "Where a codec step's time goes"). Each shift's gradient is autodiff's
  to the bit; composed, the motion features' gradient differs from autodiff's in rounding only
  (its cotangents are summed in another order)."""
  return _shift_forward(a, offset, axis)


def _shift_forward(a: jax.Array, offset: int, axis: int) -> jax.Array:
  if offset == 0:
    return a
  n, k = a.shape[axis], abs(offset)
  take = lambda start, stop: jax.lax.slice_in_dim(a, start, stop, axis=axis)
  if offset > 0:
    edge = jnp.repeat(take(n - 1, n), k, axis=axis)
    return jnp.concatenate([take(k, n), edge], axis=axis)
  edge = jnp.repeat(take(0, 1), k, axis=axis)
  return jnp.concatenate([edge, take(0, n - k)], axis=axis)


def _shift_backward(offset: int, axis: int, _, g: jax.Array) -> tuple[jax.Array]:
  """The adjoint of `_shift`: each output's cotangent goes back to the input it copied; the
  edge input, copied k + 1 times, takes the sum of theirs."""
  if offset == 0:
    return (g,)
  n, k = g.shape[axis], abs(offset)
  take = lambda start, stop: jax.lax.slice_in_dim(g, start, stop, axis=axis)
  if k >= n:  # every output copies the edge
    edge, zeros = jnp.sum(g, axis=axis, keepdims=True), jnp.zeros_like(take(0, n - 1))
    return (jnp.concatenate([zeros, edge] if offset > 0 else [edge, zeros], axis=axis),)
  zeros = jnp.zeros_like(take(0, k))
  if offset > 0:  # b[i] = a[min(i + k, n - 1)]
    edge = jnp.sum(take(n - k, n), axis=axis, keepdims=True)
    return (jnp.concatenate([zeros, take(0, n - k - 1), take(n - k - 1, n - k) + edge],
                            axis=axis),)
  edge = jnp.sum(take(0, k), axis=axis, keepdims=True)  # b[i] = a[max(i - k, 0)]
  return (jnp.concatenate([take(k, k + 1) + edge, take(k + 1, n), zeros], axis=axis),)


_shift.defvjp(lambda a, offset, axis: (_shift_forward(a, offset, axis), None), _shift_backward)


def _central(a: jax.Array, axis: int, spacing: int = 1) -> jax.Array:
  return (_shift(a, spacing, axis) - _shift(a, -spacing, axis)) / (2.0 * spacing)


def _box3(a: jax.Array) -> jax.Array:
  """3x3 mean over the (height, width) axes 2 and 3, separable."""
  a = (_shift(a, -1, 2) + a + _shift(a, 1, 2)) / 3.0
  return (_shift(a, -1, 3) + a + _shift(a, 1, 3)) / 3.0


def _normal_flow(x: jax.Array):
  """(d, px, py, u, v) of a normalised clip [B, T, H, W, 3] (module docstring)."""
  d = _central(x, 1)
  gx, gy = _central(x, 3), _central(x, 2)
  px = _box3(jnp.sum(d * gx, axis=-1))
  py = _box3(jnp.sum(d * gy, axis=-1))
  energy = _box3(jnp.sum(gx * gx + gy * gy, axis=-1))
  u = jnp.clip(-px / (energy + 1e-2), -3.0, 3.0)
  v = jnp.clip(-py / (energy + 1e-2), -3.0, 3.0)
  return d, px, py, u, v


def _curl_div(u: jax.Array, v: jax.Array):
  """Curl and divergence of the twice box-smoothed flow, at a 3-pixel spacing."""
  su, sv = _box3(_box3(u)), _box3(_box3(v))
  curl = _central(sv, 3, 3) - _central(su, 2, 3)
  div = _central(su, 3, 3) + _central(sv, 2, 3)
  return su, sv, curl, div


def average_pool(x: jax.Array, pool: int) -> jax.Array:
  """pool x pool spatial mean of [B, T, H, W, ...] (H and W divisible by pool)."""
  if pool == 1:
    return x
  b, t, h, w = x.shape[:4]
  return x.reshape(b, t, h // pool, pool, w // pool, pool, *x.shape[4:]).mean(axis=(3, 5))


def motion_features(x: jax.Array, pool: int = 1) -> jax.Array:
  """[B, T, H, W, 3] normalised clip -> [B, T, H/pool, W/pool, MOTION_CHANNELS] (module docstring).

  Everything but the fine curl is computed on the clip average-pooled `pool` x `pool`; the fine
  curl is computed at full resolution, then pooled.
  """
  if x.ndim != 5 or x.shape[-1] != 3:
    raise ValueError(f"motion_features expects [batch, frames, height, width, 3]; got {x.shape}.")
  if x.shape[1] < 2:
    raise ValueError(f"motion_features needs clips of at least 2 frames, got {x.shape[1]}.")
  if pool < 1 or x.shape[2] % pool or x.shape[3] % pool:
    raise ValueError(f"pool={pool} must be >= 1 and divide the clip's {x.shape[2]}x{x.shape[3]} "
                     "pixels.")
  _, _, _, u_fine, v_fine = _normal_flow(x)
  fine_curl = jnp.tanh(FIELD_GAIN * average_pool(_curl_div(u_fine, v_fine)[2], pool))[..., None]
  x = average_pool(x, pool)
  d, px, py, u, v = _normal_flow(x)
  _, _, curl, div = _curl_div(u, v)
  aniso = _box3(u * u - v * v)
  fields = jnp.tanh(jnp.stack([PRODUCT_GAIN * px, PRODUCT_GAIN * py, FLOW_GAIN * u, FLOW_GAIN * v,
                               FIELD_GAIN * curl, FIELD_GAIN * div, ANISOTROPY_GAIN * aniso],
                              axis=-1))
  coarse_curl = fields[..., 4:5]
  chroma = x - jnp.mean(x, axis=-1, keepdims=True)
  opponent = jax.nn.relu(jnp.concatenate([chroma, -chroma], axis=-1) - OPPONENT_THRESHOLD)
  return jnp.concatenate(
      [x, DIFFERENCE_SCALE * d, fields, fine_curl, fine_curl * x, coarse_curl * x,
       fine_curl * opponent], axis=-1)
