r"""HMDB51 at the paper's setting: 16 frames of 224x224, ViT-B/16 with 2x16x16 tubelets.

  python train.py --config=configs/hmdb51.py
  python evaluate.py --config=configs/hmdb51.py

Needs the official release extracted under `data/hmdb51/` (`<class>/<clip>.avi` and
`testTrainMulti_7030_splits/`; see data/README.md) and an accelerator. Switches:
`configs/hmdb51.py:split=2,frames=16`, `:system=deepisc`, `:frame_attention=False`,
`:selection=random` (the "neither attention" ablation), `:selection=uniform` (evenly spaced frames
and blocks), `:context=False` (STAE's latents under the factorized prior, no context).

Target (arXiv 2305.12796): 104x compression at <= 5 points of accuracy loss; the H.264 curve this
must beat is in ../shared/DESIGN.md. Measured results go into BENCHMARKS.md when a run is made.
"""

from configs import common
import ml_collections


def get_config(arg=None):
  a = common.parse_arg(
      arg,
      **common.SYSTEM_DEFAULTS,
      split=1,
      frames=16,
      stride=2,
      size=224,
      seed=0,
  )
  c = ml_collections.ConfigDict()
  c.name = "hmdb51" + common.switches_suffix(arg)
  c.seed = a.seed

  c.data = ml_collections.ConfigDict(dict(
      name="hmdb51",
      # Frames stored as JPEG with this short side. allow_incomplete=True builds from the clips
      # that are there (missing/unreadable ones are logged and recorded), else they are errors.
      builder_kwargs=dict(short_side=256, allow_incomplete=False),
      data_dir="data/tfds",
      manual_dir="data/hmdb51",   # the extracted official release
      split=a.split,              # 1, 2 or 3 (testTrainMulti_7030_splits)
      frames=a.frames,
      stride=a.stride,
      resolution=a.size,
      train_sampling="random",
      eval_sampling="uniform",
      min_crop_scale=0.4,
      flip=True,
      batch_size=64,
      eval_batch_size=64,
      workers=8,
      prefetch=4,
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
  # Classifier (stae_jax/models/vit.py): ViT-B/16 with 2x16x16 tubelets, VideoMAE-B's layout
  # (86.3 M parameters with the 51-way head; Hugging Face VideoMAE weights map one to one).
  c.model.vit = ml_collections.ConfigDict(dict(
      size="B", width=0, depth=0, num_heads=0, mlp_dim=0,  # 0 = the size's value
      tubelet=2, patch=16,
      num_classes=51,
      layer_norm_eps=1e-6,
      dtype="bfloat16",           # compute dtype; parameters are float32
      attention="auto",           # cuDNN fused attention on GPUs in bf16, XLA elsewhere
      # Recompute each block's activations in the backward pass: ViT-B keeps ~6 GB per clip for
      # it otherwise (every stage backpropagates through it; BENCHMARKS.md "Paper size on a CPU").
      remat=True,
  ))
  # DeepISC baseline (stae_jax/models/deepisc.py): every frame coded alone to <= 64 tokens x 32 ch.
  deepisc = dict(
      patch=16, width=384, encoder_depth=6, decoder_depth=6, num_heads=6, mlp_dim=0,
      max_tokens=64, channels=32,
      token_choices=(4, 8, 16, 32, 64),  # operating points: latent tokens sent per frame
      init_step=8.0,  # pixel levels per latent unit of the patch-colour code channels 0-2 start with
      dtype="bfloat16",
      attention="auto",
      remat=True,                 # as the ViT's: recompute each block in the backward pass
  )
  # STAE encoder (stae_jax/models/stae.py). 16x16 blocks: 196 per 224x224 frame, latent 4x4x8 each.
  stae = dict(
      block_size=16,              # p: spatial attention scores and codes p x p blocks
      latent_stride=4,            # s: a block's latent is [p/s, p/s, C]
      latent_channels=8,          # C; channels 0-2 start as each cell's mean colour, the rest at 0
      init_step=8.0,              # pixel levels per latent unit of those means at initialisation
      transform_width=256,        # hidden units of the per-block analysis/synthesis MLPs
      mode="latent",              # "latent" (learned transforms) or "pixel" (requantised pixels)
      pixel_bits=6,               # bits per pixel value in "pixel" mode
      frame_attention=a.frame_attention,      # off: keep every frame
      spatial_attention=a.spatial_attention,  # off: keep every block of a kept frame
      selection=a.selection,      # or "random" (random top-k), "uniform" (evenly spaced): same ratios
      frame_rule=a.frame_rule,    # "segments": the best frame of each of k stretches; or "top_k"
      frame_pool=7,               # frame attention sees frames area-downscaled by this (224 -> 32)
      frame_widths=(16, 32, 32),
      spatial_widths=(16, 32),
      temporal_kernel=3,          # frame attention's 1D convolution over time
      temperature=1.0,            # straight-through top-k surrogate's sigmoid scale (score units)
      selection_gradient="all",   # "task": the pixel loss does not steer the attention (stae.py)
      block_spread=2.0,           # kept frames send different blocks (spread_top_k_mask); 0: off
      dtype="bfloat16",           # compute dtype; parameters are float32
      # Operating points (rho_f, rho_s) the model is trained for (the trainer samples among them).
      keep_ratios=((0.25, 0.25), (0.5, 0.25), (0.5, 0.5), (1.0, 0.5)),
  )
  # Receiver's 3D-2D CNN (stae_jax/models/decoder.py).
  decoder = dict(
      width=32, temporal_layers=3, spatial_layers=2, cell=4, dtype="bfloat16")
  # Training (stae_jax/training, train.py): stages run in train.stage_order; each names the
  # parameters it trains (`trainable` regex; the rest get no optimizer state) and its loss weights.
  c.stages = common.training_stages(
      classifier=dict(steps=20000, lr=0.0005, warmup_steps=1000),
      compressor=dict(steps=20000, lr=0.0005, warmup_steps=500),
      joint=dict(steps=5000, lr=5e-05, warmup_steps=200))
  c.train = common.train_settings(log_every=50, eval_every=2000, eval_batches=0, checkpoint_every=1000)
  # What evaluate.py measures (validation clips, the H.264 grid and CRFs, the channel's SNRs,
  # deadlines and seeds); its flags of the same names override these.
  c.eval = common.eval_settings()
  # What train.py trains (each system's model sections and loss weights, configs/common.py);
  # the ablation switches apply to STAE's model.stae.
  c.systems = common.systems_to_train(
      arg, a, stae=common.stae_system(stae=stae, decoder=decoder, entropy=entropy,
                                       context=a.context),
      deepisc=common.deepisc_system(deepisc=deepisc, entropy=entropy))
  return c
