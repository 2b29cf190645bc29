"""Landmark tracks: fill gaps, smooth over time, align to a fixed face layout.

All functions are plain numpy on arrays of shape ``(T, K, 2)`` (frames,
points, ``x, y`` in pixels) and are vectorised over frames.

The reference layout
--------------------
:data:`REFERENCE_POINTS` places a few stable points of mediapipe's 468-point
mesh in one canonical 2-D frame. The numbers are mediapipe's *canonical face
model* (``mediapipe/modules/face_geometry/data/canonical_face_model.obj``,
vertex ``i`` = landmark ``i``, a metric 3-D face in centimetres with y up),
projected orthographically onto the frontal plane: ``(x, y, z) -> (x, -y)``,
so x grows to the image right and y grows downwards like pixel coordinates.
The model is left/right symmetric; the right-hand values are the mirrors of
the left-hand ones (which is also what the file holds). Units are therefore
centimetres of an average adult face, origin near the centre of the head.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "REFERENCE",
    "REFERENCE_INDICES",
    "REFERENCE_POINTS",
    "ALIGN_INDICES",
    "MOUTH_INDICES",
    "LIP_INDICES",
    "MOUTH_WIDTH",
    "reference_points",
    "fill_gaps",
    "smooth",
    "similarity_transform",
    "similarity_transforms",
    "apply_transform",
]

#: name -> (mediapipe landmark index, x, y) in the canonical frame (cm, y down).
REFERENCE: dict[str, tuple[int, float, float]] = {
    "right_eye_outer": (33, -4.445859, -2.663991),  # subject's right = image left
    "right_eye_inner": (133, -1.856432, -2.585245),
    "left_eye_inner": (362, 1.856432, -2.585245),
    "left_eye_outer": (263, 4.445859, -2.663991),
    "nose_tip": (1, 0.000000, 1.126865),
    "mouth_right": (61, -2.456206, 4.342621),
    "mouth_left": (291, 2.456206, 4.342621),
    "chin": (152, 0.000000, 9.403378),
}

#: Landmark indices of :data:`REFERENCE`, in its order.
REFERENCE_INDICES = np.array([v[0] for v in REFERENCE.values()], dtype=np.intp)
#: ``(8, 2)`` reference coordinates of :data:`REFERENCE_INDICES`.
REFERENCE_POINTS = np.array([v[1:] for v in REFERENCE.values()], dtype=np.float64)

#: Points the similarity is fitted on: eye corners and nose tip. Speech does
#: not move them, so the mouth can move freely inside an aligned face (the
#: mouth corners and chin would pull the fit with every syllable).
ALIGN_INDICES = np.array([33, 133, 362, 263, 1], dtype=np.intp)
#: Points whose mean is the mouth centre: corners, outer upper and lower lip.
MOUTH_INDICES = np.array([61, 291, 0, 17], dtype=np.intp)
#: Corners, outer and inner midpoints of both lips.
LIP_INDICES = np.array([61, 291, 0, 17, 13, 14], dtype=np.intp)
#: Mouth width (corner to corner) of the reference face, in reference units.
MOUTH_WIDTH = float(REFERENCE["mouth_left"][1] - REFERENCE["mouth_right"][1])


def reference_points(indices: np.ndarray | list[int]) -> np.ndarray:
    """Reference coordinates of some landmarks of :data:`REFERENCE`.

    Args:
        indices: mediapipe landmark indices, each one of :data:`REFERENCE_INDICES`.

    Returns:
        ``(len(indices), 2)`` float64 reference coordinates.

    Example:
        >>> reference_points([1])
        array([[0.      , 1.126865]])
    """
    lookup = {v[0]: v[1:] for v in REFERENCE.values()}
    try:
        return np.array([lookup[int(i)] for i in indices], dtype=np.float64)
    except KeyError as e:
        raise ValueError(f"landmark {e.args[0]} is not in the reference layout") from None


def fill_gaps(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill frames without landmarks by linear interpolation in time.

    A frame is missing when any of its values is NaN. Gaps between two found
    frames are interpolated linearly; leading and trailing gaps hold the
    nearest found frame.

    Args:
        landmarks: ``(T, K, 2)`` (or ``(T, ...)``) with NaN rows where no face.

    Returns:
        ``(filled, found)``: ``filled`` has the shape and dtype of
        ``landmarks`` (all NaN if no frame was found), ``found`` is the
        ``(T,)`` bool mask of frames that had landmarks.

    Example:
        >>> x = np.array([[0.0], [np.nan], [np.nan], [3.0], [np.nan]])
        >>> filled, found = fill_gaps(x)
        >>> filled.ravel().tolist(), found.tolist()
        ([0.0, 1.0, 2.0, 3.0, 3.0], [True, False, False, True, False])
    """
    landmarks = np.asarray(landmarks)
    t = landmarks.shape[0]
    flat = landmarks.reshape(t, -1)
    found = np.isfinite(flat).all(axis=1) if t else np.zeros(0, bool)
    if found.all() or not found.any():
        return landmarks.copy(), found
    idx = np.arange(t)
    prev = np.maximum.accumulate(np.where(found, idx, -1))
    nxt = np.minimum.accumulate(np.where(found, idx, t)[::-1])[::-1]
    prev_c = np.where(prev < 0, nxt, prev)  # leading gap: hold the first found
    nxt_c = np.where(nxt >= t, prev_c, nxt)  # trailing gap: hold the last found
    span = np.maximum(nxt_c - prev_c, 1)
    w = ((idx - prev_c) / span).clip(0.0, 1.0)[:, None]
    filled = (1.0 - w) * flat[prev_c].astype(np.float64) + w * flat[nxt_c].astype(np.float64)
    filled[found] = flat[found]
    return filled.astype(landmarks.dtype, copy=False).reshape(landmarks.shape), found


def smooth(landmarks: np.ndarray, window: int = 5) -> np.ndarray:
    """Centred moving average over time, shrinking symmetrically at the ends.

    Frame ``t`` is the mean of frames ``t-h .. t+h`` with ``h = (window-1)//2``,
    reduced near the ends so that the window stays centred (a constant-speed
    motion is thus left exactly as it is, also at the edges).

    Args:
        landmarks: ``(T, ...)`` finite values (fill gaps first).
        window: frames averaged; an even value counts as ``window - 1``.

    Returns:
        Array of the same shape and dtype.

    Example:
        >>> smooth(np.array([0.0, 1.0, 5.0, 3.0, 4.0]), window=3).tolist()
        [0.0, 2.0, 3.0, 4.0, 4.0]
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    x = np.asarray(landmarks)
    t = x.shape[0]
    h = (window - 1) // 2
    if h == 0 or t < 3:
        return x.copy()
    idx = np.arange(t)
    half = np.minimum(np.minimum(idx, t - 1 - idx), h)
    csum = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(x, axis=0, dtype=np.float64)])
    total = csum[idx + half + 1] - csum[idx - half]
    count = (2 * half + 1).reshape((t,) + (1,) * (x.ndim - 1))
    return (total / count).astype(x.dtype, copy=False)


def similarity_transforms(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarities (rotation, uniform scale, translation), per frame.

    The closed-form 2-D Umeyama solution without reflection: for each frame,
    the ``A = [[a, -b, tx], [b, a, ty]]`` minimising ``sum |A @ [src, 1] - dst|^2``.

    Args:
        src: ``(T, K, 2)`` (or ``(K, 2)``) points, ``K >= 2``.
        dst: ``(K, 2)`` or ``(T, K, 2)`` target points.

    Returns:
        ``(T, 2, 3)`` float64 matrices (``(2, 3)`` for a single ``src``).
    """
    src = np.asarray(src, dtype=np.float64)
    single = src.ndim == 2
    if single:
        src = src[None]
    dst = np.broadcast_to(np.asarray(dst, dtype=np.float64), src.shape)
    if src.shape[-2] < 2:
        raise ValueError("a similarity needs at least 2 points")
    sc = src.mean(axis=1, keepdims=True)
    dc = dst.mean(axis=1, keepdims=True)
    s, d = src - sc, dst - dc
    var = (s**2).sum(axis=(1, 2))
    var = np.where(var > 0, var, 1.0)
    a = (s[..., 0] * d[..., 0] + s[..., 1] * d[..., 1]).sum(axis=1) / var
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(axis=1) / var
    out = np.empty((src.shape[0], 2, 3))
    out[:, 0, 0], out[:, 0, 1] = a, -b
    out[:, 1, 0], out[:, 1, 1] = b, a
    out[:, :, 2] = dc[:, 0] - np.einsum("tij,tj->ti", out[:, :, :2], sc[:, 0])
    return out[0] if single else out


def similarity_transform(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Least-squares similarity mapping ``src_pts`` onto ``dst_pts``.

    Args:
        src_pts: ``(K, 2)`` points, ``K >= 2``.
        dst_pts: ``(K, 2)`` corresponding target points.

    Returns:
        ``(2, 3)`` float64 matrix ``M`` with ``dst ~ M[:, :2] @ src + M[:, 2]``
        (usable with ``cv2.warpAffine``).

    Example:
        >>> src = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> similarity_transform(src, 2 * src[:, ::-1] * [-1, 1] + 5).round(6)
        array([[ 0., -2.,  5.],
               [ 2.,  0.,  5.]])
    """
    src_pts = np.asarray(src_pts, dtype=np.float64)
    if src_pts.ndim != 2 or src_pts.shape[1] != 2:
        raise ValueError(f"expected (K, 2) points, got {src_pts.shape}")
    return similarity_transforms(src_pts, dst_pts)


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map points through affine ``(2, 3)`` matrices.

    Args:
        matrix: ``(2, 3)`` or ``(T, 2, 3)``.
        points: ``(K, 2)`` or ``(T, K, 2)`` (broadcast against ``matrix``).

    Returns:
        Mapped points, ``(K, 2)`` or ``(T, K, 2)`` float64.
    """
    m = np.asarray(matrix, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    return np.einsum("...ij,...kj->...ki", m[..., :, :2], p) + m[..., None, :, 2]
