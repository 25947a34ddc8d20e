"""The VideoMAE-layout video ViT: shapes per size, VideoMAE formulas, dtypes, mapping, FLOPs."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs import hmdb51 as hmdb51_config
from configs import synthetic as synthetic_config
from stae_jax.models import motion
from stae_jax.models import vit as vit_lib


def tiny_config(**overrides):
  values = dict(size="Ti", width=32, depth=2, num_heads=2, mlp_dim=0, tubelet=2, patch=8,
                num_classes=5, dtype="float32", attention="auto")
  values.update(overrides)
  return ml_collections.ConfigDict(values)


def random_clip(shape=(2, 4, 16, 16, 3), seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))


def jitted(model, method="__call__"):
  """The model as a jitted pure function of a clip (eager NNX dispatch is slow on two cores)."""
  graph, state = nnx.split(model)
  apply = jax.jit(lambda s, x: getattr(nnx.merge(graph, s), method)(x))
  return lambda clip: apply(state, clip)


def param_count(module) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def flat_params(module) -> dict:
  return {".".join(str(k) for k in path): v for path, v in
          nnx.to_flat_state(nnx.state(module, nnx.Param))}


@pytest.mark.parametrize("size, width, depth", [("Ti", 192, 12), ("S", 384, 12), ("B", 768, 12),
                                                ("L", 1024, 24)])
def test_every_size_has_videomae_shapes(size, width, depth):
  config = tiny_config(size=size, width=0, depth=0, num_heads=0, tubelet=2, patch=16,
                       num_classes=51, dtype="bfloat16")
  model = nnx.eval_shape(lambda: vit_lib.vit_from_config(config, rngs=nnx.Rngs(0)))
  assert len(model.blocks) == depth
  params = flat_params(model)
  assert params["patch_embed.kernel"].shape == (2, 16, 16, 3, width)
  assert params["blocks.0.mlp.fc1.kernel"].shape == (width, 4 * width)
  assert params["head.kernel"].shape == (width, 51)
  graph, state = nnx.split(model)
  clip = jax.ShapeDtypeStruct((2, 16, 224, 224, 3), jnp.uint8)
  logits = jax.eval_shape(lambda s, x: nnx.merge(graph, s)(x), state, clip)
  tokens = jax.eval_shape(lambda s, x: nnx.merge(graph, s).tokens(x), state, clip)
  assert logits.shape == (2, 51) and logits.dtype == jnp.float32
  assert tokens.shape == (2, 8 * 14 * 14, width) and tokens.dtype == jnp.bfloat16


def test_vit_b16_parameter_count_matches_videomae_b():
  config = hmdb51_config.get_config().model.vit
  model = nnx.eval_shape(lambda: vit_lib.vit_from_config(config, rngs=nnx.Rngs(0)))
  d, classes = 768, 51
  embed = 3 * 2 * 16 * 16 * d + d
  block = 3 * d * d + 2 * d + (d * d + d) + 2 * 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)
  expected = embed + 12 * block + 2 * d + d * classes + classes
  assert param_count(model) == expected == 86_266_419  # VideoMAE-B: 86.2 M + head


def test_sinusoid_table_is_videomae_formula():
  def videomae_table(n_position, d_hid):  # VideoMAE's get_sinusoid_encoding_table, verbatim logic
    def angles(position):
      return [position / np.power(10000, 2 * (j // 2) / d_hid) for j in range(d_hid)]
    table = np.array([angles(pos) for pos in range(n_position)])
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return table.astype(np.float32)

  for n, d in [(1568, 768), (37, 10)]:
    np.testing.assert_array_equal(vit_lib.sinusoid_position_table(n, d), videomae_table(n, d))


def test_embedding_is_a_strided_conv3d_plus_the_sinusoid_table():
  """depth 0: tokens = Conv3d(kernel=stride=tubelet x patch x patch)(normalised clip) + table,
  flattened in (t, h, w) order as torch's `flatten(2).transpose(1, 2)` does."""
  model = vit_lib.VideoViT(num_classes=3, width=12, depth=0, num_heads=2, mlp_dim=24, tubelet=2,
                           patch=4, rngs=nnx.Rngs(1))
  clip = random_clip((1, 4, 8, 12, 3))
  x = vit_lib.normalize_video(clip)
  mean = np.array([0.485, 0.456, 0.406]) * 255
  std = np.array([0.229, 0.224, 0.225]) * 255
  np.testing.assert_allclose(x, (np.asarray(clip, np.float64) - mean) / std, atol=1e-5)
  conv = jax.lax.conv_general_dilated(
      x, model.patch_embed.kernel[...], window_strides=(2, 4, 4), padding="VALID",
      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"), precision="highest")
  conv = conv + model.patch_embed.bias[...]
  assert conv.shape == (1, 2, 2, 3, 12)
  expected = conv.reshape(1, 12, 12) + vit_lib.sinusoid_position_table(12, 12)
  np.testing.assert_allclose(jitted(model, "tokens")(clip), expected, atol=1e-4)


@pytest.mark.parametrize("front_end", [{}, dict(inputs="motion", pool=2, stem_channels=8)])
def test_tiny_forward_uint8_and_float_agree_and_gradients_reach_pixels(front_end):
  # With motion inputs too: the learned systems' tests run the classifier on frames, and the
  # gradient through the motion fields is what trains their decoders under the default config.
  model = vit_lib.vit_from_config(tiny_config(head_init_scale=1.0, **front_end), rngs=nnx.Rngs(0))
  graph, state = nnx.split(model)
  apply = jax.jit(lambda s, x: nnx.merge(graph, s)(x))
  clip = random_clip()
  logits = apply(state, clip)
  assert logits.shape == (2, 5) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits)) and np.ptp(np.asarray(logits)) > 0
  np.testing.assert_allclose(apply(state, clip.astype(jnp.float32)), logits, atol=1e-5)
  grad = jax.jit(jax.grad(lambda v: apply(state, v)[:, 0].sum()))(clip.astype(jnp.float32))
  assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_bfloat16_compute_agrees_with_float32():
  clip = random_clip((2, 4, 32, 32, 3))
  f32 = vit_lib.vit_from_config(tiny_config(head_init_scale=1.0, depth=3), rngs=nnx.Rngs(3))
  bf16 = vit_lib.vit_from_config(tiny_config(head_init_scale=1.0, depth=3, dtype="bfloat16"),
                                 rngs=nnx.Rngs(3))
  # Same seed, float32 parameters in both: only the compute dtype differs.
  for (path, a), (_, b) in zip(flat_params(f32).items(), flat_params(bf16).items()):
    assert b.dtype == jnp.float32, path
    np.testing.assert_array_equal(a[...], b[...])
  features32 = jitted(f32, "features")(clip)
  features16 = jitted(bf16, "features")(clip)
  assert features16.dtype == jnp.bfloat16
  scale = np.abs(np.asarray(features32)).max()
  assert np.abs(np.asarray(features16, np.float32) - features32).max() < 0.05 * scale
  logits32, logits16 = jitted(f32)(clip), jitted(bf16)(clip)
  assert logits16.dtype == jnp.float32
  assert np.abs(logits16 - logits32).max() < 0.05 * np.abs(logits32).max()


def test_huggingface_map_covers_every_parameter_once_with_torch_layouts():
  depth, width, classes = 2, 32, 5
  model = vit_lib.vit_from_config(tiny_config(), rngs=nnx.Rngs(0))
  params = flat_params(model)
  rows = vit_lib.huggingface_parameter_map(depth)
  assert sorted(path for _, path, _ in rows) == sorted(params)
  assert len({hf for hf, _, _ in rows}) == len(rows)

  def torch_shape(hf_name):
    if hf_name.endswith("projection.weight"):
      return (width, 3, 2, 8, 8)  # Conv3d [out, in, kt, kh, kw]
    if "intermediate.dense.weight" in hf_name:
      return (4 * width, width)
    if "output.dense.weight" in hf_name and "attention" not in hf_name:
      return (width, 4 * width)
    if hf_name == "classifier.weight":
      return (classes, width)
    if hf_name.endswith("intermediate.dense.bias"):
      return (4 * width,)
    if hf_name == "classifier.bias":
      return (classes,)
    if hf_name.endswith(".weight") and ("attention" in hf_name):
      return (width, width)
    return (width,)

  for hf_name, path, axes in rows:
    ours = params[path].shape
    mapped = tuple(np.transpose(np.empty(torch_shape(hf_name)), axes).shape) if axes else \
        torch_shape(hf_name)
    assert mapped == ours, (hf_name, path)


def test_front_end_pools_then_motion_features_then_pixel_mlp():
  """motion_features(pool) -> PixelMlp (Linear + exact GELU per pixel), then the tubelets."""
  model = vit_lib.VideoViT(num_classes=3, width=12, depth=0, num_heads=2, mlp_dim=24, tubelet=2,
                           patch=2, inputs="motion", pool=2, stem_channels=5, rngs=nnx.Rngs(2))
  clip = random_clip((2, 4, 8, 12, 3), seed=3)
  x = vit_lib.normalize_video(clip)
  pooled = x.reshape(2, 4, 4, 2, 6, 2, 3).mean(axis=(3, 5))
  features_of = jax.jit(motion.motion_features, static_argnums=1)  # one compile, not op by op
  features = features_of(x, 2)
  assert features.shape == (2, 4, 4, 6, motion.MOTION_CHANNELS)
  # All but the fine curl and its gated copies (13-16, 20-25) are fields of the pooled clip.
  np.testing.assert_allclose(features[..., :13], features_of(pooled, 1)[..., :13], atol=1e-6)
  np.testing.assert_allclose(features[..., 17:20], features_of(pooled, 1)[..., 17:20], atol=1e-6)
  expected = jax.nn.gelu(features @ model.stem.kernel[...] + model.stem.bias[...],
                         approximate=False)
  stem = nnx.split(model.stem)
  got = jax.jit(lambda s, v: nnx.merge(stem[0], s)(v))(stem[1], features)
  np.testing.assert_allclose(got, expected, atol=1e-5)
  # Tokens: (4/2) x (8/(2*2)) x (12/(2*2)) = 12, each from 2x2x2 pooled pixels of 5 channels.
  assert jitted(model, "tokens")(clip).shape == (2, 12, 12)
  assert model.patch_embed.kernel.shape == (2, 2, 2, 5, 12)
  with pytest.raises(ValueError, match="multiples of 4"):
    model(random_clip((1, 4, 8, 10, 3)))
  with pytest.raises(ValueError, match="inputs='flow'"):
    vit_lib.VideoViT(num_classes=3, width=12, depth=0, num_heads=2, mlp_dim=24, tubelet=2,
                     patch=2, inputs="flow", rngs=nnx.Rngs(2))


@pytest.mark.parametrize("stem", [{}, dict(inputs="motion", pool=2, stem_channels=8)])
def test_flops_match_videomae_and_xla(stem):
  config = hmdb51_config.get_config()
  # VideoMAE reports 180 G (multiply-adds) per 16x224x224 view for ViT-B.
  assert abs(vit_lib.flops_per_clip(config) / 2 - 180e9) < 1e9
  small = tiny_config(width=64, depth=2, num_heads=2, tubelet=2, patch=8 // (2 if stem else 1),
                      **stem)
  model = vit_lib.vit_from_config(small, rngs=nnx.Rngs(0))
  graph, state = nnx.split(model)
  clip = jax.ShapeDtypeStruct((1, 8, 32, 32, 3), jnp.float32)
  compiled = jax.jit(lambda s, x: nnx.merge(graph, s)(x)).lower(state, clip).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  analytic = vit_lib.flops_per_clip(small, frames=8, resolution=32)
  # flops_per_clip counts the matmuls (what MFU counts); XLA also counts elementwise work (norms,
  # GELU, softmax: a few percent at this size) and the motion inputs' fields, measured alone here.
  front_end = 0.0
  if stem.get("inputs") == "motion":
    fields = jax.jit(lambda x: motion.motion_features(x, 2)).lower(clip).compile().cost_analysis()
    front_end = (fields[0] if isinstance(fields, (list, tuple)) else fields)["flops"]
  assert analytic <= cost["flops"] - front_end <= 1.25 * analytic


def test_configs_build():
  config = synthetic_config.get_config()
  from stae_jax.data import synthetic as synthetic_data
  assert config.model.vit.num_classes == len(synthetic_data.CLASS_NAMES)
  model = vit_lib.vit_from_config(config, rngs=nnx.Rngs(0))
  clip = random_clip((1, config.data.frames, config.data.resolution, config.data.resolution, 3))
  assert jitted(model)(clip).shape == (1, config.model.vit.num_classes)
  assert vit_lib.flops_per_clip(config) > 0


def test_bad_inputs_are_explained():
  model = vit_lib.vit_from_config(tiny_config(), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="batch, frames, height, width, 3"):
    model(random_clip((4, 16, 16, 3)))
  with pytest.raises(ValueError, match="multiple of 2"):
    model(random_clip((1, 3, 16, 16, 3)))
  with pytest.raises(ValueError, match="uint8 pixels or floats"):
    model(jnp.zeros((1, 4, 16, 16, 3), jnp.int32))
  with pytest.raises(ValueError, match="unknown ViT size 'XL'"):
    vit_lib.vit_dimensions(tiny_config(size="XL"))
  with pytest.raises(ValueError, match="unknown dtype"):
    vit_lib.vit_from_config(tiny_config(dtype="bf16"), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="num_classes"):
    vit_lib.vit_from_config(tiny_config(num_classes=0), rngs=nnx.Rngs(0))
