"""Training losses. Weights live in each stage's config (`loss.task`, `loss.rate`, ...).

task           cross-entropy of the ViT on the reconstruction (on the clean clip for the classifier)
distill        KL from the ViT's logits on the clean clip (stop-gradient teacher) to those on the
               reconstruction: keeps the decision, not just the label, through compression
reconstruction MSE on 0..1 pixels
block_reconstruction
               MSE on 0..1 pixels of every block through STAE's block transforms, kept or not:
               the transforms then learn from all blocks, not only the few a keep ratio sends
               (STAE only; other systems ignore it)
rate           bits per pixel of the learned rate estimate (frame mask + block masks + payload);
               its weight sets the operating point
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  per_clip = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  return weighted_mean(per_clip, weights)


def distillation(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float = 1.0,
                 weights: jax.Array | None = None) -> jax.Array:
  """KL(teacher || student) at `temperature`, scaled by T^2 (Hinton et al.) so its size is T-free."""
  t = temperature
  teacher = jax.nn.softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / t)
  log_student = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t)
  per_clip = jnp.sum(teacher * (jnp.log(teacher + 1e-12) - log_student), axis=-1) * t * t
  return weighted_mean(per_clip, weights)


def reconstruction_mse(reconstruction: jax.Array, video: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """MSE on 0..1 pixels; `reconstruction` is float 0..255 and `video` uint8, as the models produce."""
  diff = (reconstruction.astype(jnp.float32) - video.astype(jnp.float32)) / 255.0
  per_clip = jnp.mean(jnp.square(diff), axis=tuple(range(1, diff.ndim)))
  return weighted_mean(per_clip, weights)


def bits_per_pixel(bits_per_clip: jax.Array, video_shape, weights: jax.Array | None = None) -> jax.Array:
  """Mean bits per pixel over clips; pixels are T*H*W of the clip at model resolution."""
  _, t, h, w = video_shape[:4]
  return weighted_mean(bits_per_clip.astype(jnp.float32) / float(t * h * w), weights)


def accuracy(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  return weighted_mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32), weights)


def psnr_from_mse(mse: jax.Array) -> jax.Array:
  return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def weighted_mean(values: jax.Array, weights: jax.Array | None) -> jax.Array:
  if weights is None:
    return jnp.mean(values)
  weights = weights.astype(jnp.float32)
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)
