"""A trained system split where the real link splits it: device (encode + code), server (decode + classify).

Training runs a system end to end in one function (`stae_jax.models.systems`); here the same models
are cut at the bitstream, so that what the server decodes is only what was actually sent:

  device  `encode(video)`            STAE: attention, selection, analysis, rounding -> masks and
                                     integer latents. DeepISC: per-frame tokens, first k, rounded.
          `payloads(...)` + coding   host NumPy: `stae_jax.coding.bitstream.encode_batch`
  server  decoding                   `decode_batch` -> ClipPayloads
          `decode(payloads)`         STAE: synthesis of the received blocks, scattered into an empty
                                     clip, 3D-2D decoder. DeepISC: its per-frame decoder.
          `classify(clip)`           the system's ViT

Every model step is a `jax.jit` of a pure function of the `nnx.split` state, compiled once per
operating point and batch shape. Random block selection (the "neither attention" ablation) takes a
fixed key, so a clip is always compressed the same way.
"""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from stae_jax.coding import bitstream
from stae_jax.evaluation.loading import TrainedModels
from stae_jax.models import stae as stae_lib
from stae_jax.models.entropy import mask_bits, quantize

SELECTION_KEY = 0


def point_name(system: str, point) -> str:
  """A readable, stable name of an operating point: `keep=0.5x0.25` or `tokens=4`."""
  if system == "stae":
    return "keep=" + "x".join(f"{float(r):g}" for r in point)
  return f"tokens={int(point)}"


class SystemCodec:
  """Device and server halves of one trained system, jitted per operating point."""

  def __init__(self, trained: TrainedModels):
    from stae_jax.models import systems  # pylint: disable=g-import-not-at-top
    self.trained = trained
    self.system = trained.config.system
    self.tables = trained.tables
    self.points = tuple(systems.operating_points(trained.config))
    graphdef, params, rest = trained.graphdef, trained.params, trained.rest
    self._state = (params, rest)

    def encode(params, rest, video, point):
      models = nnx.merge(graphdef, params, rest)
      if self.system == "stae":
        frame_keep, block_keep = point
        out = models["stae"](video, frame_keep=frame_keep, block_keep=block_keep, training=False,
                             rng=jax.random.PRNGKey(SELECTION_KEY))
        b, t = out["frame_mask"].shape
        k_f, k_s = out["latents"].shape[1:3]
        masks = mask_bits(t, k_f) + k_f * mask_bits(out["block_mask"].shape[-1], k_s)
        bits = models["prior"].bits(out["latents"]).reshape(b, -1).sum(axis=-1) + masks
        return dict(latents=out["latents"], frame_mask=out["frame_mask"],
                    block_mask=out["block_mask"], estimated_bits=bits)
      model = models["deepisc"]
      latents = quantize(model.encode(video)[:, :, :point], training=False)[1]
      bits = model.prior.bits(latents).reshape(latents.shape[0], -1).sum(axis=-1)
      return dict(latents=latents, estimated_bits=bits)

    def decode(params, rest, latents, frame_index, block_index, point, frames, height, width):
      models = nnx.merge(graphdef, params, rest)
      if self.system != "stae":
        return models["deepisc"].decode(latents, point)
      stae = models["stae"]
      b, k_f, k_s = block_index.shape
      p = stae.block_size
      n = (height // p) * (width // p)
      decoded = stae.synthesise(latents)  # [B,k_f,k_s,p,p,3]
      batch = jnp.arange(b)[:, None, None]
      place = (batch, frame_index[:, :, None], block_index)
      dense = jnp.zeros((b, frames, n, p, p, 3), jnp.float32).at[place].set(decoded)
      weight = jnp.zeros((b, frames, n), jnp.float32).at[place].set(1.0)
      received = stae_lib.unblockify(dense, height, width)
      pixel_mask = stae_lib.unblockify(
          jnp.broadcast_to(weight[..., None, None, None], (b, frames, n, p, p, 1)), height, width)
      return models["decoder"](received, pixel_mask)

    def classify(params, rest, clip):
      return nnx.merge(graphdef, params, rest)["vit"](clip)

    self._encode = jax.jit(encode, static_argnums=3)
    self._decode = jax.jit(decode, static_argnums=(5, 6, 7, 8))
    self._classify = jax.jit(classify)

  # --- device -----------------------------------------------------------------------------------

  def encode(self, video: np.ndarray, point) -> dict[str, np.ndarray]:
    """uint8 [B,T,H,W,3] -> host arrays: latents, masks (STAE), estimated_bits [B] (the learned
    rate: -log2 prior likelihood of the latents, plus log2 C(n, k) per mask)."""
    out = self._encode(*self._state, jnp.asarray(video), self._point(point))
    return jax.tree_util.tree_map(np.asarray, jax.block_until_ready(out))

  def to_bitstreams(self, encoded: dict[str, np.ndarray]) -> tuple[list[bytes], dict]:
    """Range-codes a batch (host NumPy, one stream per clip)."""
    if self.system == "stae":
      args = bitstream.stae_batch(encoded["frame_mask"], encoded["block_mask"], encoded["latents"])
      return bitstream.encode_batch(args.pop("latents"), self.tables, **args)
    return bitstream.encode_batch(np.asarray(encoded["latents"]).astype(np.int32), self.tables)

  # --- server -----------------------------------------------------------------------------------

  def from_bitstreams(self, streams) -> list[bitstream.ClipPayload]:
    return bitstream.decode_batch(streams, self.tables)

  def decode(self, payloads: list[bitstream.ClipPayload], point, clip_shape) -> np.ndarray:
    """Decoded payloads (equal shapes) -> reconstructed clips float32 [B,T,H,W,3] in 0..255."""
    frames, height, width = (int(d) for d in clip_shape[:3])
    latents = np.stack([p.latents for p in payloads]).astype(np.float32)
    if self.system == "stae":
      frame_index = np.stack([np.flatnonzero(p.frame_mask) for p in payloads]).astype(np.int32)
      block_index = np.stack([
          np.stack([np.flatnonzero(row) for row in p.block_masks]) for p in payloads]).astype(np.int32)
    else:
      frame_index = block_index = np.zeros((len(payloads), 1, 1), np.int32)
    out = self._decode(*self._state, jnp.asarray(latents), jnp.asarray(frame_index),
                       jnp.asarray(block_index), self._point(point), frames, height, width)
    return jax.block_until_ready(out)

  def classify(self, clip) -> np.ndarray:
    return np.asarray(jax.block_until_ready(self._classify(*self._state, jnp.asarray(clip))))

  def _point(self, point):
    return tuple(float(r) for r in point) if self.system == "stae" else int(point)


class Classifier:
  """The stage-1 ViT alone: the reference, and the classifier of the H.264 and raw baselines."""

  def __init__(self, trained: TrainedModels):
    vit_graphdef, vit_state = nnx.split(trained.merge()["vit"])
    self._state = vit_state
    self._classify = jax.jit(lambda state, clip: nnx.merge(vit_graphdef, state)(clip))

  def classify(self, clip) -> np.ndarray:
    return np.asarray(jax.block_until_ready(self._classify(self._state, jnp.asarray(clip))))

