"""avsr.inference timing hooks: Transcriber.timings adds the seconds of each stage and changes nothing else."""

from __future__ import annotations

import time

import pytest
import torch

from avsr.inference import TIMED_STAGES, Transcriber, encode_and_search
from transcribe_fixtures import make_bundle, make_media


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    return make_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def transcriber(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny-test.safetensors"
    make_bundle(path)
    with Transcriber.from_checkpoint(path, device="cpu", beam_size=2, batch_size=2) as tr:
        yield tr


def test_timings_cover_every_stage_and_do_not_change_the_result(transcriber: Transcriber, media: dict) -> None:
    assert transcriber.timings is None  # off by default
    plain = transcriber.transcribe(media["face.mp4"], "av")
    transcriber.timings = {}
    try:
        t0 = time.perf_counter()
        timed = transcriber.transcribe(media["face.mp4"], "av")
        wall = time.perf_counter() - t0
        first = dict(transcriber.timings)
        transcriber.transcribe(media["face.mp4"], "av")
        second = dict(transcriber.timings)
    finally:
        transcriber.timings = None
    assert timed == plain
    assert sorted(first) == sorted(TIMED_STAGES)  # an audio-visual file goes through every stage
    assert all(s > 0 for s in first.values())
    assert sum(first.values()) <= wall  # stages do not overlap
    assert all(second[k] > first[k] for k in first)  # accumulated over calls, not reset


def test_an_audio_file_has_no_lips_stage(transcriber: Transcriber, media: dict) -> None:
    transcriber.timings = {}
    try:
        transcriber.transcribe(media["speech.wav"])
        stages = set(transcriber.timings)
    finally:
        transcriber.timings = None
    assert stages == set(TIMED_STAGES) - {"lips"}


def test_encode_and_search_adds_its_two_stages(transcriber: Transcriber) -> None:
    audio = (torch.zeros(1, 16000), torch.tensor([16000]))
    timings = {"encode": 1.0}
    with torch.inference_mode():
        out = encode_and_search(transcriber.model, audio, None, beam_size=2, timings=timings)
        again = encode_and_search(transcriber.model, audio, None, beam_size=2)
    assert set(timings) == {"encode", "search"} and timings["encode"] > 1.0 and timings["search"] > 0
    assert [h.tokens for h in out.hypotheses[0]] == [h.tokens for h in again.hypotheses[0]]

