"""SI-SDR, wide-band PESQ and STOI/ESTOI: known values, invariances, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from avsr.errors import InputError
from avsr.metrics import pesq_wb, si_sdr, stoi

SR = 16000


def voice(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-modulated signal PESQ and STOI accept as speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 20))
    env = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    return (0.1 * x * env + 1e-3 * rng.standard_normal(len(t))).astype(np.float64)


def test_si_sdr_known_value_with_orthogonal_noise() -> None:
    ref = voice()
    ref = ref - ref.mean()
    noise = np.random.default_rng(1).standard_normal(len(ref))
    noise -= noise.mean()
    noise -= np.dot(noise, ref) / np.dot(ref, ref) * ref  # orthogonal to the reference: alpha is exactly 1
    for snr in (-5.0, 0.0, 12.5):
        scaled = noise * np.sqrt(np.dot(ref, ref) / np.dot(noise, noise) / 10 ** (snr / 10))
        assert si_sdr(ref + scaled, ref) == pytest.approx(snr, abs=1e-6)


def test_si_sdr_is_scale_and_offset_invariant() -> None:
    ref = voice()
    est = ref + 0.05 * np.random.default_rng(2).standard_normal(len(ref))
    assert si_sdr(7.0 * est + 0.3, ref) == pytest.approx(si_sdr(est, ref), abs=1e-9)
    assert si_sdr(ref, ref) > 90


def test_pesq_and_stoi_of_identical_and_noisy_speech() -> None:
    ref = voice()
    noisy = ref + 0.05 * np.random.default_rng(3).standard_normal(len(ref))
    assert pesq_wb(ref, ref) == pytest.approx(4.64, abs=0.01)  # the top of the wide-band scale
    assert stoi(ref, ref) == pytest.approx(1.0, abs=1e-6)
    assert stoi(ref, ref, extended=True) == pytest.approx(1.0, abs=1e-6)
    assert pesq_wb(noisy, ref) < 2.5
    assert stoi(noisy, ref) < 0.95 and stoi(noisy, ref, extended=True) < stoi(noisy, ref)


@pytest.mark.parametrize("metric", [si_sdr, pesq_wb, stoi])
def test_bad_signals_give_one_clear_error(metric) -> None:
    ref = voice(1.0)
    with pytest.raises(InputError, match="differ in length"):
        metric(ref[:-1], ref)
    with pytest.raises(InputError, match="1-D"):
        metric(np.stack([ref, ref]), np.stack([ref, ref]))
    with pytest.raises(InputError, match="NaN or infinite"):
        metric(np.full_like(ref, np.nan), ref)


def test_degenerate_inputs() -> None:
    with pytest.raises(InputError, match="reference is silent"):
        si_sdr(np.ones(100), np.zeros(100))
    with pytest.raises(InputError, match="reference is silent"):
        pesq_wb(np.zeros(SR), np.zeros(SR))
    with pytest.raises(InputError, match="16000 Hz"):
        pesq_wb(voice(), voice(), sample_rate=8000)
    with pytest.raises(InputError, match="too short"):
        stoi(voice(0.01), voice(0.01))
