#!/usr/bin/env python3
"""Train the SynthGRID audio-visual recogniser (see README.md).

    python recipes/SynthGRID/avsr/train.py recipes/SynthGRID/avsr/hparams/tiny.yaml --data_folder exp/synthgrid
"""

import sys

from avsr.training.recipe import main

if __name__ == "__main__":
    sys.exit(main())
