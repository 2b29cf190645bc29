#!/usr/bin/env python3
"""Cluster targets for SynthGRID pretraining (see README.md).

Iteration 1 (MFCC pooled to 25 fps), fit on the training audio, no transcripts:

    python recipes/SynthGRID/pretrain/make_targets.py --manifests exp/synthgrid/train.csv exp/synthgrid/valid.csv \
        --clusters 100 --out exp/SynthGRID/pretrain/targets-iter1.safetensors

Iteration 2 (layer features of the iteration-1 model): add ``--model PATH --layer L``.
"""

import sys

from avsr.training.clusters import main

if __name__ == "__main__":
    sys.exit(main(prog="make_targets.py"))
