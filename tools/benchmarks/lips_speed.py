#!/usr/bin/env python
"""Speed of the lip frontend: decode -> landmarks -> align -> 96x96 mouth crop.

Generates (or takes, ``--video``) a 640x480 talking-face test video: the face
of ``skimage.data.astronaut()`` moving, turning and zooming a little on a
plain background, 25 fps, H.264. Then measures, side by side in one run:

* decode only (``avsr.io.iter_frames_at`` at 25 fps),
* decode + a plain mediapipe FaceMesh with ``max_num_faces=3`` (reference),
* decode + landmarks (:class:`avsr.vision.LandmarkDetector`),
* the whole pipeline (``avsr.vision.extract_mouths_from_file``), 1 process,
* the whole pipeline in N processes (default 2), the video split into N
  time ranges, one per worker (workers start warm, timing from a barrier).

Frames/s counts output frames (25 fps). Prints a markdown table and writes
``lips_speed.md`` and ``lips_speed.csv`` under ``--out``.

Usage:
    python tools/benchmarks/lips_speed.py [--video V] [--seconds 20] [--procs 2] [--out results/benchmarks]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

from avsr.io import iter_frames_at, probe, write_av  # noqa: E402
from avsr.utils import markdown_table, save_table  # noqa: E402
from avsr.vision import LandmarkDetector, extract_mouths_from_file  # noqa: E402


def make_test_video(
    path: str | os.PathLike, seconds: float = 20.0, fps: float = 25.0, size: tuple[int, int] = (640, 480)
) -> str:
    """Write a talking-face test video (astronaut face moving on a plain background).

    Args:
        path: output ``.mp4``.
        seconds: duration.
        fps: frame rate.
        size: ``(width, height)``.

    Returns:
        ``path`` as a string.
    """
    import cv2
    from skimage import data

    face = data.astronaut()  # 512x512, face centred near (225, 140)
    width, height = size
    n = int(round(seconds * fps))
    frames = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        phase = 2 * np.pi * i / (4 * fps)  # one sway every 4 s
        angle = 8 * np.sin(phase)
        scale = 1.0 + 0.15 * np.sin(0.7 * phase)
        cx = width / 2 + 0.25 * width * np.sin(0.5 * phase)
        cy = height / 2 + 0.12 * height * np.cos(0.8 * phase)
        m = cv2.getRotationMatrix2D((225.0, 140.0), angle, scale)
        m[:, 2] += (cx - 225.0, cy - 140.0)
        frames[i] = cv2.warpAffine(face, m, (width, height), borderMode=cv2.BORDER_CONSTANT, borderValue=(70, 90, 110))
    write_av(path, frames, fps)
    return os.fspath(path)


def _timed(fn: Callable[..., object], *args: object, **kw: object) -> tuple[object, float]:
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def decode_only(video: str, fps: float) -> int:
    """Frames produced by decoding + resampling alone."""
    return sum(1 for _ in iter_frames_at(video, fps))


def decode_landmarks(video: str, fps: float, detector: LandmarkDetector) -> int:
    """Frames through decoding + landmarks (no crop)."""
    detector.reset()
    n = 0
    for frame, _ in iter_frames_at(video, fps):
        detector(frame)
        n += 1
    return n


def decode_facemesh_multi(video: str, fps: float, max_faces: int = 3) -> int:
    """Frames through decoding + a plain FaceMesh allowed ``max_faces`` faces (for comparison).

    With fewer faces in view than ``max_faces``, mediapipe runs its face
    detector on every frame; :class:`LandmarkDetector` avoids that by tracking
    one chosen face.
    """
    from avsr.vision.landmarks import _import_solutions

    mesh = _import_solutions().face_mesh.FaceMesh(static_image_mode=False, max_num_faces=max_faces)
    try:
        mesh.process(np.zeros((64, 64, 3), np.uint8))
        n = 0
        for frame, _ in iter_frames_at(video, fps):
            mesh.process(frame)
            n += 1
    finally:
        mesh.close()
    return n


# ---------------------------------------------------------------- multi-process
_WORKER_DETECTOR: LandmarkDetector | None = None


def _worker_init() -> None:
    global _WORKER_DETECTOR
    _WORKER_DETECTOR = LandmarkDetector()
    _WORKER_DETECTOR(np.zeros((64, 64, 3), np.uint8))  # warm the graph


def _worker_run(job: tuple[str, float, float | None, float | None, object]) -> tuple[int, float, float]:
    video, fps, start, end, barrier = job
    barrier.wait()
    t0 = time.perf_counter()
    track = extract_mouths_from_file(video, fps=fps, start=start, end=end, detector=_WORKER_DETECTOR)
    return len(track), t0, time.perf_counter()


def parallel_pipeline(video: str, fps: float, duration: float, procs: int) -> tuple[int, float]:
    """Run the pipeline in ``procs`` processes on equal time ranges of one video.

    Returns:
        ``(frames, wall seconds)`` from the common start to the last finish.
    """
    ctx = mp.get_context("spawn")
    manager = ctx.Manager()
    barrier = manager.Barrier(procs)
    edges = np.linspace(0.0, duration, procs + 1)
    starts = [float(edges[i]) if i else None for i in range(procs)]
    ends = [float(edges[i + 1]) if i < procs - 1 else None for i in range(procs)]
    jobs = [(video, fps, starts[i], ends[i], barrier) for i in range(procs)]
    with ctx.Pool(procs, initializer=_worker_init) as pool:
        results = pool.map(_worker_run, jobs, chunksize=1)
    manager.shutdown()
    frames = sum(r[0] for r in results)
    wall = max(r[2] for r in results) - min(r[1] for r in results)
    return frames, wall


# ------------------------------------------------------------------------- main
def run(video: str, fps: float, procs: int) -> list[dict]:
    """Measure every setting once on ``video``; return table rows."""
    info = probe(video)
    duration = float(info["duration"] or info["video"]["duration"])
    rows: list[dict] = []

    def add(setting: str, nproc: int, frames: int, seconds: float) -> None:
        rows.append(
            {"setting": setting, "processes": nproc, "frames": frames,
             "seconds": round(seconds, 3), "frames_per_s": round(frames / seconds, 1)}
        )

    with LandmarkDetector() as detector:
        detector(np.zeros((64, 64, 3), np.uint8))  # graph start-up is not per-frame cost
        n, dt = _timed(decode_only, video, fps)
        add("decode + resample to 25 fps", 1, n, dt)
        n, dt = _timed(decode_facemesh_multi, video, fps)
        add("decode + plain FaceMesh, max_num_faces=3 (reference)", 1, n, dt)
        n, dt = _timed(decode_landmarks, video, fps, detector)
        add("decode + landmarks (LandmarkDetector)", 1, n, dt)
        track, dt = _timed(extract_mouths_from_file, video, fps, detector=detector)
        add("full pipeline (decode, landmarks, align, crop)", 1, len(track), dt)
    if procs > 1:
        n, dt = parallel_pipeline(video, fps, duration, procs)
        add(f"full pipeline, video split in {procs} time ranges", procs, n, dt)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and save it; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", help="video to measure on (default: generate a 640x480 test video)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the generated video (default 20)")
    parser.add_argument("--fps", type=float, default=25.0, help="output frame rate (default 25)")
    parser.add_argument("--procs", type=int, default=2, help="processes for the parallel run (default 2)")
    parser.add_argument("--out", default="results/benchmarks", help="folder for lips_speed.md / .csv")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        video = args.video or make_test_video(os.path.join(tmp, "talking_face_640x480.mp4"), args.seconds)
        info = probe(video)["video"]
        rows = run(video, args.fps, args.procs)
    header = (
        f"Lip frontend speed on {Path(video).name if args.video else 'generated talking-face video'} "
        f"({info['width']}x{info['height']}, {info['fps']:g} fps, {info['codec']}); "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, Python {platform.python_version()}."
    )
    table = markdown_table(
        rows, header, titles={"frames_per_s": "frames/s"}, formats={"seconds": ".2f", "frames_per_s": ".1f"},
        right=("processes", "frames", "seconds", "frames_per_s"),
    )
    print(table)
    md_path, csv_path = save_table(args.out, "lips_speed", table, rows)
    print(f"saved {md_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
