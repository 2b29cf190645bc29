"""avsr.data.augment: noise sources, SNR lists and the checkpointable noise mixer."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from avsr.audio.noise import NOISE_TYPES, NoiseBank, measure_snr
from avsr.data.augment import NoiseFolder, NoiseMixer, noise_source, parse_snrs
from avsr.errors import InputError
from avsr.training.checkpointer import AtomicCheckpointer

SR = 16000


def speech(n: int = 12000, seed: int = 0) -> np.ndarray:
    """A speech-like test signal: a few tone bursts separated by near-silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    env = (np.sin(2 * np.pi * 3 * t) > 0).astype(np.float64)
    x = 0.3 * env * np.sin(2 * np.pi * 220 * t) + 1e-4 * rng.standard_normal(n)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def bank() -> NoiseBank:
    return NoiseBank("train", kinds=("white", "pink", "babble"), seconds=1.0, variants=1)


# ------------------------------------------------------------------ parse_snrs


def test_parse_snrs() -> None:
    assert parse_snrs("clean,10,-5") == [math.inf, 10.0, -5.0]
    assert parse_snrs(["clean", 20, "0", 2.5, " INF "]) == [math.inf, 20.0, 0.0, 2.5, math.inf]


@pytest.mark.parametrize("bad", ["abc", "clean,abc", ["10", "x"], "nan", "-inf", "10,,5"])
def test_parse_snrs_rejects_non_numbers(bad) -> None:
    with pytest.raises(InputError, match="is not a number of dB or 'clean'"):
        parse_snrs(bad)


def test_parse_snrs_rejects_an_empty_list() -> None:
    with pytest.raises(InputError, match="no SNR given"):
        parse_snrs([])


# ---------------------------------------------------------------- noise_source


def test_noise_source_synth_specs() -> None:
    every = noise_source("synth", seconds=0.2, variants=1)
    assert isinstance(every, NoiseBank) and every.kinds == NOISE_TYPES
    some = noise_source("synth:white,babble", seconds=0.2, variants=1)
    assert some.kinds == ("white", "babble")
    assert some.sample(1000, np.random.default_rng(0), "babble").shape == (1000,)


@pytest.mark.parametrize("spec", ["synth:foo", "synth:white,foo"])
def test_noise_source_unknown_synth_type(spec: str) -> None:
    with pytest.raises(InputError, match=r"unknown noise type foo \(choose from white"):
        noise_source(spec, seconds=0.2, variants=1)


def test_noise_source_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such noise folder or list"):
        noise_source(str(tmp_path / "musan"))


# ----------------------------------------------------------------- NoiseFolder


@pytest.fixture(scope="module")
def musan(tmp_path_factory) -> Path:
    """A MUSAN-like tree: music/, noise/ (with a nested folder), speech/, at mixed rates and lengths."""
    root = tmp_path_factory.mktemp("musan")
    rng = np.random.default_rng(0)
    files = {
        "music/fma/m1.wav": (1.0, 16000),
        "music/m2.wav": (0.3, 16000),
        "noise/free-sound/n1.wav": (0.8, 8000),
        "noise/n2.flac": (0.5, 16000),
        "speech/s1.wav": (0.6, 16000),
    }
    for rel, (seconds, rate) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32), rate)
    (root / "README").write_text("not audio")
    return root


def test_noise_folder_kinds_from_first_level_subfolders(musan: Path) -> None:
    folder = NoiseFolder(musan)
    assert folder.kinds == ("music", "noise", "speech")
    assert [Path(p).name for p in folder.files["music"]] == ["m1.wav", "m2.wav"]
    assert sorted(Path(p).name for p in folder.files["noise"]) == ["n1.wav", "n2.flac"]


@pytest.mark.parametrize("num_samples", [1600, 4000, 40000])  # shorter than every file, in between, longer (looped)
def test_noise_folder_excerpts_have_the_requested_length(musan: Path, num_samples: int) -> None:
    folder = NoiseFolder(musan)
    rng = np.random.default_rng(0)
    for kind in folder.kinds:
        for _ in range(3):
            x = folder.sample(num_samples, rng, kind)
            assert x.shape == (num_samples,) and x.dtype == np.float32
            assert np.isfinite(x).all() and np.abs(x).max() > 0
    x = folder.sample(num_samples, rng)  # random kind
    assert x.shape == (num_samples,)


def test_noise_folder_excerpt_is_a_slice_of_the_file(musan: Path) -> None:
    folder = NoiseFolder(musan, kinds=["speech"])
    whole, _ = sf.read(musan / "speech/s1.wav", dtype="float32")
    x = folder.sample(1600, np.random.default_rng(3), "speech")
    # find the excerpt in the file (decoding may round a sample or so at the start)
    corr = np.correlate(whole, x, mode="valid")
    start = int(np.argmax(corr))
    np.testing.assert_allclose(whole[start:start + 1600], x, atol=1e-4)


def test_noise_folder_kind_filter_and_errors(musan: Path, tmp_path: Path) -> None:
    assert NoiseFolder(musan, kinds=["noise"]).kinds == ("noise",)
    with pytest.raises(InputError, match=r"no noise of kind drums \(found: music, noise, speech\)"):
        NoiseFolder(musan, kinds=["drums"])
    with pytest.raises(InputError, match="no noise of kind 'speech'"):
        NoiseFolder(musan, kinds=["music"]).sample(100, np.random.default_rng(0), "speech")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no audio files"):
        NoiseFolder(tmp_path / "empty")


def test_noise_folder_loose_files_are_kind_noise(tmp_path: Path) -> None:
    sf.write(tmp_path / "hum.wav", np.full(800, 0.1, np.float32), SR)
    folder = NoiseFolder(tmp_path)
    assert folder.kinds == ("noise",)
    assert folder.sample(2000, np.random.default_rng(0)).shape == (2000,)


def test_noise_folder_from_a_csv_list(musan: Path, tmp_path: Path) -> None:
    listing = tmp_path / "noises.csv"
    listing.write_text(f"audio,kind\n{musan / 'music/m2.wav'},music\n{musan / 'noise/n2.flac'},\n")
    folder = NoiseFolder(listing)
    assert folder.kinds == ("music", "noise")
    assert folder.sample(500, np.random.default_rng(0), "music").shape == (500,)
    bad = tmp_path / "bad.csv"
    bad.write_text("file\nx.wav\n")
    with pytest.raises(InputError, match="needs an 'audio' or 'path' column"):
        NoiseFolder(bad)


def test_noise_mixer_on_a_noise_folder(musan: Path) -> None:
    mixer = NoiseMixer(noise_source(str(musan)), [5], seed=0)
    s = speech()
    y, kind, snr = mixer(s)
    assert kind in ("music", "noise", "speech") and snr == 5.0
    assert measure_snr(s, y.astype(np.float64) - s) == pytest.approx(5.0, abs=1e-3)


# ------------------------------------------------------------------ NoiseMixer


def test_mixer_draws_snrs_and_kinds_from_the_lists(bank: NoiseBank) -> None:
    snrs = ["clean", 10, 0, -5]
    mixer = NoiseMixer(bank, snrs, seed=0)
    s = speech()
    drawn = [mixer(s)[1:] for _ in range(80)]
    assert {snr for _, snr in drawn} == {math.inf, 10.0, 0.0, -5.0}
    assert {kind for kind, snr in drawn if snr != math.inf} == {"white", "pink", "babble"}
    assert all(kind is None for kind, snr in drawn if snr == math.inf)
    only_pink = NoiseMixer(bank, [0], seed=0, kinds=["pink"])
    assert {only_pink(s)[1] for _ in range(10)} == {"pink"}


@pytest.mark.parametrize("snr", [20.0, 5.0, 0.0, -5.0, -10.0])
def test_mixer_mixes_at_the_exact_snr(bank: NoiseBank, snr: float) -> None:
    mixer = NoiseMixer(bank, [snr], seed=1)
    s = speech()
    for _ in range(3):
        y, kind, got = mixer(s)
        assert got == snr and kind in bank.kinds
        assert y.dtype == np.float32 and y.shape == s.shape
        assert measure_snr(s, y.astype(np.float64) - s) == pytest.approx(snr, abs=1e-3)


def test_clean_leaves_the_audio_untouched(bank: NoiseBank) -> None:
    mixer = NoiseMixer(bank, ["clean"], seed=0)
    s = speech()
    y, kind, snr = mixer(s)
    assert kind is None and snr == math.inf
    assert y.dtype == np.float32 and np.array_equal(y, s)
    silent = np.zeros(800, np.float32)  # silence cannot be mixed at an SNR: it is left alone
    y, kind, _ = NoiseMixer(bank, [0], seed=0)(silent)
    assert kind is None and not y.any()


def test_mix_batch_keeps_padding_zero_and_lengths(bank: NoiseBank) -> None:
    a, b = speech(12000, 0), speech(7000, 1)
    audio = torch.zeros(2, 12000)
    audio[0] = torch.from_numpy(a)
    audio[1, :7000] = torch.from_numpy(b)
    lengths = torch.tensor([12000, 7000])
    noisy = NoiseMixer(bank, [0], seed=0).mix_batch(audio, lengths)
    assert noisy.shape == audio.shape and noisy.dtype == audio.dtype
    assert not noisy[1, 7000:].any()
    for i, (x, n) in enumerate(((a, 12000), (b, 7000))):
        assert measure_snr(x, noisy[i, :n].double().numpy() - x) == pytest.approx(0.0, abs=1e-3)
    assert torch.equal(audio[1, 7000:], torch.zeros(5000))  # the input is not modified in place
    clean = NoiseMixer(bank, ["clean"], seed=0).mix_batch(audio, lengths)
    assert torch.equal(clean, audio)


def test_mixer_rejects_kinds_the_source_lacks(bank: NoiseBank) -> None:
    with pytest.raises(InputError, match="noise kind music is not in the source"):
        NoiseMixer(bank, [0], kinds=["music"])
    with pytest.raises(InputError, match="is not a number of dB"):
        NoiseMixer(bank, ["loud"])


def _draws(mixer: NoiseMixer, k: int = 6) -> list:
    s = speech(4000)
    out = []
    for _ in range(k):
        y, kind, snr = mixer(s)
        out.append((kind, snr, y.tobytes()))
    return out


def test_mixer_state_round_trips_through_its_checkpoint_hooks(bank: NoiseBank, tmp_path: Path) -> None:
    mixer = NoiseMixer(bank, ["clean", 10, 0, -5], seed=7)
    _draws(mixer, 3)  # advance it somewhere
    mixer._save(tmp_path / "mixer.ckpt")
    expected = _draws(mixer)
    other = NoiseMixer(bank, ["clean", 10, 0, -5], seed=999)
    assert _draws(NoiseMixer(bank, ["clean", 10, 0, -5], seed=999)) != expected
    other._load(tmp_path / "mixer.ckpt")
    assert _draws(other) == expected


def test_mixer_state_round_trips_through_a_speechbrain_checkpointer(bank: NoiseBank, tmp_path: Path) -> None:
    mixer = NoiseMixer(bank, ["clean", 10, 0, -5], seed=7)
    ckpt = AtomicCheckpointer(tmp_path / "save", {"train_noise": mixer})
    _draws(mixer, 2)
    ckpt.save_checkpoint()
    expected = _draws(mixer)
    resumed = NoiseMixer(bank, ["clean", 10, 0, -5], seed=7)  # a fresh run: same seed, state from the start
    AtomicCheckpointer(tmp_path / "save", {"train_noise": resumed}).recover_if_possible()
    assert _draws(resumed) == expected


def _av_batch(frames: list[int], tokens: list[list[int]]) -> "Batch":
    from avsr.data.dataset import Batch

    b, t_max, l_max = len(frames), max(frames), max(len(t) for t in tokens)
    video = torch.zeros(b, t_max, 4, 4, dtype=torch.uint8)
    audio = torch.zeros(b, t_max * 640 + 37)
    targets = torch.full((b, l_max), -1, dtype=torch.long)
    audio_lengths = []
    for i, (n, t) in enumerate(zip(frames, tokens)):
        video[i, :n] = torch.arange(1, n + 1, dtype=torch.uint8).view(n, 1, 1) + 10 * i
        n_a = n * 640 + (37 if i % 2 else -50)  # audio a little longer or shorter than the video
        audio[i, :n_a] = float(i + 1)
        audio_lengths.append(n_a)
        targets[i, : len(t)] = torch.tensor(t)
    return Batch([f"u{i}" for i in range(b)], [f"text {i}" for i in range(b)], audio,
                 torch.tensor(audio_lengths), video, torch.tensor(frames), targets)


def test_joiner_off_or_not_drawn_leaves_the_batch_alone() -> None:
    from avsr.data.augment import UtteranceJoiner

    batch = _av_batch([5, 6, 7], [[1], [2, 3], [4]])
    assert UtteranceJoiner(0.0)(batch) is batch
    assert UtteranceJoiner(1.0)(_av_batch([5], [[1]])).ids == ["u0"]  # a single utterance stays


def test_joiner_concatenates_in_order_with_pauses_and_keeps_the_streams_in_step() -> None:
    from avsr.data.augment import UtteranceJoiner

    frames, tokens = [5, 6, 7, 8, 9], [[1], [2, 3], [4], [5, 6], [7]]
    joined = UtteranceJoiner(1.0, max_join=3, pause=(0.2, 0.6), seed=3)(_av_batch(frames, tokens))
    members = [[int(x[1:]) for x in uid.split("+")] for uid in joined.ids]
    assert [i for g in members for i in g] == list(range(5)) and any(len(g) > 1 for g in members)
    assert all(2 <= len(g) <= 3 for g in members[:-1])
    for k, group in enumerate(members):
        n_v = int(joined.video_lengths[k])
        pauses = n_v - sum(frames[i] for i in group)
        assert 5 * (len(group) - 1) <= pauses <= 15 * (len(group) - 1)  # 0.2-0.6 s at 25 fps
        assert int(joined.audio_lengths[k]) == n_v * 640
        assert joined.texts[k] == " ".join(f"text {i}" for i in group)
        t = joined.targets[k]
        assert t[t >= 0].tolist() == [tok for i in group for tok in tokens[i]]
        # each member's frames appear whole and in order; a pause holds the previous last frame
        v = joined.video[k, :n_v, 0, 0].tolist()
        firsts = [v.index(1 + 10 * i) for i in group]
        assert firsts == sorted(firsts)
        for i, start in zip(group, firsts):
            assert v[start : start + frames[i]] == [j + 1 + 10 * i for j in range(frames[i])]
        # the audio of a member sits exactly under its frames
        a = joined.audio[k, : n_v * 640]
        for i, start in zip(group, firsts):
            seg = a[start * 640 : (start + frames[i]) * 640]
            n_a = frames[i] * 640 + (37 if i % 2 else -50)
            assert torch.all(seg[: min(n_a, len(seg))] == float(i + 1))


def test_joiner_audio_only_batch_and_bad_settings() -> None:
    from avsr.data.augment import UtteranceJoiner
    from avsr.data.dataset import Batch

    b = _av_batch([4, 4], [[1], [2]])
    audio_only = Batch(b.ids, b.texts, b.audio, b.audio_lengths, None, None, b.targets)
    joined = UtteranceJoiner(1.0, max_join=2, pause=(0.4, 0.4))(audio_only)
    assert joined.video is None and joined.ids == ["u0+u1"]
    assert int(joined.audio_lengths[0]) == int(b.audio_lengths.sum()) + 10 * 640
    for kwargs in ({"prob": 1.5}, {"prob": 0.5, "max_join": 1}, {"prob": 0.5, "pause": (1.0, 0.5)}):
        with pytest.raises(InputError):
            UtteranceJoiner(**kwargs)


def test_edge_pauses_hold_the_first_and_last_frames_over_silence() -> None:
    from avsr.data.augment import UtteranceJoiner

    frames, tokens = [5, 6, 7], [[1], [2, 3], [4]]
    batch = _av_batch(frames, tokens)
    padded = UtteranceJoiner(0.0, edge_prob=1.0, edge_pause=(0.4, 0.4))(batch)  # 10 frames each side
    assert padded.ids == batch.ids and padded.texts == batch.texts
    for k, n in enumerate(frames):
        assert int(padded.video_lengths[k]) == n + 20 and int(padded.audio_lengths[k]) == (n + 20) * 640
        v = padded.video[k, : n + 20, 0, 0].tolist()
        first, last = 1 + 10 * k, n + 10 * k
        assert v == [first] * 10 + list(range(first, last + 1)) + [last] * 10
        a = padded.audio[k, : (n + 20) * 640]
        assert torch.all(a[: 10 * 640] == 0) and torch.all(a[-10 * 640 :] == 0)
        assert torch.all(a[10 * 640 : 11 * 640] == float(k + 1))
        t = padded.targets[k]
        assert t[t >= 0].tolist() == tokens[k]  # pauses carry no words

    # drawn per side: at 0.5 some utterances get a pause on one side only, and joining still works
    joiner = UtteranceJoiner(1.0, max_join=2, pause=(0.2, 0.2), edge_prob=0.5, edge_pause=(0.2, 0.2), seed=4)
    sides = set()
    for _ in range(20):
        out = joiner(_av_batch([5, 6, 7, 8], [[1], [2], [3], [4]]))
        for k, uid in enumerate(out.ids):
            members = [int(x[1:]) for x in uid.split("+")]
            extra = int(out.video_lengths[k]) - sum([5, 6, 7, 8][i] for i in members) - 5 * (len(members) - 1)
            assert extra in (0, 5, 10)
            sides.add(extra)
    assert sides == {0, 5, 10}
    with pytest.raises(InputError):
        UtteranceJoiner(0.5, edge_prob=1.5)
    with pytest.raises(InputError):
        UtteranceJoiner(0.5, edge_prob=0.5, edge_pause=(1.0, 0.2))
    assert UtteranceJoiner(0.0, edge_prob=0.0)(batch) is batch


def test_joiner_state_round_trips_through_its_checkpoint_hooks(tmp_path: Path) -> None:
    from avsr.data.augment import UtteranceJoiner

    joiner = UtteranceJoiner(0.5, seed=1)
    joiner.rng.random(7)
    joiner._save(tmp_path / "join.ckpt")
    expected = [joiner.groups(10) for _ in range(5)]
    other = UtteranceJoiner(0.5, seed=99)
    other._load(tmp_path / "join.ckpt")
    assert [other.groups(10) for _ in range(5)] == expected


# ------------------------------------------------------------------ InterferenceMixer (enhancement)


@pytest.fixture(scope="module")
def talkers(tmp_path_factory) -> list:
    from avsr.data.manifest import Utterance

    folder = tmp_path_factory.mktemp("talkers")
    out = []
    for i, spk in enumerate(("a", "a", "b", "c")):
        path = folder / f"t{i}.flac"
        sf.write(path, speech(9000, seed=10 + i) * (i + 1), SR)
        out.append(Utterance(f"t{i}", "x", 0.5, str(path), None, None, {"speaker": spk}))
    return out


def _interference_draws(mixer, n: int = 6) -> list:
    return [(kind, round(snr, 6)) for kind, snr in (mixer(speech(), "a")[1:] for _ in range(n))]


def test_interference_mixer_draws_talkers_of_other_speakers(talkers: list) -> None:
    from avsr.data.augment import TALKER, InterferenceMixer

    mixer = InterferenceMixer(None, talkers, (-5, 5), clean_prob=0.0, talker_prob=1.0, seed=0)
    x = speech()
    for _ in range(20):
        y, kind, snr = mixer(x, "a")
        assert kind == TALKER and -5 <= snr <= 5
        # the target is untouched: what was added is the talker, at the drawn SNR over the target's speech
        assert measure_snr(x, y - x) == pytest.approx(snr, abs=1e-3)
    rng = np.random.default_rng(0)
    others = {mixer.talker(1000, "a", rng).tobytes() for _ in range(30)}
    own = {(sf.read(u.audio, dtype="float32")[0][:1000]).tobytes() for u in talkers if u.extra["speaker"] == "a"}
    assert not others & own


def test_interference_mixer_noise_and_clean(bank: NoiseBank, talkers: list) -> None:
    from avsr.data.augment import InterferenceMixer

    clean = InterferenceMixer(bank, [], clean_prob=1.0, talker_prob=0.0, seed=0)
    x = speech()
    y, kind, snr = clean(x, "a")
    assert kind is None and snr == math.inf and np.array_equal(y, x)
    noisy = InterferenceMixer(bank, talkers, (0, 0), clean_prob=0.0, talker_prob=0.0, seed=0, kinds=["white"])
    batch = torch.zeros(2, 12000)
    batch[0] = torch.from_numpy(x)
    batch[1, :8000] = torch.from_numpy(x[:8000])
    out, kinds = noisy.mix_batch(batch, torch.tensor([12000, 8000]), ["a", "b"])
    assert kinds == ["white", "white"] and out[1, 8000:].abs().max() == 0
    assert measure_snr(x, (out[0] - batch[0]).numpy()) == pytest.approx(0.0, abs=1e-3)


def test_interference_mixer_state_round_trips(bank: NoiseBank, talkers: list, tmp_path: Path) -> None:
    from avsr.data.augment import InterferenceMixer

    def make(seed: int) -> InterferenceMixer:
        return InterferenceMixer(bank, talkers, seed=seed)

    mixer = make(3)
    _interference_draws(mixer, 4)
    ckpt = AtomicCheckpointer(tmp_path / "save", {"train_noise": mixer})
    ckpt.save_checkpoint()
    expected = _interference_draws(mixer)
    resumed = make(3)
    AtomicCheckpointer(tmp_path / "save", {"train_noise": resumed}).recover_if_possible()
    assert _interference_draws(resumed) == expected != _interference_draws(make(3))


def test_interference_mixer_rejects_bad_settings(bank: NoiseBank, talkers: list) -> None:
    from avsr.data.augment import InterferenceMixer

    with pytest.raises(InputError, match="at least two speakers"):
        InterferenceMixer(bank, talkers[:2], talker_prob=0.5)
    with pytest.raises(InputError, match="sum of at most 1"):
        InterferenceMixer(bank, talkers, clean_prob=0.7, talker_prob=0.5)
    with pytest.raises(InputError, match="SNR range"):
        InterferenceMixer(bank, talkers, snr_range=(5, -5))
    with pytest.raises(InputError, match="no noise source"):
        InterferenceMixer(None, talkers, clean_prob=0.1, talker_prob=0.4)
