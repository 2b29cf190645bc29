"""avsr.inference: segmentation, the Transcriber on real files, modality fallbacks, bad input."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import avsr.pretrained as pretrained
from avsr.decoding import word_timestamps
from avsr.errors import InputError, NoFaceError
from avsr.inference import (
    Transcriber,
    VoiceActivityDetector,
    expand_inputs,
    fixed_windows,
    output_paths,
    plan_segments,
)
from avsr.io import AVClip, read_av
from avsr.tokenizer import CharTokenizer
from transcribe_fixtures import make_bundle, make_lm, make_media

KEYS = ["duration", "input", "segments", "text", "words"]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    return make_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny-test.safetensors"
    make_bundle(path)
    return path


@pytest.fixture(scope="module")
def transcriber(bundle: Path):
    with Transcriber.from_checkpoint(bundle, device="cpu", beam_size=1, batch_size=2) as tr:
        yield tr


@pytest.fixture(scope="module")
def face_result(transcriber: Transcriber, media: dict) -> dict:
    return transcriber.transcribe(media["face.mp4"])


def check_result(result: dict, duration: float) -> None:
    """The structure of a result: keys, types, times inside the input and in order, confidences in [0, 1]."""
    assert sorted(result) == KEYS
    assert result["duration"] == pytest.approx(duration, abs=0.1)
    last = 0.0
    for seg in result["segments"]:
        assert sorted(seg) == ["confidence", "end", "modality", "start", "text"]
        assert last - 1e-9 <= seg["start"] < seg["end"] <= result["duration"] + 0.05
        assert 0.0 <= seg["confidence"] <= 1.0
        assert seg["modality"] in ("av", "audio", "video")
        last = seg["end"]
        inside = [w for w in result["words"] if seg["start"] <= w["start"] < seg["end"]]
        assert " ".join(w["word"] for w in inside) == seg["text"]
        for w in inside:
            assert w["start"] < w["end"] <= seg["end"] + 1e-9 and 0.0 <= w["confidence"] <= 1.0
    starts = [w["start"] for w in result["words"]]
    assert starts == sorted(starts)
    assert result["text"] == " ".join(s["text"] for s in result["segments"] if s["text"])


# --------------------------------------------------------------------------- segmentation


def test_plan_segments_pads_shares_pauses_clips_and_splits() -> None:
    # padded by 0.2 s; the 0.1 s pause between the first two is split in its middle
    assert plan_segments([(1.0, 2.0), (2.1, 3.0)], duration=10.0) == [(20, 51), (51, 80)]
    # clipped to the input; on the 40 ms grid
    assert plan_segments([(0.05, 1.0), (9.6, 12.0)], duration=10.0) == [(0, 30), (235, 250)]
    # longer than max_segment: equal parts
    segs = plan_segments([(0.0, 45.0)], duration=60.0, max_segment=20.0)
    assert len(segs) == 3 and segs[0][0] == 0 and segs[-1][1] == round(45.2 * 25)
    assert all(b - a <= 20 * 25 for a, b in segs) and all(x[1] == y[0] for x, y in zip(segs, segs[1:]))
    assert plan_segments([], duration=5.0) == [] and plan_segments([(6.0, 7.0)], duration=5.0) == []
    assert fixed_windows(50.0) == [(0, 417), (417, 833), (833, 1250)] and fixed_windows(0.04) == [(0, 1)]


def test_vad_finds_the_speech_and_nothing_in_silence(media: dict) -> None:
    vad = VoiceActivityDetector()
    assert vad.speech([np.zeros(16000, np.float32)] * 3) == []
    clip = read_av(media["speech.wav"])
    chunks = [clip.audio[i : i + 1000] for i in range(0, len(clip.audio), 1000)]  # odd chunk sizes
    regions = vad.speech(chunks)
    words = media["words"]
    assert regions and regions[0][0] <= words[0][1] + 0.15 and regions[-1][1] >= words[-1][2] - 0.15
    assert regions == vad.speech([clip.audio])  # chunking does not matter
    # threads: importing silero-vad sets torch to one thread; the detector puts the number back
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        VoiceActivityDetector()._load()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_long_input_is_split_at_the_pause_with_absolute_times(transcriber: Transcriber, media: dict) -> None:
    result = transcriber.transcribe(media["long.wav"])
    speech = len(read_av(media["speech.wav"]).audio) / 16000
    check_result(result, 2 * speech + 3.0)
    segs = result["segments"]
    assert len(segs) == 2 and all(s["modality"] == "audio" for s in segs)
    words = media["words"]
    assert segs[0]["start"] <= words[0][1] and segs[0]["end"] < speech + 1.0
    assert segs[1]["start"] > speech + 2.0 and segs[1]["start"] <= speech + 3.0 + words[0][1]
    assert segs[1]["end"] <= result["duration"] + 1e-9
    # segment (and so subtitle) times are the speech's, not the padded decoding window's
    for seg, offset in zip(segs, (0.0, speech + 3.0)):
        assert abs(seg["start"] - (offset + words[0][1])) < 0.2
        assert abs(seg["end"] - (offset + words[-1][2])) < 0.2
    for w in result["words"]:
        assert any(s["start"] <= w["start"] <= w["end"] <= s["end"] for s in segs)


def test_speech_bounds_pads_and_clips_to_the_segment() -> None:
    from avsr.inference import speech_bounds

    got = speech_bounds([(0, 40), (40, 100)], [(0.5, 1.5), (1.7, 3.0)], lead=0.1, tail=0.2)
    assert np.allclose(got, [(0.4, 1.6), (1.6, 3.2)])  # padded, then clipped to the segment (a cut at 1.6 s)
    assert speech_bounds([(0, 25)], [(2.0, 3.0)]) == [None]


def test_a_long_region_is_cut_at_its_quietest_point() -> None:
    from avsr.inference import _cut_long

    score = np.ones(100)
    score[[25, 45, 70]] = 0.0  # 512-sample windows; 25 lies in the first half of the first part: not eligible
    cut = 45 * 512 + 256  # the centre of window 45
    assert _cut_long(0, 100 * 512, score, max_len=60 * 512, window=512) == [(0, cut), (cut, 51200)]
    assert _cut_long(0, 1000, score, max_len=2000, window=512) == [(0, 1000)]  # short enough: untouched
    parts = _cut_long(0, 100 * 512, np.ones(100), max_len=20 * 512, window=512)
    assert all(b - a <= 20 * 512 for a, b in parts) and parts[0][0] == 0 and parts[-1][1] == 51200
    assert all(x[1] == y[0] for x, y in zip(parts, parts[1:]))


def test_babble_everywhere_is_cut_between_the_words(media: dict) -> None:
    from avsr.audio.noise import make_noise, mix

    speech = read_av(media["speech.wav"]).audio
    gap = 0.12  # shorter than the detector's min_silence: one utterance after the other, one region
    clean = np.concatenate([speech, np.zeros(int(gap * 16000), np.float32), speech])
    noisy = mix(clean, make_noise("babble", len(clean), "test", seed=0), -5.0)
    noisy = (noisy / max(1.0, float(np.abs(noisy).max()))).astype(np.float32)
    vad = VoiceActivityDetector()
    assert len(vad.speech([noisy])) == 1  # the babble is speech to the detector: no pause to split at
    first, second = vad.speech([noisy], max_speech=3.5)
    words, n = media["words"], len(speech) / 16000
    assert first[1] == second[0] and second[1] - second[0] <= 3.5 and first[1] - first[0] <= 3.5
    assert words[-1][2] <= first[1] <= n + gap + words[0][1]  # after the first utterance, before the second


def test_max_segment_bounds_every_segment(bundle: Path, media: dict) -> None:
    with Transcriber.from_checkpoint(bundle, device="cpu", beam_size=1, max_segment=1.0) as tr:
        result = tr.transcribe(media["speech.wav"], modality="audio")
    assert len(result["segments"]) >= 2
    assert all(s["end"] - s["start"] <= 1.0 + 1e-9 for s in result["segments"])


# --------------------------------------------------------------------------- modalities


def test_full_face_video_is_decoded_audio_visually(face_result: dict, media: dict) -> None:
    check_result(face_result, read_av(media["face.mp4"], video=False).duration)
    assert face_result["input"] == str(media["face.mp4"])
    assert face_result["segments"] and {s["modality"] for s in face_result["segments"]} == {"av"}
    assert face_result["words"], "a random model still emits something to align"


def test_a_decoded_clip_gives_the_same_structure(transcriber: Transcriber, media: dict) -> None:
    from_clip = transcriber.transcribe(read_av(media["speech.wav"]))
    from_file = transcriber.transcribe(media["speech.wav"])
    assert from_clip["segments"] == from_file["segments"] and from_clip["words"] == from_file["words"]
    with pytest.raises(InputError, match="8000 Hz"):
        transcriber.transcribe(AVClip("x", None, None, None, np.zeros(8000, np.float32), 8000))


def test_video_without_audio_is_lip_read(transcriber: Transcriber, media: dict, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="avsr"):
        result = transcriber.transcribe(media["silent_face.mp4"])
    check_result(result, 2.5)
    assert result["segments"] and {s["modality"] for s in result["segments"]} == {"video"}
    assert "no audio stream: lip reading only" in caplog.text
    with pytest.raises(InputError, match="no audio stream"):
        transcriber.transcribe(media["silent_face.mp4"], modality="audio")


def test_silent_audio_track_with_a_face_is_lip_read(transcriber: Transcriber, media: dict, caplog) -> None:
    import dataclasses

    clip = read_av(media["face.mp4"])
    muted = dataclasses.replace(clip, audio=np.zeros_like(clip.audio))
    with caplog.at_level(logging.WARNING, logger="avsr"):
        result = transcriber.transcribe(muted)
    assert result["segments"] and {s["modality"] for s in result["segments"]} == {"video"}
    assert "the audio track is silent: lip reading only" in caplog.text
    # a silent track with nothing to look at, or forced audio: an empty transcript that says so
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="avsr"):
        assert transcriber.transcribe(muted, modality="audio")["segments"] == []
        assert transcriber.transcribe(dataclasses.replace(muted, frames=None, timestamps=None))["text"] == ""
    assert caplog.text.count("no speech found: empty transcript") == 2


def test_audio_file_is_decoded_from_audio_alone(transcriber: Transcriber, media: dict, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="avsr"):
        result = transcriber.transcribe(media["speech.wav"])
    check_result(result, 2.5)
    assert result["segments"] and {s["modality"] for s in result["segments"]} == {"audio"}
    assert caplog.text == ""  # an audio file is no fallback
    for forced in ("av", "video"):
        with pytest.raises(InputError, match="no video stream"):
            transcriber.transcribe(media["speech.wav"], modality=forced)


def test_video_without_a_face_falls_back_to_audio(transcriber: Transcriber, media: dict, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="avsr"):
        result = transcriber.transcribe(media["gray.mp4"])
    check_result(result, 2.5)
    assert result["segments"] and {s["modality"] for s in result["segments"]} == {"audio"}
    assert "no face found: decoded audio-only" in caplog.text
    with pytest.raises(NoFaceError, match=r"gray\.mp4: no face found in any frame"):
        transcriber.transcribe(media["gray.mp4"], modality="video")


def test_forced_audio_on_a_face_video(transcriber: Transcriber, face_result: dict, media: dict) -> None:
    result = transcriber.transcribe(media["face.mp4"], modality="audio")
    assert [s["modality"] for s in result["segments"]] == ["audio"] * len(face_result["segments"])
    assert [(s["start"], s["end"]) for s in result["segments"]] == [
        (s["start"], s["end"]) for s in face_result["segments"]
    ]
    with pytest.raises(InputError, match="unknown modality"):
        transcriber.transcribe(media["face.mp4"], modality="lips")


# --------------------------------------------------------------------------- bad input, models, batches


def test_bad_files_give_one_line_and_do_not_stop_a_batch(transcriber: Transcriber, media: dict, tmp_path) -> None:
    names = ["empty.mp4", "text.mp4", "speech.wav", "truncated.mp4"]
    paths = [media[n] for n in names] + [tmp_path / "missing.mp4"]
    out = {Path(p).name: (r, e) for p, r, e in transcriber.transcribe_many(paths)}
    assert out["empty.mp4"][1].endswith("empty.mp4: empty file")
    assert out["text.mp4"][1].endswith("text.mp4: not a readable media file")
    assert out["missing.mp4"][1].endswith("missing.mp4: no such file")
    assert out["speech.wav"][1] is None and out["speech.wav"][0]["segments"]
    result, error = out["truncated.mp4"]  # decodes what is there, or says what is wrong, in one line
    assert (result is None) != (error is None)
    if error is not None:
        assert "truncated.mp4" in error and "\n" not in error


def test_models_by_name_and_by_file(bundle: Path, monkeypatch, tmp_path) -> None:
    with pytest.raises(InputError, match="unknown pretrained model 'nope'"):
        Transcriber.from_pretrained("nope")
    with pytest.raises(InputError, match="no such file"):
        Transcriber.from_checkpoint(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(InputError, match="not a safetensors model bundle"):
        Transcriber.from_checkpoint(tmp_path / "junk.safetensors")
    with pytest.raises(InputError, match="unknown device"):
        Transcriber.from_checkpoint(bundle, device="tpu")
    with pytest.raises(InputError, match="beam size"):
        Transcriber.from_checkpoint(bundle, device="cpu", beam_size=0)
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", bundle.parent)
    tr = Transcriber.from_pretrained("tiny-test", device="auto")
    assert tr.device.type in ("cpu", "cuda") and not tr.model.training


def test_word_confidence_from_ctc_posteriors() -> None:
    tok = CharTokenizer.train(["ab ba"])
    ids = tok.encode("ab ba")
    a, b, space = ids[0], ids[1], ids[2]
    best = [0, a, a, b, 0, space, 0, b, a, a]
    sure = torch.nn.functional.one_hot(torch.tensor(best), tok.vocab_size).float().mul(10).log_softmax(-1)
    unsure = torch.nn.functional.one_hot(torch.tensor(best), tok.vocab_size).float().mul(1).log_softmax(-1)
    high = word_timestamps(sure, ids, tok)
    low = word_timestamps(unsure, ids, tok)
    assert all(w.confidence > 0.99 for w in high)
    assert all(0.0 < w.confidence < 0.5 for w in low)
    assert math.isclose(low[0].confidence, math.exp(float(unsure[1, a] + unsure[3, b]) / 2), rel_tol=1e-5)


def test_expand_inputs_and_output_paths(media: dict, tmp_path: Path) -> None:
    folder = Path(media["speech.wav"]).parent
    (folder / "notes.txt").write_text("x")
    items = expand_inputs([folder, str(folder / "*.wav"), tmp_path / "missing.mp4", str(tmp_path / "*.mkv")])
    paths = [i.path for i in items if i.error is None]
    assert all(Path(p).suffix in (".mp4", ".wav") for p in paths)  # a folder gives its media files only
    assert len(paths) == len(set(paths)) and str(tmp_path / "missing.mp4") in paths  # the glob added no duplicate
    assert [i.error for i in items if i.error] == [f"{tmp_path / '*.mkv'}: no files match"]
    (tmp_path / "empty").mkdir()
    assert expand_inputs([tmp_path / "empty"])[0].error.endswith("no media files in this folder")

    one = output_paths(["a/x.mp4"], tmp_path / "x.srt", ".srt")
    assert one == {"a/x.mp4": tmp_path / "x.srt"}
    many = output_paths(["a/x.mp4", "b/x.mp4", "c/y.wav"], tmp_path / "out", ".json")
    assert [p.name for p in many.values()] == ["x.json", "x-1.json", "y.json"]
    assert output_paths(["a/x.mp4"], str(tmp_path / "dir") + "/", ".txt") == {"a/x.mp4": tmp_path / "dir" / "x.txt"}
    assert output_paths(["a/x.mp4"], None, ".txt") is None
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        output_paths(["a", "b"], tmp_path / "file" / "sub", ".txt")


# --------------------------------------------------------------------------- language model (shallow fusion)


def test_a_language_model_steers_the_transcript(bundle: Path, media: dict, tmp_path: Path) -> None:
    """An LM that knows one sentence pulls a random model's output toward that sentence's characters."""
    from avsr.checkpoints import load_bundle

    _, _, tok = load_bundle(bundle)
    lm_path = tmp_path / "lm.safetensors"
    make_lm(lm_path, tok)

    def lm_share(text: str) -> float:  # fraction of the characters that the LM's sentence has
        return sum(c in set("bin blue now") for c in text) / max(1, len(text))

    plain = Transcriber.from_checkpoint(bundle, device="cpu", beam_size=4).transcribe(media["speech.wav"])
    with Transcriber.from_checkpoint(bundle, device="cpu", beam_size=4, lm=lm_path, lm_weight=3.0) as tr:
        fused = tr.transcribe(media["speech.wav"])
    check_result(fused, 2.5)
    assert lm_share(fused["text"]) > 0.9 and lm_share(fused["text"]) > lm_share(plain["text"]) + 0.3

    make_lm(tmp_path / "other.safetensors", CharTokenizer.train(["only these letters"]), ["these"])
    with pytest.raises(InputError, match="other.safetensors: language model was trained with another tokenizer"):
        Transcriber.from_checkpoint(bundle, device="cpu", lm=tmp_path / "other.safetensors")
    with pytest.raises(InputError, match="LM weight must be a number >= 0"):
        Transcriber.from_checkpoint(bundle, device="cpu", lm=lm_path, lm_weight=-1.0)


def test_jobs_must_be_a_positive_integer(transcriber: Transcriber, media: dict) -> None:
    for bad in (0, -2, 1.5):
        with pytest.raises(InputError, match="jobs must be a positive integer"):
            next(transcriber.transcribe_many([media["speech.wav"]], jobs=bad))


def test_max_len_ratio_caps_the_search(bundle: Path, media: dict) -> None:
    from avsr.checkpoints import load_model
    from avsr.inference import encode_and_search, pad_batch

    model, _ = load_model(bundle)
    audio = read_av(media["speech.wav"]).audio[: 3 * 16000]
    batch = pad_batch([torch.from_numpy(audio), torch.from_numpy(audio[:16000].copy())], "cpu")
    free = encode_and_search(model, batch, None, beam_size=2, ctc_weight=0.3)
    capped = encode_and_search(model, batch, None, beam_size=2, ctc_weight=0.3, max_len_ratio=0.1)
    caps = [math.ceil(0.1 * int(n)) for n in capped.lengths]
    assert all(len(h.tokens) <= cap for hyps, cap in zip(capped.hypotheses, caps) for h in hyps)
    assert any(len(hyps[0].tokens) > cap for hyps, cap in zip(free.hypotheses, caps))  # the cap did bite
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(InputError, match="max output length ratio must be positive"):
            Transcriber.from_checkpoint(bundle, device="cpu", max_len_ratio=bad)
