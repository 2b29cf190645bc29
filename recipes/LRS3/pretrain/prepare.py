#!/usr/bin/env python3
"""Prepare LRS3 for masked audio-visual pretraining: mouths, cut segments, 16 kHz wav, manifests (no tokenizer).

The same preparation as ``recipes/LRS3/avsr/prepare.py`` (the same data
folder can serve both: finished clips are skipped), without the test split
and the vocabulary: pretraining reads audio and mouths only and ignores the
transcripts. ``train.csv`` holds the pretrain clips cut by word timings into
segments of at most ``--max-seconds`` and the trainval utterances, minus the
validation speakers, whose utterances make ``valid.csv``.

    python recipes/LRS3/pretrain/prepare.py /data/lrs3 --out exp/lrs3 --jobs 16
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the checkout: recipes.common

from recipes.common.lrs import main_lrs3  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_lrs3(description=__doc__.split("\n\n")[0], vocab_default=None, with_test=False))
