"""benchmarks/step_split.py: a traced step's operations are named back to the parts of the model."""

import glob
import gzip
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

import benchmark_modules


def _benchmark():
  return benchmark_modules.load("step_split")  # it imports train_step beside it


def test_part_names_follow_the_most_specific_scope():
  split = _benchmark()
  assert split.part_of("jit(train_step)/jvp(classifier)/motion_features/sub") == (
      "classifier: motion features")
  assert split.part_of("jit(train_step)/transpose(jvp(classifier))/dot_general") == (
      "classifier: transformer")
  assert split.part_of("jit(train_step)/transpose(jvp(decoder))/conv") == "decoder"
  assert split.part_of("jit(train_step)/jvp()/sub").startswith("other")
  assert split.part_of("jit(train_step)/jvp(my_decoder_x)/conv").startswith("other")


def test_a_traced_step_splits_into_its_scopes_forward_and_backward(tmp_path):
  """A gradient step of two scoped parts: every part gets forward and backward time, and the
  parts' names come from the compiled program (fusions without a name of their own included)."""
  split = _benchmark()
  rng = np.random.default_rng(0)
  w1 = jnp.asarray(rng.normal(size=(256, 256)).astype(np.float32))
  w2 = jnp.asarray(rng.normal(size=(256, 256)).astype(np.float32))
  x = jnp.asarray(rng.normal(size=(512, 256)).astype(np.float32))

  def loss(params, x):
    with jax.named_scope("decoder"):
      h = jnp.tanh(x @ params[0])
    with jax.named_scope("classifier"):
      return jnp.sum(jnp.sin(h @ params[1]))

  step = jax.jit(jax.grad(loss))
  table = split.instructions(step.lower((w1, w2), x).compile().as_text())
  jax.block_until_ready(step((w1, w2), x))
  with jax.profiler.trace(str(tmp_path)):
    for _ in range(2):
      jax.block_until_ready(step((w1, w2), x))
  path = sorted(glob.glob(os.path.join(str(tmp_path), "**", "*.trace.json.gz"), recursive=True))[-1]
  with gzip.open(path) as f:
    totals = split.split(json.load(f)["traceEvents"], table, steps=2)
  for part in ("decoder", "classifier: transformer"):
    assert totals.get((part, "forward"), 0.0) > 0.0, totals
    assert totals.get((part, "backward"), 0.0) > 0.0, totals
  named = sum(v for (part, _), v in totals.items() if not part.startswith("other"))
  assert named > 0.5 * sum(totals.values()), totals
