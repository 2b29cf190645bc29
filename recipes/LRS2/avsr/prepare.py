#!/usr/bin/env python3
"""Prepare LRS2 for the recognition recipe: mouths, cut segments, 16 kHz wav, manifests, tokenizer.

Reads the official layout: ``main/`` and ``pretrain/`` of ``GROUP/ID.mp4`` +
``ID.txt`` (the archive's ``mvlrs_v1``) and the lists ``pretrain.txt``,
``train.txt``, ``val.txt``, ``test.txt`` next to them or one folder up.
The splits are the lists' (train = train + pretrain, cut between words
into segments of at most ``--max-seconds``; valid = val; test = test). Mouths
come from ``tools/extract_lips.py`` (``--jobs`` processes); a sentencepiece
unigram vocabulary is trained on the training transcripts. Resumable; failures
go to ``OUT/failures.csv`` (see ``recipes/common/av_prepare.py``).

    python recipes/LRS2/avsr/prepare.py /data/lrs2/mvlrs_v1 --out exp/lrs2 --jobs 16
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the checkout: recipes.common

from recipes.common.lrs import main_lrs2  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_lrs2(description=__doc__.split("\n\n")[0]))
