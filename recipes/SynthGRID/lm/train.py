#!/usr/bin/env python3
"""Train a token language model on the text of a manifest, for shallow fusion (see README.md).

    python recipes/SynthGRID/lm/train.py --manifest exp/synthgrid/train.csv --valid exp/synthgrid/valid.csv \
        --out exp/SynthGRID/lm/lm.safetensors
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from avsr.checkpoints import read_bundle_metadata, save_model
from avsr.data.manifest import read_manifest
from avsr.errors import AVSRError
from avsr.models.lm import perplexity, train_token_lm
from avsr.pretrained import DEFAULT_MODEL, pretrained_path
from avsr.tokenizer import Tokenizer
from avsr.training.recipe import load_tokenizer


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, train, report perplexity, write the LM bundle (atomically); returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", required=True, help="training manifest CSV (its text column)")
    p.add_argument("--valid", default=None, help="manifest whose text gives the reported perplexity")
    p.add_argument("--tokenizer", default=str(pretrained_path(DEFAULT_MODEL)),
                   help="the recogniser's tokenizer: a model bundle or a tokenizer.json (default: the shipped model)")
    p.add_argument("--out", required=True, help="output LM bundle (.safetensors)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--hidden-dim", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        if args.tokenizer.endswith(".safetensors"):
            tokenizer = Tokenizer.from_dict(read_bundle_metadata(args.tokenizer)["tokenizer"])
        else:
            tokenizer = load_tokenizer(args.tokenizer)
        texts = [u.text for u in read_manifest(args.manifest, check_files=False)]
        valid = [u.text for u in read_manifest(args.valid, check_files=False)] if args.valid else []
        start = time.perf_counter()
        lm = train_token_lm(texts, tokenizer, epochs=args.epochs, seed=args.seed, embed_dim=args.embed_dim,
                            hidden_dim=args.hidden_dim)
        seconds = time.perf_counter() - start
        notes = {"manifest": args.manifest, "sentences": len(texts), "epochs": args.epochs, "seconds": round(seconds)}
        if valid:
            notes["valid_perplexity"] = round(perplexity(lm, valid, tokenizer), 3)
        save_model(args.out, lm, tokenizer, extra=notes)
    except AVSRError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 1
    print(" ".join(f"{k}={v}" for k, v in notes.items()), "->", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
