"""egs/transcribe: the checked-in noisy demo video, its reference, its generator and the comparison script."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avsr.io import probe, read_av
from transcribe_fixtures import make_bundle

EGS = Path(__file__).resolve().parents[2] / "egs" / "transcribe"


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((EGS / "demo.json").read_text())


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_is_a_small_audio_visual_clip_of_the_documented_length(reference: dict) -> None:
    video = EGS / "demo.mp4"
    assert video.stat().st_size < 1_000_000
    info = probe(video)
    assert info["has_audio"] and info["has_video"]
    clip = read_av(video)
    assert clip.sample_rate == 16000 and clip.frames.shape[1:] == (512, 512, 3)  # the full-face form
    assert len(clip.frames) / 25.0 == pytest.approx(reference["duration"], abs=1e-6)
    assert len(clip.audio) / 16000 == pytest.approx(reference["duration"], abs=0.05)
    assert 8.0 <= reference["duration"] <= 12.0
    assert float(np.abs(clip.audio).max()) > 0.05  # loud babble throughout, pauses included
    pause = clip.audio[: int(0.4 * 16000)]  # before the first word: only the noise
    assert float(np.sqrt(np.mean(pause**2))) > 0.01


def test_reference_transcript_and_word_times_agree(reference: dict) -> None:
    utts = reference["utterances"]
    assert len(utts) == 3 and len({u["speaker"] for u in utts}) == 3
    assert all(u["id"].startswith("test-s2-") for u in utts)  # the recipe's held-out test speakers
    assert reference["noise"] == {**reference["noise"], "kind": "babble", "split": "test", "snr_db": -5.0}
    assert (EGS / "demo.txt").read_text().strip() == reference["text"] == " ".join(u["text"] for u in utts)
    last = 0.0
    for u in utts:
        assert [w for w, _, _ in u["words"]] == u["text"].split()
        for _, start, end in u["words"]:
            assert u["start"] <= start < end <= u["end"] and start >= last - 1e-9
            last = end
    assert last < reference["duration"]


@pytest.mark.slow
def test_make_demo_rebuilds_the_same_reference(tmp_path: Path, reference: dict) -> None:
    make_demo = _load("make_demo")
    assert make_demo.main(["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]) == 0
    assert json.loads((tmp_path / "out" / "demo.json").read_text()) == reference
    assert (tmp_path / "out" / "demo.txt").read_text() == (EGS / "demo.txt").read_text()
    ours, theirs = read_av(tmp_path / "out" / "demo.mp4", video=False), read_av(EGS / "demo.mp4", video=False)
    assert len(ours.audio) == len(theirs.audio)
    assert float(np.abs(ours.audio - theirs.audio).max()) < 1e-3  # same speech and babble (AAC may differ a hair)


@pytest.mark.slow
def test_run_script_prints_three_transcripts_with_wer_from_any_folder(tmp_path: Path) -> None:
    bundle = tmp_path / "tiny.safetensors"
    make_bundle(bundle)
    done = subprocess.run([sys.executable, str(EGS / "run.py"), "--checkpoint", str(bundle), "--beam", "1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[2] == f"| reference | | {(EGS / 'demo.txt').read_text().strip()} |"
    rows = [re.match(r"\| (.+?) \| ([\d.]+) \| (.*) \|$", line) for line in lines[3:]]
    assert [m.group(1) for m in rows] == ["audio-visual", "audio only", "video only (lips)"]
    assert all(float(m.group(2)) >= 0 for m in rows)
