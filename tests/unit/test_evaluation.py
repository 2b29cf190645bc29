"""avsr.evaluation and ``avsr evaluate``: tables and plot, determinism, test-only noise, early errors."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import avsr.audio.noise as noise_module
import avsr.evaluation as ev
import avsr.pretrained as pretrained
from avsr import cli
from avsr.audio.noise import NoiseBank
from avsr.checkpoints import save_model
from avsr.data.synth import generate
from avsr.errors import InputError
from avsr.models.avsr import build_model
from avsr.tokenizer import CharTokenizer
from tiny_configs import SMALL_MODEL

# small settings: a short noise pool, the cheapest noise types, beam 2
FAST = dict(noise_seconds=2.0, noise_variants=1, beam_size=2, progress=False)
NOISES = ("white", "pink")
SNRS = ("clean", 0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """Three SynthGRID test utterances and a random-weight model saved as a bundle."""
    root = tmp_path_factory.mktemp("eval")
    manifest = generate(root / "data", num=3, split="test", seed=0, processes=1, progress=False)
    utts = ev.read_test_set(manifest)
    tok = CharTokenizer.train([u.text for u in utts] + ["abcdefghijklmnopqrstuvwxyz0123456789"])
    torch.manual_seed(0)
    model = build_model({**SMALL_MODEL, "vocab_size": tok.vocab_size}).eval()
    bundle = root / "models" / "tiny-test.safetensors"
    save_model(bundle, model, tok)
    return {"root": root, "manifest": manifest, "utts": utts, "model": model, "tok": tok, "bundle": bundle}


@pytest.fixture(scope="module")
def rows(setup) -> list[dict]:
    return ev.evaluate(setup["model"], setup["tok"], setup["utts"], noises=NOISES, snrs=SNRS, batch_size=2, **FAST)


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


# --------------------------------------------------------------------------- library


def test_results_files_have_every_cell_with_the_right_columns(setup, rows, tmp_path: Path) -> None:
    assert len(rows) == len(NOISES) * len(SNRS) * len(ev.MODALITIES)
    assert {(r["noise"], r["snr"], r["modality"]) for r in rows} == {
        (n, s, m) for n in NOISES for s in SNRS for m in ev.MODALITIES
    }
    for r in rows:
        assert tuple(r) == ev.COLUMNS and r["utterances"] == 3
        assert r["wer"] == round(r["wer"], 2) and r["wer"] >= 0 and r["cer"] >= 0
    # clean is decoded once and reported under every noise type; video-only never hears the noise
    by_cell = {(r["noise"], r["snr"], r["modality"]): (r["wer"], r["cer"]) for r in rows}
    for m in ev.MODALITIES:
        assert by_cell["white", "clean", m] == by_cell["pink", "clean", m]
    assert len({v for (n, s, m), v in by_cell.items() if m == "video"}) == 1

    paths = ev.write_results(rows, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["results.csv", "results.md", "wer_vs_snr.png"]
    header, lines = read_csv(paths["csv"])
    assert header == ["noise", "snr", "modality", "wer", "cer", "utterances"]
    assert len(lines) == len(rows)
    assert [line["snr"] for line in lines[:3]] == ["clean"] * 3 and lines[3]["snr"] == "0"
    md = paths["markdown"].read_text()
    assert "| noise | snr | modality | wer | cer | utterances |" in md
    assert md.count("| white | clean |") == 3 and "| pink | 0 | video |" in md
    assert "### WER (%), white noise (test sources)" in md
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # results measured with a noise list say so, not "test sources"
    listed = ev.write_results(rows, tmp_path / "listed", ev.noise_source_name(tmp_path / "my_noise"))
    md = listed["markdown"].read_text()
    assert f"### WER (%), white noise ({tmp_path / 'my_noise'})" in md and "test sources" not in md


def test_reruns_and_batch_sizes_give_identical_results(setup, rows, tmp_path: Path) -> None:
    again = ev.evaluate(setup["model"], setup["tok"], setup["utts"], noises=NOISES, snrs=SNRS, batch_size=2, **FAST)
    ev.write_results(rows, tmp_path / "a")
    ev.write_results(again, tmp_path / "b")
    assert (tmp_path / "a" / "results.csv").read_bytes() == (tmp_path / "b" / "results.csv").read_bytes()
    # batch size, utterance order and the other cells do not change a cell
    alone = ev.evaluate(setup["model"], setup["tok"], list(reversed(setup["utts"])), modalities="audio,av",
                        noises="pink", snrs="0,clean", batch_size=1, **FAST)
    full = {(r["noise"], r["snr"], r["modality"]): r for r in rows}
    for r in alone:
        assert r == full[r["noise"], r["snr"], r["modality"]]


def test_noise_is_deterministic_per_utterance_and_scaled_alike_across_snrs() -> None:
    bank = NoiseBank("test", kinds=("white",), seconds=1.0, variants=1)
    x = np.sin(np.arange(12000) / 7.0).astype(np.float32) * 0.3
    a0, a10 = ev.noisy_speech(x, "utt-1", "white", [0.0, 10.0], bank)
    b0, _ = ev.noisy_speech(x, "utt-1", "white", [0.0, 10.0], bank)
    c0, _ = ev.noisy_speech(x, "utt-2", "white", [0.0, 10.0], bank)
    assert np.array_equal(a0, b0) and not np.array_equal(a0, c0)
    n0, n10 = a0 - x, a10 - x  # one excerpt, 10 dB apart
    np.testing.assert_allclose(n10, n0 * 10 ** (-10 / 20), atol=1e-5)
    assert ev.noise_seed("utt-1", "white") == ev.noise_seed("utt-1", "white") != ev.noise_seed("utt-1", "pink")


def test_evaluation_uses_only_test_noise_sources(setup, monkeypatch) -> None:
    splits: list[str] = []
    real = noise_module.make_noise

    def spy(kind, num_samples, split="train", seed=0, sample_rate=16000):
        splits.append(split)
        return real(kind, num_samples, split, seed, sample_rate)

    monkeypatch.setattr(noise_module, "make_noise", spy)
    ev.evaluate(setup["model"], setup["tok"], setup["utts"][:1], modalities="audio", noises="white,babble",
                snrs="5", batch_size=1, **FAST)
    assert splits and set(splits) == {"test"}
    with pytest.raises(InputError, match="test sources"):
        ev.noisy_speech(np.ones(100, np.float32), "u", "white", [0.0], NoiseBank("train", kinds=("white",), seconds=0.1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"noises": "white,rain"}, r"unknown noise type rain \(choose from white, pink, brown, speech_shaped"),
        ({"snrs": "clean,loud"}, "SNR 'loud' is not a number"),
        ({"modalities": "av,lips"}, "unknown modality lips"),
        ({"beam_size": 0}, "beam size"),
        ({"ctc_weight": 1.5}, "CTC weight"),
    ],
)
def test_bad_settings_fail_before_decoding(setup, kwargs, message) -> None:
    with pytest.raises(InputError, match=message):
        ev.evaluate(setup["model"], setup["tok"], setup["utts"], **{**FAST, **kwargs})


def test_clean_only_and_video_only_need_no_noise_bank(setup, monkeypatch) -> None:
    def no_bank(*args, **kwargs):
        raise AssertionError("no noise needed")

    monkeypatch.setattr(noise_module, "NoiseBank", no_bank)
    rows = ev.evaluate(setup["model"], setup["tok"], setup["utts"][:1], modalities="video", noises="babble,music",
                       snrs="clean,-5", batch_size=1, **FAST)
    assert [(r["noise"], r["snr"]) for r in rows] == [("babble", "clean"), ("babble", -5), ("music", "clean"), ("music", -5)]
    assert len({(r["wer"], r["cer"]) for r in rows}) == 1 and not math.isnan(rows[0]["wer"])


def make_noise_list(root: Path) -> tuple[Path, Path]:
    """A folder laid out like MUSAN (two kinds: a 440 Hz hum and hiss) and the same files as a CSV list."""
    import soundfile as sf

    t = np.arange(16000 * 3) / 16000
    signals = {"hum": 0.3 * np.sin(2 * np.pi * 440 * t),
               "hiss": 0.1 * np.random.default_rng(0).standard_normal(len(t))}
    folder = root / "noise"
    lines = ["audio,kind"]
    for kind, x in signals.items():
        (folder / kind).mkdir(parents=True, exist_ok=True)
        sf.write(folder / kind / f"{kind}-1.wav", x.astype(np.float32), 16000)
        lines.append(f"noise/{kind}/{kind}-1.wav,{kind}")
    listing = root / "test.csv"
    listing.write_text("\n".join(lines) + "\n")
    return folder, listing


def test_a_noise_list_stands_in_for_the_synthesised_sources(setup, tmp_path: Path) -> None:
    folder, listing = make_noise_list(tmp_path)
    assert ev.parse_noises(None) == ("babble",)
    assert ev.parse_noises(None, folder) == ev.parse_noises(None, listing) == ("hiss", "hum")
    assert ev.parse_noises("hum", listing) == ("hum",)
    with pytest.raises(InputError, match=r"unknown noise type of .*test.csv babble \(choose from hiss, hum\)"):
        ev.parse_noises("babble", listing)
    with pytest.raises(InputError, match="no such noise folder or list"):
        ev.parse_noises(None, tmp_path / "none.csv")

    # the excerpt comes from the list's file of that kind, drawn by utterance id, scaled alike at every SNR
    x = (0.3 * np.sin(np.arange(12000) / 7.0)).astype(np.float32)
    source = ev.evaluation_noise(("hum",), listing)
    y0, y10 = ev.noisy_speech(x, "utt-1", "hum", [0.0, 10.0], source)
    again, _ = ev.noisy_speech(x, "utt-1", "hum", [0.0, 10.0], ev.evaluation_noise(("hum",), folder))
    np.testing.assert_array_equal(y0, again)
    residual = y0 - x
    spectrum = np.abs(np.fft.rfft(residual))
    assert abs(np.argmax(spectrum) * 16000 / len(residual) - 440) < 3
    np.testing.assert_allclose(y10 - x, residual * 10 ** (-10 / 20), atol=1e-5)

    rows = ev.evaluate(setup["model"], setup["tok"], setup["utts"][:2], modalities="audio", snrs="clean,0",
                       batch_size=2, noise_list=listing, **FAST)
    assert [(r["noise"], r["snr"]) for r in rows] == [("hiss", "clean"), ("hiss", 0), ("hum", "clean"), ("hum", 0)]
    assert rows == ev.evaluate(setup["model"], setup["tok"], setup["utts"][:2], modalities="audio", snrs="clean,0",
                               batch_size=1, noise_list=folder, **FAST)


def test_enhancement_noises_take_the_list_s_kinds_and_talker(tmp_path: Path) -> None:
    from avsr.enhancement_eval import parse_condition, parse_enhance_noises

    _, listing = make_noise_list(tmp_path)
    assert parse_enhance_noises(None) == ("babble", "music", "talker")
    assert parse_enhance_noises(None, listing) == ("hiss", "hum", "talker")
    assert parse_condition("hum:-5", listing) == ("hum", -5.0)
    with pytest.raises(InputError, match="unknown noise type of .* babble"):
        parse_condition("babble:-5", listing)


# --------------------------------------------------------------------------- CLI


def bad_manifest(setup, tmp_path: Path, change: str) -> Path:
    """A copy of the test manifest (absolute paths) with one row broken."""
    _, lines = read_csv(setup["manifest"])
    base = Path(setup["manifest"]).parent
    for line in lines:
        for col in ("audio", "mouths", "video"):
            line[col] = str(base / line[col])
    if change == "missing":
        lines[1]["audio"] = str(tmp_path / "gone.flac")
    elif change == "empty":
        lines[2]["text"] = "  "
    out = tmp_path / f"{change}.csv"
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(lines[0]))
        writer.writeheader()
        writer.writerows(lines)
    return out


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing file", "gone.flac does not exist"),
        ("empty transcript", "empty transcript"),
        ("unknown noise", "unknown noise type rain"),
        ("bad snr", "SNR 'loud' is not a number"),
        ("unknown model", "unknown pretrained model 'nope' (available: tiny-test)"),
        ("unknown modality", "unknown modality lips"),
        ("missing checkpoint", "no such file"),
        ("out is a file", "output must be a folder"),
        ("no manifest", "no such manifest"),
        ("missing noise list", "none.csv: no such noise folder or list"),
        ("noise not in list", "unknown noise type of"),
    ],
)
def test_cli_bad_input_is_one_line_exit_1_and_writes_nothing(setup, tmp_path, monkeypatch, capsys, case, message):
    def never(*args, **kwargs):
        raise AssertionError("decoding must not start")

    monkeypatch.setattr(ev, "evaluate", never)
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", setup["bundle"].parent)
    out = tmp_path / "results"
    manifest = setup["manifest"]
    extra: list[str] = []
    if case == "missing file":
        manifest = bad_manifest(setup, tmp_path, "missing")
    elif case == "empty transcript":
        manifest = bad_manifest(setup, tmp_path, "empty")
    elif case == "unknown noise":
        extra = ["--noise", "babble,rain"]
    elif case == "bad snr":
        extra = ["--snr", "clean,loud"]
    elif case == "unknown model":
        extra = ["--model", "nope"]
    elif case == "unknown modality":
        extra = ["--modality", "av,lips"]
    elif case == "missing checkpoint":
        extra = ["--checkpoint", str(tmp_path / "none.safetensors")]
    elif case == "out is a file":
        out.write_text("keep me")
    elif case == "no manifest":
        manifest = tmp_path / "none.csv"
    elif case == "missing noise list":
        extra = ["--noise-list", str(tmp_path / "none.csv")]
    elif case == "noise not in list":
        extra = ["--noise-list", str(make_noise_list(tmp_path)[1]), "--noise", "hum,white"]
    if not any(a in extra for a in ("--model", "--checkpoint")):
        extra += ["--model", "tiny-test"]
    code = cli.main(["evaluate", "--manifest", str(manifest), "--out", str(out), "--quiet", *extra])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("avsr evaluate: error:") and message in err[0], err
    assert captured.out == ""
    if case == "out is a file":
        assert out.read_text() == "keep me"
    else:
        assert not out.exists()


def test_cli_evaluates_a_bundled_model(setup, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", setup["bundle"].parent)
    out = tmp_path / "deep" / "results"
    code = cli.main([
        "evaluate", "--model", "tiny-test", "--manifest", str(setup["manifest"]), "--modality", "audio,video",
        "--noise", "white", "--snr=-5,clean", "--out", str(out), "--beam", "1", "--limit", "2", "--quiet",
    ])
    stdout = capsys.readouterr().out
    assert code == 0
    header, lines = read_csv(out / "results.csv")
    assert header == list(ev.COLUMNS)
    assert [(r["snr"], r["modality"], r["utterances"]) for r in lines] == [
        ("-5", "audio", "2"), ("-5", "video", "2"), ("clean", "audio", "2"), ("clean", "video", "2")
    ]
    assert "| noise | snr | modality | wer | cer | utterances |" in stdout
    assert stdout == (out / "results.md").read_text()


def test_cli_evaluates_with_a_noise_list(setup, tmp_path, capsys) -> None:
    _, listing = make_noise_list(tmp_path)
    out = tmp_path / "results"
    code = cli.main([
        "evaluate", "--checkpoint", str(setup["bundle"]), "--manifest", str(setup["manifest"]), "--modality", "audio",
        "--noise-list", str(listing), "--snr", "0", "--out", str(out), "--beam", "1", "--limit", "1", "--quiet",
    ])
    printed = capsys.readouterr().out
    assert code == 0
    _, lines = read_csv(out / "results.csv")
    assert [(r["noise"], r["snr"]) for r in lines] == [("hiss", "0"), ("hum", "0")]
    for md in (printed, (out / "results.md").read_text()):
        assert f"### WER (%), hiss noise ({listing})" in md and "test sources" not in md
