"""Lip-region frontend: video frames -> aligned grayscale mouth crops at 25 fps.

Pipeline (plain numpy + OpenCV + mediapipe, no torch):

1. resample the video to a constant ``fps`` by timestamp (VFR-safe),
2. face landmarks per kept frame (:mod:`avsr.vision.landmarks`),
3. fill frames without a face by interpolation, smooth over time
   (:mod:`avsr.vision.align`),
4. one affine warp per frame: similarity to a fixed face layout composed
   with a mouth-centred crop (:mod:`avsr.vision.mouth`).

Where and how large the mouth is cut, and how the landmarks are smoothed, is
a named *crop preset* (:mod:`avsr.vision.presets`, ``preset=`` below):
``"avsr"`` (default) is this project's own layout, the one its models were
trained on; ``"auto_avsr"`` reproduces Auto-AVSR's mouth crop (their mean
face, 8 stable points, 96 x 96 window around the lips at the mean face's
scale, 13-frame smoothing), the input their public LRS3 models expect. Both
give ``uint8 (T, 96, 96)`` gray crops at 25 fps.

Example (a still photo shown for five frames; ``extract_mouths_from_file``
does the same straight from a video file):
    >>> import os, cv2, numpy as np, avsr
    >>> photo = os.path.join(os.path.dirname(avsr.__file__), "data/synth/assets/astronaut.jpg")
    >>> face = cv2.cvtColor(cv2.imread(photo), cv2.COLOR_BGR2RGB)
    >>> track = extract_mouths(np.stack([face] * 5), fps=25.0)
    >>> track.mouths.shape, track.mouths.dtype.name, bool(track.found.all()), track.fps
    ((5, 96, 96), 'uint8', True, 25.0)
"""

from __future__ import annotations

import errno
import os
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from avsr.errors import InputError, NoFaceError
from avsr.vision.align import fill_gaps, similarity_transform, smooth
from avsr.vision.landmarks import LandmarkDetector, detect_landmarks, detector_for_video
from avsr.vision.mouth import MouthCropper, center_crop, random_crop
from avsr.vision.presets import DEFAULT_PRESET, PRESETS, CropPreset, get_preset

__all__ = [
    "MouthTrack",
    "extract_mouths",
    "extract_mouths_from_file",
    "save_mouths",
    "load_mouths",
    "save_preview",
    "check_output",
    "LandmarkDetector",
    "detect_landmarks",
    "fill_gaps",
    "smooth",
    "similarity_transform",
    "center_crop",
    "random_crop",
    "CropPreset",
    "PRESETS",
    "get_preset",
]


@dataclass
class MouthTrack:
    """Mouth crops of one video at a constant frame rate.

    Attributes:
        mouths: ``uint8 (T, size, size)`` grayscale crops.
        found: ``bool (T,)``, a face was detected on the frame (the crops of
            the other frames come from interpolated landmarks).
        fps: frame rate of ``mouths``.
        landmarks: ``float32 (T, 468, 2)`` face landmarks after gap filling,
            in pixel coordinates of the resampled frames, or ``None`` (e.g.
            after :func:`load_mouths`).
        transforms: ``float32 (T, 2, 3)`` affine maps from frame pixels to
            crop pixels (what produced each crop), or ``None``.
        preset: name of the crop preset that cut the crops (files written
            before presets existed load as ``"avsr"``, the only geometry then).
    """

    mouths: np.ndarray
    found: np.ndarray
    fps: float
    landmarks: np.ndarray | None = None
    transforms: np.ndarray | None = None
    preset: str = DEFAULT_PRESET

    def __len__(self) -> int:
        return int(self.mouths.shape[0])


def _run(
    frames: Iterable[np.ndarray],
    fps: float,
    size: int,
    smooth_window: int | None,
    detector: LandmarkDetector | None,
    preset: CropPreset,
) -> tuple[MouthTrack | None, int]:
    """Landmarks + crops over a stream of frames at a constant ``fps``.

    Returns:
        ``(result, frames_seen)``; ``result`` is ``None`` if no face was found.
    """
    cropper = MouthCropper(size=size, smooth_window=smooth_window, preset=preset)
    with detector_for_video(detector) as det:
        for frame in frames:
            cropper.push(frame, det(frame))
    res = cropper.finish()
    n = len(res.found)
    if not res.found.any():
        return None, n
    return MouthTrack(res.mouths, res.found, float(fps), res.landmarks, res.transforms, preset.name), n


def extract_mouths(
    frames: np.ndarray,
    timestamps: np.ndarray | None = None,
    fps: float = 25.0,
    size: int = 96,
    *,
    smooth_window: int | None = None,
    detector: LandmarkDetector | None = None,
    preset: str | CropPreset | None = DEFAULT_PRESET,
) -> MouthTrack:
    """Mouth crops of in-memory frames.

    Args:
        frames: ``uint8 (T, H, W, 3)`` RGB frames of one video.
        timestamps: ``float64 (T,)`` frame times in seconds; the frames are
            first resampled to ``fps`` by timestamp (landmarks run only on the
            frames kept). ``None``: the frames are already at ``fps``.
        fps: output frame rate.
        size: crop side in pixels.
        smooth_window: frames in the landmark moving average (default: the preset's).
        detector: a detector to reuse (reset first); default: a new one.
        preset: crop geometry, ``"avsr"`` or ``"auto_avsr"`` (see
            :mod:`avsr.vision.presets`), a :class:`CropPreset`, or ``None``
            (the default, ``"avsr"``).

    Returns:
        :class:`MouthTrack` with ``T' = len(frames)`` (or the resampled count).

    Raises:
        ValueError: malformed ``frames`` / ``timestamps`` or no frames.
        InputError: unknown preset name.
        NoFaceError: no face on any frame (an :class:`~avsr.errors.InputError`; ``path`` is ``None``).
    """
    crop = get_preset(preset)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[0] == 0:
        raise ValueError("no frames")
    if timestamps is not None:
        from avsr.io import resample_indices

        timestamps = np.asarray(timestamps, dtype=np.float64)
        if timestamps.shape != (frames.shape[0],):
            raise ValueError(f"{frames.shape[0]} frames but timestamps of shape {timestamps.shape}")
        index = resample_indices(timestamps, fps)
    else:
        index = np.arange(frames.shape[0])
    track, _ = _run((frames[i] for i in index), fps, size, smooth_window, detector, crop)
    if track is None:
        raise NoFaceError(None, "no face found in any frame")
    return track


def extract_mouths_from_file(
    path: str | os.PathLike,
    fps: float = 25.0,
    size: int = 96,
    start: float | None = None,
    end: float | None = None,
    *,
    smooth_window: int | None = None,
    detector: LandmarkDetector | None = None,
    preset: str | CropPreset | None = DEFAULT_PRESET,
) -> MouthTrack:
    """Mouth crops of a video file, streamed (memory stays bounded on long files).

    Frames are decoded and resampled to ``fps`` on the fly; each frame waits
    only until the landmarks it needs (next face after a gap, smoothing
    window) have been seen.

    Args:
        path: video file (any container FFmpeg reads, any or variable fps).
        fps: output frame rate.
        size: crop side in pixels.
        start: first time in seconds (``None``: file start).
        end: end time in seconds, exclusive (``None``: end of file).
        smooth_window: frames in the landmark moving average (default: the preset's).
        detector: a detector to reuse (reset first); default: a new one.
        preset: crop geometry, ``"avsr"`` or ``"auto_avsr"`` (see
            :mod:`avsr.vision.presets`), a :class:`CropPreset`, or ``None``
            (the default, ``"avsr"``).

    Returns:
        :class:`MouthTrack`.

    Raises:
        InputError: unknown preset name, unreadable file, no video stream or
            no video frames; :class:`~avsr.errors.NoFaceError` (a subclass)
            when no face was found in any frame.
    """
    from avsr.io import iter_frames_at

    crop = get_preset(preset)  # a bad name fails before the file is opened
    p = os.fspath(path)
    frames = (frame for frame, _ in iter_frames_at(p, fps, start=start, end=end))
    track, n = _run(frames, fps, size, smooth_window, detector, crop)
    if n == 0:
        raise InputError(p, "no video frames")
    if track is None:
        raise NoFaceError(p, "no face found in any frame")
    return track


def _os_problem(err: OSError) -> str:
    """A few words for an ``OSError`` (``"permission denied"``), without temporary file names."""
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if err.errno == errno.EROFS:
        return "read-only file system"
    if err.errno == errno.ENOSPC:
        return "no space left on device"
    return (err.strerror or type(err).__name__).lower()


def check_output(path: str | os.PathLike) -> None:
    """Fail early, before any work, if a file cannot be written at ``path``.

    Nothing is created: the nearest existing folder on the way to ``path``
    must accept a new file (checked by creating and removing a temporary one);
    the missing folders in between are created later by :func:`save_mouths`.

    Args:
        path: the intended output file.

    Raises:
        InputError: ``path`` is a folder, a parent is a file, or the folder
            does not accept new files (permissions, read-only file system).
    """
    p = os.fspath(path)
    if os.path.isdir(p):
        raise InputError(p, "output is a folder; give a file name such as out.npz")
    parent = os.path.dirname(os.path.abspath(p))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise InputError(p, f"cannot create the output folder: {parent} is a file")
    try:
        fd, probe = tempfile.mkstemp(prefix=".avsr-probe-", dir=parent)
    except OSError as e:
        raise InputError(p, f"cannot write into {parent} ({_os_problem(e)})") from None
    os.close(fd)
    os.unlink(probe)


def save_mouths(path: str | os.PathLike, track: MouthTrack) -> None:
    """Write a track to ``.npz`` atomically (arrays ``mouths``, ``found``, ``fps``, ``preset``).

    An interruption (Ctrl-C, a crash, a full disk) leaves either the old file
    or none, never a half-written one.

    Args:
        path: output file (parent folders are created).
        track: what to save; landmarks and transforms are not stored.

    Raises:
        InputError: the file or its folders cannot be written.
    """
    from avsr.utils import save_npz_atomic

    check_output(path)
    try:
        save_npz_atomic(
            path,
            mouths=np.asarray(track.mouths, dtype=np.uint8),
            found=np.asarray(track.found, dtype=bool),
            fps=np.float64(track.fps),
            preset=np.array(track.preset),
        )
    except OSError as e:
        raise InputError(path, f"cannot write ({_os_problem(e)})") from None


def save_preview(path: str | os.PathLike, track: MouthTrack, *, columns: int = 10, max_tiles: int = 50) -> None:
    """Write a PNG contact sheet of a track's crops (green border: face found; red: interpolated).

    Args:
        path: output ``.png`` (parent folders are created; written atomically).
        track: the crops to show; up to ``max_tiles`` frames, evenly spaced.
        columns: tiles per row.
        max_tiles: most frames shown.

    Raises:
        InputError: the file cannot be written.
    """
    import cv2

    from avsr.utils import atomic_path
    from avsr.vision.mouth import contact_sheet

    check_output(path)
    ok, png = cv2.imencode(".png", contact_sheet(track.mouths, track.found, columns=columns, max_tiles=max_tiles))
    if not ok:  # pragma: no cover - PNG encoding of a uint8 image does not fail
        raise InputError(path, "could not encode the preview image")
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(png.tobytes())
    except OSError as e:
        raise InputError(path, f"cannot write ({_os_problem(e)})") from None


def load_mouths(path: str | os.PathLike) -> MouthTrack:
    """Read a track written by :func:`save_mouths`.

    Args:
        path: ``.npz`` file.

    Returns:
        :class:`MouthTrack` (``landmarks`` and ``transforms`` are ``None``).

    Raises:
        InputError: missing, unreadable or malformed file.
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise InputError(p, "no such file")
    try:
        with np.load(p, allow_pickle=False) as data:
            mouths, found, fps = data["mouths"], data["found"], float(data["fps"])
            preset = str(data["preset"]) if "preset" in data.files else DEFAULT_PRESET
    except KeyError as e:
        raise InputError(p, f"not a mouth track (missing array {e.args[0]!r})") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        raise InputError(p, "not a readable .npz file") from None
    if mouths.ndim != 3 or mouths.dtype != np.uint8 or found.shape != (mouths.shape[0],):
        raise InputError(p, f"malformed mouth track: mouths {mouths.dtype} {mouths.shape}, found {found.shape}")
    return MouthTrack(mouths=mouths, found=found.astype(bool), fps=fps, preset=preset)
