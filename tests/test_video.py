"""read_video on real files (HMDB51 AVIs, re-encoded MP4s, a Kinetics clip) and on every kind of bad file."""


import av
import numpy as np
import pytest

from stae_jax.data.video import VideoReadError, VideoReader, read_video, resized_size

HMDB51_CLIPS = (
    "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi",
    "climb_stairs/Increase_stride_length_by_running_stairs__working_step_over_action_speed_"
    "development_climb_stairs_f_cm_np1_le_med_1.avi",
)


def _pyav_frames(path) -> list[np.ndarray]:
  """What PyAV itself decodes, independently of read_video: the reference for counts and pixels."""
  with av.open(str(path), metadata_errors="ignore") as container:
    return [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]


@pytest.mark.parametrize("relpath", HMDB51_CLIPS)
def test_hmdb51_avi_full_size_matches_pyav(real_data, relpath):
  # These files carry non-UTF-8 metadata: reading them at all checks metadata_errors="ignore".
  path = real_data / "hmdb51" / relpath
  reference = _pyav_frames(path)
  clip = read_video(path)
  assert clip.frames.dtype == np.uint8
  assert clip.frames.shape == (len(reference), 240, 320, 3)
  assert clip.num_frames == len(reference) > 0
  assert (clip.source_height, clip.source_width) == (240, 320)
  assert clip.fps == pytest.approx(30.0)
  np.testing.assert_array_equal(clip.frames[[0, -1]], np.stack([reference[0], reference[-1]]))


def test_hmdb51_avi_resized_keeps_aspect_and_content(real_data):
  path = real_data / "hmdb51" / HMDB51_CLIPS[1]
  full = read_video(path)
  small = read_video(path, short_side=64)
  assert small.frames.shape == (full.num_frames, 64, 86, 3)  # 320 * 64 / 240 = 85.3 -> 86 (even)
  assert (small.source_height, small.source_width) == (240, 320)
  # Resizing must not scramble content: the mean colour of each frame survives within a few levels.
  np.testing.assert_allclose(small.frames.mean(axis=(1, 2)), full.frames.mean(axis=(1, 2)), atol=3)


def test_reencoded_mp4s_of_varying_width(real_data):
  paths = sorted((real_data / "hmdb51_reencoded").glob("*/*.mp4"))
  assert len(paths) == 10
  widths = set()
  for path in paths:
    clip = read_video(path, short_side=64)
    assert clip.num_frames == len(_pyav_frames(path)), path.name
    assert clip.source_height == 256
    widths.add(clip.source_width)
    height, width = clip.frames.shape[1:3]
    assert height == 64 and width % 2 == 0
    assert abs(width - clip.source_width * 64 / 256) <= 1, (path.name, clip.source_width, width)
  assert len(widths) >= 3, widths  # 306, 340, 374, 452 occur: the aspect logic is exercised


def test_kinetics_h264_clip(real_data):
  clip = read_video(real_data / "kinetics" / "tai_chi" / "ta_chi.mp4", short_side=32)
  assert clip.frames.shape == (300, 32, 42, 3)
  assert clip.fps == pytest.approx(30000 / 1001)
  assert (clip.source_height, clip.source_width) == (256, 340)


def test_max_frames_reads_a_prefix(real_data):
  path = real_data / "hmdb51" / HMDB51_CLIPS[0]
  head = read_video(path, short_side=64, max_frames=5)
  whole = read_video(path, short_side=64)
  assert head.num_frames == 5
  np.testing.assert_array_equal(head.frames, whole.frames[:5])


def test_resized_size():
  assert resized_size(240, 320, 64) == (64, 86)
  assert resized_size(320, 240, 64) == (86, 64)  # portrait: the width is the short side
  assert resized_size(240, 560, 256) == (256, 598)
  assert resized_size(240, 432, 256) == (256, 460)
  assert resized_size(241, 321, None) == (241, 321)
  for bad in (0, -2, 63, 64.0, True):
    with pytest.raises(ValueError, match="short_side"):
      resized_size(240, 320, bad)


# ---------------------------------------------------------------------------------- bad files


def _raises_naming(path, cause_pattern, **kwargs):
  with pytest.raises(VideoReadError, match=cause_pattern) as info:
    read_video(path, **kwargs)
  assert str(path) in str(info.value)
  assert isinstance(info.value, ValueError)
  return info.value


def test_missing_file(tmp_path):
  _raises_naming(tmp_path / "absent.avi", "no such file")


def test_zero_byte_file(tmp_path):
  path = tmp_path / "empty.avi"
  path.write_bytes(b"")
  _raises_naming(path, "empty \\(0 bytes\\)")


def test_directory_is_not_a_video(tmp_path):
  _raises_naming(tmp_path, "not a regular file")


def test_not_a_video(tmp_path):
  path = tmp_path / "notes.avi"
  path.write_text("these are not the frames you are looking for\n" * 50)
  _raises_naming(path, "not a video")


def test_audio_only_file_has_no_video_stream(tmp_path):
  path = tmp_path / "tone.wav"
  with av.open(str(path), "w") as container:
    stream = container.add_stream("pcm_s16le", rate=8000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
    frame.sample_rate = 8000
    for packet in [*stream.encode(frame), *stream.encode(None)]:
      container.mux(packet)
  _raises_naming(path, "no video stream")


def test_video_stream_without_frames(tmp_path):
  path = tmp_path / "no_frames.avi"
  with av.open(str(path), "w") as container:
    stream = container.add_stream("mpeg4", rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()
  _raises_naming(path, "no frames could be decoded")


@pytest.mark.parametrize("keep_fraction", [0.5, 0.05])
def test_truncated_avi_is_an_error_although_its_first_frames_decode(real_data, tmp_path,
                                                                    keep_fraction):
  data = (real_data / "hmdb51" / HMDB51_CLIPS[0]).read_bytes()
  path = tmp_path / "cut.avi"
  path.write_bytes(data[:int(len(data) * keep_fraction)])
  # The premise: PyAV alone decodes the first part without complaint.
  assert 0 < len(_pyav_frames(path)) < 408
  error = _raises_naming(path, "truncated: the container declares 409 frames")
  assert error.path == str(path)


def test_truncated_mp4(real_data, tmp_path):
  data = (real_data / "kinetics" / "tai_chi" / "ta_chi.mp4").read_bytes()
  path = tmp_path / "cut.mp4"
  path.write_bytes(data[:len(data) // 2])
  _raises_naming(path, "not a video FFmpeg can open")  # its index (moov) sits at the end


def test_reader_streams_with_metadata_before_frames(real_data):
  path = real_data / "hmdb51" / HMDB51_CLIPS[1]
  with VideoReader(path, short_side=32) as reader:
    assert (reader.height, reader.width) == (32, 42)
    assert reader.declared_frames == 75
    first = next(iter(reader.frames()))
  assert first.shape == (32, 42, 3) and first.dtype == np.uint8


def test_bad_max_frames(real_data):
  with pytest.raises(ValueError, match="max_frames"):
    read_video(real_data / "hmdb51" / HMDB51_CLIPS[1], max_frames=0)


def _write_video(path, timestamps, *, size=(48, 64), codec="mjpeg", rate=30):
  """A video whose frame i (shown at timestamps[i], in frames) is a flat grey of value 3 * i."""
  height, width = size
  with av.open(str(path), "w") as container:
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    for i, t in enumerate(timestamps):
      frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), 3 * i % 256, np.uint8),
                                         format="rgb24")
      frame.pts = int(t)
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode(None):
      container.mux(packet)


def test_dropped_frames_are_read_by_their_timestamps(tmp_path):
  """A capture that dropped frames (OpenCV's tree.avi: 68 packets spanning timestamps 0-443, 444
  declared) is intact: each slot shows the last frame at or before it, not a truncation error."""
  stamps = sorted(set(np.linspace(0, 443, 68).round().astype(int).tolist()))
  path = tmp_path / "dropped.avi"
  _write_video(path, stamps)
  with VideoReader(path) as reader:
    assert reader.declared_frames == 444 and reader.timeline.packets == 68
    assert reader.timeline.gapped and reader.num_frames == 444
  clip = read_video(path)
  assert clip.num_frames == 444
  shown = clip.frames[:, 0, 0, 0].astype(int)
  expected = np.array([3 * (np.searchsorted(stamps, t, side="right") - 1) for t in range(444)])
  assert np.abs(shown - expected).max() <= 3  # JPEG's rounding of a flat grey
  with VideoReader(path) as reader:
    picked = dict(reader.frames_at([0, 100, 443]))
  assert abs(int(picked[100][0, 0, 0]) - expected[100]) <= 3
  # Cut short, the same file is still refused as truncated (its timestamps stop early).
  data = path.read_bytes()
  (tmp_path / "cut.avi").write_bytes(data[:len(data) // 2])
  _raises_naming(tmp_path / "cut.avi", "truncated")


def test_intact_files_keep_decoding_order(real_data):
  """Xvid's packed bitstream: 409 packets, timestamps 1-409 without a gap, 408 pictures decoded;
  not read by timestamps, so its frames are the decoder's, in its order."""
  with VideoReader(real_data / "hmdb51" / HMDB51_CLIPS[0]) as reader:
    assert (reader.timeline.packets, reader.timeline.slots) == (409, 409)
    assert not reader.timeline.gapped and reader.num_frames == 409


def test_frames_at_reads_only_the_window(tmp_path):
  """frames_at converts only the frames asked for and stops decoding after the last, so the
  Python-side memory (numpy's allocations, which tracemalloc sees) is a few frames, not the file."""
  import tracemalloc  # pylint: disable=g-import-not-at-top
  path = tmp_path / "long.mp4"
  _write_video(path, range(90), size=(240, 320), codec="mpeg4")
  frame_bytes = 240 * 320 * 3
  tracemalloc.start()
  try:
    with VideoReader(path) as reader:
      got = [(i, int(f[0, 0, 0])) for i, f in reader.frames_at([10, 12, 12, 14])]
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert [i for i, _ in got] == [10, 12, 12, 14]
  assert all(abs(v - 3 * i) <= 4 for i, v in got)
  assert peak < 8 * frame_bytes, peak  # the whole file as RGB would be 90 frames
  with VideoReader(path) as reader:
    with pytest.raises(ValueError, match="not within the 90 frames"):
      next(reader.frames_at([90]))
