"""SynthGRID generator: grammar, eSpeak binding, timing, visemes, rendering, speakers, the run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avsr.data.synth import (
    MANIFEST_COLUMNS,
    SLOT_NAMES,
    SLOTS,
    Sentence,
    generate,
    plan,
    read_manifest,
    speakers_for_split,
)
from avsr.data.synth.espeak import get_engine
from avsr.data.synth.grammar import espeak_text, sample_sentence
from avsr.data.synth.pipeline import align_events, synthesize_speech
from avsr.data.synth.render import (
    CROP_SIZE,
    MouthStyle,
    Nuisance,
    apply_nuisance,
    frame_index,
    mouth_geometry,
    render_crops,
    to_gray,
)
from avsr.data.synth.speakers import VOICES, all_speakers, split_of, validate_voices
from avsr.data.synth.visemes import PARAMS, viseme_of, viseme_track
from avsr.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
SR = 16000


# --------------------------------------------------------------------------- grammar


def test_grammar_sizes_and_sentence_checks():
    assert [len(SLOTS[s]) for s in SLOT_NAMES] == [4, 4, 4, 25, 10, 4]
    assert "w" not in SLOTS["letter"]
    s = sample_sentence(np.random.default_rng(1))
    assert s.text.split() == list(s.words) and s.slot("command") in SLOTS["command"]
    with pytest.raises(ValueError):
        Sentence(("bin", "blue", "at", "w", "one", "now"))
    with pytest.raises(ValueError):
        Sentence(("bin", "blue"))


def test_espeak_text_writes_letter_a_as_phonemes():
    text, spans = espeak_text(["place", "red", "at", "a", "two", "now"])
    assert text == "place red at [[eI]] two now"
    for (a, b), word in zip(spans, text.split()):
        assert text[a - 1:b] == word


# --------------------------------------------------------------------------- eSpeak


def test_espeak_events_and_letter_a():
    eng = get_engine()
    wav, events = eng.synth_isolated("set [[eI]] now", voice="en")
    assert wav.dtype == np.float32 and len(wav) > 0.3 * eng.sample_rate and np.abs(wav).max() <= 1.0
    phonemes = [e.phoneme for e in events if e.kind == "phoneme"]
    assert phonemes[:3] == ["s", "E", "t"] and "eI" in phonemes  # the letter, not the article /@/
    times = [e.time for e in events]
    assert times == sorted(times)
    _, plain = eng.synth_isolated("set a now", voice="en")
    assert "eI" not in [e.phoneme for e in plain if e.kind == "phoneme"]  # the quirk the grammar works around


def test_espeak_unknown_voice_and_determinism():
    eng = get_engine()
    with pytest.raises(InputError, match="unknown espeak-ng voice"):
        eng.synth_isolated("bin", voice="en-gb")  # not an eSpeak voice name
    a, ea = eng.synth_isolated("lay green by q two soon", voice="en-us+f2", rate=170, seed=7)
    eng.synth_isolated("bin white with z nine again", voice="en+m3")  # state in between must not matter
    b, eb = eng.synth_isolated("lay green by q two soon", voice="en-us+f2", rate=170, seed=7)
    np.testing.assert_array_equal(a, b)
    assert ea == eb


# --------------------------------------------------------------------------- timing


def _onsets(audio: np.ndarray, threshold_db: float = -45.0) -> np.ndarray:
    """Times (s) where 10 ms frame energy (5 ms hop) rises above ``threshold_db`` re max."""
    hop, win = SR // 200, SR // 100
    frames = np.lib.stride_tricks.sliding_window_view(audio.astype(np.float64), win)[::hop]
    db = 10 * np.log10((frames**2).mean(axis=1) + 1e-12)
    on = db > db.max() + threshold_db
    rises = np.flatnonzero(on[1:] & ~on[:-1]) + 1
    return rises * hop / SR + 0.5 * win / SR


def test_word_times_agree_with_energy_onsets():
    """With pauses between words every word start is an audible onset: phoneme-event
    times must agree with the energy onsets within 40 ms (acceptance)."""
    errors = []
    for spec in plan("test", 12, seed=3):
        speech = synthesize_speech(spec, np.random.default_rng(spec.seed), word_gap=25)
        assert [w for w, _, _ in speech.words] == list(spec.sentence.words)
        onsets = _onsets(speech.audio)
        for _word, start, end in speech.words:
            assert end > start
            errors.append(np.abs(onsets - start).min())
        assert len(speech.audio) == speech.num_frames * 640
    errors = np.array(errors)
    assert errors.max() < 0.040, errors.max()
    assert np.median(errors) < 0.015


def test_align_events_assigns_phonemes_to_words():
    eng = get_engine()
    words = ("bin", "blue", "at", "a", "two", "now")
    text, spans = espeak_text(words)
    wav, events = eng.synth_isolated(text, voice="en")
    w, p = align_events(events, spans, words, len(wav) / eng.sample_rate)
    assert [x[0] for x in w] == list(words)
    starts = [x[1] for x in w]
    assert starts == sorted(starts) and all(b[1] >= a[2] - 1e-6 for a, b in zip(w, w[1:]))
    assert p[0][0] == "b" and abs(p[0][1] - w[0][1]) < 1e-9
    inside = [x for x in p if not x[0].startswith("_") and w[1][1] <= x[1] < w[1][2]]
    assert [x[0] for x in inside] == ["b", "l", "u:"]


# --------------------------------------------------------------------------- visemes


def test_visemes_close_round_and_confuse_like_real_lips():
    assert PARAMS == ("open", "spread", "round", "teeth", "tongue")
    for p in ("p", "b", "m"):
        np.testing.assert_array_equal(viseme_of(p), viseme_of("b"))  # p/b/m look alike
        assert viseme_of(p)[0, 0] == 0.0  # lips shut
    assert viseme_of("u:")[0, 2] > 0.9 and viseme_of("w")[0, 2] > 0.9 and viseme_of("i:")[0, 2] == 0.0
    assert viseme_of("f")[0, 3] == 1.0 and viseme_of("T")[0, 4] == 1.0  # teeth on lip, tongue out
    assert viseme_of("aI").shape == (2, 6)  # diphthong: two targets
    assert viseme_of("a#").shape == (1, 6) and viseme_of("?!unknown").shape == (1, 6)


def test_viseme_track_closes_for_bilabials_and_is_smooth():
    ph = [("_", 0.0, 0.2), ("a", 0.2, 0.4), ("m", 0.4, 0.5), ("a", 0.5, 0.7), ("_", 0.7, 1.0)]
    track = viseme_track(ph, 25, fps=25.0, sigma=0.03)
    assert track.shape == (25, 5) and track.dtype == np.float32
    opening = track[:, 0]
    assert opening[7] > 0.6 and opening[15] > 0.6  # /a/ is open
    assert opening[11:13].min() < 0.12  # the lips close for /m/ between the vowels
    assert np.abs(np.diff(opening)).max() < 0.5  # coarticulation: no jumps
    gains = np.array([0.5, 1, 1, 1, 1])
    np.testing.assert_allclose(viseme_track(ph, 25, gains=gains)[:, 0], opening * 0.5, atol=1e-6)


# --------------------------------------------------------------------------- rendering


def _dark_centroid(gray: np.ndarray) -> np.ndarray:
    """Centroid of the darkest pixels (mouth interior)."""
    ys, xs = np.nonzero(gray <= np.percentile(gray, 3))
    return np.array([xs.mean(), ys.mean()])


def test_render_crops_centre_the_mouth_and_move_with_speech():
    style = MouthStyle.from_seed(11)
    closed, wide = np.array([0.0, 0, 0, 0, 0]), np.array([0.9, 0.2, 0, 0.3, 0])
    track = np.stack([closed, wide, wide, closed]).astype(np.float32)
    frames = render_crops(track, style, Nuisance.none(), np.random.default_rng(0))
    assert frames.shape == (4, CROP_SIZE, CROP_SIZE, 3) and frames.dtype == np.uint8
    gray = to_gray(frames)
    assert gray.shape == (4, CROP_SIZE, CROP_SIZE)
    assert np.abs(gray[1].astype(int) - gray[0]).mean() > 3  # opening changes the picture
    np.testing.assert_array_equal(gray[1], gray[2])  # same shape, no nuisance: same picture
    c = _dark_centroid(gray[1])
    assert np.abs(c - (CROP_SIZE - 1) / 2).max() < 8  # the open mouth sits in the middle
    geo = mouth_geometry(wide, style)
    assert geo["landmarks"].shape == (4, 2) and geo["inner"].shape[1] == 2


def test_styles_differ_per_speaker_and_are_reproducible():
    assert MouthStyle.from_seed(1) == MouthStyle.from_seed(1)
    a, b = MouthStyle.from_seed(1), MouthStyle.from_seed(2)
    assert a != b


def test_nuisances_keep_shape_and_shift_timing():
    rng = np.random.default_rng(0)
    frames = np.repeat(np.arange(10, dtype=np.uint8)[:, None, None, None] * 20, 3, axis=3)
    frames = np.broadcast_to(frames, (10, 8, 8, 3)).copy()
    late = Nuisance.none().__class__(**{**Nuisance.none().__dict__, "offset": 1, "dropped": (4,)})
    out = apply_nuisance(frames, late, rng)
    assert out.shape == frames.shape
    np.testing.assert_array_equal(frame_index(late, 10), [0, 0, 1, 2, 2, 4, 5, 6, 7, 8])
    np.testing.assert_allclose(out[:, 0, 0, 0], frames[frame_index(late, 10), 0, 0, 0], atol=6)  # 2% flicker
    nz = Nuisance.sample(np.random.default_rng(3), 50)
    assert nz.offset in (-1, 0, 1) and all(0 < d < 50 for d in nz.dropped)


# --------------------------------------------------------------------------- speakers


def test_splits_have_disjoint_speakers_and_voice_groups():
    groups = {s: {sp.group for sp in speakers_for_split(s)} for s in ("train", "valid", "test")}
    assert not groups["train"] & groups["test"] and not groups["train"] & groups["valid"]
    assert not groups["valid"] & groups["test"]
    assert len(all_speakers()) == 864
    assert all(split_of(sp) == "test" for sp in speakers_for_split("test"))
    assert {sp.voice for sp in speakers_for_split("train", ["en-us"])} == {"en-us"}


def test_bad_voices_and_splits():
    assert validate_voices(["en", " en-us"]) == ["en", "en-us"]
    with pytest.raises(InputError, match="en-gb-x-rp"):
        validate_voices(["en-gb"])
    with pytest.raises(InputError, match="unknown voice"):
        speakers_for_split("train", ["klingon"])
    with pytest.raises(InputError, match="split"):
        speakers_for_split("dev")
    assert set(VOICES) >= {"en", "en-gb-x-rp"}


def test_plan_is_deterministic_and_prefix_stable():
    a, b = plan("valid", 6, seed=2), plan("valid", 3, seed=2)
    assert a[:3] == b
    assert plan("valid", 6, seed=3) != a
    assert len({s.id for s in a}) == 6


# --------------------------------------------------------------------------- the run


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return out, generate(out, 3, "valid", seed=1, processes=2, progress=False)


def test_generate_writes_media_and_manifest(small_run):
    out, manifest = small_run
    assert manifest == out / "valid.csv"
    with open(manifest) as f:
        assert f.readline().strip().split(",") == list(MANIFEST_COLUMNS)
    rows = read_manifest(manifest)
    assert [r["id"] for r in rows] == [s.id for s in plan("valid", 3, seed=1)]
    from avsr.io import read_av

    for r in rows:
        assert r["split"] == "valid" and split_of_id(r["speaker"]) == "valid"
        assert [w[0] for w in r["words"]] == r["text"].split()
        audio, sr = sf.read(r["audio"], dtype="float32")
        assert sr == SR and len(audio) == r["num_frames"] * 640
        assert abs(r["duration"] - len(audio) / SR) < 1e-3
        z = np.load(r["mouths"])
        assert z["mouths"].shape == (r["num_frames"], 96, 96) and z["mouths"].dtype == np.uint8
        assert float(z["fps"]) == 25.0
        clip = read_av(r["video"])
        assert clip.frames.shape[1:3] == (96, 96) and abs(len(clip.frames) - r["num_frames"]) <= 1
        assert clip.sample_rate == SR and abs(len(clip.audio) - len(audio)) < 0.05 * SR
        assert r["words"][-1][2] < r["duration"] and r["words"][0][1] > 0.15  # silence around the speech
        assert all(p[1] < p[2] for p in r["phonemes"])


def split_of_id(speaker_id: str) -> str:
    return next(split_of(s) for s in all_speakers() if s.id == speaker_id)


def test_generate_is_resumable_and_deterministic(small_run, tmp_path):
    out, manifest = small_run
    rows = read_manifest(manifest)
    stamps = {r["id"]: os.stat(r["mouths"]).st_mtime_ns for r in rows}
    os.remove(out / "valid" / f"{rows[1]['id']}.json")  # as if the run died on that one
    generate(out, 3, "valid", seed=1, processes=1, progress=False)
    again = read_manifest(manifest)
    assert [r["words"] for r in again] == [r["words"] for r in rows]
    assert os.stat(again[0]["mouths"]).st_mtime_ns == stamps[rows[0]["id"]]  # not redone
    # a fresh run with the same seed gives the same data
    fresh = read_manifest(generate(tmp_path, 2, "valid", seed=1, processes=1, progress=False))
    for a, b in zip(fresh, rows):
        assert a["text"] == b["text"] and a["speaker"] == b["speaker"] and a["words"] == b["words"]
        np.testing.assert_array_equal(np.load(a["mouths"])["mouths"], np.load(b["mouths"])["mouths"])
        np.testing.assert_array_equal(sf.read(a["audio"])[0], sf.read(b["audio"])[0])


def test_generate_rejects_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="positive"):
        generate(tmp_path, -1)
    with pytest.raises(InputError, match="positive"):
        generate(tmp_path, 0)
    with pytest.raises(InputError, match="split"):
        generate(tmp_path, 1, split="dev")
    with pytest.raises(InputError, match="unknown voice"):
        generate(tmp_path, 1, voices=["en-gb"])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        generate(blocker / "sub", 1)
    with pytest.raises(InputError, match="no such face image"):
        generate(tmp_path, 1, face_image=tmp_path / "nope.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read"):
        generate(tmp_path, 1, face_image=bad)


def test_cli_synth_runs_and_reports_errors(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run([sys.executable, "-m", "avsr", "synth", "--out", str(tmp_path), "--num", "1",
                         "--split", "test", "--seed", "4", "--quiet", "--processes", "1"],
                        capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "test.csv").exists()
    row = json.loads(next((tmp_path / "test").glob("*.json")).read_text())
    assert row["split"] == "test" and row["form"] == "crop"
    for args, message in ((["--num", "-2"], "positive"), (["--num", "1", "--voices", "en-gb"], "unknown voice")):
        bad = subprocess.run([sys.executable, "-m", "avsr", "synth", "--out", str(tmp_path), *args],
                             capture_output=True, text=True, env=env, timeout=60)
        assert bad.returncode == 1 and message in bad.stderr and "Traceback" not in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
