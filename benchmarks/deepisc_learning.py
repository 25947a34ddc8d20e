r"""How fast the DeepISC baseline learns to reconstruct frames, apart from the classifier and trainer.

  python benchmarks/deepisc_learning.py [--steps=1000] [--lr=3e-3] [--init_step=8.0] [--every=250]

Why: in the main job's 100 + 10 steps DeepISC stays at chance, and "does not learn" has several
possible causes (the latents rounded away, the task gradient, the budget). This trains
configs/synthetic.py's DeepISC alone on reconstruction (MSE on 0..1 pixels, Adam, additive uniform noise in place of
rounding, as the trainer does), on 64 training clips of `synthetic_actions` generated in memory
(4 frames each, every 4th), batches of 8 clips, and prints the PSNR of 16 test clips with the
latents rounded, at 1 and at all tokens per frame, every `--every` steps. A codec that uses its
tokens shows a gap between the two columns; a flat, equal pair means the decoder ignores them.
`--init_step` overrides the config's step of the fixed patch-colour code (stae_jax/models/deepisc.py).
"""

import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from configs import synthetic  # pylint: disable=wrong-import-position
from stae_jax.data import synthetic as synthetic_data  # pylint: disable=wrong-import-position
from stae_jax.systems import deepisc as deepisc_system  # pylint: disable=wrong-import-position


def clips(split: str, count: int, size: int) -> np.ndarray:
  """[count, 4, size, size, 3] uint8: every 4th frame of 16-frame synthetic clips."""
  return np.stack([synthetic_data.generate_clip(i, split, frames=16, size=size)[0][::4]
                   for i in range(count)])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
  parser.add_argument("--steps", type=int, default=1000)
  parser.add_argument("--lr", type=float, default=3e-3)
  parser.add_argument("--init_step", type=float, default=None)
  parser.add_argument("--every", type=int, default=250)
  args = parser.parse_args()
  config = synthetic.get_config(None)
  entry = config.systems.deepisc  # DeepISC's system entry: model.deepisc (+ model.entropy)
  if args.init_step is not None:
    entry.model.deepisc.init_step = args.init_step
  size = int(config.data.resolution)
  model = deepisc_system.build(entry, config.data, rngs=nnx.Rngs(0))["deepisc"]
  k_max = model.max_tokens
  train = clips("train", 64, size)
  test = jnp.asarray(clips("test", 16, size))
  graph, params, rest = nnx.split(model, nnx.Param, ...)
  optimizer = optax.adam(args.lr)
  opt_state = optimizer.init(params)

  def rebuild(params, video, tokens, noise_rng):
    m = nnx.merge(graph, params, rest)
    y = m.encode(video)[:, :, :tokens]
    if noise_rng is None:
      y = jnp.round(y)
    else:
      y = y + jax.random.uniform(noise_rng, y.shape, minval=-0.5, maxval=0.5)
    return m.decode(y, tokens)

  def loss_fn(params, video, noise_rng):
    error = (rebuild(params, video, k_max, noise_rng) - video.astype(jnp.float32)) / 255.0
    return jnp.mean(error ** 2)

  @jax.jit
  def step(params, opt_state, video, noise_rng):
    loss, grads = jax.value_and_grad(loss_fn)(params, video, noise_rng)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def psnr(params):
    out = []
    for tokens in (1, k_max):
      mse = jnp.mean((rebuild(params, test, tokens, None) - test.astype(jnp.float32)) ** 2)
      out.append(10.0 * jnp.log10(255.0 ** 2 / mse))
    return out

  print(f"DeepISC of configs/synthetic.py: {k_max} tokens x {model.channels} channels per frame, "
        f"init_step {model.init_step}, Adam {args.lr}")
  print("| step | PSNR dB, 1 token | PSNR dB, all tokens | seconds |")
  print("|---|---|---|---|")
  rng = jax.random.PRNGKey(0)
  start = time.perf_counter()
  for i in range(args.steps + 1):
    if i % args.every == 0 or i == args.steps:
      one, full = psnr(params)
      print(f"| {i} | {float(one):.2f} | {float(full):.2f} | {time.perf_counter() - start:.0f} |",
            flush=True)
    if i == args.steps:
      break
    batch = np.random.default_rng(i).choice(len(train), 8, replace=False)
    rng, noise_rng = jax.random.split(rng)
    params, opt_state, _ = step(params, opt_state, jnp.asarray(train[batch]), noise_rng)


if __name__ == "__main__":
  main()
