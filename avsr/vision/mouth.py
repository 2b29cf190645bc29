"""Mouth crops: one affine warp per frame, straight to a small grayscale patch.

For each frame the similarity that aligns the face to the reference layout
(:mod:`avsr.vision.align`) and the crop around the mouth are composed into a
single ``2 x 3`` matrix (frame pixels -> crop pixels), so each frame is
resampled once, only at the ``size x size`` output pixels.

Crop geometry: in the aligned (reference) frame the crop is centred on the
mouth centre (mean of the mouth corners and outer lip midpoints, taken from
temporally smoothed landmarks) and scaled so that the *reference* mouth width
is :data:`MOUTH_FRACTION` of the crop side. Since the alignment normalises
face size from the eyes and nose, a given face keeps one scale in the crop
whatever its distance to the camera, and the mouth may open, close or widen
inside the crop.

That is the default ``avsr`` crop preset; :class:`MouthCropper` takes any
preset of :mod:`avsr.vision.presets` (e.g. ``auto_avsr``, Auto-AVSR's
mean-face crop), which supplies the matrices, the smoothing window and the
pixel settings, while the buffering, gap filling and resampling stay here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

from avsr.vision.align import (
    ALIGN_INDICES,
    MOUTH_INDICES,
    MOUTH_WIDTH,
    apply_transform,
    fill_gaps,
    reference_points,
    similarity_transforms,
    smooth,
)

if TYPE_CHECKING:
    from avsr.vision.presets import CropPreset

__all__ = [
    "MOUTH_FRACTION",
    "mouth_transforms",
    "warp_mouth",
    "MouthCropper",
    "CropResult",
    "center_crop",
    "random_crop",
    "contact_sheet",
]

#: Width of the reference mouth as a fraction of the crop side.
MOUTH_FRACTION = 0.45

_REF_ALIGN = reference_points(ALIGN_INDICES)


def mouth_transforms(landmarks: np.ndarray, size: int = 96, mouth_fraction: float = MOUTH_FRACTION) -> np.ndarray:
    """Frame-to-crop affine matrices from (filled, smoothed) landmarks.

    Args:
        landmarks: ``(T, 468, 2)`` finite pixel coordinates.
        size: crop side in pixels.
        mouth_fraction: reference mouth width / crop side.

    Returns:
        ``(T, 2, 3)`` float64 matrices mapping frame pixels to crop pixels;
        the mouth centre lands on the crop centre ``((size-1)/2, (size-1)/2)``.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    align = similarity_transforms(landmarks[:, ALIGN_INDICES], _REF_ALIGN)  # (T, 2, 3)
    centre = apply_transform(align, landmarks[:, MOUTH_INDICES]).mean(axis=1)  # (T, 2) reference units
    k = mouth_fraction * size / MOUTH_WIDTH  # crop pixels per reference unit
    out = k * align
    out[:, :, 2] += (size - 1) / 2.0 - k * centre
    return out


def warp_mouth(frame: np.ndarray, matrix: np.ndarray, size: int = 96, border_value: int | None = None) -> np.ndarray:
    """Resample one frame into a grayscale crop.

    When the crop shrinks the face a lot (HD video), the source region is first
    reduced with area averaging, so that the bilinear warp does not alias.

    Args:
        frame: ``(H, W, 3)`` RGB or ``(H, W)`` gray ``uint8`` frame.
        matrix: ``(2, 3)`` frame-to-crop matrix (see :func:`mouth_transforms`).
        size: crop side.
        border_value: gray level where the crop leaves the frame; ``None``
            (default): the frame's edge pixels are repeated.

    Returns:
        ``(size, size)`` uint8 grayscale crop.
    """
    m = np.asarray(matrix, dtype=np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))  # crop px per frame px
    if scale < 0.5:
        frame, m = _reduce_region(frame, m, size, scale)
    if border_value is None:
        border = dict(borderMode=cv2.BORDER_REPLICATE)
    else:
        border = dict(borderMode=cv2.BORDER_CONSTANT, borderValue=(border_value,) * 3)
    out = cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, **border)
    if out.ndim == 3:
        out = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
    return out


def _reduce_region(frame: np.ndarray, m: np.ndarray, size: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Cut the frame region a crop needs and shrink it (``INTER_AREA``) to about crop scale.

    Returns the reduced region and the matrix from region pixels to crop pixels.
    """
    inverse = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64) - 0.5
    src = apply_transform(inverse, corners)
    h, w = frame.shape[:2]
    x0, y0 = np.floor(src.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(src.max(axis=0)).astype(int) + 3
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 2 or y1 - y0 < 2:  # crop entirely outside the frame: plain warp
        return frame, m
    region = frame[y0:y1, x0:x1]
    rw, rh = max(1, round((x1 - x0) * scale * 1.5)), max(1, round((y1 - y0) * scale * 1.5))
    small = cv2.resize(region, (rw, rh), interpolation=cv2.INTER_AREA)
    fx, fy = (x1 - x0) / rw, (y1 - y0) / rh
    # region-small pixel centre q -> frame pixel (q + 0.5) * f - 0.5 + offset
    to_frame = np.array([[fx, 0.0, 0.5 * fx - 0.5 + x0], [0.0, fy, 0.5 * fy - 0.5 + y0]])
    composed = m[:, :2] @ to_frame
    composed[:, 2] += m[:, 2]
    return small, composed


@dataclass
class CropResult:
    """What :class:`MouthCropper` produced for a whole video.

    Attributes:
        mouths: ``(T, size, size)`` uint8 grayscale crops.
        found: ``(T,)`` bool, a face was detected on the frame.
        landmarks: ``(T, 468, 2)`` float32 after gap filling (NaN where no
            face was ever found, or for frames the bounded buffer had to give
            up before the first face appeared).
        transforms: ``(T, 2, 3)`` float32 frame-to-crop matrices (zeros
            where ``landmarks`` is NaN; those crops are black).
    """

    mouths: np.ndarray
    found: np.ndarray
    landmarks: np.ndarray
    transforms: np.ndarray


class MouthCropper:
    """Streaming mouth cropper: push frames with their landmarks, get crops.

    Gap filling needs the next frame with a face and smoothing needs ``h``
    frames ahead, so frames wait in a buffer until their crop is determined;
    the result is then the same as filling and smoothing the whole track at
    once. Memory stays bounded: if no face shows up for longer than
    ``max_buffer_bytes`` of frames, the waiting frames are cropped holding
    the last known landmarks (as at the end of a video) and the track
    continues from there; frames before the first face ever seen are then
    black crops.

    Args:
        size: crop side.
        smooth_window: frames in the centred moving average of the landmarks
            (default: the preset's).
        mouth_fraction: reference mouth width / crop side (``avsr`` preset
            only; default 0.45).
        max_buffer_bytes: most frame bytes kept waiting.
        min_flush: crop in batches of at least this many frames.
        preset: crop geometry, a name of :data:`avsr.vision.presets.PRESETS`
            or a :class:`~avsr.vision.presets.CropPreset`.

    Raises:
        InputError: unknown preset name.
        ValueError: ``size < 8`` or ``mouth_fraction`` with a preset other than ``avsr``.
    """

    def __init__(
        self,
        size: int = 96,
        smooth_window: int | None = None,
        mouth_fraction: float | None = None,
        max_buffer_bytes: int = 256 << 20,
        min_flush: int = 8,
        preset: "str | CropPreset" = "avsr",
    ) -> None:
        from avsr.vision.presets import AvsrPreset, get_preset

        if size < 8:
            raise ValueError(f"crop size must be >= 8, got {size}")
        self.preset = get_preset(preset)
        if mouth_fraction is not None:
            if not isinstance(self.preset, AvsrPreset):
                raise ValueError(f"mouth_fraction applies to the avsr preset, not {self.preset.name!r}")
            self.preset = replace(self.preset, mouth_fraction=mouth_fraction)
        self.size = size
        self.window = self.preset.smooth_window if smooth_window is None else smooth_window
        self.half = max(0, (self.window - 1) // 2)
        self.max_buffer_bytes = max_buffer_bytes
        self.min_flush = max(1, min_flush)
        self._landmarks = np.full((256, 468, 2), np.nan, np.float32)
        self._found = np.zeros(256, bool)
        self._mouths = np.zeros((256, size, size), np.uint8)
        self._transforms = np.zeros((256, 2, 3), np.float32)
        self._pending: deque[np.ndarray] = deque()
        self._pending_bytes = 0
        self._count = 0  # frames pushed
        self._done = 0  # frames cropped
        self._any_found = False

    def _grow(self, n: int) -> None:
        cap = self._found.shape[0]
        if n <= cap:
            return
        new = max(n, 2 * cap)

        def grow(a: np.ndarray, fill: float) -> np.ndarray:
            b = np.full((new,) + a.shape[1:], fill, a.dtype)
            b[:cap] = a
            return b

        self._landmarks = grow(self._landmarks, np.nan)
        self._found = grow(self._found, False)
        self._mouths = grow(self._mouths, 0)
        self._transforms = grow(self._transforms, 0)

    def push(self, frame: np.ndarray, landmarks: np.ndarray | None) -> None:
        """Add the next frame and its ``(468, 2)`` landmarks (or ``None``: no face)."""
        i = self._count
        self._grow(i + 1)
        if landmarks is not None:
            self._landmarks[i] = landmarks
            self._found[i] = True
            self._any_found = True
        if self.preset.gray_first and frame.ndim == 3:
            frame = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        self._pending.append(frame)
        self._pending_bytes += frame.nbytes
        self._count += 1
        ready = self._count - self.half
        if landmarks is not None and ready - self._done >= self.min_flush:
            self._flush(ready)
        elif self._pending_bytes > self.max_buffer_bytes and ready > self._done:
            self._flush(ready)

    def _flush(self, upto: int) -> None:
        """Crop frames ``[done, upto)`` from the landmarks seen so far."""
        lo = max(0, self._done - self.half)
        n = upto - self._done
        if self._any_found:
            filled, _ = fill_gaps(self._landmarks[lo : self._count])
            smoothed = smooth(filled, self.window)
            first = self._done - lo
            self._landmarks[self._done : upto] = filled[first : first + n]
            matrices = self.preset.transforms(filled[first : first + n], smoothed[first : first + n], self.size)
            self._transforms[self._done : upto] = matrices
            for j in range(n):
                frame = self._pending.popleft()
                self._mouths[self._done + j] = warp_mouth(frame, matrices[j], self.size, self.preset.border_value)
        else:  # no face yet, and the buffer is full: nothing to crop by
            for _ in range(n):
                self._pending.popleft()
        self._pending_bytes = sum(f.nbytes for f in self._pending)
        self._done = upto

    def finish(self) -> CropResult:
        """Crop the frames still waiting and return the whole track.

        Returns:
            :class:`CropResult` with ``T`` = number of frames pushed.
        """
        if self._count > self._done:
            self._flush(self._count)
        t = self._count
        return CropResult(
            mouths=self._mouths[:t].copy(),
            found=self._found[:t].copy(),
            landmarks=self._landmarks[:t].copy(),
            transforms=self._transforms[:t].copy(),
        )


def center_crop(mouths: np.ndarray, size: int = 88) -> np.ndarray:
    """Central ``size x size`` window of every crop (evaluation).

    Args:
        mouths: ``(..., H, W)`` crops.
        size: output side, ``<= min(H, W)``.

    Returns:
        ``(..., size, size)`` view.

    Example:
        >>> center_crop(np.zeros((5, 96, 96), np.uint8)).shape
        (5, 88, 88)
    """
    h, w = mouths.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"crop {size} larger than the input {h}x{w}")
    top, left = (h - size) // 2, (w - size) // 2
    return mouths[..., top : top + size, left : left + size]


def random_crop(mouths: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """One random ``size x size`` window, the same for every frame of a clip (training).

    Args:
        mouths: ``(..., H, W)`` crops of one clip.
        size: output side, ``<= min(H, W)``.
        rng: random generator.

    Returns:
        ``(..., size, size)`` view.

    Example:
        >>> random_crop(np.zeros((5, 96, 96), np.uint8), 88, np.random.default_rng(0)).shape
        (5, 88, 88)
    """
    h, w = mouths.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"crop {size} larger than the input {h}x{w}")
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return mouths[..., top : top + size, left : left + size]


def contact_sheet(mouths: np.ndarray, found: np.ndarray | None = None, *, columns: int = 10, max_tiles: int = 50) -> np.ndarray:
    """Tile mouth crops into one picture, to check a track at a glance.

    Frames are sampled evenly when there are more than ``max_tiles``. Frames
    whose face was not found (interpolated crops) get a red border, the others
    a green one, and each tile is labelled with its frame index.

    Args:
        mouths: ``(T, S, S)`` uint8 crops.
        found: ``(T,)`` bool, or ``None`` (all found).
        columns: tiles per row.
        max_tiles: most tiles shown.

    Returns:
        ``(H, W, 3)`` uint8 BGR image (for ``cv2.imwrite``).

    Example:
        >>> sheet = contact_sheet(np.zeros((12, 96, 96), np.uint8), columns=5)
        >>> sheet.shape
        (300, 500, 3)
    """
    mouths = np.asarray(mouths)
    if mouths.ndim != 3 or mouths.shape[0] == 0:
        raise ValueError(f"mouths must be (T, S, S) with T > 0, got {mouths.shape}")
    t = mouths.shape[0]
    found = np.ones(t, bool) if found is None else np.asarray(found, bool)
    picks = np.unique(np.linspace(0, t - 1, min(t, max_tiles)).round().astype(int))
    border = 2
    tiles = []
    for i in picks:
        tile = cv2.cvtColor(mouths[i], cv2.COLOR_GRAY2BGR)
        colour = (0, 170, 0) if found[i] else (0, 0, 220)
        tile = cv2.copyMakeBorder(tile, border, border, border, border, cv2.BORDER_CONSTANT, value=colour)
        cv2.putText(tile, str(int(i)), (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    columns = max(1, min(columns, len(tiles)))
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (-len(tiles) % columns)
    rows = [np.concatenate(tiles[r : r + columns], axis=1) for r in range(0, len(tiles), columns)]
    return np.concatenate(rows, axis=0)
