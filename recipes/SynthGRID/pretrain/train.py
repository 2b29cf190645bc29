#!/usr/bin/env python3
"""Masked audio-visual pretraining on SynthGRID, without transcripts (see README.md).

    python recipes/SynthGRID/pretrain/train.py recipes/SynthGRID/pretrain/hparams/tiny.yaml --data_folder exp/synthgrid
"""

import sys

from avsr.training.recipe import main, run_pretrain

if __name__ == "__main__":
    sys.exit(main(run=run_pretrain))
