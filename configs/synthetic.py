r"""The embedded default: a procedurally generated action dataset, small models, minutes on a CPU.

  python train.py --config=configs/synthetic.py
  python evaluate.py --config=configs/synthetic.py

`synthetic_actions` stands in for HMDB51 on two CPU cores: classes are defined by motion, the action
fills only part of the clip, and the actor is small against a textured, moving background with
distractors (see stae_jax/data/synthetic.py). The default STAE is frame attention only: for each
number of frames kept (1, 2, 4, 8, 16 of 16), the frames the frozen classifier reads best on 160
validation clips, chosen once before its compressor stage and the same for every clip, each sent
whole (`DEFAULTS`; README "Ablations" for why). Switches, each named in the system's tag and each at
the default's blocks per clip: `configs/synthetic.py:system=deepisc`, `:selection=random` (random
frames), `:selection=uniform` (evenly spaced frames), `:spatial_attention=True` (both attentions:
twice the frames, half their blocks), `:frame_attention=False,spatial_attention=True` (every
frame, spatial attention only), `:frame_rule=segments` (frames learned per clip, the best of each
of k stretches; `:frame_rule=top_k` the k best-scored, `:frame_rule=comb` k evenly spaced frames
whose start and gap are learned), `:context=False` (STAE's latents under the factorized prior
instead of the conditional entropy model), `:size=64,frames=16`, `:codec_steps=1000` (the longer
budget of both codecs' compressor stage, STAE's at the shared learning rate 0.003, where that
budget gained; default 200 at 0.012), `:deepisc_steps=N` (DeepISC's own compressor budget; by
default the shared 200: at 100 its accuracy was level at 1-6% more bits).

Measured (BENCHMARKS.md, "The current main job" and "Classifier controls"; a clean checkout):
`python benchmarks/main_job.py --workdir=/tmp/mjN` (6bbf2fd's code, which trained DeepISC 100
steps; the dataset, synthetic_actions 1.3.0, already built) took 2,123 s on two idle Intel Xeon
cores, about 2,400 s with the default's 200 DeepISC steps (that DeepISC the same code's run on the
same classifier, copied in before the evaluation): classifier 1000 steps (top-1 90.0% on the 600
test clips; 92.3% in the AMD EPYC run where its controls were measured: 52.3% with the frames
shuffled, 23.5% with one frame repeated), DeepISC 200 + 10 steps, STAE's frame choice (344 s, in a
race), 200 + 10 steps. Then, with the skip mode and the refined points (d2ea73b; those models
copied to /tmp/mjR2), `python evaluate.py --config=configs/synthetic.py --workdir=/tmp/mjR2`
(1,318 s, idle): STAE reaches the target (reference - 5 points, 85.0%) at 7.1 kbit per clip
(222x), H.264's envelope at 15.4 kbit (102x), STAE / H.264 bits 0.46 [0, 0.63]; STAE spans
1,198-18,266 bits (1,313x-86x), 24.3% (1 frame) to 88.0% (all 16, refined at step 32, 12.1 kbit,
+6.0 [+3.4, +8.6] points above H.264's envelope there), above that envelope from 2.0 kbit to its
end, level with it at 1.2 kbit, and 49-61 points above DeepISC's 4, 8 and 16 tokens at their bits.
Without refining (/tmp/mjS, 571941c) its top point was 84.0% at 6.2 kbit, 1.0 point short of the
target; without skipping either (/tmp/mjN) 81.8% at 10.0 kbit. Earlier runs of the recipe (AMD EPYC, /tmp/mjI; Intel Xeon before
the hand-written motion gradient, /tmp/mjL) are other draws: BENCHMARKS.md "Main job".
"""

from configs import common
import ml_collections

from stae_jax.data import synthetic as synthetic_data


#: This config's default STAE: frame attention only (every block of the kept frames), its frames for
#: each number kept chosen once with the frozen classifier on validation clips ("chosen"); the
#: strongest STAE measured on this config (README "Ablations"). The switches name what differs.
DEFAULTS = dict(common.SYSTEM_DEFAULTS, spatial_attention=False, frame_rule="chosen")


def get_config(arg=None):
  a = common.parse_arg(
      arg,
      **DEFAULTS,
      frames=16,
      size=64,
      num_train=3000,
      num_test=600,
      seed=0,
      codec_steps=200,
      deepisc_steps=0,
  )
  c = ml_collections.ConfigDict()
  c.name = "synthetic" + common.switches_suffix(arg)
  c.seed = a.seed

  c.data = ml_collections.ConfigDict(dict(
      name="synthetic_actions",
      # Everything a builder needs to (re)generate the dataset; part of the TFDS config name.
      builder_kwargs=dict(
          num_train=a.num_train, num_test=a.num_test, frames=a.frames, size=a.size, seed=a.seed),
      data_dir="data/tfds",       # built ArrayRecord datasets (relative to the repository root)
      manual_dir="",              # synthetic data needs no downloads
      split=1,                    # official split number (HMDB51/UCF101); ignored here
      frames=a.frames,            # T: frames per sampled clip
      stride=1,                   # temporal stride between sampled frames
      resolution=a.size,          # H = W of the clip the model sees
      train_sampling="random",    # random window of T*stride frames
      eval_sampling="uniform",    # centre window for evaluation
      # No random resized crop: zooming changes the actor's size, which grow/shrink are about, and
      # in minutes of training it cost accuracy (0.37 with 0.85 at 700 steps; see BENCHMARKS.md).
      # 1.0 trains on the evaluation view, unresampled (a resampled, softer training view cost
      # the motion classifier 28 points in rotation: BENCHMARKS.md "Classifier controls").
      min_crop_scale=1.0,         # random resized crop area range for training
      # The generator's symmetries (stae_jax/data/synthetic.py), each drawn per training clip with
      # the label map that keeps the class right: mirror left-right (left<->right, clockwise<->
      # anticlockwise), mirror up-down, time reversed (left<->right, up<->down, rotations,
      # grow<->shrink), and a circular shift (the scene is a torus). Together 8x the distinct
      # motions per stored clip; the classifier learnt the sense of motion only with them.
      flip=True, flip_labels=synthetic_data.HFLIP_LABELS,
      vertical_flip=True, vertical_flip_labels=synthetic_data.VFLIP_LABELS,
      time_reverse=True, time_reverse_labels=synthetic_data.TIME_REVERSE_LABELS,
      roll=True,
      batch_size=32,
      eval_batch_size=64,
      workers=0,                  # grain worker processes (0: in-process)
      prefetch=2,
  ))

  # Models (stae_jax/models): the shared classifier in c.model.vit; each system's own modules in
  # its entry of c.systems (below), one section per constructor: `STAE(**section)`, ...
  c.model = ml_collections.ConfigDict()
  # Learned entropy model of the latents (stae_jax/models/entropy.py) and its frozen coding tables.
  entropy = dict(
      filters=(3, 3, 3),          # FactorizedPrior hidden widths per channel (Balle et al. 2018)
      init_scale=2.0,             # initial density spread, in latent units (10 stalled the rate)
      likelihood_bound=1e-9,      # floor on a bin's probability in the training rate
      tail_mass=1e-9,             # freezing: table support holds all but this mass; rest escapes
  )
  # STAE's latents are coded under the conditional entropy model (the `context` switch,
  # configs/common.py stae_system; ContextPrior's defaults): each latent a residual under a table
  # chosen by what the decoder already has (the blocks as last sent around it, the previous
  # channel's residual; stae_jax/models/context.py). DeepISC keeps the factorized prior.
  # Classifier (stae_jax/models/vit.py): a tiny VideoMAE-layout ViT with a motion front end: the
  # clip average-pooled to 32x32, its 26 motion features (frames, their changes, normal flow, its
  # curl and divergence, a full-resolution curl, colour-gated and colour-opponent-gated curls:
  # stae_jax/models/motion.py; rotation was at chance without the gated curls), a per-pixel
  # linear layer + GELU to 32 channels, then 4x8x8 tubelets -> 64 tokens. On pixels alone it
  # learnt the actor's colour and not the sense of motion in minutes on two cores (BENCHMARKS.md
  # "Classifier controls").
  c.model.vit = ml_collections.ConfigDict(dict(
      size="Ti",                  # Ti/S/B/L; the overrides below shrink it for CPUs (0 = size's)
      width=128, depth=4, num_heads=4, mlp_dim=0,
      tubelet=4, patch=8,
      pool=2,                     # spatial average pooling (64 -> 32 px; motion pools inside)
      inputs="motion",            # "frames" (VideoMAE's input), "differences" or "motion"
      stem_channels=32,           # per-pixel Linear + GELU after the inputs (0: none)
      # VideoMAE scales the head init by 1e-3 for fine-tuning; from scratch that stalls at chance.
      head_init_scale=1.0,
      num_classes=synthetic_data.NUM_CLASSES,  # len(stae_jax.data.synthetic.CLASS_NAMES)
      layer_norm_eps=1e-6,
      dtype="float32",            # compute dtype; parameters are float32
      attention="auto",           # jax.nn.dot_product_attention backend: auto/xla/cudnn
  ))
  # DeepISC baseline (stae_jax/models/deepisc.py): every frame coded alone to <= 16 tokens x 8 ch.
  deepisc = dict(
      patch=16, width=128, encoder_depth=2, decoder_depth=2, num_heads=4, mlp_dim=0,
      max_tokens=16, channels=8,
      token_choices=(1, 2, 4, 8, 16),  # operating points: latent tokens sent per frame
      init_step=8.0,  # pixel levels per latent unit of the patch-colour code channels 0-2 start with
      dtype="float32",
      attention="auto",
  )
  # STAE encoder (stae_jax/models/stae.py). 8x8 blocks: 64 per 64x64 frame, one 8-vector each.
  stae = dict(
      block_size=8,               # p: spatial attention scores and codes p x p blocks
      latent_stride=8,            # s: a block's latent is [p/s, p/s, C] (here 1x1xC)
      # C; channels 0-2 start as the block's mean colour, the rest at 0. 8: with points up to
      # every block, 4 numbers a block stop at a mosaic of block colours (66.7% at best with the
      # motion classifier); 8 reach 81-87% at the top point, while 12, or 8 under a finer
      # quantiser (init_step 4), spent 10-25% more bits for no more accuracy at any point
      # (BENCHMARKS.md "STAE's rate range, training cost and temporal bits").
      latent_channels=8,
      init_step=8.0,              # pixel levels per latent unit of those means at initialisation
      # Channels 3.. start at zero ("colour") or as each block's lowest luminance DCT coefficients
      # in units of detail_step levels ("dct"; stae.initial_block_code).
      init_code="colour",
      detail_step=16.0,
      transform_width=64,         # hidden units of the per-block analysis/synthesis MLPs
      mode="latent",              # "latent" (learned transforms) or "pixel" (requantised pixels)
      pixel_bits=6,               # bits per pixel value in "pixel" mode
      frame_attention=a.frame_attention,      # off: keep every frame
      spatial_attention=a.spatial_attention,  # off: keep every block of a kept frame
      selection=a.selection,      # or "random" (random top-k), "uniform" (evenly spaced): same ratios
      # The learned frames: the best of each of k equal stretches of the clip ("segments"), or the
      # k best ("top_k", which bunched the kept frames: BENCHMARKS.md "Frame attention"), or
      # k evenly spaced frames whose start and gap are learned ("comb").
      frame_rule=a.frame_rule,
      frame_pool=2,               # frame attention sees frames area-downscaled by this (64 -> 32)
      frame_widths=(8, 16, 16),
      spatial_widths=(8, 16),
      temporal_kernel=3,          # frame attention's 1D convolution over time
      temperature=1.0,            # straight-through top-k surrogate's sigmoid scale (score units)
      selection_gradient="all",   # "task": the pixel loss does not steer the attention (stae.py)
      block_spread=2.0,           # kept frames send different blocks (spread_top_k_mask); 0: off
      dtype="float32",            # compute dtype; parameters are float32
      # Operating points (rho_f, rho_s) the model is trained for (each training clip draws one):
      # 1, 2, 4, 8 and 16 of the 16 frames, every block of each (64 of the clip's 1024 blocks,
      # ~1.2 kbit, to all of them, ~11.7 kbit), each about twice the bits of the one before.
      # Written for the default (frame attention only); the attention switches move them to the
      # same blocks per clip (`common.matched_keep_ratios`: `:spatial_attention=True` keeps twice
      # the frames and half their blocks).
      keep_ratios=((0.0625, 1.0), (0.125, 1.0), (0.25, 1.0), (0.5, 1.0), (1.0, 1.0)),
  )
  # Skipped blocks: STAE's entry takes no `model.skip`, so `stae_jax.models.skip.Settings`' defaults
  # apply: at 4, 8 and 16 frames the codec copies a block from the previous kept frame's picture,
  # moved by up to 4 px, where that is about as close as its code (lambda 1000); not at 1 or 2
  # frames, where it cost accuracy. Training does not see it. `model.skip=dict(lam=None)` sends
  # every kept block's code.
  # Refined points: no `model.refine` either, so `stae_jax.models.refine.Settings`' defaults add
  # three codec points at all 16 frames beside the keep ratios: the first kept frame's blocks
  # refined at DCT step 64, every coded block at 32 and at 8 (a quantised DCT of what each block's
  # code misses, before the skip decisions; chosen on 300 validation clips, BENCHMARKS.md "Refined
  # blocks"). Training does not see them. `model.refine=dict(points=())` has none.
  if a.frame_rule in ("comb", "chosen"):
    stae["frames"] = a.frames     # T: the comb rule's priors and the chosen frames are per frame
  # Receiver's 3D-2D CNN (stae_jax/models/decoder.py).
  decoder = dict(
      width=16, temporal_layers=2, spatial_layers=1, cell=4, dtype="float32")
  # Training (stae_jax/training, train.py): stages run in train.stage_order; each names the
  # parameters it trains (`trainable` regex; the rest get no optimizer state) and its loss weights.
  c.stages = common.training_stages(
      classifier=dict(steps=1000, lr=0.002, warmup_steps=30),
      # Both codecs' budget: `codec_steps` (200 is where STAE's learning curve at its rate peaks
      # at five of six points; BENCHMARKS.md "Learning curve at the new learning rate"); DeepISC
      # may take its own (`deepisc_steps`, below).
      compressor=dict(steps=a.codec_steps, lr=0.003, warmup_steps=5),
      joint=dict(steps=10, lr=0.0001, warmup_steps=2))
  # STAE's compressor stage: 4x the shared rate at the default budget (BENCHMARKS.md "STAE's
  # learning rate"), but longer budgets at that rate lose every point but the top one (at 1000
  # steps keep 1x0.25 fell from 66-73% to 42%), where the shared rate gained at every point:
  # BENCHMARKS.md "Learning curve at the new learning rate".
  stae_lr = 0.012 if a.codec_steps <= 200 else 0.003
  c.train = common.train_settings(log_every=10, eval_every=0, eval_batches=4, checkpoint_every=100)
  # What evaluate.py measures (validation clips, the H.264 grid and CRFs, the channel's SNRs,
  # deadlines and seeds); its flags of the same names override these.
  c.eval = common.eval_settings()
  # What train.py trains (each system's model sections and loss weights, configs/common.py);
  # the ablation switches apply to STAE's model.stae.
  c.systems = common.systems_to_train(
      arg, a, defaults=DEFAULTS,
      stae=common.stae_system(stae=stae, decoder=decoder, entropy=entropy, context=a.context,
                              compressor=dict(lr=stae_lr), defaults=DEFAULTS),
      # DeepISC trains the shared budget (`config.stages.compressor.steps`, 200) unless
      # `deepisc_steps` names its own: its accuracy is level from 100 to 1000 steps at every point
      # (BENCHMARKS.md "Learning curve of the default", DeepISC's table), but at 100 steps the
      # main job's DeepISC sent 1-6% more bits than at 200 for level accuracy (BENCHMARKS.md "The
      # current main job"), so by default it keeps 200, the stronger baseline by that margin.
      deepisc=common.deepisc_system(
          deepisc=deepisc, entropy=entropy,
          compressor=dict(steps=a.deepisc_steps) if a.deepisc_steps else None))
  return c
