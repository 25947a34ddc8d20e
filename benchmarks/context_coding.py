r"""STAE's bits under the conditional entropy model against its factorized prior, same latents.

  python benchmarks/context_coding.py --workdir=runs/synthetic [--config=configs/synthetic.py]
      [--tag=stae] [--fit_clips=1000] [--json=/tmp/context.json]

A trained STAE system's device half (its attention, selection and analysis transform, unchanged)
encodes clips at every operating point. Its quantised latents are then coded twice: with the
system's own frozen tables, and with conditional tables (`stae_jax.models.entropy.ContextPrior`
under the integer rule of `stae_jax.models.context`) whose densities are fitted here, by maximum
likelihood, to the residuals and contexts of `--fit_clips` clips of the training split. The
latents and masks are the same, the decoded clips are the same (checked: every stream is decoded
and compared with what was sent), so the accuracy is equal by construction and the bits are the
whole difference. What the conditional model gains when the encoder is also trained through it is
train.py's business (`model.entropy.context=True`); this script isolates the coder.

If the system was itself trained with a conditional prior, its own tables are the conditional
ones and the refitted factorized tables are the comparison (the same fit, with no context).

Prints per point: mean real bits per clip (header and masks included) for both, the saving, the
estimate (the learned rate, masks included, header excluded) beside the real figure, and encode /
decode times per clip with latent symbols per second. Nothing is typed in: every figure is
measured in the run.
"""

import json
import pathlib
import sys
import time

from absl import app
from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
import optax

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from stae_jax.coding import bitstream  # pylint: disable=wrong-import-position
from stae_jax.coding import tables as tables_lib  # pylint: disable=wrong-import-position
from stae_jax.data import pipeline  # pylint: disable=wrong-import-position
from stae_jax.models import context as context_lib  # pylint: disable=wrong-import-position
from stae_jax.models.entropy import ContextPrior  # pylint: disable=wrong-import-position
from stae_jax.systems import stae as stae_system  # pylint: disable=wrong-import-position
from stae_jax.systems import loading  # pylint: disable=wrong-import-position

_CONFIG = config_flags.DEFINE_config_file("config", str(REPO_ROOT / "configs" / "synthetic.py"),
                                          "Experiment config (file.py[:switches]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "The training workdir.")
_TAG = flags.DEFINE_string("tag", "stae", "The STAE system's tag in the workdir.")
_FIT_CLIPS = flags.DEFINE_integer("fit_clips", 1000, "Training-split clips the tables are fitted on.")
_TEST_CLIPS = flags.DEFINE_integer("test_clips", 0, "Test clips measured (0: the whole split).")
_FIT_STEPS = flags.DEFINE_integer("fit_steps", 1500, "Adam steps of the maximum-likelihood fit.")
_JSON = flags.DEFINE_string("json", None, "Also write the figures here.")


def clips_of(config, split: str, limit: int) -> np.ndarray:
  out, count = [], 0
  for batch in pipeline.make_loader(config.data, split, seed=0, train=False, num_epochs=1):
    video = batch["video"][batch["mask"]]
    out.append(video)
    count += len(video)
    if limit and count >= limit:
      break
  clips = np.concatenate(out)
  return clips[:limit] if limit else clips


def device_half(codec, clips, point, batch: int = 64) -> dict:
  parts = [codec.encode(clips[i:i + batch], point) for i in range(0, len(clips), batch)]
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def residual_histograms(sent: list[dict], prior: ContextPrior, blocks: int):
  """(row, residual) of every sent latent of every point, by the training rate's twin of the
  coder's rule (tests/test_context_coding.py checks that they agree)."""
  rows_all, residual_all = [], []
  for encoded in sent:
    dense, kept = stae_system._in_place(jnp.asarray(encoded["latents"]),  # pylint: disable=protected-access
                                        jnp.asarray(encoded["block_index"]), blocks)
    b, k_f = kept.shape[:2]
    flat = dense.reshape(b, k_f, blocks, -1)
    pred, ctx = (np.asarray(a) for a in context_lib.dense_context(
        flat, kept, prior.channels, prior.grid_width, prior.thresholds, prior.channel_clip))
    kept = np.asarray(kept)
    channel = np.arange(flat.shape[-1]) % prior.channels
    rows_all.append((channel * prior.num_contexts + ctx)[kept].reshape(-1))
    residual_all.append((np.asarray(flat) - pred)[kept].astype(np.int64).reshape(-1))
  return np.concatenate(rows_all), np.concatenate(residual_all)


def fit(prior, rows, values, steps: int):
  """Maximum likelihood of integer `values` (one per coded latent) under each `rows` density."""
  lo, hi = int(values.min()), int(values.max())
  grid = np.arange(lo, hi + 1)
  counts = np.zeros((len(grid), prior.channels), np.float32)
  np.add.at(counts, (values - lo, rows), 1.0)
  graphdef, params = nnx.split(prior, nnx.Param)
  total = counts.sum()
  x = jnp.broadcast_to(jnp.asarray(grid, jnp.float32)[:, None], counts.shape)
  counts = jnp.asarray(counts)

  def loss(params):
    model = nnx.merge(graphdef, params)
    return (counts * model.bits(x)).sum() / total

  optimizer = optax.adam(optax.cosine_decay_schedule(0.05, steps))
  state = optimizer.init(params)

  @jax.jit
  def step(params, state):
    value, grads = jax.value_and_grad(loss)(params)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state, value

  for _ in range(steps):
    params, state, value = step(params, state)
  nnx.update(prior, params)
  return float(value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  config = _CONFIG.value
  workdir = loading.resolve(_WORKDIR.value, config)
  trained = loading.load_system(workdir, _TAG.value)
  codec = stae_system.codec(trained)
  entry = trained.entry
  own_tables = trained.tables
  own_conditional = own_tables.conditional
  channels = own_tables.channels
  blocks, frames = codec._blocks, codec._frames  # pylint: disable=protected-access
  # The other entropy model, built as train.py builds it (the entry's settings, the constructors'
  # defaults), with the context switched the other way.
  other_entry = entry.copy_and_resolve_references()
  other_entry.model.entropy.context = not own_conditional
  other = stae_system.build_prior(other_entry, trained.data, rngs=nnx.Rngs(0))
  tail_mass = float(entry.model.get("entropy", {}).get("tail_mass", 1e-9))

  start = time.time()
  fit_clips = clips_of(config, "train", _FIT_CLIPS.value)
  test_clips = clips_of(config, "test", _TEST_CLIPS.value)
  fit_sent = [device_half(codec, fit_clips, p) for p in codec.points]
  if own_conditional:  # compare with a factorized fit: one density per channel, no context
    values = np.concatenate([s["latents"].reshape(-1, channels) for s in fit_sent])
    fit_bits = fit(other, np.tile(np.arange(channels), len(values)),
                   values.reshape(-1).astype(np.int64), _FIT_STEPS.value)
    other_label = "factorized (refitted)"
  else:
    rows, residual = residual_histograms(fit_sent, other, blocks)
    fit_bits = fit(other.density, rows, residual, _FIT_STEPS.value)
    other_label = "conditional (fitted here)"
  other_tables = tables_lib.freeze(other, tail_mass=tail_mass)
  print(f"fitted {other_label} tables on {len(fit_clips)} training clips x {len(codec.points)} "
        f"points in {time.time() - start:.0f} s ({fit_bits:.3f} bits per latent on the fit data)")
  if own_conditional:
    conditional_tables, factorized_tables = own_tables, other_tables
    conditional_prior = stae_system.entropy_model(
        nnx.merge(trained.graphdef, trained.params, trained.rest))
  else:
    conditional_tables, factorized_tables = other_tables, own_tables
    conditional_prior = other

  estimate = jax.jit(lambda latents, index, k_f, k_s: stae_system.rate_bits(
      conditional_prior, latents, jnp.ones(index.shape), frames=frames, blocks=blocks, k_f=k_f,
      k_s=k_s, block_index=index)["total"], static_argnums=(2, 3))

  rows_out = []
  for point in codec.points:
    sent = device_half(codec, test_clips, point)
    args = stae_system.to_payloads(sent["frame_index"], sent["block_index"], sent["latents"],
                                   frames=frames, blocks=blocks)
    latents = args.pop("latents")
    k_f, k_s = sent["block_index"].shape[1:]
    figures = dict(point=point.name, clips=len(test_clips), symbols_per_clip=int(latents[0].size))
    for name, tables in (("factorized", factorized_tables), ("conditional", conditional_tables)):
      t0 = time.perf_counter()
      streams, stats = bitstream.encode_batch(latents, tables, **args)
      t1 = time.perf_counter()
      decoded = bitstream.decode_batch(streams, tables)
      t2 = time.perf_counter()
      for i, payload in enumerate(decoded):
        if not (np.array_equal(payload.latents, latents[i])
                and np.array_equal(payload.frame_mask, args["frame_masks"][i])
                and np.array_equal(payload.block_masks, args["block_masks"][i])):
          raise AssertionError(f"{name} tables: clip {i} at {point.name} did not decode to what "
                               "was sent")
      symbols = latents.size
      figures[name] = dict(bits=float(stats["bits"].mean()),
                           encode_ms=1e3 * (t1 - t0) / len(streams),
                           decode_ms=1e3 * (t2 - t1) / len(streams),
                           encode_symbols_per_s=symbols / (t1 - t0),
                           decode_symbols_per_s=symbols / (t2 - t1),
                           escapes=int(stats["escapes"].sum()))
    est = np.concatenate([np.asarray(estimate(jnp.asarray(sent["latents"][i:i + 64]),
                                              jnp.asarray(sent["block_index"][i:i + 64]),
                                              k_f, k_s)) for i in range(0, len(test_clips), 64)])
    first = bitstream.ClipPayload(latents[0], args["frame_masks"][0], args["block_masks"][0])
    figures["header_bits"] = 8 * bitstream.encode_with_stats(first, conditional_tables)[1].header_bytes
    figures["conditional"]["estimate_bits"] = float(est.mean())
    figures["saving"] = 1.0 - figures["conditional"]["bits"] / figures["factorized"]["bits"]
    rows_out.append(figures)

  print(f"\n{_TAG.value} of {workdir}; {len(test_clips)} test clips; own tables: "
        f"{'conditional' if own_conditional else 'factorized'}; the same latents coded both ways "
        "(every stream decoded and checked)\n")
  print("| point | factorized bits/clip | conditional bits/clip | saving | conditional estimate "
        "+ header | encode ms/clip (fact. / cond.) | decode ms/clip (fact. / cond.) | "
        "decode Msymbols/s (cond.) |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows_out:
    f, c = r["factorized"], r["conditional"]
    print(f"| {r['point']} | {f['bits']:,.0f} | {c['bits']:,.0f} | {100 * r['saving']:.1f}% | "
          f"{c['estimate_bits']:,.0f} + {r['header_bits']} | {f['encode_ms']:.2f} / {c['encode_ms']:.2f} | "
          f"{f['decode_ms']:.2f} / {c['decode_ms']:.2f} | {c['decode_symbols_per_s'] / 1e6:.2f} |")
  if _JSON.value:
    pathlib.Path(_JSON.value).write_text(json.dumps(dict(
        workdir=str(workdir), tag=_TAG.value, own_tables="conditional" if own_conditional else
        "factorized", fit_clips=len(fit_clips), points=rows_out),
        indent=2))


if __name__ == "__main__":
  app.run(main)
