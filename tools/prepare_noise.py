#!/usr/bin/env python
"""Noise lists for on-the-fly noise in training: MUSAN, or babble mixed from the corpus' own speech.

Writes ``OUT/train.csv``, ``OUT/valid.csv`` and ``OUT/test.csv`` (columns
``audio, kind, duration, source``), the lists that the recognition recipes'
``train_noise`` / ``valid_noise`` read (:class:`avsr.data.augment.NoiseFolder`).

* ``--musan DIR``: MUSAN's layout, ``music/``, ``noise/`` and ``speech/``,
  each with subfolders of 16 kHz wav files (``ANNOTATIONS`` / ``LICENSE``
  files are ignored). Kinds are the three top folders. Each kind's files are
  split into train / valid / test by a hash of their path (``--valid``,
  ``--test`` fractions; stable when files are added), so no file is shared
  between splits. The lists point at the MUSAN files in place.
* ``--babble-from DATA``: babble of kind ``babble`` made from a prepared data
  folder's ``train.csv`` / ``valid.csv`` / ``test.csv``: each file overlaps
  ``--talkers`` streams of that split's utterances (each utterance at the same
  RMS), so training babble is made of training speakers only and test babble
  of test speakers only. Written as 16 kHz wav under ``OUT/babble/<split>/``;
  existing files are kept on a rerun.

Both can be given; at least one must be.

Usage:
    python tools/prepare_noise.py --musan /data/musan --out exp/noise
    python tools/prepare_noise.py --babble-from exp/lrs3 --out exp/noise --babble-files 200
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from avsr.errors import InputError, run_reporting  # noqa: E402
from avsr.utils import atomic_path, save_csv_atomic  # noqa: E402

SPLITS = ("train", "valid", "test")
MUSAN_KINDS = ("music", "noise", "speech")
COLUMNS = ("audio", "kind", "duration", "source")
SAMPLE_RATE = 16000


def _hash(text: str, seed: int) -> str:
    return hashlib.blake2b(f"{seed}\x1f{text}".encode(), digest_size=8).hexdigest()


def split_files(files: Sequence[str], valid: float, test: float, seed: int = 0) -> dict[str, list[str]]:
    """Split one kind's files into train / valid / test by a hash of their names.

    Args:
        files: file names (relative paths, so the split does not depend on where the corpus lies).
        valid: fraction for valid.
        test: fraction for test.
        seed: another split.

    Returns:
        split -> files (sorted); valid and test get at least one file each when
        there are three or more files, train keeps the rest.
    """
    order = sorted(files, key=lambda f: _hash(f, seed))
    n = len(order)
    n_test = max(1, round(n * test)) if n >= 3 and test > 0 else 0
    n_valid = max(1, round(n * valid)) if n >= 3 and valid > 0 else 0
    return {"test": sorted(order[:n_test]), "valid": sorted(order[n_test:n_test + n_valid]),
            "train": sorted(order[n_test + n_valid:])}


def _duration(path: Path) -> float:
    import soundfile as sf

    try:
        return round(float(sf.info(os.fspath(path)).duration), 3)
    except RuntimeError:
        raise InputError(path, "not a readable audio file") from None


def musan_rows(root: str | os.PathLike, valid: float = 0.1, test: float = 0.1, seed: int = 0) -> dict[str, list[dict]]:
    """The noise rows of a MUSAN tree, per split.

    Args:
        root: the MUSAN folder.
        valid: fraction of each kind's files for valid.
        test: fraction of each kind's files for test.
        seed: another split.

    Returns:
        split -> rows (``audio`` absolute, ``kind``, ``duration``, ``source``: the subfolder).

    Raises:
        InputError: a missing folder of the layout or a kind without wav files.
    """
    base = Path(root)
    if not base.is_dir():
        raise InputError(base, "no such MUSAN folder")
    for kind in MUSAN_KINDS:
        if not (base / kind).is_dir():
            raise InputError(base, f"not a MUSAN folder: missing folder {kind}/ (expected music/, noise/, speech/)")
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for kind in MUSAN_KINDS:
        files = sorted(os.fspath(p.relative_to(base)) for p in (base / kind).rglob("*.wav") if p.is_file())
        if not files:
            raise InputError(base / kind, "no .wav files in this MUSAN folder")
        for split, names in split_files(files, valid, test, seed).items():
            for name in names:
                parts = Path(name).parts
                rows[split].append({"audio": os.fspath((base / name).resolve()), "kind": kind,
                                    "duration": _duration(base / name), "source": parts[1] if len(parts) > 2 else kind})
    return rows


def make_babble(speech: Sequence[np.ndarray], seconds: float, talkers: int, rng: np.random.Generator) -> np.ndarray:
    """Overlap ``talkers`` streams of utterances drawn from ``speech`` (each at unit RMS).

    Args:
        speech: utterances, float32 16 kHz.
        seconds: length of the result.
        talkers: overlapping streams.
        rng: draws the utterances and their order.

    Returns:
        ``float32 (seconds * 16000,)`` babble, peak-normalised to 0.9.
    """
    n = int(round(seconds * SAMPLE_RATE))
    voiced = [x / r for x in (np.asarray(u, np.float64) for u in speech) if len(x) and (r := float(np.sqrt(np.mean(x ** 2)))) > 0]
    if not voiced:
        raise InputError(None, "no non-silent speech to make babble from")
    out = np.zeros(n, np.float64)
    for _ in range(talkers):
        total = int(rng.integers(0, SAMPLE_RATE))  # streams start at different moments
        stream = [np.zeros(total)]
        while total < n:
            x = voiced[int(rng.integers(len(voiced)))]
            stream.append(x)
            total += len(x)
        out += np.concatenate(stream)[:n]
    peak = float(np.max(np.abs(out))) or 1.0
    return (0.9 * out / peak).astype(np.float32)


def babble_rows(data: str | os.PathLike, out: str | os.PathLike, files: int = 100, seconds: float = 30.0,
                talkers: int = 6, seed: int = 0, max_utterances: int = 2000) -> dict[str, list[dict]]:
    """Babble made from each split's speech of a prepared data folder.

    Args:
        data: folder with ``train.csv`` (and ``valid.csv`` / ``test.csv``, used when present).
        out: where ``babble/<split>/*.wav`` go.
        files: babble files for train; valid and test get a tenth (at least one).
        seconds: length of each file.
        talkers: overlapping voices.
        seed: the draw.
        max_utterances: at most this many utterances of a split are read.

    Returns:
        split -> rows.

    Raises:
        InputError: no ``train.csv`` or unreadable audio.
    """
    import soundfile as sf

    from avsr.data.manifest import read_manifest
    from avsr.io import read_audio

    data_dir, out_dir = Path(data), Path(out)
    if not (data_dir / "train.csv").is_file():
        raise InputError(data_dir, "no train.csv to make babble from (run the corpus' prepare.py first)")
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for split in SPLITS:
        manifest = data_dir / f"{split}.csv"
        if not manifest.is_file():
            continue
        count = files if split == "train" else max(1, files // 10)
        paths = [out_dir / "babble" / split / f"babble-t{talkers}-s{seed}-{i:04d}.wav" for i in range(count)]
        if not all(p.is_file() for p in paths):
            utterances = read_manifest(manifest, need_audio=True)
            rng = np.random.default_rng([seed, SPLITS.index(split)])
            pick = rng.permutation(len(utterances))[:max_utterances]
            speech = [read_audio(utterances[i].audio, sample_rate=SAMPLE_RATE) for i in pick]
            for i, path in enumerate(paths):
                file_rng = np.random.default_rng([seed, SPLITS.index(split), i])
                babble = make_babble(speech, seconds, talkers, file_rng)
                if not path.is_file():
                    with atomic_path(path) as tmp:
                        sf.write(tmp, babble, SAMPLE_RATE, format="WAV", subtype="PCM_16")
        rows[split] = [{"audio": os.fspath(p.relative_to(out_dir)), "kind": "babble", "duration": round(seconds, 3),
                        "source": os.fspath(manifest)} for p in paths]
    return rows


def prepare_noise(out: str | os.PathLike, musan: str | None = None, babble_from: str | None = None, *,
                  valid: float = 0.1, test: float = 0.1, babble_files: int = 100, babble_seconds: float = 30.0,
                  talkers: int = 6, seed: int = 0) -> dict[str, Path]:
    """Write the noise lists; returns split -> list path.

    Raises:
        InputError: neither source given, bad fractions, or a bad source (see :func:`musan_rows`, :func:`babble_rows`).
    """
    if musan is None and babble_from is None:
        raise InputError(None, "give --musan DIR and/or --babble-from DATA_FOLDER")
    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise InputError(None, f"valid and test fractions must be in [0, 1) with a sum below 1, got {valid} and {test}")
    out_dir = Path(out)
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    if musan is not None:
        for split, r in musan_rows(musan, valid, test, seed).items():
            rows[split] += r
    if babble_from is not None:
        for split, r in babble_rows(babble_from, out_dir, babble_files, babble_seconds, talkers, seed).items():
            rows[split] += r
    paths = {}
    for split in SPLITS:
        if rows[split]:
            paths[split] = out_dir / f"{split}.csv"
            save_csv_atomic(paths[split], rows[split], COLUMNS)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Run the tool; returns the exit code (0 done, 1 bad input)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the lists (and the babble files)")
    p.add_argument("--musan", help="the MUSAN folder (music/, noise/, speech/)")
    p.add_argument("--babble-from", help="a prepared data folder (train.csv, valid.csv, test.csv) to make babble from")
    p.add_argument("--valid", type=float, default=0.1, help="fraction of each MUSAN kind for valid (default 0.1)")
    p.add_argument("--test", type=float, default=0.1, help="fraction of each MUSAN kind for test (default 0.1)")
    p.add_argument("--babble-files", type=int, default=100, help="babble files for train; valid/test get a tenth (default 100)")
    p.add_argument("--babble-seconds", type=float, default=30.0, help="length of each babble file (default 30)")
    p.add_argument("--talkers", type=int, default=6, help="voices in the babble (default 6)")
    p.add_argument("--seed", type=int, default=0, help="another split / draw")
    args = p.parse_args(argv)

    def run() -> None:
        paths = prepare_noise(args.out, args.musan, args.babble_from, valid=args.valid, test=args.test,
                              babble_files=args.babble_files, babble_seconds=args.babble_seconds,
                              talkers=args.talkers, seed=args.seed)
        for split, path in paths.items():
            print(f"{split}: {path}")

    return run_reporting("prepare_noise", run)


if __name__ == "__main__":
    raise SystemExit(main())
