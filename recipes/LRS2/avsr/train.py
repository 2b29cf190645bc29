#!/usr/bin/env python3
"""Train the LRS2 audio-visual recogniser (see README.md).

    python recipes/LRS2/avsr/train.py recipes/LRS2/avsr/hparams/base.yaml --data_folder exp/lrs2 --noise_folder exp/noise
"""

import sys

from avsr.training.recipe import main

if __name__ == "__main__":
    sys.exit(main())
