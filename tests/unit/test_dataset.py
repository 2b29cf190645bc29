"""avsr.data.dataset: DynamicItemDataset pipelines, duration batches, model inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.dataio.batch import PaddedBatch

from avsr.data.dataset import batch_tensors, duration_batches, load_mouths, make_dataset
from avsr.data.manifest import read_manifest
from avsr.errors import InputError
from avsr.tokenizer import CharTokenizer

TEXTS = ["bin blue", "lay red now", "set green", "place white again"]
# audio samples (at 16 kHz) and mouth frames (25 fps) of each utterance, deliberately uneven
SAMPLES = [16001, 47999, 8000, 31357]
FRAMES = [25, 75, 13, 49]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, CharTokenizer]:
    d = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    rows = []
    for i, (text, n, t) in enumerate(zip(TEXTS, SAMPLES, FRAMES)):
        if i == 0:  # one file at 8 kHz stereo: it must come back 16 kHz mono
            sf.write(d / f"u{i}.wav", (rng.standard_normal((n // 2, 2)) * 0.1).astype(np.float32), 8000)
        else:
            sf.write(d / f"u{i}.flac", (rng.standard_normal(n) * 0.1).astype(np.float32), 16000)
        np.savez(d / f"u{i}.npz", mouths=rng.integers(0, 256, (t, 96, 96), dtype=np.uint8))
        audio = f"u{i}.wav" if i == 0 else f"u{i}.flac"
        rows.append(f"u{i},{text},{n / 16000:.4f},{audio},u{i}.npz")
    (d / "m.csv").write_text("id,text,duration,audio,mouths\n" + "\n".join(rows) + "\n")
    return d / "m.csv", CharTokenizer.train(TEXTS)


def test_items_are_float32_16k_audio_uint8_mouths_and_token_ids(corpus) -> None:
    manifest, tok = corpus
    ds = make_dataset(read_manifest(manifest), tok)
    for i, item in enumerate(ds):
        assert item["id"] == f"u{i}" and item["text"] == TEXTS[i]
        audio, mouths, tokens = item["audio"], item["mouths"], item["tokens"]
        assert audio.dtype == torch.float32 and audio.ndim == 1
        assert abs(len(audio) - SAMPLES[i]) <= 2  # the 8 kHz file is resampled to 16 kHz
        assert mouths.dtype == torch.uint8 and tuple(mouths.shape) == (FRAMES[i], 96, 96)
        assert tokens.dtype == torch.long and tokens.tolist() == tok.encode(TEXTS[i])
        assert item["duration"] == pytest.approx(SAMPLES[i] / 16000, abs=1e-4)


def test_single_modality_datasets(corpus) -> None:
    manifest, tok = corpus
    rows = read_manifest(manifest)
    audio_only = make_dataset(rows, tok, video=False)[0]
    video_only = make_dataset(rows, tok, audio=False)[0]
    assert "audio" in audio_only and "mouths" not in audio_only
    assert "mouths" in video_only and "audio" not in video_only


def test_a_requested_modality_without_files_is_an_input_error(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.flac", np.zeros(1600, np.float32), 16000)
    (tmp_path / "m.csv").write_text("id,text,duration,audio,mouths\nu1,ab,0.1,a.flac,\n")
    rows = read_manifest(tmp_path / "m.csv")
    with pytest.raises(InputError, match="'u1' has no mouths file"):
        make_dataset(rows, CharTokenizer.train(["ab"]))


def test_load_mouths_rejects_bad_files(tmp_path: Path) -> None:
    np.savez(tmp_path / "rgb.npz", mouths=np.zeros((4, 96, 96, 3), np.uint8))
    np.savez(tmp_path / "float.npz", mouths=np.zeros((4, 96, 96), np.float32))
    np.savez(tmp_path / "other.npz", frames=np.zeros((4, 96, 96), np.uint8))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    np.savez(tmp_path / "whole.npz", mouths=np.zeros((4, 96, 96), np.uint8))
    (tmp_path / "truncated.npz").write_bytes((tmp_path / "whole.npz").read_bytes()[:-200])
    with pytest.raises(InputError, match=r"must be \(T, H, W\) uint8"):
        load_mouths(str(tmp_path / "rgb.npz"))
    with pytest.raises(InputError, match=r"must be \(T, H, W\) uint8"):
        load_mouths(str(tmp_path / "float.npz"))
    for name in ("other.npz", "junk.npz", "truncated.npz"):
        with pytest.raises(InputError, match="not a mouth-crop npz"):
            load_mouths(str(tmp_path / name))


def test_batch_tensors_absolute_lengths_and_minus_one_padded_targets(corpus) -> None:
    manifest, tok = corpus
    ds = make_dataset(read_manifest(manifest), tok)
    items = [ds[i] for i in range(len(TEXTS))]
    b = batch_tensors(PaddedBatch(items))
    assert b.ids == [f"u{i}" for i in range(4)] and b.texts == TEXTS
    real_samples = [len(it["audio"]) for it in items]
    assert b.audio_lengths.tolist() == real_samples
    assert b.video_lengths.tolist() == FRAMES
    assert b.audio.shape == (4, max(real_samples)) and b.video.shape == (4, max(FRAMES), 96, 96)
    assert b.video.dtype == torch.uint8
    for i, it in enumerate(items):
        n, t = real_samples[i], FRAMES[i]
        assert torch.equal(b.audio[i, :n], it["audio"]) and not b.audio[i, n:].any()
        assert torch.equal(b.video[i, :t], it["mouths"])
        ids = tok.encode(TEXTS[i])
        assert b.targets[i, : len(ids)].tolist() == ids
        assert (b.targets[i, len(ids):] == -1).all()
    assert b.targets.dtype == torch.long
    moved = b.to("cpu")
    assert moved.ids == b.ids and torch.equal(moved.targets, b.targets)


def test_batch_tensors_of_an_audio_only_batch(corpus) -> None:
    manifest, tok = corpus
    ds = make_dataset(read_manifest(manifest), tok, video=False)
    b = batch_tensors(PaddedBatch([ds[2], ds[3]]))
    assert b.video is None and b.video_lengths is None
    assert b.audio_lengths.tolist() == [SAMPLES[2], SAMPLES[3]]


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> tuple[list, object]:
    """60 utterances of 0.4-3.5 s (one 12 s outlier); files are not read by the sampler."""
    d = tmp_path_factory.mktemp("many")
    sf.write(d / "a.flac", np.zeros(160, np.float32), 16000)
    rng = np.random.default_rng(1)
    durations = [round(float(x), 3) for x in rng.uniform(0.4, 3.5, 59)] + [12.0]
    (d / "m.csv").write_text(
        "id,text,duration,audio\n" + "\n".join(f"u{i},ab,{x},a.flac" for i, x in enumerate(durations)) + "\n"
    )
    rows = read_manifest(d / "m.csv")
    return rows, make_dataset(rows, CharTokenizer.train(["ab"]), video=False)


def _batches(sampler) -> list[list[int]]:
    return [list(b) for b in sampler]


@pytest.mark.parametrize("max_seconds", [4.0, 10.0])
def test_duration_batches_respect_max_seconds_and_cover_every_utterance_once(many, max_seconds: float) -> None:
    rows, ds = many
    durations = [r.duration for r in rows]
    for shuffle in (True, False):
        sampler = duration_batches(ds, max_seconds, shuffle=shuffle, seed=3)
        batches = _batches(sampler)
        assert len(batches) == len(sampler)
        assert sorted(i for b in batches for i in b) == list(range(len(rows)))
        for b in batches:
            padded = len(b) * max(durations[i] for i in b)
            # the padded total stays under the limit; a longer utterance gets a batch of its own
            assert padded <= max_seconds + 1e-6 or len(b) == 1, (b, padded)
        if max_seconds == 10.0:
            assert max(len(b) for b in batches) > 1


def test_duration_batches_order_is_deterministic_per_seed_and_epoch(many) -> None:
    _, ds = many
    a, b, c = (duration_batches(ds, 6.0, seed=s) for s in (0, 0, 1))
    first = _batches(a)
    assert _batches(b) == first
    assert _batches(c) != first
    a.set_epoch(1)
    epoch1 = _batches(a)
    assert epoch1 != first
    b.set_epoch(1)
    assert _batches(b) == epoch1  # the order of an epoch does not depend on the history
    ascending = duration_batches(ds, 6.0, shuffle=False)
    assert _batches(ascending) == _batches(duration_batches(ds, 6.0, shuffle=False))
