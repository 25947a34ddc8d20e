"""Skipped blocks (stae_jax/models/skip.py): the device's closed loop finds moved content, and the
receiver rebuilds from the decisions alone exactly what the device holds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stae_jax.models import skip as skip_lib
from stae_jax.models.stae import blockify

P, SEARCH = 8, 2


def _clip(seed, b=2, k=3, size=24):
  return np.random.default_rng(seed).uniform(0, 255, (b, k, size, size, 3)).astype(np.float32)


def test_vectors_name_their_moves():
  assert skip_lib.vector_count(SEARCH) == 25
  assert skip_lib.move_of(skip_lib.no_move(SEARCH), SEARCH) == (0, 0)
  moves = [skip_lib.move_of(v, SEARCH) for v in range(skip_lib.vector_count(SEARCH))]
  assert len(set(moves)) == 25
  assert min(min(m) for m in moves) == -2 and max(max(m) for m in moves) == 2
  windows = skip_lib.shifted(jnp.asarray(_clip(0)[:, 0]), SEARCH)
  frame = np.asarray(_clip(0)[:, 0])
  for v, (dy, dx) in enumerate(moves):  # interior pixels: the window at (y + dy, x + dx)
    np.testing.assert_array_equal(np.asarray(windows[v])[:, 4:20, 4:20],
                                  frame[:, 4 + dy:20 + dy, 4 + dx:20 + dx])
  with pytest.raises(ValueError, match="is not one of the 25"):
    skip_lib.move_of(25, SEARCH)
  bits = skip_lib.nominal_vector_bits(SEARCH)
  assert bits[skip_lib.no_move(SEARCH)] == 1.0 and np.all(np.delete(bits, 12) > 1.0)


def test_moved_content_is_copied_with_its_vector():
  """Frame 1 is frame 0 moved by (1, -2) px; its code is noise, frame 0's is exact: the middle
  block (away from the padded edges) is skipped with the vector that undoes the move, and rebuilt
  exactly; the first frame never is."""
  base = _clip(1, b=1, k=1)[:, 0]
  moved = np.roll(base, (1, -2), axis=(1, 2))
  original = np.stack([base, moved], axis=1)
  intra = np.stack([base, _clip(2, b=1, k=1)[:, 0]], axis=1)
  bits = jnp.full((1, 2, 9), 20.0)
  recon, skip, vector = jax.jit(lambda *a: skip_lib.choose_skips(
      *a, 0.0, block_size=P, search=SEARCH))(intra, original, bits)
  skip, vector = np.asarray(skip), np.asarray(vector)
  assert not skip[:, 0].any() and (vector[:, 0] == skip_lib.no_move(SEARCH)).all()
  assert skip[0, 1, 4]  # the middle block of the 3x3 grid
  assert skip_lib.move_of(int(vector[0, 1, 4]), SEARCH) == (-1, 2)
  np.testing.assert_array_equal(np.asarray(recon)[0, 1, 8:16, 8:16], moved[0, 8:16, 8:16])
  np.testing.assert_array_equal(np.asarray(recon)[:, 0], base)


@pytest.mark.parametrize("lam,prefer_previous", [(0.0, False), (300.0, False), (300.0, True),
                                                 (1e5, False)])
def test_the_receiver_rebuilds_what_the_device_holds(lam, prefer_previous):
  """From the decisions alone (the intra pixels of skipped blocks replaced by garbage, as the
  receiver never has them), rebuild_with_skips gives the device's reconstruction bit for bit;
  at lam 0 no skipped block is further from the original than its code."""
  original = _clip(3)
  original[:, 1:] = np.roll(original[:, :1], 1, axis=3)  # frame 0's content moved right
  intra = np.clip(original + np.random.default_rng(4).normal(0, 30, original.shape), 0, 255
                  ).astype(np.float32)
  bits = jnp.asarray(np.random.default_rng(5).uniform(2, 30, (2, 3, 9)), jnp.float32)
  recon, skip, vector = skip_lib.choose_skips(intra, original, bits, lam, block_size=P,
                                              search=SEARCH, prefer_previous=prefer_previous)
  assert np.asarray(skip).any() and not np.asarray(skip).all()
  pixel_skip = np.repeat(np.repeat(np.asarray(skip).reshape(2, 3, 3, 3), P, 2), P, 3)[..., None]
  garbage = np.where(pixel_skip, -1000.0, intra).astype(np.float32)
  rebuilt = jax.jit(lambda *a: skip_lib.rebuild_with_skips(*a, block_size=P, search=SEARCH))(
      garbage, skip, vector)
  np.testing.assert_array_equal(np.asarray(rebuilt), np.asarray(recon))
  if lam == 0.0:
    def block_sse(x):
      d = blockify(jnp.asarray(x) - jnp.asarray(original), P)
      return np.asarray(jnp.square(d).sum(axis=(-3, -2, -1)))
    assert (block_sse(recon) <= block_sse(intra) + 1e-3)[np.asarray(skip)].all()


def test_inputs_of_the_wrong_shape_are_refused():
  with pytest.raises(ValueError, match="not whole blocks of 8"):
    skip_lib.choose_skips(np.zeros((1, 2, 12, 16, 3)), np.zeros((1, 2, 12, 16, 3)),
                          np.zeros((1, 2, 2)), 0.0, block_size=8, search=1)
  with pytest.raises(ValueError, match=r"be \[B,K,N\] with N = 4"):
    skip_lib.choose_skips(np.zeros((1, 2, 16, 16, 3)), np.zeros((1, 2, 16, 16, 3)),
                          np.zeros((1, 2, 3)), 0.0, block_size=8, search=1)


def test_the_probes_code_lengths_are_those_of_coding_one_symbol_at_a_time():
  """benchmarks/skip_blocks.py charges flags and vectors the exact code length of an adaptive
  code: the closed forms equal the sum of -log2 p over the symbols coded in order, with the
  counts before each (add-one: (count + 1) / (seen + M))."""
  import benchmark_modules  # pylint: disable=g-import-not-at-top
  probe = benchmark_modules.load("skip_blocks")
  rng = np.random.default_rng(6)
  symbols = rng.choice(7, size=40, p=[0.5, 0.2, 0.1, 0.1, 0.05, 0.03, 0.02])
  counts, sequential = np.zeros(7), 0.0
  for s in symbols:
    sequential -= np.log2((counts[s] + 1) / (counts.sum() + 7))
    counts[s] += 1
  assert probe.adaptive_symbol_bits(counts[None])[0] == pytest.approx(sequential, rel=1e-9)
  flags = rng.random(30) < 0.3
  ones, sequential = 0, 0.0
  for i, flag in enumerate(flags):
    p_one = (ones + 1) / (i + 2)
    sequential -= np.log2(p_one if flag else 1 - p_one)
    ones += flag
  assert probe.adaptive_flag_bits(np.array([30]), np.array([ones]))[0] == pytest.approx(
      sequential, rel=1e-9)
