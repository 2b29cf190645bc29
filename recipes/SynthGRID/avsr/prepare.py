#!/usr/bin/env python3
"""Prepare SynthGRID for the recognition recipe: corpus, manifests, tokenizer.

Generates the train, valid and test splits with ``avsr synth`` (disjoint
speakers: test speakers are never seen in training; resumable, so a rerun
only makes what is missing) and trains the sentencepiece BPE vocabulary on
the training transcripts (``DATA/tokenizer.json``).

    python recipes/SynthGRID/avsr/prepare.py --out exp/synthgrid --train 6000 --valid 300 --test 400
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from avsr.data.manifest import read_manifest
from avsr.data.synth import generate
from avsr.errors import AVSRError
from avsr.tokenizer import SentencePieceTokenizer
from avsr.training.recipe import save_tokenizer


def prepare(out: str, train: int, valid: int, test: int, vocab_size: int = 120, processes: int | None = None,
            full_face_test: bool = False, progress: bool = True) -> dict[str, Path]:
    """Generate the splits and the tokenizer; returns the manifest paths (and ``tokenizer``)."""
    paths: dict[str, Path] = {}
    for split, num, seed in (("train", train, 0), ("valid", valid, 1), ("test", test, 2)):
        paths[split] = generate(out, num, split, seed, processes=processes, progress=progress,
                                full_face=full_face_test and split == "test")
    texts = [u.text for u in read_manifest(paths["train"])]
    tokenizer = SentencePieceTokenizer.train(texts, vocab_size=vocab_size, model_type="bpe")
    paths["tokenizer"] = Path(out) / "tokenizer.json"
    save_tokenizer(paths["tokenizer"], tokenizer)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="data folder (the recipe's data_folder)")
    p.add_argument("--train", type=int, default=6000, help="training utterances")
    p.add_argument("--valid", type=int, default=300, help="validation utterances")
    p.add_argument("--test", type=int, default=400, help="test utterances (held-out speakers)")
    p.add_argument("--vocab-size", type=int, default=120, help="BPE vocabulary (120: about one token per GRID word)")
    p.add_argument("--processes", type=int, default=None, help="generator processes")
    p.add_argument("--full-face-test", action="store_true", help="also render full-face test videos")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    try:
        paths = prepare(args.out, args.train, args.valid, args.test, args.vocab_size, args.processes,
                        args.full_face_test, not args.quiet)
    except AVSRError as e:
        print(f"prepare.py: error: {e}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
