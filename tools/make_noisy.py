#!/usr/bin/env python
"""Write noisy copies of a manifest's media at given SNRs (video content untouched).

For each SNR and each row: the row's clean speech is mixed with noise from
:mod:`avsr.audio.noise` at exactly that SNR (measured over the
speech-active samples), and a new mp4 is written with the noisy audio and
the source's video stream copied packet for packet (mp4 in, mp4 out; never
re-encoded, so every frame decodes bit-identical, at the same time). The
clean speech is the row's ``audio`` file when there is one at the video's
sample rate (lossless, so the SNR holds against it exactly), otherwise the
audio track of the video. A FLAC of the noisy audio
is written too, and a copy of the manifest pointing at the new files, with
extra columns ``snr_db``, ``noise`` and ``gain`` (where the mixture would clip,
speech and noise are scaled down together by ``gain``: the noisy file holds
``gain * (speech + noise)``). Mouth crops are shared with the clean
manifest (the lips do not change with the noise).

Usage:
    python tools/make_noisy.py data/synthgrid/test.csv --out data/synthgrid_noisy --snr -5 0 5 \\
        --noise babble,music --noise-split test --seed 0

Output: ``OUT/<stem>_snr<SNR>.csv`` and ``OUT/snr<SNR>/<id>.{mp4,flac}``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from avsr.audio.noise import NOISE_SPLITS, NOISE_TYPES, NoiseBank, mix
from avsr.errors import InputError, run_reporting
from avsr.evaluation import parse_noises
from avsr.io import AVClip, probe, read_av, replace_audio
from avsr.utils import atomic_path, save_csv_atomic


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


def _row_rng(seed: int, index: int, snr: float) -> np.random.Generator:
    """The generator of one (row, SNR): any seed and SNR, negative ones included."""
    digest = hashlib.blake2b(f"make_noisy\x1f{seed}\x1f{index}\x1f{snr!r}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def _clean_speech(clip: AVClip, row: dict, base: Path) -> np.ndarray:
    """The clean speech on the video's clock: the row's audio file if it has the clip's rate, else the video's track.

    Args:
        clip: the decoded audio of the video (its frames are not needed).
        row: the manifest row.
        base: folder the row's relative paths start from.

    Returns:
        ``float32 (N,)`` at ``clip.sample_rate``, sample 0 at video time 0.

    Raises:
        InputError: the row names an audio file that is missing or unreadable.
    """
    if row.get("audio"):
        path = _resolve(base, row["audio"])
        try:
            audio, rate = sf.read(path, dtype="float32", always_2d=True)
        except (OSError, RuntimeError, sf.SoundFileError) as e:
            problem = "no such audio file" if not path.exists() else f"cannot read the audio ({type(e).__name__})"
            raise InputError(path, problem) from None
        if rate == clip.sample_rate and len(audio):
            return audio.mean(axis=1)
    lead = int(round(clip.audio_start * clip.sample_rate))
    return np.concatenate([np.zeros(lead, np.float32), clip.audio]) if lead > 0 else clip.audio[-lead:]


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

    Raises:
        InputError: a NaN or ``-inf`` SNR, a missing or malformed manifest, a video without
            audio or pictures.
    """
    src = Path(manifest)
    for snr in snrs:
        if np.isnan(snr) or snr == -np.inf:
            raise InputError(None, f"the SNR must be a number of dB or +inf, got {snr}")
    rows, fields = _read_rows(src)
    out = Path(out_dir)
    bank = NoiseBank(noise_split, kinds, seconds=noise_seconds, variants=2, seed=seed)
    extra = [c for c in ("snr_db", "noise", "gain") if c not in fields]
    written = []
    for snr in snrs:
        folder = out / _snr_name(snr)
        folder.mkdir(parents=True, exist_ok=True)
        new_rows = []
        for i, row in enumerate(rows):
            rng = _row_rng(seed, i, snr)
            kind = kinds[int(rng.integers(len(kinds)))]
            video_in = _resolve(src.parent, row["video"])
            info = probe(video_in)
            if not (info["has_video"] and info["has_audio"]):
                raise InputError(row["video"], "needs both a video and an audio stream")
            clip = read_av(video_in, video=False)  # the pictures are copied, never decoded
            speech = _clean_speech(clip, row, src.parent)
            noisy = mix(speech, bank.sample(len(speech), rng, kind), snr, clip.sample_rate)
            peak = float(np.abs(noisy).max())
            gain = 0.99 / peak if peak > 0.99 else 1.0  # scale speech and noise together: the SNR stays
            noisy = noisy * np.float32(gain)
            video_path, audio_path = folder / f"{row['id']}.mp4", folder / f"{row['id']}.flac"
            # the noisy audio is on the clean speech's clock: sample 0 at time 0
            replace_audio(video_in, video_path, noisy, clip.sample_rate, audio_codec="aac", audio_start=0.0)
            with atomic_path(audio_path) as tmp:
                sf.write(tmp, noisy, clip.sample_rate, format="FLAC", subtype="PCM_16")
            new = dict(row)
            new["video"] = os.path.relpath(video_path, out).replace(os.sep, "/")
            if "audio" in new:
                new["audio"] = os.path.relpath(audio_path, out).replace(os.sep, "/")
            if new.get("mouths"):
                new["mouths"] = os.path.relpath(_resolve(src.parent, row["mouths"]).resolve(), out.resolve())
            new["snr_db"], new["noise"], new["gain"] = f"{snr:g}", kind, f"{gain:.6g}"
            new_rows.append(new)
        target = out / f"{src.stem}_{_snr_name(snr)}.csv"
        save_csv_atomic(target, new_rows, fields + extra)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns the exit code (0 done, 1 bad input, 130 interrupted)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("manifest", help="input manifest CSV (columns id, video, ...)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--snr", type=float, nargs="+", required=True, help="SNRs in dB")
    p.add_argument("--noise", default="babble", help=f"comma-separated noise types from {', '.join(NOISE_TYPES)}")
    p.add_argument("--noise-split", default="test", choices=NOISE_SPLITS, help="noise sources (default test)")
    p.add_argument("--seed", type=int, default=0, help="random seed of noise choice and excerpts (default 0)")
    p.add_argument("--noise-seconds", type=float, default=20.0,
                   help="length of each pooled noise signal in seconds (default 20)")
    args = p.parse_args(argv)

    def run() -> None:
        kinds = list(parse_noises(args.noise))  # one error line for an unknown type, as avsr evaluate
        for path in noisy_copy(args.manifest, args.out, args.snr, kinds, args.noise_split, args.seed,
                               args.noise_seconds):
            print(path)

    # finished files are complete (atomic writes); nothing half-written stays on Ctrl-C
    return run_reporting("make_noisy", run)


if __name__ == "__main__":
    raise SystemExit(main())
