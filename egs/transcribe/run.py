#!/usr/bin/env python
"""Transcribe the noisy demo video with each modality and compare with the reference.

Runs ``avsr transcribe --modality M demo.mp4`` for M = av, audio, video
(the bundled default model unless ``--model``/``--checkpoint`` says
otherwise), then prints the reference and the three transcripts with each
one's word error rate (:func:`avsr.metrics.wer`, jiwer).

Usage:
    python egs/transcribe/run.py [--video egs/transcribe/demo.mp4] [--model NAME | --checkpoint PATH] [--beam 10]

Works from any current directory: the demo and its reference are found next
to this script.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from avsr.metrics import wer  # noqa: E402

MODALITIES = ("av", "audio", "video")
_NAMES = {"av": "audio-visual", "audio": "audio only", "video": "video only (lips)"}


def transcribe(video: Path, modality: str, extra: list[str]) -> str:
    """The text ``avsr transcribe`` prints for one modality.

    Args:
        video: the input.
        modality: ``av``, ``audio`` or ``video``.
        extra: more ``avsr transcribe`` arguments (model, beam).

    Returns:
        the transcript (its stdout line).

    Raises:
        SystemExit: ``avsr transcribe`` failed (its error line is on stderr).
    """
    cmd = [sys.executable, "-m", "avsr", "transcribe", "--quiet", "--modality", modality, *extra, str(video)]
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(done.returncode)
    return done.stdout.strip()


def report(reference: str, transcripts: dict[str, str]) -> str:
    """The reference and each transcript with its WER, as a markdown table.

    Args:
        reference: the reference transcript.
        transcripts: text per modality.

    Returns:
        the table.
    """
    lines = ["| modality | WER (%) | transcript |", "|---|---:|---|", f"| reference | | {reference} |"]
    for modality, text in transcripts.items():
        lines.append(f"| {_NAMES[modality]} | {100 * wer([reference], [text]):.1f} | {text} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Transcribe the demo three times and print the comparison; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video", type=Path, default=HERE / "demo.mp4", help="input (default: the demo)")
    p.add_argument("--reference", type=Path, default=None,
                   help="reference transcript file (default: the video's .txt next to it)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--model", help="bundled model name (default: avsr's default)")
    group.add_argument("--checkpoint", type=Path, help="model bundle (.safetensors)")
    p.add_argument("--beam", type=int, default=None, help="beam size (default: avsr's default)")
    args = p.parse_args(argv)
    video = args.video.resolve()
    ref_path = (args.reference or video.with_suffix(".txt")).resolve()
    if not ref_path.is_file():
        print(f"run.py: error: {ref_path}: no reference transcript", file=sys.stderr)
        return 1
    reference = " ".join(ref_path.read_text().split())
    extra: list[str] = []
    if args.model:
        extra += ["--model", args.model]
    if args.checkpoint:
        extra += ["--checkpoint", str(args.checkpoint.resolve())]
    if args.beam is not None:
        extra += ["--beam", str(args.beam)]
    transcripts = {m: transcribe(video, m, extra) for m in MODALITIES}
    print(report(reference, transcripts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
