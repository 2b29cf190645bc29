"""``avsr enhance`` and ``avsr evaluate-enhance`` end to end, and the Enhancer's chunking."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from avsr import cli
from avsr.checkpoints import save_model
from avsr.data.synth import generate
from avsr.enhancement import Enhancer, chunk_plan, no_face_spans
from avsr.io import probe, read_av
from avsr.metrics import si_sdr
from avsr.models.enhancer import build_enhancer
from transcribe_fixtures import make_bundle, make_media

SMALL = dict(d_model=16, encoder_layers=1, encoder_heads=2, encoder_ff=32, conv_kernel=5, video_dim=8, video_width=4, video_layers=[1, 1], crop_size=24, dropout=0.0)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    return make_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def enhancer_bundle(tmp_path_factory) -> str:
    """A random-weight enhancer whose mask head is off the identity (so the lips matter)."""
    torch.manual_seed(0)
    model = build_enhancer(SMALL)
    with torch.no_grad():
        model.mask.weight.normal_(0, 0.05)
    path = tmp_path_factory.mktemp("models") / "enh.safetensors"
    save_model(path, model, None)
    return str(path)


def run(capfd, *args: str | Path) -> tuple[int, list[str], list[str]]:
    capfd.readouterr()
    code = cli.main([str(a) for a in args])
    out, err = capfd.readouterr()
    return code, out.splitlines(), [line for line in err.splitlines() if line.strip()]


def test_chunk_plan_and_no_face_spans() -> None:
    assert chunk_plan(1, 250, 25) == [(0, 1)]
    assert chunk_plan(250, 250, 25) == [(0, 250)]
    plan = chunk_plan(1000, 250, 25)
    assert plan[0] == (0, 250) and plan[-1][1] == 1000
    assert all(b[0] == a[1] - 25 for a, b in zip(plan, plan[1:]))
    assert no_face_spans(np.ones(5, bool)) == []
    assert no_face_spans(np.zeros(50, bool)) == [(0.0, 2.0)]


def test_chunked_enhancement_matches_one_pass_away_from_the_seams() -> None:
    torch.manual_seed(0)
    model = build_enhancer(SMALL)
    with torch.no_grad():
        model.mask.weight.normal_(0, 0.05)
    x = (0.1 * np.sin(np.arange(16000 * 5) / 7.0) * np.sin(np.arange(16000 * 5) / 3000.0)).astype(np.float32)
    whole = Enhancer(model, chunk_seconds=10.0).enhance_array(x)
    chunked = Enhancer(model, chunk_seconds=2.0, overlap_seconds=0.4).enhance_array(x)
    assert chunked.shape == x.shape
    assert si_sdr(chunked, whole) > 25  # the cross-faded chunks are close to one pass over everything


def test_enhance_a_video_and_an_audio_file(capfd, media: dict, enhancer_bundle: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, err = run(capfd, "enhance", media["face.mp4"], media["speech.wav"], "-o", out,
                            "--checkpoint", enhancer_bundle, "--quiet", "--device", "cpu")
    assert code == 0, err
    assert len(stdout) == 2
    assert err == [f"avsr enhance: warning: {media['speech.wav']}: no video stream: enhanced from the audio alone"]
    assert sorted(p.name for p in out.iterdir()) == ["speech.wav", "test-s0-000000.mp4"]
    source, enhanced = read_av(media["face.mp4"]), read_av(out / "test-s0-000000.mp4")
    assert np.array_equal(source.frames, enhanced.frames)  # the video stream is copied untouched
    assert probe(out / "test-s0-000000.mp4")["video"]["codec"] == probe(media["face.mp4"])["video"]["codec"]
    assert abs(len(enhanced.audio) - len(source.audio)) < 2048
    wav, rate = sf.read(out / "speech.wav", dtype="float32")
    speech, _ = sf.read(media["speech.wav"], dtype="float32")
    assert rate == 16000 and abs(len(wav) - len(speech)) < 640
    assert not np.allclose(wav[: len(speech)], speech[: len(wav)], atol=1e-3)  # it did something


def test_audio_only_mode_and_the_face_less_fallback(capfd, media: dict, enhancer_bundle: str, tmp_path: Path) -> None:
    en = Enhancer.from_checkpoint(enhancer_bundle, device="cpu")
    av = en.enhance_file(media["face.mp4"], tmp_path / "av.wav")
    audio = en.enhance_file(media["face.mp4"], tmp_path / "a.wav", modality="audio")
    assert av["modality"] == "av" and audio["modality"] == "audio" and audio["no_face"] == []
    assert not np.allclose(sf.read(tmp_path / "av.wav")[0], sf.read(tmp_path / "a.wav")[0])
    # a gray picture: no face anywhere, so the whole file is enhanced from its audio, and stderr says so
    code, _, err = run(capfd, "enhance", media["gray.mp4"], "-o", tmp_path / "gray.wav", "--checkpoint",
                       enhancer_bundle, "--quiet", "--device", "cpu")
    assert code == 0
    assert any("no face found: enhanced from the audio alone" in line for line in err)
    gray = en.enhance_file(media["gray.mp4"], tmp_path / "g2.wav")
    gray_audio = en.enhance_file(media["gray.mp4"], tmp_path / "g3.wav", modality="audio")
    assert gray["modality"] == "av" and gray["no_face"] == [[0.0, gray["duration"]]]
    assert np.array_equal(sf.read(tmp_path / "g2.wav")[0], sf.read(tmp_path / "g3.wav")[0])
    assert np.array_equal(sf.read(tmp_path / "gray.wav")[0], sf.read(tmp_path / "g3.wav")[0])
    assert gray_audio["no_face"] == []


def test_bad_inputs_fail_with_one_line_and_write_nothing(capfd, media: dict, enhancer_bundle: str,
                                                         tmp_path: Path) -> None:
    for name in ("empty.mp4", "text.mp4", "truncated.mp4", "silent_face.mp4"):
        target = tmp_path / f"{name}.wav"
        code, stdout, err = run(capfd, "enhance", media[name], "-o", target, "--checkpoint", enhancer_bundle,
                                "--quiet", "--device", "cpu")
        assert code == 1, name
        assert err[0].startswith("avsr enhance: error: ") and not any("Traceback" in e for e in err), err
        assert not target.exists() and not list(tmp_path.glob(f".{name}*")), name
    code, _, err = run(capfd, "enhance", media["speech.wav"], "-o", tmp_path / "x.mp4", "--checkpoint",
                       enhancer_bundle, "--quiet")
    assert code == 1 and "no video stream to carry" in err[0] and not (tmp_path / "x.mp4").exists()
    code, _, err = run(capfd, "enhance", media["speech.wav"], "-o", tmp_path / "x.wav", "--model", "no-such")
    assert code == 1 and "unknown pretrained model 'no-such'" in err[0]
    make_bundle(tmp_path / "asr.safetensors")
    code, _, err = run(capfd, "enhance", media["speech.wav"], "-o", tmp_path / "x.wav", "--checkpoint",
                       tmp_path / "asr.safetensors")
    assert code == 1 and "not a speech enhancement bundle" in err[0]
    code, _, err = run(capfd, "enhance", media["speech.wav"], "-o", tmp_path / "noext", "--checkpoint",
                       enhancer_bundle)
    assert code == 1 and "suffix" in err[0]


def test_evaluate_enhance_tables_plot_and_wer(capfd, enhancer_bundle: str, tmp_path: Path) -> None:
    manifest = generate(tmp_path / "synth", num=2, split="test", seed=0, processes=1, progress=False)
    make_bundle(tmp_path / "asr.safetensors")
    out = tmp_path / "eval"
    code, stdout, err = run(capfd, "evaluate-enhance", "--manifest", manifest, "--checkpoint", enhancer_bundle,
                            "--noise", "white,talker", "--snr=clean,0", "--recogniser", tmp_path / "asr.safetensors",
                            "--wer", "white:-5", "--beam", "1", "--out", out, "--quiet")
    assert code == 0, err
    with open(out / "enhance_results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["noise"], r["snr"]) for r in rows[::4]] == [("white", "clean"), ("white", "0"), ("talker", "clean"),
                                                           ("talker", "0")]
    assert [r["system"] for r in rows[:4]] == ["noisy", "av", "audio", "spectral_gating"]
    noisy0 = next(r for r in rows if r["snr"] == "0" and r["system"] == "noisy" and r["noise"] == "white")
    # 0 dB over the active speech: a little lower over the whole utterance, whose pauses hold noise too
    assert float(noisy0["si_sdri"]) == 0.0 and -4.0 < float(noisy0["si_sdr"]) < 0.5
    clean_noisy = next(r for r in rows if r["snr"] == "clean" and r["system"] == "noisy")
    assert clean_noisy["si_sdri"] == "" and float(clean_noisy["pesq"]) > 4.5 and float(clean_noisy["stoi"]) > 0.999
    with open(out / "wer.csv", newline="") as f:
        wer = list(csv.DictReader(f))
    assert [r["input"] for r in wer] == ["clean", "noisy", "av", "audio", "spectral_gating"]
    assert (out / "spectrograms.png").stat().st_size > 10000 and (out / "enhance_results.md").is_file()
    assert any("spectral gating" in line for line in stdout)
    # the same command again gives the same numbers (fixed noise excerpts and talkers)
    code, _, _ = run(capfd, "evaluate-enhance", "--manifest", manifest, "--checkpoint", enhancer_bundle,
                     "--noise", "talker", "--snr=0", "--wer", "none", "--out", tmp_path / "again", "--quiet", "--no-pesq")
    with open(tmp_path / "again" / "enhance_results.csv", newline="") as f:
        again = list(csv.DictReader(f))
    talker0 = [r for r in rows if r["noise"] == "talker" and r["snr"] == "0"]
    assert [r["si_sdr"] for r in again] == [r["si_sdr"] for r in talker0] and again[0]["pesq"] == ""
    assert not (tmp_path / "again" / "wer.csv").exists()


def test_evaluate_enhance_bad_settings(capfd, enhancer_bundle: str, tmp_path: Path) -> None:
    code, _, err = run(capfd, "evaluate-enhance", "--manifest", tmp_path / "none.csv", "--checkpoint", enhancer_bundle,
                       "--out", tmp_path / "o")
    assert code == 1 and "no such manifest" in err[0]
    code, _, err = run(capfd, "evaluate-enhance", "--manifest", tmp_path / "none.csv", "--noise", "rain",
                       "--out", tmp_path / "o")
    assert code == 1 and "unknown noise type rain" in err[0]
    code, _, err = run(capfd, "evaluate-enhance", "--manifest", tmp_path / "none.csv", "--wer", "babble",
                       "--out", tmp_path / "o")
    assert code == 1 and "NOISE:SNR" in err[0]
