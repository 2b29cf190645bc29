#!/usr/bin/env python
"""Build the noisy demo video of ``egs/transcribe``: held-out SynthGRID speakers in test babble at -5 dB.

What it makes (reproducibly: the output depends only on the arguments):

1. ``--num`` SynthGRID utterances in the full-face form (the mouth drawn on
   a face photo, so the whole lip frontend runs on it) from the *test*
   split with seed 2, the recipe's test set (``avsr synth --split test
   --seed 2 --full-face``): speakers never heard or seen in training.
2. One clip of them joined on the 25 fps grid: ``--lead`` seconds before the
   first, ``--pause`` seconds between two, ``--lead`` after the last (silent
   audio; the picture holds the next utterance's first frame, or the last
   one's last frame at the end), each utterance's own audio/video offset
   kept. The picture is encoded once (H.264, ``--crf``, preset ``slow``).
3. Babble from the *test* noise sources mixed in at ``--snr`` dB (measured
   over the speech-active samples) by ``tools/make_noisy.py``, which copies
   the video stream untouched.

Files written to ``--out`` (default: this script's folder):

``demo.mp4``
    the noisy video.
``demo.txt``
    the reference transcript (one line: the utterances' texts in order).
``demo.json``
    the reference in detail: duration, noise settings, and per utterance
    its id, speaker, text, start and end; per word ``[word, start, end]`` in
    seconds of the demo's clock (for checking subtitle times).

Usage:
    python egs/transcribe/make_demo.py [--out egs/transcribe] [--work exp/egs-transcribe]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from avsr.data.synth import generate  # noqa: E402
from avsr.data.synth.pipeline import FPS, SAMPLE_RATE, read_manifest  # noqa: E402
from avsr.errors import AVSRError, InputError  # noqa: E402
from avsr.io import read_av, write_av  # noqa: E402
from avsr.utils import atomic_path  # noqa: E402

#: Seed of the recipe's test split (recipes/SynthGRID/avsr/prepare.py).
TEST_SEED = 2
_STEP = SAMPLE_RATE // int(FPS)  # audio samples per video frame


def _make_noisy_module():
    """``tools/make_noisy.py`` as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("make_noisy", ROOT / "tools" / "make_noisy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dumps(reference: dict) -> str:
    """``reference`` as indented JSON with each ``[word, start, end]`` on one line."""
    text = json.dumps(reference, indent=1)
    return re.sub(r"\[\s+(\"[^\"]*\"),\s+([-\d.e]+),\s+([-\d.e]+)\s+\]", r"[\1, \2, \3]", text)


def join_utterances(rows: list[dict], lead: float, pause: float) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Join utterances into one clip on the 25 fps grid, with silent pauses.

    Args:
        rows: SynthGRID manifest rows (:func:`avsr.data.synth.read_manifest`, full-face form).
        lead: seconds before the first and after the last utterance.
        pause: seconds between two utterances.

    Returns:
        ``(frames uint8 (T, H, W, 3) at 25 fps, audio float32 (T * 640,) at 16 kHz, utterances)``
        where ``utterances`` gives each one's id, speaker, text, start, end
        and words ``[word, start, end]`` on the joined clock.

    Raises:
        InputError: an utterance whose audio and video lengths disagree.
    """
    lead_steps, pause_steps = round(lead * FPS), round(pause * FPS)
    frames: list[np.ndarray] = []
    audio: list[np.ndarray] = []
    utterances: list[dict] = []
    step = 0
    for i, row in enumerate(rows):
        clip = read_av(row["video"], audio=False)
        speech, rate = sf.read(row["audio"], dtype="float32")
        if rate != SAMPLE_RATE or len(speech) != len(clip.frames) * _STEP:
            raise InputError(row["video"], f"audio ({len(speech)} samples at {rate} Hz) does not match "
                                           f"{len(clip.frames)} frames at {FPS:g} fps")
        gap = lead_steps if i == 0 else pause_steps
        frames.append(np.repeat(clip.frames[:1], gap, axis=0))  # hold the coming face still
        audio.append(np.zeros(gap * _STEP, np.float32))
        step += gap
        start = step / FPS
        frames.append(clip.frames)
        audio.append(speech)
        step += len(clip.frames)
        utterances.append({
            "id": row["id"], "speaker": row["speaker"], "text": row["text"],
            "start": round(start, 3), "end": round(step / FPS, 3),
            "words": [[w, round(start + s, 3), round(start + e, 3)] for w, s, e in row["words"]],
        })
    frames.append(np.repeat(frames[-1][-1:], lead_steps, axis=0))
    audio.append(np.zeros(lead_steps * _STEP, np.float32))
    return np.concatenate(frames), np.concatenate(audio), utterances


def build_demo(
    out_dir: str | os.PathLike, work_dir: str | os.PathLike, *, num: int = 3, seed: int = TEST_SEED,
    snr: float = -5.0, noise_seed: int = 0, lead: float = 0.5, pause: float = 1.0, crf: int = 30,
) -> dict:
    """Make ``demo.mp4``, ``demo.txt`` and ``demo.json`` in ``out_dir``.

    Args:
        out_dir: where the three files go (written atomically).
        work_dir: scratch folder for the generated utterances and the clean clip (kept: reruns resume).
        num: utterances joined.
        seed: SynthGRID run seed of the test split.
        snr: babble SNR in dB.
        noise_seed: seed of the babble excerpt (``tools/make_noisy.py --seed``).
        lead: seconds of silence at both ends.
        pause: seconds of silence between utterances.
        crf: H.264 quality of the picture (higher: smaller file).

    Returns:
        the reference written to ``demo.json``.

    Raises:
        InputError: bad settings or an unwritable folder.
    """
    if num < 1 or lead < 0 or pause < 0:
        raise InputError(None, f"need num >= 1 and non-negative lead/pause, got {num}, {lead}, {pause}")
    out, work = Path(out_dir), Path(work_dir)
    manifest = generate(work / "synth", num, "test", seed, processes=1, full_face=True, progress=False)
    rows = read_manifest(manifest)
    frames, audio, utterances = join_utterances(rows, lead, pause)
    clean = work / "clean"
    clean.mkdir(parents=True, exist_ok=True)
    write_av(clean / "demo.mp4", frames, FPS, audio, SAMPLE_RATE, crf=crf, preset="slow")
    with atomic_path(clean / "demo.flac") as tmp:
        sf.write(tmp, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    with open(clean / "demo.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["id", "video", "audio"])
        writer.writeheader()
        writer.writerow({"id": "demo", "video": "demo.mp4", "audio": "demo.flac"})
    noisy_manifest = _make_noisy_module().noisy_copy(clean / "demo.csv", work / "noisy", [snr], ["babble"],
                                                      "test", noise_seed)[0]
    with open(noisy_manifest, newline="") as f:
        noisy = next(csv.DictReader(f))
    reference = {
        "duration": round(len(frames) / FPS, 3),
        "synth": {"split": "test", "seed": seed, "num": num, "form": "face"},
        "noise": {"kind": noisy["noise"], "split": "test", "snr_db": snr, "seed": noise_seed,
                  "gain": float(noisy["gain"])},
        "text": " ".join(u["text"] for u in utterances),
        "utterances": utterances,
    }
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "demo.mp4") as tmp:
        shutil.copyfile(noisy_manifest.parent / noisy["video"], tmp)
    with atomic_path(out / "demo.txt") as tmp:
        tmp.write_text(reference["text"] + "\n")
    with atomic_path(out / "demo.json") as tmp:
        tmp.write_text(_dumps(reference) + "\n")
    return reference


def main(argv: list[str] | None = None) -> int:
    """Build the demo; returns the exit code (0 done, 1 bad input)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(HERE), help="output folder (default: this script's folder)")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    p.add_argument("--num", type=int, default=3, help="utterances joined (default 3)")
    p.add_argument("--seed", type=int, default=TEST_SEED, help=f"SynthGRID test-split seed (default {TEST_SEED})")
    p.add_argument("--snr", type=float, default=-5.0, help="babble SNR in dB (default -5)")
    p.add_argument("--noise-seed", type=int, default=0, help="babble excerpt seed (default 0)")
    p.add_argument("--pause", type=float, default=1.0, help="seconds between utterances (default 1)")
    p.add_argument("--lead", type=float, default=0.5, help="seconds of silence at both ends (default 0.5)")
    p.add_argument("--crf", type=int, default=30, help="H.264 quality, higher is smaller (default 30)")
    args = p.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="make-demo-") as tmp:
            ref = build_demo(args.out, args.work or tmp, num=args.num, seed=args.seed, snr=args.snr,
                             noise_seed=args.noise_seed, lead=args.lead, pause=args.pause, crf=args.crf)
    except AVSRError as e:
        print(f"make_demo: error: {e}", file=sys.stderr)
        return 1
    video = Path(args.out) / "demo.mp4"
    print(f"{video}: {ref['duration']:g} s, {video.stat().st_size / 1024:.0f} KiB, "
          f"{ref['noise']['kind']} at {ref['noise']['snr_db']:g} dB")
    print(ref["text"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
