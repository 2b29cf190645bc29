"""Auto-AVSR checkpoints end to end: ``avsr convert`` and ``avsr transcribe --checkpoint X.pth --tokenizer``.

A small random checkpoint with Auto-AVSR's key names (built from the
ESPnet-based reference of ``tests/auto_avsr_reference.py``) and a tiny
sentencepiece unigram model trained here stand in for the published files;
the video is a SynthGRID utterance rendered on a real face photo.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pysubs2
import pytest
import sentencepiece as spm
import torch

from avsr import cli
from avsr.checkpoints import load_model, read_bundle_metadata
from avsr.inference import Transcriber
from transcribe_fixtures import make_media

pytest.importorskip("espnet", reason="the reference needs the 'compat' extra (pip install --no-deps espnet)")

from auto_avsr_reference import RefAutoAVSR, published_state_dict, randomize  # noqa: E402

TEXTS = ["BIN BLUE AT F TWO NOW", "SET RED WITH G NINE SOON", "PLACE WHITE BY J THREE AGAIN",
         "LAY GREEN IN Q FIVE PLEASE"] * 5


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("auto_avsr")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TEXTS), model_writer=buf, vocab_size=40,
                                   model_type="unigram", character_coverage=1.0, minloglevel=2)
    (root / "unigram40.model").write_bytes(buf.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    pieces = sorted(sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not sp.is_control(i) and i != 0)
    units = ["<unk>"] + pieces
    (root / "unigram40_units.txt").write_text("".join(f"{p} {i}\n" for i, p in enumerate(units, 1)), encoding="utf-8")
    ref = randomize(RefAutoAVSR(len(units) + 2, "av", d=64, heads=4, ff=128, layers=2, dec_layers=1, width=8,
                                fusion_hidden=64), seed=3)
    torch.save(published_state_dict(ref), root / "avsr_random.pth")
    media = make_media(root)
    return {"pth": root / "avsr_random.pth", "spm": root / "unigram40.model", "video": media["face.mp4"],
            "root": root}


def test_transcribe_raw_checkpoint_writes_srt_and_json(capfd, files, monkeypatch):
    import avsr.vision

    presets = []
    crop = avsr.vision.extract_mouths_from_file

    def spy(*args, **kwargs):
        presets.append(kwargs.get("preset"))
        return crop(*args, **kwargs)

    monkeypatch.setattr(avsr.vision, "extract_mouths_from_file", spy)
    out = files["root"] / "out"
    out.mkdir()
    for fmt in ("json", "srt"):
        target = out / f"talk.{fmt}"
        code = cli.main(["transcribe", str(files["video"]), "--checkpoint", str(files["pth"]), "--tokenizer",
                         str(files["spm"]), "--format", fmt, "-o", str(target), "--beam", "2", "--device", "cpu",
                         "--quiet"])
        assert code == 0, capfd.readouterr().err
        assert target.stat().st_size > 0
    result = json.loads((out / "talk.json").read_text())
    assert result["segments"] and {s["modality"] for s in result["segments"]} == {"av"}  # lips and audio used
    subs = pysubs2.load(str(out / "talk.srt"))
    assert len(subs) == len([s for s in result["segments"] if s["text"]])
    assert presets and set(presets) == {"auto_avsr"}  # their crop geometry, from the converted model


def test_convert_writes_a_bundle_with_their_decoding_defaults(capfd, files):
    bundle = files["root"] / "converted.safetensors"
    assert cli.main(["convert", "--from", "auto-avsr", str(files["pth"]), "--tokenizer", str(files["spm"]),
                     "-o", str(bundle)]) == 0
    assert "Auto-AVSR av model" in capfd.readouterr().out
    extra = read_bundle_metadata(bundle)["extra"]
    assert extra["source"] == "auto-avsr" and extra["crop_preset"] == "auto_avsr"
    assert extra["decoding"]["beam_size"] == 40 and extra["decoding"]["ctc_weight"] == 0.1
    model, tok = load_model(bundle)
    assert model.modalities == ("audio", "video")
    tr = Transcriber.from_checkpoint(bundle, device="cpu")
    assert (tr.beam_size, tr.ctc_weight, tr.crop_preset) == (40, 0.1, "auto_avsr")
    assert Transcriber.from_checkpoint(bundle, device="cpu", beam_size=3).beam_size == 3  # the user's choice wins
    raw = Transcriber.from_checkpoint(files["pth"], device="cpu", tokenizer=files["spm"])
    same = {k: torch.equal(v, raw.model.state_dict()[k]) for k, v in model.state_dict().items()}
    assert all(same.values()) and raw.tokenizer == tok


def test_bad_inputs_are_one_line(capfd, files):
    code = cli.main(["transcribe", str(files["video"]), "--checkpoint", str(files["pth"]), "--quiet"])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "--tokenizer" in err[0]
    broken = files["root"] / "broken.pth"
    state = torch.load(files["pth"], weights_only=True)
    del state["fusion.fc2.bias"]
    torch.save(state, broken)
    code = cli.main(["convert", "--from", "auto-avsr", str(broken), "--tokenizer", str(files["spm"]),
                     "-o", str(files["root"] / "x.safetensors")])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "fusion.fc2.bias" in err[0]
    assert not (files["root"] / "x.safetensors").exists()
