"""benchmarks/ablations.py's paired table (the training and evaluation it drives are train.py's and
evaluate.py's, tested in their own files; the script was run whole on the synthetic default, see
BENCHMARKS.md "One frame per stretch of the clip")."""

import benchmark_modules


def _benchmark():
  return benchmark_modules.load("ablations")  # it imports paired_points beside it


def _point(name, bits, correct):
  return dict(name=name, bits_per_clip=float(bits), top1=sum(correct) / len(correct),
              per_clip=dict(correct=list(correct)))


def test_table_pairs_points_of_equal_bits_and_reads_envelopes_elsewhere():
  n = 40
  right = lambda k: [1] * k + [0] * (n - k)
  results = dict(num_clips=n, methods={
      "stae": dict(points=[_point("keep=a", 1000, right(30)), _point("keep=b", 4000, right(36))]),
      # same bits (within 5%): compared point to point
      "stae_random-selection": dict(points=[_point("keep=a", 1030, right(20)),
                                            _point("keep=b", 3900, right(36))]),
      # other bits at the same names: compared on the envelope at STAE's bits, or outside it
      "stae_no-frame-attention_spatial-attention": dict(points=[
          _point("keep=a", 500, right(10)), _point("keep=b", 2000, right(30))]),
  })
  lines = _benchmark().table(results, tolerance=0.05, resamples=200, seed=0).splitlines()
  header = next(line for line in lines if line.startswith("| STAE point"))
  assert "random | learned minus random" in header and "no frame attention" in header
  assert "evenly spaced" not in header  # variants absent from results.json get no column
  row_a = next(line for line in lines if line.startswith("| keep=a"))
  row_b = next(line for line in lines if line.startswith("| keep=b"))
  assert "75.0 (1,000)" in row_a and "50.0 (1,030) | +25.0 [" in row_a
  # 1,000 bits lies inside the variant's 500-2,000: its envelope there, 10/40 -> 30/40 in log bits
  assert "env 50.0 | +25.0 [" in row_a
  assert "90.0 (3,900) | +0.0 [+0.0, +0.0]" in row_b  # the same clips right: no difference
  assert "outside its bits" in row_b  # 4,000 bits beyond the variant's 2,000


def test_variants_are_the_tags_their_switches_train():
  """Each variant's tag is the one train.py gives its switch on configs/synthetic.py, so the
  table finds what `ablations.py` trained."""
  from configs import synthetic  # pylint: disable=g-import-not-at-top
  for _, switch, tag in _benchmark().VARIANTS:
    assert list(synthetic.get_config(switch).systems) == [tag], switch


def test_table_compares_any_learned_tag_on_either_split():
  """--table_only --learned/--tags/--split: any trained system against named variants, and the
  validation records of the same results.json paired as the test points are."""
  n = 20
  right = lambda k: [1] * k + [0] * (n - k)

  def point(name, bits, test, validation):
    return dict(_point(name, bits, right(test)), validation=_point(name, bits, right(validation)))

  results = dict(num_clips=n, methods={
      "stae_frames": dict(points=[point("keep=a", 1000, 15, 12)]),
      "stae_other": dict(points=[point("keep=a", 1010, 10, 12)]),
      "stae": dict(points=[point("keep=a", 1000, 1, 1)]),
  })
  table = _benchmark().table
  test = table(results, 0.05, 100, 0, learned="stae_frames", variants=[("other", "stae_other")])
  assert "20 test clips" in test and "| keep=a | 75.0 (1,000) | 50.0 (1,010) | +25.0 [" in test
  assert "learned minus random" not in test  # only the named variants
  validation = table(results, 0.05, 100, 0, learned="stae_frames",
                     variants=[("other", "stae_other")], split="validation")
  assert "20 validation clips" in validation
  assert "| keep=a | 60.0 (1,000) | 60.0 (1,010) | +0.0 [+0.0, +0.0] |" in validation
