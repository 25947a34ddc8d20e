"""evaluate end to end on a workdir made by the real trainer (tiny config, a few steps)."""

import json
import subprocess
import sys

from flax import nnx
import jax
import numpy as np
import pytest

import evaluate_helpers
from stae_jax import REPO_ROOT
from stae_jax.evaluation import codec as codec_lib
from stae_jax.evaluation import deadlines
from stae_jax.evaluation import evaluate
from stae_jax.evaluation import loading
from stae_jax.evaluation import x264
from stae_jax.models import systems

pytestmark = pytest.mark.slow

CHANNEL = deadlines.ChannelOptions(deadlines_seconds=(0.05, 0.5), mean_snrs_db=(10.0,), seeds=(0,),
                                   max_backlog_seconds=30.0)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return evaluate_helpers.tiny_workdir(tmp_path_factory)


@pytest.fixture(scope="module")
def evaluated(workdir):
  options = evaluate.EvalOptions(crfs=(30, 51), latency_clips=1, num_pictures=2, progress=False)
  paths = evaluate.run(evaluate_helpers.tiny_config(), workdir, options, CHANNEL,
                       loader_fn=evaluate_helpers.memory_loader)
  return paths, json.loads(paths["results"].read_text())


def test_every_method_is_measured_on_every_clip(evaluated):
  _, results = evaluated
  assert results["format"] == evaluate.RESULTS_FORMAT
  assert results["num_clips"] == evaluate_helpers.train_helpers.NUM_TEST
  assert set(results["methods"]) == {"stae", "deepisc", "h264", "raw"}
  raw_bytes = results["raw_clip_bytes"]
  for name, method in results["methods"].items():
    assert method["skipped"] is None
    for point in method["points"]:
      assert point["num_clips"] == results["num_clips"]
      assert len(point["per_clip"]["correct"]) == results["num_clips"]
      assert point["bits_per_clip"] == pytest.approx(np.mean(point["per_clip"]["bits"]))
      assert point["compression_ratio"] == pytest.approx(8 * raw_bytes / point["bits_per_clip"])
      assert point["top1"] == pytest.approx(np.mean(point["per_clip"]["correct"]))
      assert point["accuracy_loss_points"] == pytest.approx(
          100 * (results["reference"]["top1"] - point["top1"]))
      assert point["seconds"]["classify"] > 0
      if method["kind"] in ("stae", "deepisc"):
        assert point["seconds"]["encode"] > 0 and point["seconds"]["entropy_encode"] > 0
        gap = point["bits_per_clip"] - point["estimated_bits_per_clip"]
        assert point["rate_gap_bits"] == pytest.approx(gap)
  assert [p["name"] for p in results["methods"]["stae"]["points"]] == ["keep=0.5x0.5", "keep=1x0.5"]
  assert [p["name"] for p in results["methods"]["deepisc"]["points"]] == ["tokens=2", "tokens=4"]
  raw = results["methods"]["raw"]["points"][0]
  assert raw["compression_ratio"] == 1.0 and raw["top1"] == results["reference"]["top1"]
  # More frames kept -> more bits (same block ratio).
  stae = results["methods"]["stae"]["points"]
  assert stae[1]["bits_per_clip"] > stae[0]["bits_per_clip"]


def test_outputs_are_written(evaluated, workdir):
  paths, results = evaluated
  text = paths["report"].read_text()
  assert results["headline"]["text"] in text
  assert "## Time-varying channel" in text
  for name in ("accuracy_vs_bits", "accuracy_vs_deadline", "latency_breakdown"):
    assert (workdir / "plots" / f"{name}.png").stat().st_size > 1000
  assert sorted(p.name for p in (workdir / "pictures").glob("*.png")) == ["clip_0.png", "clip_1.png"]
  policies = {(r["method"], r["policy"]) for r in results["channel"]["rows"]}
  assert ("stae", "adaptive") in policies and ("h264", "fixed:crf=51") in policies


def test_server_decodes_exactly_what_the_trained_forward_computes(workdir):
  """The codec cut at the real bitstream rebuilds the clip the end-to-end forward rebuilds."""
  batch = next(iter(evaluate_helpers.memory_loader(evaluate_helpers.tiny_config().data, "test",
                                                   seed=0, train=False, num_epochs=1)))
  video = batch["video"]
  for tag in ("stae", "deepisc"):
    trained = loading.load_system(workdir, tag)
    codec = codec_lib.SystemCodec(trained)
    for point in codec.points[:1]:  # the first drops frames (STAE) / tokens (DeepISC)
      streams, _ = codec.to_bitstreams(codec.encode(video, point))
      rebuilt = codec.decode(codec.from_bitstreams(streams), point, video.shape[1:])
      forward = jax.jit(lambda params, rest, v, p=point, t=trained: systems.system_forward(
          t.config, nnx.merge(t.graphdef, params, rest), v, operating_point=p, training=False,
          rng=jax.random.PRNGKey(codec_lib.SELECTION_KEY)))(trained.params, trained.rest, video)
      np.testing.assert_allclose(np.asarray(rebuilt), np.asarray(forward["reconstruction"]),
                                 atol=1e-3)


def test_missing_x264_skips_the_baseline_with_a_message(workdir, monkeypatch, tmp_path):
  monkeypatch.setattr(x264, "ENCODER_NAME", "no_such_encoder")
  options = evaluate.EvalOptions(crfs=(30,), latency_clips=0, num_pictures=0, max_clips=8,
                                 systems=(), progress=False)
  results, _ = evaluate.evaluate_workdir(evaluate_helpers.tiny_config(), workdir, options,
                                         loader_fn=evaluate_helpers.memory_loader)
  assert results["num_clips"] == 8
  h264 = results["methods"]["h264"]
  assert h264["points"] == [] and "no_such_encoder" in h264["skipped"]
  results["channel"] = deadlines.channel_comparison(results, CHANNEL)
  from stae_jax.evaluation import report  # pylint: disable=g-import-not-at-top
  assert "H.264 skipped" in report.headline(results)["text"]
  assert "skipped:" in report.markdown(results)


def test_cli_rewrites_the_report_from_results(evaluated, workdir):
  (workdir / "report.md").unlink()
  done = subprocess.run(
      [sys.executable, str(REPO_ROOT / "evaluate.py"), f"--workdir={workdir}", "--reuse_results",
       "--snrs=5", "--channel_seeds=1", "--deadlines=0.2"],
      capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
  assert done.returncode == 0, done.stderr[-2000:]
  text = (workdir / "report.md").read_text()
  assert "Mean SNR 5 dB" in text and "Mean SNR 10 dB" not in text


def test_untrained_workdir_says_how_to_train(tmp_path):
  with pytest.raises(loading.WorkdirError, match="train.py"):
    evaluate.run(evaluate_helpers.tiny_config(), tmp_path, loader_fn=evaluate_helpers.memory_loader)
