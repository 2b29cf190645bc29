"""The LRS3, LRS2 and MUSAN recipes on tiny stand-ins laid out like the real corpora.

One module-wide set of stand-ins (``tests/lrs_fixtures.py``: four full-face
SynthGRID sentences made into an LRS3 tree, an LRS2 archive and a MUSAN
tree) goes through the scripts as a user runs them: ``prepare.py`` (cut
length 3 s, so the 7.5 s pretrain clip is cut), a rerun, the noise lists,
one-epoch ``tiny.yaml`` training runs of the recognition and enhancement
recipes with the MUSAN stand-in as noise, and ``avsr evaluate`` /
``avsr evaluate-enhance`` on the prepared test split.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lrs_fixtures import build_lrs2, build_lrs3, build_musan, mtimes, synth_sources  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CUT = 3.0
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
ENV.pop("RANK", None)
ENV.pop("WORLD_SIZE", None)


def run(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], env=ENV, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def build_tree(root: Path, *files: str) -> None:
    """Empty files at these paths under ``root``."""
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")


def prepare_lrs3(corpus: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return run(ROOT / "recipes/LRS3/avsr/prepare.py", corpus, "--out", out, "--max-seconds", CUT, "--jobs", "1",
               "--vocab-size", "40", "--valid-fraction", "0.25", "--quiet", *extra)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("corpora")
    sources = synth_sources(base / "synth")
    lrs2_root, lrs2_truth = build_lrs2(base / "LRS2", sources)
    return {"lrs3": base / "LRS3", "lrs3_truth": build_lrs3(base / "LRS3", sources), "lrs2": lrs2_root,
            "lrs2_truth": lrs2_truth, "musan": base / "musan", "musan_files": build_musan(base / "musan")}


@pytest.fixture(scope="module")
def lrs3(corpora, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("lrs3_data")
    r = prepare_lrs3(corpora["lrs3"], out)
    assert r.returncode == 0, r.stderr
    return out, r


@pytest.fixture(scope="module")
def noise(corpora, lrs3, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("noise")
    r = run(ROOT / "tools/prepare_noise.py", "--out", out, "--musan", corpora["musan"], "--babble-from", lrs3[0],
            "--babble-files", "2", "--babble-seconds", "2", "--talkers", "3", "--valid", "0.2", "--test", "0.2")
    assert r.returncode == 0, r.stderr
    return out


def test_lrs3_manifests_have_the_texts_durations_and_speaker_disjoint_splits(corpora, lrs3) -> None:
    out, result = lrs3
    truth = corpora["lrs3_truth"]
    train, valid, test = (rows(out / f"{s}.csv") for s in ("train", "valid", "test"))
    # whole (not cut) utterances: the transcript of the file and its full length
    for row in train + valid + test:
        if row["subset"] != "pretrain":
            t = truth[f"{row['subset']}/{row['speaker']}/{row['id'].rsplit('-', 1)[1]}"]
            assert row["text"] == t.text
            assert float(row["duration"]) == pytest.approx(t.duration, abs=0.05)
            assert sf.info(out / row["audio"]).samplerate == 16000
            assert sf.info(out / row["audio"]).frames == pytest.approx(float(row["duration"]) * 16000, abs=1)
    # one trainval speaker is held out for validation, and none of its clips (pretrain included) is trained on
    valid_speakers = {r["speaker"] for r in valid}
    assert valid_speakers == {"spkC"} and {r["subset"] for r in valid} == {"trainval"}  # the hash's pick, seed 0
    assert not valid_speakers & {r["speaker"] for r in train}
    assert not {r["speaker"] for r in test} & {r["speaker"] for r in train + valid}
    assert {r["speaker"] for r in test} == {"spkT", "spkU"}
    # the face lost half-way: kept, with the fraction of frames that had a face
    lost = [r for r in train + valid if r["subset"] == "trainval" and r["speaker"] == "spkC"]
    assert len(lost) == 1 and 0.4 < float(lost[0]["face"]) < 0.6
    assert all(float(r["face"]) == 1.0 for r in train + valid + test if r is not lost[0])
    # the unreadable video and the faceless one are failures; the run went on
    failures = {Path(r["video"]).name: r["problem"] for r in rows(out / "failures.csv")}
    assert set(failures) == {"00002.mp4", "00003.mp4"}
    assert "no face" in failures["00002.mp4"] and "not a readable" in failures["00003.mp4"]
    assert "2 failures listed" in result.stderr
    assert (out / "tokenizer.json").is_file()


def test_lrs3_pretrain_clips_are_cut_between_words_within_the_limit(corpora, lrs3) -> None:
    from avsr.io import read_audio
    from avsr.vision import load_mouths

    out, _ = lrs3
    train = rows(out / "train.csv")
    assert corpora["lrs3_truth"]["pretrain/spkA/00001"].duration > 2 * CUT  # three sentences: two cuts at least
    for clip, count in (("pretrain/spkA/00001", 3), ("pretrain/spkB/00002", 1)):
        t = corpora["lrs3_truth"][clip]
        segments = sorted((r for r in train if r["id"].startswith(f"lrs3-{clip.replace('/', '-')}_")),
                          key=lambda r: float(r["start"]))
        assert len(segments) == count, clip
        source = read_audio(corpora["lrs3"] / f"{clip}.mp4")
        for a, b in zip(segments, segments[1:]):
            assert float(a["end"]) <= float(b["start"])  # no overlap
        words = []
        for seg in segments:
            start, end = float(seg["start"]), float(seg["end"])
            assert 0 < end - start <= CUT
            inside = [w for w, s, e in t.words if s >= start - 0.03 and e <= end + 0.03]
            assert seg["text"] == " ".join(inside)  # exactly the words spoken in the segment
            words += inside
            audio, _ = sf.read(out / seg["audio"], dtype="float32")
            np.testing.assert_allclose(audio, source[round(start * 16000): round(end * 16000)], atol=1 / 32768 + 1e-6)
            assert len(load_mouths(out / seg["mouths"])) == round((end - start) * 25)
        assert words == [w for w, _, _ in t.words]  # no word lost or repeated


def test_lrs3_rerun_skips_finished_work(corpora, lrs3) -> None:
    out, _ = lrs3
    before = mtimes(out, (".wav", ".npz", ".json"))
    r = prepare_lrs3(corpora["lrs3"], out)
    assert r.returncode == 0, r.stderr
    assert "10 clips: 10 done before, 0 to process" in r.stderr
    assert "(unchanged)" in r.stdout  # the tokenizer too
    assert mtimes(out, (".wav", ".npz", ".json")) == before
    assert len(rows(out / "failures.csv")) == 2  # remembered failures stay listed


def test_lrs2_follows_its_lists_and_cuts_pretrain(corpora, tmp_path) -> None:
    out = tmp_path / "lrs2"
    r = run(ROOT / "recipes/LRS2/avsr/prepare.py", corpora["lrs2"], "--out", out, "--max-seconds", CUT, "--jobs", "2",
            "--vocab-size", "40", "--quiet")
    assert r.returncode == 0, r.stderr
    train, valid, test = (rows(out / f"{s}.csv") for s in ("train", "valid", "test"))
    truth = corpora["lrs2_truth"]
    assert [(r["speaker"], r["text"]) for r in valid] == [("p300", truth["main/p300/00001"].text)]
    assert [(r["speaker"], r["text"]) for r in test] == [("p400", truth["main/p400/00001"].text)]  # "p400/00001 NF"
    whole = sorted(r["text"] for r in train if r["subset"] == "train")
    assert whole == sorted([truth["main/p100/00001"].text, truth["main/p200/00001"].text])
    cut = [r for r in train if r["subset"] == "pretrain"]
    assert len(cut) >= 2 and all(float(r["duration"]) <= CUT for r in cut)
    assert " ".join(r["text"] for r in sorted(cut, key=lambda r: float(r["start"]))) == truth["pretrain/p100/00001"].text
    assert not (out / "failures.csv").exists()


def test_noise_lists_from_musan_and_babble(corpora, noise) -> None:
    from avsr.data.augment import NoiseFolder

    lists = {s: rows(noise / f"{s}.csv") for s in ("train", "valid", "test")}
    files = {s: {r["audio"] for r in lists[s]} for s in lists}
    assert not (files["train"] & files["valid"] or files["train"] & files["test"] or files["valid"] & files["test"])
    musan = {os.fspath(p.resolve()) for kind in corpora["musan_files"].values() for p in kind}
    assert musan == {f for s in files.values() for f in s if not f.startswith("babble")}
    for split in lists:
        assert {r["kind"] for r in lists[split]} == {"music", "noise", "speech", "babble"}
    babble = [noise / r["audio"] for r in lists["train"] if r["kind"] == "babble"]
    x, rate = sf.read(babble[0], dtype="float32")
    assert rate == 16000 and len(x) == 32000 and np.abs(x).max() > 0.1
    source = NoiseFolder(noise / "train.csv")
    assert source.kinds == ("babble", "music", "noise", "speech")
    assert source.sample(8000, np.random.default_rng(0), "music").shape == (8000,)


@pytest.mark.slow
def test_recipe_trains_on_the_prepared_lrs3_and_evaluates(lrs3, noise, tmp_path) -> None:
    from avsr.checkpoints import load_model

    data, _ = lrs3
    exp = tmp_path / "exp"
    r = run(ROOT / "recipes/LRS3/avsr/train.py", ROOT / "recipes/LRS3/avsr/hparams/tiny.yaml", "--noprogressbar",
            "--data_folder", data, "--noise_folder", noise, "--output_folder", exp, "--number_of_epochs", "1",
            "--batch_seconds", "6", "--valid_batch_seconds", "20", "--num_threads", "1", "--ckpt_interval_minutes", "0")
    assert r.returncode == 0, r.stderr[-3000:]
    bundle = exp / "model.safetensors"
    load_model(bundle)
    r = run("-m", "avsr", "evaluate", "--checkpoint", bundle, "--manifest", data / "test.csv", "--modality", "av,video",
            "--noise", "babble", "--snr", "clean", "--beam", "1", "--out", tmp_path / "eval", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    results = rows(tmp_path / "eval" / "results.csv")
    assert {row["modality"] for row in results} == {"av", "video"}
    assert all(row["utterances"] == "2" and float(row["wer"]) >= 0 for row in results)


def test_enhance_recipe_trains_on_the_prepared_lrs3_and_evaluates_on_held_out_noise(lrs3, noise, tmp_path) -> None:
    from avsr.checkpoints import load_enhancer

    data, _ = lrs3
    exp = tmp_path / "exp"
    # the stand-in's validation split is one speaker (a competing talker needs two): noise-only mixtures here
    r = run(ROOT / "recipes/LRS3/enhance/train.py", ROOT / "recipes/LRS3/enhance/hparams/tiny.yaml", "--noprogressbar",
            "--data_folder", data, "--noise_folder", noise, "--output_folder", exp, "--number_of_epochs", "1",
            "--batch_seconds", "6", "--valid_batch_seconds", "20", "--num_threads", "1", "--ckpt_interval_minutes", "0",
            "--talker_prob", "0")
    assert r.returncode == 0, r.stderr[-3000:]
    bundle = exp / "model.safetensors"
    load_enhancer(bundle)
    log = (exp / "train_log.txt").read_text()
    assert "SISDRi_av" in log and "SISDRi_audio" in log
    # the noise lists' held-out (test) files and a competing test talker: the test split has two speakers
    kinds = sorted({row["kind"] for row in rows(noise / "test.csv")})
    r = run("-m", "avsr", "evaluate-enhance", "--checkpoint", bundle, "--manifest", data / "test.csv",
            "--noise-list", noise / "test.csv", "--snr", "0", "--wer", "none", "--no-pesq", "--quiet",
            "--out", tmp_path / "eval")
    assert r.returncode == 0, r.stderr[-3000:]
    results = rows(tmp_path / "eval" / "enhance_results.csv")
    assert sorted({row["noise"] for row in results}) == sorted([*kinds, "talker"])
    assert all(row["utterances"] == "2" and row["si_sdri"] != "" for row in results)


@pytest.mark.parametrize("corpus, make, fragment", [
    ("LRS3", lambda root: build_tree(root, "pretrain/s/00001.mp4", "pretrain/s/00001.txt"), "missing folder trainval/"),
    ("LRS2", lambda root: [(root / d).mkdir(parents=True) for d in ("main", "pretrain")], "missing file list pretrain.txt"),
])
def test_wrong_layout_is_one_line_naming_what_is_missing(tmp_path, corpus, make, fragment) -> None:
    root = tmp_path / "corpus"
    make(root)
    r = run(ROOT / f"recipes/{corpus}/avsr/prepare.py", root, "--out", tmp_path / "out", "--quiet")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prepare.py: error:") and fragment in lines[0], r.stderr


def test_musan_wrong_layout_is_one_line(tmp_path) -> None:
    (tmp_path / "musan" / "music").mkdir(parents=True)
    r = run(ROOT / "tools/prepare_noise.py", "--out", tmp_path / "out", "--musan", tmp_path / "musan")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"prepare_noise: error: {tmp_path / 'musan'}: not a MUSAN folder: missing folder noise/ "
        "(expected music/, noise/, speech/)"]
