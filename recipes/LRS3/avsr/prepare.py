#!/usr/bin/env python3
"""Prepare LRS3 for the recognition recipe: mouths, cut segments, 16 kHz wav, manifests, tokenizer.

Reads the official layout (``pretrain/``, ``trainval/``, ``test/`` of
``SPEAKER/ID.mp4`` + ``ID.txt``), extracts mouth crops with
``tools/extract_lips.py`` (``--jobs`` processes), cuts pretrain clips longer
than ``--max-seconds`` between words by their word timings, holds whole
trainval speakers out for validation, and trains a sentencepiece unigram
vocabulary on the training transcripts. Resumable: a rerun skips finished
clips; failures go to ``OUT/failures.csv`` (see ``recipes/common/av_prepare.py``).

    python recipes/LRS3/avsr/prepare.py /data/lrs3 --out exp/lrs3 --jobs 16
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the checkout: recipes.common

from recipes.common.lrs import main_lrs3  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_lrs3(description=__doc__.split("\n\n")[0]))
