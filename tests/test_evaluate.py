"""evaluate end to end on a workdir made by the real trainer (tiny config, a few steps)."""

import json
import subprocess
import sys

import numpy as np
import pytest

import evaluate_helpers
from stae_jax import REPO_ROOT
from stae_jax import systems
from stae_jax.evaluation import deadlines
from stae_jax.evaluation import device_profile
from stae_jax.evaluation import evaluate
from stae_jax.evaluation import report
from stae_jax.systems import h264
from stae_jax.systems import loading

pytestmark = pytest.mark.slow

#: H.264's grid in `evaluated`: 18 cells, more than the report lists one by one
#: (report.MAX_TABLE_POINTS), so the test pass measures its validation envelope only.
H264_GRID = dict(frames=(4, 2, 1), scales=(1, 2), crfs=(30, 40, 51))
H264_CELLS = [f"frames={f},side={s},crf={c}" for f in (4, 2, 1) for s in (16, 8)
              for c in (30, 40, 51)]

CHANNEL = deadlines.ChannelOptions(deadlines_seconds=(0.05, 0.5), mean_snrs_db=(10.0,), seeds=(0,),
                                   max_backlog_seconds=30.0)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return evaluate_helpers.tiny_workdir(tmp_path_factory)


@pytest.fixture(scope="module")
def evaluated(workdir):
  options = evaluate.EvalOptions(latency_clips=1, num_pictures=2, progress=False,
                                 baselines=dict(h264=H264_GRID))
  paths = evaluate.run(evaluate_helpers.tiny_config(), workdir, options, CHANNEL,
                       loader_fn=evaluate_helpers.memory_loader)
  return paths, json.loads(paths["results"].read_text())


def test_every_method_is_measured_on_every_clip(evaluated):
  _, results = evaluated
  assert results["format"] == report.RESULTS_FORMAT
  assert results["num_clips"] == evaluate_helpers.train_helpers.NUM_TEST
  assert list(results["methods"]) == ["stae", "deepisc", "h264", "raw"]
  # The validation clips: carved from the training records, the same for every method.
  num_validation = len(range(9, evaluate_helpers.train_helpers.NUM_TRAIN, 10))
  assert results["validation"]["num_clips"] == num_validation
  assert results["reference"]["validation"]["num_clips"] == num_validation
  raw_bytes = results["raw_clip_bytes"]
  for name, method in results["methods"].items():
    assert method["skipped"] is None and method["variant_of"] is None
    assert method["envelope_split"] == "validation" and method["envelope"]
    assert set(method["envelope"]) <= {p["name"] for p in method["points"]}
    for point in method["points"]:
      assert point["num_clips"] == results["num_clips"]
      validation = point["validation"]
      assert validation["num_clips"] == num_validation
      assert validation["top1"] == pytest.approx(np.mean(validation["per_clip"]["correct"]))
      assert validation["bits_per_clip"] == pytest.approx(np.mean(validation["per_clip"]["bits"]))
      assert len(point["per_clip"]["correct"]) == results["num_clips"]
      assert point["bits_per_clip"] == pytest.approx(np.mean(point["per_clip"]["bits"]))
      assert point["compression_ratio"] == pytest.approx(8 * raw_bytes / point["bits_per_clip"])
      assert point["top1"] == pytest.approx(np.mean(point["per_clip"]["correct"]))
      lo, hi = point["top1_interval"]
      assert lo <= point["top1"] <= hi
      assert point["accuracy_loss_points"] == pytest.approx(
          100 * (results["reference"]["top1"] - point["top1"]))
      assert point["seconds"]["classify"] > 0
      if point["estimated_bits_per_clip"] is not None:
        gap = point["bits_per_clip"] - point["estimated_bits_per_clip"]
        assert point["rate_gap_bits"] == pytest.approx(gap)
  for name in ("stae", "deepisc"):
    assert all(p["estimated_bits_per_clip"] > 0 for p in results["methods"][name]["points"])
  assert [p["name"] for p in results["methods"]["stae"]["points"]] == ["keep=0.5x0.5", "keep=1x0.5"]
  assert [p["name"] for p in results["methods"]["deepisc"]["points"]] == ["tokens=2", "tokens=4"]
  # H.264: every cell of the grid (kept frames x side x CRF) on validation, fewer frames and
  # pixels, fewer bits; on test its envelope (and tuned cells), the others validation only.
  h264_method = results["methods"]["h264"]
  h264_points = {p["name"]: p for p in h264_method["points"]}
  validation_only = {p["name"]: p for p in h264_method["validation_only"]}
  assert results["test_points"] == "envelope"
  assert sorted([*h264_points, *validation_only]) == sorted(H264_CELLS)
  assert validation_only and not set(h264_points) & set(validation_only)
  assert set(h264_points) == set(h264_method["envelope"]) | {
      n for n, p in h264_points.items() if p["tuned"]}
  every = {**{n: p["validation"] for n, p in h264_points.items()},
           **{n: p["validation"] for n, p in validation_only.items()}}
  assert every["frames=1,side=8,crf=30"]["bits_per_clip"] < every["frames=4,side=16,crf=30"][
      "bits_per_clip"]
  for point in validation_only.values():
    assert set(point) == {"name", "setting", "validation"}
    assert point["validation"]["num_clips"] == num_validation
  for name in ("stae", "deepisc", "raw"):  # few points: every one measured on test
    assert results["methods"][name]["validation_only"] == []
  # The tuned column: the learned systems' own ViTs everywhere; H.264's tuned ViT at envelope
  # points only, with the budget of STAE's last stage.
  for name in ("stae", "deepisc"):
    assert all(p["tuned"]["per_clip"]["correct"] for p in results["methods"][name]["points"])
    assert "its own ViT" in results["methods"][name]["tuned_classifier"]
  tuned_cells = [n for n, p in h264_points.items() if p["tuned"]]
  assert tuned_cells and set(tuned_cells) <= set(results["methods"]["h264"]["envelope"])
  assert "stae's compressor stage budget (2 steps" in results["methods"]["h264"]["tuned_classifier"]
  assert results["methods"]["raw"]["tuned_classifier"] is None  # not a headline method
  raw = results["methods"]["raw"]["points"][0]
  assert raw["compression_ratio"] == 1.0 and raw["top1"] == results["reference"]["top1"]
  # More frames kept -> more bits (same block ratio).
  stae = results["methods"]["stae"]["points"]
  assert stae[1]["bits_per_clip"] > stae[0]["bits_per_clip"]


def test_the_device_profile_is_stored_with_its_load(evaluated):
  """results.json holds the step times the channel study used, measured on single clips run alone
  (processor seconds), with the load average around the measurement; the tables' seconds are the
  same runs' wall medians."""
  _, results = evaluated
  profile = results["device_profile"]
  assert profile["format"] == device_profile.PROFILE_FORMAT and profile["source"] == "measured"
  assert profile["clips"] == 1 and profile["repeats"] == evaluate.EvalOptions().latency_repeats
  for when in ("before", "after"):
    load = profile["load_average"][when]
    assert len(load) == 3 and all(v >= 0 for v in load)
  assert set(profile["methods"]) == set(results["methods"])
  for name, method in results["methods"].items():
    assert set(profile["methods"][name]) == {p["name"] for p in method["points"]}
    for p in method["points"]:
      times = profile["methods"][name][p["name"]]
      assert list(times) == list(report.STEPS) and all(t >= 0 for t in times.values())
      assert profile["wall_seconds"][name][p["name"]] == p["seconds"]
  assert results["channel"]["device_profile"] == dict(source="measured", path=None)


def test_the_channel_cells_are_recomputed_from_results_json_alone(evaluated):
  _, results = evaluated
  again = json.loads(json.dumps(results))
  assert deadlines.recompute(again) == results["channel"]
  for method in again["methods"].values():  # a loaded machine's wall times are not read
    for p in method["points"]:
      p["seconds"] = {step: 1.0 for step in report.STEPS}
      p["device_seconds"] = 2.0
  assert deadlines.recompute(again) == results["channel"]


def test_bits_are_the_lengths_of_the_streams_the_codec_returns(evaluated, workdir):
  """Per clip, results.json's bits are 8 x the bytes of the streams each codec's device half
  returns for those clips (not a formula of evaluate's)."""
  _, results = evaluated
  batch = next(iter(evaluate_helpers.memory_loader(evaluate_helpers.tiny_config().data, "test",
                                                   seed=0, train=False, num_epochs=1)))
  video = np.asarray(batch["video"])
  for tag in ("stae", "deepisc"):
    codec = loading.load_codec(workdir, tag)
    for point, record in zip(codec.points, results["methods"][tag]["points"]):
      streams = codec.device(video, point).streams
      assert record["per_clip"]["bits"][:len(video)] == [8 * len(s) for s in streams]


def test_outputs_are_written(evaluated, workdir):
  paths, results = evaluated
  text = paths["report"].read_text()
  assert results["headline"]["text"] in text
  assert "## Time-varying channel" in text
  for name in ("accuracy_vs_bits", "accuracy_vs_deadline", "latency_breakdown"):
    assert (workdir / "plots" / f"{name}.png").stat().st_size > 1000
  assert sorted(p.name for p in (workdir / "pictures").glob("*.png")) == ["clip_0.png", "clip_1.png"]
  policies = {(r["method"], r["policy"]) for r in results["channel"]["rows"]}
  cheapest = results["methods"]["h264"]["envelope"][0]
  assert ("stae", "adaptive") in policies and ("h264", f"fixed:{cheapest}") in policies
  # The channel's choices are the points measured on test.
  assert {p for m, p in policies if m == "h264"} == {"adaptive"} | {
      f"fixed:{p['name']}" for p in results["methods"]["h264"]["points"]}
  assert {r["split"] for r in results["channel"]["rows"]} == {"test", "validation"}
  head = results["headline"]
  assert [c["baseline"] for c in head["columns"]["frozen"]["comparisons"]] == ["deepisc", "h264"]
  assert set(head["columns"]["tuned"]["methods"]) == {"stae", "deepisc", "h264"}
  assert "frozen reference ViT for every method" in text and "Tuned column" in text
  assert set(results["channel"]["mean_rates_bps"]) == {"10"}
  # Where the time went: per measured method and pass, each step's summed wall seconds.
  profile = results["profile"]
  assert profile["steps"] == list(report.STEPS)
  assert list(profile["methods"]) == ["stae", "deepisc", "h264", "raw"]
  for entry in [profile["reference"], *profile["methods"].values()]:
    passes = ("validation", "test", "single_clip")
    assert set(entry) == set(passes) | {"tuned_classify", "warm_up", "total"}
    assert all(set(entry[p]) == set(report.STEPS) for p in passes)
    assert entry["test"]["classify"] > 0 and entry["validation"]["classify"] > 0
    assert entry["single_clip"]["classify"] > 0 and entry["warm_up"] > 0
    assert entry["total"] == pytest.approx(sum(sum(entry[p].values()) for p in passes)
                                           + entry["tuned_classify"] + entry["warm_up"])
  for name in ("stae", "deepisc", "h264"):
    assert profile["methods"][name]["test"]["encode"] > 0
    assert profile["methods"][name]["test"]["decode"] > 0
  assert profile["methods"]["stae"]["test"]["entropy_encode"] > 0
  assert profile["methods"]["stae"]["tuned_classify"] > 0  # its own ViT scores every point
  assert profile["loading_seconds"]["test"] > 0 and profile["loading_seconds"]["validation"] > 0
  # Disjoint stretches of the measuring: together no longer than it.
  accounted = (profile["reference"]["total"] + sum(e["total"] for e in profile["methods"].values())
               + sum(profile["loading_seconds"].values()))
  assert accounted <= results["evaluate_seconds"]
  assert "## Where the time went" in text
  assert "| H.264 (libx264, low delay) | " in text.split("## Where the time went")[1]
  every_point = text.split("## Every point of H.264")[1].split("\n## ")[0]
  for point in results["methods"]["h264"]["validation_only"]:
    assert f"| {point['name']} | not measured on test | - | " in every_point
  assert "--test_points=all" in every_point


def test_the_test_pass_measures_the_validation_envelope(evaluated, workdir):
  """With test_points "envelope" H.264's grid is measured on test at the envelope chosen on
  validation (and its tuned cells), and each measured number is the one a test_points "all" run
  measures on the same clips; the cells left out keep the validation numbers of that run."""
  _, results = evaluated
  options = evaluate.EvalOptions(latency_clips=0, num_pictures=0, systems=(), progress=False,
                                 baseline_methods=("h264",), baselines=dict(h264=H264_GRID),
                                 test_points="all")
  every, _ = evaluate.evaluate_workdir(evaluate_helpers.tiny_config(), workdir, options,
                                       loader_fn=evaluate_helpers.memory_loader)
  assert every["test_points"] == "all" and every["methods"]["h264"]["validation_only"] == []
  assert every["reference"]["per_clip"] == results["reference"]["per_clip"]
  every = {p["name"]: p for p in every["methods"]["h264"]["points"]}
  assert sorted(every) == sorted(H264_CELLS)
  method = results["methods"]["h264"]
  envelope = evaluate.validation_envelope({n: p["validation"] for n, p in every.items()})
  assert method["envelope"] == envelope == report.describe_envelope(list(every.values()))[
      "envelope"]
  tuned = {p["name"] for p in method["points"] if p["tuned"]}
  assert tuned and [p["name"] for p in method["points"]] == [
      n for n in every if n in set(envelope) | tuned]  # in the grid's order
  same = ("top1", "top1_interval", "bits_per_clip", "bytes_per_clip", "compression_ratio",
          "accuracy_loss_points", "per_clip", "validation", "setting", "num_clips")
  for point in method["points"]:
    assert {k: point[k] for k in same} == {k: every[point["name"]][k] for k in same}
  for point in method["validation_only"]:
    assert point["validation"] == every[point["name"]]["validation"]


def test_test_points_is_checked():
  with pytest.raises(ValueError, match="test_points='every'.*--test_points"):
    evaluate.EvalOptions(test_points="every")
  config = evaluate_helpers.tiny_config()
  assert evaluate.options_from_config(config)[0].test_points == "envelope"
  assert evaluate.options_from_config(config, test_points="all")[0].test_points == "all"


def test_a_new_codec_is_one_module_and_one_registry_line(workdir, monkeypatch, tmp_path):
  """tests/jpeg_codec.py, registered, reaches results.json, the headline, the report and the
  plots through the generic evaluation with no other edit."""
  monkeypatch.setitem(systems.METHODS, "jpeg", "jpeg_codec")
  options = evaluate.EvalOptions(latency_clips=1, num_pictures=0, max_clips=8, systems=(),
                                 validation_clips=0, progress=False,
                                 baselines=dict(h264=dict(frames=(4,), scales=(1,), crfs=(51,))))
  results, _ = evaluate.evaluate_workdir(evaluate_helpers.tiny_config(), workdir, options,
                                         loader_fn=evaluate_helpers.memory_loader)
  jpeg = results["methods"]["jpeg"]
  assert jpeg["kind"] == "jpeg" and [p["name"] for p in jpeg["points"]] == ["q=10", "q=50"]
  assert jpeg["points"][0]["bits_per_clip"] < jpeg["points"][1]["bits_per_clip"]
  assert all(p["num_clips"] == 8 for p in jpeg["points"])
  paths = evaluate.finish(results, tmp_path, CHANNEL)
  written = json.loads(paths["results"].read_text())
  assert "jpeg" in written["headline"]["columns"]["frozen"]["methods"]
  assert "JPEG per frame" in written["headline"]["text"]
  assert "JPEG per frame (Pillow)" in paths["report"].read_text()
  assert any(r["method"] == "jpeg" for r in written["channel"]["rows"])
  assert (tmp_path / "plots" / "accuracy_vs_bits.png").stat().st_size > 1000


def test_missing_x264_skips_the_baseline_with_a_message(workdir, monkeypatch):
  monkeypatch.setattr(h264, "ENCODER_NAME", "no_such_encoder")
  options = evaluate.EvalOptions(latency_clips=0, num_pictures=0, max_clips=8, systems=(),
                                 validation_clips=0, progress=False,
                                 baselines=dict(h264=dict(frames=(4,), scales=(1,), crfs=(30,))))
  results, _ = evaluate.evaluate_workdir(evaluate_helpers.tiny_config(), workdir, options,
                                         loader_fn=evaluate_helpers.memory_loader)
  assert results["num_clips"] == 8
  method = results["methods"]["h264"]
  assert method["points"] == [] and "no_such_encoder" in method["skipped"]
  results["channel"] = deadlines.channel_comparison(results, CHANNEL)
  assert "H.264 (libx264, low delay) skipped" in report.headline(results)["text"]
  assert "skipped:" in report.markdown(results)


def test_cli_rewrites_the_report_from_results(evaluated, workdir):
  (workdir / "report.md").unlink()
  done = subprocess.run(
      [sys.executable, str(REPO_ROOT / "evaluate.py"), f"--workdir={workdir}", "--reuse_results",
       "--snrs=5", "--config.eval.channel_seeds=2", "--channel_seeds=1",
       "--config.eval.deadlines=(0.2,)"],
      capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
  assert done.returncode == 0, done.stderr[-2000:]
  text = (workdir / "report.md").read_text()
  assert "Mean SNR 5 dB" in text and "Mean SNR 10 dB" not in text
  # config.eval set from the command line, and a flag over it.
  assert "| 200 | " in text and "| 50 | " not in text and "1 traces per mean SNR" in text
  assert "## Where the time went" in text  # from results.json's profile


def test_untrained_workdir_says_how_to_train(tmp_path):
  with pytest.raises(loading.WorkdirError, match="train.py"):
    evaluate.run(evaluate_helpers.tiny_config(), tmp_path, loader_fn=evaluate_helpers.memory_loader)


def _readme_serving_commands() -> list[list[str]]:
  """The two commands of README.md's serving section, as a user would paste them."""
  import shlex  # pylint: disable=g-import-not-at-top
  text = (REPO_ROOT / "README.md").read_text()
  section = text[text.index("## Serving"):]
  block = section[section.index("```bash\n") + 8:section.index("```", section.index("```bash") + 7)]
  lines = [line.split("#", 1)[0].rstrip() for line in block.replace("\\\n", " ").splitlines()]
  return [shlex.split(line) for line in lines if line.strip()]


def test_readme_serving_commands_run_as_written(evaluated, workdir, tmp_path):
  """serve.py and client.py as README.md writes them, on a trained and evaluated workdir: only the
  config (the tiny one, its 20 test clips built in tmp), the workdir, the output file and the
  address (a free port: tests must not take 50051) are substituted. The client's H.264 points and
  the server's come from results.json, so the adaptive policy finds the points it planned with."""
  import signal  # pylint: disable=g-import-not-at-top
  import socket  # pylint: disable=g-import-not-at-top
  _, results = evaluated
  preset = results["methods"]["h264"]["config"]["preset"]
  # The cells served are those measured on test (the client plans with results.json's points).
  assert loading.measured_baselines(workdir) == {"h264": dict(
      frames=(4, 2, 1), scales=(1, 2), crfs=(30.0, 40.0, 51.0), preset=preset,
      cells=tuple(p["name"] for p in results["methods"]["h264"]["points"]))}
  serve, client = _readme_serving_commands()
  assert serve[:2] == ["python", "serve.py"] and client[:2] == ["python", "client.py"]
  records = tmp_path / "records.jsonl"
  tiny = f"--config=tests/tiny_config_file.py:{tmp_path / 'tfds'}"
  substitute = {"--config=configs/synthetic.py": tiny,
                "--workdir=runs/synthetic": f"--workdir={workdir}",
                "--output=records.jsonl": f"--output={records}"}
  for command in (serve, client):
    assert all(key in command for key in list(substitute)[:2])
    command[:] = [sys.executable] + [substitute.get(arg, arg) for arg in command[1:]]
  with socket.socket() as probe:  # a free port for both: the client starts while the server
    probe.bind(("127.0.0.1", 0))     # compiles (it waits for Health to say ready), which halves
    port = probe.getsockname()[1]    # the wall time on two cores
  log = tmp_path / "serve.log"
  with open(log, "w") as log_file:
    server = subprocess.Popen(serve + [f"--address=127.0.0.1:{port}"], cwd=REPO_ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=log_file)
  try:
    done = subprocess.run(client + [f"--server=127.0.0.1:{port}"], cwd=REPO_ROOT, text=True,
                          capture_output=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:] + log.read_text()[-2000:]
  finally:
    server.send_signal(signal.SIGTERM)
    out, _ = server.communicate(timeout=60)
  assert "ready on 127.0.0.1:" in out and "stopped" in out and server.returncode == 0, out
  lines = [json.loads(line) for line in records.read_text().splitlines()]
  assert sorted({r["method"] for r in lines}) == ["deepisc", "h264", "stae"]
  for method in ("stae", "deepisc", "h264"):
    mine = [r for r in lines if r["method"] == method]
    # Every clip answered: "late" is an answer too (a loaded test machine may miss 0.5 s).
    assert len(mine) == 20 and all(r["status"] in ("ok", "late") for r in mine), mine[:2]
    assert any(r["status"] == "ok" for r in mine), mine[:2]
  assert {r["point"] for r in lines if r["method"] == "h264"} <= {
      p["name"] for p in results["methods"]["h264"]["points"]}
