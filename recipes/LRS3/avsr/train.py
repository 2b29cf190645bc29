#!/usr/bin/env python3
"""Train the LRS3 audio-visual recogniser (see README.md).

    python recipes/LRS3/avsr/train.py recipes/LRS3/avsr/hparams/base.yaml --data_folder exp/lrs3 --noise_folder exp/noise
"""

import sys

from avsr.training.recipe import main

if __name__ == "__main__":
    sys.exit(main())
