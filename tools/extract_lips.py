#!/usr/bin/env python
"""Extract mouth crops for a whole corpus: one ``.npz`` per video.

Input is a folder (searched recursively for video files) or a manifest CSV
with a ``video`` (or ``path``) column and an optional ``id`` column; relative
paths in a manifest are relative to the manifest's folder. Outputs mirror the
input layout under ``--output-dir`` with the suffix ``.npz`` (or are named
``<id>.npz`` when the manifest has ids). Each file holds ``mouths`` uint8
``(T, 96, 96)``, ``found`` bool ``(T,)``, ``fps`` and ``preset`` (the crop
geometry, ``--preset``; see ``avsr lips``).

Runs ``--jobs`` worker processes, each with one face landmark detector.
Resumable: outputs that already exist and load (cut with the same preset) are skipped; writes are
atomic, so an interrupted run leaves no half-written file. Failures are
listed at the end and written to ``failures.csv``; the exit code is 1 if
any video failed.

Usage:
    python tools/extract_lips.py VIDEOS_DIR -o LIPS_DIR [--jobs 2]
    python tools/extract_lips.py manifest.csv -o LIPS_DIR [--preset auto_avsr]
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from avsr.errors import AVSRError, InputError  # noqa: E402
from avsr.utils import atomic_path  # noqa: E402

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts", ".3gp")


@dataclass
class Job:
    """One video to process and where its crops go."""

    video: str
    output: str


@dataclass
class Outcome:
    """What happened to one :class:`Job`."""

    video: str
    output: str
    ok: bool
    message: str
    frames: int = 0
    found: int = 0
    seconds: float = 0.0


# ------------------------------------------------------------------ job listing
def _from_folder(root: Path, out_dir: Path, extensions: Sequence[str]) -> list[Job]:
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    videos = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts)
    return [Job(str(v), str((out_dir / v.relative_to(root)).with_suffix(".npz"))) for v in videos]


def _from_manifest(manifest: Path, out_dir: Path) -> list[Job]:
    try:
        with open(manifest, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(manifest, f"cannot read manifest ({e.__class__.__name__})") from None
    if not rows:
        return []
    column = "video" if "video" in rows[0] else "path" if "path" in rows[0] else None
    if column is None:
        raise InputError(manifest, "manifest needs a 'video' or 'path' column")
    base = manifest.parent
    videos = [Path(r[column]) if Path(r[column]).is_absolute() else base / r[column] for r in rows]
    if "id" in rows[0] and all(r.get("id") for r in rows):
        outputs = [out_dir / f"{r['id']}.npz" for r in rows]
    else:
        parents = [str(v.resolve().parent) for v in videos]
        common = Path(os.path.commonpath(parents)) if parents else base
        outputs = [(out_dir / v.resolve().relative_to(common)).with_suffix(".npz") for v in videos]
    return [Job(str(v), str(o)) for v, o in zip(videos, outputs)]


def list_jobs(
    source: str | os.PathLike, out_dir: str | os.PathLike, extensions: Sequence[str] = VIDEO_EXTENSIONS
) -> list[Job]:
    """Videos to process and their outputs.

    Args:
        source: a folder of videos (recursive) or a manifest ``.csv``.
        out_dir: output root.
        extensions: video suffixes looked for in a folder.

    Returns:
        Jobs in a stable order.

    Raises:
        InputError: missing source, unreadable manifest, two videos mapping
            to the same output, or an id that leads outside ``out_dir``.
    """
    src, out = Path(source), Path(out_dir)
    if src.is_dir():
        jobs = _from_folder(src, out, extensions)
    elif src.is_file():
        jobs = _from_manifest(src, out)
    else:
        raise InputError(src, "no such file or folder")
    root = out.resolve()
    seen: dict[str, str] = {}
    for job in jobs:
        if not Path(job.output).resolve().is_relative_to(root):
            raise InputError(job.video, f"output {job.output} would fall outside {out}")
        if job.output in seen:
            raise InputError(job.video, f"same output {job.output} as {seen[job.output]}")
        seen[job.output] = job.video
    return jobs


def is_done(output: str, preset: str | None = None) -> bool:
    """Whether ``output`` exists and loads as a mouth track (cut with ``preset``, unless ``None``)."""
    from avsr.vision import load_mouths

    if not os.path.exists(output):
        return False
    try:
        track = load_mouths(output)
    except AVSRError:
        return False
    return preset is None or track.preset == preset


# ---------------------------------------------------------------------- workers
_DETECTOR = None
_IN_POOL = False  # this process is a pool worker (Ctrl-C handled as below)
_BUSY = False  # a video is being processed
_STOP = False  # Ctrl-C seen: finish no more videos


def _init_worker() -> None:
    """Per-process setup: one landmark detector reused for every video."""
    global _DETECTOR
    from avsr.vision import LandmarkDetector

    _DETECTOR = LandmarkDetector()


def _on_interrupt(signum: int, frame: object) -> None:
    """Worker SIGINT handler: abort the current video once, then refuse the rest.

    Ctrl-C reaches every process of the terminal's group. The default handler
    would let each worker go on to the videos already queued to it (each one
    a full video of waiting) or die with a traceback when idle.
    """
    global _STOP
    first = not _STOP
    _STOP = True
    if first and _BUSY:
        raise KeyboardInterrupt


def _init_pool_worker() -> None:
    """Pool worker setup: the detector, and Ctrl-C handling (see :func:`_on_interrupt`)."""
    global _IN_POOL
    _IN_POOL = True
    signal.signal(signal.SIGINT, _on_interrupt)
    _init_worker()


def _interrupt_workers(pool: object) -> None:
    """Send SIGINT to a pool's workers (when only the parent was interrupted)."""
    processes = getattr(pool, "_processes", None) or {}  # pid -> process (CPython's executor)
    for pid in list(processes):
        try:
            os.kill(pid, signal.SIGINT)
        except OSError:  # already gone
            pass


def process(job: Job, fps: float = 25.0, size: int = 96, preset: str = "avsr") -> Outcome:
    """Extract and save the crops of one video; never raises.

    Args:
        job: video and output path.
        fps: output frame rate.
        size: crop side.
        preset: crop preset name (see :mod:`avsr.vision.presets`).

    Returns:
        :class:`Outcome` (``ok`` False with a one-line message on failure).
    """
    from avsr.vision import extract_mouths_from_file, save_mouths

    global _BUSY
    if _DETECTOR is None:
        _init_worker()
    if _STOP:
        return Outcome(job.video, job.output, False, "interrupted")
    t0 = time.perf_counter()
    _BUSY = True
    try:
        track = extract_mouths_from_file(job.video, fps=fps, size=size, detector=_DETECTOR, preset=preset)
        save_mouths(job.output, track)  # atomic: an interruption leaves no partial file
    except KeyboardInterrupt:
        if not _IN_POOL:
            raise
        return Outcome(job.video, job.output, False, "interrupted")
    except AVSRError as e:
        return Outcome(job.video, job.output, False, e.problem if isinstance(e, InputError) else str(e))
    except Exception as e:  # one bad video must not stop the corpus
        return Outcome(job.video, job.output, False, f"{type(e).__name__}: {e}")
    finally:
        _BUSY = False
    return Outcome(job.video, job.output, True, "ok", len(track), int(track.found.sum()), time.perf_counter() - t0)


def _process_star(args: tuple[Job, float, int, str]) -> Outcome:
    return process(*args)


def run_jobs(
    jobs: Sequence[Job], n_jobs: int, fps: float, size: int, progress: bool = True, preset: str = "avsr"
) -> Iterable[Outcome]:
    """Process jobs in ``n_jobs`` processes (in this process when 1), yielding outcomes as they finish.

    Raises:
        RuntimeError: a worker process died (e.g. killed for memory); the
            outputs finished so far are kept.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from tqdm import tqdm

    tasks = [(job, fps, size, preset) for job in jobs]
    bar = tqdm(total=len(tasks), unit="video", disable=None if progress else True, dynamic_ncols=True)
    try:
        if n_jobs <= 1 or len(tasks) <= 1:
            for task in tasks:
                yield _process_star(task)
                bar.update()
            return
        # Workers import this module by name: make that possible however it was loaded.
        here = str(Path(__file__).resolve().parent)
        if __name__ != "__main__" and here not in sys.path:
            sys.path.insert(0, here)
        ctx = mp.get_context("spawn")  # never fork a process that may hold native threads
        pool = ProcessPoolExecutor(min(n_jobs, len(tasks)), mp_context=ctx, initializer=_init_pool_worker)
        try:
            futures = [pool.submit(_process_star, task) for task in tasks]
            for future in as_completed(futures):
                yield future.result()
                bar.update()
        except BrokenProcessPool as e:
            raise RuntimeError(f"a worker process died ({e})") from None
        except BaseException:  # Ctrl-C, or the caller stopped early: stop the workers' current videos too
            _interrupt_workers(pool)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()


# ------------------------------------------------------------------------- main
def write_failures(path: str | os.PathLike, failures: Sequence[Outcome]) -> None:
    """Write ``video,error`` rows to a CSV atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["video", "error"])
            for o in failures:
                writer.writerow([o.video, o.message])


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of this tool."""
    p = argparse.ArgumentParser(description="Extract 96x96 grayscale mouth crops (25 fps) for a corpus of videos.")
    p.add_argument("source", help="folder of videos (recursive) or manifest CSV (column video|path, optional id)")
    p.add_argument("-o", "--output-dir", required=True, help="output folder (mirrors the input layout, .npz files)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--fps", type=float, default=25.0, help="output frame rate (default 25)")
    p.add_argument("--size", type=int, default=96, help="crop size in pixels (default 96)")
    p.add_argument("--preset", default="avsr", metavar="NAME",
                   help="crop geometry: avsr (default) or auto_avsr (Auto-AVSR's mouth crop); "
                        "outputs cut with another preset are redone")
    p.add_argument("--force", action="store_true", help="redo videos whose output already exists")
    p.add_argument("--failures", help="failures CSV (default OUTPUT_DIR/failures.csv)")
    p.add_argument("--ext", nargs="+", default=list(VIDEO_EXTENSIONS), help="video suffixes searched in a folder")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the tool; returns the exit code (0 all good, 1 some failed, 2 bad arguments)."""
    args = build_parser().parse_args(argv)
    from avsr.vision import check_output, get_preset

    failures_csv = Path(args.failures or Path(args.output_dir) / "failures.csv")
    try:
        get_preset(args.preset)
        jobs = list_jobs(args.source, args.output_dir, args.ext)
        check_output(failures_csv)  # fail before any work
    except InputError as e:
        if os.environ.get("AVSR_DEBUG"):
            raise
        print(f"extract_lips: error: {e}", file=sys.stderr)
        return 2
    todo = jobs if args.force else [j for j in jobs if not is_done(j.output, args.preset)]
    skipped = len(jobs) - len(todo)
    print(f"{len(jobs)} videos, {skipped} already done, {len(todo)} to process with {args.jobs} jobs", file=sys.stderr)

    failures: list[Outcome] = []
    done = frames = 0
    t0 = time.perf_counter()
    try:
        for outcome in run_jobs(todo, args.jobs, args.fps, args.size, preset=args.preset):
            if outcome.ok:
                done += 1
                frames += outcome.frames
            else:
                failures.append(outcome)
    except KeyboardInterrupt:
        print("extract_lips: interrupted (finished outputs are kept; run again to resume)", file=sys.stderr)
        return 130
    except RuntimeError as e:
        print(f"extract_lips: error: {e}; finished outputs are kept, run again to resume", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - t0

    rate = f", {frames / elapsed:.0f} frames/s" if frames and elapsed > 0 else ""
    print(f"done {done}, skipped {skipped}, failed {len(failures)} in {elapsed:.1f} s{rate}", file=sys.stderr)
    if failures:
        failures.sort(key=lambda o: o.video)
        write_failures(failures_csv, failures)
        for o in failures[:10]:
            print(f"  FAILED {o.video}: {o.message}", file=sys.stderr)
        if len(failures) > 10:
            print(f"  ... and {len(failures) - 10} more", file=sys.stderr)
        print(f"failures listed in {failures_csv}", file=sys.stderr)
        return 1
    if failures_csv.exists():
        failures_csv.unlink()  # a stale list from an earlier run would mislead
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
