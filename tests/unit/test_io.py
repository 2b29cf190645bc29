"""Tests for avsr.io: reading, writing, seeking, resampling and bad input.

Fixtures are generated here with ``write_av`` (or PyAV directly). Video
content is flat grey per frame at a level that encodes the frame index, so
lossy compression cannot confuse the checks; audio carries clicks and sines.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from avsr import io
from avsr.errors import InputError

H, W = 48, 64
SR = io.SAMPLE_RATE


# ----------------------------------------------------------------------- helpers


def code_colour(i: np.ndarray | int) -> np.ndarray:
    """RGB colour that encodes frame index ``i < 256``: red and green digits base 16, 14 levels apart."""
    i = np.asarray(i)
    return np.stack([16 + 14 * (i % 16), 16 + 14 * (i // 16), np.full_like(i, 128)], axis=-1)


def flat_frames(n: int, h: int = H, w: int = W) -> np.ndarray:
    """``uint8 (n, h, w, 3)``: frame ``i`` is flat at ``code_colour(i)``."""
    colours = code_colour(np.arange(n)).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(colours[:, None, None, :], (n, h, w, 3)))


def frame_index(frames: np.ndarray) -> np.ndarray:
    """Recover the frame index of each flat frame from its mean colour."""
    means = frames.reshape(len(frames), -1, 3).mean(axis=1)
    digits = np.clip(np.round((means[:, :2] - 16) / 14), 0, 15).astype(np.int64)
    return digits[:, 0] + 16 * digits[:, 1]


def click_track(n: int, at: float, sr: int = SR) -> np.ndarray:
    """``float32 (n,)`` silence with a 5 ms click at ``at`` seconds."""
    audio = np.zeros(n, dtype=np.float32)
    i = int(round(at * sr))
    audio[i : i + sr // 200] = 0.8
    return audio


def click_time(audio: np.ndarray, start: float, sr: int = SR) -> float:
    """Time of the first sample above half the click amplitude."""
    return start + int(np.argmax(np.abs(audio) > 0.4)) / sr


def errors_of(fn, *args, **kw) -> InputError:
    """Run ``fn`` (draining generators) and return the InputError it raises."""
    with pytest.raises(InputError) as info:
        out = fn(*args, **kw)
        if hasattr(out, "__next__"):
            list(out)
    return info.value


def write_h264(
    path: Path,
    frames: np.ndarray,
    *,
    rotation: int = 0,
    stream_options: dict | None = None,
    container_options: dict | None = None,
) -> None:
    """Encode ``uint8 (n, H, W, 3)`` frames as 25 fps H.264 with PyAV directly, for files ``write_av`` does not make.

    Args:
        path: output file; its suffix picks the container.
        frames: the frames, shown at ``i / 25`` s.
        rotation: display rotation in degrees stored in the stream (0: none).
        stream_options: encoder options (e.g. ``{"bf": "3"}``).
        container_options: muxer options (e.g. ``{"movflags": "faststart"}``).
    """
    with av.open(str(path), "w", options=container_options) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        if stream_options:
            stream.options = stream_options
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("fps", [25.0, 30.0, 30000 / 1001, 60.0], ids=["25", "30", "29.97", "60"])
def test_round_trip_mp4(tmp_path: Path, fps: float) -> None:
    n = int(round(1.6 * fps))
    frames = flat_frames(n)
    flash_t = 20 / fps  # a white frame and a click at the same instant
    frames[20] = 255
    audio = click_track(int(round(n / fps * SR)), flash_t)
    path = tmp_path / "clip.mp4"
    io.write_av(path, frames, fps, audio)

    clip = io.read_av(path)
    assert clip.frames.shape == (n, H, W, 3) and clip.frames.dtype == np.uint8
    assert clip.fps == pytest.approx(fps, rel=1e-6)
    np.testing.assert_allclose(clip.timestamps, np.arange(n) / fps, atol=1e-3)
    keep = np.arange(n) != 20
    np.testing.assert_array_equal(frame_index(clip.frames)[keep], np.arange(n)[keep])
    assert clip.audio.dtype == np.float32 and clip.sample_rate == SR
    assert 0 <= len(clip.audio) - len(audio) <= 2048  # AAC pads to whole 1024-sample frames
    assert abs(clip.audio_start) < 1e-3
    video_flash = clip.timestamps[int(np.argmax(clip.frames.mean(axis=(1, 2, 3))))]
    assert abs(video_flash - click_time(clip.audio, clip.audio_start)) < 1.0 / fps
    assert clip.duration == pytest.approx(n / fps, abs=2048 / SR)

    info = io.probe(path)
    assert info["has_video"] and info["has_audio"]
    assert info["video"]["codec"] == "h264" and info["audio"]["codec"] == "aac"
    assert (info["video"]["width"], info["video"]["height"]) == (W, H)
    assert info["video"]["frames"] == n
    assert info["video"]["fps"] == pytest.approx(fps, rel=1e-6)


@pytest.mark.parametrize(
    "ext, vcodec, acodec, options",
    [
        ("mkv", "h264", "aac", {}),
        ("avi", "h264", "pcm_s16le", {}),
        ("webm", "vp9", "opus", {}),
        ("webm", "vp8", "vorbis", {"video_codec": "vp8", "audio_codec": "vorbis"}),
        ("mov", "h264", "aac", {}),
        ("ts", "h264", "aac", {}),
        ("avi", "mpeg4", "pcm_s16le", {"video_codec": "mpeg4"}),
    ],
)
def test_containers(tmp_path: Path, ext: str, vcodec: str, acodec: str, options: dict) -> None:
    fps, n = 25.0, 40
    frames = flat_frames(n)
    frames[15] = 255
    audio = click_track(int(n / fps * SR), 15 / fps)
    path = tmp_path / f"clip.{ext}"
    io.write_av(path, frames, fps, audio, **options)

    info = io.probe(path)
    assert info["video"]["codec"] == vcodec and info["audio"]["codec"] == acodec
    clip = io.read_av(path)
    assert len(clip.frames) == n and clip.fps == pytest.approx(fps)
    # MPEG-TS keeps AAC's encoder delay, so its video starts one AAC frame (64 ms) after time 0
    assert 0 <= clip.timestamps[0] < (0.07 if ext == "ts" else 1e-3)
    np.testing.assert_allclose(clip.timestamps - clip.timestamps[0], np.arange(n) / fps, atol=1.5e-3)
    keep = np.arange(n) != 15
    np.testing.assert_array_equal(frame_index(clip.frames)[keep], np.arange(n)[keep])
    assert abs(len(clip.audio) - len(audio)) <= 2048
    video_flash = clip.timestamps[int(np.argmax(clip.frames.mean(axis=(1, 2, 3))))]
    assert abs(video_flash - click_time(clip.audio, clip.audio_start)) < 1.0 / fps


def test_rgb_channel_order(tmp_path: Path) -> None:
    frames = np.zeros((5, H, W, 3), dtype=np.uint8)
    frames[..., 0] = 220  # red
    frames[..., 2] = 30
    path = tmp_path / "red.mp4"
    io.write_av(path, frames, 25)
    got = io.read_av(path).frames.reshape(5, -1, 3).mean(axis=1)
    np.testing.assert_allclose(got, np.tile([220, 0, 30], (5, 1)), atol=6)


@pytest.mark.parametrize("ext", ["mkv", "mov", "avi"])
def test_pcm_audio_is_sample_exact(tmp_path: Path, ext: str) -> None:
    rng = np.random.default_rng(0)
    audio = (0.3 * rng.standard_normal(SR)).clip(-1, 1).astype(np.float32)
    path = tmp_path / f"pcm.{ext}"
    io.write_av(path, flat_frames(25), 25, audio, audio_codec="pcm")
    assert io.probe(path)["audio"]["codec"] == "pcm_s16le"
    got = io.read_audio(path)
    assert got.shape == audio.shape
    np.testing.assert_allclose(got, audio, atol=1.5 / 32768)


def test_pcm_in_webm_is_refused_atomically(tmp_path: Path) -> None:
    path = tmp_path / "x.webm"
    err = errors_of(io.write_av, path, flat_frames(5), 25, np.zeros(SR, np.float32), audio_codec="pcm")
    assert str(path) in str(err) and "pcm" in err.problem
    assert os.listdir(tmp_path) == []  # no target, no temporary left behind


@pytest.mark.parametrize(
    "ext, codec", [("wav", "pcm_s16le"), ("flac", "flac"), ("m4a", "aac"), ("mp3", "mp3")]
)
def test_audio_only_files(tmp_path: Path, ext: str, codec: str) -> None:
    audio = click_track(SR, 0.5)
    path = tmp_path / f"speech.{ext}"
    io.write_av(path, None, 25, audio)
    info = io.probe(path)
    assert not info["has_video"] and info["audio"]["codec"] == codec
    clip = io.read_av(path)
    assert clip.frames is None and clip.timestamps is None and clip.fps is None
    assert abs(len(clip.audio) - SR) <= 2400  # MP3/AAC encoder delay and padding
    assert abs(click_time(clip.audio, clip.audio_start) - 0.5) < 0.005
    with pytest.raises(InputError, match="no video stream"):
        list(io.iter_video_frames(path))


def test_video_only_mp4(tmp_path: Path) -> None:
    path = tmp_path / "silent.mp4"
    io.write_av(path, flat_frames(10), 25)
    clip = io.read_av(path)
    assert clip.audio is None and len(clip.frames) == 10
    err = errors_of(io.read_audio, path)
    assert str(path) in str(err) and err.problem == "no audio stream"


def test_downmix_and_resample(tmp_path: Path) -> None:
    sr_in = 44100
    t = np.arange(sr_in) / sr_in
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = np.full_like(left, 0.2)
    left[int(0.5 * sr_in) : int(0.5 * sr_in) + 200] = 0.95  # click at 0.5 s
    path = tmp_path / "stereo.wav"
    io.write_av(path, None, 25, np.stack([left, right], axis=1).astype(np.float32), sample_rate=sr_in)
    assert io.probe(path)["audio"]["channels"] == 2
    mono = io.read_audio(path)
    assert mono.dtype == np.float32 and abs(len(mono) - SR) <= 2
    assert np.median(mono[: SR // 4]) == pytest.approx(0.1, abs=0.02)  # mean of the channels
    spectrum = np.abs(np.fft.rfft(mono[: SR // 4] - mono[: SR // 4].mean()))
    assert np.argmax(spectrum) * SR / (SR // 4) == pytest.approx(440, abs=5)
    assert abs(click_time(mono - 0.1, 0.0) - 0.5) < 0.002  # no shift from resampling


def test_grayscale_odd_size_is_padded(tmp_path: Path) -> None:
    levels = 20 + 15 * np.arange(12)
    gray = np.broadcast_to(levels[:, None, None], (12, 47, 63)).astype(np.uint8)
    path = tmp_path / "gray.mp4"
    io.write_av(path, gray, 25)
    frames = io.read_av(path).frames
    assert frames.shape == (12, 48, 64, 3)
    np.testing.assert_allclose(frames.reshape(12, -1).mean(axis=1), levels, atol=3)
    assert np.ptp(frames.reshape(12, -1, 3).mean(axis=1), axis=1).max() < 3  # still grey


def test_display_rotation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "phone.mp4"
    images = np.zeros((3, H, W, 3), dtype=np.uint8)
    images[:, :12, :12] = 255  # top-left marker
    write_h264(path, images, rotation=90)
    frames = io.read_av(path).frames
    assert frames.shape == (3, W, H, 3)  # upright: a quarter turn swaps height and width
    rows, cols = np.nonzero(frames[0, ..., 0] > 128)
    assert rows.mean() > W - 16 and cols.mean() < 16  # 90 deg counter-clockwise: top-left -> bottom-left


def test_avi_with_b_frames_has_display_times(tmp_path: Path) -> None:
    path = tmp_path / "bframes.avi"
    n = 30
    write_h264(path, flat_frames(n), stream_options={"bf": "3", "preset": "veryfast"})
    clip = io.read_av(path)
    np.testing.assert_array_equal(frame_index(clip.frames), np.arange(n))
    np.testing.assert_allclose(clip.timestamps, np.arange(n) / 25, atol=1e-6)


def test_resolution_change_midstream(tmp_path: Path) -> None:
    """A stream that switches resolution (WebRTC recordings do) reads at the first size."""
    path = tmp_path / "switch.ts"  # MPEG-TS carries the new parameter sets in-band
    frames = flat_frames(20)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        container.start_encoding()
        small = av.CodecContext.create("libx264", "w")
        small.width, small.height, small.pix_fmt = W // 2, H // 2, "yuv420p"
        small.time_base, small.framerate = Fraction(1, 25), 25
        parts = ((stream.codec_context, frames[:10], 0), (small, frames[10:, : H // 2, : W // 2], 10))
        for encoder, images, offset in parts:
            for i, img in enumerate(images):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                frame.pts, frame.time_base = offset + i, Fraction(1, 25)
                for packet in encoder.encode(frame):
                    packet.stream = stream
                    container.mux(packet)
            for packet in encoder.encode(None):
                packet.stream = stream
                container.mux(packet)
    clip = io.read_av(path)
    assert clip.frames.shape == (20, H, W, 3)
    np.testing.assert_array_equal(frame_index(clip.frames), np.arange(20))
    np.testing.assert_allclose(np.diff(clip.timestamps), 0.04, atol=1e-3)


def test_channel_layout_change_midstream(tmp_path: Path) -> None:
    """Audio that switches from mono to stereo (broadcast recordings do) decodes whole."""
    path = tmp_path / "layouts.ts"
    tone = (0.3 * np.sin(2 * np.pi * 300 * np.arange(SR) / SR)).astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=SR)
        stream.layout = "mono"
        container.start_encoding()
        stereo = av.CodecContext.create("aac", "w")
        stereo.sample_rate, stereo.layout, stereo.format = SR, "stereo", "fltp"
        stereo.time_base = Fraction(1, SR)
        parts = (
            (stream.codec_context, tone[None], "mono", 0),
            (stereo, np.stack([tone, tone]), "stereo", SR + 1024),
        )
        for encoder, data, layout, offset in parts:
            for i in range(0, data.shape[1], 1024):
                block = np.ascontiguousarray(data[:, i : i + 1024])
                frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
                frame.sample_rate, frame.pts, frame.time_base = SR, offset + i, Fraction(1, SR)
                for packet in encoder.encode(frame):
                    packet.stream = stream
                    container.mux(packet)
            for packet in encoder.encode(None):
                packet.stream = stream
                container.mux(packet)
    audio = io.read_audio(path)
    assert abs(len(audio) - 2 * SR) < 4096
    for part in (audio[2000 : SR - 2000], audio[SR + 4000 : 2 * SR - 2000]):
        assert np.abs(part).max() == pytest.approx(0.3, abs=0.03)  # the tone in both halves


# ------------------------------------------------------------- variable frame rate


VFR_TIMES = np.cumsum([0.0, 0.02, 0.05, 0.03, 0.08, 0.01, 0.04, 0.06, 0.02, 0.1, 0.03, 0.05, 0.04])


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_variable_frame_rate(tmp_path: Path, ext: str) -> None:
    n = len(VFR_TIMES)
    path = tmp_path / f"vfr.{ext}"
    io.write_av(path, flat_frames(n), 25, timestamps=VFR_TIMES)
    clip = io.read_av(path, audio=False)
    np.testing.assert_allclose(clip.timestamps, VFR_TIMES, atol=1e-3)
    np.testing.assert_array_equal(frame_index(clip.frames), np.arange(n))

    # Resampled to 25 fps, each output shows the latest source frame at or before its time.
    out, times = io.resample_video(clip.frames, clip.timestamps, 25.0)
    expected = [int(np.nonzero(VFR_TIMES <= t + 1e-9)[0][-1]) for t in times]
    np.testing.assert_array_equal(frame_index(out), expected)
    np.testing.assert_allclose(times, np.arange(len(out)) / 25.0)

    streamed = list(io.iter_frames_at(path, 25.0))
    assert len(streamed) == len(out)
    np.testing.assert_array_equal(frame_index(np.stack([f for f, _ in streamed])), expected)
    np.testing.assert_allclose([t for _, t in streamed], times)


def test_vfr_write_tolerates_clock_rounding(tmp_path: Path) -> None:
    """Timestamps read back from a file (tiny negatives, sub-tick gaps) can be written again."""
    ts = np.array([-1e-7, 0.04, 0.04000001, 0.08, 0.2])
    path = tmp_path / "rounded.mp4"
    io.write_av(path, flat_frames(5), 25, timestamps=ts)
    clip = io.read_av(path)
    np.testing.assert_array_equal(frame_index(clip.frames), np.arange(5))
    assert np.all(np.diff(clip.timestamps) > 0)
    np.testing.assert_allclose(clip.timestamps, [0, 0.04, 0.04, 0.08, 0.2], atol=1e-4)


# --------------------------------------------------------------------- time ranges


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """4 s, 30 fps, keyframe every 10 frames, PCM audio of white noise (sample-exact)."""
    rng = np.random.default_rng(1)
    audio = (0.3 * rng.standard_normal(4 * SR)).clip(-1, 1).astype(np.float32)
    path = tmp_path_factory.mktemp("io") / "long.mkv"
    io.write_av(path, flat_frames(120), 30, audio, audio_codec="pcm", gop=10)
    return path, audio


def count_decoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch the decoder so tests can see how many frames a read decoded."""
    counter = [0]
    real = io._decode

    def counting(*args, **kw):
        for frame in real(*args, **kw):
            counter[0] += 1
            yield frame

    monkeypatch.setattr(io, "_decode", counting)
    return counter


def test_range_read_seeks(long_clip, monkeypatch: pytest.MonkeyPatch) -> None:
    path, audio = long_clip
    decoded = count_decoded(monkeypatch)
    clip = io.read_av(path, start=2.5, end=3.0)
    np.testing.assert_array_equal(frame_index(clip.frames), np.arange(75, 90))
    np.testing.assert_allclose(clip.timestamps, np.arange(75, 90) / 30, atol=1e-3)
    assert clip.audio_start == pytest.approx(2.5)
    np.testing.assert_allclose(clip.audio, audio[40000:48000], atol=1.5 / 32768)
    assert decoded[0] < 60  # seeked: neither stream decoded from 0


def test_range_read_unaligned_start(long_clip) -> None:
    path, audio = long_clip
    clip = io.read_av(path, start=1.01, end=1.5)
    np.testing.assert_array_equal(frame_index(clip.frames), np.arange(31, 45))  # 31/30 s >= 1.01 s
    assert len(clip.audio) == int(round(0.49 * SR))
    np.testing.assert_allclose(clip.audio, audio[16160 : 16160 + len(clip.audio)], atol=1.5 / 32768)
    streamed = list(io.iter_video_frames(path, start=1.01, end=1.5))
    np.testing.assert_allclose([t for _, t in streamed], clip.timestamps)
    np.testing.assert_array_equal(np.stack([f for f, _ in streamed]), clip.frames)


def test_range_read_mp4_keeps_sync(tmp_path: Path) -> None:
    fps, n = 30.0, 90
    frames = flat_frames(n)
    frames[60] = 255
    path = tmp_path / "sync.mp4"
    io.write_av(path, frames, fps, click_track(3 * SR, 2.0), gop=15)
    clip = io.read_av(path, start=1.5, end=2.5)
    assert len(clip.frames) == 30 and clip.audio_start == pytest.approx(1.5)
    assert len(clip.audio) == SR
    video_flash = clip.timestamps[int(np.argmax(clip.frames.mean(axis=(1, 2, 3))))]
    assert video_flash == pytest.approx(2.0, abs=1e-3)
    assert abs(click_time(clip.audio, clip.audio_start) - 2.0) < 1.0 / fps


def test_range_read_audio_only(long_clip) -> None:
    path, audio = long_clip
    got = io.read_audio(path, start=3.0)
    np.testing.assert_allclose(got, audio[48000:], atol=1.5 / 32768)
    clip = io.read_av(path, start=3.9, end=10.0, video=False)
    assert clip.frames is None and len(clip.audio) == int(0.1 * SR)


@pytest.mark.parametrize("ext", ["wav", "m4a", "mp3", "ogg"])
def test_range_read_audio_files(tmp_path: Path, ext: str) -> None:
    audio = (click_track(3 * SR, 2.0) + 0.05 * np.sin(np.arange(3 * SR) * 0.05)).astype(np.float32)
    path = tmp_path / f"speech.{ext}"
    io.write_av(path, None, 25, audio)
    full = io.read_av(path)
    part = io.read_av(path, start=1.5, end=2.5)
    assert part.audio_start == pytest.approx(1.5) and len(part.audio) == SR
    offset = int(round((part.audio_start - full.audio_start) * SR))
    np.testing.assert_allclose(part.audio, full.audio[offset : offset + SR], atol=1e-4)
    loud = part.audio * (np.abs(part.audio) > 0.3)
    assert click_time(loud, part.audio_start) == pytest.approx(2.0, abs=0.003)


def test_iter_frames_at_constant_rates(long_clip, tmp_path: Path) -> None:
    path, _ = long_clip
    out = list(io.iter_frames_at(path, 25.0))
    assert len(out) == 100  # 4 s at 25 fps
    expected = io.resample_indices(np.arange(120) / 30, 25.0)
    np.testing.assert_array_equal(frame_index(np.stack([f for f, _ in out])), expected)

    part = list(io.iter_frames_at(path, 25.0, start=1.0, end=2.0))
    assert len(part) == 25
    np.testing.assert_allclose([t for _, t in part], 1.0 + np.arange(25) / 25)
    expected_part = np.floor((1.0 + np.arange(25) / 25) * 30 + 1e-6)
    np.testing.assert_array_equal(frame_index(np.stack([f for f, _ in part])), expected_part)

    p60 = tmp_path / "sixty.mp4"
    io.write_av(p60, flat_frames(60), 60)
    out60 = list(io.iter_frames_at(p60, 25.0))
    assert len(out60) == 25
    expected60 = np.floor(np.arange(25) * 2.4 + 1e-6)
    np.testing.assert_array_equal(frame_index(np.stack([f for f, _ in out60])), expected60)

    assert len(list(io.iter_frames_at(path, 25.0, start=3.99, end=4.2))) == 0  # round(0.01 s * 25) outputs
    with pytest.raises(InputError, match="past the end"):
        list(io.iter_frames_at(path, 25.0, start=4.5))


# -------------------------------------------------------------- resample_indices


def test_resample_indices_30_to_25() -> None:
    idx = io.resample_indices(np.arange(30) / 30.0, 25.0)
    assert idx.dtype == np.int64 and len(idx) == 25
    np.testing.assert_array_equal(idx, np.floor(np.arange(25) * 1.2 + 1e-9))
    assert idx[:6].tolist() == [0, 1, 2, 3, 4, 6]


def test_resample_indices_60_to_25() -> None:
    idx = io.resample_indices(np.arange(120) / 60.0, 25.0)
    assert len(idx) == 50
    np.testing.assert_array_equal(idx, np.floor(np.arange(50) * 2.4 + 1e-9))


def test_resample_indices_identity_and_tolerance() -> None:
    ts = np.arange(50) / 25.0 + np.array([0.0, 0.0005, -0.0005, 0.0, 0.0] * 10)  # ms jitter (Matroska clock)
    np.testing.assert_array_equal(io.resample_indices(ts, 25.0), np.arange(50))


def test_resample_indices_vfr() -> None:
    ts = np.array([0.0, 0.01, 0.1, 0.11, 0.2])
    # mean interval 0.05 -> span 0.25 s -> 6 outputs at 0, .04, .08, .12, .16, .20
    assert io.resample_indices(ts, 25.0).tolist() == [0, 1, 1, 3, 3, 4]
    assert io.resample_indices(ts, 25.0, t0=-0.08, duration=0.2).tolist() == [0, 0, 0, 1, 1]
    assert io.resample_indices(ts, 25.0, t0=0.1, duration=0.4).tolist() == [2, 3, 3, 4, 4, 4, 4, 4, 4, 4]
    assert io.resample_indices(np.zeros(0), 25.0).size == 0


def test_resample_video_carries_any_per_frame_data() -> None:
    landmarks = np.arange(30 * 4, dtype=np.float32).reshape(30, 2, 2)
    out, times = io.resample_video(landmarks, np.arange(30) / 30.0, 25.0)
    assert out.shape == (25, 2, 2) and times.shape == (25,)
    picks = np.floor(np.arange(25) * 1.2 + 1e-9).astype(int)
    np.testing.assert_array_equal(out[:, 0, 0], landmarks[picks, 0, 0])
    with pytest.raises(ValueError):
        io.resample_video(landmarks, np.arange(10) / 30.0)


# --------------------------------------------------------------------- bad input


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.mp4"
    for fn in (io.read_av, io.probe, io.read_audio, io.iter_video_frames, io.iter_frames_at):
        err = errors_of(fn, path)
        assert err.problem == "no such file" and str(path) in str(err)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    err = errors_of(io.read_av, path)
    assert err.problem == "empty file" and str(path) in str(err)


@pytest.mark.parametrize(
    "name, payload",
    [
        ("notes.mp4", b"this is not a video, just text\n" * 20),
        ("noise.mkv", np.random.default_rng(2).integers(0, 256, 4000, dtype=np.uint8).tobytes()),
    ],
)
def test_not_media(tmp_path: Path, name: str, payload: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(payload)
    for fn in (io.read_av, io.probe, io.iter_video_frames):
        err = errors_of(fn, path)
        assert err.problem == "not a readable media file" and str(path) in str(err)


def test_directory(tmp_path: Path) -> None:
    err = errors_of(io.read_av, tmp_path)
    assert str(tmp_path) in str(err) and "directory" in err.problem


def test_truncated_mp4(tmp_path: Path) -> None:
    full = tmp_path / "full.mp4"
    io.write_av(full, flat_frames(50), 25, click_track(2 * SR, 1.0))
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"  # index (moov) at the end: cut off -> unreadable
    cut.write_bytes(data[: len(data) // 2])
    err = errors_of(io.read_av, cut)
    assert str(cut) in str(err) and err.problem == "not a readable media file"


def test_truncated_faststart_mp4_decodes_what_is_there(tmp_path: Path) -> None:
    full = tmp_path / "fast.mp4"
    write_h264(full, flat_frames(50), container_options={"movflags": "faststart"})
    data = full.read_bytes()
    cut = tmp_path / "fastcut.mp4"  # index first, media cut in half
    cut.write_bytes(data[: len(data) * 2 // 3])
    clip = io.read_av(cut)
    assert 0 < len(clip.frames) < 50
    np.testing.assert_array_equal(frame_index(clip.frames), np.arange(len(clip.frames)))


def test_no_streams(tmp_path: Path) -> None:
    path = tmp_path / "subs.srt"
    path.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n\n")
    err = errors_of(io.read_av, path)
    assert str(path) in str(err) and err.problem == "no audio or video streams"


def test_video_stream_without_frames(tmp_path: Path) -> None:
    path = tmp_path / "noframes.mkv"
    with av.open(str(path), "w") as container:
        vstream = container.add_stream("libx264", rate=25)
        vstream.width, vstream.height, vstream.pix_fmt = W, H, "yuv420p"
        astream = container.add_stream("pcm_s16le", rate=SR)
        astream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, SR), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = SR, 0
        container.mux(astream.encode(frame))
        container.mux(astream.encode(None))
        container.mux(vstream.encode(None))
    assert io.probe(path)["has_video"]
    err = errors_of(io.read_av, path)
    assert str(path) in str(err) and err.problem == "no video frames"
    assert len(io.read_av(path, video=False).audio) == SR  # audio alone still reads


def test_bad_ranges(long_clip) -> None:
    path, _ = long_clip
    for kw in ({"start": 2.0, "end": 2.0}, {"start": 3.0, "end": 1.0}, {"start": -1.0}, {"end": 0.0}):
        for fn in (io.read_av, io.read_audio, io.iter_video_frames, io.iter_frames_at):
            err = errors_of(fn, path, **kw)
            assert str(path) in str(err)
    err = errors_of(io.read_av, path, start=10.0)
    assert "past the end" in err.problem


def test_bad_write_arguments(tmp_path: Path) -> None:
    path = tmp_path / "x.mp4"
    assert "nothing to write" in errors_of(io.write_av, path, None, 25).problem
    assert "uint8" in errors_of(io.write_av, path, np.zeros((2, H, W, 3), np.float32), 25).problem
    bad_ts = np.array([0.0, 0.1, 0.05])
    assert "increasing" in errors_of(io.write_av, path, flat_frames(3), 25, timestamps=bad_ts).problem
    assert not path.exists()


# ------------------------------------------------------------------ replacing audio


def noisy_frames(n: int, flash: int) -> np.ndarray:
    """``uint8 (n, H, W, 3)`` random frames (any re-encoding would change them) with a white frame ``flash``."""
    frames = np.random.default_rng(3).integers(0, 200, (n, H, W, 3), dtype=np.uint8)
    frames[flash] = 255
    return frames


def tone_with_click(n: int, at: float, sr: int = SR) -> np.ndarray:
    """``float32 (n,)``: a quiet 440 Hz tone (below the click threshold) plus a click at ``at`` seconds."""
    tone = 0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / sr)
    return np.clip(tone + click_track(n, at, sr), -1, 1).astype(np.float32)


def flash_time(clip: io.AVClip) -> float:
    """Time of the brightest frame."""
    return float(clip.timestamps[int(np.argmax(clip.frames.mean(axis=(1, 2, 3))))])


@pytest.mark.parametrize("src_ext, dst_ext", [("mp4", "mp4"), ("mp4", "mkv"), ("mp4", "mov"), ("mkv", "mp4"),
                                              ("mp4", "avi")])
def test_replace_audio_copies_video_bit_exact(tmp_path: Path, src_ext: str, dst_ext: str) -> None:
    fps, n = 25.0, 30
    src, dst = tmp_path / f"src.{src_ext}", tmp_path / f"dst.{dst_ext}"
    io.write_av(src, noisy_frames(n, 18), fps, click_track(int(n / fps * SR), 0.2))  # old click: 5th frame
    before = io.read_av(src)
    new = tone_with_click(len(before.audio), flash_time(before) - before.audio_start)
    io.replace_audio(src, dst, new)

    after = io.read_av(dst)
    assert after.frames.shape == before.frames.shape and np.array_equal(after.frames, before.frames)
    np.testing.assert_allclose(after.timestamps, before.timestamps, atol=1e-6)
    assert after.fps == pytest.approx(before.fps)
    assert io.probe(dst)["audio"]["codec"] == ("pcm_s16le" if dst_ext == "avi" else "aac")
    assert after.audio_start == pytest.approx(before.audio_start, abs=1e-3)
    assert 0 <= len(after.audio) - len(new) <= 2048  # AAC pads to whole 1024-sample frames
    assert np.corrcoef(after.audio[: len(new)], new)[0, 1] > 0.98  # the new sound, not the old
    assert abs(click_time(after.audio, after.audio_start) - flash_time(after)) < 1.0 / fps
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, dst.name])  # no temporary file left


def test_replace_audio_keeps_a_late_audio_start(tmp_path: Path) -> None:
    """A source whose sound starts 0.5 s after its pictures: by default the new sound starts there too."""
    fps, n, lag = 25.0, 40, 0.5
    src = tmp_path / "late.mkv"
    with av.open(str(src), "w") as container:
        vstream = container.add_stream("libx264", rate=25)
        vstream.width, vstream.height, vstream.pix_fmt = W, H, "yuv420p"
        astream = container.add_stream("pcm_s16le", rate=SR)
        astream.layout = "mono"
        silence = av.AudioFrame.from_ndarray(np.zeros((1, SR), np.float32), format="fltp", layout="mono")
        silence.sample_rate, silence.pts, silence.time_base = SR, int(lag * SR), Fraction(1, SR)
        container.mux(astream.encode(silence))
        for i, img in enumerate(noisy_frames(n, 30)):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            container.mux(vstream.encode(frame))
        container.mux(vstream.encode(None))
        container.mux(astream.encode(None))
    before = io.read_av(src)
    assert before.audio_start == pytest.approx(lag, abs=1e-3)
    new = tone_with_click(SR, flash_time(before) - lag)
    io.replace_audio(src, tmp_path / "default.mkv", new, audio_codec="pcm")
    after = io.read_av(tmp_path / "default.mkv")
    assert np.array_equal(after.frames, before.frames)
    assert after.audio_start == pytest.approx(lag, abs=1e-3)
    np.testing.assert_allclose(after.audio, new, atol=1.5 / 32768)  # PCM: sample-exact
    assert abs(click_time(after.audio, after.audio_start) - flash_time(after)) < 1.0 / fps

    on_video_clock = tone_with_click(int(1.6 * SR), flash_time(before))  # sample 0 at time 0
    io.replace_audio(src, tmp_path / "zero.mkv", on_video_clock, audio_codec="pcm", audio_start=0.0)
    after = io.read_av(tmp_path / "zero.mkv")
    assert after.audio_start == pytest.approx(0.0, abs=1e-3)
    assert abs(click_time(after.audio, after.audio_start) - flash_time(after)) < 1.0 / fps


def test_replace_audio_video_only_source_and_in_place(tmp_path: Path) -> None:
    path = tmp_path / "silent.mp4"
    frames = noisy_frames(20, 10)
    io.write_av(path, frames, 25.0)
    before = io.read_av(path)
    assert before.audio is None
    new = tone_with_click(int(0.8 * SR), flash_time(before))
    io.replace_audio(path, path, new)  # the file is replaced only once the new one is whole
    after = io.read_av(path)
    assert np.array_equal(after.frames, before.frames) and after.audio_start == pytest.approx(0.0, abs=1e-3)
    assert abs(click_time(after.audio, after.audio_start) - flash_time(after)) < 1.0 / 25
    assert sorted(p.name for p in tmp_path.iterdir()) == ["silent.mp4"]  # no temporary file left


def test_replace_audio_keeps_variable_frame_times_and_rotation(tmp_path: Path) -> None:
    times = np.cumsum(np.r_[0.0, np.random.default_rng(4).uniform(0.02, 0.07, 24)])
    vfr = tmp_path / "vfr.mp4"
    io.write_av(vfr, noisy_frames(25, 12), 25, np.zeros(SR, np.float32), timestamps=times)
    io.replace_audio(vfr, tmp_path / "vfr.mov", tone_with_click(SR, 0.5))
    before, after = io.read_av(vfr), io.read_av(tmp_path / "vfr.mov")
    assert np.array_equal(after.frames, before.frames)
    np.testing.assert_allclose(after.timestamps, times, atol=1e-4)

    phone = tmp_path / "phone.mp4"
    write_h264(phone, noisy_frames(3, 0), rotation=90)
    io.replace_audio(phone, tmp_path / "phone.mkv", np.zeros(2000, np.float32))
    before, after = io.read_av(phone), io.read_av(tmp_path / "phone.mkv")
    assert after.frames.shape == (3, W, H, 3) and np.array_equal(after.frames, before.frames)  # still upright


def test_replace_audio_errors(tmp_path: Path) -> None:
    audio = np.zeros(SR, np.float32)
    missing = tmp_path / "nope.mp4"
    err = errors_of(io.replace_audio, missing, tmp_path / "out.mp4", audio)
    assert err.problem == "no such file" and str(missing) in str(err)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all\n" * 10)
    assert errors_of(io.replace_audio, junk, tmp_path / "out.mp4", audio).problem == "not a readable media file"
    sound = tmp_path / "sound.wav"
    io.write_av(sound, None, 25, audio)
    err = errors_of(io.replace_audio, sound, tmp_path / "out.mp4", audio)
    assert err.problem == "no video stream" and str(sound) in str(err)

    src = tmp_path / "src.mp4"
    io.write_av(src, flat_frames(10), 25, audio)
    err = errors_of(io.replace_audio, src, tmp_path / "out.webm", audio)  # WebM holds VP8/VP9/AV1 only
    assert "cannot hold h264 video" in err.problem and str(tmp_path / "out.webm") in str(err)
    err = errors_of(io.replace_audio, src, tmp_path / "out.mkv", np.zeros((2, 3, 4), np.float32))
    assert "audio must be" in err.problem
    assert "unknown audio codec" in errors_of(io.replace_audio, src, tmp_path / "out.mkv", audio,
                                              audio_codec="nope").problem
    bframes = tmp_path / "bframes.avi"  # AVI keeps decode times only: B-frames' display order is lost
    write_h264(bframes, flat_frames(10), stream_options={"bf": "3", "preset": "veryfast"})
    err = errors_of(io.replace_audio, bframes, tmp_path / "out.mp4", audio)
    assert "B-frames" in err.problem and str(bframes) in str(err)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["bframes.avi", "junk.mp4", "sound.wav", "src.mp4"]  # nothing half-written
