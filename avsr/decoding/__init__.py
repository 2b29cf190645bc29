"""Decoding: greedy CTC, CTC prefix scoring, joint CTC/attention beam search, alignment."""

from avsr.decoding.beam_search import Hypothesis, greedy_attention, joint_beam_search
from avsr.decoding.ctc import (
    CTCPrefixScorer,
    CTCPrefixState,
    WordTiming,
    forced_align,
    greedy_ctc,
    word_timestamps,
)

__all__ = [
    "CTCPrefixScorer",
    "CTCPrefixState",
    "Hypothesis",
    "WordTiming",
    "forced_align",
    "greedy_attention",
    "greedy_ctc",
    "joint_beam_search",
    "word_timestamps",
]
