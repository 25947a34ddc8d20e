r"""Real CCTV footage: fight detection on the Surveillance Camera Fight release, on two CPU cores.

  python train.py --config=configs/surveillance_fight.py
  python evaluate.py --config=configs/surveillance_fight.py

300 real clips (150 fight, 150 no fight; Akti, Tataroglu, Ekenel, IPTA 2019, MIT licence) read from
`../shared/data/real/surveillance_fight` (or `--config.data.manual_dir=` any copy of the release),
split by source video (203 train, 97 test clips; no source on both sides) and stored at one size
(128x96) and one rate (10 fps), since the raw sizes and rates give the label away
(stae_jax/data/surveillance_fight.py). The classifier learns from scratch; with 97 test clips every
accuracy carries a 95% interval of about +-10 points (README, "Real footage").
Switches as for configs/synthetic.py: `:system=deepisc`, `:frame_attention=False`,
`:spatial_attention=False`, `:selection=random` (the "neither attention" ablation),
`:selection=uniform`, `:context=False` (the factorized prior); data: `:frames=16` (then set `--config.data.stride=1`), `:size=48`, `:seed=1`.

Cross-validation by source group (`:fold=<k>`, k in 0..4; `:folds=<n>` for another number of
folds): the 44 source groups fall into 5 folds of 58-62 clips (stae_jax/data/surveillance_fight.py
has the counts); fold k is the test split, fold k+1 (mod 5) the validation split (stored, whole
source groups: nothing is carved from the training clips) and the other three folds the training
split, so every clip is tested once, by a model that never saw its source. The workdir records the
fold (runs/surveillance_fight_fold=<k>). The sequence, one fold after another (each a whole
training run):

  for k in 0 1 2 3 4; do
    python train.py --config=configs/surveillance_fight.py:fold=$k
    python evaluate.py --config=configs/surveillance_fight.py:fold=$k --test_points=all
  done
  python benchmarks/pool_folds.py --out=runs/surveillance_fight_pooled.json \
      --workdirs=$(echo runs/surveillance_fight_fold={0,1,2,3,4} | tr ' ' ,)
  python benchmarks/paired_points.py --results=runs/surveillance_fight_pooled.json --method=stae \
      --envelope=h264

Each fold's results.json holds its test clips' per-clip correctness and bits (and its validation
clips' numbers); `pool_folds.py` concatenates them per method and point into one results file over
all 300 clips (`stae_jax.evaluation.folds`; `--test_points=all` so that every H.264 cell is
measured in every fold and the pooled envelope is chosen on the pooled validation clips), which
`paired_points.py` pairs. Not run yet: the five folds' training (about 20 minutes each on two
cores) and the recipe choice on the validation folds.
Without `:fold` the config is the one fixed split above (203 train, 97 test clips), whose
validation clips are carved from the training clips (data/pipeline.py VALIDATION_RULE) and so may
share a source with training clips.
"""

from configs import common
import ml_collections

from stae_jax.data import surveillance_fight as fight_data


def get_config(arg=None):
  a = common.parse_arg(
      arg,
      **common.SYSTEM_DEFAULTS,
      frames=8,
      size=64,
      seed=0,
      fold=fight_data.NO_FOLD,    # the fixed split; 0..folds-1: that fold of the cross-validation
      folds=fight_data.FOLDS,
  )
  c = ml_collections.ConfigDict()
  c.name = "surveillance_fight" + common.switches_suffix(arg)
  c.seed = a.seed

  c.data = ml_collections.ConfigDict(dict(
      name="surveillance_fight",
      # Every clip is stored at height x width (centred crop of that aspect) and fps; part of the
      # TFDS config name, as are the fold and the number of folds (set them with the `fold` and
      # `folds` switches, which also name the workdir). allow_incomplete=True builds from the clips
      # that are there.
      builder_kwargs=dict(height=96, width=128, fps=10, allow_incomplete=False, fold=a.fold,
                          folds=a.folds),
      data_dir="data/tfds",
      manual_dir="../shared/data/real/surveillance_fight",  # the release (repo-relative or absolute)
      split=fight_data.SPLIT,     # the fixed split by source video (a fold: builder_kwargs.fold)
      frames=a.frames,            # T: 8 frames 2 apart at 10 fps = 1.5 s; all but one clip hold it
      stride=2,
      resolution=a.size,
      train_sampling="random",    # random 1.5 s window of the ~2 s clip
      eval_sampling="uniform",
      # CCTV cameras are fixed and wide; the action is anywhere in the frame and of any size. So
      # the training view moves and zooms over the whole 4:3 frame (crop area 0.5-1 of the centred
      # square, aspect 3/4-4/3), and is mirrored: a fight is a fight either way round.
      min_crop_scale=0.5,
      flip=True,
      batch_size=32,
      eval_batch_size=32,
      workers=0,
      prefetch=2,
  ))

  c.model = ml_collections.ConfigDict()
  entropy = dict(filters=(3, 3, 3), init_scale=2.0, likelihood_bound=1e-9, tail_mass=1e-9)
  # Classifier: a CPU-sized ViT (width 128, depth 4; 4x16x16 tubelets, 32 tokens at 8x64x64) with
  # a 2-way head, from scratch, on frame differences (`inputs="differences"`): on frames it learnt
  # the 203 training clips' scenes and stayed near chance on clips of unseen cameras, on
  # differences it did not (BENCHMARKS.md, "Surveillance fight": the runs that chose this).
  c.model.vit = ml_collections.ConfigDict(dict(
      size="Ti", width=128, depth=4, num_heads=4, mlp_dim=0,
      tubelet=4, patch=16,
      inputs="differences",       # or "frames", "motion" (configs/synthetic.py's motion front end)
      pool=1,                     # spatial average pooling before the tubelets (1: none)
      stem_channels=0,            # per-pixel Linear + GELU after the inputs (0: none)
      head_init_scale=1.0,
      num_classes=len(fight_data.CLASS_NAMES),
      layer_norm_eps=1e-6,
      dtype="float32",
      attention="auto",
  ))
  # DeepISC baseline: every frame coded alone to <= 16 tokens x 8 channels (as configs/synthetic.py).
  deepisc = dict(
      patch=16, width=128, encoder_depth=2, decoder_depth=2, num_heads=4, mlp_dim=0,
      max_tokens=16, channels=8, token_choices=(1, 2, 4, 8, 16), init_step=8.0,
      dtype="float32", attention="auto",
  )
  # STAE: 8x8 blocks (64 per 64x64 frame), a 4-vector latent each (as configs/synthetic.py).
  stae = dict(
      block_size=8, latent_stride=8, latent_channels=4, init_step=8.0, transform_width=64,
      mode="latent", pixel_bits=6,
      frame_attention=a.frame_attention,
      spatial_attention=a.spatial_attention,
      selection=a.selection,
      frame_rule=a.frame_rule,    # "segments": the best frame of each of k stretches; or "top_k"
      frame_pool=2, frame_widths=(8, 16, 16), spatial_widths=(8, 16), temporal_kernel=3,
      temperature=1.0, selection_gradient="all", block_spread=2.0, dtype="float32",
      # 8 frames: keep 2, 4 or all of them. A classifier of differences needs at least two frames.
      keep_ratios=((0.25, 1.0), (0.5, 0.5), (1.0, 0.5)),
  )
  decoder = dict(width=16, temporal_layers=2, spatial_layers=1, cell=4, dtype="float32")
  c.stages = common.training_stages(
      # ~160 epochs of 203 clips; lr 1e-3 and weight decay 0.3 as in the better of the frame-input
      # runs (BENCHMARKS.md, "Surveillance fight": how each setting was chosen, and on which clips)
      classifier=dict(steps=1000, lr=0.001, warmup_steps=20, weight_decay=0.3),
      compressor=dict(steps=100, lr=0.003, warmup_steps=5),
      joint=dict(steps=10, lr=0.0001, warmup_steps=2))
  c.train = common.train_settings(log_every=10, eval_every=0, eval_batches=0, checkpoint_every=100)
  # What evaluate.py measures (validation clips, the H.264 grid and CRFs, the channel's SNRs,
  # deadlines and seeds); its flags of the same names override these.
  c.eval = common.eval_settings()
  c.systems = common.systems_to_train(
      arg, a, stae=common.stae_system(stae=stae, decoder=decoder, entropy=entropy,
                                       context=a.context),
      deepisc=common.deepisc_system(deepisc=deepisc, entropy=entropy))
  return c
