"""Per-system forwards and the model container: names, shapes, bits, gradients, dispatch."""

import math
import re

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import hmdb51, synthetic
from stae_jax.models import systems
from stae_jax.models.stae import keep_count

T, SIZE = 8, 32


def rngs(seed=0):
  """Parameter keys with the "rbg" PRNG: its kernels compile ~5x faster than threefry's on a CPU,
  and eager initialisation compiles one kernel per parameter shape (seconds per model)."""
  return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def tiny_config(system="stae"):
  """The synthetic config shrunk to a 8x32x32 clip and models of a few thousand parameters."""
  config = synthetic.get_config(f"frames={T},size={SIZE},system={system}")
  config.model.vit.update(dict(num_classes=5, width=32, depth=1, num_heads=2, tubelet=4, patch=8))
  config.model.stae.update(dict(transform_width=8, frame_widths=(8, 8, 8), spatial_widths=(8, 8),
                                keep_ratios=((0.5, 0.25), (1.0, 0.5))))
  config.model.decoder.update(dict(width=8, temporal_layers=1, spatial_layers=1))
  config.model.deepisc.update(dict(patch=8, width=32, encoder_depth=1, decoder_depth=1,
                                   num_heads=2, max_tokens=4, channels=4, token_choices=(2, 4)))
  return config


@pytest.fixture(scope="module")
def built():
  """Models of each system, built once: eager initialisation costs seconds on a CPU."""
  return {system: (tiny_config(system), systems.build_models(tiny_config(system), rngs(0)))
          for system in systems.SYSTEMS}


def clip(batch=2, seed=0):
  return jax.random.randint(jax.random.key(seed), (batch, T, SIZE, SIZE, 3), 0, 256,
                            jnp.int32).astype(jnp.uint8)


def run_forward(config, models, video, *, operating_point, training, rng=None):
  graphdef, state = nnx.split(models)
  fn = jax.jit(lambda state, video, rng: systems.system_forward(
      config, nnx.merge(graphdef, state), video, operating_point=operating_point,
      training=training, rng=rng))
  return fn(state, video, rng)


def top_level_names(models):
  return {path[0] for path, _ in nnx.to_flat_state(nnx.state(models, nnx.Param))}


def test_build_models_names_what_each_system_needs(built):
  stae_models = built["stae"][1]
  assert top_level_names(stae_models) == {"vit", "stae", "prior", "decoder"}
  deepisc_models = built["deepisc"][1]
  assert top_level_names(deepisc_models) == {"vit", "deepisc"}
  # Freezing is a regex over "/"-joined paths: `^vit/` selects the classifier and nothing else.
  paths = ["/".join(map(str, path)) for path, _ in nnx.to_flat_state(nnx.state(stae_models))]
  frozen = [p for p in paths if re.match("^vit/", p)]
  assert frozen and all(p.split("/")[0] == "vit" for p in frozen)
  assert any(p.startswith("stae/frame_attention/") for p in paths)
  assert any(p.startswith("stae/spatial_attention/") for p in paths)


def test_stae_forward_outputs_and_exact_mask_bits(built):
  config, models = built["stae"]
  out = run_forward(config, models, clip(), operating_point=(0.5, 0.25), training=False)
  n = (SIZE // config.model.stae.block_size) ** 2
  k_f, k_s = keep_count(0.5, T), keep_count(0.25, n)
  assert out["logits"].shape == (2, 5) and out["logits"].dtype == jnp.float32
  assert out["reconstruction"].shape == (2, T, SIZE, SIZE, 3)
  assert out["frame_mask"].shape == (2, T) and out["frame_mask"].dtype == jnp.bool_
  assert out["block_mask"].shape == (2, T, n) and out["block_mask"].dtype == jnp.bool_
  g = config.model.stae.block_size // config.model.stae.latent_stride
  assert out["latents"].shape == (2, k_f, k_s, g, g, config.model.stae.latent_channels)
  bits = {key: np.asarray(value) for key, value in out["bits"].items()}
  np.testing.assert_array_equal(bits["frame_mask"], np.float32(math.log2(math.comb(T, k_f))))
  np.testing.assert_allclose(bits["block_masks"], k_f * math.log2(math.comb(n, k_s)), rtol=1e-6)
  np.testing.assert_allclose(bits["masks"], bits["frame_mask"] + bits["block_masks"], rtol=1e-6)
  np.testing.assert_allclose(bits["total"], bits["payload"] + bits["masks"], rtol=1e-6)
  # The payload is the prior's information content of exactly the latents that are sent.
  models_prior = models["prior"]
  expected_payload = np.asarray(models_prior.bits(out["latents"]).sum(axis=(1, 2, 3, 4, 5)))
  np.testing.assert_allclose(bits["payload"], expected_payload, rtol=1e-4)
  assert (bits["payload"] > 0).all()
  # The reconstruction keeps every received pixel bit-exactly.
  kept = np.asarray(out["pixel_mask"][..., 0]) > 0
  np.testing.assert_array_equal(np.asarray(out["reconstruction"])[kept],
                                np.asarray(out["received"])[kept])


def test_gradients_of_the_training_loss_reach_every_stae_part(built):
  models = built["stae"][1]
  video = clip()
  labels = jnp.array([1, 3])
  graphdef, params = nnx.split(models, nnx.Param)

  def loss(params):
    out = systems.stae_forward(nnx.merge(graphdef, params), video, frame_keep=0.5,
                               block_keep=0.25, training=True, rng=jax.random.key(4))
    task = -jnp.take_along_axis(jax.nn.log_softmax(out["logits"]), labels[:, None], 1).mean()
    distortion = jnp.mean((out["reconstruction"] - video) ** 2) / 255.0 ** 2
    return task + distortion + 1e-4 * out["bits"]["total"].mean()

  grads = nnx.to_flat_state(jax.jit(jax.grad(loss))(params))
  for prefix in ("stae/frame_attention", "stae/spatial_attention", "stae/analysis",
                 "stae/synthesis", "prior", "decoder", "vit"):
    leaves = [v[...] for path, v in grads if "/".join(map(str, path)).startswith(prefix)]
    assert leaves, prefix
    assert all(bool(jnp.isfinite(g).all()) for g in leaves), prefix
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0, prefix


def test_task_selection_gradient_keeps_pixel_error_away_from_the_attention(built):
  models = built["stae"][1]
  video = clip()
  graphdef, params = nnx.split(models, nnx.Param)

  def pixel_loss(params, selection_gradient):
    merged = nnx.merge(graphdef, params)
    merged["stae"].selection_gradient = selection_gradient
    out = systems.stae_forward(merged, video, frame_keep=0.5, block_keep=0.25, training=True,
                               rng=jax.random.key(4))
    pixels = out.get("pixel_reconstruction", out["reconstruction"])
    return jnp.mean((pixels - video) ** 2) / 255.0 ** 2, out

  def grad_sums(selection_gradient):
    grads = jax.jit(jax.grad(lambda p: pixel_loss(p, selection_gradient)[0]))(params)
    sums = {}
    for path, v in nnx.to_flat_state(grads):
      key = "/".join(map(str, path[:2])) if path[0] == "stae" else str(path[0])
      sums[key] = sums.get(key, 0.0) + float(jnp.abs(v[...]).sum())
    return sums

  everything, task_only = grad_sums("all"), grad_sums("task")
  for part in ("stae/frame_attention", "stae/spatial_attention"):
    assert everything[part] > 0, part
    assert task_only[part] == 0.0, part
  for part in ("stae/analysis", "stae/synthesis", "decoder"):
    assert task_only[part] > 0, part
  # The second pass decodes the same pixels: only the gradients differ.
  _, out = jax.jit(lambda p: pixel_loss(p, "task"))(params)
  np.testing.assert_allclose(np.asarray(out["pixel_reconstruction"]),
                             np.asarray(out["reconstruction"]), rtol=1e-5, atol=1e-3)


def test_dispatch_and_shared_keys_across_systems(built):
  for system in systems.SYSTEMS:
    config, models = built[system]
    point = systems.operating_points(config)[0]
    out = run_forward(config, models, clip(), operating_point=point, training=False)
    assert {"logits", "reconstruction", "bits", "latents"} <= set(out), system
    assert {"payload", "masks", "total"} <= set(out["bits"]), system
    assert out["reconstruction"].shape == (2, T, SIZE, SIZE, 3), system
    assert out["bits"]["total"].shape == (2,), system
  logits = systems.classifier_forward(models, clip())["logits"]
  assert logits.shape == (2, 5)


def test_bad_system_and_operating_point_are_explained(built):
  config, models = tiny_config(), built["stae"][1]
  with pytest.raises(ValueError, match=r"operating_point=\(frame_keep, block_keep\)"):
    systems.system_forward(config, models, clip(), operating_point=4, training=False)
  config.system = "h264"
  with pytest.raises(ValueError, match="not one of"):
    systems.build_models(config, rngs(0))


def test_hmdb51_shapes_abstractly():
  """The paper's setting (16x224x224, p=16, ViT-B/16) traced with eval_shape: no compute."""
  config = hmdb51.get_config(None)
  models = nnx.eval_shape(lambda: systems.build_models(config, rngs(0)))
  graphdef, state = nnx.split(models)
  video = jax.ShapeDtypeStruct((2, 16, 224, 224, 3), jnp.uint8)
  rho_f, rho_s = config.model.stae.keep_ratios[0]
  out = jax.eval_shape(lambda s, v: systems.stae_forward(
      nnx.merge(graphdef, s), v, frame_keep=rho_f, block_keep=rho_s, training=False), state, video)
  k_f, k_s = keep_count(rho_f, 16), keep_count(rho_s, 196)
  assert out["logits"].shape == (2, 51)
  assert out["reconstruction"].shape == (2, 16, 224, 224, 3)
  assert out["latents"].shape == (2, k_f, k_s, 4, 4, config.model.stae.latent_channels)
  assert out["block_mask"].shape == (2, 16, 196)
  assert out["bits"]["total"].shape == (2,)
