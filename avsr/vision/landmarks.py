"""Face landmarks per video frame with mediapipe's bundled FaceMesh.

The detector runs in tracking mode (``static_image_mode=False``): a face
detector finds the face once, then the landmark model follows it from frame
to frame, which is several times faster than detecting on every frame. The
model weights ship inside the ``mediapipe`` wheel, so nothing is downloaded.

When several faces are visible, the detector picks the largest, most central
one on the first frame and then keeps following the face nearest to the
previous pick, so the chosen speaker does not flip between frames.

Example:
    >>> import numpy as np
    >>> with LandmarkDetector() as detect:
    ...     detect(np.zeros((64, 64, 3), np.uint8)) is None
    True
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import warnings
from typing import Any, Iterable, Iterator

import numpy as np

# Quiet mediapipe / TensorFlow Lite before they are imported anywhere.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype")

__all__ = ["NUM_LANDMARKS", "LandmarkDetector", "detect_landmarks"]

#: Number of points in mediapipe's face mesh without iris refinement.
NUM_LANDMARKS = 468

# One serialized NormalizedLandmark with x, y, z set and nothing else:
# tag(field 1, bytes) len=15 | tag x f32 | tag y f32 | tag z f32.
_PACKED_LANDMARK = np.dtype(
    [("tag", "u1"), ("len", "u1"), ("tx", "u1"), ("x", "<f4"), ("ty", "u1"), ("y", "<f4"),
     ("tz", "u1"), ("z", "<f4")]
)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (C++ logging of TFLite / absl) for a moment.

    mediapipe's native code prints INFO/WARNING lines on graph start-up that
    no environment variable turns off; they would break the "one line on
    stderr" promise of the CLI. ``AVSR_DEBUG=1`` keeps them visible.
    """
    if os.environ.get("AVSR_DEBUG"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            ctypes.CDLL(None).fflush(None)
        os.dup2(saved, 2)
        os.close(saved)


def _import_face_mesh() -> Any:
    """Import ``mediapipe.solutions.face_mesh`` quietly (absl logging at ERROR)."""
    with _quiet_stderr():
        import mediapipe as mp

        with contextlib.suppress(Exception):
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.ERROR)
    return mp.solutions.face_mesh


def _landmarks_to_array(face: Any) -> np.ndarray:
    """Convert a ``NormalizedLandmarkList`` to normalised ``(468, 2)`` float32 x, y.

    Parses the serialized protobuf with one ``np.frombuffer`` (about ten times
    faster than a Python loop over 468 messages); falls back to the loop if
    the wire layout is not the expected fixed one.
    """
    raw = face.SerializeToString()
    n = len(face.landmark)
    if len(raw) == n * _PACKED_LANDMARK.itemsize:
        packed = np.frombuffer(raw, _PACKED_LANDMARK)
        if (packed["tag"] == 0x0A).all() and (packed["len"] == 15).all() and (
            packed["tx"] == 0x0D
        ).all() and (packed["ty"] == 0x15).all():
            out = np.empty((n, 2), np.float32)
            out[:, 0] = packed["x"]
            out[:, 1] = packed["y"]
            return out
    return np.array([(p.x, p.y) for p in face.landmark], dtype=np.float32)


class LandmarkDetector:
    """Callable face landmark detector for a stream of frames of one video.

    Args:
        max_faces: how many faces mediapipe may return per frame; the one to
            follow is chosen among them.
        refine_landmarks: also run the iris/lip refinement model (slower; the
            468 points returned are the same set, only more precise).
        min_detection_confidence: face detector threshold.
        min_tracking_confidence: below this the tracker re-runs detection.
        static_image_mode: detect on every frame instead of tracking
            (for unrelated still images).

    Call it with an RGB ``uint8`` frame ``(H, W, 3)``; it returns ``(468, 2)``
    float32 pixel coordinates ``(x, y)`` of the followed face, or ``None``.
    Use one detector per video (or call :meth:`reset` between videos): it
    carries tracking state from frame to frame.
    """

    def __init__(
        self,
        max_faces: int = 3,
        refine_landmarks: bool = False,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        static_image_mode: bool = False,
    ) -> None:
        self._options = dict(
            static_image_mode=static_image_mode,
            max_num_faces=max_faces,
            refine_landmarks=refine_landmarks,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence,
        )
        # The mediapipe graph is built on the first frame: a bad input file
        # fails before paying for it, and the native start-up logging (which
        # runs asynchronously until the first frame is through) is silenced.
        self._mesh: Any = None
        self._previous: np.ndarray | None = None  # centre and size of the last pick
        self._closed = False

    # -- context manager -------------------------------------------------
    def __enter__(self) -> "LandmarkDetector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the mediapipe graph (idempotent)."""
        if not self._closed:
            self._closed = True
            if self._mesh is not None:
                with contextlib.suppress(Exception):
                    self._mesh.close()
                self._mesh = None

    # -- detection ---------------------------------------------------------
    def reset(self) -> None:
        """Forget the followed face (call between unrelated videos).

        Feeds one blank frame so that mediapipe's tracker drops its region of
        interest and the next frame starts with a fresh face detection.
        """
        self._previous = None
        if self._mesh is not None:
            self._process(np.zeros((64, 64, 3), np.uint8))

    def _process(self, frame: np.ndarray) -> Any:
        if self._closed:
            raise RuntimeError("LandmarkDetector is closed")
        if self._mesh is None:
            face_mesh = _import_face_mesh()
            with _quiet_stderr():
                self._mesh = face_mesh.FaceMesh(**self._options)
                return self._mesh.process(frame)
        return self._mesh.process(frame)

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        """Landmarks of the followed face in ``frame``.

        Args:
            frame: RGB image, ``uint8`` of shape ``(H, W, 3)``.

        Returns:
            ``(468, 2)`` float32 pixel coordinates ``(x, y)``, or ``None``
            when no face is found.
        """
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 frame (H, W, 3), got {frame.dtype} {frame.shape}")
        if not frame.flags.c_contiguous:
            frame = np.ascontiguousarray(frame)
        result = self._process(frame)
        faces = result.multi_face_landmarks
        if not faces:
            return None
        height, width = frame.shape[:2]
        candidates = [_landmarks_to_array(face) * np.array([width, height], np.float32) for face in faces]
        pick = self._choose(candidates, width, height)
        return candidates[pick]

    def _choose(self, candidates: list[np.ndarray], width: int, height: int) -> int:
        """Index of the face to follow among ``candidates`` (list of ``(468, 2)``).

        Nearest to the previous pick when that is close enough (within one
        face size); otherwise the largest face, discounted by its distance
        from the image centre.
        """
        boxes = np.array([[p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()] for p in candidates])
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        pick = -1
        if self._previous is not None:
            distance = np.hypot(*(centres - self._previous[:2]).T)
            nearest = int(distance.argmin())
            if distance[nearest] < max(self._previous[2], sizes[nearest]):
                pick = nearest
        if pick < 0:
            off_centre = np.hypot(centres[:, 0] - width / 2, centres[:, 1] - height / 2)
            score = sizes**2 / (1.0 + 2.0 * off_centre / max(width, height))
            pick = int(score.argmax())
        self._previous = np.array([centres[pick, 0], centres[pick, 1], sizes[pick]])
        return pick


def detect_landmarks(frames: Iterable[np.ndarray], detector: LandmarkDetector | None = None) -> np.ndarray:
    """Landmarks of the followed face on every frame of one video.

    Args:
        frames: RGB ``uint8`` frames ``(H, W, 3)`` in temporal order (an array
            ``(T, H, W, 3)`` or any iterable of frames).
        detector: a detector to reuse (it is :meth:`~LandmarkDetector.reset`
            first); by default a new one is created and closed.

    Returns:
        ``(T, 468, 2)`` float32 pixel coordinates, rows of NaN where no face
        was found.
    """
    rows: list[np.ndarray] = []
    missing = np.full((NUM_LANDMARKS, 2), np.nan, np.float32)
    owned = detector is None
    det = LandmarkDetector() if detector is None else detector
    try:
        if not owned:
            det.reset()
        for frame in frames:
            points = det(frame)
            rows.append(missing if points is None else points)
    finally:
        if owned:
            det.close()
    if not rows:
        return np.empty((0, NUM_LANDMARKS, 2), np.float32)
    return np.stack(rows)
