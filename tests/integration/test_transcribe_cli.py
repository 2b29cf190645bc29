"""``avsr transcribe`` end to end: stdout holds only the text, files per input, subtitles, batch errors."""

from __future__ import annotations

import json
from pathlib import Path

import pysubs2
import pytest

from avsr import cli
from transcribe_fixtures import make_bundle, make_media


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    return make_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("models") / "tiny-test.safetensors"
    make_bundle(path)
    return str(path)


def run(capfd, *args: str | Path) -> tuple[int, list[str], list[str]]:
    """``avsr transcribe ARGS`` in this process; (exit code, stdout lines, stderr lines) at the fd level."""
    capfd.readouterr()
    code = cli.main(["transcribe", *map(str, args), "--quiet", "--beam", "1", "--device", "cpu"])
    out, err = capfd.readouterr()
    return code, out.splitlines(), [line for line in err.splitlines() if line.strip()]


def test_json_for_a_video_and_an_audio_file(capfd, media: dict, bundle: str, tmp_path: Path) -> None:
    code, out, err = run(capfd, media["face.mp4"], media["speech.wav"], "--checkpoint", bundle,
                         "--format", "json", "-o", tmp_path / "out")
    assert code == 0, err
    assert len(out) == 2  # one line of text per input, nothing else
    assert not any("Traceback" in line for line in err)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["speech.json", "test-s0-000000.json"]
    video = json.loads((tmp_path / "out" / "test-s0-000000.json").read_text())
    audio = json.loads((tmp_path / "out" / "speech.json").read_text())
    assert sorted(video) == ["duration", "input", "segments", "text", "words"]
    assert {s["modality"] for s in video["segments"]} == {"av"}
    assert {s["modality"] for s in audio["segments"]} == {"audio"}
    assert out == [video["text"], audio["text"]]


def test_subtitles_and_json_lines_on_stdout(capfd, media: dict, bundle: str, tmp_path: Path) -> None:
    for fmt in ("srt", "vtt"):
        target = tmp_path / f"speech.{fmt}"
        code, out, err = run(capfd, media["speech.wav"], "--checkpoint", bundle, "--format", fmt, "-o", target)
        assert code == 0, err
        subs = pysubs2.load(str(target))
        assert len(subs) >= 1 and subs[0].start < subs[0].end
        assert " ".join(e.plaintext.replace("\n", " ") for e in subs) == out[0]
    code, out, err = run(capfd, media["speech.wav"], "--checkpoint", bundle, "--format", "srt")
    assert code == 0 and out[:2] == ["1", out[1]] and "-->" in out[1]  # subtitles of one input on stdout
    code, out, err = run(capfd, media["speech.wav"], media["long.wav"], "--checkpoint", bundle, "--format", "json")
    assert code == 0 and len(out) == 2  # JSON Lines
    assert [Path(json.loads(line)["input"]).name for line in out] == ["speech.wav", "long.wav"]
    code, out, err = run(capfd, media["speech.wav"], media["long.wav"], "--checkpoint", bundle, "--format", "vtt")
    assert code == 1 and err == ["avsr transcribe: error: --format vtt with several inputs needs -o FOLDER"]


def test_fallbacks_say_so_on_stderr(capfd, media: dict, bundle: str) -> None:
    code, out, err = run(capfd, media["gray.mp4"], "--checkpoint", bundle)
    assert code == 0 and len(out) == 1
    assert err == [f"avsr transcribe: warning: {media['gray.mp4']}: no face found: decoded audio-only"]
    code, out, err = run(capfd, media["gray.mp4"], "--checkpoint", bundle, "--modality", "video")
    assert code == 1 and out == []
    assert err[0].startswith(f"avsr transcribe: error: {media['gray.mp4']}: no face found in any frame")


def test_batch_with_bad_inputs_goes_on_and_fails_at_the_end(capfd, media: dict, bundle: str, tmp_path: Path) -> None:
    empty_dir = tmp_path / "nothing"
    empty_dir.mkdir()
    out_dir = tmp_path / "out"
    code, out, err = run(capfd, media["empty.mp4"], media["speech.wav"], media["text.mp4"], tmp_path / "missing.mkv",
                         empty_dir, str(tmp_path / "*.webm"), "--checkpoint", bundle, "-o", out_dir)
    assert code == 1
    assert len(out) == 1 and (out_dir / "speech.txt").read_text() == out[0] + "\n"
    assert sorted(p.name for p in out_dir.iterdir()) == ["speech.txt"]  # nothing half-written for the others
    assert not any("Traceback" in line for line in err)
    expected = [
        f"{empty_dir}: no media files in this folder",
        f"{tmp_path / '*.webm'}: no files match",
        f"{media['empty.mp4']}: empty file",
        f"{media['text.mp4']}: not a readable media file",
        f"{tmp_path / 'missing.mkv'}: no such file",
    ]
    assert err == [f"avsr transcribe: error: {e}" for e in expected] + ["avsr transcribe: 5 of 6 inputs failed"]


def test_bad_model_or_output_is_one_line_before_any_work(capfd, media: dict, bundle: str, tmp_path: Path) -> None:
    code, out, err = run(capfd, media["speech.wav"], "--model", "no-such-model")
    assert code == 1 and out == [] and len(err) == 1 and "unknown pretrained model 'no-such-model'" in err[0]
    code, out, err = run(capfd, media["speech.wav"], "--checkpoint", tmp_path / "none.safetensors")
    assert code == 1 and len(err) == 1 and err[0].endswith("none.safetensors: no such file")
    (tmp_path / "file").write_text("x")
    code, out, err = run(capfd, media["speech.wav"], media["long.wav"], "--checkpoint", bundle,
                         "-o", tmp_path / "file" / "sub")
    assert code == 1 and len(err) == 1 and "is a file" in err[0]
