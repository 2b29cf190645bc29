"""Auto-AVSR checkpoints: key/shape coverage at full size, numerical equivalence with ESPnet at small size.

Full size (about 250 M parameters per stream) would cost a gigabyte per
checkpoint, so the key and shape checks build the reference and our model
on PyTorch's ``meta`` device (shapes, no memory): the published key names
and shapes come from :mod:`tests.auto_avsr_reference` at the published
sizes. The numerical checks use the same code at small widths (2 blocks,
width 64, a ~60-piece vocabulary) with random weights, batch-norm
statistics included.
"""

from __future__ import annotations

import io
import random

import pytest
import sentencepiece as spm
import torch

from avsr.errors import InputError
from avsr.models.compat import auto_avsr as aa
from avsr.tokenizer import SentencePieceTokenizer

espnet = pytest.importorskip("espnet", reason="the reference needs the 'compat' extra (pip install --no-deps espnet)")

from auto_avsr_reference import (  # noqa: E402
    RefAutoAVSR,
    published_state_dict,
    randomize,
    their_audio_input,
    their_video_input,
)

TEXTS = [
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG", "SHE SELLS SEA SHELLS BY THE SEA SHORE",
    "I THINK THAT IS A VERY GOOD IDEA", "WE WILL TALK ABOUT IT TOMORROW MORNING",
    "HOW MUCH WOOD WOULD A WOODCHUCK CHUCK", "PLEASE PUT THE RED BOX ON THE TABLE",
] * 4


@pytest.fixture(scope="module")
def vocab() -> tuple[SentencePieceTokenizer, list[str]]:
    """A unigram model trained like theirs (sentencepiece defaults: <unk> 0, <s> 1, </s> 2) and a
    units file that lists its pieces in another order and leaves one out."""
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TEXTS), model_writer=buf, vocab_size=60,
                                   model_type="unigram", character_coverage=1.0, minloglevel=2)
    tok = SentencePieceTokenizer(buf.getvalue())
    pieces = [tok.id_to_piece(i) for i in range(2, tok.vocab_size - 1) if not tok.id_to_piece(i).startswith("<")]
    random.Random(0).shuffle(pieces)
    return tok, ["<unk>"] + pieces[1:]  # pieces[0] has no unit: it can never be emitted


SMALL = dict(d=64, heads=4, ff=128, layers=2, kernel=31, dec_layers=2, width=8, fusion_hidden=96)


@pytest.fixture(scope="module")
def small_refs(vocab) -> dict[str, RefAutoAVSR]:
    _, units = vocab
    odim = len(units) + 2
    return {m: randomize(RefAutoAVSR(odim, m, **SMALL), seed=i) for i, m in enumerate(("video", "audio", "av"))}


@pytest.fixture(scope="module")
def full_tables() -> dict[str, dict[str, torch.Tensor]]:
    """Published key names and shapes at full size (meta tensors: no memory)."""
    with torch.device("meta"):
        return {m: published_state_dict(RefAutoAVSR(5049, m)) for m in ("video", "audio", "av")}


def _full_vocab(odim: int = 5049) -> tuple[int, list[int]]:
    return odim, list(range(odim))


# --------------------------------------------------------------------------- keys and shapes (full size)


@pytest.mark.parametrize("modality", ["video", "audio", "av"])
def test_full_size_checkpoint_fills_every_parameter(full_tables, modality):
    from avsr.models.avsr import build_model, count_parameters

    state = aa.unwrap(full_tables[modality])
    assert aa.detect_modality(state) == modality
    config = aa.infer_config(state, 5049)
    assert (config["d_model"], config["encoder_heads"], config["encoder_ff"], config["conv_kernel"]) == (768, 12, 3072, 31)
    assert config["encoder_layers" if modality != "av" else "stream_layers"] == 12 and config["decoder_layers"] == 6
    with torch.device("meta"):
        model = build_model(config)
    plan = aa.check_state_dict(state, model, *_full_vocab()[::-1])
    used = {s for r in plan.values() for s in r.sources}
    assert used == set(state)  # every checkpoint key used, and every parameter of ours has a source
    assert set(plan) == set(model.state_dict())
    params = count_parameters(model) / 1e6
    assert {"video": 250, "audio": 243}.get(modality, params) == pytest.approx(params, abs=1.0)  # model zoo sizes


def test_wrappers_and_2025_layout_are_accepted(full_tables):
    state = full_tables["video"]
    lightning = {"state_dict": {"model." + k: v for k, v in state.items()}}
    assert aa.unwrap(lightning).keys() == state.keys()
    new_layout = {("proj_encoder." + k[len("encoder.embed.0."):] if k.startswith("encoder.embed.0.")
                   else k[len("encoder."):] if k.startswith("encoder.frontend.") else k): v for k, v in state.items()}
    new_layout = {k.replace("pointwise_cov1", "pointwise_conv1"): v for k, v in new_layout.items()}
    assert aa.unwrap(new_layout).keys() == state.keys()


@pytest.mark.parametrize("damage", ["missing", "extra", "shape"])
def test_bad_keys_give_one_error_naming_the_key(full_tables, damage):
    from avsr.models.avsr import build_model

    state = dict(aa.unwrap(full_tables["av"]))
    key = "aux_encoder.encoders.3.conv_module.depthwise_conv.weight"
    if damage == "missing":
        del state[key]
    elif damage == "extra":
        key = "encoder.encoders.0.surprise.weight"
        state[key] = torch.empty(3, device="meta")
    else:
        state[key] = torch.empty(768, 1, 15, device="meta")
    with torch.device("meta"):
        model = build_model(aa.infer_config(dict(aa.unwrap(full_tables["av"])), 5049))
    with pytest.raises(InputError, match=key.replace(".", r"\.")) as err:
        aa.check_state_dict(state, model, list(range(5049)), 5049)
    assert "\n" not in str(err.value)


def test_not_a_checkpoint():
    with pytest.raises(InputError, match="not an Auto-AVSR checkpoint"):
        aa.unwrap({"weights": [1, 2]})
    with pytest.raises(InputError, match="frontend3D"):
        aa.detect_modality({"decoder.embed.0.weight": torch.zeros(3, 3)})


def test_units_parsing_and_vocabulary_map(vocab):
    tok, units = vocab
    assert aa.parse_units("<unk> 1\n▁A 2\n") == ["<unk>", "▁A"]
    with pytest.raises(InputError, match="line 2"):
        aa.parse_units("<unk> 1\n▁A 3\n")
    odim, index = aa.vocabulary_map(units, tok)
    assert odim == len(units) + 2 and index[0] == 0 and index[-1] == odim - 1
    assert index[1] == 1  # <unk>
    assert sum(i is None for i in index) >= 1  # the left-out piece (and the control symbols <s>, </s>)
    for tid, i in enumerate(index[1:-1], 1):
        if i is not None:
            assert units[i - 1] == tok.id_to_piece(tid)


# --------------------------------------------------------------------------- numbers (small size)


def _convert(ref: RefAutoAVSR, vocab):
    tok, units = vocab
    return aa.convert(published_state_dict(ref), tok, units)


def _inputs(n_frames: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mouths = torch.randint(0, 256, (1, n_frames, 96, 96), generator=g, dtype=torch.uint8)
    wave = 0.1 * torch.randn(1, n_frames * 640, generator=g)
    return mouths, wave


@torch.no_grad()
@pytest.mark.parametrize("modality", ["video", "audio", "av"])
def test_frontends_and_encoder_match_the_reference(small_refs, vocab, modality):
    ref = small_refs[modality]
    model = _convert(ref, vocab)
    mouths, wave = _inputs()
    v_in, a_in = their_video_input(mouths), their_audio_input(wave)
    if modality in ("video", "av"):  # video frontend = their frontend + encoder.embed.0
        ours, _ = model.encoder.video_frontend(mouths)
        theirs = ref.encoder.embed[0](ref.encoder.frontend(v_in))
        assert (ours - theirs).abs().max() <= 1e-4
    if modality in ("audio", "av"):
        enc = ref.aux_encoder if modality == "av" else ref.encoder
        ours, _ = model.encoder.audio_frontend(wave)
        theirs = enc.embed[0](enc.frontend(a_in))
        assert (ours - theirs).abs().max() <= 1e-4
    audio = wave if modality != "video" else None
    video = mouths if modality != "audio" else None
    enc, lengths = model.encode(audio, None, video, None)
    theirs = ref.encode(v_in, a_in)
    assert enc.shape == theirs.shape and lengths.tolist() == [12]
    assert (enc - theirs).abs().max() <= 1e-4


@torch.no_grad()
def test_decoder_and_ctc_match_the_reference(small_refs, vocab):
    tok, units = vocab
    ref = small_refs["video"]
    model = _convert(ref, vocab)
    _, index = aa.vocabulary_map(units, tok)
    memory = torch.randn(1, 9, SMALL["d"])
    ours_ids = [tok.sos_id] + tok.encode("THE RED BOX")
    theirs_ids = [index[t] for t in ours_ids]
    assert None not in theirs_ids
    from espnet.nets.pytorch_backend.transformer.mask import subsequent_mask

    logits = model.decoder(torch.tensor([ours_ids]), memory, torch.tensor([9]))
    ref_logits, _ = ref.decoder(torch.tensor([theirs_ids]), subsequent_mask(len(ours_ids)).unsqueeze(0), memory, None)
    have = [t for t, i in enumerate(index) if i is not None]
    assert (logits[0][:, have] - ref_logits[0][:, [index[t] for t in have]]).abs().max() <= 1e-4
    missing = [t for t, i in enumerate(index) if i is None]
    assert (logits[0][:, missing] < -1e3).all()  # classes without weights are never chosen
    log_probs = model.ctc_log_probs(memory)
    ref_lp = ref.ctc.ctc_lo(memory).log_softmax(-1)
    assert (log_probs[0][:, have] - ref_lp[0][:, [index[t] for t in have]]).abs().max() <= 1e-4


@torch.no_grad()
def test_converted_model_is_padding_invariant(small_refs, vocab):
    model = _convert(small_refs["av"], vocab)
    mouths, wave = _inputs(12)
    alone, _ = model.encode(wave[:, : 8 * 640], None, mouths[:, :8], None)
    batch, lengths = model.encode(wave.repeat(2, 1), torch.tensor([12 * 640, 8 * 640]),
                                  mouths.repeat(2, 1, 1, 1), torch.tensor([12, 8]))
    assert lengths.tolist() == [12, 8]
    assert (batch[1, :8] - alone[0]).abs().max() <= 1e-4
