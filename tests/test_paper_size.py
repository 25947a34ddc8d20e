"""The paper-size path of benchmarks/paper_size.py in CI: configs/hmdb51.py at full 224x224 with
the real HMDB51 sample, every stage trained and every system evaluated (real bitstreams, H.264),
with only the ViT (and DeepISC's transformer) narrowed and 4 frames, so the full-size STAE, decoder
and coding shapes stay covered. Plus the ViT's rematerialisation option."""

import contextlib
import io
import json

from flax import nnx
import jax
from jax.ad_checkpoint import print_saved_residuals
import jax.numpy as jnp
import numpy as np
import pytest

import benchmark_modules
from stae_jax.data import pipeline
from stae_jax.evaluation import deadlines
from stae_jax.evaluation import evaluate
from stae_jax.models import vit as vit_lib
from stae_jax.training import trainer

pytestmark = pytest.mark.slow


def _paper_size_module():
  return benchmark_modules.load("paper_size")


def narrow_paper_config(real_data, data_dir):
  """The benchmark's config (configs/hmdb51.py, batch 2, one step per stage) made CI-sized: a narrow
  ViT and DeepISC transformer, 4 frames, float32 compute (XLA:CPU compiles bf16 programs about
  twice as slowly), the first two stages (the test sets train.stage_order), and the lowest and
  highest operating points. STAE, the
  decoder, DeepISC's tokens and channels, the patch and block sizes and the 224x224 resolution
  are the paper's; the whole paper config runs in benchmarks/paper_size.py."""
  config = _paper_size_module().paper_config(batch=2, steps=1, remat=True, real_data=real_data)
  config.data.data_dir = str(data_dir)
  config.data.frames = 4
  config.model.vit.update(dict(width=64, depth=1, num_heads=2, dtype="float32"))
  stae, deepisc = config.systems.stae.model, config.systems.deepisc.model
  stae.stae.update(dict(dtype="float32", keep_ratios=((0.25, 0.25), (1.0, 0.5))))
  stae.decoder.dtype = "float32"
  deepisc.deepisc.update(dict(width=64, encoder_depth=1, decoder_depth=1, num_heads=2,
                              dtype="float32", token_choices=(4, 64)))
  return config


def test_paper_size_path_at_224(real_data, tmp_path):
  config = narrow_paper_config(real_data, tmp_path / "tfds")
  assert config.data.resolution == 224 and config.model.vit.patch == 16
  workdir = tmp_path / "workdir"
  # Stage by stage as the benchmark runs train.py: a run of the compressors alone starts from the
  # classifier the first run finished in the workdir.
  config.train.stage_order = ("classifier",)
  summaries = trainer.train_and_evaluate(config, workdir)
  config.train.stage_order = ("compressor",)
  summaries += trainer.train_and_evaluate(config, workdir)
  assert [(s["stage"], s["system"]) for s in summaries][0] == ("classifier", None)
  assert sorted((s["stage"], s["system"]) for s in summaries[1:]) == [
      ("compressor", "deepisc"), ("compressor", "stae")]
  for summary in summaries:
    assert np.isfinite(summary["eval_loss"]), summary
  # One stored training clip: no validation split to carve (the error names this option), so the
  # choices are made on the test clip, as benchmarks/paper_size.py's evaluate part does.
  with pytest.raises(ValueError, match="--validation_clips=0"):
    pipeline.make_loader(config.data, "validation", seed=0, train=False, num_epochs=1)
  options = evaluate.EvalOptions(latency_clips=0, num_pictures=1, progress=False,
                                 validation_clips=0, baselines=dict(h264=dict(crfs=(35.0,))))
  channel = deadlines.ChannelOptions(deadlines_seconds=(0.5,), mean_snrs_db=(10.0,), seeds=(0,),
                                     max_backlog_seconds=30.0)
  paths = evaluate.run(config, workdir, options, channel)
  results = json.loads(paths["results"].read_text())
  assert results["num_clips"] == 1  # split 1 of the sample: one test clip (climb_stairs)
  assert results["validation"] is None
  assert list(results["methods"]) == ["stae", "deepisc", "h264", "raw"]
  stae_points = {p["name"]: p for p in results["methods"]["stae"]["points"]}
  assert sorted(stae_points) == ["keep=0.25x0.25", "keep=1x0.5"]
  for name, method in results["methods"].items():
    assert method["skipped"] is None, name
    for point in method["points"]:
      assert point["num_clips"] == 1 and point["bits_per_clip"] > 0, (name, point["name"])
  # A 16x16-block STAE clip at keep 0.25x0.25 of 4 frames: 1 frame x 49 of its 196 blocks, each a
  # 4x4x8 latent, in far fewer bits than the raw 4x224x224x3 bytes.
  lowest = stae_points["keep=0.25x0.25"]
  assert lowest["bits_per_clip"] < 8 * results["raw_clip_bytes"] / 20


def _vit(remat):
  return vit_lib.VideoViT(num_classes=3, width=32, depth=3, num_heads=2, mlp_dim=64, tubelet=2,
                          patch=8, remat=remat, rngs=nnx.Rngs(0))


def test_vit_remat_keeps_only_block_inputs_and_the_same_gradients():
  video = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 4, 16, 16, 3)), jnp.float32)
  grads, residuals = [], []
  for remat in (False, True):
    graphdef, params, rest = nnx.split(_vit(remat), nnx.Param, ...)
    loss = lambda p: nnx.merge(graphdef, p, rest)(video).sum()
    grads.append(jax.tree_util.tree_leaves(jax.jit(jax.grad(loss))(params)))
    # Saved activations of the backward pass (jax's own listing; parameters and literals aside).
    listing = io.StringIO()
    with contextlib.redirect_stdout(listing):
      print_saved_residuals(loss, params)
    residuals.append([line.split()[0] for line in listing.getvalue().splitlines()
                      if "from the argument" not in line and "from a literal" not in line])
  for plain, rematerialised in zip(*grads):
    np.testing.assert_allclose(plain, rematerialised, rtol=1e-6, atol=1e-7)
  # With remat each of the 3 blocks keeps its input only (f32[batch, tokens, width]), plus what
  # the patch embedding and the head keep; without it, every block's attention and MLP values.
  tokens = "f32[2,8,32]"  # batch 2, (4/2) x (16/8)^2 tokens, width 32
  assert residuals[1].count(tokens) == 3, residuals[1]
  assert len(residuals[1]) < len(residuals[0]) / 3, (residuals[0], residuals[1])


def test_deepisc_remat_gives_the_same_gradients():
  from stae_jax.models.deepisc import DeepISC  # pylint: disable=g-import-not-at-top
  video = jnp.asarray(np.random.default_rng(0).integers(0, 256, (1, 2, 16, 16, 3)), jnp.float32)
  grads = []
  for remat in (False, True):
    model = DeepISC(frame_size=16, patch=8, width=16, encoder_depth=1, decoder_depth=1,
                    num_heads=2, max_tokens=4, channels=4, token_choices=(2, 4), remat=remat,
                    rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
      m = nnx.merge(graphdef, p, rest)
      return m.decode(m.encode(video), jnp.array([2])).mean()

    grads.append(jax.tree_util.tree_leaves(jax.jit(jax.grad(loss))(params)))
  for plain, rematerialised in zip(*grads):
    np.testing.assert_allclose(plain, rematerialised, rtol=1e-5, atol=1e-6)
