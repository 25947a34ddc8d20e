"""One forward function per system, and the container of every model a system needs.

`build_models(config, rngs)` returns an `nnx.Dict` whose top-level names are the parameter path
prefixes the trainer freezes by regex (`^vit/`, `^stae/`, `^prior/`, `^decoder/`, `^deepisc/`):

  system "stae":    vit, stae (attention + transforms), prior (FactorizedPrior of the latents),
                    decoder
  system "deepisc": vit, deepisc (which holds its own prior)

Every forward returns the same core keys, so training and evaluation treat systems alike:
  logits [B, classes] float32; reconstruction float32 [B,T,H,W,3] in 0..255;
  bits {"payload", "masks", "total"} estimated bits per clip [B] float32; latents (integer-valued).
The STAE forward adds the masks, indices and the split of mask bits (see `stae_forward`).

Operating points: for STAE a keep-ratio pair (rho_f, rho_s) from `config.model.stae.keep_ratios`,
for DeepISC a token count from `config.model.deepisc.token_choices`. Both are static (Python
numbers): each operating point compiles once.
"""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp

from stae_jax.models import deepisc as deepisc_lib
from stae_jax.models import vit as vit_lib
from stae_jax.models.decoder import Decoder
from stae_jax.models.entropy import FactorizedPrior, mask_bits, prior_settings
from stae_jax.models.stae import STAE

__all__ = [
    "SYSTEMS", "MODEL_SECTIONS", "build_models", "classifier_forward", "stae_forward", "system_forward",
    "operating_points",
]

SYSTEMS = ("stae", "deepisc")

#: The `config.model` sections each system builds from, beside the shared `vit` and `entropy`: a
#: change to another system's section leaves a system's trained stages valid (trainer's stage check).
MODEL_SECTIONS = {"stae": ("stae", "decoder"), "deepisc": ("deepisc",)}


def _check_system(config) -> str:
  system = config.system
  if system not in SYSTEMS:
    raise ValueError(f"config.system={system!r} is not one of {SYSTEMS}; pick one with "
                     "`--config=configs/<name>.py:system=stae`")
  return system


def build_prior(model_config, *, rngs: nnx.Rngs) -> FactorizedPrior:
  """The STAE latents' entropy model, from `config.model.entropy` (library defaults where absent).

  In pixel mode values span 0..2^q-1, so the initial density is made at least that wide (a narrow
  start would put most pixels in the tails)."""
  stae = model_config.stae
  settings = prior_settings(model_config.get("entropy", {}))
  channels = int(stae.latent_channels)
  if stae.mode == "pixel":
    channels = 3
    settings["init_scale"] = max(settings["init_scale"], float(2 ** stae.pixel_bits))
  return FactorizedPrior(channels, **settings, rngs=rngs)


def build_models(config, rngs: nnx.Rngs) -> nnx.Dict:
  """Instantiates what `config.system` needs, under the top-level names listed in the module doc."""
  system = "classifier" if config.system == "classifier" else _check_system(config)
  vit = vit_lib.vit_from_config(config, rngs=rngs)
  if system == "classifier":  # stage 1: the ViT alone, shared by every compression system
    return nnx.Dict(vit=vit)
  if system == "stae":
    if "stae" not in config.model or "decoder" not in config.model:
      raise ValueError("config.model needs `stae` and `decoder` sections for system='stae'; see "
                       "configs/synthetic.py")
    return nnx.Dict(vit=vit, stae=STAE.from_config(config.model.stae, rngs=rngs),
                    prior=build_prior(config.model, rngs=rngs),
                    decoder=Decoder.from_config(config.model.decoder, rngs=rngs))
  return nnx.Dict(vit=vit, deepisc=deepisc_lib.deepisc_from_config(config, rngs=rngs))


def classifier_forward(models, video) -> dict:
  """The ViT on clean clips (stage 1, and the accuracy-loss reference)."""
  return dict(logits=models["vit"](video))


def stae_forward(models, video, *, frame_keep: float, block_keep: float, training: bool,
                 rng=None) -> dict:
  """STAE end to end: select, encode, quantise, estimate bits, decode, classify.

  video: uint8 or float 0..255 [B,T,H,W,3]. frame_keep, block_keep: keep ratios (static).
  training: noisy rate, straight-through rounding and selection (needs rng).

  Returns, besides the core keys (module doc):
    bits: {"frame_mask": log2 C(T, k_f), "block_masks": k_f * log2 C(N, k_s) (exact costs of the
      adaptive Bernoulli mask code), "masks": their sum, "payload": -log2 prior likelihood of the
      latents (noisy in training), "total"}, each float32 [B];
    frame_mask bool [B,T]; block_mask bool [B,T,N] (False in dropped frames);
    frame_index int32 [B,k_f] and block_index int32 [B,k_f,k_s] (ascending: the coding order of
      `latents` [B,k_f,k_s,h,w,C]); received and pixel_mask (the decoder's inputs);
    frame_scores [B,T], block_scores [B,T,N]; in training, synthesised [B,T,H,W,3] (every block
    through the block transforms, for the `block_reconstruction` loss).
  """
  stae, prior, decoder = models["stae"], models["prior"], models["decoder"]
  encoded = stae(video, frame_keep=frame_keep, block_keep=block_keep, training=training, rng=rng)
  b, t = encoded["frame_mask"].shape
  n = encoded["block_mask"].shape[-1]
  k_f, k_s = encoded["block_index"].shape[1:]
  # rate_weight is 1 (inference) or a straight-through mask (training): the rate's gradient then
  # tells the attention modules which blocks are expensive.
  latent_bits = prior.bits(encoded["rate_latents"]).sum(axis=(-3, -2, -1))
  payload = (latent_bits * encoded["rate_weight"]).reshape(b, -1).sum(axis=-1)
  frame_mask_bits = jnp.full((b,), mask_bits(t, k_f), jnp.float32)
  block_mask_bits = jnp.full((b,), k_f * mask_bits(n, k_s), jnp.float32)
  masks = frame_mask_bits + block_mask_bits
  reconstruction = decoder(encoded["received"], encoded["pixel_mask"])
  extra = {"synthesised": encoded["synthesised"]} if "synthesised" in encoded else {}
  if training and stae.selection_gradient == "task":
    # The same decoder input with the masks held constant: its pixel error trains the block
    # transforms and the decoder but says nothing to the attention modules, which then hear only
    # the classifier (through `reconstruction`) and the rate. Costs one more decoder pass.
    fixed_mask = jax.lax.stop_gradient(encoded["pixel_mask"])
    extra["pixel_reconstruction"] = decoder(encoded["synthesised"] * fixed_mask, fixed_mask)
  return dict(**extra,
      logits=models["vit"](reconstruction),
      reconstruction=reconstruction,
      bits=dict(frame_mask=frame_mask_bits, block_masks=block_mask_bits, masks=masks,
                payload=payload, total=payload + masks),
      latents=encoded["latents"],
      frame_mask=encoded["frame_mask"],
      block_mask=encoded["block_mask"],
      frame_index=encoded["frame_index"],
      block_index=encoded["block_index"],
      received=encoded["received"],
      pixel_mask=encoded["pixel_mask"],
      frame_scores=encoded["frame_scores"],
      block_scores=encoded["block_scores"],
  )


def operating_points(config) -> tuple:
  """The static operating points a system is trained over and evaluated at."""
  system = _check_system(config)
  if system == "stae":
    return tuple(tuple(float(r) for r in pair) for pair in config.model.stae.keep_ratios)
  return tuple(int(k) for k in config.model.deepisc.token_choices)


def system_forward(config, models, video, *, operating_point, training: bool, rng=None) -> dict:
  """Dispatches on `config.system`. operating_point: (rho_f, rho_s) for "stae"; an int token count
  (or None: one drawn per clip, training only) for "deepisc"."""
  system = _check_system(config)
  if system == "stae":
    try:
      frame_keep, block_keep = operating_point
    except (TypeError, ValueError):
      raise ValueError(f"system 'stae' takes operating_point=(frame_keep, block_keep), got "
                       f"{operating_point!r}") from None
    return stae_forward(models, video, frame_keep=frame_keep, block_keep=block_keep,
                        training=training, rng=rng)
  return deepisc_lib.deepisc_forward(models["deepisc"], models["vit"], video,
                                     num_tokens=operating_point, training=training, rng=rng)
