#!/usr/bin/env python
"""Write noisy copies of a manifest's media at given SNRs (video content untouched).

For each SNR and each row: the audio of the row's video (mp4 in) is mixed
with noise from :mod:`avsr.audio.noise` at exactly that SNR (measured over the
speech-active samples), and a new mp4 is written with the same frames at
the same times and the noisy audio (mp4 out; the video is re-encoded at
lossless settings, so its content is unchanged). A FLAC of the noisy audio
is written too, and a copy of the manifest pointing at the new files, with
extra columns ``snr_db`` and ``noise``. Mouth crops are shared with the clean
manifest (the lips do not change with the noise).

Usage:
    python tools/make_noisy.py data/synthgrid/test.csv --out data/synthgrid_noisy --snr -5 0 5 \\
        --noise babble,music --noise-split test --seed 0

Output: ``OUT/<stem>_snr<SNR>.csv`` and ``OUT/snr<SNR>/<id>.{mp4,flac}``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from avsr.audio.noise import NOISE_SPLITS, NOISE_TYPES, NoiseBank, mix
from avsr.errors import AVSRError, InputError
from avsr.io import read_av, write_av
from avsr.utils import atomic_path


def _read_rows(manifest: Path) -> tuple[list[dict], list[str]]:
    if not manifest.is_file():
        raise InputError(manifest, "no such manifest")
    with open(manifest, newline="") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    if "video" not in fields or "id" not in fields:
        raise InputError(manifest, "manifest needs 'id' and 'video' columns")
    return rows, fields


def _resolve(base: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base / p


def _snr_name(snr: float) -> str:
    return f"snr{snr:g}".replace("-", "m")


def noisy_copy(
    manifest: str | os.PathLike, out_dir: str | os.PathLike, snrs: list[float], kinds: list[str],
    noise_split: str = "test", seed: int = 0, noise_seconds: float = 20.0,
) -> list[Path]:
    """Make one noisy copy of ``manifest`` per SNR.

    Args:
        manifest: CSV with at least ``id`` and ``video`` (paths relative to the CSV's folder or absolute).
        out_dir: output folder.
        snrs: SNRs in dB.
        kinds: noise types to draw from (one per row, at random).
        noise_split: ``"train"`` or ``"test"`` noise sources.
        seed: randomness of the noise choice and excerpts.
        noise_seconds: length of each pooled noise signal.

    Returns:
        The written manifests, one per SNR.
    """
    src = Path(manifest)
    rows, fields = _read_rows(src)
    out = Path(out_dir)
    bank = NoiseBank(noise_split, kinds, seconds=noise_seconds, variants=2, seed=seed)
    extra = [c for c in ("snr_db", "noise") if c not in fields]
    written = []
    for snr in snrs:
        folder = out / _snr_name(snr)
        folder.mkdir(parents=True, exist_ok=True)
        new_rows = []
        for i, row in enumerate(rows):
            rng = np.random.default_rng([seed, i, int(round(snr * 100)) + 10_000])
            kind = kinds[int(rng.integers(len(kinds)))]
            clip = read_av(_resolve(src.parent, row["video"]))
            if clip.audio is None or clip.frames is None:
                raise InputError(row["video"], "needs both a video and an audio stream")
            speech = clip.audio
            lead = int(round(clip.audio_start * clip.sample_rate))
            speech = np.concatenate([np.zeros(lead, np.float32), speech]) if lead > 0 else speech[-lead:]
            noisy = mix(speech, bank.sample(len(speech), rng, kind), snr, clip.sample_rate)
            peak = float(np.abs(noisy).max())
            if peak > 0.99:  # scale speech and noise together: the SNR stays
                noisy = noisy * (0.99 / peak)
            video_path, audio_path = folder / f"{row['id']}.mp4", folder / f"{row['id']}.flac"
            write_av(video_path, clip.frames, clip.fps or 25.0, noisy, clip.sample_rate, audio_codec="aac",
                     timestamps=clip.timestamps, crf=0, preset="veryfast")
            with atomic_path(audio_path) as tmp:
                sf.write(tmp, noisy, clip.sample_rate, format="FLAC", subtype="PCM_16")
            new = dict(row)
            new["video"] = os.path.relpath(video_path, out).replace(os.sep, "/")
            if "audio" in new:
                new["audio"] = os.path.relpath(audio_path, out).replace(os.sep, "/")
            if new.get("mouths"):
                new["mouths"] = os.path.relpath(_resolve(src.parent, row["mouths"]).resolve(), out.resolve())
            new["snr_db"], new["noise"] = f"{snr:g}", kind
            new_rows.append(new)
        target = out / f"{src.stem}_{_snr_name(snr)}.csv"
        with atomic_path(target) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fields + extra)
                writer.writeheader()
                writer.writerows(new_rows)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("manifest", help="input manifest CSV (columns id, video, ...)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--snr", type=float, nargs="+", required=True, help="SNRs in dB")
    p.add_argument("--noise", default="babble", help=f"comma-separated noise types from {', '.join(NOISE_TYPES)}")
    p.add_argument("--noise-split", default="test", choices=NOISE_SPLITS, help="noise sources (default test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise-seconds", type=float, default=20.0, help="length of each pooled noise signal")
    args = p.parse_args(argv)
    kinds = [k.strip() for k in args.noise.split(",") if k.strip()]
    try:
        for k in kinds:
            if k not in NOISE_TYPES:
                raise InputError(None, f"unknown noise type {k!r} (choose from {', '.join(NOISE_TYPES)})")
        for path in noisy_copy(args.manifest, args.out, args.snr, kinds, args.noise_split, args.seed,
                               args.noise_seconds):
            print(path)
    except AVSRError as e:
        print(f"make_noisy: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
