"""Single-clip tools: a real video -> .stae file -> class, and clear errors for bad files."""

import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import evaluate_helpers
from stae_jax import REPO_ROOT
from stae_jax.coding import DecodeError
from stae_jax.data.video import VideoReadError
from stae_jax.evaluation import clip_tools
from stae_jax.training import workdir as workdir_lib

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
  codec = workdir_lib.load_codec(workdir, "stae")
  data, header = clip_tools.compress_video(real_data / VIDEO, codec,
                                           evaluate_helpers.tiny_config().data, "keep=0.5x0.5")
  return codec, data, header


@pytest.mark.slow
@pytest.mark.real_data
def test_real_video_round_trip(compressed, workdir, real_data):
  codec, data, header = compressed
  config = evaluate_helpers.tiny_config()
  t, r = config.data.frames, config.data.resolution
  assert header["clip_shape"] == [t, r, r, 3] and header["system"] == "stae"
  assert header["source"]["width"] == 320 and header["source"]["height"] == 240
  assert len(header["frame_indices"]) == t and header["fingerprint"] == codec.tables.table_hash
  result = clip_tools.decompress(data, workdir)
  assert result.reconstruction.shape == (t, r, r, 3) and result.reconstruction.dtype == np.uint8
  assert result.frame_mask.sum() == 2 and 0 <= result.predicted < config.model.vit.num_classes
  # The server's answer is the one the device-side clip gets through the codec directly.
  from stae_jax.data.video import read_video  # pylint: disable=g-import-not-at-top
  clip, indices, _ = clip_tools.sample_clip(read_video(real_data / VIDEO).frames, config.data)
  assert indices.tolist() == header["frame_indices"]
  point = codec.point("keep=0.5x0.5")
  streams = codec.device(clip[None], point).streams
  assert len(data) > len(streams[0]) and data.endswith(streams[0])
  logits = codec.classify(codec.server(streams, point))
  np.testing.assert_allclose(logits[0], result.logits, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.real_data
def test_bad_files_are_refused_clearly(compressed, workdir, tmp_path):
  codec, data, header = compressed
  not_video = tmp_path / "notes.avi"
  not_video.write_text("this is not a video\n" * 20)
  with pytest.raises(VideoReadError, match="notes.avi"):
    clip_tools.compress_video(not_video, codec, evaluate_helpers.tiny_config().data)
  with pytest.raises(ValueError, match="not one 'stae' was trained.*keep=0.5x0.5"):
    clip_tools.compress_video(not_video, codec, evaluate_helpers.tiny_config().data, "keep=0.9x0.9")
  # A file made by another model: its header names other coding tables.
  foreign = clip_tools.pack(dict(header, fingerprint="ab" * 32), clip_tools.unpack(data)[1])
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
def test_hostile_headers_are_refused_before_anything_is_allocated(compressed, workdir):
  """What a header claims is checked against the trained model: a huge clip (once, 77 GB of
  allocation), another clip size, an operating point the model was never trained for or a NaN
  one, a system the workdir has not trained (or a path), all refused with a DecodeError."""
  _, data, header = compressed
  stream = clip_tools.unpack(data)[1]
  t = header["clip_shape"][0]
  cases = [
      (dict(clip_shape=[16, 20000, 20000, 3]), "claims a clip"),
      (dict(clip_shape=[t, 128, 128, 3]), "claims a clip"),
      (dict(operating_point="keep=0.9x0.9"), "not one 'stae' was trained"),
      (dict(operating_point=[0.9, 0.9]), "garbles"),
      (dict(operating_point="keep=nanx0.5"), "not one 'stae' was trained"),
      (dict(system="../classifier"), "has not trained"),
      (dict(system="h264"), "has not trained"),
      (dict(system=None), "garbles"),
  ]
  for change, message in cases:
    with pytest.raises(DecodeError, match=message):
      clip_tools.decompress(clip_tools.pack(dict(header, **change), stream), workdir)
  # A stream of another operating point behind an honest-looking header.
  with pytest.raises(DecodeError, match="does not hold"):
    clip_tools.decompress(clip_tools.pack(dict(header, operating_point="keep=1x0.5"), stream),
                          workdir)


@pytest.mark.slow
@pytest.mark.real_data
def test_command_line_round_trip(workdir, real_data, tmp_path):
  stae_file = tmp_path / "clip.stae"
  picture = tmp_path / "clip.png"
  run = lambda *args: subprocess.run([sys.executable, *args], capture_output=True, text=True,
                                     timeout=300, cwd=REPO_ROOT)
  copy = tmp_path / "second.avi"
  shutil.copy(real_data / VIDEO, copy)
  out = tmp_path / "out"
  out.mkdir()
  # two inputs in one call (one restore, one compile) into a folder
  done = run("compress.py", f"--workdir={workdir}", f"--input={real_data / VIDEO},{copy}",
             f"--output={out}", "--point=keep=1x0.5")
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.count(" bytes (") == 2
  stae_file = out / pathlib.Path(VIDEO).with_suffix(".stae").name
  assert stae_file.stat().st_size > 20
  done = run("decompress.py", f"--workdir={workdir}", f"--input={stae_file}",
             f"--picture={picture}", "--top=3")
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.count("%") == 3 and picture.stat().st_size > 100
  done = run("compress.py", f"--workdir={workdir}", f"--input={real_data / VIDEO}",
             f"--output={tmp_path / 'no_such_dir' / 'clip.stae'}")
  assert done.returncode == 1 and "cannot write" in done.stderr and "Traceback" not in done.stderr
  bad = tmp_path / "bad.stae"
  bad.write_bytes(b"STAE" + stae_file.read_bytes()[4:40])
  done = run("decompress.py", f"--workdir={workdir}", f"--input={bad}")
  assert done.returncode == 1 and "decompress.py: error:" in done.stderr
