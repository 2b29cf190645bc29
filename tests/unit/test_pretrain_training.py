"""Pretraining machinery: cluster-target files, the 10%-label subsets, pretrained bundles and --init_from, PretrainBrain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import speechbrain as sb
import torch

from avsr.checkpoints import PRETRAIN_KIND, load_model, load_pretrain_model, read_bundle_metadata, save_pretrain_model
from avsr.data.dataset import batch_tensors, duration_batches, make_dataset
from avsr.data.manifest import Utterance, read_manifest, subset_utterances
from avsr.errors import InputError
from avsr.models.avsr import build_model
from avsr.models.pretrain import build_pretrain_model
from avsr.tokenizer import CharTokenizer
from avsr.training.clusters import acoustic_features, load_targets, make_targets, model_features, save_targets
from avsr.training.pretrain import PretrainBrain
from avsr.training.recipe import build_pretrain_recipe_model, build_recipe_model, init_encoder_from, init_from_bundle
from tests.tiny_configs import SMALL_MODEL

SMALL = {**SMALL_MODEL, "mask_prob": 0.4, "mask_span": 3}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Six utterances of tones and noise with audio and mouths, in a manifest without transcripts."""
    d = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        seconds = 0.6 + 0.2 * i
        t = np.arange(int(16000 * seconds)) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) * (t > 0.2) + 0.01 * rng.standard_normal(t.size)
        sf.write(d / f"u{i}.flac", wave.astype(np.float32), 16000)
        np.savez(d / f"u{i}.npz", mouths=rng.integers(0, 256, (int(25 * seconds), 26, 26), dtype=np.uint8))
        rows.append(f"u{i},,{seconds:.2f},u{i}.flac,u{i}.npz")
    (d / "m.csv").write_text("id,text,duration,audio,mouths\n" + "\n".join(rows) + "\n")
    return d


def test_manifest_without_transcripts_for_pretraining(corpus: Path) -> None:
    with pytest.raises(InputError, match="empty transcript"):
        read_manifest(corpus / "m.csv")
    utts = read_manifest(corpus / "m.csv", need_text=False)
    assert [u.text for u in utts] == [""] * 6
    (corpus / "notext.csv").write_text("id,duration,audio\nu0,0.6,u0.flac\n")
    assert read_manifest(corpus / "notext.csv", need_text=False)[0].text == ""
    with pytest.raises(InputError, match="lacks the column"):
        read_manifest(corpus / "notext.csv")


def test_cluster_targets_at_25_fps_round_trip(corpus: Path, tmp_path: Path) -> None:
    utts = read_manifest(corpus / "m.csv", need_text=False)
    targets = make_targets([utts[:4], utts[4:]], acoustic_features, 3, pool=4, source="mfcc", seed=0)
    assert targets.info["fit_utterances"] == 4 and set(targets.targets) == {u.id for u in utts}
    for u in utts:  # one target per 640 samples: the encoder's steps
        assert targets.targets[u.id].shape == (int(np.ceil(16000 * u.duration / 640)),)
    # the silent lead-in and the tones fall into different clusters
    first = targets.targets["u3"]
    assert first[0] != first[-1]
    save_targets(tmp_path / "t.safetensors", targets)
    back = load_targets(tmp_path / "t.safetensors")
    assert back.source == "mfcc" and back.n_clusters == 3 and back.info == targets.info
    assert all(torch.equal(back.targets[k], v) for k, v in targets.targets.items())
    torch.testing.assert_close(back.centroids, targets.centroids)
    with pytest.raises(InputError, match="no such cluster-targets file"):
        load_targets(tmp_path / "none.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="not a readable cluster-targets file"):
        load_targets(tmp_path / "bad.safetensors")

    # a fit on a subset of the training utterances still labels every utterance
    sub = make_targets([utts], acoustic_features, 3, pool=4, source="mfcc", fit_utterances=3, seed=1)
    assert sub.info["fit_utterances"] == 3 and len(sub.targets) == 6

    # the targets serve as the dataset's 'tokens' (padded with -1 in the batch)
    ds = make_dataset(utts, None, targets=back.targets)
    batch = sb.dataio.batch.PaddedBatch([ds[0], ds[5]])
    b = batch_tensors(batch)
    assert torch.equal(b.targets[0, : len(back.targets["u0"])], back.targets["u0"])
    assert (b.targets[0, len(back.targets["u0"]):] == -1).all()
    with pytest.raises(InputError, match="'u5' has no cluster targets"):
        make_dataset(utts, None, targets={k: v for k, v in back.targets.items() if k != "u5"})


def test_iteration_two_features_come_from_a_model_layer(corpus: Path) -> None:
    utts = read_manifest(corpus / "m.csv", need_text=False)
    torch.manual_seed(0)
    model = build_pretrain_model({"encoder": SMALL, "n_clusters": 3}).train()
    feats = dict((u.id, f) for u, f in model_features(utts, model, layer=1, batch_seconds=2.0))
    assert model.training  # restored
    assert list(feats) == [u.id for u in utts]  # in manifest order, across batches
    for u in utts:  # audio-visual: the shorter of the two streams, at 25 fps
        assert feats[u.id].shape == (int(25 * u.duration), SMALL["d_model"])
    targets = make_targets([utts], lambda us: model_features(us, model, 2), 4, pool=1, source="model")
    assert all(len(targets.targets[k]) == len(feats[k]) for k in feats)


def test_subset_is_fixed_by_the_ids_and_nested() -> None:
    rows = [Utterance(f"spk{i % 7}-{i:04d}", "a b", 1.0, "a.flac") for i in range(500)]
    ten = subset_utterances(rows, 0.1)
    assert len(ten) == 50 and ten == [u for u in rows if u in ten]  # manifest order
    assert {u.id for u in subset_utterances(rows[::-1], 0.1)} == {u.id for u in ten}
    assert {u.id for u in ten} < {u.id for u in subset_utterances(rows, 0.2)}
    assert {u.id for u in subset_utterances(rows, 0.1, seed=1)} != {u.id for u in ten}
    assert len(subset_utterances(rows[:3], 0.01)) == 1
    assert subset_utterances(rows, 1.0) == rows
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(InputError, match="train_fraction must be in"):
            subset_utterances(rows, bad)


def test_a_pretrained_bundle_initialises_the_recognition_encoder(tmp_path: Path) -> None:
    tok = CharTokenizer.train(["bin blue at f two now"])
    torch.manual_seed(0)
    pre = build_pretrain_model({"encoder": {**SMALL, "vocab_size": 2, "audio_drop_prob": 0.5}, "n_clusters": 5})
    path = tmp_path / "pre.safetensors"
    save_pretrain_model(path, pre, extra={"targets": "mfcc"})
    meta = read_bundle_metadata(path)
    assert meta["config"]["kind"] == PRETRAIN_KIND and meta["tokenizer"] is None and meta["extra"] == {"targets": "mfcc"}
    back = load_pretrain_model(path)
    for (name, a), b in zip(pre.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), name

    torch.manual_seed(1)
    asr = build_model({**SMALL, "vocab_size": tok.vocab_size})
    decoder_before = {k: v.clone() for k, v in asr.decoder.state_dict().items()}
    init_from_bundle(asr, path, tok)  # no tokenizer check: the bundle has none, its encoder is what counts
    for (name, a), b in zip(pre.encoder.state_dict().items(), asr.encoder.state_dict().values()):
        assert torch.equal(a, b), name
    assert all(torch.equal(v, asr.decoder.state_dict()[k]) for k, v in decoder_before.items())

    # iteration 2 (or a recognition bundle) initialises a pretraining encoder the same way
    fresh = build_pretrain_model({"encoder": {**SMALL, "vocab_size": 2}, "n_clusters": 9})
    init_encoder_from(fresh.encoder, path)
    assert torch.equal(fresh.encoder.masker.embedding, pre.encoder.masker.embedding)

    wider = build_model({**SMALL, "vocab_size": tok.vocab_size, "encoder_ff": 96})
    with pytest.raises(InputError, match="init_from encoder does not fit"):
        init_from_bundle(wider, path, tok)
    with pytest.raises(InputError, match="is a pretrained encoder bundle"):
        load_model(path)


@pytest.mark.parametrize("preset", ["tiny", "base"])
def test_the_recipes_presets_share_one_encoder(preset: str) -> None:
    """The pretraining recipe's encoder fits the recognition recipe's model of the same preset."""
    tok = CharTokenizer.train(["ab"])
    hparams = {"model_preset": preset, "model": {"audio_drop_prob": 0.35, "mask_span": 5, "spec_augment": False}}
    pre = build_pretrain_recipe_model(hparams, 100).encoder.state_dict()
    asr = build_recipe_model({"model_preset": preset, "model": {"audio_drop_prob": 0.4}}, tok).encoder.state_dict()
    assert {k: v.shape for k, v in pre.items()} == {k: v.shape for k, v in asr.items()}
    with pytest.raises(InputError, match="unknown model_preset"):
        build_pretrain_recipe_model({"model_preset": "huge"}, 100)


def test_validation_masks_are_fixed_and_leave_the_generators_alone(corpus: Path, tmp_path: Path) -> None:
    utts = read_manifest(corpus / "m.csv", need_text=False)
    targets = make_targets([utts], acoustic_features, 3, pool=4, source="mfcc")
    ds = make_dataset(utts, None, targets=targets.targets)
    torch.manual_seed(0)
    model = build_pretrain_model({"encoder": {**SMALL, "vocab_size": 2}, "n_clusters": 3})
    brain = PretrainBrain(modules={"model": model}, hparams={"seed": 0, "valid_mask_seed": 7},
                          run_opts={"device": "cpu", "noprogressbar": True})
    loader = brain.make_dataloader(ds, sb.Stage.VALID, batch_sampler=duration_batches(ds, 3.0, shuffle=False))
    state = torch.get_rng_state()
    first = brain.evaluate(loader, progressbar=False)
    stats = dict(brain.last_stats)
    assert torch.equal(torch.get_rng_state(), state)
    torch.rand(5)  # another global state: the same masks all the same
    assert brain.evaluate(loader, progressbar=False) == first and brain.last_stats == stats
    assert {"loss_av", "acc_av", "loss_audio", "acc_audio", "loss_video", "acc_video"} <= set(stats)
    assert stats["loss"] == pytest.approx(np.mean([stats[f"loss_{m}"] for m in ("av", "audio", "video")]), abs=0.05)


def test_masked_prediction_is_learnable_from_the_context(corpus: Path) -> None:
    """Six utterances, 60 steps: the masked loss falls below the targets' entropy and accuracy rises."""
    utts = read_manifest(corpus / "m.csv", need_text=False)
    targets = make_targets([utts], acoustic_features, 4, pool=4, source="mfcc")
    ds = make_dataset(utts, None, targets=targets.targets)
    b = batch_tensors(sb.dataio.batch.PaddedBatch([ds[i] for i in range(6)]))
    counts = torch.bincount(torch.cat(list(targets.targets.values())), minlength=4).double()
    prior = float(-(counts / counts.sum() * (counts / counts.sum()).clamp_min(1e-12).log()).sum())
    torch.manual_seed(0)
    model = build_pretrain_model({"encoder": {**SMALL, "vocab_size": 2, "audio_drop_prob": 0.0, "video_drop_prob": 0.0,
                                              "spec_augment": False, "video_augment": False}, "n_clusters": 4})
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(60):
        out = model(b.audio, b.audio_lengths, b.video, b.video_lengths, b.targets)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        history.append((float(out["loss"].detach()), float(out["acc"])))
    first, last = np.mean(history[:5], axis=0), np.mean(history[-5:], axis=0)
    majority = float(counts.max() / counts.sum())
    # below what the targets' frequencies alone allow (the prior's entropy): the masked steps are
    # predicted from the unmasked context around them
    assert last[0] < 0.75 * prior < prior < first[0], (first, last, prior)
    assert last[1] > max(majority, first[1] + 0.2), (first, last, majority)
