#!/usr/bin/env python
"""Speed of the SynthGRID generator (``avsr.data.synth.generate``).

Generates ``--num`` training utterances in the crop form (the training fast
path: FLAC + npz crops + a 96x96 mp4) with ``--procs`` processes into a
temporary folder, and ``--num-face`` utterances in the full-face form
(astronaut photo, 512x512 mp4), side by side in one run. Prints a markdown
table of utterances/s, seconds of speech made per second and the time for
1,000 utterances, and writes ``synth_speed.md`` and ``synth_speed.csv``
under ``--out``.

Usage:
    python tools/benchmarks/synth_speed.py [--num 1000] [--procs 2] [--num-face 50] [--out results/benchmarks]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

from avsr.data.synth import generate, read_manifest  # noqa: E402
from avsr.utils import markdown_table, save_table  # noqa: E402


def measure(num: int, procs: int, full_face: bool, seed: int) -> dict:
    """Generate ``num`` utterances in a fresh folder and time it.

    Returns:
        A table row: form, utterances, processes, seconds, utt/s, audio s/s, s per 1,000.
    """
    with tempfile.TemporaryDirectory(prefix="synth-speed-") as tmp:
        t0 = time.perf_counter()
        manifest = generate(tmp, num, "train", seed, processes=procs, full_face=full_face, progress=True)
        wall = time.perf_counter() - t0
        audio = sum(r["duration"] for r in read_manifest(manifest))
    return {
        "form": "full face (512x512)" if full_face else "crop (96x96)",
        "utterances": num,
        "processes": procs,
        "seconds": round(wall, 2),
        "utt_per_s": round(num / wall, 2),
        "audio_s_per_s": round(audio / wall, 1),
        "s_per_1000": round(1000 * wall / num, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and save it; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num", type=int, default=1000, help="crop-form utterances (default 1000)")
    parser.add_argument("--num-face", type=int, default=50, help="full-face utterances (0 to skip)")
    parser.add_argument("--procs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/benchmarks", help="folder for synth_speed.md / .csv")
    args = parser.parse_args(argv)

    rows = [measure(args.num, args.procs, False, args.seed)]
    if args.num_face > 0:
        rows.append(measure(args.num_face, args.procs, True, args.seed))
    header = (
        f"SynthGRID generation speed ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {args.procs} processes)"
    )
    table = markdown_table(rows, header)
    print(table, end="")
    print(f"\ncrop form: {rows[0]['utt_per_s']} utterances/s")
    md_path, csv_path = save_table(args.out, "synth_speed", table, rows)
    print(f"saved {md_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
