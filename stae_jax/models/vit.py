"""The server-side classifier: a VideoMAE-style video vision transformer (Flax NNX).

Why VideoMAE's exact architecture: the paper recognises actions with a ViT on the edge server, and
the only strong public video ViT weights for HMDB51-sized data are VideoMAE's. Keeping the layout
identical (tubelet embedding, fixed sinusoid positions, q/v biases without a k bias, mean pooling
then `fc_norm`) means a Hugging Face `VideoMAEForVideoClassification` checkpoint maps onto this
module one tensor to one parameter, with transposes only, and no retraining of a look-alike.

Architecture (VideoMAE, Tong et al. 2022):
  uint8 or float clip [B, T, H, W, 3] in 0..255
  -> /255, ImageNet mean/std (as VideoMAE's transforms), on the accelerator
  -> tubelet embedding: Conv3d, kernel = stride = (tubelet, patch, patch), tokens ordered (t, h, w)
  -> + fixed sinusoid position table (`sinusoid_position_table`, VideoMAE's formula, not learned)
  -> `depth` pre-norm blocks: x + attn(LN(x)); x + mlp(LN(x)); LayerNorm eps 1e-6; GELU (exact erf)
  -> mean over tokens -> `fc_norm` LayerNorm -> linear head -> float32 logits

The position table is computed from the clip's static shape at trace time, so one model serves any
clip size divisible by the tubelet (16x224x224 gives the 1568 positions VideoMAE-B uses).

Parameter mapping from Hugging Face `VideoMAEForVideoClassification` (`huggingface_parameter_map`
returns the same table as data; `i` is the block index). Torch `Linear.weight` is [out, in], ours
is [in, out] (transpose); the Conv3d weight is [out, in, kt, kh, kw], ours [kt, kh, kw, in, out].

  | Hugging Face name                                         | our path                  | layout       |
  |-----------------------------------------------------------|---------------------------|--------------|
  | videomae.embeddings.patch_embeddings.projection.weight    | patch_embed.kernel        | (2,3,4,1,0)  |
  | videomae.embeddings.patch_embeddings.projection.bias      | patch_embed.bias          | as is        |
  | videomae.encoder.layer.i.layernorm_before.weight / .bias  | blocks.i.norm1.scale/bias | as is        |
  | videomae.encoder.layer.i.attention.attention.query.weight | blocks.i.attn.query.kernel| transpose    |
  | videomae.encoder.layer.i.attention.attention.key.weight   | blocks.i.attn.key.kernel  | transpose    |
  | videomae.encoder.layer.i.attention.attention.value.weight | blocks.i.attn.value.kernel| transpose    |
  | videomae.encoder.layer.i.attention.attention.q_bias       | blocks.i.attn.q_bias      | as is        |
  | videomae.encoder.layer.i.attention.attention.v_bias       | blocks.i.attn.v_bias      | as is        |
  | videomae.encoder.layer.i.attention.output.dense.weight    | blocks.i.attn.proj.kernel | transpose    |
  | videomae.encoder.layer.i.attention.output.dense.bias      | blocks.i.attn.proj.bias   | as is        |
  | videomae.encoder.layer.i.layernorm_after.weight / .bias   | blocks.i.norm2.scale/bias | as is        |
  | videomae.encoder.layer.i.intermediate.dense.weight / .bias| blocks.i.mlp.fc1.kernel/bias | transpose / as is |
  | videomae.encoder.layer.i.output.dense.weight / .bias      | blocks.i.mlp.fc2.kernel/bias | transpose / as is |
  | fc_norm.weight / .bias                                    | fc_norm.scale/bias        | as is        |
  | classifier.weight / .bias                                 | head.kernel/bias          | transpose / as is |

The original VideoMAE (MCG-NJU) checkpoints name the same tensors `patch_embed.proj`,
`blocks.i.norm1`, `blocks.i.attn.qkv.weight` ([3D, D]: rows split in thirds into query, key,
value), `blocks.i.attn.q_bias`, `.v_bias`, `.attn.proj`, `.norm2`, `.mlp.fc1`, `.mlp.fc2`,
`fc_norm`, `head`. The position table is not a parameter in either (it is recomputed). Note on
epsilons: VideoMAE trains with eps 1e-6 everywhere; HF configs store `layer_norm_eps` (often 1e-12)
and build `fc_norm` with torch's default 1e-5; the differences are far below bf16 resolution, and
`layer_norm_eps` here can be set to match an import exactly.

Optional input front end (all off for VideoMAE's layout and every import), applied in this order
to the normalised clip before the tubelet embedding:
  `pool`: average pooling `pool`x`pool` in space (a token then covers `patch * pool` pixels;
    the motion inputs below are computed on the pooled clip, all but one curl channel: at full
    resolution they cost ~4x more, 0.54 against 0.13 s a batch of 32 16x64x64 clips on two CPU
    cores);
  `inputs`: "frames" (the clip), "differences" (`temporal_difference`: what changed), or "motion"
    (`stae_jax.models.motion.motion_features`: the frames, their changes, and which way things
    moved, as normal-flow fields; a tubelet embedding is linear in its pixels and cannot by itself
    say which way a small object moved wherever it sits in the patch);
  `stem_channels`: one pointwise linear layer + GELU per pixel and frame (`PixelMlp`), so that the
    embedding sees nonlinear combinations such as "motion where the actor's colour is".

Not included (not needed yet): dropout and stochastic depth (VideoMAE fine-tuning uses drop path
0.1); add them with an rng argument when the trainer needs them.
"""

from __future__ import annotations

from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from stae_jax.models import motion

# ImageNet statistics, as VideoMAE's data transforms use (after scaling pixels to 0..1).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Standard ViT sizes (VideoMAE uses S, B, L; Ti is DeiT's tiny). mlp is 4x the width for all.
SIZES = {
    "Ti": dict(width=192, depth=12, num_heads=3),
    "S": dict(width=384, depth=12, num_heads=6),
    "B": dict(width=768, depth=12, num_heads=12),
    "L": dict(width=1024, depth=24, num_heads=16),
}

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

# VideoMAE initialises linear weights with trunc_normal(std=0.02), biases with zeros.
_linear_init = nnx.initializers.truncated_normal(stddev=0.02)


def resolve_dtype(dtype: Any):
  """Accepts a config string ("bfloat16") or a dtype; a typo is an error that lists the choices."""
  if isinstance(dtype, str):
    if dtype not in DTYPES:
      raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}.")
    return DTYPES[dtype]
  return dtype


def sinusoid_position_table(num_positions: int, width: int) -> np.ndarray:
  """VideoMAE's `get_sinusoid_encoding_table`: [num_positions, width] float32.

  angle[pos, j] = pos / 10000^(2*(j//2)/width); even columns take sin, odd columns cos. Computed
  in float64 and rounded once to float32, as torch.FloatTensor does in the original.
  """
  positions = np.arange(num_positions, dtype=np.float64)[:, None]
  exponents = 2 * (np.arange(width) // 2) / width
  angles = positions / np.power(10000.0, exponents)[None, :]
  table = np.empty_like(angles)
  table[:, 0::2] = np.sin(angles[:, 0::2])
  table[:, 1::2] = np.cos(angles[:, 1::2])
  return table.astype(np.float32)


def check_video(video: jax.Array, *, tubelet: int, patch: int, who: str, pool: int = 1) -> None:
  """Rejects clips the patching cannot tile, with the shape that would work.

  `pool` is the input's spatial average pooling: a token then covers `patch * pool` pixels.
  """
  patch = patch * pool
  if video.ndim != 5 or video.shape[-1] != 3:
    raise ValueError(f"{who} expects clips [batch, frames, height, width, 3]; got shape "
                     f"{tuple(video.shape)}. Add a batch axis or move channels last.")
  if not (video.dtype == jnp.uint8 or jnp.issubdtype(video.dtype, jnp.floating)):
    raise ValueError(f"{who} expects uint8 pixels or floats in 0..255; got dtype {video.dtype}.")
  _, frames, height, width, _ = video.shape
  if frames % tubelet or height % patch or width % patch:
    raise ValueError(
        f"{who}: clip of {frames}x{height}x{width} does not tile into tubelets of "
        f"{tubelet}x{patch}x{patch}; frames must be a multiple of {tubelet} and height/width "
        f"multiples of {patch} (resize/crop in the input pipeline).")


def normalize_video(video: jax.Array, dtype=jnp.float32) -> jax.Array:
  """uint8 or float 0..255 -> (x/255 - mean)/std, in float32 then cast to the compute dtype.

  Float input is accepted so that reconstructed clips from the decoder pass gradients through.
  """
  x = video.astype(jnp.float32) * (1.0 / 255.0)
  x = (x - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)
  return x.astype(dtype)


def attention_implementation(choice: str, dtype) -> str | None:
  """Picks `jax.nn.dot_product_attention`'s backend.

  "auto": cuDNN's fused kernel on a GPU for 16-bit compute (the only case it supports), XLA
  elsewhere (CPU, TPU, float32). "xla" / "cudnn" force one.
  """
  if choice == "auto":
    on_gpu = jax.default_backend() == "gpu"
    half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    return "cudnn" if on_gpu and half else "xla"
  if choice in ("xla", "cudnn"):
    return choice
  raise ValueError(f"unknown attention implementation {choice!r}; use 'auto', 'xla' or 'cudnn'.")


class PixelMlp(nnx.Module):
  """One linear layer + GELU applied to every pixel and frame: [..., channels] -> [..., out]."""

  def __init__(self, channels: int, out: int, *, dtype, param_dtype, rngs: nnx.Rngs):
    self.dtype = dtype
    self.kernel = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (channels, out),
                                                            param_dtype))
    self.bias = nnx.Param(jnp.zeros((out,), param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(self.dtype) @ self.kernel[...].astype(self.dtype)
    return jax.nn.gelu(x + self.bias[...].astype(self.dtype), approximate=False)


class TubeletEmbed(nnx.Module):
  """Conv3d with kernel = stride = (tubelet, patch, patch), written as patchify + one matmul.

  The kernel keeps Flax's conv layout [kt, kh, kw, channels, width] (torch's weight transposed by
  (2,3,4,1,0)); a strided non-overlapping convolution is exactly this contraction, and a plain
  matmul is faster than a 3-D convolution on CPUs and as fast on accelerators. `channels` is 3
  (pixels) unless the input front end (module docstring) gives more.
  """

  def __init__(self, width: int, *, tubelet: int, patch: int, dtype, param_dtype, rngs: nnx.Rngs,
               channels: int = 3):
    self.tubelet, self.patch, self.dtype = tubelet, patch, dtype
    fan_in = channels * tubelet * patch * patch
    # torch's Conv3d default init (kaiming uniform, a=sqrt(5)) is uniform(+-1/sqrt(fan_in)).
    bound = 1.0 / np.sqrt(fan_in)
    self.kernel = nnx.Param(jax.random.uniform(
        rngs.params(), (tubelet, patch, patch, channels, width), param_dtype, -bound, bound))
    self.bias = nnx.Param(jax.random.uniform(rngs.params(), (width,), param_dtype, -bound, bound))

  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, T, H, W, 3] -> tokens [B, (T/t)*(H/p)*(W/p), width], ordered (t, h, w) as torch's flatten."""
    b, t, h, w, c = x.shape
    kt, p = self.tubelet, self.patch
    x = x.reshape(b, t // kt, kt, h // p, p, w // p, p, c)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)  # [B, T', H', W', kt, p, p, c]
    x = x.reshape(b, (t // kt) * (h // p) * (w // p), kt * p * p * c)
    kernel = self.kernel[...].astype(self.dtype).reshape(kt * p * p * c, -1)
    return x.astype(self.dtype) @ kernel + self.bias[...].astype(self.dtype)


class Attention(nnx.Module):
  """Multi-head self-attention with VideoMAE's bias layout: q and v biases, no k bias.

  `key_value_lengths` ([B] int32, optional) masks the tail of the key sequence per example; the
  DeepISC decoder uses it to train one model on a random number of leading latent tokens.
  """

  def __init__(self, width: int, num_heads: int, *, dtype, param_dtype, attention: str,
               rngs: nnx.Rngs):
    if width % num_heads:
      raise ValueError(f"width {width} is not divisible by num_heads {num_heads}.")
    self.num_heads, self.dtype = num_heads, dtype
    self.implementation = attention_implementation(attention, dtype)
    dense = dict(dtype=dtype, param_dtype=param_dtype, kernel_init=_linear_init, rngs=rngs)
    self.query = nnx.Linear(width, width, use_bias=False, **dense)
    self.key = nnx.Linear(width, width, use_bias=False, **dense)
    self.value = nnx.Linear(width, width, use_bias=False, **dense)
    self.q_bias = nnx.Param(jnp.zeros((width,), param_dtype))
    self.v_bias = nnx.Param(jnp.zeros((width,), param_dtype))
    self.proj = nnx.Linear(width, width, **dense)

  def __call__(self, x: jax.Array, key_value_lengths: jax.Array | None = None) -> jax.Array:
    b, n, d = x.shape
    heads = lambda y: y.reshape(b, n, self.num_heads, d // self.num_heads)
    q = heads(self.query(x) + self.q_bias[...].astype(self.dtype))
    k = heads(self.key(x))
    v = heads(self.value(x) + self.v_bias[...].astype(self.dtype))
    out = jax.nn.dot_product_attention(
        q, k, v, key_value_seq_lengths=key_value_lengths, implementation=self.implementation)
    return self.proj(out.reshape(b, n, d))


class Mlp(nnx.Module):
  """fc1 -> GELU (exact, as torch's nn.GELU) -> fc2."""

  def __init__(self, width: int, hidden: int, *, dtype, param_dtype, rngs: nnx.Rngs):
    dense = dict(dtype=dtype, param_dtype=param_dtype, kernel_init=_linear_init, rngs=rngs)
    self.fc1 = nnx.Linear(width, hidden, **dense)
    self.fc2 = nnx.Linear(hidden, width, **dense)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class Block(nnx.Module):
  """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

  def __init__(self, width: int, num_heads: int, mlp_dim: int, *, eps: float, dtype, param_dtype,
               attention: str, rngs: nnx.Rngs):
    norm = dict(epsilon=eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = nnx.LayerNorm(width, **norm)
    self.attn = Attention(width, num_heads, dtype=dtype, param_dtype=param_dtype,
                          attention=attention, rngs=rngs)
    self.norm2 = nnx.LayerNorm(width, **norm)
    self.mlp = Mlp(width, mlp_dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array, key_value_lengths: jax.Array | None = None) -> jax.Array:
    x = x + self.attn(self.norm1(x), key_value_lengths)
    return x + self.mlp(self.norm2(x))


#: Channels per pixel of each `inputs` choice of VideoViT's front end (module docstring).
INPUT_CHANNELS = {"frames": 3, "differences": 3, "motion": motion.MOTION_CHANNELS}

#: Gain on frame differences (`temporal_difference`): normalised pixels change by ~0.1 between
#: frames, so x4 brings them nearer the unit scale of the frames the embedding was built for
#: (chosen, not tuned).
DIFFERENCE_GAIN = 4.0


def temporal_difference(x: jax.Array) -> jax.Array:
  """[B, T, H, W, C] -> DIFFERENCE_GAIN * (x[t] - x[t-1]), frame 0 taking frame 1's difference.

  A classifier fed the clip itself can learn a scene's look; fed its changes it sees only what
  moved (a fixed motion-energy front end; on the surveillance_fight benchmark a from-scratch ViT
  on 203 clips learnt the camera from frames and the action from differences, BENCHMARKS.md).
  """
  if x.shape[1] < 2:
    raise ValueError(f"temporal_difference needs clips of at least 2 frames, got {x.shape[1]}")
  d = x[:, 1:] - x[:, :-1]
  return DIFFERENCE_GAIN * jnp.concatenate([d[:, :1], d], axis=1)


@nnx.remat
def remat_block(block: "Block", x: jax.Array,
                key_value_lengths: jax.Array | None = None) -> jax.Array:
  """`block(x, key_value_lengths)` whose activations are recomputed in the backward pass
  (`jax.checkpoint`) instead of kept: only the block's input stays for the backward pass."""
  return block(x, key_value_lengths)


class VideoViT(nnx.Module):
  """VideoMAE's video ViT classifier. Call on a clip [B, T, H, W, 3] (uint8, or float 0..255)."""

  def __init__(self, *, num_classes: int, width: int, depth: int, num_heads: int, mlp_dim: int,
               tubelet: int = 2, patch: int = 16, layer_norm_eps: float = 1e-6,
               head_init_scale: float = 1e-3, dtype=jnp.float32, param_dtype=jnp.float32,
               attention: str = "auto", inputs: str = "frames", pool: int = 1,
               stem_channels: int = 0, remat: bool = False, rngs: nnx.Rngs):
    if num_classes < 1:
      raise ValueError(f"num_classes must be >= 1, got {num_classes}; set config.model.vit.num_classes.")
    self.tubelet, self.patch, self.width = tubelet, patch, width
    # remat: each block's activations are recomputed in the backward pass instead of kept (only
    # the block inputs stay), which trades ~1/3 more compute for memory that no longer grows
    # with depth x tokens per clip (BENCHMARKS.md "Paper size on a CPU"). Same numbers either way.
    self.remat = bool(remat)
    # The input front end (module docstring); the defaults keep VideoMAE's input exactly.
    if inputs not in INPUT_CHANNELS:
      raise ValueError(f"inputs={inputs!r}: use one of {sorted(INPUT_CHANNELS)} "
                       "(config.model.vit.inputs).")
    if int(pool) < 1 or int(stem_channels) < 0:
      raise ValueError(f"pool={pool}, stem_channels={stem_channels}: pool must be >= 1 (1 = none) "
                       "and stem_channels >= 0 (0 = no pointwise layer).")
    self.inputs, self.pool = inputs, int(pool)
    self.dtype = resolve_dtype(dtype)
    param_dtype = resolve_dtype(param_dtype)
    common = dict(dtype=self.dtype, param_dtype=param_dtype)
    channels = INPUT_CHANNELS[inputs]
    self.stem = (PixelMlp(channels, stem_channels, rngs=rngs, **common) if stem_channels else None)
    self.patch_embed = TubeletEmbed(width, tubelet=tubelet, patch=patch, rngs=rngs,
                                    channels=stem_channels or channels, **common)
    self.blocks = nnx.List([
        Block(width, num_heads, mlp_dim, eps=layer_norm_eps, attention=attention, rngs=rngs,
              **common)
        for _ in range(depth)])
    self.fc_norm = nnx.LayerNorm(width, epsilon=layer_norm_eps, rngs=rngs, **common)
    # VideoMAE scales the head's initial weights by `init_scale` (0.001) for stable fine-tuning.
    self.head = nnx.Linear(
        width, num_classes,
        kernel_init=nnx.initializers.truncated_normal(stddev=0.02 * head_init_scale),
        rngs=rngs, **common)

  def tokens(self, video: jax.Array) -> jax.Array:
    """The last block's tokens [B, N, width] (compute dtype)."""
    check_video(video, tubelet=self.tubelet, patch=self.patch, pool=self.pool, who="VideoViT")
    x = normalize_video(video, self.dtype)
    if self.inputs == "motion":  # pools itself (its fine curl needs the full resolution)
      with jax.named_scope("motion_features"):
        x = motion.motion_features(x, self.pool)
    else:
      x = motion.average_pool(x, self.pool)
      if self.inputs == "differences":
        x = temporal_difference(x)
    if self.stem is not None:
      x = self.stem(x)
    x = self.patch_embed(x)
    x = x + jnp.asarray(sinusoid_position_table(x.shape[1], self.width), self.dtype)
    for block in self.blocks:
      x = remat_block(block, x) if self.remat else block(x)
    return x

  def features(self, video: jax.Array) -> jax.Array:
    """Mean-pooled, `fc_norm`-ed clip features [B, width] (what the head sees)."""
    return self.fc_norm(self.tokens(video).mean(axis=1))

  def __call__(self, video: jax.Array) -> jax.Array:
    """Class logits [B, num_classes], float32 whatever the compute dtype."""
    return self.head(self.features(video)).astype(jnp.float32)


def vit_dimensions(config) -> dict:
  """width, depth, num_heads, mlp_dim from `config.size` (Ti/S/B/L) and any explicit overrides.

  An override of 0 (the default) means "take it from the size"; tiny CPU models set them.
  """
  size = config.get("size", "B")
  if size not in SIZES:
    raise ValueError(f"unknown ViT size {size!r}; use one of {sorted(SIZES)}, with optional "
                     "width/depth/num_heads/mlp_dim overrides.")
  dims = dict(SIZES[size])
  for name in ("width", "depth", "num_heads"):
    if config.get(name, 0):
      dims[name] = int(config[name])
  dims["mlp_dim"] = int(config.get("mlp_dim", 0) or 4 * dims["width"])
  return dims


def vit_from_config(config, *, rngs: nnx.Rngs) -> VideoViT:
  """Builds the ViT from `config.model.vit` (or that sub-config itself)."""
  config = _vit_config(config)
  return VideoViT(
      num_classes=int(config.num_classes), tubelet=int(config.tubelet), patch=int(config.patch),
      layer_norm_eps=float(config.get("layer_norm_eps", 1e-6)),
      head_init_scale=float(config.get("head_init_scale", 1e-3)),
      dtype=config.get("dtype", "float32"), param_dtype=config.get("param_dtype", "float32"),
      attention=config.get("attention", "auto"),
      inputs=str(config.get("inputs", "frames")), pool=int(config.get("pool", 1)),
      stem_channels=int(config.get("stem_channels", 0)),
      remat=bool(config.get("remat", False)), rngs=rngs,
      **vit_dimensions(config))


def flops_per_clip(config, *, frames: int | None = None, resolution: int | None = None) -> int:
  """Analytic forward FLOPs of one clip (2 per multiply-add; matmuls and the convolutions only).

  `config` is a whole experiment config (clip size from `config.data`) or a `model.vit` config
  with `frames` and `resolution` given. Softmax, norms, GELU and adds are left out (< 1%).
  For ViT-B/16 on 16x224x224 this is ~361 GFLOPs, i.e. the 180 G multiply-adds VideoMAE reports.
  """
  if "model" in config:
    frames = frames or config.data.frames
    resolution = resolution or config.data.resolution
  if not frames or not resolution:
    raise ValueError("flops_per_clip needs the clip size: pass a whole config (with .data) or "
                     "frames= and resolution=.")
  vit = _vit_config(config)
  dims = vit_dimensions(vit)
  tubelet, patch = int(vit.tubelet), int(vit.patch)
  stem_channels = int(vit.get("stem_channels", 0))
  pool = int(vit.get("pool", 1))
  channels = INPUT_CHANNELS[vit.get("inputs", "frames")]
  stem = frames * (resolution // pool) ** 2 * channels * stem_channels  # the pointwise layer
  tokens = (frames // tubelet) * (resolution // (patch * pool)) ** 2
  d, mlp = dims["width"], dims["mlp_dim"]
  embed = stem + tokens * ((stem_channels or channels) * tubelet * patch * patch) * d
  per_block = (4 * tokens * d * d            # q, k, v, output projections
               + 2 * tokens * tokens * d     # q.k^T and attention.v
               + 2 * tokens * d * mlp)       # fc1, fc2
  head = d * int(vit.num_classes)
  return 2 * (embed + dims["depth"] * per_block + head)


def huggingface_parameter_map(depth: int) -> list[tuple[str, str, tuple[int, ...] | None]]:
  """(Hugging Face name, our dotted path, transpose axes or None) for every parameter.

  The table in this module's docstring, as data: an importer reads a safetensors file, applies
  `np.transpose(w, axes)` where axes is given, and writes the result at our path.
  """
  linear = (1, 0)
  rows = [
      ("videomae.embeddings.patch_embeddings.projection.weight", "patch_embed.kernel",
       (2, 3, 4, 1, 0)),
      ("videomae.embeddings.patch_embeddings.projection.bias", "patch_embed.bias", None),
  ]
  for i in range(depth):
    hf, ours = f"videomae.encoder.layer.{i}", f"blocks.{i}"
    rows += [
        (f"{hf}.layernorm_before.weight", f"{ours}.norm1.scale", None),
        (f"{hf}.layernorm_before.bias", f"{ours}.norm1.bias", None),
        (f"{hf}.attention.attention.query.weight", f"{ours}.attn.query.kernel", linear),
        (f"{hf}.attention.attention.key.weight", f"{ours}.attn.key.kernel", linear),
        (f"{hf}.attention.attention.value.weight", f"{ours}.attn.value.kernel", linear),
        (f"{hf}.attention.attention.q_bias", f"{ours}.attn.q_bias", None),
        (f"{hf}.attention.attention.v_bias", f"{ours}.attn.v_bias", None),
        (f"{hf}.attention.output.dense.weight", f"{ours}.attn.proj.kernel", linear),
        (f"{hf}.attention.output.dense.bias", f"{ours}.attn.proj.bias", None),
        (f"{hf}.layernorm_after.weight", f"{ours}.norm2.scale", None),
        (f"{hf}.layernorm_after.bias", f"{ours}.norm2.bias", None),
        (f"{hf}.intermediate.dense.weight", f"{ours}.mlp.fc1.kernel", linear),
        (f"{hf}.intermediate.dense.bias", f"{ours}.mlp.fc1.bias", None),
        (f"{hf}.output.dense.weight", f"{ours}.mlp.fc2.kernel", linear),
        (f"{hf}.output.dense.bias", f"{ours}.mlp.fc2.bias", None),
    ]
  rows += [
      ("fc_norm.weight", "fc_norm.scale", None),
      ("fc_norm.bias", "fc_norm.bias", None),
      ("classifier.weight", "head.kernel", linear),
      ("classifier.bias", "head.bias", None),
  ]
  return rows


def _vit_config(config):
  """Accepts a whole experiment config or its `model.vit` part."""
  if "model" in config:
    if "vit" not in config.model:
      raise ValueError("config.model has no `vit` section; see configs/synthetic.py for one.")
    return config.model.vit
  return config
