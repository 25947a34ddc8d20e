"""DeepISC (our reconstruction) as a method: models, training forward, operating points, codec.

The system entry (`config.systems.deepisc`, method "deepisc") holds model.deepisc (the keyword
arguments of `stae_jax.models.deepisc.DeepISC`; the frame size comes from `config.data`) and
model.entropy (its FactorizedPrior's settings and the coding tables' `tail_mass`). Models: `vit`
(shared) and `deepisc`, which holds its own prior (`deepisc/prior`).

Operating points: tokens sent per frame (`model.deepisc.token_choices`). Training draws a count
per clip (one compile for all), evaluation sends a fixed count (one compile each).
"""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from stae_jax.coding import bitstream
from stae_jax.models import deepisc as deepisc_lib
from stae_jax.models.entropy import quantize
from stae_jax.systems import base
from stae_jax.systems.base import DecodeError, Point

LABEL = "DeepISC"
LEARNED = True
LOSS_TERMS = ("task", "distill", "reconstruction", "rate")
PRIOR_KEYS = ("filters", "init_scale", "likelihood_bound")


def point(tokens: int) -> Point:
  return Point.of(f"tokens={int(tokens)}", tokens_per_frame=int(tokens))


def operating_points(entry) -> tuple[Point, ...]:
  return tuple(point(k) for k in entry.model.deepisc.token_choices)


def training_points(entry) -> tuple[None]:
  """None: a token count drawn per clip inside the step (`deepisc_forward(num_tokens=None)`)."""
  del entry
  return (None,)


def point_inputs(entry, point: Point) -> dict:
  """The traced form of `point` for the trainer's evaluation (one compile for every point): its
  token count as an array, which `deepisc_forward` takes per clip."""
  del entry
  return dict(tokens_per_frame=np.int32(point["tokens_per_frame"]))


def build(entry, data_config, *, rngs: nnx.Rngs) -> dict:
  if "deepisc" not in entry.model:
    raise ValueError("system entry of method 'deepisc' needs model.deepisc; see configs/common.py "
                     "(deepisc_system)")
  entropy = entry.model.get("entropy", {})
  prior = {key: entropy[key] for key in PRIOR_KEYS if key in entropy}
  return dict(deepisc=deepisc_lib.DeepISC(frame_size=int(data_config.resolution),
                                          **entry.model.deepisc, prior=prior, rngs=rngs))


def entropy_model(models):
  return models["deepisc"].prior


def summary(entry) -> dict:
  d = entry.model.deepisc
  return dict(method="deepisc", patch=int(d.patch), channels=int(d.channels),
              max_tokens=int(d.max_tokens))


def forward(models, video, point, *, training: bool, rng=None) -> dict:
  """`deepisc_forward` at `point`: a Point (static: latents sliced), `point_inputs`' dict (a traced
  count, the same for every clip) or None (a count drawn per clip; training only)."""
  if point is None:
    tokens = None
  elif isinstance(point, Point):
    tokens = point["tokens_per_frame"]
  else:
    tokens = jnp.broadcast_to(jnp.asarray(point["tokens_per_frame"], jnp.int32), video.shape[:1])
  return deepisc_lib.deepisc_forward(models["deepisc"], models["vit"], video, num_tokens=tokens,
                                     training=training, rng=rng)


def extra_losses(out, video, weights, losses) -> dict:
  """DeepISC has no loss term beyond the shared ones."""
  del out, video, weights, losses
  return {}


class DeepISCCodec(base.Codec):
  """A trained DeepISC system's device half (encoder, first k tokens, rounding, range coder) and
  server half (range decoder, its decoder), jitted per point."""
  kind = "deepisc"

  def __init__(self, trained: base.Trained):
    entry = trained.entry
    self.tag, self.trained, self.tables = trained.tag, trained, trained.tables
    self.label = LABEL if trained.tag == entry.method else f"{LABEL} ({trained.tag})"
    self.variant_of = None if trained.tag == entry.method else entry.method
    self.headline = self.variant_of is None
    self.tuned_classifier = f"its own ViT (as its {trained.directory.name} stage left it)" if (
        trained.directory is not None) else "its own ViT"
    self.points = operating_points(entry)
    self.clip_shape = trained.clip_shape
    self._entry = entry
    self._channels = int(entry.model.deepisc.channels)
    graphdef = trained.graphdef
    self._state = (trained.params, trained.rest)

    def encode(params, rest, video, point):
      model = nnx.merge(graphdef, params, rest)["deepisc"]
      latents = quantize(model.encode(video)[:, :, :point["tokens_per_frame"]], training=False)[1]
      bits = model.prior.bits(latents).reshape(latents.shape[0], -1).sum(axis=-1)
      return dict(latents=latents, estimated_bits=bits)

    def decode(params, rest, latents, point):
      return nnx.merge(graphdef, params, rest)["deepisc"].decode(latents, point["tokens_per_frame"])

    def classify(params, rest, clip):
      return nnx.merge(graphdef, params, rest)["vit"](clip)

    self._encode = jax.jit(encode, static_argnums=3)
    self._decode = jax.jit(decode, static_argnums=3)
    self._classify = jax.jit(classify)

  def summary(self) -> dict:
    return summary(self._entry)

  def _symbols(self, point: Point) -> int:
    return self.clip_shape[0] * point["tokens_per_frame"] * self._channels

  def max_stream_bytes(self, point: Point) -> int:
    return 64 + 9 * self._symbols(point)

  def encode(self, clips, point: Point) -> dict:
    clips = base.check_clips(clips, self.clip_shape)
    out = self._encode(*self._state, jnp.asarray(clips), point)
    return jax.tree_util.tree_map(np.asarray, jax.block_until_ready(out))

  def entropy_encode(self, encoded: dict, point: Point) -> base.Coded:
    streams, _ = bitstream.encode_batch(np.asarray(encoded["latents"]).astype(np.int32), self.tables)
    return base.Coded(streams=streams, estimated_bits=np.asarray(encoded["estimated_bits"]))

  def entropy_decode(self, streams, point: Point) -> np.ndarray:
    point = self.point(point)
    streams = base.check_streams(streams, self.max_stream_bytes(point))
    want = bitstream.Header(None, None, None, None,
                            (self.clip_shape[0], point["tokens_per_frame"]))
    for i, stream in enumerate(streams):  # what each header declares, before anything is decoded
      header = bitstream.read_header(stream, self.tables, max_latent_symbols=self._symbols(point))
      if header != want:
        masks = header.frames is not None or header.blocks is not None
        raise DecodeError(f"stream {i} does not hold a {self.tag!r} clip at {point.name}: its "
                          f"header declares {'masks and ' if masks else ''}latents "
                          f"{list(header.lead)} x C, expected latents {list(want.lead)} x C and "
                          "no masks")
    payloads = bitstream.decode_batch(streams, self.tables,
                                      max_latent_symbols=self._symbols(point))
    expected = (self.clip_shape[0], point["tokens_per_frame"], self._channels)
    for i, p in enumerate(payloads):
      if p.frame_mask is not None or p.block_masks is not None or tuple(p.latents.shape) != expected:
        raise DecodeError(f"stream {i} does not hold a {self.tag!r} clip at {point.name}: expected "
                          f"latents {list(expected)} and no masks, got {list(p.latents.shape)}")
    return np.stack([p.latents for p in payloads]).astype(np.float32)

  def decode(self, received: np.ndarray, point: Point):
    return jax.block_until_ready(self._decode(*self._state, jnp.asarray(received), point))

  def classify(self, clips) -> np.ndarray:
    return np.asarray(jax.block_until_ready(self._classify(*self._state, jnp.asarray(clips))))

  def fingerprint(self) -> str:
    return self.tables.table_hash


def codec(trained: base.Trained) -> DeepISCCodec:
  return DeepISCCodec(trained)
