"""STAE as a method: its models, training forward, rate, operating points and codec.

The system entry (`config.systems.<tag>`, method "stae") holds its model sections, each the
keyword arguments of one constructor:
  model.stae     -> `stae_jax.models.stae.STAE` (keep_ratios: the operating points it trains for)
  model.decoder  -> `stae_jax.models.decoder.Decoder`
  model.entropy  -> `stae_jax.models.entropy.FactorizedPrior` (filters, init_scale,
                    likelihood_bound) and the coding tables' `tail_mass`; with `context=True`
                    the conditional `ContextPrior` (optionally `context_thresholds`,
                    `context_channel_clip`), whose context is the canvas of blocks as last sent
                    and the previous channel's residual
  model.skip     -> `stae_jax.models.skip.Settings` (optional; its defaults otherwise): the
                    points at which the codec skips blocks (copies them from the previous kept
                    frame, moved, instead of sending their code); nothing of training changes
  model.refine   -> `stae_jax.models.refine.Settings` (optional; its defaults otherwise): the
                    codec's refined points beside the keep ratios (each coded block of the
                    first or every kept frame also sends a quantised DCT of what its code
                    misses); nothing of training changes
Its models, under the parameter path prefixes the trainer freezes by regex: `vit` (shared, built by
the trainer), `stae`, `prior`, `decoder`.

One device path and one server path: the codec's device half is `STAE.encode` + the range coder,
its server half the range decoder + `STAE.receive` + the decoder; the training forward runs the
same modules densely (`STAE.__call__`). One rate estimate (`rate_bits`) serves training,
evaluation and benchmarks; payload <-> indices conversion happens here only (`to_payloads`,
`from_payloads`), so the generic coder (`stae_jax.coding`) knows payloads, not STAE.
"""

from __future__ import annotations

import itertools
import math
import time

from absl import logging
from flax import nnx
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from stae_jax.coding import bitstream
from stae_jax.models.decoder import Decoder, temporal_fill
# ContextPrior: also for callers.
from stae_jax.models.entropy import ContextPrior, FactorizedPrior, mask_bits, mask_bits_traced
from stae_jax.models import refine as refine_lib
from stae_jax.models import skip as skip_lib
from stae_jax.models.stae import STAE, uniform_table
from stae_jax.systems import base
from stae_jax.systems.base import DecodeError, Point

LABEL = "STAE"
LEARNED = True
#: Loss-weight keys a STAE stage accepts (the trainer refuses others by name).
LOSS_TERMS = ("task", "distill", "reconstruction", "block_reconstruction", "rate")
#: Fixed key of the selection at inference ("random" selection compresses a clip the same way
#: every time it is sent).
SELECTION_KEY = 0
PRIOR_KEYS = ("filters", "init_scale", "likelihood_bound")


def point(frame_keep: float, block_keep: float, skip: float | None = None,
          refine: tuple | None = None) -> Point:
  """A keep-ratio point; `skip`: its skip lambda (`stae_jax.models.skip`), None where it sends
  every kept block's code (the setting is absent then); `refine`: (step, "first" or "all") where
  its coded blocks are refined (`stae_jax.models.refine`; named ",refine=<step>", "@first" for
  the first kept frame only)."""
  frame_keep, block_keep = float(frame_keep), float(block_keep)
  extra = {} if skip is None else dict(skip=float(skip))
  name = f"keep={frame_keep:g}x{block_keep:g}"
  if refine is not None:
    step, frames = float(refine[0]), str(refine[1])
    extra.update(refine=step, refine_frames=frames)
    name += f",refine={step:g}" + ("@first" if frames == "first" else "")
  return Point.of(name, frame_keep=frame_keep, block_keep=block_keep, **extra)


def skip_settings(entry) -> skip_lib.Settings:
  """The entry's `model.skip` over `skip_lib.Settings`' defaults."""
  return skip_lib.Settings(**dict(entry.model.get("skip", None) or {}))


def refine_settings(entry) -> refine_lib.Settings:
  """The entry's `model.refine` over `refine_lib.Settings`' defaults."""
  return refine_lib.Settings(**dict(entry.model.get("refine", None) or {}))


def operating_points(entry) -> tuple[Point, ...]:
  """The keep-ratio pairs (rho_f, rho_s) of `model.stae.keep_ratios`, as Points, each with its
  skip lambda where `skip_settings` skips there (conditional entropy model only): the points the
  model is trained and the trainer evaluates at. The codec has `refined_points` too."""
  settings = skip_settings(entry)
  conditional = bool(entry.model.get("entropy", {}).get("context", False))
  return tuple(point(f, b, settings.lam_at(f, b, conditional))
               for f, b in entry.model.stae.keep_ratios)


def refined_points(entry) -> tuple[Point, ...]:
  """The codec's refined points (`refine_settings`): each at a keep ratio (frame_keep, 1) of
  `model.stae.keep_ratios`, skipping as that point does. They need the conditional entropy model
  (version 3 carries refinements), mode "latent" and 8x8 blocks; where an entry sets no
  `model.refine`, the defaults' points that it cannot have (those conditions, or no such keep
  ratio: the attention switches' keep ratios, other datasets' configs) are left out, and an
  entry that names one it cannot have is refused."""
  stae = entry.model.stae
  conditional = bool(entry.model.get("entropy", {}).get("context", False))
  explicit = entry.model.get("refine", None) is not None
  pairs = {(float(f), float(b)) for f, b in stae.keep_ratios}
  fits = conditional and stae.get("mode", "latent") != "pixel" and (
      int(stae.block_size) == refine_lib.SIZE)
  out = []
  for frame_keep, step, frames in refine_settings(entry).points:
    if not fits or (float(frame_keep), 1.0) not in pairs:
      if explicit:
        raise ValueError(
            f"model.refine's point at frame_keep {frame_keep} needs the conditional entropy "
            f"model, mode 'latent', block_size {refine_lib.SIZE} and the keep ratio "
            f"({frame_keep}, 1.0) in model.stae.keep_ratios {sorted(pairs)}; remove it "
            "(model.refine=dict(points=()) for none)")
      continue
    lam = skip_settings(entry).lam_at(frame_keep, 1.0, conditional)
    out.append(point(frame_keep, 1.0, lam, (step, frames)))
  return tuple(out)


def training_points(entry) -> tuple[None]:
  """None: every training clip draws its own operating point inside the step (`STAE.__call__`
  with no point), so one compile trains every point and each step sees all of them."""
  return (None,)


def point_inputs(entry, point: Point) -> dict:
  """The traced form of `point` for the trainer's evaluation: its index in `keep_ratios`, so one
  compiled evaluation step serves every point (`forward` with a dict point)."""
  pairs = [tuple(float(v) for v in pair) for pair in entry.model.stae.keep_ratios]
  key = (float(point["frame_keep"]), float(point["block_keep"]))
  if key not in pairs:
    raise ValueError(f"{point.name} is not one of model.stae.keep_ratios {pairs}")
  return dict(point_index=np.int32(pairs.index(key)))


def build_prior(entry, data_config, *, rngs: nnx.Rngs) -> FactorizedPrior | ContextPrior:
  """The latents' entropy model: factorized, or conditional with `model.entropy.context` (its
  grid is the clip's block grid, resolution // block_size blocks wide). In pixel mode values span
  0..2^q-1, so the initial density is made at least that wide (a narrow start would put most
  pixels in the tails)."""
  stae, entropy = entry.model.stae, entry.model.get("entropy", {})
  settings = {key: entropy[key] for key in PRIOR_KEYS if key in entropy}
  if "filters" in settings:
    settings["filters"] = tuple(settings["filters"])
  channels = int(stae.get("latent_channels", 8))
  if stae.get("mode", "latent") == "pixel":
    channels = 3
    settings["init_scale"] = max(float(settings.get("init_scale", 10.0)),
                                 float(2 ** stae.get("pixel_bits", 6)))
  if entropy.get("context", False):
    if "context_thresholds" in entropy:
      settings["thresholds"] = tuple(entropy["context_thresholds"])
    if "context_channel_clip" in entropy:
      settings["channel_clip"] = int(entropy["context_channel_clip"])
    grid_width = int(data_config.resolution) // int(stae.block_size)
    return ContextPrior(channels, grid_width=grid_width, **settings, rngs=rngs)
  return FactorizedPrior(channels, **settings, rngs=rngs)


def build(entry, data_config, *, rngs: nnx.Rngs) -> dict:
  """STAE's modules beside the shared ViT, in the order they draw from `rngs`."""
  for section in ("stae", "decoder"):
    if section not in entry.model:
      raise ValueError(f"system entry of method 'stae' needs model.{section}; see "
                       "configs/common.py (stae_system)")
  return dict(stae=STAE(**entry.model.stae, rngs=rngs),
              prior=build_prior(entry, data_config, rngs=rngs),
              decoder=Decoder(**entry.model.decoder, rngs=rngs))


def entropy_model(models) -> FactorizedPrior | ContextPrior:
  return models["prior"]


def summary(entry) -> dict:
  s = entry.model.stae
  skip = skip_settings(entry)
  return dict(method="stae", frame_attention=bool(s.get("frame_attention", True)),
              spatial_attention=bool(s.get("spatial_attention", True)),
              skip=dict(lam=skip.lam, search=skip.search, min_frame_keep=skip.min_frame_keep),
              refine=[list(p) for p in refine_settings(entry).points],
              selection=s.get("selection", "attention"),
              frame_rule=s.get("frame_rule", "top_k"), block_size=int(s.block_size),
              latent_channels=int(s.get("latent_channels", 8)), mode=s.get("mode", "latent"),
              entropy_context=bool(entry.model.get("entropy", {}).get("context", False)))


# ------------------------------------------------------------------------------------------------
# Frames chosen on validation clips (frame_rule="chosen")
# ------------------------------------------------------------------------------------------------

def kept_frames_view(video, keep):
  """What the classifier sees of clips [B,T,H,W,3] when only the frames `keep` (float, 1 on kept
  frames: [T] for every clip or [B,T] per clip) arrive, exactly and with every block: the others
  filled by the receiver's rule (`temporal_fill`), float32 0..255. Frame choice alone, before any
  coding."""
  keep = jnp.broadcast_to(jnp.asarray(keep, jnp.float32), video.shape[:2])
  mask = jnp.broadcast_to(keep[:, :, None, None, None], video.shape[:4] + (1,))
  return temporal_fill(video.astype(jnp.float32) * mask, mask)[0]


def choose_frames(classify, videos, labels, ks, *, beam: int = 1, exhaustive: int = 128,
                  race: int = 24, batch: int = 32) -> tuple[np.ndarray, dict]:
  """For each k in `ks`, the k of the clips' T frames that `classify` reads best.

  classify: clips float32 0..255 [B,T,H,W,3] -> logits [B, classes] (the frozen classifier);
  videos uint8 [n,T,H,W,3] and labels int [n]: validation clips, never test clips. Score: top-1
  accuracy over the clips on `kept_frames_view` (the kept frames' exact pixels, the rest filled by
  the receiver's rule), ties broken by the mean log-probability of the true class. The search is
  `search_frames` (beam, exhaustive, race), over batches of `batch` clips. Why a race of 24: on the
  default's 160 validation clips and classifier, every race of 16 or more kept the frames the full
  search chose at k = 1, 2, 4 and 8 (the best pair ranked 10th of 120 on the first batch; a race
  of 8 chose other frames at k = 1 and 2) with 37% fewer batches scored (`python
  benchmarks/frame_race.py`; BENCHMARKS.md "Frames chosen in a race").

  Why (issue 31): on exact pixels the best fixed pair of 16 frames, [7, 10], scored 69.5% against
  44.9% for random pairs, and no per-clip rule trained by straight-through (top-k, one per stretch,
  learned combs) found such a pair (BENCHMARKS.md "Frame attention: where the learned frames go").

  Returns (table float32 [T + 1, T]: row k marks the chosen frames, the evenly spaced ones for
  every k not in `ks`; report {k: dict(frames, accuracy, evenly_spaced, subsets, raced, clips)};
  clips: the clips scored, whole batches of `batch`).
  """
  score_batch, batches, clips = frame_scorer(classify, videos, labels, batch=batch)
  return search_frames(score_batch, frames=np.shape(videos)[1], batches=batches, clips=clips,
                       ks=ks, beam=beam, exhaustive=exhaustive, race=race)


def frame_scorer(classify, videos, labels, *, batch: int):
  """`choose_frames`' score of a frame subset on one batch of the clips: returns
  (score_batch(subset, i) -> (clips right, summed log-probability of the true class) on batch i
  with only the frames `subset` arriving exactly, the number of batches, the clips in them: whole
  batches of `batch` only, so one compile)."""
  videos, labels = np.asarray(videos), np.asarray(labels)
  n, t = videos.shape[:2]
  if n == 0 or len(labels) != n:
    raise ValueError(f"choose_frames needs clips with one label each, got {n} clips and "
                     f"{len(labels)} labels")

  @jax.jit
  def right(video, label, keep):  # keep float32 [T]
    logits = classify(kept_frames_view(video, keep))
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return ((jnp.argmax(logits, -1) == label).sum(),
            jnp.take_along_axis(logp, label[:, None], axis=-1).sum())

  batch = min(int(batch), n)
  used = n - n % batch
  parts = [(jnp.asarray(videos[s:s + batch]), jnp.asarray(labels[s:s + batch], jnp.int32))
           for s in range(0, used, batch)]

  def score_batch(subset: tuple, index: int) -> tuple[float, float]:
    keep = np.zeros((t,), np.float32)
    keep[list(subset)] = 1.0
    hits, logp = right(*parts[index], jnp.asarray(keep))
    return float(hits), float(logp)

  return score_batch, len(parts), used


def search_frames(score_batch, *, frames: int, batches: int, clips: int, ks, beam: int,
                  exhaustive: int, race: int) -> tuple[np.ndarray, dict]:
  """`choose_frames`' search, over any scorer: score_batch(subset, i) -> (clips right, summed
  log-probability of the true class) of batch i (of `batches`, `clips` in all) with only the
  frames `subset` (a sorted tuple) arriving. Each (subset, batch) is scored once.

  Every k-subset where there are at most `exhaustive` (C(16, 2) = 120); otherwise grown from the
  best `beam` subsets of the largest smaller size searched, one frame at a time, keeping the best
  `beam` of each size (with T = 16 and k = 2, 4, 8: 120 + 27 + 42 = 189 subsets at beam 1). The
  evenly spaced subset is always a candidate and wins ties. `race` > 0: where a search step has
  more candidates than that, each is first scored on the first batch only, and only the `race`
  best of them go on to be scored on every batch (a race, as in successive halving); 0 scores
  every candidate on every batch. Returns (table, report) as `choose_frames` does.
  """
  if beam < 1:
    raise ValueError(f"beam must be >= 1, got {beam}")
  t = int(frames)
  scores: dict[tuple, tuple[float, float]] = {}
  sums: dict[tuple, list] = {}  # subset -> (right, log-probability) of the batches scored so far

  def scored_on(subset: tuple, count: int) -> tuple[float, float]:
    done = sums.setdefault(subset, [])
    done += [score_batch(subset, i) for i in range(len(done), count)]
    return (sum(a for a, _ in done[:count]), sum(b for _, b in done[:count]))

  def score(subset: tuple) -> tuple[float, float]:
    if subset not in scores:
      right_sum, logp_sum = scored_on(subset, batches)
      scores[subset] = (right_sum / clips, logp_sum / clips)
    return scores[subset]

  def finalists(candidates: list) -> list:
    """The candidates worth scoring on every batch: all of them, or the `race` best on the
    first."""
    if race <= 0 or batches < 2 or len(candidates) <= race:
      return candidates
    return sorted(candidates, key=lambda c: scored_on(c, 1), reverse=True)[:race]

  table = uniform_table(t)
  report, frontier = {}, {}
  for k in sorted({int(k) for k in ks}):
    if not 1 <= k < t:
      continue  # k = T keeps every frame: nothing to choose
    began, count, tried = time.perf_counter(), len(scores), len(sums)
    evenly = tuple(int(i) for i in np.flatnonzero(table[k]))
    if math.comb(t, k) <= exhaustive:
      candidates = list(itertools.combinations(range(t), k))
    else:
      searched = [m for m in frontier if m < k]
      if not searched:  # grow from single frames
        frontier[1] = sorted(finalists([(f,) for f in range(t)]), key=score, reverse=True)[:beam]
        searched = [1]
      size = max(searched)
      while size < k:
        grown = {tuple(sorted(s + (f,))) for s in frontier[size] for f in range(t) if f not in s}
        size += 1
        frontier[size] = sorted(finalists(sorted(grown)), key=score, reverse=True)[:beam]
      candidates = frontier[k]
    ranked = sorted(finalists(candidates), key=score, reverse=True)
    frontier[k] = ranked[:beam]
    best = max([evenly] + ranked, key=score)  # max keeps the first of equals: evenly spaced
    table[k] = 0.0
    table[k, list(best)] = 1.0
    report[k] = dict(frames=list(best), accuracy=score(best)[0], evenly_spaced=score(evenly)[0],
                     subsets=len(scores) - count, raced=len(sums) - tried, clips=clips)
    logging.info("chosen frames at k=%d of %d: %s, %.1f%% on %d validation clips (evenly spaced "
                 "%s: %.1f%%); %d subsets on every clip (%d tried) in %.0f s", k, t, list(best),
                 100 * score(best)[0], clips, list(evenly), 100 * score(evenly)[0],
                 len(scores) - count, len(sums) - tried, time.perf_counter() - began)
  return table, report


def choice_clips(batches, wanted: int) -> tuple[np.ndarray, np.ndarray]:
  """The first `wanted` clips and labels of validation `batches` ({"video", "label"[, "mask"]}:
  padding masked out), what the frames are chosen on."""
  videos, labels = [], []
  for batch in batches:
    keep = np.asarray(batch.get("mask", np.ones(len(batch["label"]), bool)))
    videos.append(np.asarray(batch["video"])[keep])
    labels.append(np.asarray(batch["label"])[keep])
    if sum(len(x) for x in labels) >= wanted:
      break
  if not labels or not sum(len(x) for x in labels):
    raise ValueError("frame_rule='chosen' chooses frames on validation clips and found none: "
                     "the dataset needs a validation split (config.data; see "
                     "stae_jax/data/pipeline.py)")
  return np.concatenate(videos)[:wanted], np.concatenate(labels)[:wanted]


def prepare(entry, graphdef, state, shardings, validation) -> tuple[dict, dict]:
  """Before a stage's first step: with `frame_rule="chosen"`, choose the frames (`choose_frames`)
  with the frozen classifier (`vit`, restored from the classifier stage) on the first
  `STAE.choice_clips` clips that `validation()` yields ({"video", "label"} batches), once: a
  later stage that starts from this one finds them chosen. Returns (state, report); the state
  is unchanged where there is nothing to choose."""
  models = nnx.merge(graphdef, state["params"], state["rest"])
  stae = models["stae"]
  if stae.chosen_frames is None or int(jax.device_get(stae.chosen_on[...])) > 0:
    return state, {}
  videos, labels = choice_clips(validation(), stae.choice_clips)
  t = videos.shape[1]
  ks = sorted({int(k_f) for k_f, _ in stae.keep_table(t, 1)})
  table, report = choose_frames(models["vit"], videos, labels, ks)
  if jax.process_count() > 1:
    # Each process read its own shard of the validation clips: every process keeps process 0's
    # choice, so the replicated model stays one model.
    table = np.asarray(multihost_utils.broadcast_one_to_all(table))
  stae.chosen_frames[...] = jnp.asarray(table)
  scored = max([r["clips"] for r in report.values()], default=len(labels))
  stae.chosen_on[...] = jnp.asarray(scored, jnp.int32)
  _, _, rest = nnx.split(models, nnx.Param, ...)
  place = lambda x, s: jax.make_array_from_callback(x.shape, s, lambda idx: np.asarray(x)[idx])
  rest = jax.tree_util.tree_map(place, jax.device_get(rest), shardings["rest"])
  return dict(state, rest=rest), {f"chosen_frames[k={k}]": r for k, r in report.items()}


# ------------------------------------------------------------------------------------------------
# Rate
# ------------------------------------------------------------------------------------------------

def _in_place(latents, block_index, blocks: int):
  """Kept latents [B,k_f,k_s,...] -> ([B,k_f,N,...] with each block in place, kept bool [B,k_f,N])."""
  b, k_f, _ = block_index.shape
  place = (jnp.arange(b)[:, None, None], jnp.arange(k_f)[None, :, None], block_index)
  dense = jnp.zeros((b, k_f, blocks) + latents.shape[3:], jnp.float32).at[place].set(latents)
  return dense, jnp.zeros((b, k_f, blocks), bool).at[place].set(True)


def rate_bits(prior, latents, weight, *, frames: int, blocks: int, k_f, k_s,
              rounded=None, block_index=None) -> dict:
  """The learned rate of a batch in bits per clip [B]: -log2 prior likelihood of the latents
  [B,M...,h,w,C] weighted by `weight` [B,M...] (1 at inference; straight-through masks in training,
  so the rate's gradient reaches the attention), plus the exact cost of the adaptive Bernoulli mask
  code: log2 C(T, k_f) for the frame mask, k_f * log2 C(N, k_s) for the block masks (k_f, k_s
  Python ints, or int32 [B] for points that are traced or drawn per clip: then from log-gamma).

  A conditional prior also needs where each latent is and what the decoder holds: in training
  (M... = (T, N)) `rounded`, the integers at every place, with the kept places weight > 1/2; at
  inference (M... = (k_f, k_s)) `block_index` [B,k_f,k_s], the latents being those integers."""
  b = latents.shape[0]
  if isinstance(prior, ContextPrior):
    if block_index is not None:
      latents, kept = _in_place(latents, block_index, blocks)
      rounded, weight = latents, kept.astype(jnp.float32)
    else:
      if rounded is None:
        raise ValueError("a conditional prior's training rate needs rounded=<the integers>")
      kept = weight > 0.5
    latent_bits = prior.bits(latents, rounded=rounded, kept=kept).sum(axis=(-3, -2, -1))
  else:
    latent_bits = prior.bits(latents).sum(axis=(-3, -2, -1))
  payload = (latent_bits * weight).reshape(b, -1).sum(axis=-1)
  if isinstance(k_f, int) and isinstance(k_s, int):
    frame_mask_bits = jnp.full((b,), mask_bits(frames, k_f), jnp.float32)
    block_mask_bits = jnp.full((b,), k_f * mask_bits(blocks, k_s), jnp.float32)
  else:
    frame_mask_bits = jnp.broadcast_to(mask_bits_traced(frames, k_f), (b,))
    block_mask_bits = jnp.broadcast_to(
        jnp.asarray(k_f, jnp.float32) * mask_bits_traced(blocks, k_s), (b,))
  masks = frame_mask_bits + block_mask_bits
  return dict(frame_mask=frame_mask_bits, block_masks=block_mask_bits, masks=masks,
              payload=payload, total=payload + masks)


def _block_bits(prior, dense, kept):
  """Bits of each block [B,K,N] of latents in place [B,K,N,h,w,C] under the entropy model, only
  the blocks `kept` [B,K,N] counting (and, for the conditional model, being context)."""
  if isinstance(prior, ContextPrior):
    bits = prior.bits(dense, rounded=dense, kept=kept)
  else:
    bits = prior.bits(dense)
  return bits.sum(axis=(-3, -2, -1)) * kept


def code_blocks(stae, prior, video, frame_index, block_index, latents, *, lam, search: int,
                refine_step: float | None = None, refine_frames: int = 0):
  """The device's closed loop at a point that sends every block of its kept frames: the refined
  blocks' levels (`stae_jax.models.refine`: the first `refine_frames` kept frames' blocks, where
  `refine_step` is not None), then the skip decisions (`stae_jax.models.skip.choose_skips`, where
  `lam` is not None) on the kept frames as the receiver will hold them (refinements included),
  each block's cost its bits under the entropy model (and its refinement's guessed bits).

  video [B,T,H,W,3]; frame_index [B,K], block_index [B,K,N] (every block), latents
  [B,K,N,h,w,C] from `STAE.encode`. Returns (latents with each skipped block's replaced by the
  values last sent at its place, as the bitstream needs; vectors int32 [B,K,N], -1 where not
  skipped; levels int32 [B,K,N,3,64], zero where not refined; estimated bits per clip [B] beside
  the masks: the blocks still coded, their repeat flags, the vectors and the refinements, each by
  its adaptive code's exact length)."""
  b, k_f, k_s = block_index.shape
  t, height, width = video.shape[1:4]
  p = stae.block_size
  n = (height // p) * (width // p)
  if k_s != n:
    raise ValueError(f"skipping and refining need every block of the kept frames ({n}), the "
                     f"point keeps {k_s}")
  received, _, _ = stae.receive(frame_index, block_index, latents, frames=t, height=height,
                                width=width)
  batch = jnp.arange(b)[:, None]
  intra = received[batch, frame_index]
  original = jnp.asarray(video, jnp.float32)[batch, frame_index]
  dense, kept = _in_place(latents, block_index, n)
  cost = _block_bits(prior, dense, kept)
  in_frames = jnp.broadcast_to(jnp.arange(k_f)[None, :, None] < refine_frames, (b, k_f, n))
  levels = jnp.zeros((b, k_f, n, 3, refine_lib.SIZE ** 2), jnp.int32)
  if refine_step is not None:  # only the refined frames are analysed (`refine_frames`: static)
    first = refine_lib.analyse(intra[:, :refine_frames], original[:, :refine_frames], refine_step)
    levels = levels.at[:, :refine_frames].set(first)
    intra = intra.at[:, :refine_frames].set(
        refine_lib.apply(intra[:, :refine_frames], first, refine_step))
    cost = cost + jnp.where(in_frames, refine_lib.decision_bits(levels), 0.0)
  skip = jnp.zeros((b, k_f, n), bool)
  bits = jnp.zeros((b,), jnp.float32)
  vectors = jnp.full((b, k_f, n), -1, jnp.int32)
  if lam is not None:
    _, skip, vector = skip_lib.choose_skips(intra, original, cost, lam, block_size=p,
                                            search=search)
    last_sent = jax.lax.cummax(jnp.where(skip, 0, jnp.arange(k_f)[None, :, None]), axis=1)
    latents = jnp.take_along_axis(latents, last_sent.reshape(last_sent.shape + (1,) * (
        latents.ndim - 3)), axis=1)
    vectors = jnp.where(skip, vector, -1).astype(jnp.int32)
    count = skip_lib.vector_count(search)
    skips = skip.sum(axis=(1, 2))
    counts = jax.nn.one_hot(jnp.where(skip, vector, count), count + 1).sum(axis=(1, 2))
    bits = (skip_lib.flag_bits(jnp.full((b,), (k_f - 1) * n), skips)
            + jnp.where(skips > 0, skip_lib.symbol_bits(counts.at[:, count].set(0.0)), 0.0))
  bits = bits + _block_bits(prior, dense, kept & ~skip).sum(axis=(1, 2))
  if refine_step is not None:
    levels = jnp.where(skip[..., None, None], 0, levels)
    bits = bits + refine_lib.bits(levels, in_frames & ~skip)
  return latents, vectors, levels, bits


# ------------------------------------------------------------------------------------------------
# Training forward
# ------------------------------------------------------------------------------------------------

def rebuild(decoder, received, pixel_mask, *, complete: bool):
  """The receiver's clip from the kept blocks in place: the 3D-2D CNN decoder's fill, or, where
  the point sends every block of every frame (`complete`, static), the received clip itself,
  which is what the decoder returns there anyway (it passes received pixels through untouched),
  without running it."""
  return received if complete else decoder(received, pixel_mask)


def forward(models, video, point, *, training: bool, rng=None) -> dict:
  """STAE end to end: select, encode, quantise, estimate bits, decode, classify.

  video: uint8 or float 0..255 [B,T,H,W,3]; point: a keep-ratio Point (static: inference gathers
  only what is sent), `point_inputs`' dict (a traced index into keep_ratios: the dense path, one
  compile for every point), or None (training only: a point drawn per clip).
  training: noisy rate, straight-through rounding and selection (needs rng).

  Returns logits [B, classes]; reconstruction float32 [B,T,H,W,3] in 0..255; bits (`rate_bits`);
  frame_mask bool [B,T]; block_mask bool [B,T,N]; received and pixel_mask (the decoder's inputs);
  frame_scores [B,T], block_scores [B,T,N]; for a static point also latents (integer-valued),
  frame_index int32 [B,k_f] and block_index int32 [B,k_f,k_s] (ascending: the coding order); in
  training, synthesised [B,T,H,W,3] (every block through the block transforms, for the
  `block_reconstruction` loss) and, with selection_gradient "task", pixel_reconstruction.
  """
  stae, prior, decoder = models["stae"], models["prior"], models["decoder"]
  if isinstance(point, Point):
    where = dict(frame_keep=point["frame_keep"], block_keep=point["block_keep"])
  else:
    where = dict(point_index=None if point is None else point["point_index"])
  # The named scopes name the parts of a compiled step in profiles (benchmarks/step_split.py).
  with jax.named_scope("stae_encoder"):
    encoded = stae(video, **where, training=training, rng=rng)
  t = encoded["frame_mask"].shape[1]
  n = encoded["block_mask"].shape[-1]
  k_f, k_s = encoded["keep"]
  dense = training or not isinstance(point, Point)  # the rate over [B,T,N] with masks
  with jax.named_scope("entropy_rate"):
    bits = rate_bits(prior, encoded["rate_latents"], encoded["rate_weight"], frames=t, blocks=n,
                     k_f=k_f, k_s=k_s, rounded=encoded["rate_rounded"],
                     block_index=None if dense else encoded["block_index"])
  complete = not dense and k_f == t and k_s == n
  with jax.named_scope("decoder"):
    reconstruction = rebuild(decoder, encoded["received"], encoded["pixel_mask"], complete=complete)
  extra = {"synthesised": encoded["synthesised"]} if "synthesised" in encoded else {}
  if training and stae.selection_gradient == "task":
    # The same decoder input with the masks held constant: its pixel error trains the block
    # transforms and the decoder but says nothing to the attention modules, which then hear only
    # the classifier (through `reconstruction`) and the rate. Costs one more decoder pass.
    fixed_mask = jax.lax.stop_gradient(encoded["pixel_mask"])
    extra["pixel_reconstruction"] = decoder(encoded["synthesised"] * fixed_mask, fixed_mask)
  for key in ("latents", "frame_index", "block_index"):
    if key in encoded:
      extra[key] = encoded[key]
  with jax.named_scope("classifier"):
    logits = models["vit"](reconstruction)
  return dict(**extra,
      logits=logits,
      reconstruction=reconstruction,
      bits=bits,
      frame_mask=encoded["frame_mask"],
      block_mask=encoded["block_mask"],
      received=encoded["received"],
      pixel_mask=encoded["pixel_mask"],
      frame_scores=encoded["frame_scores"],
      block_scores=encoded["block_scores"],
  )


def extra_losses(out, video, weights, losses) -> dict:
  """STAE's own loss term, {term: (value, metrics)}: the block transforms also learn from the
  blocks a keep ratio drops. `losses` is the trainer's loss library."""
  if "synthesised" not in out:
    return {}
  block_mse = losses.reconstruction_mse(out["synthesised"], video, weights)
  return {"block_reconstruction": (block_mse, {"block_psnr": losses.psnr_from_mse(block_mse)})}


# ------------------------------------------------------------------------------------------------
# Payloads <-> indices (the only place that knows how STAE's masks become a ClipPayload)
# ------------------------------------------------------------------------------------------------

def to_payloads(frame_index, block_index, latents, *, frames: int, blocks: int) -> dict:
  """Indices [B,k_f], [B,k_f,k_s] and integer-valued latents -> `bitstream.encode_batch` arguments:
  latents int32, frame_masks bool [B,T], block_masks bool [B,k_f,N] (the kept frames' rows)."""
  frame_index = np.asarray(frame_index)
  block_index = np.asarray(block_index)
  b, k_f, _ = block_index.shape
  frame_masks = np.zeros((b, frames), bool)
  np.put_along_axis(frame_masks, frame_index, True, axis=1)
  block_masks = np.zeros((b, k_f, blocks), bool)
  np.put_along_axis(block_masks, block_index, True, axis=2)
  latents = np.asarray(latents)
  if not np.array_equal(latents, np.round(latents)):
    raise ValueError("STAE latents are not integer-valued: pass STAE.encode's quantised latents")
  return dict(latents=latents.astype(np.int32), frame_masks=frame_masks, block_masks=block_masks)


def from_payloads(payloads) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Decoded payloads (checked to one shape) -> frame_index [B,k_f], block_index [B,k_f,k_s]
  int32 (ascending) and latents float32 [B,k_f,k_s,h,w,C]."""
  frame_index = np.stack([np.flatnonzero(p.frame_mask) for p in payloads]).astype(np.int32)
  block_index = np.stack([np.stack([np.flatnonzero(row) for row in p.block_masks])
                          for p in payloads]).astype(np.int32)
  latents = np.stack([p.latents for p in payloads]).astype(np.float32)
  return frame_index, block_index, latents


# ------------------------------------------------------------------------------------------------
# Codec
# ------------------------------------------------------------------------------------------------

class Received:
  """What the server decoded from a batch of STAE streams (payloads and their indices, their
  skip vectors int32 [B,k_f,k_s], -1 where not skipped, at a point that skips, and their refined
  blocks' levels int32 [B,k_f,k_s,3,64] at a refined point)."""

  def __init__(self, payloads):
    self.payloads = payloads
    self.frame_index, self.block_index, self.latents = from_payloads(payloads)
    stack = lambda key: np.stack([getattr(p, key) for p in payloads]).astype(np.int32) if (
        payloads and getattr(payloads[0], key) is not None) else None
    self.vectors, self.refinement = stack("vectors"), stack("refinement")


class STAECodec(base.Codec):
  """A trained STAE system's device and server halves, each model step jitted per point."""
  kind = "stae"

  def __init__(self, trained: base.Trained):
    entry = trained.entry
    self.tag, self.trained, self.tables = trained.tag, trained, trained.tables
    self.label = _label(trained.tag)
    self.variant_of = None if trained.tag == entry.method else entry.method
    self.headline = self.variant_of is None
    self.tuned_classifier = f"its own ViT (as its {trained.directory.name} stage left it)" if (
        trained.directory is not None) else "its own ViT"
    self.points = operating_points(entry) + refined_points(entry)
    self.clip_shape = trained.clip_shape
    self.block_size = int(entry.model.stae.block_size)
    self._search = skip_settings(entry).search
    self._vector_count = skip_lib.vector_count(self._search)
    self._entry = entry
    frames, height, width, _ = self.clip_shape
    self._frames, self._blocks = frames, (height // self.block_size) * (width // self.block_size)
    models = nnx.merge(trained.graphdef, trained.params, trained.rest)
    stae = models["stae"]
    self._latent_shape = stae.latent_shape()
    self._keep = {p: stae.keep_counts(frames, self._blocks, p["frame_keep"], p["block_keep"])
                  for p in self.points}
    graphdef, state = trained.graphdef, (trained.params, trained.rest)
    self._state = state

    def encode(params, rest, video, point):
      models = nnx.merge(graphdef, params, rest)
      key = jax.random.fold_in(jax.random.PRNGKey(SELECTION_KEY), 0)
      sent = models["stae"].encode(video, frame_keep=point["frame_keep"],
                                   block_keep=point["block_keep"], rng=key)
      k_f, k_s = sent["block_index"].shape[1:]
      bits = rate_bits(models["prior"], sent["latents"], jnp.ones(sent["block_index"].shape),
                       frames=video.shape[1], blocks=self._blocks, k_f=k_f, k_s=k_s,
                       block_index=sent["block_index"])
      out = dict(frame_index=sent["frame_index"], block_index=sent["block_index"],
                 latents=sent["latents"], estimated_bits=bits["total"])
      settings = point.as_dict()
      lam, step = settings.get("skip"), settings.get("refine")
      if lam is not None or step is not None:
        latents, vectors, levels, payload_bits = code_blocks(
            models["stae"], models["prior"], video, sent["frame_index"], sent["block_index"],
            sent["latents"], lam=lam, search=self._search, refine_step=step,
            refine_frames=self._refine_frames(point))
        out.update(latents=latents, estimated_bits=bits["masks"] + payload_bits)
        if lam is not None:
          out["vectors"] = vectors
        if step is not None:
          out["refinement"] = levels
      return out

    def decode(params, rest, frame_index, block_index, latents, vectors, refinement, search,
               step):
      models = nnx.merge(graphdef, params, rest)
      received, pixel_mask, _ = models["stae"].receive(frame_index, block_index, latents,
                                                       frames=frames, height=height, width=width)
      batch = jnp.arange(frame_index.shape[0])[:, None]
      if refinement is not None:  # refined blocks: the code's pixels + the levels' residual
        refined = refine_lib.apply(received[batch, frame_index], refinement, step)
        received = received.at[batch, frame_index].set(refined)
      if vectors is not None:  # skipped blocks: copies from the kept frame before, as rebuilt
        kept = skip_lib.rebuild_with_skips(received[batch, frame_index], vectors >= 0,
                                           jnp.maximum(vectors, 0), block_size=self.block_size,
                                           search=search)
        received = received.at[batch, frame_index].set(kept)
      complete = block_index.shape[1:] == (frames, self._blocks)
      return rebuild(models["decoder"], received, pixel_mask, complete=complete)

    def classify(params, rest, clip):
      return nnx.merge(graphdef, params, rest)["vit"](clip)

    self._encode = jax.jit(encode, static_argnums=3)
    self._decode = jax.jit(decode, static_argnums=(7, 8))
    self._classify = jax.jit(classify)

  def summary(self) -> dict:
    return summary(self._entry)

  def _refine_frames(self, point: Point) -> int:
    """How many kept frames a point refines (0: none)."""
    frames = point.as_dict().get("refine_frames")
    return 0 if frames is None else 1 if frames == "first" else self._keep[point][0]

  def max_stream_bytes(self, point: Point) -> int:
    k_f, k_s = self._keep[point]
    symbols = k_f * k_s * int(np.prod(self._latent_shape))
    # Header and masks, then at most 9 bytes per symbol (an escaped value's fields included),
    # and at most 3 bytes per skip vector or refinement symbol (a 24-bit coder cannot spend more
    # on one symbol; a refined block's three channels send at most 1 + 64 + 2 * 64 each).
    refined = self._refine_frames(point) * k_s * 3 * (1 + 3 * 64)
    return 64 + (self._frames + k_f * self._blocks) // 8 + 9 * symbols + 3 * k_f * k_s + (
        3 * refined)

  # --- device -----------------------------------------------------------------------------------

  def encode(self, clips, point: Point) -> dict:
    clips = base.check_clips(clips, self.clip_shape)
    out = self._encode(*self._state, jnp.asarray(clips), point)
    return jax.tree_util.tree_map(np.asarray, jax.block_until_ready(out))

  def entropy_encode(self, encoded: dict, point: Point) -> base.Coded:
    args = to_payloads(encoded["frame_index"], encoded["block_index"], encoded["latents"],
                       frames=self._frames, blocks=self._blocks)
    if "vectors" in encoded:
      args.update(vectors=np.asarray(encoded["vectors"]), vector_count=self._vector_count)
    if "refinement" in encoded:
      args.update(refinement=np.asarray(encoded["refinement"]),
                  refine_step=refine_lib.step_code(point["refine"]),
                  refine_frames=self._refine_frames(point))
    streams, _ = bitstream.encode_batch(args.pop("latents"), self.tables, **args)
    return base.Coded(streams=streams, estimated_bits=np.asarray(encoded["estimated_bits"]))

  # --- server -----------------------------------------------------------------------------------

  def entropy_decode(self, streams, point: Point) -> Received:
    point = self.point(point)
    k_f, k_s = self._keep[point]
    streams = base.check_streams(streams, self.max_stream_bytes(point))
    symbols = k_f * k_s * int(np.prod(self._latent_shape))
    skipping = point.as_dict().get("skip") is not None
    step = point.as_dict().get("refine")
    want = bitstream.Header(self._frames, k_f, self._blocks, k_s,
                            (k_f, k_s) + tuple(self._latent_shape[:-1]),
                            self._vector_count if skipping else 0,
                            0 if step is None else refine_lib.step_code(step),
                            self._refine_frames(point))
    for i, stream in enumerate(streams):  # what each header declares, before anything is decoded
      header = bitstream.read_header(stream, self.tables, max_latent_symbols=symbols)
      if header != want:
        raise DecodeError(f"stream {i} does not hold a {self.tag!r} clip at {point.name}: it "
                          f"declares {_declared(header)}, the point is {_declared(want)}")
    payloads = bitstream.decode_batch(streams, self.tables, max_latent_symbols=symbols)
    expected = (k_f, k_s) + tuple(self._latent_shape)
    for i, p in enumerate(payloads):
      if (p.frame_mask is None or p.block_masks is None or p.frame_mask.shape != (self._frames,)
          or p.block_masks.shape != (k_f, self._blocks) or tuple(p.latents.shape) != expected):
        raise DecodeError(
            f"stream {i} does not hold a {self.tag!r} clip at {point.name}: expected masks over "
            f"{self._frames} frames x {self._blocks} blocks keeping {k_f} x {k_s} and latents "
            f"{list(expected)}, got latents {list(p.latents.shape)}")
    return Received(payloads)

  def decode(self, received: Received, point: Point):
    vectors = None if received.vectors is None else jnp.asarray(received.vectors)
    refinement = None if received.refinement is None else jnp.asarray(received.refinement)
    out = self._decode(*self._state, jnp.asarray(received.frame_index),
                       jnp.asarray(received.block_index), jnp.asarray(received.latents), vectors,
                       refinement, self._search, point.as_dict().get("refine"))
    return jax.block_until_ready(out)

  def classify(self, clips) -> np.ndarray:
    return np.asarray(jax.block_until_ready(self._classify(*self._state, jnp.asarray(clips))))

  def kept(self, received: Received):
    return [(p.frame_mask, p.block_masks) for p in received.payloads]

  def fingerprint(self) -> str:
    return self.tables.table_hash


def codec(trained: base.Trained) -> STAECodec:
  return STAECodec(trained)


def _declared(header: bitstream.Header) -> str:
  """A stream header's sizes in words, for the server's refusals."""
  parts = []
  if header.frames is not None:
    parts.append(f"{header.frame_keep} of {header.frames} frames")
  if header.blocks is not None:
    parts.append(f"{header.block_keep} of {header.blocks} blocks")
  if header.vector_count:
    parts.append(f"{header.vector_count} skip vectors")
  if header.refine_frames:
    parts.append(f"{header.refine_frames} refined frames at step code {header.refine_step}")
  return ", ".join(parts + [f"latents {list(header.lead)} x C"])


def _label(tag: str) -> str:
  """`stae` -> "STAE"; an ablation's tag `stae_random-selection` -> "STAE random selection"."""
  if tag == "stae":
    return LABEL
  return tag.replace("stae_", "STAE ").replace("_", ", ").replace("-", " ")

