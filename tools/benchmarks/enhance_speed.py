#!/usr/bin/env python
"""Speed of ``avsr enhance`` on this machine: real-time factors of the model and of the whole pipeline.

The input is the noisy demo video of ``egs/transcribe`` (or ``--video``)
looped to ``--seconds`` seconds (default 60), written once to a temporary
folder. Measured side by side in one run, after a warm-up call:

* enhancer model, audio-visual: :meth:`Enhancer.enhance_array` on the decoded
  audio and the mouth crops (10 s chunks, as ``avsr enhance`` runs);
* enhancer model, audio only: the same without the crops;
* spectral gating (``noisereduce``, the classical baseline), for comparison;
* lip frontend: decoding + landmarks + alignment + crops of the whole video;
* whole pipeline, audio-visual: :meth:`Enhancer.enhance_file` to an ``.mp4``
  (decoding, lips, model, AAC encoding, video stream copy), as
  ``avsr enhance talk.mp4 -o out.mp4`` does;
* whole pipeline, audio only: to a ``.wav``.

Real-time factor = seconds of work / seconds of input (lower is faster).
The header records the CPU, torch threads, nice value and load average
before and after (other jobs inflate every figure). Prints a markdown table
and writes ``enhance_speed.md`` / ``.csv`` under ``--out``.

Usage:
    python tools/benchmarks/enhance_speed.py [--seconds 60] [--video V]
        [--model NAME | --checkpoint PATH | --untrained] [--out results/benchmarks]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from transcribe_speed import DEMO, make_long_video  # noqa: E402

from avsr.enhancement import Enhancer  # noqa: E402
from avsr.enhancement_eval import spectral_gating  # noqa: E402
from avsr.errors import AVSRError  # noqa: E402
from avsr.io import read_audio  # noqa: E402
from avsr.utils import markdown_table, save_table  # noqa: E402

#: Goal of issue 11 on this CPU (real-time factor of the enhancer model, audio-visual).
TARGET = 0.2


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(en: Enhancer, video: str, duration: float, tmp: str) -> list[dict]:
    """Time every row of the table on ``video`` (``duration`` seconds)."""
    from avsr.vision import extract_mouths_from_file

    audio = read_audio(video)
    track = {}
    lips = _timed(lambda: track.update(t=extract_mouths_from_file(video, detector=en._landmarks())))
    mouths, found = track["t"].mouths, track["t"].found
    rows = [
        ("enhancer model, audio-visual", "Enhancer.enhance_array(audio, mouths), 10 s chunks",
         _timed(lambda: en.enhance_array(audio, mouths, found)), f"<= {TARGET:g}"),
        ("enhancer model, audio only", "Enhancer.enhance_array(audio)", _timed(lambda: en.enhance_array(audio)), ""),
        ("spectral gating", "noisereduce.reduce_noise, non-stationary (baseline)",
         _timed(lambda: spectral_gating(audio)), ""),
        ("lip frontend", "decode + landmarks + alignment + crops of the whole video", lips, ""),
        ("whole pipeline, audio-visual", "Enhancer.enhance_file(video, out.mp4): avsr enhance",
         _timed(lambda: en.enhance_file(video, os.path.join(tmp, "out.mp4"), "av")), ""),
        ("whole pipeline, audio only", "Enhancer.enhance_file(video, out.wav, modality=audio)",
         _timed(lambda: en.enhance_file(video, os.path.join(tmp, "out.wav"), "audio")), ""),
    ]
    return [{"stage": name, "what": what, "seconds": round(sec, 3), "rtf": round(sec / duration, 4), "target": target}
            for name, what, sec, target in rows]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and save it; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video", default=str(DEMO), help="clip to loop (default: egs/transcribe/demo.mp4)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the looped input (default 60)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--model", default=None, help="bundled enhancer name (default: the demo enhancer)")
    group.add_argument("--checkpoint", default=None, help="enhancer bundle (.safetensors)")
    group.add_argument("--untrained", action="store_true",
                       help="an untrained enhancer_tiny (same architecture, so the same speed)")
    p.add_argument("--out", default="results/benchmarks", help="folder for enhance_speed.md / .csv")
    args = p.parse_args(argv)
    if not args.seconds > 0:
        p.error(f"--seconds must be positive, got {args.seconds}")
    load_before = os.getloadavg()
    try:
        if args.untrained:
            from avsr.models.enhancer import enhancer_tiny

            en, name = Enhancer(enhancer_tiny(), device="cpu"), "enhancer_tiny (untrained)"
        elif args.checkpoint:
            en, name = Enhancer.from_checkpoint(args.checkpoint, device="cpu"), Path(args.checkpoint).name
        else:
            en, name = Enhancer.from_pretrained(args.model, device="cpu"), args.model or "synthgrid-enhance-tiny"
        with en, tempfile.TemporaryDirectory(prefix="enhance-speed-") as tmp:
            video = os.path.join(tmp, "long.mp4")
            duration = make_long_video(args.video, video, args.seconds)
            warm = os.path.join(tmp, "warm.mp4")
            make_long_video(args.video, warm, 3.0)
            en.enhance_file(warm, os.path.join(tmp, "warm-out.mp4"))  # face mesh graph, first-call allocations
            rows = measure(en, video, duration, tmp)
    except AVSRError as e:
        print(f"enhance_speed: error: {e}", file=sys.stderr)
        return 1
    load_after = os.getloadavg()
    params = sum(p.numel() for p in en.model.parameters())
    header = (
        f"avsr enhance speed, model {name} ({params / 1e6:.2f} M parameters), on {Path(args.video).name} "
        f"looped to {duration:g} s. {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__} with {torch.get_num_threads()} thread(s), nice {os.nice(0)}; load average "
        f"(1/5/15 min) {'/'.join(f'{x:.2f}' for x in load_before)} before, "
        f"{'/'.join(f'{x:.2f}' for x in load_after)} after (other jobs on the machine inflate every figure)."
    )
    table = markdown_table(rows, header, titles={"rtf": "real-time factor"}, formats={"seconds": ".2f", "rtf": ".3f"},
                           right=("seconds", "rtf", "target"))
    print(table)
    md_path, csv_path = save_table(args.out, "enhance_speed", table, rows)
    print(f"saved {md_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
