"""``avsr transcribe`` end to end: stdout holds only the text, files per input, subtitles, batch errors."""

from __future__ import annotations

import json
from pathlib import Path

import pysubs2
import pytest

from avsr import cli
from transcribe_fixtures import make_bundle, make_hard_media, make_lm, make_media


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    return make_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def hard(media: dict, tmp_path_factory) -> dict:
    return make_hard_media(media, tmp_path_factory.mktemp("hard"))


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


# --------------------------------------------------------------------------- partial and awkward inputs

WARN = "avsr transcribe: warning: {}: {}"


@pytest.mark.parametrize("name, modalities, notice", [
    ("one_frame.mp4", ["video"], "no audio stream: lip reading only"),
    ("stereo8k.wav", ["audio"], None),
    ("portrait.mp4", ["av"], None),
    ("fps60.mp4", ["av"], None),
    ("silent_face.mp4", ["video"], "no audio stream: lip reading only"),
    ("speech.wav", ["audio"], None),
    ("silent_audio_face.mp4", ["video"], "the audio track is silent: lip reading only"),
    ("bad_audio.mkv", ["video"], "cannot decode audio (damaged data): lip reading only"),
])
def test_partial_input_gives_a_result_that_says_its_modality(capfd, media: dict, hard: dict, bundle: str,
                                                             name: str, modalities: list, notice: str | None) -> None:
    path = hard.get(name) or media[name]
    code, out, err = run(capfd, path, "--checkpoint", bundle, "--format", "json")
    assert code == 0, err
    assert err == ([WARN.format(path, notice)] if notice else [])
    assert len(out) == 1  # one JSON line, nothing else on stdout
    result = json.loads(out[0])
    assert result["duration"] == pytest.approx(0.04 if name == "one_frame.mp4" else 2.56, abs=0.1)
    assert [s["modality"] for s in result["segments"]] == modalities
    assert all(0.0 <= s["start"] < s["end"] <= result["duration"] + 0.05 for s in result["segments"])
    assert result["text"] == " ".join(s["text"] for s in result["segments"] if s["text"])


def test_face_only_in_the_first_half(capfd, hard: dict, media: dict, bundle: str) -> None:
    path = hard["half_face.mp4"]  # the utterance, 3 s of pause, the utterance again with the face gone
    code, out, err = run(capfd, path, "--checkpoint", bundle, "--format", "json")
    assert code == 0 and len(out) == 1
    assert err == [WARN.format(path, "no face (or too little of one) in 1 of 2 segments: decoded those audio-only")]
    result = json.loads(out[0])
    first, second = result["segments"]
    assert (first["modality"], second["modality"]) == ("av", "audio")
    words, speech = media["words"], (result["duration"] - 3.0) / 2
    assert first["start"] <= words[0][1] and words[-1][2] <= first["end"] < speech + 1.0  # the face part: av
    assert second["start"] <= speech + 3.0 + words[0][1] and second["end"] >= speech + 3.0 + words[-1][2]


def test_too_little_to_recognise_says_so(capfd, hard: dict, bundle: str) -> None:
    # one frame with 40 ms of sound: nothing the voice activity detector calls speech; an empty line, a notice
    code, out, err = run(capfd, hard["one_frame_av.mp4"], "--checkpoint", bundle)
    assert code == 0 and out == [""]
    assert err == [WARN.format(hard["one_frame_av.mp4"], "no speech found: empty transcript")]


def test_truncated_and_faceless_inputs_in_a_batch(capfd, media: dict, hard: dict, bundle: str,
                                                  tmp_path: Path) -> None:
    inputs = [media["truncated.mp4"], hard["truncated.mkv"], hard["gray_no_audio.mp4"], hard["one_frame.mp4"]]
    code, out, err = run(capfd, *inputs, "--checkpoint", bundle, "-o", tmp_path / "out")
    assert code == 1, err  # something failed
    assert not any("Traceback" in line for line in err)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["one_frame.txt", "truncated-1.txt"] and len(out) == 2, err  # the good ones still ran
    errors = [line for line in err if ": error: " in line]
    assert errors == [
        f"avsr transcribe: error: {media['truncated.mp4']}: not a readable media file",
        f"avsr transcribe: error: {hard['gray_no_audio.mp4']}: no audio stream and no face found: nothing to recognise",
    ]
    assert err[-1] == "avsr transcribe: 2 of 4 inputs failed"
    assert sum("truncated.mkv" in line for line in err) == 1  # one notice that it was cut short
    assert [line for line in err if "truncated.mkv" in line][0].endswith("(truncated?): decoded what is there")


# --------------------------------------------------------------------------- --lm and --jobs


def test_language_model_option(capfd, media: dict, bundle: str, tmp_path: Path) -> None:
    from avsr.checkpoints import load_bundle
    from avsr.tokenizer import CharTokenizer

    make_lm(tmp_path / "lm.safetensors", load_bundle(bundle)[2])
    code, out, err = run(capfd, media["speech.wav"], "--checkpoint", bundle, "--lm", tmp_path / "lm.safetensors",
                         "--lm-weight", "0.5")
    assert code == 0 and len(out) == 1 and err == []
    make_lm(tmp_path / "other.safetensors", CharTokenizer.train(["xyz"]), ["xyz"])
    code, out, err = run(capfd, media["speech.wav"], "--checkpoint", bundle, "--lm", tmp_path / "other.safetensors")
    assert code == 1 and out == [] and len(err) == 1
    assert err[0].startswith(f"avsr transcribe: error: {tmp_path / 'other.safetensors'}: language model was trained "
                             "with another tokenizer")
    code, out, err = run(capfd, media["speech.wav"], "--checkpoint", tmp_path / "lm.safetensors")
    assert code == 1 and len(err) == 1 and "is a token language model bundle, not a recognition model" in err[0]


def test_jobs_give_the_same_outputs_in_input_order(capfd, media: dict, bundle: str, tmp_path: Path) -> None:
    inputs = [media["speech.wav"], media["text.mp4"], media["gray.mp4"]]  # the middle one is bad
    runs = {}
    for jobs in (1, 2):
        out_dir = tmp_path / f"jobs{jobs}"
        code, out, err = run(capfd, *inputs, "--checkpoint", bundle, "--format", "json", "-o", out_dir,
                             "--jobs", str(jobs))
        files = {p.name: json.loads(p.read_text()) for p in out_dir.iterdir()}
        runs[jobs] = code, out, err, files
    assert runs[2] == runs[1]
    code, out, err, files = runs[2]
    assert code == 1 and sorted(files) == ["gray.json", "speech.json"]
    assert out == [files["speech.json"]["text"], files["gray.json"]["text"]]
    assert err == [f"avsr transcribe: error: {media['text.mp4']}: not a readable media file",
                   f"avsr transcribe: warning: {media['gray.mp4']}: no face found: decoded audio-only",
                   "avsr transcribe: 1 of 3 inputs failed"]
    code, out, err = run(capfd, media["speech.wav"], "--checkpoint", bundle, "--jobs", "0")
    assert code == 1 and err == ["avsr transcribe: error: jobs must be a positive integer, got 0"]
