"""Single-clip tools: a real video -> .stae file -> class, and clear errors for bad files."""

import json
import pathlib
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

import evaluate_helpers
from stae_jax import REPO_ROOT
from stae_jax.coding import DecodeError
from stae_jax.data.video import VideoReadError
from stae_jax.serving import clip_tools
from stae_jax.systems import loading

VIDEO = "hmdb51/brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi"


HEADER = dict(format=clip_tools.FORMAT, system="stae", fingerprint="ab" * 32,
              clip_shape=[4, 16, 16, 3], operating_point="keep=0.5x0.5", frame_indices=[0, 2, 4, 6],
              crop_box=[40.0, 0.0, 280.0, 240.0],
              source=dict(name="clip.avi", fps=30.0, height=240, width=320, frames=75))


def test_pack_unpack_and_header_corruption():
  header = HEADER
  data = clip_tools.pack(header, b"\xb1payload")
  assert clip_tools.unpack(data) == (header, b"\xb1payload")
  for bad, message in [(b"RIFF" + data[4:], "not a .stae file"),
                       (data[:4] + b"\x09" + data[5:], "version 9"),
                       (data[:12], "truncated"),
                       (data[:20] + bytes([data[20] ^ 1]) + data[21:], "checksum")]:
    with pytest.raises(DecodeError, match=message):
      clip_tools.unpack(bad)


def _with(header, path, value):
  """A deep copy of `header` with the field at `path` (keys) set to `value` (or removed: ...)."""
  import copy  # pylint: disable=g-import-not-at-top
  header = copy.deepcopy(header)
  *parents, last = path
  node = header
  for key in parents:
    node = node[key]
  if value is ...:
    del node[last]
  else:
    node[last] = value
  return header


def test_header_schema_refuses_what_it_does_not_describe():
  """One schema, checked in `unpack` before any field is used or printed: types (16.0 is not an
  integer), ranges, required and unknown fields, lengths, nesting; each a DecodeError naming the
  field, never a KeyError/TypeError/RecursionError."""
  stream = b"\xb1payload"
  cases = [
      (("clip_shape",), [16.0, 64.0, 64.0, 3.0], "clip_shape\\[0\\].*expected an integer"),
      (("clip_shape",), [4, 16, 16], "clip_shape field: 3 items"),
      (("clip_shape",), [4, 16, -16, 3], "clip_shape\\[2\\].*outside"),
      (("clip_shape",), [4, True, 16, 3], "expected an integer, got true"),
      (("source",), ..., "lacks source"),
      (("source", "name"), ..., "source field: it lacks name"),
      (("source", "name"), 7, "source.name field: expected a string"),
      (("source", "name"), "x" * 256, "source.name field: a string of 256"),
      (("source", "fps"), float("nan"), "source.fps.*NaN is outside"),
      (("source", "extra"), 1, "unknown fields extra"),
      (("frame_indices",), [0, 1], "2 indices for a clip of 4 frames"),
      (("frame_indices",), [[[[0]]]] * 4, "frame_indices\\[0\\].*expected an integer, got a list"),
      (("operating_point",), {"keep": 0.5}, "operating_point field: expected a string, got an "
                                             "object"),
      (("system",), None, "system field: expected a string, got null"),
      (("fingerprint",), "", "fingerprint field: a string of 0"),
      (("format",), "other", "format is \"other\""),
  ]
  for path, value, message in cases:
    with pytest.raises(DecodeError, match=message):
      clip_tools.unpack(clip_tools.pack(_with(HEADER, path, value), stream))
  assert clip_tools.unpack(clip_tools.pack(_with(HEADER, ("fingerprint",), None), stream))
  def text(t):
    return (clip_tools.MAGIC + bytes([clip_tools.VERSION]) + struct.pack("<I", len(t)) + t
            + struct.pack("<I", zlib.crc32(t)) + stream)
  with pytest.raises(DecodeError, match="nested too deeply"):
    clip_tools.unpack(text(b"[" * 8000 + b"]" * 8000))
  with pytest.raises(DecodeError, match="garbles its top level field: expected an object"):
    clip_tools.unpack(text(b"[1, 2]"))
  with pytest.raises(DecodeError, match="header claims 16385 bytes, more than any"):
    clip_tools.unpack(text(b" " * 16385))


def test_header_fuzz_gives_decode_errors_only():
  """Seeded mutations of a valid header (every field replaced by values of every JSON type, and
  byte flips inside the JSON with the checksum recomputed): `unpack` accepts or raises DecodeError,
  nothing else, and what it accepts passes the schema again."""
  rng = np.random.default_rng(30)
  values = [None, True, 0, -1, 2**63, 10**400, 1.5, float("nan"), float("inf"), "", "x" * 300, "\x1b[2J",
            [], [1, 2, 3, 4], [[1]], {}, {"a": {"b": []}}, "keep=0.5x0.5"]
  paths = [(key,) for key in HEADER] + [("source", key) for key in HEADER["source"]]
  stream = b"\xb1payload"
  outcomes = {"accepted": 0, "refused": 0}

  def attempt(data):
    try:
      header, rest = clip_tools.unpack(data)
    except DecodeError:
      outcomes["refused"] += 1
      return
    assert rest == stream and clip_tools.check_header(header) is header
    outcomes["accepted"] += 1

  for path in paths:
    for value in values:
      attempt(clip_tools.pack(_with(HEADER, path, value), stream))
  text = json.dumps(HEADER, sort_keys=True).encode()
  for _ in range(300):
    mutated = bytearray(text)
    for _ in range(rng.integers(1, 4)):
      mutated[rng.integers(len(mutated))] = rng.integers(32, 127)
    mutated = bytes(mutated)
    attempt(clip_tools.MAGIC + bytes([clip_tools.VERSION]) + struct.pack("<I", len(mutated))
            + mutated + struct.pack("<I", zlib.crc32(mutated)) + stream)
  assert outcomes["refused"] > 300 and outcomes["accepted"] > 10, outcomes


def test_text_from_a_file_is_escaped_when_printed():
  hostile = "clip\x1b[2J\x1b]0;owned\x07\r\u202eiva.exe\n"
  shown = clip_tools.printable(hostile)
  assert shown.isprintable() and "\x1b" not in shown and "\\x1b[2J" in shown
  assert shown == "clip\\x1b[2J\\x1b]0;owned\\x07\\r\\u202eiva.exe\\n"
  assert clip_tools.printable("é" * 300, 10) == "é" * 10 + "..."


def test_read_clip_holds_the_clip_not_the_video(tmp_path):
  """compress.py's read: 120 frames of 360x640 (83 MB as RGB) give a 4-frame clip while numpy's
  allocations (which tracemalloc sees) peak at a few source frames; the frames are those a whole
  decode gives at the sampled positions."""
  import av  # pylint: disable=g-import-not-at-top
  import tracemalloc  # pylint: disable=g-import-not-at-top
  path = tmp_path / "long.mp4"
  with av.open(str(path), "w") as container:
    stream = container.add_stream("mpeg4", rate=30)
    stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
    for i in range(120):
      frame = av.VideoFrame.from_ndarray(np.full((360, 640, 3), 2 * i, np.uint8), format="rgb24")
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode(None):
      container.mux(packet)
  data = evaluate_helpers.tiny_config().data
  clip_tools.read_clip(path, data)  # once before measuring: a first read imports the samplers
  tracemalloc.start()
  try:
    source = clip_tools.read_clip(path, data)
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert source.clip.shape == (4, 16, 16, 3) and source.num_frames == 120
  assert peak < 4 * 360 * 640 * 3, peak
  from stae_jax.data.video import read_video  # pylint: disable=g-import-not-at-top
  whole, indices, _ = clip_tools.sample_clip(read_video(path).frames, data)
  assert indices.tolist() == source.indices.tolist()
  np.testing.assert_array_equal(whole, source.clip)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return evaluate_helpers.tiny_workdir(tmp_path_factory)


@pytest.fixture(scope="module")
def compressed(workdir, real_data):
  codec = loading.load_codec(workdir, "stae")
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
  # The server's answer is the one the device-side clip gets through the codec directly. The
  # bounded reader samples the frames a whole decode holds at the same positions; the window is
  # placed by packets (this Xvid file's 409; its decoder gives 408 pictures).
  from stae_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from stae_jax.data.video import read_video  # pylint: disable=g-import-not-at-top
  frames = read_video(real_data / VIDEO).frames
  indices = pipeline.temporal_indices(409, t, config.data.stride, "uniform")
  assert indices.tolist() == header["frame_indices"] and header["source"]["frames"] == 409
  box = pipeline.crop_box(*frames.shape[1:3])
  resize = clip_tools._resize  # pylint: disable=protected-access
  clip = np.stack([resize(frames[i], box, config.data) for i in indices])
  np.testing.assert_array_equal(clip, clip_tools.read_clip(real_data / VIDEO, config.data).clip)
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
      (dict(clip_shape=[16, 20000, 20000, 3], frame_indices=list(range(16))), "claims a clip"),
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


def _write_dropped_frame_avi(path) -> None:
  """OpenCV's tree.avi's shape: 68 MJPEG packets whose timestamps span 0-443 (444 declared)."""
  import av  # pylint: disable=g-import-not-at-top
  stamps = sorted(set(np.linspace(0, 443, 68).round().astype(int).tolist()))
  with av.open(str(path), "w") as container:
    stream = container.add_stream("mjpeg", rate=30)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
    for i, t in enumerate(stamps):
      frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 3 * i, np.uint8), format="rgb24")
      frame.pts = t
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode(None):
      container.mux(packet)


def _run(*args) -> subprocess.CompletedProcess:
  """A command-line tool's run from the repository root, its output captured."""
  return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300,
                        cwd=REPO_ROOT)


def _no_library_noise(stderr: str) -> bool:
  """No INFO line (absl's "I1206 ...") and no expected-by-design Orbax warning reached the user."""
  return not any(line[:1] == "I" and line[1:5].isdigit() or "read only" in line
                 for line in stderr.splitlines())


@pytest.mark.slow
@pytest.mark.real_data
def test_command_line_round_trip(workdir, real_data, tmp_path):
  """compress.py on a real clip and a dropped-frame AVI in one call (one restore), decompress.py
  with a picture; every input and output mistake refused before the model loads, in seconds of
  CPU, naming the problem; no library INFO lines; sizes of the bitstream and the file apart."""
  picture = tmp_path / "clip.png"
  dropped = tmp_path / "dropped.avi"
  _write_dropped_frame_avi(dropped)
  out = tmp_path / "out"
  out.mkdir()
  # two inputs in one call (one restore, one compile) into a folder
  done = _run("compress.py", f"--workdir={workdir}", f"--input={real_data / VIDEO},{dropped}",
               f"--output={out}", "--point=keep=1x0.5")
  assert done.returncode == 0, done.stderr[-2000:]
  assert _no_library_noise(done.stderr), done.stderr[-2000:]
  stae_file = out / pathlib.Path(VIDEO).with_suffix(".stae").name
  lines = done.stdout.splitlines()
  assert len(lines) == 2 and (out / "dropped.stae").stat().st_size > 20
  for line, path in zip(lines, [stae_file, out / "dropped.stae"]):
    stream = len(clip_tools.unpack(path.read_bytes())[1])
    assert f"bitstream {stream} bytes ({8 * stream} bits; {4 * 16 * 16 * 3 / stream:.1f}x" in line
    size = path.stat().st_size
    assert f"file {size} bytes (with its {size - stream}-byte header)" in line
  header = clip_tools.unpack((out / "dropped.stae").read_bytes())[0]
  assert header["source"]["frames"] == 444 and min(header["frame_indices"]) > 200  # not of 68
  # A header whose text would drive the terminal, decompressed with a picture: printed escaped.
  hostile = tmp_path / "hostile.stae"
  header, stream = clip_tools.unpack(stae_file.read_bytes())
  header["source"]["name"] = "clip\x1b[2J\x1b]0;owned\x07.avi"
  hostile.write_bytes(clip_tools.pack(header, stream))
  done = _run("decompress.py", f"--workdir={workdir}", f"--input={hostile}",
              f"--picture={picture}", "--top=3")
  assert done.returncode == 0, done.stderr[-2000:]
  assert _no_library_noise(done.stderr), done.stderr[-2000:]
  assert done.stdout.count("%") == 3 and picture.stat().st_size > 100
  assert "\x1b" not in done.stdout and "\x07" not in done.stdout
  assert "source clip\\x1b[2J\\x1b]0;owned\\x07.avi" in done.stdout
  # Mistakes refused before the model loads: each is run against a workdir that holds no model,
  # so a tool that loaded the model (or resolved its workdir) before checking what it was given
  # would fail with the workdir's error instead of the mistake's. (A CPU-time bound on these runs,
  # half the loaded call's, failed when the suite ran two files at once: the start-up of Python
  # and JAX alone is 3 s of CPU on the slower Intel Xeon.)
  (tmp_path / "a.avi").write_bytes((real_data / VIDEO).read_bytes())
  (tmp_path / "bad.stae").write_bytes(b"STAE" + stae_file.read_bytes()[4:40])
  fast_failures = [
      (("compress.py", f"--input={tmp_path / 'missing.avi'}"), "missing.avi: no such file"),
      (("compress.py", f"--input={real_data / VIDEO}",
        f"--output={tmp_path / 'no_such_dir' / 'clip.stae'}"), "cannot write"),
      (("compress.py", f"--input={tmp_path / 'a.avi'},{tmp_path / 'a.mp4'}"),
       f"inputs {tmp_path / 'a.avi'} and {tmp_path / 'a.mp4'} would both be written"),
      (("decompress.py", f"--input={tmp_path / 'missing.stae'}"), "missing.stae is not a file"),
      (("decompress.py", f"--input={stae_file}", f"--picture={tmp_path / 'no_dir' / 'p.png'}"),
       "no_dir is not a folder"),
      (("decompress.py", f"--input={tmp_path / 'bad.stae'}"), "decompress.py: error: .stae header"),
  ]
  no_model = tmp_path / "no_model_here"
  for args, message in fast_failures:
    done = _run(*args[:1], f"--workdir={no_model}", *args[1:])
    assert done.returncode == 1 and message in done.stderr, (args, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, (args, done.stderr[-2000:])
    assert not no_model.exists(), args
  assert not (tmp_path / "a.stae").exists()
