#!/usr/bin/env python
"""Noise for choosing between trained models: fresh draws of the *training* noise sources.

``avsr evaluate`` mixes in the synthesised **test** sources, which only the
final measurement may hear. To compare candidate bundles (two stages, two
checkpoint sets) without looking at the test noise, evaluate them on the
valid split with this folder as ``--noise-list``: one subfolder per kind,
each holding ``--variants`` signals made by the training sources' generator
with a seed the training bank never uses (the recipe's bank uses seeds
``noise_bank_seed`` .. ``noise_bank_seed + noise_bank_variants - 1``).

Usage:
    python recipes/SynthGRID/avsr/selection_noise.py --out exp/selection_noise
    avsr evaluate --checkpoint RUN/model.safetensors --manifest exp/synthgrid/valid.csv \\
        --noise-list exp/selection_noise --noise babble,music --snr=clean,0,-5,-10 --out RUN/selection
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # run from a checkout without installing

from avsr.audio.noise import make_noise  # noqa: E402
from avsr.errors import InputError  # noqa: E402
from avsr.evaluation import parse_noises  # noqa: E402
from avsr.utils import atomic_path  # noqa: E402

SAMPLE_RATE = 16000


def write_selection_noise(out: str | os.PathLike, kinds: str | Sequence[str], seconds: float = 30.0,
                          variants: int = 2, seed: int = 1000) -> list[Path]:
    """Write ``variants`` training-source signals of each kind under ``out/<kind>/``.

    Args:
        kinds: noise types, a list or a comma-separated string.

    Returns:
        the written wav files (existing ones are rewritten; each write is atomic).

    Raises:
        InputError: an unknown kind or none, or a non-positive length or count.
    """
    kinds = parse_noises(kinds)
    if seconds <= 0 or variants < 1:
        raise InputError(None, f"need seconds > 0 and variants >= 1, got {seconds} and {variants}")
    paths = []
    for kind in kinds:
        for i in range(variants):
            signal = make_noise(kind, int(seconds * SAMPLE_RATE), "train", seed + i, SAMPLE_RATE)
            path = Path(out) / kind / f"{kind}-train-seed{seed + i}.wav"
            with atomic_path(path, suffix=".part") as tmp:  # not an audio name: a noise folder never reads it
                sf.write(tmp, signal, SAMPLE_RATE, format="WAV", subtype="FLOAT")
            paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (one subfolder per noise kind)")
    p.add_argument("--kinds", default="babble,music", help="comma-separated noise types (default babble,music)")
    p.add_argument("--seconds", type=float, default=30.0, help="length of each signal (default 30)")
    p.add_argument("--variants", type=int, default=2, help="signals per kind (default 2)")
    p.add_argument("--seed", type=int, default=1000, help="first seed (default 1000; training uses 0, 1)")
    args = p.parse_args(argv)
    try:
        paths = write_selection_noise(args.out, args.kinds, args.seconds, args.variants, args.seed)
    except InputError as e:
        print(f"selection_noise.py: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"selection_noise.py: error: {args.out}: cannot write the noise files ({e.strerror or e})", file=sys.stderr)
        return 1
    print(f"wrote {len(paths)} files under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
