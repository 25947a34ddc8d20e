r"""How fast does a classifier learn motion on a synthetic_actions variant? A plain training loop.

  python benchmarks/motion_probe.py --steps=900 \
      --vit='{"inputs": "frames", "pool": 1, "stem_channels": 0, "patch": 16}' \
      --knobs='{"rotation": [0.5, 0.75]}' --augment=roll,hflip,vflip,reverse

Why (issue 15): the embedded default's classifier must recognise the action, not the actor's
colour, within the minutes train.py has on two CPU cores. Trying a recipe through the whole
pipeline means rebuilding the dataset and training every stage; this script instead generates the
clips in memory (`synthetic.generate_clip` with any of its knobs; cached under --cache as .npz,
keyed by the knobs and GENERATOR_VERSION), builds the ViT from configs/synthetic.py's
`model.vit` with JSON overrides, and trains it alone with AdamW and a warmup-cosine schedule (the
classifier stage's optimizer, without the trainer's checkpoints and logs). Every --eval_every
steps it prints test top-1, pair right (predicted class in the label's pair: what the actor's
colour gives) and the within-pair accuracy of each class pair; at the end the time controls of
stae_jax/evaluation/time_controls.py (frames shuffled, middle frame repeated, reversed).

Training augmentations (--augment): the generator's symmetries with their label maps
(stae_jax/data/synthetic.py: hflip, vflip, reverse) and a circular shift (roll; the scene is a
torus), each drawn per clip. Nothing here feeds the README's headline; BENCHMARKS.md "Motion
probes" records what it printed.
"""

import hashlib
import json
import pathlib
import sys
import time

from absl import app
from absl import flags
import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from configs import synthetic as synthetic_config  # pylint: disable=wrong-import-position
from stae_jax.data import synthetic  # pylint: disable=wrong-import-position
from stae_jax.evaluation import time_controls as controls  # pylint: disable=wrong-import-position

_STEPS = flags.DEFINE_integer("steps", 900, "Training steps.")
_BATCH = flags.DEFINE_integer("batch", 32, "Clips per step.")
_LR = flags.DEFINE_float("lr", 2e-3, "Peak learning rate (AdamW, warmup then cosine to 0).")
_WARMUP = flags.DEFINE_integer("warmup", 20, "Warmup steps.")
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 0.05, "AdamW weight decay.")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 3000, "Training clips generated (then cycled).")
_NUM_TEST = flags.DEFINE_integer("num_test", 600, "Test clips generated.")
_KNOBS = flags.DEFINE_string("knobs", "{}", "JSON: keyword arguments of synthetic.generate_clip.")
_VIT = flags.DEFINE_string("vit", "{}", "JSON: overrides of configs/synthetic.py's model.vit.")
_AUGMENT = flags.DEFINE_list("augment", [], "Any of roll, hflip, vflip, reverse.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 300, "Steps between test evaluations.")
_SEED = flags.DEFINE_integer("seed", 0, "Model init, batch order, augmentation and shuffles.")
_CACHE = flags.DEFINE_string("cache", "/tmp/motion_probe_cache", "Folder for generated clips.")

AUGMENTS = ("roll", "hflip", "vflip", "reverse")


def generated(split: str, count: int, knobs: dict) -> tuple[np.ndarray, np.ndarray]:
  """(uint8[count, T, H, W, 3], int64[count]) for clips 0..count-1 of `split`, cached."""
  key = json.dumps([split, count, knobs, synthetic.GENERATOR_VERSION], sort_keys=True)
  path = pathlib.Path(_CACHE.value) / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
  if path.exists():
    with np.load(path, allow_pickle=False) as stored:
      return stored["clips"], stored["labels"]
  start = time.perf_counter()
  pairs = [synthetic.generate_clip(i, split, **knobs)[:2] for i in range(count)]
  clips = np.stack([c for c, _ in pairs])
  labels = np.array([label for _, label in pairs], np.int64)
  print(f"generated {count} {split} clips in {time.perf_counter() - start:.1f} s", flush=True)
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez(path, clips=clips, labels=labels)
  return clips, labels


def augment(clips: np.ndarray, labels: np.ndarray, names: set, rng: np.random.Generator):
  """Each clip of the batch transformed by a random subset of the chosen symmetries."""
  clips, labels = clips.copy(), labels.copy()
  maps = dict(hflip=synthetic.HFLIP_LABELS, vflip=synthetic.VFLIP_LABELS,
              reverse=synthetic.TIME_REVERSE_LABELS)
  axes = dict(hflip=2, vflip=1, reverse=0)  # axes of one clip [T, H, W, 3]
  for b in range(len(clips)):
    if "roll" in names:
      shift = rng.integers(0, clips.shape[2:4])
      clips[b] = np.roll(clips[b], tuple(shift), axis=(1, 2))
    for name in ("hflip", "vflip", "reverse"):
      if name in names and rng.random() < 0.5:
        clips[b] = np.flip(clips[b], axis=axes[name])
        labels[b] = maps[name][labels[b]]
  return clips, labels


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  unknown = set(_AUGMENT.value) - set(AUGMENTS)
  if unknown:
    raise app.UsageError(f"--augment: unknown {sorted(unknown)}; use any of {AUGMENTS}.")
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from stae_jax.models import vit as vit_lib  # pylint: disable=import-outside-toplevel

  knobs = json.loads(_KNOBS.value)
  knobs = {k: tuple(v) if isinstance(v, list) else v for k, v in knobs.items()}
  train_clips, train_labels = generated("train", _NUM_TRAIN.value, knobs)
  test_clips, test_labels = generated("test", _NUM_TEST.value, knobs)
  vit_config = synthetic_config.get_config().model.vit
  vit_config.update(json.loads(_VIT.value))
  model = vit_lib.vit_from_config(vit_config, rngs=nnx.Rngs(_SEED.value))
  graph, params = nnx.split(model)
  warmup = min(_WARMUP.value, _STEPS.value // 2)
  schedule = optax.warmup_cosine_decay_schedule(0.0, _LR.value, warmup, _STEPS.value)
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.adamw(schedule, weight_decay=_WEIGHT_DECAY.value))
  opt_state = tx.init(params)

  def loss_fn(params, clips, labels):
    logits = nnx.merge(graph, params)(clips)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  @jax.jit
  def step(params, opt_state, clips, labels):
    loss, grads = jax.value_and_grad(loss_fn)(params, clips, labels)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  predict = jax.jit(lambda params, clips: jnp.argmax(nnx.merge(graph, params)(clips), -1))

  def predictions(params, clips):
    return np.concatenate([np.asarray(predict(params, clips[i:i + 100]))
                           for i in range(0, len(clips), 100)])

  def line(name, s):
    pairs = " ".join(f"{100 * v[0]:.0f}" for v in s["pairs"].values())
    return (f"{name}: top-1 {100 * s['top1']:.1f}%, pair {100 * s['pair']:.1f}%, "
            f"within-pair {100 * s['within']:.1f}% (per pair {pairs})")

  print(f"ViT {dict(vit_config)}; knobs {knobs}; augment {_AUGMENT.value}; "
        f"{vit_lib.flops_per_clip(vit_config, frames=train_clips.shape[1], resolution=train_clips.shape[2]) / 1e9:.2f} GFLOPs/clip",
        flush=True)
  rng = np.random.default_rng(_SEED.value)
  names, losses, start = set(_AUGMENT.value), [], time.perf_counter()
  for i in range(1, _STEPS.value + 1):
    index = rng.integers(0, len(train_clips), _BATCH.value)
    clips, labels = augment(train_clips[index], train_labels[index], names, rng)
    params, opt_state, loss = step(params, opt_state, jnp.asarray(clips),
                                   jnp.asarray(labels, jnp.int32))
    losses.append(float(loss))
    if i % _EVAL_EVERY.value == 0 or i == _STEPS.value:
      s = controls.scores(predictions(params, test_clips), test_labels)
      print(f"step {i} ({time.perf_counter() - start:.0f} s, train loss "
            f"{np.mean(losses[-50:]):.3f}) " + line("clean", s), flush=True)
  shuffle_rng = np.random.default_rng(_SEED.value)
  for name, clips in (("shuffled", controls.shuffled(test_clips, shuffle_rng)),
                      ("middle frame repeated", controls.middle_repeated(test_clips)),
                      ("reversed", controls.reversed_in_time(test_clips))):
    print(line(name, controls.scores(predictions(params, clips), test_labels)), flush=True)


if __name__ == "__main__":
  app.run(main)
