"""SynthGRID and the noise library used the way users use them: other face photos,
bad files, interrupted and changed runs, relative paths, odd signals.

Regression tests for defects found by trying to break the generator: a Ctrl-C that
hung the worker pool, a resumed run that kept utterances made for other voices or
another face photo, temporary files left by a killed run, output folders created
before the arguments were checked, giant photos that needed gigabytes per
utterance, NaN / multichannel signals that ``mix`` turned into NaN or a traceback.
"""

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
from skimage import data as skdata

from avsr import cli
from avsr.audio.noise import BABBLE_VOICES, BABBLE_WORDS, make_noise, measure_snr, mix, noise_sources
from avsr.data.synth import generate, make_utterance, plan, read_manifest
from avsr.data.synth.espeak import get_engine
from avsr.data.synth.render import (
    ASTRONAUT,
    MAX_FACE_SIDE,
    MouthStyle,
    Nuisance,
    load_face,
    render_crops,
    render_face,
    to_gray,
)
from avsr.data.synth.speakers import VOICES
from avsr.data.synth.visemes import viseme_track
from avsr.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
SR = 16000


# --------------------------------------------------------------------------- other face photos


def _astronaut_mouth() -> tuple[np.ndarray, float, float]:
    """The astronaut's mouth: centre (pixels), half width (pixels), roll (degrees)."""
    centre = ASTRONAUT[[0, 10, 5, 15]].mean(axis=0)
    d = ASTRONAUT[10] - ASTRONAUT[0]
    return centre, float(np.linalg.norm(d) / 2), float(np.degrees(np.arctan2(d[1], d[0])))


def _photo(kind: str) -> tuple[np.ndarray, np.ndarray, float, float]:
    """A transformed astronaut and where its mouth must be found.

    Returns:
        ``(image, centre, half_width, roll_degrees)``; the image is RGB, RGBA or grey.
    """
    img = skdata.astronaut()
    c, hw, roll = _astronaut_mouth()
    if kind == "mirrored":
        return np.ascontiguousarray(img[:, ::-1]), np.array([img.shape[1] - 1 - c[0], c[1]]), hw, -roll
    if kind == "rotated15":  # counter-clockwise on screen: the mouth line turns by -15 degrees
        m = cv2.getRotationMatrix2D((256.0, 256.0), 15.0, 1.0)
        out = cv2.warpAffine(img, m, (512, 512), borderMode=cv2.BORDER_REFLECT)
        return out, m[:, :2] @ c + m[:, 2], hw, roll - 15.0
    if kind == "small":
        s = 0.45
        return cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA), (c + 0.5) * s - 0.5, hw * s, roll
    if kind == "offcentre_wide":  # non-square, odd width, face near the left edge and the top
        canvas = np.full((420, 901, 3), 35, np.uint8)
        canvas[:, :330] = img[40:460, 60:390]
        return canvas, c - [60, 40], hw, roll
    if kind == "gray":
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), c, hw, roll
    if kind == "dark_rgba":  # darker, warmer skin, with an alpha channel
        dark = np.clip(img.astype(np.float32) * [0.5, 0.38, 0.3], 0, 255).astype(np.uint8)
        alpha = np.full(img.shape[:2], 255, np.uint8)
        alpha[:30] = 0
        return np.dstack([dark, alpha]), c, hw, roll
    raise ValueError(kind)


def _save(path: Path, img: np.ndarray) -> Path:
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA if img.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), img)
    return path


PHOTOS = ("mirrored", "rotated15", "small", "offcentre_wide", "gray", "dark_rgba")


@pytest.mark.parametrize("kind", PHOTOS)
def test_mouth_is_found_on_transformed_photos(kind, tmp_path):
    img, centre, half_width, roll = _photo(kind)
    face = load_face(str(_save(tmp_path / f"{kind}.png", img)))
    assert face.image.ndim == 3 and face.image.shape[2] == 3 and face.image.dtype == np.uint8
    assert face.image.shape[0] % 2 == 0 and face.image.shape[1] % 2 == 0  # H.264 needs even sides
    assert np.linalg.norm(face.centre - centre) < 0.12 * half_width + 1.0, (face.centre, centre)
    assert face.half_width == pytest.approx(half_width, rel=0.1)
    assert np.degrees(face.angle) == pytest.approx(roll, abs=3.0)
    assert face.gray == (kind == "gray")
    if face.gray:  # a black-and-white photo gets a grey mouth, not pink lips
        track = np.array([[0.0, 0, 0, 0, 0], [0.8, 0.2, 0, 0.5, 0.2]], np.float32)
        frames, _ = render_face(track, MouthStyle.from_seed(1), face, Nuisance.none(), np.random.default_rng(0))
        assert (frames[..., 0] == frames[..., 1]).all() and (frames[..., 1] == frames[..., 2]).all()


@pytest.mark.parametrize("kind", ["rotated15", "offcentre_wide", "small", "gray"])
def test_other_photos_go_through_the_lip_frontend(kind, tmp_path):
    """The drawn mouth sits on the photo's mouth, scaled to the face; ``avsr lips`` finds the
    face on >= 99% of frames and centres its crop on the drawn mouth."""
    from avsr.io import read_av
    from avsr.vision import extract_mouths_from_file

    img, centre, half_width, _ = _photo(kind)
    photo = _save(tmp_path / f"{kind}.png", img)
    row = read_manifest(generate(tmp_path / "out", 1, "test", seed=11, processes=1, face_image=photo,
                                 progress=False))[0]
    truth = np.load(row["mouths"])["mouth_centre"]  # where the mouth was drawn, per frame
    assert np.linalg.norm(np.median(truth, axis=0) - centre) < 0.15 * half_width + 2.0  # on the real mouth
    if kind == "gray":  # black and white in, black and white out
        frames = read_av(row["video"]).frames.astype(int)
        assert np.abs(frames[..., 0] - frames[..., 1]).max() <= 2 and np.abs(frames[..., 1] - frames[..., 2]).max() <= 2
    track = extract_mouths_from_file(row["video"])
    assert track.found.mean() >= 0.99
    n = min(len(track), len(truth))
    m = track.transforms[:n]
    in_crop = np.einsum("tij,tj->ti", m[:, :, :2], truth[:n]) + m[:, :, 2]
    err = np.linalg.norm(in_crop - (track.mouths.shape[1] - 1) / 2.0, axis=1)
    assert err.mean() < 4.0 and err.max() < 10.0, (err.mean(), err.max())  # pixels of a 96 crop
    # scaled to the face: the drawn mouth, as the landmark detector sees it, is as wide as the photo's own
    corners = track.landmarks[:, [61, 291]]
    width = np.linalg.norm(corners[:, 1] - corners[:, 0], axis=1)
    assert 0.75 < np.median(width) / (2 * half_width) < 1.15


def test_large_photos_are_scaled_down(tmp_path):
    img = cv2.resize(skdata.astronaut(), (2100, 1702), interpolation=cv2.INTER_LINEAR)
    face = load_face(str(_save(tmp_path / "large.png", img)))
    assert max(face.image.shape[:2]) <= MAX_FACE_SIDE and face.image.shape[0] % 2 == 0
    scale = max(face.image.shape[:2]) / 2100
    c, hw, _ = _astronaut_mouth()
    expect = np.array([(c[0] + 0.5) * 2100 / 512, (c[1] + 0.5) * 1702 / 512]) * scale - 0.5
    assert np.linalg.norm(face.centre - expect) < 4.0


def test_bad_face_images_give_one_clear_error_and_write_nothing(tmp_path, capsys):
    cat = _save(tmp_path / "cat.png", skdata.chelsea())
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    good = cv2.imencode(".png", skdata.astronaut())[1].tobytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good[: len(good) // 3])
    tiny = _save(tmp_path / "tiny.png", cv2.resize(skdata.astronaut(), (24, 24)))
    folder = tmp_path / "folder.png"
    folder.mkdir()
    cases = [(cat, "no face"), (empty, "cannot read"), (truncated, "cannot read"), (tiny, "too small"),
             (folder, "no such face image"), (tmp_path / "missing.jpg", "no such face image")]
    for path, message in cases:
        out = tmp_path / f"out-{path.stem}"
        with pytest.raises(InputError, match=message):
            generate(out, 1, "valid", face_image=path, progress=False)
        assert not out.exists()  # arguments are checked before anything is written
    assert cli.main(["synth", "--out", str(tmp_path / "o"), "--num", "1", "--face-image", str(cat), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("avsr synth: error:") and "no face found" in err[-1]


# --------------------------------------------------------------------------- runs: resume, change, interrupt


def test_resume_redoes_what_changed_or_is_missing(tmp_path):
    rows = read_manifest(generate(tmp_path, 2, "valid", seed=4, processes=1, progress=False))
    folder = tmp_path / "valid"
    # a run killed mid-write leaves hidden temporaries and a row whose media is gone
    stale = folder / f".{rows[0]['id']}.mp4.abc123.mp4"
    stale.write_bytes(b"partial")
    os.remove(rows[0]["video"])
    stamp = os.stat(rows[1]["mouths"]).st_mtime_ns
    again = read_manifest(generate(tmp_path, 2, "valid", seed=4, processes=1, progress=False))
    assert Path(again[0]["video"]).is_file() and not stale.exists()
    assert os.stat(again[1]["mouths"]).st_mtime_ns == stamp  # finished work is kept
    # the same ids with other voices are other utterances: they must not be reused
    voice = "en-us"
    changed = read_manifest(generate(tmp_path, 2, "valid", seed=4, processes=1, voices=[voice], progress=False))
    assert [r["id"] for r in changed] == [r["id"] for r in rows]
    assert all(r["voice"].split("+")[0] == voice for r in changed)
    assert [r["speaker"] for r in changed] == [s.speaker.id for s in plan("valid", 2, 4, [voice])]


def test_resume_with_another_face_photo_redraws(tmp_path):
    spec = plan("test", 1, seed=2)[0]
    a, b = (_save(tmp_path / f"{k}.png", _photo(k)[0]) for k in ("mirrored", "small"))
    make_utterance(spec, tmp_path / "out", str(a))
    first = np.load(tmp_path / "out" / "test" / f"{spec.id}.npz")["mouth_centre"]
    make_utterance(spec, tmp_path / "out", str(b))
    second = np.load(tmp_path / "out" / "test" / f"{spec.id}.npz")["mouth_centre"]
    assert np.abs(np.median(first, 0) - np.median(second, 0)).max() > 50  # drawn on the other photo


def _interrupted_synth(out: Path, n: int) -> tuple[list[str], subprocess.Popen, str, int]:
    """Start ``avsr synth`` of ``n`` utterances, Ctrl-C it once 3 are done: (args, process, stderr, done)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "avsr", "synth", "--out", str(out), "--num", str(n), "--split", "valid",
            "--seed", "9", "--processes", "2", "--quiet"]
    # A Ctrl-C at a terminal reaches a process whose SIGINT is at its default; run from a background
    # job (`cmd &` in a script), the tests would pass SIGINT on ignored, and the child could not see it.
    proc = subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list((out / "valid").glob("*.json"))) < 3 and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group, workers included
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:  # pragma: no cover - the defect this guards against
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("avsr synth hung after Ctrl-C")
    return args, proc, err, len(list((out / "valid").glob("*.json")))


def test_ctrl_c_stops_promptly_and_the_rerun_completes(tmp_path):
    # long enough that the Ctrl-C lands first; a machine fast enough to finish anyway gets a longer run
    for N in (120, 600):
        out = tmp_path / f"n{N}"
        args, proc, err, done = _interrupted_synth(out, N)
        if not (proc.returncode == 0 and done == N):
            break
    else:  # pragma: no cover
        pytest.fail("the run finished before it could be interrupted, twice")
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines() == ["avsr synth: interrupted"]
    assert cli.main(args[3:]) == 0  # the rerun finishes the job
    rows = read_manifest(out / "valid.csv")
    assert [r["id"] for r in rows] == [s.id for s in plan("valid", N, 9)]
    assert all(Path(r[k]).is_file() for r in rows for k in ("audio", "mouths", "video"))
    assert not [p for p in (out / "valid").iterdir() if p.name.startswith(".")]  # no temporaries left
    # what the interrupted-then-resumed run made is what a clean run makes
    fresh = make_utterance(plan("valid", N, 9)[-1], out / "fresh")
    assert fresh["words"] == rows[-1]["words"] and fresh["speaker"] == rows[-1]["speaker"]
    np.testing.assert_array_equal(np.load(out / "fresh" / fresh["mouths"])["mouths"],
                                  np.load(rows[-1]["mouths"])["mouths"])


def test_relative_output_folder_and_bad_counts(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    manifest = generate(Path("rel") / "data", 1, "valid", seed=1, processes=1, progress=False)
    assert not manifest.is_absolute()
    with open(manifest, newline="") as f:
        raw = next(csv.DictReader(f))
    for key in ("audio", "mouths", "video"):
        assert not os.path.isabs(raw[key]) and ".." not in raw[key]  # relative to the CSV's folder
    monkeypatch.chdir(tmp_path / "rel")  # read from somewhere else
    rows = read_manifest(tmp_path / "rel" / "data" / "valid.csv")
    assert all(os.path.isfile(rows[0][k]) for k in ("audio", "mouths", "video"))
    for bad in (["--num", "0"], ["--num", "-3"], ["--num", "1", "--processes", "-1"]):
        out = tmp_path / "bad"
        assert cli.main(["synth", "--out", str(out), "--quiet", *bad]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("avsr synth: error:")
        assert not out.exists()


# --------------------------------------------------------------------------- visemes as drawn


def _drawn(phoneme: str, style: MouthStyle) -> np.ndarray:
    """Grey crop at the middle of ``phoneme`` said between two /a/ (no nuisance)."""
    seq = [("_", 0.0, 0.2), ("a", 0.2, 0.4), (phoneme, 0.4, 0.56), ("a", 0.56, 0.76), ("_", 0.76, 1.0)]
    track = viseme_track(seq, 25, sigma=style.sigma, gains=np.array(style.gains))
    return to_gray(render_crops(track, style, Nuisance.none(), np.random.default_rng(0)))[11].astype(int)


@pytest.mark.parametrize("seed", [3, 17])
def test_drawn_visemes_pbm_alike_fv_and_uw_differ(seed):
    style = MouthStyle.from_seed(seed)
    shots = {p: _drawn(p, style) for p in ("p", "b", "m", "f", "v", "u:", "w")}

    def changed(a: str, b: str) -> int:
        return int((np.abs(shots[a] - shots[b]) > 20).sum())  # pixels that visibly differ

    def contrast(a: str, b: str) -> int:
        return int(np.abs(shots[a] - shots[b]).max())

    assert changed("p", "b") == 0 and changed("p", "m") == 0  # voicing and nasality are invisible
    assert changed("f", "v") == 0
    assert changed("p", "f") > 20 and contrast("p", "f") > 60  # a line of upper teeth on the lower lip
    assert changed("p", "u:") > 60 and changed("p", "w") > 60 and contrast("p", "w") > 40  # rounded
    assert changed("f", "u:") > 60 and changed("f", "w") > 60


# --------------------------------------------------------------------------- noise


def _espeak_speech() -> np.ndarray:
    from scipy.signal import resample_poly

    eng = get_engine()
    out = []
    for voice in ("en", "en-us+f3", "en-gb-x-rp+m3"):
        wav, _ = eng.synth_isolated("bin blue at f two now place green by s nine soon lay white with three please",
                                    voice=voice)
        out.append(resample_poly(wav.astype(np.float64), SR // 50, eng.sample_rate // 50))
    return np.concatenate(out)


def _octave_levels(x: np.ndarray) -> np.ndarray:
    """Power (dB) in octave bands 125 Hz .. 4 kHz relative to the 500 Hz band."""
    from scipy.signal import welch

    f, p = welch(x, SR, nperseg=2048)
    centres = 125 * 2.0 ** np.arange(6)
    level = np.array([10 * np.log10(p[(f >= c / np.sqrt(2)) & (f < c * np.sqrt(2))].mean()) for c in centres])
    return level - level[2]


def test_speech_shaped_noise_follows_a_speech_spectrum():
    speech = _octave_levels(_espeak_speech())
    noise = _octave_levels(make_noise("speech_shaped", 6 * SR, "test", seed=2))
    assert np.abs(speech - noise).max() < 6.0, (speech.round(1), noise.round(1))
    assert noise[-1] < -12  # falls off above the speech peak


def test_music_is_tonal_and_noise_is_not():
    from scipy.signal import find_peaks, welch

    def flatness_and_peaks(x: np.ndarray) -> tuple[float, int]:
        f, p = welch(x, SR, nperseg=8192)
        band = p[(f > 60) & (f < 4000)]
        peaks, _ = find_peaks(10 * np.log10(band), prominence=15)
        return float(np.exp(np.mean(np.log(band))) / np.mean(band)), len(peaks)

    for split in ("train", "test"):
        flat, peaks = flatness_and_peaks(make_noise("music", 4 * SR, split, seed=1))
        assert flat < 0.05 and peaks >= 8, (split, flat, peaks)  # partials stand out
    flat, peaks = flatness_and_peaks(make_noise("pink", 4 * SR, "train", seed=1))
    assert flat > 0.3 and peaks == 0


def test_babble_talkers_are_disjoint_from_targets_and_between_splits():
    assert not set(BABBLE_VOICES["train"]) & set(BABBLE_VOICES["test"])
    assert not set(BABBLE_WORDS["train"]) & set(BABBLE_WORDS["test"])
    for split in ("train", "test"):
        assert not {v.split("+")[0] for v in BABBLE_VOICES[split]} & set(VOICES)
        assert {f"babble:word:{w}" for w in BABBLE_WORDS[split]} <= noise_sources(split)
    assert not noise_sources("train") & noise_sources("test")


def test_mix_rejects_bad_signals_and_handles_short_ones():
    rng = np.random.default_rng(0)
    speech = np.zeros(SR)
    speech[4000:12000] = 0.3 * np.sin(np.arange(8000) / 7.0)
    noise = make_noise("white", 300)  # much shorter than the speech: looped
    y, v = mix(speech, noise, 3.0, rng=rng, return_noise=True)
    assert y.shape == speech.shape and measure_snr(speech, v) == pytest.approx(3.0, abs=0.1)
    short = speech[6000:6010]  # ten samples
    _, v = mix(short, noise, -2.0, return_noise=True)
    assert measure_snr(short, v) == pytest.approx(-2.0, abs=0.1)
    bad_speech, bad_noise = speech.copy(), noise.copy()
    bad_speech[5000], bad_noise[7] = np.nan, np.inf
    cases = [
        (lambda: mix(bad_speech, noise, 0.0), "NaN or infinite"),
        (lambda: mix(speech, bad_noise, 0.0), "NaN or infinite"),
        (lambda: mix(speech, np.stack([noise, noise], 1), 0.0), "1-D"),
        (lambda: mix(np.stack([speech, speech]), noise, 0.0), "1-D"),
        (lambda: mix(speech, noise, -np.inf), "SNR"),
        (lambda: mix(speech, noise, "loud"), "SNR"),
        (lambda: mix(speech, noise, None), "SNR"),
        (lambda: mix(np.zeros(100), noise, 0.0), "silent"),
    ]
    for call, message in cases:
        with pytest.raises(InputError, match=message):
            call()


def test_make_noisy_on_a_full_face_manifest(tmp_path):
    """mp4 in, mp4 out: the frames stay (decoded and compared), the audio gets the asked SNR
    measured against the clean audio."""
    from avsr.io import read_av

    manifest = generate(tmp_path / "clean", 1, "test", seed=6, processes=1, full_face=True, progress=False)
    spec = importlib.util.spec_from_file_location("make_noisy", ROOT / "tools" / "make_noisy.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([str(manifest), "--out", str(tmp_path / "noisy"), "--snr", "-5", "--noise", "babble",
                      "--noise-seconds", "3", "--seed", "-3"]) == 0  # negative seeds and SNRs are fine
    clean = read_manifest(manifest)[0]
    row = read_manifest(tmp_path / "noisy" / "test_snrm5.csv")[0]
    assert row["video"].endswith(".mp4") and Path(row["video"]).parent != Path(clean["video"]).parent
    src, out = read_av(clean["video"]), read_av(row["video"])
    assert out.frames.shape == src.frames.shape and out.frames.shape[1:3] == (512, 512)
    np.testing.assert_allclose(out.timestamps, src.timestamps)
    assert np.array_equal(out.frames, src.frames)  # the same pictures, bit for bit (stream copy)
    speech, _ = sf.read(clean["audio"], dtype="float64")
    noisy, _ = sf.read(row["audio"], dtype="float64")
    assert noisy.shape == speech.shape
    with open(tmp_path / "noisy" / "test_snrm5.csv", newline="") as f:
        gain = float(next(csv.DictReader(f))["gain"])  # speech and noise scaled together against clipping
    assert 0 < gain <= 1 and np.abs(noisy).max() <= 0.995
    assert measure_snr(gain * speech, noisy - gain * speech) == pytest.approx(-5.0, abs=0.1)
    assert len(out.audio) == pytest.approx(len(src.audio), abs=0.05 * SR)
    m = min(len(out.audio), len(noisy))
    assert np.corrcoef(out.audio[:m], noisy[:m])[0, 1] > 0.98  # the mp4 carries the same noisy audio
    assert json.loads(json.dumps(row["words"])) == clean["words"]


@pytest.mark.parametrize("words, duration", [('[["bin", 0.1', "1.0"), ("[]", "long")], ids=["json", "number"])
def test_malformed_manifest_row_is_one_clear_error(tmp_path, words, duration):
    path = tmp_path / "train.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "audio", "words", "duration"])
        writer.writerow(["utt-1", "utt-1.flac", words, duration])
    with pytest.raises(InputError) as info:
        read_manifest(path)
    assert info.value.path == str(path) and info.value.problem.startswith("malformed row 'utt-1'")
