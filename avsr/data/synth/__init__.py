"""SynthGRID: a synthetic audio-visual GRID corpus whose lips carry the words.

Speech comes from eSpeak NG (with phoneme timings), the mouth is drawn from
a viseme track derived from those timings, and speakers (voice, variant,
rate, pitch, mouth look) are split disjointly into train / valid / test.

Example (command line: ``avsr synth --out data/synthgrid --num 1000 --split train --seed 0``)::

    from avsr.data.synth import generate, read_manifest
    manifest = generate("data/synthgrid", num=1000, split="train", seed=0)  # data/synthgrid/train.csv
    rows = read_manifest(manifest)  # words / phonemes decoded, paths absolute
"""

from avsr.data.synth.pipeline import (  # noqa: F401
    FPS,
    MANIFEST_COLUMNS,
    SAMPLE_RATE,
    UtteranceSpec,
    generate,
    make_utterance,
    plan,
    read_manifest,
    write_manifest,
)
from avsr.data.synth.grammar import SLOTS, SLOT_NAMES, VOCABULARY, Sentence  # noqa: F401
from avsr.data.synth.speakers import Speaker, speakers_for_split  # noqa: F401

__all__ = [
    "FPS", "MANIFEST_COLUMNS", "SAMPLE_RATE", "UtteranceSpec", "generate", "make_utterance", "plan",
    "read_manifest", "write_manifest", "SLOTS", "SLOT_NAMES", "VOCABULARY", "Sentence", "Speaker",
    "speakers_for_split",
]
