"""Noise library: sources, disjoint splits, SNR-exact mixing, the noisy-manifest tool."""

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avsr.audio.noise import (
    BABBLE_VOICES,
    NOISE_TYPES,
    NoiseBank,
    make_noise,
    measure_snr,
    mix,
    noise_sources,
    speech_activity,
)
from avsr.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
SR = 16000


def _speechlike(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Bursts of harmonic 'syllables' separated by silence (energy varies a lot)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    env = np.zeros(n)
    for start in np.arange(0.2, seconds - 0.3, 0.35):
        a, b = int(start * SR), int((start + 0.2) * SR)
        env[a:b] = np.hanning(b - a) * rng.uniform(0.3, 1.0)
    x = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8))
    return (0.2 * env * x).astype(np.float32)


def _band_power_slope(x: np.ndarray) -> float:
    """Power spectral slope in dB per octave between 125 Hz and 4 kHz."""
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    centres = 125 * 2.0 ** np.arange(6)
    power = [spec[(f >= c / np.sqrt(2)) & (f < c * np.sqrt(2))].mean() for c in centres]  # per Hz
    return float(np.polyfit(np.log2(centres), 10 * np.log10(power), 1)[0])


@pytest.mark.parametrize("kind", [k for k in NOISE_TYPES if k != "babble"])
def test_make_noise_shape_level_and_determinism(kind):
    a = make_noise(kind, 8000, "train", seed=3)
    b = make_noise(kind, 8000, "train", seed=3)
    c = make_noise(kind, 8000, "train", seed=4)
    assert a.shape == (8000,) and a.dtype == np.float32
    assert np.sqrt(np.mean(a.astype(np.float64) ** 2)) == pytest.approx(0.1, rel=1e-3)
    assert abs(float(a.mean())) < 1e-3
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_colored_noise_spectral_slopes():
    x = {k: make_noise(k, 4 * SR, "train", seed=0) for k in ("white", "pink", "brown")}
    assert _band_power_slope(x["white"]) == pytest.approx(0.0, abs=1.0)
    assert _band_power_slope(x["pink"]) == pytest.approx(-3.0, abs=1.0)
    assert _band_power_slope(x["brown"]) == pytest.approx(-6.0, abs=1.0)
    ss = make_noise("speech_shaped", 4 * SR, "train", seed=0)
    spec = np.abs(np.fft.rfft(ss)) ** 2
    f = np.fft.rfftfreq(len(ss), 1 / SR)
    assert spec[(f > 300) & (f < 700)].mean() > 30 * spec[(f > 5000) & (f < 7000)].mean()
    assert spec[(f > 300) & (f < 700)].mean() > 5 * spec[(f > 20) & (f < 60)].mean()


def test_babble_is_speech_from_disjoint_voices():
    from avsr.data.synth.speakers import VOICES

    train = set(BABBLE_VOICES["train"])
    test = set(BABBLE_VOICES["test"])
    assert not train & test
    assert not (train | test) & set(VOICES)  # never a target voice
    x = make_noise("babble", SR // 2, "test", seed=0)
    assert x.shape == (SR // 2,) and np.isfinite(x).all()
    assert np.std(x) > 0


def test_train_and_test_sources_do_not_overlap():
    assert not noise_sources("train") & noise_sources("test")
    for kind in ("white", "pink", "brown", "speech_shaped"):
        a, b = make_noise(kind, SR, "train", 0), make_noise(kind, SR, "test", 0)
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.2  # different draws, not the same signal
    a, b = make_noise("music", SR, "train", 0), make_noise("music", SR, "test", 0)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.6  # different instruments, scales and notes


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "speech_shaped", "music"])
@pytest.mark.parametrize("snr", [-10.0, -5.0, 0.0, 5.0, 12.5, 30.0])
def test_mix_hits_snr_over_active_speech(kind, snr):
    speech = _speechlike(seed=int(snr) + 20)
    noise = make_noise(kind, SR, "train", seed=1)  # shorter than speech: looped
    y, v = mix(speech, noise, snr, rng=np.random.default_rng(0), return_noise=True)
    assert y.shape == speech.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, speech + v, atol=1e-6)
    active = speech_activity(speech)
    assert 0.2 < active.mean() < 0.9  # silence is excluded from the measurement
    assert measure_snr(speech, v, active) == pytest.approx(snr, abs=0.1)
    # the SNR over all samples would be lower: silence carries noise but no speech
    whole = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(v.astype(np.float64) ** 2))
    assert whole < snr - 0.5


def test_mix_edge_cases():
    speech = _speechlike()
    np.testing.assert_array_equal(mix(speech, make_noise("white", 100), np.inf), speech)
    with pytest.raises(InputError, match="silent"):
        mix(np.zeros(1000), make_noise("white", 100), 0.0)
    with pytest.raises(InputError, match="silent"):
        mix(speech, np.zeros(500), 0.0)
    with pytest.raises(InputError):
        mix(speech, make_noise("white", 100), float("nan"))


def test_speech_activity_marks_bursts():
    x = np.zeros(SR)
    x[4000:8000] = np.sin(np.arange(4000) / 3.0)
    act = speech_activity(x)
    assert act[4400:7600].all() and not act[:3600].any() and not act[8400:].any()


def test_bad_noise_arguments():
    with pytest.raises(InputError, match="unknown noise type"):
        make_noise("traffic", 100)
    with pytest.raises(InputError, match="split"):
        make_noise("white", 100, split="valid")
    with pytest.raises(InputError, match="positive"):
        make_noise("white", 0)


def test_noise_bank_draws_excerpts():
    bank = NoiseBank("train", kinds=("white", "pink"), seconds=1.0, variants=2)
    rng = np.random.default_rng(0)
    a = bank.sample(3000, rng, "pink")
    b = bank.sample(40000, rng)  # longer than the pool: looped
    assert a.shape == (3000,) and b.shape == (40000,)
    assert not np.allclose(bank.sample(3000, rng, "pink"), a)
    with pytest.raises(InputError):
        bank.sample(10, rng, "music")


def test_make_noisy_tool_keeps_video_and_sets_snr(tmp_path, capsys):
    from avsr.data.synth import generate, read_manifest
    from avsr.io import read_av

    manifest = generate(tmp_path / "clean", 1, "test", seed=5, processes=1, progress=False)
    spec = importlib.util.spec_from_file_location("make_noisy", ROOT / "tools" / "make_noisy.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([str(manifest), "--out", str(tmp_path / "noisy"), "--snr", "0", "10",
                      "--noise", "white", "--noise-seconds", "2"]) == 0
    clean = read_manifest(manifest)[0]
    src = read_av(clean["video"])
    for snr in (0, 10):
        rows = read_manifest(tmp_path / "noisy" / f"test_snr{snr}.csv")
        assert len(rows) == 1 and rows[0]["id"] == clean["id"]
        with open(tmp_path / "noisy" / f"test_snr{snr}.csv", newline="") as f:
            raw = next(csv.DictReader(f))
        assert raw["snr_db"] == str(snr) and raw["noise"] == "white"
        out = read_av(rows[0]["video"])
        assert out.frames.shape == src.frames.shape
        np.testing.assert_allclose(out.timestamps, src.timestamps)
        assert np.array_equal(out.frames, src.frames)  # the video stream is copied, never re-encoded
        noisy, _ = sf.read(rows[0]["audio"], dtype="float32")
        n = min(len(noisy), len(src.audio))
        scale = np.dot(noisy[:n], src.audio[:n]) / np.dot(src.audio[:n], src.audio[:n])  # undo joint peak scaling
        assert measure_snr(src.audio[:n], noisy[:n] / scale - src.audio[:n]) == pytest.approx(snr, abs=0.5)
        assert Path(rows[0]["mouths"]).resolve() == Path(clean["mouths"]).resolve()
    assert tool.main([str(tmp_path / "missing.csv"), "--out", str(tmp_path), "--snr", "0"]) == 1
    # a row whose clean audio file is gone is an error, not a silent switch to the video's sound track
    broken = tmp_path / "clean" / "broken.csv"
    broken.write_text(Path(manifest).read_text().replace(f"{clean['id']}.flac", "gone.flac"))
    capsys.readouterr()
    assert tool.main([str(broken), "--out", str(tmp_path / "noisy2"), "--snr", "0"]) == 1
    assert capsys.readouterr().err.strip().endswith("gone.flac: no such audio file")
    # an unknown noise type is one line naming it, before anything is written
    assert tool.main([str(manifest), "--out", str(tmp_path / "noisy3"), "--snr", "0", "--noise", "white,rain"]) == 1
    assert "unknown noise type rain" in capsys.readouterr().err
    assert not (tmp_path / "noisy3").exists()
