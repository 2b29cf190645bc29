#!/usr/bin/env python3
"""Train the SynthGRID audio-visual speech enhancer (see README.md).

    python recipes/SynthGRID/enhance/train.py recipes/SynthGRID/enhance/hparams/tiny.yaml --data_folder exp/synthgrid
"""

import sys

from avsr.training.recipe import main, run_enhance

if __name__ == "__main__":
    sys.exit(main(run=run_enhance))
