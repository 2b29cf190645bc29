"""Reading and writing audio-visual media: the only module that touches codecs (PyAV).

Everything downstream sees plain numpy arrays on one clock:

* video frames ``uint8 (T, H, W, 3)`` RGB at the file's native rate, with the
  presentation time of every frame in seconds (``timestamps``, ``(T,)``);
* audio ``float32 (N,)`` mono in ``[-1, 1]`` resampled to ``sample_rate``
  (16 kHz by default), with ``audio_start`` the time of ``audio[0]``.

Time 0 is the start of the file (the container's start time), so a frame and an
audio sample with the same time are shown and heard together. Any container
FFmpeg reads works (mp4, mkv, webm, avi, mov, wav, flac, m4a, mp3, ...), as
does variable frame rate video; :func:`resample_indices`,
:func:`resample_video` and :func:`iter_frames_at` bring video to a constant
rate (25 fps for the models) by timestamp, at the edge of the toolkit.

:func:`write_av` encodes arrays into any of those containers;
:func:`replace_audio` gives a file new sound while copying its video stream
packet for packet, so the pictures stay bit-identical.

Ranges (``start``/``end`` in seconds, half-open ``[start, end)``) seek in the
file instead of decoding from the beginning, so a few seconds of a long
recording cost a few seconds of decoding and memory.

Bad input raises :class:`avsr.errors.InputError` naming the file and the
problem; it never hangs and never leaks a codec traceback.
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
import itertools
import logging
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterator

import av
import numpy as np

from avsr.errors import InputError
from avsr.utils import atomic_path

__all__ = [
    "SAMPLE_RATE",
    "AVClip",
    "probe",
    "read_av",
    "read_audio",
    "iter_audio",
    "iter_video_frames",
    "iter_frames_at",
    "resample_indices",
    "resample_video",
    "write_av",
    "replace_audio",
]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""Audio sample rate used throughout the toolkit (Hz)."""

_EPS = 1e-3
"""Tolerance (s) when comparing frame times: absorbs container time-base rounding
(e.g. Matroska's millisecond clock) and is far below any real frame interval."""

_REORDER_DEPTH = 16
"""Frames held back to repair out-of-order timestamps (H.264 allows 16 reordered frames)."""

_AUDIO_SEEK_MARGIN = 0.5
"""Seconds decoded before an audio range start so decoders (Opus, AAC) warm up."""

_MIN_FPS, _MAX_FPS = 0.01, 1000.0
"""Frame rates outside this range come from damaged headers and are ignored."""

_AUDIO_BLOCK = 4096
"""Samples handed to an audio encoder at a time when writing."""

_MEDIA_ERRORS = (av.FFmpegError, OSError, ValueError, EOFError, UnicodeDecodeError)


# --------------------------------------------------------------------------- clip


@dataclass
class AVClip:
    """Decoded audio and video of one file (or one time range of it).

    Attributes:
        path: the file it came from.
        frames: ``uint8 (T, H, W, 3)`` RGB frames at the native rate, or ``None``
            when the file has no video stream or video was not requested.
        timestamps: ``float64 (T,)`` presentation time of each frame in seconds,
            relative to the start of the file (not of the requested range).
        fps: nominal (average) frame rate of the video stream, or ``None``.
        audio: ``float32 (N,)`` mono samples in ``[-1, 1]`` at ``sample_rate``, or
            ``None`` when the file has no audio stream or audio was not requested.
        sample_rate: audio sample rate in Hz.
        audio_start: time in seconds of ``audio[0]``, on the same clock as ``timestamps``.
    """

    path: str
    frames: np.ndarray | None
    timestamps: np.ndarray | None
    fps: float | None
    audio: np.ndarray | None
    sample_rate: int
    audio_start: float = 0.0

    @property
    def duration(self) -> float:
        """Seconds covered by the clip: from the first frame/sample to the end of the last (0 if empty)."""
        spans = []
        if self.frames is not None and self.timestamps is not None and len(self.timestamps):
            ts = self.timestamps
            spans.append((float(ts[0]), float(ts[-1]) + _frame_interval(ts, self.fps)))
        if self.audio is not None and len(self.audio):
            spans.append((self.audio_start, self.audio_start + len(self.audio) / float(self.sample_rate)))
        if not spans:
            return 0.0
        return max(e for _, e in spans) - min(s for s, _ in spans)


def _frame_interval(timestamps: np.ndarray, fps: float | None) -> float:
    """Typical frame duration of a clip: mean interval, else ``1/fps``, else 0.

    Args:
        timestamps: ``(T,)`` frame times in seconds.
        fps: nominal frame rate, used when fewer than two frames are known.

    Returns:
        Duration of one frame in seconds.
    """
    if len(timestamps) > 1:
        return float(timestamps[-1] - timestamps[0]) / (len(timestamps) - 1)
    return 1.0 / fps if fps else 0.0


# ------------------------------------------------------------------ opening files


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    """Open ``path`` for reading, turning every failure into :class:`InputError`.

    Args:
        path: media file.

    Returns:
        An open PyAV input container with at least one audio or video stream.

    Raises:
        InputError: missing, empty, unreadable or stream-less file.
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise InputError(p, "no such file")
    if os.path.isdir(p):
        raise InputError(p, "is a directory, not a media file")
    if not os.path.isfile(p):  # a pipe or device: probing it could block forever
        raise InputError(p, "not a regular file")
    if os.path.getsize(p) == 0:
        raise InputError(p, "empty file")
    try:
        container = av.open(p, mode="r", metadata_errors="ignore")
    except PermissionError:
        raise InputError(p, "permission denied") from None
    except _MEDIA_ERRORS:
        raise InputError(p, "not a readable media file") from None
    if not container.streams.video and not container.streams.audio:
        container.close()
        raise InputError(p, "no audio or video streams")
    if _stream_of(container, "video") is None and _stream_of(container, "audio") is None:
        container.close()
        raise InputError(p, "no audio or video stream in a codec this FFmpeg build can decode")
    return container


def _stream_of(container: av.container.InputContainer, kind: str) -> av.stream.Stream | None:
    """First ``"video"`` or ``"audio"`` stream that has a usable decoder, or ``None``."""
    streams = container.streams.video if kind == "video" else container.streams.audio
    for stream in streams:
        cc = stream.codec_context
        if cc is not None and cc.codec is not None:
            return stream
    return None


def _origin(container: av.container.InputContainer) -> float:
    """Time (s, container clock) that the toolkit calls 0: the container's start time."""
    start = container.start_time
    return start / av.time_base if start is not None else 0.0


def _stream_fps(stream: av.video.stream.VideoStream) -> float | None:
    """Nominal frame rate of a video stream, or ``None`` when the file does not say."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and _MIN_FPS <= float(rate) <= _MAX_FPS:  # outside: a damaged header
            return float(rate)
    return None


def _container_duration(container: av.container.InputContainer) -> float | None:
    """Duration of the file in seconds, or ``None`` when unknown."""
    return container.duration / av.time_base if container.duration else None


def _check_range(path: str, start: float | None, end: float | None) -> None:
    """Reject negative or empty time ranges.

    Raises:
        InputError: ``start < 0``, ``end <= 0`` or ``start >= end``.
    """
    if start is not None and (not math.isfinite(start) or start < 0):
        raise InputError(path, f"bad start time {start!r} (must be >= 0)")
    if end is not None and (math.isnan(end) or end <= 0):
        raise InputError(path, f"bad end time {end!r} (must be > 0)")
    if start is not None and end is not None and start >= end:
        raise InputError(path, f"empty time range: start {start:g} >= end {end:g}")


# -------------------------------------------------------------------------- probe


def probe(path: str | os.PathLike) -> dict:
    """Describe a media file without decoding it.

    Args:
        path: media file.

    Returns:
        A dict with keys ``path``, ``format`` (demuxer name), ``duration`` (s or
        ``None``), ``has_video``, ``has_audio``, ``video`` and ``audio``. ``video``
        is ``None`` or a dict with ``codec``, ``width``, ``height``, ``fps``,
        ``frames`` (count, ``None`` when the container does not store it),
        ``duration`` and ``pix_fmt`` (sizes as stored, before any display rotation).
        ``audio`` is ``None`` or a dict with ``codec``, ``sample_rate``,
        ``channels`` and ``duration``.

    Raises:
        InputError: the file is missing or not readable media.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "demo.mkv")
        >>> write_av(path, np.zeros((30, 48, 64, 3), np.uint8), 30000 / 1001)
        >>> info = probe(path)
        >>> info["video"]["codec"], info["video"]["width"], round(info["video"]["fps"], 2), info["audio"]
        ('h264', 64, 29.97, None)
        >>> import shutil; shutil.rmtree(os.path.dirname(path))
    """
    p = os.fspath(path)
    container = _open(p)
    try:
        duration = _container_duration(container)
        video = audio = None
        vs = _stream_of(container, "video")
        if vs is not None:
            cc = vs.codec_context
            video = {
                "codec": _codec_name(cc),
                "width": cc.width,
                "height": cc.height,
                "fps": _stream_fps(vs),
                "frames": vs.frames or None,
                "duration": float(vs.duration * vs.time_base) if vs.duration and vs.time_base else duration,
                "pix_fmt": cc.pix_fmt,
            }
        st = _stream_of(container, "audio")
        if st is not None:
            cc = st.codec_context
            audio = {
                "codec": _codec_name(cc),
                "sample_rate": cc.sample_rate,
                "channels": cc.channels,
                "duration": float(st.duration * st.time_base) if st.duration and st.time_base else duration,
            }
        return {
            "path": p,
            "format": container.format.name,
            "duration": duration,
            "has_video": video is not None,
            "has_audio": audio is not None,
            "video": video,
            "audio": audio,
        }
    finally:
        container.close()


def _codec_name(codec_context: av.codec.context.CodecContext) -> str:
    """Canonical codec name (``"mp3"``, not the decoder's ``"mp3float"``)."""
    codec = codec_context.codec
    return getattr(codec, "canonical_name", None) or codec.name


# ------------------------------------------------------------------ video decoding


def _apply_rotation(img: np.ndarray, rotation: float) -> np.ndarray:
    """Rotate a decoded frame as its display matrix asks (like FFmpeg's autorotate).

    Args:
        img: ``(H, W, 3)`` frame.
        rotation: degrees counter-clockwise (PyAV ``VideoFrame.rotation``).

    Returns:
        The upright frame (``(W, H, 3)`` for quarter turns).
    """
    k = int(round(rotation / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(img, k=k)) if k else img


def _raw_video(
    path: str, start: float | None, end: float | None, *, from_keyframe: bool, rgb: bool = True
) -> Iterator[tuple[np.ndarray | av.VideoFrame, float]]:
    """Decode video frames in display order with repaired timestamps.

    Seeks to the keyframe at or before ``start`` (falling back to decoding from
    the beginning when the container's index overshoots) and stops once a frame
    at or after ``end`` has been decoded.

    Args:
        path: media file.
        start: first time of interest in seconds (``None``: file start).
        end: time (s) after which decoding stops (``None``: end of file).
        from_keyframe: yield every frame from the seek point (including frames
            before ``start``) instead of only frames with time ``>= start``.
        rgb: convert frames to arrays (else yield the decoded ``av.VideoFrame``
            so the caller converts only the frames it keeps).

    Yields:
        ``(frame, t)``: ``uint8 (H, W, 3)`` RGB frame (or ``av.VideoFrame``) and
        its time in seconds.

    Raises:
        InputError: unreadable file, no video stream, or nothing decodable.
    """
    seek = start is not None and start > 0
    for attempt in (0, 1):
        container = _open(path)
        try:
            vs = _stream_of(container, "video")
            if vs is None:
                raise InputError(path, "no video stream")
            vs.thread_type = "AUTO"
            origin = _origin(container)
            fps = _stream_fps(vs)
            if seek and attempt == 0:
                _seek(container, vs, start + origin)
            checking = seek and attempt == 0  # verify the seek landed at or before `start`
            for frame, t in _timed_frames(path, container, vs, origin, fps):
                if checking:
                    if t > start + _EPS and _seekable_before(vs, origin, start):
                        break  # the index sent us past `start`: decode from the beginning instead
                    checking = False
                if end is not None and t >= end - _EPS:
                    return
                if from_keyframe or start is None or t >= start - _EPS:
                    yield (_to_rgb(frame) if rgb else frame), t  # skipped frames are never converted
            else:
                if not checking:
                    return
                # the seek landed after the last frame: decode from the beginning instead
        finally:
            container.close()
    return  # pragma: no cover - the second attempt always returns above


def _seekable_before(stream: av.stream.Stream, origin: float, start: float) -> bool:
    """Whether the stream begins before ``start`` (so an earlier frame must exist)."""
    if stream.start_time is None or stream.time_base is None:
        return True
    return float(stream.start_time * stream.time_base) - origin < start - _EPS


def _seek(container: av.container.InputContainer, stream: av.stream.Stream, t: float) -> None:
    """Seek ``stream`` to the keyframe at or before container time ``t`` (seconds)."""
    target = max(0, int(math.floor(t / stream.time_base))) if stream.time_base else 0
    try:
        container.seek(target, stream=stream, backward=True, any_frame=False)
    except av.FFmpegError:
        # unseekable (damaged index): decode from where the demuxer stands; callers
        # notice a position past `start` and decode from the beginning instead
        return


def _timed_frames(
    path: str,
    container: av.container.InputContainer,
    vs: av.video.stream.VideoStream,
    origin: float,
    fps: float | None,
) -> Iterator[tuple[av.VideoFrame, float]]:
    """Decode ``vs`` and yield frames with increasing times relative to ``origin``.

    Frames come out of the decoder in display order. Their times are repaired
    in two cases: a stream whose stamps arrive out of order gets them sorted
    back through a small reorder buffer, and AVI (which stores no presentation
    times, only a constant-rate chunk clock) gives the ``k``-th displayed frame
    the ``k``-th smallest packet clock, as players do. Missing stamps, and
    damaged ones far outside the file's time span, continue the latest one by one
    nominal frame interval. Frames are scaled to the first frame's size if the
    stream changes resolution midway.

    Yields:
        ``(frame, t)``: decoded frame (not yet converted) and seconds.
    """
    time_base = float(vs.time_base) if vs.time_base else 0.0
    slots: list[int] | None = [] if container.format.name == "avi" and time_base else None

    def on_packet(packet: av.Packet) -> None:
        if slots is not None and packet.size and packet.dts is not None:
            heapq.heappush(slots, packet.dts)

    pending: list[av.VideoFrame] = []  # decoded (YUV) frames whose time is not settled yet
    stamps: list[float] = []  # min-heap of the pending frames' times
    last = newest = None
    step = min(1.0 / fps, 1.0) if fps else 0.04
    duration = _container_duration(container)
    plausible = (origin - 1.0, origin + duration + 1.0 if duration else math.inf)
    size = None
    for frame in _decode(path, container, vs, on_packet):
        t = heapq.heappop(slots) * time_base if slots else frame.time
        if t is None or not plausible[0] <= t <= plausible[1]:  # missing, or damaged: far outside the file
            t = (newest + step) if newest is not None else origin
        newest = t if newest is None else max(newest, t)
        if size is None:
            size = (frame.width, frame.height)
        elif (frame.width, frame.height) != size:  # resolution switch (e.g. WebRTC recordings)
            frame = frame.reformat(width=size[0], height=size[1])
        pending.append(frame)
        heapq.heappush(stamps, t)
        if len(pending) > _REORDER_DEPTH:
            last = _next_time(heapq.heappop(stamps), last)
            yield pending.pop(0), last - origin
    while pending:
        last = _next_time(heapq.heappop(stamps), last)
        yield pending.pop(0), last - origin


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """``uint8 (H, W, 3)`` RGB of a decoded frame, turned upright per its display matrix."""
    # reformat() then to_ndarray() is ~4x faster than to_ndarray(format=...) in PyAV 18
    img = frame.reformat(format="rgb24").to_ndarray()
    rotation = getattr(frame, "rotation", 0) or 0
    return _apply_rotation(img, rotation) if rotation else img


def _next_time(t: float, last: float | None) -> float:
    """Keep times strictly increasing (duplicate stamps get a microsecond nudge)."""
    return t if last is None or t > last else last + 1e-6


def _decode(
    path: str,
    container: av.container.InputContainer,
    stream: av.stream.Stream,
    on_packet: Callable[[av.Packet], None] | None = None,
) -> Iterator[av.frame.Frame]:
    """Decode one stream, stopping cleanly at damaged data.

    A file that breaks off mid-way (truncated download) yields what could be
    decoded and logs a warning; a file where nothing at all decodes raises.

    Args:
        path: file name for messages.
        container: open input container.
        stream: the stream to decode.
        on_packet: called with each demuxed packet before it is decoded.

    Yields:
        Decoded frames in output order.

    Raises:
        InputError: the stream cannot be decoded at all.
    """
    produced = False
    try:
        for packet in container.demux(stream):
            if on_packet is not None:
                on_packet(packet)
            try:
                frames = packet.decode()
            except av.InvalidDataError:
                continue  # one damaged packet: skip it, as players do
            for frame in frames:
                produced = True
                yield frame
    except (av.FFmpegError, EOFError, MemoryError, IndexError) as err:
        # IndexError: PyAV cannot follow streams that appear mid-file (damaged MPEG-TS)
        if not produced:
            # FFmpeg's generic failure (-1) surfaces as PermissionError, which would mislead here
            what = "damaged data" if isinstance(err, PermissionError) else err.__class__.__name__
            raise InputError(path, f"cannot decode {stream.type} ({what})") from None
        logger.warning("%s: %s stream ends early (%s); keeping what was decoded", path, stream.type, err)


def iter_video_frames(
    path: str | os.PathLike, *, start: float | None = None, end: float | None = None
) -> Iterator[tuple[np.ndarray, float]]:
    """Stream the video frames of a file (or of ``[start, end)``) at the native rate.

    Seeks to the keyframe before ``start`` and decodes forward, dropping frames
    before ``start``; stops after ``end``. Never holds more than a few frames.

    Args:
        path: media file with a video stream.
        start: first time in seconds (``None``: file start).
        end: end time in seconds, exclusive (``None``: end of file).

    Yields:
        ``(frame, t)``: ``uint8 (H, W, 3)`` RGB frame and its time in seconds
        from the start of the file.

    Raises:
        InputError: bad file, no video stream, or a bad range.
    """
    p = os.fspath(path)
    _check_range(p, start, end)
    yield from _raw_video(p, start, end, from_keyframe=False)


def iter_frames_at(
    path: str | os.PathLike,
    fps: float = 25.0,
    *,
    start: float | None = None,
    end: float | None = None,
) -> Iterator[tuple[np.ndarray, float]]:
    """Stream the video of a file resampled to a constant frame rate.

    Output ``k`` has time ``t0 + k / fps`` (``t0 = start``, or the first frame's
    time) and shows the latest decoded frame whose time is ``<=`` that (within
    1 ms), or the first frame before the video begins. Works for variable frame
    rate input. The number of outputs is ``round(span * fps)`` where ``span``
    runs from ``t0`` to ``end`` or the end of the last frame, whichever is
    first; the same rule as :func:`resample_indices`.

    Args:
        path: media file with a video stream.
        fps: output frame rate.
        start: first output time in seconds (``None``: first frame).
        end: end of the covered span in seconds (``None``: end of the video).

    Yields:
        ``(frame, t)``: ``uint8 (H, W, 3)`` RGB frame and output time in seconds.

    Raises:
        InputError: bad file, no video stream, a start past the end of the
            video, or a bad range / rate.
    """
    p = os.fspath(path)
    _check_range(p, start, end)
    if not fps or fps <= 0:
        raise InputError(p, f"bad output frame rate {fps!r}")
    t0 = start
    k = 0  # index of the next output to decide
    prev: _Shown | None = None  # latest decoded frame
    ready: tuple[_Shown, float] | None = None  # decided output, yielded one step late
    first_t = last_t = None
    n_seen = 0
    limit: int | None = None  # number of outputs, when `end` fixes it
    for frame, t in _raw_video(p, start, None, from_keyframe=True, rgb=False):
        img = _Shown(frame)
        if first_t is None:  # the first frame fixes the output clock
            first_t = t
            t0 = t if t0 is None else t0
            limit = None if end is None else round((end - t0) * fps)
        last_t, n_seen = t, n_seen + 1
        while limit is None or k < limit:
            tk = t0 + k / fps
            if t <= tk + _EPS:
                break  # this frame (or a later one) is what output k shows
            if ready is not None:
                yield ready[0].rgb(), ready[1]
            ready = ((prev if prev is not None else img), tk)
            k += 1
        prev = img
        if limit is not None and k >= limit:
            break  # every output is decided; the span is exactly `limit` outputs
    if prev is None:
        raise InputError(p, "no video frames" if start is None else f"no video frames after {start:g} s")
    if limit is not None and k >= limit:
        total = limit
    else:
        interval = (last_t - first_t) / (n_seen - 1) if n_seen > 1 else 1.0 / fps
        video_end = last_t + interval
        if start is not None and start >= video_end - _EPS:
            raise InputError(p, f"start {start:g} s is past the end of the video ({video_end:.3f} s)")
        span_end = video_end if end is None else min(end, video_end)
        total = max(0, round((span_end - t0) * fps))
    if ready is not None and k - 1 < total:
        yield ready[0].rgb(), ready[1]
    while k < total:
        yield prev.rgb(), t0 + k / fps
        k += 1


class _Shown:
    """A decoded frame converted to RGB on first use (outputs may repeat it; skipped ones never pay)."""

    def __init__(self, frame: av.VideoFrame):
        self._frame: av.VideoFrame | None = frame
        self._rgb: np.ndarray | None = None

    def rgb(self) -> np.ndarray:
        """``uint8 (H, W, 3)`` RGB of the frame; repeats get their own copy, so callers may edit in place."""
        if self._rgb is None:
            self._rgb = _to_rgb(self._frame)
            self._frame = None
            return self._rgb
        return self._rgb.copy()


# --------------------------------------------------------------------- resampling


def resample_indices(
    timestamps: np.ndarray,
    fps: float = 25.0,
    *,
    t0: float | None = None,
    duration: float | None = None,
) -> np.ndarray:
    """Pick a source frame for each output frame of a constant-rate sequence.

    Output ``k`` has time ``t0 + k / fps`` and takes the latest source frame
    whose timestamp is ``<=`` that time (within 1 ms); output times before the
    first source frame take frame 0. Works for variable frame rate sources.

    Args:
        timestamps: ``(T,)`` increasing source frame times in seconds.
        fps: output frame rate.
        t0: time of output 0 (default ``timestamps[0]``).
        duration: covered span in seconds (default: from ``t0`` to the end of
            the last source frame, taking its length as the mean interval).

    Returns:
        ``int64 (round(duration * fps),)`` indices into the source frames.

    Example:
        >>> resample_indices(np.arange(6) / 30.0, 25.0).tolist()
        [0, 1, 2, 3, 4]
    """
    return _resample(timestamps, fps, t0, duration)[0]


def resample_video(
    frames: np.ndarray, timestamps: np.ndarray, fps: float = 25.0, **kw: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Resample frames to a constant rate by timestamp (see :func:`resample_indices`).

    Args:
        frames: ``(T, ...)`` frames (any per-frame shape, e.g. ``(T, H, W, 3)``
            images or ``(T, 478, 3)`` landmarks).
        timestamps: ``(T,)`` their times in seconds.
        fps: output frame rate.
        **kw: ``t0`` and ``duration``, as in :func:`resample_indices`.

    Returns:
        ``(frames_out, times_out)``: ``(T_out, ...)`` frames and ``float64
        (T_out,)`` output times ``t0 + k / fps``.
    """
    ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    if len(frames) != ts.size:
        raise ValueError(f"{len(frames)} frames but {ts.size} timestamps")
    idx, times = _resample(ts, fps, **kw)
    return np.asarray(frames)[idx], times


def _resample(
    timestamps: np.ndarray, fps: float, t0: float | None = None, duration: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The work of :func:`resample_indices` (same arguments), also giving the output times.

    Returns:
        ``(indices, times)``: ``int64 (T_out,)`` source frame of each output and
        ``float64 (T_out,)`` output times ``t0 + k / fps``.
    """
    ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if ts.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    start = float(ts[0]) if t0 is None else float(t0)
    if duration is None:
        duration = float(ts[-1]) + _frame_interval(ts, fps) - start
    n_out = max(0, int(round(duration * fps)))
    times = start + np.arange(n_out, dtype=np.float64) / fps
    idx = np.searchsorted(ts, times + _EPS, side="right") - 1
    return np.clip(idx, 0, ts.size - 1).astype(np.int64), times


# ------------------------------------------------------------------ audio decoding


def _iter_audio(
    path: str, start: float | None, end: float | None, sample_rate: int
) -> Iterator[tuple[np.ndarray, float]]:
    """Decode, downmix and resample the audio of ``[start, end)``.

    Args:
        path: media file.
        start: first time in seconds (``None``: file start).
        end: end time in seconds, exclusive (``None``: end of file).
        sample_rate: output rate in Hz.

    Yields:
        ``(chunk, t)``: ``float32 (n,)`` mono samples and the time of ``chunk[0]``.
        Chunks are contiguous and already trimmed to the range.

    Raises:
        InputError: unreadable file or no audio stream.
    """
    seek = start is not None and start > 0
    for attempt in (0, 1):
        container = _open(path)
        try:
            stream = _stream_of(container, "audio")
            if stream is None:
                raise InputError(path, "no audio stream")
            origin = _origin(container)
            checking = seek and attempt == 0  # verify the seek landed at or before `start`
            if checking:
                _seek(container, stream, max(0.0, start - _AUDIO_SEEK_MARGIN) + origin)
            frames = _decode(path, container, stream)
            first = next(frames, None)
            if first is None:
                if checking:
                    continue  # the seek landed after the last frame: decode from the beginning
                return
            clock = (first.time - origin) if first.time is not None else 0.0  # time of the next sample
            if checking and clock > start + _EPS and _seekable_before(stream, origin, start):
                continue  # the index sent us past `start`: decode from the beginning instead
            for out in _resampled(itertools.chain([first], frames), sample_rate):
                chunk, clock, done = _trim(out, clock, start, end, sample_rate)
                if chunk is not None:
                    yield chunk
                if done:
                    return
            return
        finally:
            container.close()


def _resampled(frames: Iterator[av.AudioFrame], sample_rate: int) -> Iterator[av.AudioFrame]:
    """Resample decoded frames to planar float at ``sample_rate``, keeping their channels.

    A new resampler is started (after flushing the old one) whenever the
    decoded format, channel count or rate changes midway, as broadcast
    recordings (and damaged files) do; one resampler fed mixed input would
    produce inconsistent frames.

    Args:
        frames: decoded audio frames.
        sample_rate: output rate in Hz.

    Yields:
        ``fltp`` frames at ``sample_rate``.
    """
    resampler = None
    signature = None
    for frame in frames:
        current = (frame.format.name, frame.layout.nb_channels, frame.sample_rate)
        if current != signature:
            if resampler is not None:
                yield from resampler.resample(None)
            resampler, signature = av.AudioResampler(format="fltp", rate=sample_rate), current
        yield from resampler.resample(frame)
    if resampler is not None:
        yield from resampler.resample(None)


def _trim(
    frame: av.AudioFrame, clock: float, start: float | None, end: float | None, sample_rate: int
) -> tuple[tuple[np.ndarray, float] | None, float, bool]:
    """Downmix one resampled frame and cut it to ``[start, end)``.

    Args:
        frame: resampled planar float frame.
        clock: time (s) of the frame's first sample.
        start: range start or ``None``.
        end: range end or ``None``.
        sample_rate: samples per second.

    Returns:
        ``((mono, t) or None, next_clock, done)`` where ``done`` says ``end`` was reached.
    """
    if len(frame.planes) != frame.layout.nb_channels:  # inconsistent frame (damaged data): silence
        mono = np.zeros(frame.samples, dtype=np.float32)
    else:
        data = frame.to_ndarray()
        mono = data.mean(axis=0, dtype=np.float32) if data.shape[0] > 1 else data.reshape(-1)
        mono = mono.astype(np.float32, copy=False)
    n = mono.size
    t_next = clock + n / sample_rate
    lo = 0
    if start is not None and clock < start:
        lo = min(n, int(round((start - clock) * sample_rate)))
    hi = n
    done = False
    if end is not None and t_next >= end:
        hi = max(lo, int(round((end - clock) * sample_rate)))
        done = True
    if hi <= lo:
        return None, t_next, done
    return (mono[lo:hi], clock + lo / sample_rate), t_next, done


def _read_audio_range(
    path: str, start: float | None, end: float | None, sample_rate: int
) -> tuple[np.ndarray, float]:
    """Concatenate :func:`_iter_audio` chunks.

    Returns:
        ``(audio, audio_start)``: ``float32 (N,)`` and the time of ``audio[0]``.
    """
    chunks: list[np.ndarray] = []
    t_first: float | None = None
    for chunk, t in _iter_audio(path, start, end, sample_rate):
        if t_first is None:
            t_first = t
        chunks.append(chunk)
    if not chunks:
        if start is None:
            raise InputError(path, "no audio samples")
        return np.zeros(0, dtype=np.float32), float(start)
    audio = np.clip(np.concatenate(chunks), -1.0, 1.0)
    return audio.astype(np.float32, copy=False), float(t_first) + 0.0  # no "-0.0"


def iter_audio(
    path: str | os.PathLike,
    *,
    start: float | None = None,
    end: float | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> Iterator[tuple[np.ndarray, float]]:
    """Stream the audio of a file (or of ``[start, end)``) as mono float32 chunks.

    Memory stays at a few decoded frames however long the file is; the chunks
    joined are what :func:`read_audio` returns.

    Args:
        path: media file with an audio stream.
        start: first time in seconds (``None``: file start).
        end: end time in seconds, exclusive (``None``: end of file).
        sample_rate: output rate in Hz.

    Yields:
        ``(chunk, t)``: ``float32 (n,)`` samples in ``[-1, 1]`` and the time in
        seconds of ``chunk[0]``; chunks are contiguous.

    Raises:
        InputError: bad file, no audio stream, or a bad range.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "tone.wav")
        >>> write_av(path, None, 25, np.zeros(16000, np.float32))
        >>> sum(len(c) for c, _ in iter_audio(path)), next(iter_audio(path))[1]
        (16000, 0.0)
        >>> import shutil; shutil.rmtree(os.path.dirname(path))
    """
    p = os.fspath(path)
    _check_range(p, start, end)
    for chunk, t in _iter_audio(p, start, end, int(sample_rate)):
        yield np.clip(chunk, -1.0, 1.0).astype(np.float32, copy=False), float(t) + 0.0


def read_audio(
    path: str | os.PathLike,
    *,
    start: float | None = None,
    end: float | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Read the audio of a file (any container) as mono float32.

    Args:
        path: media file with an audio stream.
        start: first time in seconds (``None``: file start).
        end: end time in seconds, exclusive (``None``: end of file).
        sample_rate: output rate in Hz.

    Returns:
        ``float32 (N,)`` samples in ``[-1, 1]``.

    Raises:
        InputError: bad file, no audio stream, or a bad range.
    """
    p = os.fspath(path)
    _check_range(p, start, end)
    return _read_audio_range(p, start, end, int(sample_rate))[0]


# -------------------------------------------------------------------- read_av


def read_av(
    path: str | os.PathLike,
    *,
    start: float | None = None,
    end: float | None = None,
    video: bool = True,
    audio: bool = True,
    sample_rate: int = SAMPLE_RATE,
) -> AVClip:
    """Decode the video and/or audio of a file (or of ``[start, end)``).

    Args:
        path: media file (any container FFmpeg reads).
        start: first time in seconds (``None``: file start). Seeks; does not
            decode from 0.
        end: end time in seconds, exclusive (``None``: end of file).
        video: decode the video stream (if the file has one).
        audio: decode the audio stream (if the file has one).
        sample_rate: audio output rate in Hz.

    Returns:
        An :class:`AVClip`. ``frames`` / ``audio`` are ``None`` when the file has
        no such stream or it was not requested; a range with no frames in it
        gives ``(0, H, W, 3)`` frames.

    Raises:
        InputError: missing / empty / unreadable file, a video stream with no
            decodable frames, a start past the end of the file, or a bad range.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "demo.mp4")
        >>> write_av(path, np.zeros((50, 48, 64, 3), np.uint8), 25, np.zeros(32000, np.float32))
        >>> clip = read_av(path, start=0.4, end=1.2)
        >>> clip.frames.shape, clip.timestamps[0], clip.audio.shape, clip.audio_start
        ((20, 48, 64, 3), np.float64(0.4), (12800,), 0.4)
        >>> import shutil; shutil.rmtree(os.path.dirname(path))
    """
    p = os.fspath(path)
    _check_range(p, start, end)
    info = probe(p)
    if start is not None and info["duration"] and start >= info["duration"]:
        raise InputError(p, f"start {start:g} s is past the end of the file ({info['duration']:.3f} s)")
    frames = timestamps = fps = None
    if video and info["has_video"]:
        frames, timestamps = _read_frames(p, start, end, info["video"])
        fps = info["video"]["fps"]
        if fps is None and len(timestamps) > 1:  # header says nothing: measure it
            fps = 1.0 / _frame_interval(timestamps, None)
    samples = None
    audio_start = float(start or 0.0)
    if audio and info["has_audio"]:
        samples, audio_start = _read_audio_range(p, start, end, int(sample_rate))
    return AVClip(
        path=p,
        frames=frames,
        timestamps=timestamps,
        fps=fps,
        audio=samples,
        sample_rate=int(sample_rate),
        audio_start=audio_start,
    )


def _read_frames(
    path: str, start: float | None, end: float | None, vinfo: dict
) -> tuple[np.ndarray, np.ndarray]:
    """Decode all frames of a range into one array.

    Returns:
        ``(frames, timestamps)``: ``uint8 (T, H, W, 3)`` and ``float64 (T,)``.

    Raises:
        InputError: the stream has no decodable frames at all.
    """
    images: list[np.ndarray | None] = []
    times: list[float] = []
    for img, t in _raw_video(path, start, end, from_keyframe=False):
        images.append(img)
        times.append(t)
    if not images:
        if start is None and end is None:
            raise InputError(path, "no video frames")
        h, w = vinfo["height"], vinfo["width"]
        return np.zeros((0, h, w, 3), dtype=np.uint8), np.zeros(0, dtype=np.float64)
    out = np.empty((len(images),) + images[0].shape, dtype=np.uint8)
    for i in range(len(images)):  # move frame by frame: peak memory stays ~1x the clip, not 2x
        out[i] = images[i]
        images[i] = None
    return out, np.asarray(times, dtype=np.float64)


# ------------------------------------------------------------------------ writing

_AUDIO_CODECS = {
    "aac": ("aac",),
    "pcm": ("pcm_s16le",),
    "pcm_s16le": ("pcm_s16le",),
    "opus": ("libopus", "opus"),
    "vorbis": ("libvorbis", "vorbis"),
    "flac": ("flac",),
    "mp3": ("libmp3lame", "mp3"),
}
# Containers that cannot hold (or should not get) AAC: the default codec becomes theirs.
_DEFAULT_AUDIO_FOR = {
    ".webm": "opus",
    ".ogg": "opus",
    ".opus": "opus",
    ".wav": "pcm",
    ".avi": "pcm",  # AVI cannot signal AAC priming: PCM keeps audio and video in sync
    ".flac": "flac",
    ".mp3": "mp3",
}
_VIDEO_CODECS = {".webm": ("libvpx-vp9", "libvpx"), ".ogg": ("libtheora",)}
_H264 = ("libx264", "h264", "mpeg4")
_VIDEO_ENCODERS = {"h264": _H264, "vp9": ("libvpx-vp9",), "vp8": ("libvpx",), "mpeg4": ("mpeg4",)}


def _pick_encoder(names: tuple[str, ...]) -> str | None:
    """First of ``names`` that this FFmpeg build can encode with, or ``None``."""
    for name in names:
        try:
            av.codec.Codec(name, "w")
            return name
        except (av.FFmpegError, ValueError, KeyError):
            continue
    return None


def write_av(
    path: str | os.PathLike,
    frames: np.ndarray | None,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = SAMPLE_RATE,
    *,
    audio_codec: str = "aac",
    timestamps: np.ndarray | None = None,
    crf: int = 18,
    preset: str = "veryfast",
    gop: int | None = None,
    video_codec: str | None = None,
) -> None:
    """Write video and/or audio to a media file, atomically.

    The container follows the extension of ``path``. Video is H.264 ``yuv420p``
    (VP9 for ``.webm``); odd widths/heights are padded to even by repeating the
    last row/column. Audio is AAC by default; ``audio_codec="pcm"`` writes
    ``pcm_s16le`` (use ``.mkv``/``.mov``/``.avi``/``.wav``). Containers that
    cannot hold AAC get their natural codec when the default is left:
    ``.webm``/``.ogg`` -> Opus, ``.wav`` -> PCM, ``.flac`` -> FLAC, ``.mp3`` -> MP3,
    and ``.avi`` -> PCM (AVI cannot record AAC's encoder delay, which would put
    the sound ~60 ms late).

    Args:
        path: output file; its suffix picks the container.
        frames: ``uint8 (T, H, W, 3)`` RGB or ``(T, H, W)`` grayscale frames, or
            ``None`` for an audio-only file.
        fps: frame rate (nominal rate when ``timestamps`` are given).
        audio: ``(N,)`` mono or ``(N, C)`` float samples in ``[-1, 1]`` (or
            int16), or ``None`` for a video-only file.
        sample_rate: audio rate in Hz.
        audio_codec: ``"aac"``, ``"pcm"``, ``"opus"``, ``"vorbis"``, ``"flac"``,
            ``"mp3"`` or an FFmpeg encoder name.
        timestamps: ``(T,)`` increasing frame times in seconds for variable
            frame rate output; ``None`` writes frame ``i`` at ``i / fps``.
        crf: constant-quality factor for the video encoder (lower is better).
        preset: x264 speed preset.
        gop: keyframe interval in frames (``None``: encoder default, 250 for
            x264); smaller makes ranged reads of the file cheaper.
        video_codec: ``"h264"``, ``"vp9"``, ``"vp8"``, ``"mpeg4"`` or an FFmpeg
            encoder name (``None``: H.264, or VP9 for ``.webm``).

    Raises:
        InputError: nothing to write, malformed arrays, or a codec the container
            cannot hold (e.g. PCM in WebM).
    """
    p = os.fspath(path)
    ext = os.path.splitext(p)[1].lower()
    if frames is None and audio is None:
        raise InputError(p, "nothing to write (no frames and no audio)")
    video = _prepare_frames(p, frames, timestamps) if frames is not None else None
    samples = _prepare_audio(p, audio) if audio is not None else None
    if video is not None and (not fps or fps <= 0):
        raise InputError(p, f"bad frame rate {fps!r}")
    with atomic_path(p) as tmp:
        container = _open_output(tmp, p, ext)
        try:
            vstream = astream = None
            if video is not None:
                vstream = _add_video_stream(
                    p, container, ext, video.shape, fps, timestamps, crf, preset, gop, video_codec
                )
            if samples is not None:
                astream = _add_audio_stream(p, container, ext, audio_codec, sample_rate, samples.shape[1])
            streams = [s for s in (vstream, astream) if s is not None]
            _start_muxing(p, ext, container, [f"{s.codec_context.codec.name} {s.type}" for s in streams])
            try:
                _encode_all(container, vstream, video, timestamps, astream, samples, sample_rate)
            except av.FFmpegError as err:
                raise InputError(p, f"cannot encode into {ext or 'this'} container ({err})") from None
        finally:
            container.close()


def _open_output(tmp: str | os.PathLike, path: str, ext: str) -> av.container.OutputContainer:
    """Open the temporary file ``tmp`` for writing the container that ``ext`` names.

    Args:
        tmp: temporary file to write (its suffix picks the container).
        path: the final output file, for messages.
        ext: its suffix (lower case).

    Returns:
        An open PyAV output container.

    Raises:
        InputError: this FFmpeg build cannot write the container.
    """
    # AVI has a constant-rate chunk clock: shifting all streams to hide an audio
    # encoder's negative start (MP3 priming) would insert empty video frames.
    options = {"avoid_negative_ts": "disabled"} if ext == ".avi" else {}
    try:
        return av.open(os.fspath(tmp), mode="w", options=options)
    except _MEDIA_ERRORS as err:
        raise InputError(path, f"cannot write this container ({err})") from None


def _start_muxing(path: str, ext: str, container: av.container.OutputContainer, names: list[str]) -> None:
    """Open the encoders and write the header; the muxer refuses codecs it cannot hold here.

    Args:
        path: output file, for messages.
        ext: its suffix.
        container: output container with all its streams added.
        names: the streams, for messages (``"h264 video"``).

    Raises:
        InputError: the container cannot hold one of the streams' codecs.
    """
    try:
        container.start_encoding()
    except (av.FFmpegError, ValueError):
        raise InputError(path, f"{ext or 'this'} container cannot hold {' + '.join(names)}") from None


def _prepare_frames(path: str, frames: np.ndarray, timestamps: np.ndarray | None) -> np.ndarray:
    """Validate frames, make them RGB and pad odd sizes to even.

    Returns:
        ``uint8 (T, H', W', 3)`` with even ``H'``, ``W'``.
    """
    arr = np.asarray(frames)
    if arr.dtype != np.uint8:
        raise InputError(path, f"frames must be uint8, got {arr.dtype}")
    if arr.ndim == 3:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 4 or arr.shape[-1] != 3 or 0 in arr.shape:
        raise InputError(path, f"frames must be (T, H, W, 3) or (T, H, W), got {np.shape(frames)}")
    if timestamps is not None:
        ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        if ts.size != arr.shape[0]:
            raise InputError(path, f"{arr.shape[0]} frames but {ts.size} timestamps")
        if ts.size > 1 and not np.all(np.diff(ts) > 0):
            raise InputError(path, "timestamps must be strictly increasing")
        if ts[0] < -_EPS:  # tiny negatives are clock rounding and are clamped to 0
            raise InputError(path, "timestamps must be >= 0")
    pad_h, pad_w = arr.shape[1] % 2, arr.shape[2] % 2
    if pad_h or pad_w:
        arr = np.pad(arr, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return arr


def _prepare_audio(path: str, audio: np.ndarray) -> np.ndarray:
    """Validate audio and return ``float32 (N, C)`` clipped to ``[-1, 1]``."""
    arr = np.asarray(audio)
    if arr.dtype == np.int16:
        arr = arr.astype(np.float32) / 32768.0
    elif not np.issubdtype(arr.dtype, np.floating):
        raise InputError(path, f"audio must be float or int16, got {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] not in (1, 2) or arr.shape[0] == 0:
        raise InputError(path, f"audio must be (N,) or (N, 1|2) with N > 0, got {np.shape(audio)}")
    return np.clip(np.nan_to_num(arr.astype(np.float32)), -1.0, 1.0)


def _rate_fraction(fps: float) -> Fraction:
    """Exact-ish rational frame rate: 29.97002997 -> 30000/1001, 25.0 -> 25."""
    return Fraction(fps).limit_denominator(1001)


def _add_video_stream(
    path: str,
    container: av.container.OutputContainer,
    ext: str,
    shape: tuple[int, ...],
    fps: float,
    timestamps: np.ndarray | None,
    crf: int,
    preset: str,
    gop: int | None,
    video_codec: str | None,
) -> av.video.stream.VideoStream:
    """Add and configure the video stream (codec by container, CFR or VFR clock)."""
    if video_codec is None:
        codec = _pick_encoder(_VIDEO_CODECS.get(ext, _H264))
        if codec is None:
            raise InputError(path, f"no video encoder for {ext or 'this'} container")
    else:
        codec = _pick_encoder(_VIDEO_ENCODERS.get(video_codec.lower(), (video_codec,)))
        if codec is None:
            raise InputError(path, f"unknown video codec {video_codec!r}")
    rate = _rate_fraction(fps)
    stream = _add_stream(path, container, ext, codec, rate, "video")
    stream.width, stream.height = int(shape[2]), int(shape[1])
    stream.pix_fmt = "yuv420p"
    stream.codec_context.time_base = Fraction(1, 90000) if timestamps is not None else 1 / rate
    if gop is not None:
        stream.codec_context.gop_size = max(1, int(gop))
    if codec == "libx264":
        options = {"crf": str(int(crf)), "preset": preset}
        if ext == ".avi":
            options["bf"] = "0"  # AVI stores no presentation times: keep decode order = display order
        stream.options = options
    elif codec.startswith("libvpx"):
        stream.options = {"crf": str(int(crf)), "b": "0", "deadline": "realtime", "cpu-used": "8"}
    elif codec == "mpeg4":  # no CRF: cap the quantiser instead (crf 18 -> q <= 3)
        stream.options = {"qmin": "1", "qmax": str(max(2, int(crf) // 6))}
    return stream


def _add_stream(
    path: str,
    container: av.container.OutputContainer,
    ext: str,
    encoder: str,
    rate: Fraction | int,
    kind: str,
) -> av.stream.Stream:
    """``container.add_stream`` with the muxer's refusal turned into :class:`InputError`."""
    try:
        return container.add_stream(encoder, rate=rate)
    except (av.FFmpegError, ValueError):
        name = av.codec.Codec(encoder, "w").name
        raise InputError(path, f"{ext or 'this'} container cannot hold {name} {kind}") from None


def _add_audio_stream(
    path: str,
    container: av.container.OutputContainer,
    ext: str,
    audio_codec: str,
    sample_rate: int,
    channels: int,
) -> av.audio.stream.AudioStream:
    """Add the audio stream, choosing a rate the encoder supports."""
    choice = audio_codec.lower()
    if choice == "aac" and ext in _DEFAULT_AUDIO_FOR:
        choice = _DEFAULT_AUDIO_FOR[ext]
    encoder = _pick_encoder(_AUDIO_CODECS.get(choice, (choice,)))
    if encoder is None:
        raise InputError(path, f"unknown audio codec {audio_codec!r}")
    rates = av.codec.Codec(encoder, "w").audio_rates
    rate = int(sample_rate)
    if rates and rate not in rates:
        rate = min((r for r in rates if r >= rate), default=max(rates))
    stream = _add_stream(path, container, ext, encoder, rate, "audio")
    stream.layout = "mono" if channels == 1 else "stereo"
    if encoder == "vorbis":  # FFmpeg's own Vorbis encoder: experimental and stereo-only
        stream.layout = "stereo"
        stream.options = {"strict": "experimental"}
    return stream


def _encode_all(
    container: av.container.OutputContainer,
    vstream: av.video.stream.VideoStream | None,
    frames: np.ndarray | None,
    timestamps: np.ndarray | None,
    astream: av.audio.stream.AudioStream | None,
    samples: np.ndarray | None,
    sample_rate: int,
) -> None:
    """Encode video frames and audio blocks in time order (well interleaved), then flush.

    Args:
        container: output container.
        vstream: video stream or ``None``.
        frames: ``uint8 (T, H, W, 3)`` or ``None``.
        timestamps: ``(T,)`` seconds for VFR output, or ``None`` (frame ``i`` at ``i / fps``).
        astream: audio stream or ``None``.
        samples: ``float32 (N, C)`` or ``None``.
        sample_rate: rate of ``samples`` in Hz.
    """
    v_pts: np.ndarray = np.zeros(0, dtype=np.int64)
    v_times: np.ndarray = np.zeros(0)
    if vstream is not None and frames is not None:
        time_base = vstream.codec_context.time_base
        if timestamps is not None:
            ticks = np.round(np.asarray(timestamps, dtype=np.float64) / float(time_base)).astype(np.int64)
            # clamp to >= 0 and keep strictly increasing after rounding to the clock
            v_pts = np.maximum(ticks, 0) - np.arange(len(ticks))
            v_pts = np.maximum.accumulate(v_pts) + np.arange(len(ticks))
        else:
            v_pts = np.arange(frames.shape[0], dtype=np.int64)
        v_times = v_pts * float(time_base)
    audio = _AudioFeed(container, astream, samples, sample_rate) if astream is not None else None
    for i in range(len(v_pts)):
        if audio is not None:
            audio.until(v_times[i])
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
        frame.pts = int(v_pts[i])
        frame.time_base = vstream.codec_context.time_base
        container.mux(vstream.encode(frame))
    if audio is not None:
        audio.until(math.inf)
    if vstream is not None:
        container.mux(vstream.encode(None))
    if astream is not None:
        container.mux(astream.encode(None))


class _AudioFeed:
    """Encodes audio into its stream block by block as the video clock passes it, so the streams interleave.

    Args:
        container: output container.
        stream: the audio stream to encode into.
        samples: ``float32 (N, C)`` samples (``N > 0``).
        sample_rate: rate of ``samples`` in Hz.
        lead: time of ``samples[0]`` in samples of ``sample_rate`` (0: the file's start).
    """

    def __init__(
        self,
        container: av.container.OutputContainer,
        stream: av.audio.stream.AudioStream,
        samples: np.ndarray,
        sample_rate: int,
        lead: int = 0,
    ):
        self._container, self._stream, self._samples = container, stream, samples
        self._rate, self._lead = int(sample_rate), lead
        self._layout = "mono" if samples.shape[1] == 1 else "stereo"
        self._offset = 0  # index of the first sample not encoded yet

    def until(self, t: float) -> None:
        """Encode every block that starts at or before ``t`` seconds (``math.inf``: all that are left).

        PyAV converts each block to the encoder's format and rate.
        """
        while self._offset < self._samples.shape[0] and (self._offset + self._lead) / self._rate <= t:
            data = np.ascontiguousarray(self._samples[self._offset : self._offset + _AUDIO_BLOCK].T)
            frame = av.AudioFrame.from_ndarray(data, format="fltp", layout=self._layout)
            frame.sample_rate = self._rate
            frame.pts = self._offset + self._lead
            frame.time_base = Fraction(1, self._rate)
            self._container.mux(self._stream.encode(frame))
            self._offset += _AUDIO_BLOCK


# ------------------------------------------------------------------ replacing audio


def replace_audio(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    *,
    audio_codec: str = "aac",
    audio_start: float | None = None,
) -> None:
    """Write ``dst``: the video stream of ``src`` untouched, with ``audio`` as its sound, atomically.

    The video is stream-copied (remuxed packet by packet, never decoded or
    re-encoded), so every decoded frame of ``dst`` is bit-identical to the
    same frame of ``src``, at the same time. Only the new audio is encoded,
    as :func:`write_av` does (AAC by default; containers that cannot hold AAC
    get their natural codec). Other streams of ``src`` (its old audio,
    subtitles, data) are not copied. ``dst`` may be ``src`` itself: the file
    is replaced only once the new one is complete.

    Times follow :func:`read_av`'s clock (0 = the start of the file), and by
    default ``audio[0]`` plays when the old audio's first sample did (the
    ``audio_start`` that :func:`read_av` reports for ``src``; 0 when ``src``
    has no audio), so audio edited on the clock it was read on stays in sync
    with the pictures. Samples placed before time 0 are dropped.

    Args:
        src: media file with a video stream.
        dst: output file; its suffix picks the container (it may differ from ``src``'s).
        audio: ``(N,)`` mono or ``(N, C)`` float samples in ``[-1, 1]`` (or int16).
        sample_rate: rate of ``audio`` in Hz.
        audio_codec: as in :func:`write_av`.
        audio_start: time in seconds of ``audio[0]``; ``None``: where ``src``'s audio starts.

    Raises:
        InputError: ``src`` missing, unreadable or without a video stream; malformed
            audio; or a ``dst`` container that cannot hold the video or audio codec.

    Example:
        >>> import os, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> src, dst = os.path.join(folder, "a.mp4"), os.path.join(folder, "b.mkv")
        >>> frames = np.random.default_rng(0).integers(0, 256, (10, 48, 64, 3), dtype=np.uint8)
        >>> write_av(src, frames, 25, np.zeros(6400, np.float32))
        >>> replace_audio(src, dst, np.full(6400, 0.1, np.float32))
        >>> a, b = read_av(src), read_av(dst)
        >>> bool(np.array_equal(a.frames, b.frames)), probe(dst)["audio"]["codec"]
        (True, 'aac')
        >>> import shutil; shutil.rmtree(folder)
    """
    source, target = os.fspath(src), os.fspath(dst)
    ext = os.path.splitext(target)[1].lower()
    samples = _prepare_audio(target, audio)
    if not sample_rate or sample_rate <= 0:
        raise InputError(target, f"bad sample rate {sample_rate!r}")
    start = _audio_start_of(source) if audio_start is None else float(audio_start)
    if not math.isfinite(start):
        raise InputError(target, f"bad audio start {audio_start!r}")
    lead = int(round(start * sample_rate))
    if lead < 0:  # samples before the start of the file cannot be placed
        samples = samples[-lead:]
        lead = 0
        if not len(samples):
            raise InputError(target, "all of the audio lies before the start of the file")
    container = _open(source)
    try:
        vs = _stream_of(container, "video")  # the stream read_av decodes
        if vs is None:
            raise InputError(source, "no video stream")
        with atomic_path(target) as tmp:
            out = _open_output(tmp, target, ext)
            try:
                _remux_with_audio(source, target, ext, container, vs, out, samples, int(sample_rate), lead,
                                  audio_codec)
            except BaseException:
                with contextlib.suppress(*_MEDIA_ERRORS):
                    out.close()
                raise
            try:
                out.close()  # writes the trailer
            except _MEDIA_ERRORS as err:
                raise InputError(target, f"cannot finish the {ext or 'output'} file ({err})") from None
            _check_copy(tmp, target, ext, vs)
    finally:
        container.close()


def _check_copy(written: str | os.PathLike, target: str, ext: str, vs: av.video.stream.VideoStream) -> None:
    """Make sure the written file shows a video and an audio stream again (from its header only).

    Some muxers (MPEG-TS with VP9, say) accept a codec they cannot label, so
    the copy would look video-less to every reader.

    Raises:
        InputError: the written file hides its video or audio stream.
    """
    codec = _codec_name(vs.codec_context)
    try:
        container = _open(written)
    except InputError:
        raise InputError(target, f"{ext or 'this'} container cannot hold {codec} video") from None
    try:
        if _stream_of(container, "video") is None or _stream_of(container, "audio") is None:
            raise InputError(target, f"{ext or 'this'} container cannot hold {codec} video")
    finally:
        container.close()


def _audio_start_of(path: str) -> float:
    """Time (s, :func:`read_av`'s clock) of the first audio sample of ``path``; 0 without audio.

    Decodes only the first audio frame, as :func:`read_av` times it; a stream
    that cannot be decoded falls back to its stated start time.

    Raises:
        InputError: missing or unreadable file.
    """
    container = _open(path)
    try:
        stream = _stream_of(container, "audio")
        if stream is None:
            return 0.0
        origin = _origin(container)
        try:
            first = next(_decode(path, container, stream), None)
        except InputError:
            first = None
        if first is not None and first.time is not None:
            return float(first.time) - origin
        if stream.start_time is not None and stream.time_base:
            return float(stream.start_time * stream.time_base) - origin
        return 0.0
    finally:
        container.close()


def _remux_with_audio(
    source: str,
    target: str,
    ext: str,
    container: av.container.InputContainer,
    vs: av.video.stream.VideoStream,
    out: av.container.OutputContainer,
    samples: np.ndarray,
    sample_rate: int,
    lead: int,
    audio_codec: str,
) -> None:
    """Copy ``vs``'s packets into ``out`` and encode ``samples`` beside them, in time order.

    Every time is moved by the source's start time, so the output starts at 0
    (as ``ffmpeg -c:v copy`` does) and :func:`read_av` reads the same frame times.

    Args:
        source: input file name, for messages.
        target: output file name, for messages.
        ext: output suffix (lower case).
        container: open input container.
        vs: its video stream.
        out: open output container.
        samples: ``float32 (N, C)`` audio.
        sample_rate: rate of ``samples`` in Hz.
        lead: time of ``samples[0]`` in samples (>= 0).
        audio_codec: requested audio codec.

    Raises:
        InputError: ``out`` cannot hold the codecs, or the source's video packets cannot be read.
    """
    codec = _codec_name(vs.codec_context)
    vout, annexb = _add_copied_stream(target, ext, out, vs)
    aout = _add_audio_stream(target, out, ext, audio_codec, sample_rate, samples.shape[1])
    _start_muxing(target, ext, out, [f"{codec} video", f"{aout.codec_context.codec.name} audio"])
    time_base = float(vs.time_base) if vs.time_base else 0.0
    audio = _AudioFeed(out, aout, samples, sample_rate, lead)
    packets = _copied_packets(source, container, vs, display_clock=ext == ".avi")
    copied = 0
    try:
        for packet in (packets if annexb is None else _filtered(packets, annexb)):
            copied += 1
            audio.until(packet.dts * time_base)
            packet.stream = vout
            out.mux(packet)
        if not copied:
            raise InputError(source, "no video frames")
        audio.until(math.inf)
        out.mux(aout.encode(None))
    except av.FFmpegError as err:
        raise InputError(target, f"cannot write {codec} video into {ext or 'this'} container ({err})") from None


def _add_copied_stream(
    target: str, ext: str, out: av.container.OutputContainer, vs: av.video.stream.VideoStream
) -> tuple[av.video.stream.VideoStream, av.BitStreamFilterContext | None]:
    """Add a stream-copy twin of ``vs`` to ``out``.

    Args:
        target: output file name, for messages.
        ext: output suffix (lower case).
        out: output container.
        vs: the source's video stream.

    Returns:
        ``(stream, filter)``: the new stream, and the bitstream filter its packets
        must pass through first (``None`` when they go in as they are).

    Raises:
        InputError: the container cannot hold the codec.
    """
    codec = _codec_name(vs.codec_context)
    try:
        vout = out.add_stream_from_template(vs)
    except (av.FFmpegError, ValueError):
        raise InputError(target, f"{ext or 'this'} container cannot hold {codec} video") from None
    annexb = None
    if ext == ".avi":
        if vs.average_rate:  # AVI's chunk clock must tick once per frame
            vout.time_base = 1 / Fraction(vs.average_rate)
        extradata = vs.codec_context.extradata
        if codec in ("h264", "hevc") and extradata and extradata[0] == 1:
            # AVI holds start-code streams; MP4, MOV and MKV hold length-prefixed ones
            annexb = av.BitStreamFilterContext(f"{codec}_mp4toannexb", vs, vout)
    return vout, annexb


def _filtered(packets: Iterator[av.Packet], bsf: av.BitStreamFilterContext) -> Iterator[av.Packet]:
    """Run packets through a bitstream filter, keeping their times and time base."""
    time_base = None
    for packet in packets:
        time_base = packet.time_base  # read first: the filter takes the packet's contents
        for out in bsf.filter(packet):
            out.time_base = time_base
            yield out
    for out in bsf.filter(None):
        out.time_base = time_base
        yield out


def _copied_packets(
    source: str, container: av.container.InputContainer, vs: av.video.stream.VideoStream, display_clock: bool
) -> Iterator[av.Packet]:
    """Demux ``vs`` for stream copy: times moved to start at 0 and every packet given a decode time.

    Containers that store only presentation times (Matroska, for streams with
    B-frames) leave the first packets' decode time (``dts``) unset; muxers
    need it. It is rebuilt as FFmpeg does: the smallest of the last
    ``reorder depth + 1`` presentation times, which is never later than the
    packet's own. Packets without a presentation time take their decode time.

    Args:
        source: input file name, for messages.
        container: open input container.
        vs: the video stream to copy.
        display_clock: give the ``k``-th packet the ``k``-th smallest presentation
            time as both times, for AVI: it stores one clock only, and readers
            (:func:`read_av` included) show the ``k``-th frame at its ``k``-th tick.

    Yields:
        Packets of ``vs`` in decode order (the demuxer's final empty packet left out).

    Raises:
        InputError: the packets cannot be read.
    """
    time_base = float(vs.time_base) if vs.time_base else 0.0
    shift = int(round(_origin(container) / time_base)) if time_base else 0
    depth = max(0, int(vs.codec_context.reorder_depth))
    fps = _stream_fps(vs)
    single_clock = container.format.name == "avi"  # its demuxer's presentation times are made up
    if single_clock and depth:
        raise InputError(source, "AVI with B-frames records no display times: its video cannot be copied")
    recent: list[int] | None = None  # sorted: the last depth + 1 presentation times
    held: list[av.Packet] = []  # display_clock: packets waiting for their tick
    ticks: list[int] = []  # display_clock: min-heap of the held packets' presentation times
    last_dts: int | None = None
    try:
        for packet in container.demux(vs):
            if packet.size == 0 and packet.pts is None and packet.dts is None:
                continue  # the demuxer's end-of-stream marker
            if single_clock:
                packet.pts = None
            if packet.pts is not None:
                if recent is None:  # start as if earlier frames had come at the nominal rate
                    step = packet.duration or (int(round(1 / (fps * time_base))) if fps and time_base else 1)
                    recent = [packet.pts - (depth - i) * step for i in range(depth)]
                if len(recent) > depth:
                    del recent[0]
                bisect.insort(recent, packet.pts)
                if packet.dts is None:
                    packet.dts = recent[0]
            elif packet.dts is not None:
                packet.pts = packet.dts
            else:
                continue  # no time at all: nothing a muxer could place
            if last_dts is not None and packet.dts <= last_dts:
                packet.dts = last_dts + 1
            last_dts = packet.dts
            packet.dts -= shift
            packet.pts -= shift
            if not display_clock:
                yield packet
                continue
            held.append(packet)
            heapq.heappush(ticks, packet.pts)
            if len(held) > depth:
                yield _on_tick(held.pop(0), heapq.heappop(ticks))
        while held:
            yield _on_tick(held.pop(0), heapq.heappop(ticks))
    except (av.FFmpegError, EOFError, IndexError) as err:
        raise InputError(source, f"cannot read the video packets ({err.__class__.__name__})") from None


def _on_tick(packet: av.Packet, tick: int) -> av.Packet:
    """Set both times of ``packet`` to ``tick`` (a single-clock container's slot)."""
    packet.dts = packet.pts = tick
    return packet
