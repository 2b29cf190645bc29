#!/usr/bin/env python3
"""Train the LRS3 audio-visual speech enhancer (see README.md).

    python recipes/LRS3/enhance/train.py recipes/LRS3/enhance/hparams/base.yaml --data_folder exp/lrs3 --noise_folder exp/noise
"""

import sys

from avsr.training.recipe import main, run_enhance

if __name__ == "__main__":
    sys.exit(main(run=run_enhance))
