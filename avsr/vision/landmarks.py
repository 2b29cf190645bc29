"""Face landmarks per video frame with mediapipe's bundled models.

Two mediapipe models work together (both ship inside the ``mediapipe`` wheel,
nothing is downloaded):

* **search**: the full-range BlazeFace detector finds every face in the frame
  (on overlapping tiles too, now and then, while no face is found: the
  detector sees the frame at 192 x 192 pixels, so a face narrower than about
  a twentieth of the frame's longer side, e.g. a 30-pixel face in a 640 x 480
  video, is only found in a tile; tiles magnify at least twice). The face to
  follow is the one nearest to the previous pick, else the largest and most
  central one.
* **track**: FaceMesh in tracking mode, limited to one face, runs on a window
  twice the size of the followed face around its last position. Tracking one
  face lets mediapipe skip face detection between frames (with a limit of
  three faces it would detect on every frame: about 60 % slower), and the
  window keeps other faces out, so the chosen speaker does not flip.

When the followed face is lost, the next frame is searched again.

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

__all__ = ["NUM_LANDMARKS", "LandmarkDetector", "detector_for_video", "detect_landmarks"]

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


def _import_solutions() -> Any:
    """Import ``mediapipe.solutions`` quietly (absl logging at ERROR)."""
    with _quiet_stderr():
        import mediapipe as mp

        with contextlib.suppress(Exception):
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.ERROR)
    return mp.solutions


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
    """Callable face landmark detector for the frames of one video.

    Args:
        max_faces: faces considered per search (highest detector scores).
        refine_landmarks: also run the iris/lip refinement model (slower; the
            468 points returned are the same set, only more precise).
        min_detection_confidence: face detector threshold.
        min_tracking_confidence: below this the tracker counts the face as
            lost (and the next frame is searched).
        static_image_mode: search every frame, never track (for unrelated
            still images).
        tile_every: while no face is found, also search the frame in
            overlapping tiles on every ``tile_every``-th frame (small faces).

    Call it with an RGB ``uint8`` frame ``(H, W, 3)``; it returns ``(468, 2)``
    float32 pixel coordinates ``(x, y)`` of the followed face (integers at
    pixel centres, as in OpenCV), or ``None``.
    Use one detector per video (or call :meth:`reset` between videos): it
    carries tracking state from frame to frame.
    """

    #: Largest side of a search tile (pixels); tiles overlap by a quarter.
    TILE = 640
    #: Smallest side of a search tile: the detector's input size (smaller
    #: tiles would only be upscaled, which finds nothing more).
    MIN_TILE = 192

    def __init__(
        self,
        max_faces: int = 3,
        refine_landmarks: bool = False,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        static_image_mode: bool = False,
        tile_every: int = 12,
    ) -> None:
        self.max_faces = max(1, max_faces)
        self.static_image_mode = static_image_mode
        self.tile_every = max(1, tile_every)
        self._detection_options = dict(model_selection=1, min_detection_confidence=min_detection_confidence)
        self._mesh_options = dict(
            static_image_mode=False,
            max_num_faces=1,
            refine_landmarks=refine_landmarks,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence,
        )
        # Graphs are built on first use: a bad input file fails before paying
        # for them, and the native start-up logging (which runs asynchronously
        # until the first frame is through) is silenced.
        self._graphs: dict[str, Any] = {}
        self._previous: np.ndarray | None = None  # centre x, y and size of the followed face
        self._window = 0  # side of the tracking window (pixels)
        self._has_roi = False  # the mesh graph holds a region of interest from the last frame
        self._misses = 0  # searches in a row without a face
        self._closed = False

    # -- context manager -------------------------------------------------
    def __enter__(self) -> "LandmarkDetector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the mediapipe graphs (idempotent)."""
        if not self._closed:
            self._closed = True
            for graph in self._graphs.values():
                with contextlib.suppress(Exception):
                    graph.close()
            self._graphs.clear()

    def reset(self) -> None:
        """Forget the followed face (call between unrelated videos)."""
        self._previous = None
        self._misses = 0
        self._forget_track()

    # -- mediapipe graphs ----------------------------------------------------
    def _process(self, name: str, image: np.ndarray) -> Any:
        """Run graph ``name`` (``"detect"`` or ``"mesh"``) on ``image``, building it first if needed."""
        if self._closed:
            raise RuntimeError("LandmarkDetector is closed")
        graph = self._graphs.get(name)
        if graph is not None:
            return graph.process(image)
        solutions = _import_solutions()
        with _quiet_stderr():
            if name == "detect":
                graph = solutions.face_detection.FaceDetection(**self._detection_options)
            else:
                graph = solutions.face_mesh.FaceMesh(**self._mesh_options)
            self._graphs[name] = graph
            return graph.process(image)

    def _forget_track(self) -> None:
        """Make the tracking graph drop its region of interest (one blank frame).

        The graph keeps the face's region from the previous frame in
        coordinates *relative to the window*; once the window is resized that
        region is wrong (the face fills more or less of it) and the next
        landmarks would be off by a good part of the mouth width.
        """
        if self._has_roi and "mesh" in self._graphs:
            self._process("mesh", np.zeros((64, 64, 3), np.uint8))
        self._has_roi = False

    def _detect_faces(self, image: np.ndarray, x0: int = 0, y0: int = 0) -> np.ndarray:
        """Face boxes in ``image`` as rows ``(centre x, centre y, size, score)`` in frame pixels."""
        result = self._process("detect", np.ascontiguousarray(image))
        height, width = image.shape[:2]
        rows = []
        for det in result.detections or ():
            box = det.location_data.relative_bounding_box
            w, h = box.width * width, box.height * height
            rows.append((x0 + box.xmin * width + w / 2, y0 + box.ymin * height + h / 2, max(w, h), det.score[0]))
        return np.array(rows, np.float64).reshape(-1, 4)

    def _tile_side(self, height: int, width: int) -> int:
        """Side of the search tiles for a frame, or 0 when tiling it would not help.

        Half the longer side (so a tile magnifies the frame at least twice for
        the detector), at most :attr:`TILE` and at least :attr:`MIN_TILE`.
        """
        side = min(self.TILE, max(self.MIN_TILE, max(height, width) // 2), height, width)
        return side if side >= self.MIN_TILE and side < max(height, width) else 0

    def _detect_in_tiles(self, frame: np.ndarray) -> np.ndarray:
        """Face boxes found in overlapping tiles of the frame (duplicates merged)."""
        height, width = frame.shape[:2]
        side = self._tile_side(height, width)
        if not side:
            return np.zeros((0, 4))
        step = max(1, (3 * side) // 4)
        xs = sorted({*range(0, max(1, width - side + 1), step), width - side})
        ys = sorted({*range(0, max(1, height - side + 1), step), height - side})
        found = [self._detect_faces(frame[y : y + side, x : x + side], x, y) for y in ys for x in xs]
        boxes = np.concatenate(found) if found else np.zeros((0, 4))
        keep: list[np.ndarray] = []
        for box in boxes[np.argsort(-boxes[:, 3])]:
            if all(np.hypot(box[0] - k[0], box[1] - k[1]) > 0.5 * max(box[2], k[2]) for k in keep):
                keep.append(box)
        return np.array(keep).reshape(-1, 4)

    # -- per frame -----------------------------------------------------------
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
        if self._previous is not None and not self.static_image_mode:
            points = self._track(frame, tolerance=0.5)
            if points is not None:
                return points
        return self._search(frame)

    def _search(self, frame: np.ndarray) -> np.ndarray | None:
        """Find the faces in the whole frame, choose one and get its landmarks."""
        boxes = self._detect_faces(frame)
        height, width = frame.shape[:2]
        if not len(boxes) and self._misses % self.tile_every == 0:
            boxes = self._detect_in_tiles(frame)
        if not len(boxes):
            self._misses += 1
            return None
        self._misses = 0
        boxes = boxes[np.argsort(-boxes[:, 3])][: self.max_faces]
        pick = self._choose(boxes, width, height)
        self._previous = boxes[pick, :3].copy()
        self._forget_track()  # a new window: no stale region of interest
        return self._track(frame, tolerance=0.75)

    def _track(self, frame: np.ndarray, tolerance: float) -> np.ndarray | None:
        """Landmarks of the followed face from a window around it; ``None`` if lost.

        The window keeps one size while the face size is roughly steady (the
        graph runs markedly slower on images of changing sizes) and is shifted,
        not cut, at the frame borders.

        Args:
            frame: the whole frame.
            tolerance: largest accepted move of the face centre, in face sizes.
        """
        height, width = frame.shape[:2]
        cx, cy, size = self._previous
        side = self._window
        if not 0.75 * side <= 2.0 * size <= 1.33 * side:
            side = self._window = int(np.ceil(2.0 * size / 16.0)) * 16
            self._forget_track()  # detect afresh in the resized window
        w, h = min(side, width), min(side, height)
        if w < 16 or h < 16:
            return None
        x0 = int(np.clip(round(cx - w / 2), 0, width - w))
        y0 = int(np.clip(round(cy - h / 2), 0, height - h))
        result = self._process("mesh", np.ascontiguousarray(frame[y0 : y0 + h, x0 : x0 + w]))
        self._has_roi = bool(result.multi_face_landmarks)
        if not self._has_roi:
            return None
        points = _landmarks_to_array(result.multi_face_landmarks[0])[:NUM_LANDMARKS]  # no iris points
        points *= np.array([w, h], np.float32)
        points += np.array([x0 - 0.5, y0 - 0.5], np.float32)  # mediapipe: 0 = image edge; here 0 = pixel centre
        box_min, box_max = points.min(axis=0), points.max(axis=0)
        centre, new_size = (box_min + box_max) / 2, float((box_max - box_min).max())
        if np.hypot(centre[0] - cx, centre[1] - cy) > tolerance * size or not 0.5 * size < new_size < 2.0 * size:
            return None  # not the face we were following
        self._previous = np.array([centre[0], centre[1], new_size])
        return points

    def _choose(self, boxes: np.ndarray, width: int, height: int) -> int:
        """Index of the face to follow among ``boxes`` rows ``(cx, cy, size, score)``.

        Nearest to the previous pick when that is close enough (within one
        face size); otherwise the largest face, discounted by its distance
        from the image centre.
        """
        if self._previous is not None:
            distance = np.hypot(boxes[:, 0] - self._previous[0], boxes[:, 1] - self._previous[1])
            nearest = int(distance.argmin())
            if distance[nearest] < max(self._previous[2], boxes[nearest, 2]):
                return nearest
        off_centre = np.hypot(boxes[:, 0] - width / 2, boxes[:, 1] - height / 2)
        score = boxes[:, 2] ** 2 / (1.0 + 2.0 * off_centre / max(width, height))
        return int(score.argmax())


@contextlib.contextmanager
def detector_for_video(detector: LandmarkDetector | None = None) -> Iterator[LandmarkDetector]:
    """A detector ready for a new video: ``detector`` reset, or a new one closed on exit.

    Args:
        detector: a detector to reuse (its owner closes it), or ``None``.

    Returns:
        Context manager yielding the :class:`LandmarkDetector` to call.
    """
    if detector is None:
        with LandmarkDetector() as det:
            yield det
    else:
        detector.reset()
        yield detector


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
    with detector_for_video(detector) as det:
        for frame in frames:
            points = det(frame)
            rows.append(missing if points is None else points)
    if not rows:
        return np.empty((0, NUM_LANDMARKS, 2), np.float32)
    return np.stack(rows)
