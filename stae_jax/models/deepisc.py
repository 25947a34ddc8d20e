"""DeepISC, the image semantic-communication baseline: every frame sent, each coded on its own.

The paper compares STAE with DeepISC, a ViT-based deep image semantic codec. Its defining property
for this comparison is that it has no temporal or spatial selection: every frame of the clip is
compressed independently to a few latent tokens, quantised, entropy coded, rebuilt, and the same
video ViT classifies the rebuilt clip. Whatever STAE gains must come from what it drops. The exact
DeepISC network is not public to us, so this module is our reconstruction (stated in the README):

  frame uint8 [H, W, 3] -> /127.5 - 1 -> p x p patches -> linear embedding + fixed sinusoid positions
  encoder: [patch tokens (P); K learned query tokens] -> transformer blocks -> the K query outputs
           -> linear to C channels (+ the patch-colour code in channels 0-2, see below)
           -> latents y [K, C]   (a 1-D tokenizer, as TiTok does)
  quantise (stae_jax.models.entropy.quantize), rate = sum of FactorizedPrior(C).bits over sent latents
  decoder: [P patch queries (mask token + positions); first k latent tokens -> width + token index
           embedding] -> transformer blocks -> patch queries -> linear to p*p*3 (a logit correction)
           -> 255 * sigmoid(logit(patch colours decoded from channels 0-2) + correction)

Why learned queries rather than pooling: a query token can gather from anywhere in the frame, so the
bottleneck size (K) is independent of the patch grid, and an operating point is simply how many
tokens are sent.

Operating points are nested prefixes of the token sequence. In training each clip draws k from
`token_choices` and the decoder attends only to the first k latent tokens (per-example key lengths
in `jax.nn.dot_product_attention`, so shapes stay static), and only those k tokens are charged in
the rate. The encoder thus learns to put the most useful content first, and one trained model serves
every k. At evaluation `num_tokens` is a static int: the latents are sliced, so sweeping operating
points costs one compile each and no wasted compute. Both paths give the same reconstruction for
the same k (tested).

Why a fixed colour code under the learned one (`patch_colour_code`): channels 0-2 of the latents
carry the 2-D DCT of the frame's grid of patch mean colours, coarse coefficients first (token 0 the
frame's mean colour, the next few its coarse layout), in units of `init_step` pixel levels; the
decoder inverts it into a patch-colour frame and its transformer predicts a correction (logit
residual, output layer at zero), while the encoder's learned path adds to the latents from zero. A
fresh DeepISC is thus already a nested, usable codec, as STAE's block code starts as block colours,
and the comparison measures what each design learns on top, not which one found its footing. Before
it, the learned tokenizer alone stayed near chance in the main job's 110 steps: its first version
rounded all its latents to 0 (0.02-stddev init, latents 0.17 steps wide), and once they were sent
its reconstruction stalled near 16 dB after 1,000 reconstruction-only steps, while the classifier
keeps 0.453 of its 0.469 on clips of 16x16 block colours (BENCHMARKS.md "Main job").

Blocks, attention and position tables are the ViT's (stae_jax.models.vit), so dtype handling and
the attention fast path are shared.
"""

from __future__ import annotations

import functools
from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from stae_jax.models import entropy
from stae_jax.models import vit as vit_lib


@functools.lru_cache(maxsize=16)
def patch_colour_code(grid: tuple[int, int], max_tokens: int) -> np.ndarray:
  """[P, K] orthonormal 2-D DCT-II of a (gh, gw) grid of patch values, coefficients ordered coarse
  to fine (by u + v, then u), the first K kept (columns past P are zero). Nested prefixes: the
  first column is the grid's mean (times sqrt(P)), the first few its coarsest layout. Cached and
  shared: do not write to it. Built with NumPy (also under `nnx.eval_shape`), never a parameter."""
  gh, gw = (int(g) for g in grid)

  def basis(n):  # [n frequencies, n positions]
    u, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    b = np.cos(np.pi * (2 * x + 1) * u / (2 * n)) * np.sqrt(2.0 / n)
    b[0] /= np.sqrt(2.0)
    return b

  bh, bw = basis(gh), basis(gw)
  order = sorted(((u, v) for u in range(gh) for v in range(gw)), key=lambda f: (f[0] + f[1], f[0]))
  code = np.zeros((gh * gw, int(max_tokens)), np.float32)
  for k, (u, v) in enumerate(order[:max_tokens]):
    code[:, k] = np.outer(bh[u], bw[v]).ravel()
  code.setflags(write=False)
  return code


class DeepISC(nnx.Module):
  """Per-frame ViT codec with a nested token bottleneck and a factorized entropy model (`prior`)."""

  def __init__(self, *, frame_size: int | Sequence[int], patch: int, width: int, encoder_depth: int,
               decoder_depth: int, num_heads: int, max_tokens: int, channels: int,
               token_choices: Sequence[int], mlp_dim: int = 0, init_step: float = 8.0,
               prior: dict | None = None, layer_norm_eps: float = 1e-6, dtype=jnp.float32, param_dtype=jnp.float32,
               attention: str = "auto", remat: bool = False, rngs: nnx.Rngs):
    height, width_px = (frame_size, frame_size) if isinstance(frame_size, int) else frame_size
    if height % patch or width_px % patch:
      raise ValueError(f"DeepISC: frame {height}x{width_px} does not tile into {patch}x{patch} "
                       "patches; pick a patch size dividing the resolution.")
    token_choices = tuple(sorted(int(k) for k in token_choices))
    if not token_choices or token_choices[0] < 1 or token_choices[-1] > max_tokens:
      raise ValueError(f"DeepISC: token_choices {token_choices} must lie in 1..max_tokens "
                       f"({max_tokens}).")
    if not init_step > 0:
      raise ValueError(f"DeepISC: init_step (pixel levels per latent unit of the colour code) must "
                       f"be > 0, got {init_step}.")
    self.frame_size = (int(height), int(width_px))
    self.patch, self.width = int(patch), int(width)
    self.max_tokens, self.channels = int(max_tokens), int(channels)
    self.token_choices = token_choices
    # remat: each transformer block's activations are recomputed in the backward pass instead of
    # kept (`vit.remat_block`); the same numbers, less memory per frame (BENCHMARKS.md).
    self.remat = bool(remat)
    mlp_dim = int(mlp_dim) or 4 * int(width)  # 0: the usual 4x the width
    self.dtype = vit_lib.resolve_dtype(dtype)
    param_dtype = vit_lib.resolve_dtype(param_dtype)
    common = dict(dtype=self.dtype, param_dtype=param_dtype)
    dense = dict(kernel_init=nnx.initializers.truncated_normal(stddev=0.02), rngs=rngs, **common)
    block = dict(eps=layer_norm_eps, attention=attention, rngs=rngs, **common)
    patch_dim = self.patch * self.patch * 3
    token_init = nnx.initializers.truncated_normal(stddev=0.02)

    self.patch_embed = nnx.Linear(patch_dim, width, **dense)
    self.encoder_queries = nnx.Param(token_init(rngs.params(), (max_tokens, width), param_dtype))
    self.encoder_blocks = nnx.List(
        [vit_lib.Block(width, num_heads, mlp_dim, **block) for _ in range(encoder_depth)])
    self.encoder_norm = nnx.LayerNorm(width, epsilon=layer_norm_eps, rngs=rngs, **common)
    # The learned path starts at zero: a fresh encoder sends the colour code alone.
    self.to_latent = nnx.Linear(
        width, channels, **{**dense, "kernel_init": nnx.initializers.zeros_init()})
    # The colour code is `patch_colour_code(self.grid, max_tokens)`: a constant, not a parameter.
    self.grid = (height // self.patch, width_px // self.patch)
    self.colour_channels = min(3, self.channels)
    self.init_step = float(init_step)

    self.from_latent = nnx.Linear(channels, width, **dense)
    self.token_embed = nnx.Param(token_init(rngs.params(), (max_tokens, width), param_dtype))
    self.mask_token = nnx.Param(token_init(rngs.params(), (width,), param_dtype))
    self.decoder_blocks = nnx.List(
        [vit_lib.Block(width, num_heads, mlp_dim, **block) for _ in range(decoder_depth)])
    self.decoder_norm = nnx.LayerNorm(width, epsilon=layer_norm_eps, rngs=rngs, **common)
    self.to_pixels = nnx.Linear(width, patch_dim,
                                **{**dense, "kernel_init": nnx.initializers.zeros_init()})

    # `prior`: FactorizedPrior keyword arguments (the system entry's model.entropy settings).
    prior = dict(prior or {})
    if "filters" in prior:
      prior["filters"] = tuple(prior["filters"])
    self.prior = entropy.FactorizedPrior(channels, **prior, rngs=rngs)

  @property
  def num_patches(self) -> int:
    return (self.frame_size[0] // self.patch) * (self.frame_size[1] // self.patch)

  def _positions(self) -> jax.Array:
    return jnp.asarray(vit_lib.sinusoid_position_table(self.num_patches, self.width), self.dtype)

  def encode(self, video: jax.Array) -> jax.Array:
    """Clip [B, T, H, W, 3] (uint8 or float 0..255) -> unquantised latents float32 [B, T, K, C]."""
    vit_lib.check_video(video, tubelet=1, patch=self.patch, who="DeepISC.encode")
    b, t, h, w, _ = video.shape
    if (h, w) != self.frame_size:
      raise ValueError(f"DeepISC was built for {self.frame_size[0]}x{self.frame_size[1]} frames, "
                       f"got {h}x{w}; set config.data.resolution to match the model.")
    p = self.patch
    x = video.astype(jnp.float32) * (1.0 / 127.5) - 1.0
    x = x.reshape(b * t, h // p, p, w // p, p, 3).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(b * t, self.num_patches, p * p * 3)
    patches = self.patch_embed(x.astype(self.dtype)) + self._positions()
    queries = jnp.broadcast_to(self.encoder_queries[...].astype(self.dtype),
                               (b * t, self.max_tokens, self.width))
    tokens = jnp.concatenate([patches, queries], axis=1)
    for block in self.encoder_blocks:
      tokens = vit_lib.remat_block(block, tokens) if self.remat else block(tokens)
    latents = self.to_latent(self.encoder_norm(tokens[:, self.num_patches:])).astype(jnp.float32)
    # The colour code: DCT of the patch mean colours (normalised), in units of init_step levels.
    n = self.colour_channels
    means = x.reshape(b * t, self.num_patches, p * p, 3)[..., :n].mean(axis=2)
    code = jnp.asarray(patch_colour_code(self.grid, self.max_tokens))
    colour = jnp.einsum("bpc,pk->bkc", means, code) * (127.5 / self.init_step)
    latents = latents.at[..., :n].add(colour)
    return latents.reshape(b, t, self.max_tokens, self.channels)

  def decode(self, latents_hat: jax.Array, num_tokens: int | jax.Array) -> jax.Array:
    """Latents [B, T, k, C] -> clip float32 [B, T, H, W, 3] in 0..255.

    `num_tokens` as a Python int (static): the first `num_tokens` tokens are used (latents may hold
    more; they are sliced off). As an int array [B]: per-clip counts, latents hold all K tokens and
    the decoder attends only to each clip's first num_tokens[b] of them.
    """
    if latents_hat.ndim != 4 or latents_hat.shape[-1] != self.channels:
      raise ValueError(f"DeepISC.decode expects latents [batch, frames, tokens, {self.channels}]; "
                       f"got shape {tuple(latents_hat.shape)}.")
    b, t, k, _ = latents_hat.shape
    if isinstance(num_tokens, (int, np.integer)):
      if not 1 <= num_tokens <= k:
        raise ValueError(f"DeepISC.decode: num_tokens={num_tokens} but latents hold {k} tokens.")
      latents_hat, k, lengths = latents_hat[:, :, :num_tokens], int(num_tokens), None
    else:
      num_tokens = jnp.asarray(num_tokens, jnp.int32)
      if num_tokens.shape != (b,):
        raise ValueError(f"DeepISC.decode: num_tokens must be an int or an int array [batch={b}]; "
                         f"got shape {num_tokens.shape}.")
      lengths = jnp.repeat(num_tokens + self.num_patches, t)
    latent_tokens = (self.from_latent(latents_hat.reshape(b * t, k, self.channels).astype(self.dtype))
                     + self.token_embed[:k].astype(self.dtype))
    queries = jnp.broadcast_to(self.mask_token[...].astype(self.dtype) + self._positions(),
                               (b * t, self.num_patches, self.width))
    tokens = jnp.concatenate([queries, latent_tokens], axis=1)
    for block in self.decoder_blocks:
      tokens = (vit_lib.remat_block(block, tokens, lengths) if self.remat
                else block(tokens, lengths))
    residual = self.to_pixels(self.decoder_norm(tokens[:, :self.num_patches])).astype(jnp.float32)
    p, (h, w) = self.patch, self.frame_size
    residual = residual.reshape(b * t, self.num_patches, p * p, 3)
    # The colour code's inverse on the received tokens (unsent ones count as 0): patch colours.
    # With per-clip counts the latents of unsent tokens are already zero.
    n = self.colour_channels
    code = jnp.asarray(patch_colour_code(self.grid, self.max_tokens)[:, :k])
    received = latents_hat.reshape(b * t, k, self.channels)[..., :n].astype(jnp.float32)
    means = jnp.einsum("bkc,pk->bpc", received, code) * (self.init_step / 127.5)  # normalised
    base = jnp.zeros((b * t, self.num_patches, 3), jnp.float32).at[..., :n].set(means)
    # Base colour in (0, 1) as a logit, plus the transformer's correction: output stays in 0..255.
    base = jnp.clip((base + 1.0) * 0.5, 0.5 / 255.0, 254.5 / 255.0)
    pixels = jax.nn.sigmoid(jnp.log(base / (1.0 - base))[:, :, None, :] + residual)
    pixels = pixels.reshape(b, t, h // p, w // p, p, p, 3).transpose(0, 1, 2, 4, 3, 5, 6)
    return 255.0 * pixels.reshape(b, t, h, w, 3)


def deepisc_forward(model: DeepISC, vit: vit_lib.VideoViT, video: jax.Array, *,
                    num_tokens: int | jax.Array | None, training: bool,
                    rng: jax.Array | None) -> dict:
  """Encode, quantise, estimate the rate, decode and classify; the same keys as the STAE forward.

  num_tokens: a static int (an operating point: slices the latents); an int array [B] (per-clip
  counts, masking); or None to draw a count per clip uniformly from `model.token_choices` (needs
  rng; what training uses). training: additive-noise rate and straight-through rounding (needs rng).

  Returns: logits [B, classes] float32; reconstruction float32 [B, T, H, W, 3] in 0..255;
  bits {"payload", "masks" (0: nothing is dropped), "total"} estimated bits per clip [B];
  latents: integer-valued float32 [B, T, k, C] (k = num_tokens when static, else K with unsent
  tokens zeroed); num_tokens: int32 [B], tokens sent per frame.
  """
  rng_tokens = rng_noise = None
  if rng is not None:
    rng_tokens, rng_noise = jax.random.split(rng)
  latents = model.encode(video)
  b = latents.shape[0]
  if num_tokens is None:
    if rng_tokens is None:
      raise ValueError("deepisc_forward(num_tokens=None) draws a token count per clip and needs "
                       "rng=<jax PRNG key>; or pass num_tokens=<int> for a fixed operating point.")
    num_tokens = jax.random.choice(rng_tokens, jnp.asarray(model.token_choices, jnp.int32), (b,))
  static = isinstance(num_tokens, (int, np.integer))
  if static:
    if not 1 <= num_tokens <= model.max_tokens:
      raise ValueError(f"num_tokens={num_tokens} is outside 1..{model.max_tokens} (max_tokens).")
    latents = latents[:, :, :num_tokens]
    sent = jnp.ones(latents.shape[:3] + (1,), jnp.float32)
    tokens_per_clip = jnp.full((b,), num_tokens, jnp.int32)
  else:
    tokens_per_clip = jnp.asarray(num_tokens, jnp.int32)
    sent = (jnp.arange(model.max_tokens)[None, :] < tokens_per_clip[:, None]).astype(jnp.float32)
    sent = sent[:, None, :, None]  # [B, 1, K, 1]
  y_rate, y_decoder = entropy.quantize(latents, training=training, rng=rng_noise)
  payload = (model.prior.bits(y_rate) * sent).sum(axis=(1, 2, 3))
  y_decoder = y_decoder * sent
  reconstruction = model.decode(y_decoder, num_tokens if static else tokens_per_clip)
  masks = jnp.zeros_like(payload)
  return dict(
      logits=vit(reconstruction),
      reconstruction=reconstruction,
      bits=dict(payload=payload, masks=masks, total=payload + masks),
      latents=jax.lax.stop_gradient(y_decoder),
      num_tokens=tokens_per_clip,
  )
