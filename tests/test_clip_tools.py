"""Single-clip tools: a real video -> .stae file -> class, and clear errors for bad files."""

import subprocess
import sys

import numpy as np
import pytest

import evaluate_helpers
from stae_jax import REPO_ROOT
from stae_jax.coding import DecodeError
from stae_jax.data.video import VideoReadError
from stae_jax.evaluation import clip_tools
from stae_jax.evaluation import codec as codec_lib
from stae_jax.evaluation import loading

VIDEO = "hmdb51/brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi"


def test_pack_unpack_and_header_corruption():
  header = dict(format=clip_tools.FORMAT, system="stae", clip_shape=[4, 16, 16, 3])
  data = clip_tools.pack(header, b"\xb1payload")
  assert clip_tools.unpack(data) == (header, b"\xb1payload")
  for bad, message in [(b"RIFF" + data[4:], "not a .stae file"),
                       (data[:4] + b"\x09" + data[5:], "version 9"),
                       (data[:12], "truncated"),
                       (data[:20] + bytes([data[20] ^ 1]) + data[21:], "checksum")]:
    with pytest.raises(DecodeError, match=message):
      clip_tools.unpack(bad)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return evaluate_helpers.tiny_workdir(tmp_path_factory)


@pytest.fixture(scope="module")
def compressed(workdir, real_data):
  trained = loading.load_system(workdir, "stae")
  data, header = clip_tools.compress_video(real_data / VIDEO, trained, (0.5, 0.5))
  return trained, data, header


@pytest.mark.slow
@pytest.mark.real_data
def test_real_video_round_trip(compressed, workdir, real_data):
  trained, data, header = compressed
  config = trained.config
  t, r = config.data.frames, config.data.resolution
  assert header["clip_shape"] == [t, r, r, 3] and header["system"] == "stae"
  assert header["source"]["width"] == 320 and header["source"]["height"] == 240
  assert len(header["frame_indices"]) == t and header["table_hash"] == trained.tables.table_hash
  result = clip_tools.decompress(data, workdir)
  assert result.reconstruction.shape == (t, r, r, 3) and result.reconstruction.dtype == np.uint8
  assert result.frame_mask.sum() == 2 and 0 <= result.predicted < config.model.vit.num_classes
  # The server's answer is the one the device-side clip gets through the codec directly.
  from stae_jax.data.video import read_video  # pylint: disable=g-import-not-at-top
  clip, indices, _ = clip_tools.sample_clip(read_video(real_data / VIDEO).frames, config.data)
  assert indices.tolist() == header["frame_indices"]
  codec = codec_lib.SystemCodec(trained)
  streams, stats = codec.to_bitstreams(codec.encode(clip[None], (0.5, 0.5)))
  assert len(data) > stats["num_bytes"][0] and data.endswith(streams[0])
  logits = codec.classify(codec.decode(codec.from_bitstreams(streams), (0.5, 0.5), clip.shape))
  np.testing.assert_allclose(logits[0], result.logits, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.real_data
def test_bad_files_are_refused_clearly(compressed, workdir, tmp_path):
  trained, data, header = compressed
  not_video = tmp_path / "notes.avi"
  not_video.write_text("this is not a video\n" * 20)
  with pytest.raises(VideoReadError, match="notes.avi"):
    clip_tools.compress_video(not_video, trained)
  # A file made by another model: its header names other coding tables.
  foreign = clip_tools.pack(dict(header, table_hash="ab" * 32), clip_tools.unpack(data)[1])
  with pytest.raises(DecodeError, match="another model"):
    clip_tools.decompress(foreign, workdir)
  # A corrupted bitstream (one flipped bit in the payload) fails its CRC.
  corrupted = bytearray(data)
  corrupted[-8] ^= 0x10
  with pytest.raises(DecodeError, match="checksum|corrupt"):
    clip_tools.decompress(bytes(corrupted), workdir)
  with pytest.raises(DecodeError):
    clip_tools.decompress(data[:-5], workdir)


@pytest.mark.slow
@pytest.mark.real_data
def test_command_line_round_trip(workdir, real_data, tmp_path):
  stae_file = tmp_path / "clip.stae"
  picture = tmp_path / "clip.png"
  run = lambda *args: subprocess.run([sys.executable, *args], capture_output=True, text=True,
                                     timeout=300, cwd=REPO_ROOT)
  done = run("compress.py", f"--workdir={workdir}", f"--input={real_data / VIDEO}",
             f"--output={stae_file}", "--keep=1.0,0.5")
  assert done.returncode == 0, done.stderr[-2000:]
  assert stae_file.stat().st_size > 20 and "bytes" in done.stdout
  done = run("decompress.py", f"--workdir={workdir}", f"--input={stae_file}",
             f"--picture={picture}", "--top=3")
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.count("%") == 3 and picture.stat().st_size > 100
  bad = tmp_path / "bad.stae"
  bad.write_bytes(b"STAE" + stae_file.read_bytes()[4:40])
  done = run("decompress.py", f"--workdir={workdir}", f"--input={bad}")
  assert done.returncode == 1 and "decompress.py: error:" in done.stderr
