"""Learned entropy models: the differentiable rate that training minimises.

`FactorizedPrior` is the per-channel factorized density of Balle et al., "Variational image compression
with a scale hyperprior" (ICLR 2018, appendix 6.1): for each channel a small monotone network maps a
value x to logits whose sigmoid is a cumulative distribution function. The probability of an integer
latent is the mass of the unit bin around it, so the rate of a quantised latent under the model is
exactly what an ideal entropy coder using the same density would spend. `stae_jax.coding.tables`
freezes the same function into float64 tables for the real range coder, and the tests check that the
two agree (the training rate is then an honest estimate of the bitstream, not a loose proxy). The
conditional streams' repeat flags (`stae_jax.coding.bitstream`, version 3) are not modelled: where
blocks repeat their last values exactly, real streams are shorter than the learned rate.

Everything here computes in float32 whatever the caller's dtype: latents in bfloat16 have 8 bits of
mantissa, so at |y| ~ 100 the uniform noise of training would be rounded away and the rate would
drift. Callers may pass bfloat16; the rate comes back in float32.

Masks are not modelled by a network: a mask keeping k of n places is coded with the exact adaptive
Bernoulli code (p = picks left / places left), whose cost `mask_bits(n, k)` = log2 C(n, k) depends
only on the static shapes, so it is a constant for the rate loss and an exact figure for reports.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from stae_jax.models import context as context_lib

__all__ = ["FactorizedPrior", "ContextPrior", "quantize", "mask_bits", "lower_bound",
           "logits_numpy"]


@jax.custom_vjp
def lower_bound(x, bound):
  """max(x, bound), letting gradients through wherever they would push x back above the bound.

  A plain `jnp.maximum` has zero gradient below the bound, so a likelihood that once underflowed
  could never recover; this is the "identity if towards" bound of tensorflow_compression.
  """
  return jnp.maximum(x, bound)


def _lower_bound_fwd(x, bound):
  return jnp.maximum(x, bound), (x, bound)


def _lower_bound_bwd(residual, g):
  x, bound = residual
  # Pass the gradient where x is above the bound, or where descending it (x - g) would raise x.
  pass_through = jnp.logical_or(x >= bound, g < 0)
  return (jnp.where(pass_through, g, 0).astype(x.dtype), jnp.zeros_like(bound))


lower_bound.defvjp(_lower_bound_fwd, _lower_bound_bwd)


def _layer_sizes(filters: Sequence[int]) -> tuple[int, ...]:
  return (1,) + tuple(int(f) for f in filters) + (1,)


def logits_numpy(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
  """The prior's logits in float64 NumPy, for freezing tables; `x` is [C, M], returns [C, M].

  Mirrors `FactorizedPrior._logits` operation for operation so that the frozen tables are the
  model's density evaluated more precisely (and identically on every host), not a re-derivation.
  """
  num_layers = sum(1 for key in params if key.startswith("matrix_"))
  h = np.asarray(x, np.float64)[:, None, :]  # [C, 1, M]
  for i in range(num_layers):
    matrix = np.logaddexp(0.0, params[f"matrix_{i}"])  # softplus: positive weights -> monotone
    h = np.einsum("coi,cim->com", matrix, h) + params[f"bias_{i}"]
    if i < num_layers - 1:
      h = h + np.tanh(params[f"factor_{i}"]) * np.tanh(h)
  return h[:, 0, :]


def _logits_flat(params: dict, x):
  """The prior's logits in float32 JAX; `x` is [C, M], returns [C, M] (see logits_numpy)."""
  num_layers = sum(1 for key in params if key.startswith("matrix_"))
  h = x[:, None, :]
  for i in range(num_layers):
    matrix = jax.nn.softplus(params[f"matrix_{i}"].astype(jnp.float32))
    h = jnp.einsum("coi,cim->com", matrix, h) + params[f"bias_{i}"].astype(jnp.float32)
    if i < num_layers - 1:
      h = h + jnp.tanh(params[f"factor_{i}"].astype(jnp.float32)) * jnp.tanh(h)
  return h[:, 0, :]


def _channels_first(x):
  """[..., C] (any float dtype) -> float32 [C, M]."""
  return jnp.asarray(x, jnp.float32).reshape(-1, x.shape[-1]).T


# Jitted so eager callers (evaluation, tests) do not pay op-by-op dispatch; inside a caller's jit
# these simply inline.
@jax.jit
def _logits_channels_last(params: dict, x):
  return _logits_flat(params, _channels_first(x)).T.reshape(x.shape)


@functools.partial(jax.jit, static_argnums=2)
def _likelihood(params: dict, y, bound: float):
  y_flat = _channels_first(y)
  lower = _logits_flat(params, y_flat - 0.5)
  upper = _logits_flat(params, y_flat + 0.5)
  sign = jax.lax.stop_gradient(-jnp.sign(lower + upper))
  mass = jnp.abs(jax.nn.sigmoid(sign * upper) - jax.nn.sigmoid(sign * lower))
  return lower_bound(mass.T.reshape(y.shape), jnp.float32(bound))


def _logits_rows(params: dict, x, rows):
  """The logits of row rows[m] at x[m] (both [M]): the same network as `_logits_flat`, with each
  element's row parameters gathered (no evaluation of every row at every element)."""
  num_layers = sum(1 for key in params if key.startswith("matrix_"))
  h = x[:, None]
  for i in range(num_layers):
    matrix = jax.nn.softplus(params[f"matrix_{i}"].astype(jnp.float32))[rows]  # [M, out, in]
    h = jnp.einsum("moi,mi->mo", matrix, h) + params[f"bias_{i}"].astype(jnp.float32)[rows, :, 0]
    if i < num_layers - 1:
      h = h + jnp.tanh(params[f"factor_{i}"].astype(jnp.float32)[rows, :, 0]) * jnp.tanh(h)
  return h[:, 0]


@functools.partial(jax.jit, static_argnums=3)
def _likelihood_rows(params: dict, y, rows, bound: float):
  y_flat = jnp.asarray(y, jnp.float32).reshape(-1)
  rows_flat = rows.reshape(-1)
  lower = _logits_rows(params, y_flat - 0.5, rows_flat)
  upper = _logits_rows(params, y_flat + 0.5, rows_flat)
  sign = jax.lax.stop_gradient(-jnp.sign(lower + upper))
  mass = jnp.abs(jax.nn.sigmoid(sign * upper) - jax.nn.sigmoid(sign * lower))
  return lower_bound(mass.reshape(y.shape), jnp.float32(bound))


class FactorizedPrior(nnx.Module):
  """Per-channel factorized density over integer latents (Balle et al. 2018, ICLR, appendix 6.1).

  Channels are the last axis of every input. Each channel has its own monotone network
  1 -> filters... -> 1 (softplus-positive matrices and tanh "factors" bounded in (-1, 1) keep it
  monotone), whose sigmoid is the cumulative distribution function.
  """

  def __init__(self, channels: int, *, filters: Sequence[int] = (3, 3, 3), init_scale: float = 10.0,
               likelihood_bound: float = 1e-9, rngs: nnx.Rngs):
    if channels < 1:
      raise ValueError(f"FactorizedPrior needs channels >= 1, got {channels}")
    if not filters or any(int(f) < 1 for f in filters):
      raise ValueError(f"filters must be a non-empty sequence of positive ints, got {filters!r}")
    if init_scale <= 0:
      raise ValueError(f"init_scale must be positive, got {init_scale}")
    self.channels = int(channels)
    self.filters = tuple(int(f) for f in filters)
    self.init_scale = float(init_scale)
    self.likelihood_bound = float(likelihood_bound)
    sizes = _layer_sizes(self.filters)
    num_layers = len(sizes) - 1
    # Initialised as tensorflow_compression does: the initial density is roughly uniform-ish over
    # [-init_scale, init_scale], wide enough that early latents are not all in the tails.
    scale = self.init_scale ** (1.0 / num_layers)
    # One random draw for all biases, then sliced: eager per-shape draws cost seconds of
    # compilation on a CPU for a module this small. It stays a jax array so that the module can be
    # built under `jax.jit`/`nnx.eval_shape` (sharded initialisation on multi-host runs).
    bias_sizes = [self.channels * f for f in sizes[1:]]
    biases = jax.random.uniform(rngs.params(), (sum(bias_sizes),), jnp.float32, -0.5, 0.5)
    offsets = np.cumsum([0] + bias_sizes)
    for i in range(num_layers):
      fan_in, fan_out = sizes[i], sizes[i + 1]
      init = math.log(math.expm1(1.0 / scale / fan_out))
      setattr(self, f"matrix_{i}",
              nnx.Param(jnp.asarray(np.full((self.channels, fan_out, fan_in), init, np.float32))))
      setattr(self, f"bias_{i}", nnx.Param(
          biases[int(offsets[i]):int(offsets[i + 1])].reshape(self.channels, fan_out, 1)))
      if i < num_layers - 1:
        setattr(self, f"factor_{i}",
                nnx.Param(jnp.asarray(np.zeros((self.channels, fan_out, 1), np.float32))))

  @property
  def num_layers(self) -> int:
    return len(self.filters) + 1

  def _check_channels(self, x):
    if x.ndim < 1 or x.shape[-1] != self.channels:
      raise ValueError(f"FactorizedPrior has {self.channels} channels (last axis), got input of "
                       f"shape {tuple(x.shape)}; move the channel axis last")

  def _parameters(self) -> dict:
    return {name: getattr(self, name)[...] for name in self._parameter_names()}

  def _parameter_names(self) -> list[str]:
    names = []
    for i in range(self.num_layers):
      names += [f"matrix_{i}", f"bias_{i}"] + ([f"factor_{i}"] if i < self.num_layers - 1 else [])
    return names

  def _prepare(self, x):
    x = jnp.asarray(x)
    self._check_channels(x)
    return x

  def logits(self, x):
    """The monotone network's output (logit of the CDF), float32 [..., C]."""
    return _logits_channels_last(self._parameters(), self._prepare(x))

  def cdf(self, x):
    """Cumulative distribution at x: float [..., C] -> float32 in (0, 1), [..., C]."""
    return jax.nn.sigmoid(self.logits(x))

  def likelihood(self, y):
    """P(integer bin [y - 1/2, y + 1/2)) per element, bounded below by `likelihood_bound`.

    Computed as a difference of sigmoids on the side of the median where both are small
    (tensorflow_compression's sign trick): 1 - cdf would lose all precision in the upper tail.
    """
    return _likelihood(self._parameters(), self._prepare(y), self.likelihood_bound)

  def bits(self, y):
    """Information content -log2 P(bin around y), float32 [..., C]; sum it for the rate."""
    return -jnp.log2(self.likelihood(y))

  def bits_of_rows(self, y, rows):
    """-log2 P(bin around y[i]) under the density of channel rows[i] (y float, rows int, one
    shape): for models whose "channels" are rows chosen per element (`ContextPrior`)."""
    y = jnp.asarray(y)
    rows = jnp.asarray(rows, jnp.int32)
    if rows.shape != y.shape:
      raise ValueError(f"bits_of_rows needs rows of y's shape, got {rows.shape} and {y.shape}")
    return -jnp.log2(_likelihood_rows(self._parameters(), y, rows, self.likelihood_bound))

  def numpy_parameters(self) -> dict[str, np.ndarray]:
    """The parameters as float64 NumPy arrays (from their float32 values), keyed by name."""
    return {name: np.asarray(jax.device_get(value), np.float32).astype(np.float64)
            for name, value in self._parameters().items()}

  def support(self, tail_mass: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """Integer bounds (lo, hi) per channel holding all but `tail_mass` of each channel's density.

    The quantiles tail_mass/2 and 1 - tail_mass/2 of the learned density are found by bisection on
    its float64 CDF (no auxiliary quantile parameters or loss are needed), then widened to integers:
    lo = floor(lower quantile), hi = ceil(upper quantile). Returns two int64 NumPy arrays [C].
    """
    if not 0 < tail_mass < 1:
      raise ValueError(f"tail_mass must be in (0, 1), got {tail_mass}")
    params = self.numpy_parameters()
    target = np.array([tail_mass / 2, 1 - tail_mass / 2])
    target_logits = np.log(target) - np.log1p(-target)  # compare logits: no sigmoid saturation
    quantiles = []
    for goal in target_logits:
      lo = np.full(self.channels, -1.0)
      hi = np.full(self.channels, 1.0)
      # Expand the bracket until it contains the quantile for every channel.
      for _ in range(200):
        below = logits_numpy(params, lo[:, None])[:, 0] > goal
        above = logits_numpy(params, hi[:, None])[:, 0] < goal
        if not (below.any() or above.any()):
          break
        lo = np.where(below, lo * 2, lo)
        hi = np.where(above, hi * 2, hi)
      else:
        raise FloatingPointError("FactorizedPrior.support: the CDF never reaches the tail "
                                 f"quantile {goal}; the density parameters are not finite")
      for _ in range(100):
        mid = (lo + hi) / 2
        go_right = logits_numpy(params, mid[:, None])[:, 0] < goal
        lo = np.where(go_right, mid, lo)
        hi = np.where(go_right, hi, mid)
      quantiles.append((lo + hi) / 2)
    return (np.floor(quantiles[0]).astype(np.int64), np.ceil(quantiles[1]).astype(np.int64))


def quantize(y, *, training: bool, rng=None):
  """Returns (y_rate, y_decoder): what the rate is measured on and what the decoder sees.

  Training: y_rate = y + U(-1/2, 1/2) (the additive-noise proxy of Balle et al., whose density
  under the model is the bin mass, so the rate stays differentiable and unbiased), and y_decoder =
  round(y) with a straight-through gradient, so the decoder trains on the integers it will really
  receive (mixing the two, as Minnen & Singh 2020 found, beats feeding noise to the decoder).
  Inference: both are round(y), so `bits(y_rate)` is the exact information content of what is coded.

  y_rate is float32 whatever y's dtype (see the module docstring: bfloat16 would round the noise
  away); y_decoder keeps y's dtype. `rng` is a JAX PRNG key, required when training.
  """
  y = jnp.asarray(y)
  rounded = jnp.round(y)
  if not training:
    return rounded.astype(jnp.float32), rounded
  if rng is None:
    raise ValueError("quantize(training=True) needs rng=<jax PRNG key> for the uniform noise")
  noise = jax.random.uniform(rng, y.shape, jnp.float32, -0.5, 0.5)
  y_rate = y.astype(jnp.float32) + noise
  y_decoder = y + jax.lax.stop_gradient(rounded - y)
  return y_rate, y_decoder


def mask_bits(n: int, k: int) -> float:
  """Exact cost log2 C(n, k) in bits of a mask keeping k of n places (adaptive Bernoulli code).

  Coding each place with p = picks left / places left gives every k-subset probability 1/C(n, k).
  n and k are static Python ints; math.log2 of the exact integer binomial has no overflow.
  """
  n, k = int(n), int(k)
  if n < 0 or not 0 <= k <= n:
    raise ValueError(f"mask_bits needs 0 <= k <= n, got n={n}, k={k}")
  return math.log2(math.comb(n, k))


def mask_bits_traced(n: int, k) -> jax.Array:
  """`mask_bits` for a k that may be traced (an int32 array, e.g. one per clip): log2 C(n, k) from
  log-gamma in float32 (within ~1e-3 bits of the exact value for n up to 2^16; training rates)."""
  k = jnp.asarray(k, jnp.float32)
  n = jnp.float32(n)
  nats = (jax.scipy.special.gammaln(n + 1) - jax.scipy.special.gammaln(k + 1)
          - jax.scipy.special.gammaln(n - k + 1))
  return nats / jnp.log(2.0)


class ContextPrior(nnx.Module):
  """STAE's conditional entropy model: each latent coded as a residual under the table of its
  (channel, context), with prediction and context from what the decoder already holds.

  The context rule is integer and fixed (`stae_jax.models.context`): the canvas of blocks as last
  sent (the block itself and its four neighbours, this frame's first-pass blocks included for the
  second pass) predicts the value and, by the neighbours' spread, picks a spatial context; the
  previous channel's residual at the same place picks a channel context. What is learned is one
  factorized density per (channel, context) over the residual y - pred: a `FactorizedPrior` with
  channels x K "channels" (`density`), row c * K + k. Freezing it gives one table per row
  (`stae_jax.coding.tables.freeze`); the tables carry the rule's spec, so encoder and decoder pick
  the same row on any machine.
  """

  def __init__(self, channels: int, *, grid_width: int, thresholds: Sequence[int] = (1, 2, 4, 8),
               channel_clip: int = 3, filters: Sequence[int] = (3, 3, 3),
               init_scale: float = 10.0, likelihood_bound: float = 1e-9, rngs: nnx.Rngs):
    self.grid_width, self.thresholds, self.channel_clip = context_lib.check_rule(
        grid_width, thresholds, channel_clip)
    self.channels = int(channels)
    self.num_contexts = context_lib.num_contexts(self.thresholds, self.channel_clip)
    self.density = FactorizedPrior(self.channels * self.num_contexts, filters=filters,
                                   init_scale=init_scale, likelihood_bound=likelihood_bound,
                                   rngs=rngs)

  @property
  def filters(self) -> tuple[int, ...]:
    return self.density.filters

  def spec(self) -> np.ndarray:
    """The rule as stored in the coding tables: [rule version, grid width, channels C,
    contexts K, channel clip X, *thresholds] (int32)."""
    return np.array([context_lib.RULE_VERSION, self.grid_width, self.channels, self.num_contexts,
                     self.channel_clip, *self.thresholds], np.int32)

  def bits(self, y, *, rounded, kept):
    """-log2 P(y | context) per element, float32 [B, T, N, *inner, C].

    y [B,T,N,*inner,C]: what the rate is measured on (noisy in training, integers at inference);
    rounded: the integers the decoder receives (the context is computed from these, without
    gradient); kept bool [B,T,N]: the blocks that are sent (the only ones that can be context).
    """
    y = jnp.asarray(y, jnp.float32)
    if y.ndim < 4 or y.shape[-1] != self.channels:
      raise ValueError(f"ContextPrior expects latents [B,T,N,...,{self.channels}], got "
                       f"{tuple(y.shape)}")
    b, t, n = y.shape[:3]
    flat = jax.lax.stop_gradient(jnp.asarray(rounded, jnp.float32)).reshape(b, t, n, -1)
    pred, context = context_lib.dense_context(flat, kept, self.channels, self.grid_width,
                                              self.thresholds, self.channel_clip)
    residual = y - pred.reshape(y.shape)
    rows = jnp.arange(self.channels, dtype=jnp.int32) * self.num_contexts + context.reshape(y.shape)
    return self.density.bits_of_rows(residual, rows)

  def numpy_parameters(self) -> dict[str, np.ndarray]:
    return self.density.numpy_parameters()
