#!/usr/bin/env python
"""Long inputs: flat memory and subtitle timing of ``avsr transcribe``.

Builds talking-face videos of the given lengths (default 60 s and 600 s) from
SynthGRID full-face test utterances (generated into ``--work`` unless
``--clips MANIFEST`` is given) laid end to end with pauses of 0.5-2.5 s, and
every ``--faceless``-th utterance with the face gone (the camera shows an
empty frame: that stretch must be decoded audio-only). Frames are scaled to
``--size`` pixels. Every word's time in the built video is known from the
utterances' manifests.

Each video is transcribed by ``avsr transcribe --format json`` in its own
process (peak resident memory from ``wait4``), and then:

* memory: peak RSS of each run, and the ratio of the longest to the shortest;
* words: each hypothesis word matched to the reference word with the same
  spelling nearest in time (within 1 s); start and end errors (median, 95th
  percentile, largest, share within 0.2 s);
* subtitles: each SRT cue (``avsr.transcript.subtitle_cues``) against the
  reference words it covers: start error to the first word's start, end error
  to the last word's end;
* WER of the whole text, and which modality each segment used.

Prints a markdown table and writes ``transcribe_long.md`` / ``.csv`` under ``--out``.

Usage:
    python tools/benchmarks/transcribe_long.py [--seconds 60 600] [--work exp/bench_long] [--out results/benchmarks]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

from avsr.data.manifest import read_manifest  # noqa: E402
from avsr.io import SAMPLE_RATE, read_audio, read_av, write_av  # noqa: E402
from avsr.metrics import wer  # noqa: E402
from avsr.transcript import subtitle_cues  # noqa: E402
from avsr.utils import markdown_table, save_table  # noqa: E402

FPS = 25


@dataclass
class Clip:
    """One utterance: frames at 25 fps, 16 kHz audio, words ``(word, start, end)``."""

    frames: np.ndarray
    audio: np.ndarray
    words: list[tuple[str, float, float]]


def load_clips(manifest: str, size: int) -> list[Clip]:
    """The manifest's full-face videos, scaled to ``size`` pixels, with their word times."""
    import cv2

    clips = []
    for u in read_manifest(manifest):
        if not u.video or "words" not in u.extra:
            raise SystemExit(f"transcribe_long.py: error: {manifest}: row {u.id!r} needs video and words columns")
        clip = read_av(u.video, audio=False)
        frames = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in clip.frames])
        audio = read_audio(u.audio) if u.audio else read_av(u.video, video=False).audio
        words = [(w, float(s), float(e)) for w, s, e in json.loads(u.extra["words"])]
        clips.append(Clip(frames, audio.astype(np.float32), words))
    return clips


def build_video(path: Path, clips: Sequence[Clip], seconds: float, faceless: int, seed: int) -> dict:
    """Lay clips end to end with pauses until ``seconds``; write the mp4 and its reference JSON."""
    rng = np.random.default_rng(seed)
    size = clips[0].frames.shape[1]
    frames, audio, words, placements = [], [], [], []
    t, i = 0.0, 0
    while True:
        clip = clips[i % len(clips)]
        pause = float(rng.uniform(0.5, 2.5))
        n_pause = int(round(pause * FPS))
        n_clip = len(clip.frames)
        if t + (n_pause + n_clip) / FPS > seconds:
            break
        no_face = faceless > 0 and i % faceless == faceless - 1
        still = clip.frames[0]
        if no_face:
            still = np.full_like(still, int(still.mean()))  # the camera looks away: an empty frame
        frames.append(np.repeat(still[None], n_pause, axis=0))
        audio.append(np.zeros(n_pause * SAMPLE_RATE // FPS, np.float32))
        t += n_pause / FPS
        body = np.repeat(still[None], n_clip, axis=0) if no_face else clip.frames
        frames.append(body)
        speech = np.zeros(n_clip * SAMPLE_RATE // FPS, np.float32)
        speech[: min(len(speech), len(clip.audio))] = clip.audio[: len(speech)]
        audio.append(speech)
        words.extend((w, round(t + s, 3), round(t + e, 3)) for w, s, e in clip.words)
        placements.append({"start": round(t, 3), "end": round(t + n_clip / FPS, 3), "face": not no_face})
        t += n_clip / FPS
        i += 1
    tail = int(round((seconds - t) * FPS))
    frames.append(np.repeat(frames[-1][-1:], tail, axis=0))
    audio.append(np.zeros(tail * SAMPLE_RATE // FPS, np.float32))
    sound = np.concatenate(audio)
    sound += np.random.default_rng(seed + 1).normal(0, 3e-4, len(sound)).astype(np.float32)  # room noise floor
    write_av(path, np.concatenate(frames), FPS, sound)
    reference = {"size": size, "seconds": seconds, "words": words, "utterances": placements}
    path.with_suffix(".json").write_text(json.dumps(reference))
    return reference


def transcribe(video: Path, out: Path, extra: Sequence[str]) -> tuple[dict, float]:
    """``avsr transcribe --format json`` in a child process: the result and its peak RSS in MiB."""
    cmd = [sys.executable, "-m", "avsr", "transcribe", str(video), "--format", "json", "-o", str(out),
           "--quiet", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"transcribe_long.py: error: avsr transcribe failed on {video}: {stderr.strip()[-500:]}")
    return json.loads(out.read_text()), usage.ru_maxrss / 1024.0


def word_errors(hyp: Sequence[dict], ref: Sequence[tuple[str, float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Start and end errors (s) of hypothesis words matched to same-spelled reference words within 1 s."""
    starts, ends = [], []
    for w in hyp:
        best = None
        for word, s, e in ref:
            if word == w["word"] and abs(s - w["start"]) < 1.0 and (best is None or abs(s - w["start"]) < abs(best[0] - w["start"])):
                best = (s, e)
        if best is not None:
            starts.append(abs(w["start"] - best[0]))
            ends.append(abs(w["end"] - best[1]))
    return np.array(starts), np.array(ends)


def cue_errors(result: dict, ref: Sequence[tuple[str, float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Start/end errors (s) of each subtitle cue against the reference words inside it (±0.5 s)."""
    starts, ends = [], []
    for start, end, _ in subtitle_cues(result):
        inside = [(s, e) for _, s, e in ref if s >= start - 0.5 and e <= end + 0.5]
        if inside:
            starts.append(abs(start - inside[0][0]))
            ends.append(abs(end - inside[-1][1]))
    return np.array(starts), np.array(ends)


def _stats(prefix: str, errors: np.ndarray) -> dict:
    if not len(errors):
        return {f"{prefix} median": float("nan"), f"{prefix} p95": float("nan"), f"{prefix} max": float("nan"),
                f"{prefix} ≤0.2 s": float("nan")}
    return {f"{prefix} median": float(np.median(errors)), f"{prefix} p95": float(np.percentile(errors, 95)),
            f"{prefix} max": float(errors.max()), f"{prefix} ≤0.2 s": 100.0 * float((errors <= 0.2).mean())}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, nargs="+", default=[60.0, 600.0], help="video lengths to build")
    p.add_argument("--clips", default=None, help="manifest of full-face utterances (default: generate 24)")
    p.add_argument("--work", default="exp/bench_long", help="scratch folder for clips and videos")
    p.add_argument("--size", type=int, default=256, help="frame size in pixels (default 256)")
    p.add_argument("--faceless", type=int, default=5, help="every N-th utterance has no face (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/benchmarks")
    p.add_argument("transcribe_args", nargs=argparse.REMAINDER, help="after --: extra avsr transcribe options")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    manifest = args.clips
    if manifest is None:
        from avsr.data.synth import generate

        manifest = str(generate(work / "clips", 24, "test", seed=11, full_face=True, processes=1, progress=True))
    clips = load_clips(manifest, args.size)
    extra = [a for a in args.transcribe_args if a != "--"]
    rows = []
    for seconds in args.seconds:
        video = work / f"long_{int(seconds)}s.mp4"
        ref_path = video.with_suffix(".json")
        reference = json.loads(ref_path.read_text()) if video.exists() and ref_path.exists() else None
        if reference is None or reference.get("size") != args.size:
            print(f"building {video} ...", file=sys.stderr)
            reference = build_video(video, clips, seconds, args.faceless, args.seed)
        ref_words = [tuple(w) for w in reference["words"]]
        print(f"transcribing {video} ...", file=sys.stderr)
        result, rss = transcribe(video, work / f"long_{int(seconds)}s.result.json", extra)
        modalities = [s["modality"] for s in result["segments"]]
        row = {"seconds": seconds, "peak RSS MiB": rss,
               "WER %": 100.0 * wer([" ".join(w for w, _, _ in ref_words)], [result["text"]]),
               "segments": len(modalities), "audio-only segments": modalities.count("audio")}
        row |= _stats("word start", word_errors(result["words"], ref_words)[0])
        cue_starts, cue_ends = cue_errors(result, ref_words)
        row |= _stats("cue start", cue_starts) | _stats("cue end", cue_ends)
        rows.append(row)
    ratio = rows[-1]["peak RSS MiB"] / rows[0]["peak RSS MiB"]
    md = markdown_table(rows, header="avsr transcribe on long talking-face videos (errors in seconds)",
                        formats={k: ".0f" if k in ("seconds", "peak RSS MiB") else ".2f"
                                 for k in rows[0] if k not in ("segments", "audio-only segments")},
                        right=tuple(rows[0]))
    md += f"\npeak memory, longest / shortest: {ratio:.2f}x\n"
    print(md, end="")
    save_table(args.out, "transcribe_long", md, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
