"""LRS2/LRS3 transcripts, word-timed cutting, layouts and held-out speakers (avsr.data.lrs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from avsr.data.lrs import Clip, Word, cut_by_words, held_out_speakers, list_lrs2, list_lrs3, read_transcript
from avsr.errors import InputError

PRETRAIN = """Text:  SO THIS IS {LG} WHAT I'VE DONE
Conf:  4

WORD START END ASDSCORE
SO 0.11 0.30 5.2
THIS 0.30 0.52 6.0
IS 0.55 0.70 5.9
WHAT 1.90 2.10 7.1
I'VE 2.12 2.30 7.3
DONE 2.40 2.95 6.6
"""


def test_read_transcript_parses_text_conf_and_the_word_table(tmp_path: Path) -> None:
    p = tmp_path / "00001.txt"
    p.write_text(PRETRAIN, encoding="utf-8")
    t = read_transcript(p)
    assert t.text == "so this is what i've done" and t.conf == "4"
    assert t.words[0] == Word("so", 0.11, 0.30) and t.words[-1] == Word("done", 2.40, 2.95) and len(t.words) == 6
    p.write_text("Text:  HELLO THERE\nConf:  3\n", encoding="utf-8")
    assert read_transcript(p).words == () and read_transcript(p).text == "hello there"


@pytest.mark.parametrize("content, fragment", [
    ("Conf:  3\n", "no 'Text:' line"),
    ("Text:  A\nConf:  3\n\nWORD START END ASDSCORE\nA zero 0.5 1.0\n", "line 5: not a 'WORD START END"),
    ("Text:  A\nConf:  3\n\nWORD START END ASDSCORE\nA 0.9 0.5 1.0\n", "bad word times"),
])
def test_read_transcript_rejects_malformed_files(tmp_path: Path, content: str, fragment: str) -> None:
    p = tmp_path / "x.txt"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=fragment):
        read_transcript(p)


def test_cut_by_words_keeps_every_word_within_the_limit_without_overlap() -> None:
    words = [Word(f"w{i}", 0.3 * i + 0.05, 0.3 * i + 0.25) for i in range(40)]  # 12 s of speech
    segments = cut_by_words(words, max_seconds=2.0, duration=12.5, pad=0.1)
    assert " ".join(s.text for s in segments) == " ".join(w.word for w in words)
    assert all(0 < s.end - s.start <= 2.0 for s in segments)
    assert all(a.end <= b.start for a, b in zip(segments, segments[1:]))
    for s in segments:  # each segment holds its words whole
        inside = [w for w in words if w.word in s.text.split()]
        assert s.start <= inside[0].start and inside[-1].end <= s.end
    assert segments[0].start == pytest.approx(0.0) and segments[-1].end <= 12.5


def test_cut_by_words_drops_a_word_longer_than_the_limit_and_checks_the_padding() -> None:
    segments = cut_by_words([Word("a", 0.0, 0.4), Word("long", 1.0, 5.0), Word("b", 5.2, 5.5)], 2.0)
    assert [s.text for s in segments] == ["a", "b"]
    with pytest.raises(InputError, match="twice the padding"):
        cut_by_words([Word("a", 0, 1)], max_seconds=0.2, pad=0.1)


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_list_lrs3_reads_the_layout_and_reports_videos_without_transcripts(tmp_path: Path) -> None:
    for rel in ("pretrain/a/00001.mp4", "pretrain/a/00001.txt", "trainval/a/50001.mp4", "trainval/a/50001.txt",
                "trainval/b/50002.mp4", "test/c/00001.mp4", "test/c/00001.txt"):
        _touch(tmp_path / rel)
    clips, problems = list_lrs3(tmp_path)
    assert [c.id for c in clips["pretrain"]] == ["lrs3-pretrain-a-00001"] and clips["pretrain"][0].cut
    assert [(c.speaker, c.cut) for c in clips["trainval"]] == [("a", False)]
    assert len(problems) == 1 and problems[0][0].endswith("50002.mp4") and "no transcript" in problems[0][1]
    with pytest.raises(InputError, match="missing folder pretrain/"):
        list_lrs3(tmp_path / "trainval")
    with pytest.raises(InputError, match="no SPEAKER/ID.mp4 videos"):
        (tmp_path / "empty" / "test").mkdir(parents=True)
        list_lrs3(tmp_path / "empty", ("test",))


def test_list_lrs2_reads_the_lists_next_to_or_above_the_corpus(tmp_path: Path) -> None:
    root = tmp_path / "mvlrs_v1"
    for rel in ("main/p1/00001", "main/p2/00001", "pretrain/p1/00002"):
        _touch(root / f"{rel}.mp4")
        _touch(root / f"{rel}.txt")
    (root / "pretrain").mkdir(exist_ok=True)
    (tmp_path / "train.txt").write_text("p1/00001\n", encoding="utf-8")
    (tmp_path / "test.txt").write_text("p2/00001 MV\np9/00001 NF\n", encoding="utf-8")
    (root / "pretrain.txt").write_text("p1/00002\n", encoding="utf-8")
    clips, problems = list_lrs2(root, ("train", "test", "pretrain"))
    assert [c.id for c in clips["test"]] == ["lrs2-test-p2-00001"]
    assert clips["pretrain"][0].cut and not clips["train"][0].cut
    assert len(problems) == 1 and "p9" in problems[0][0]
    with pytest.raises(InputError, match="missing file list val.txt"):
        list_lrs2(root, ("val",))


def test_held_out_speakers_are_whole_speakers_stable_and_about_the_fraction() -> None:
    clips = [Clip(f"u{s}-{i}", "trainval", f"spk{s}", "v", "t") for s in range(50) for i in range(s % 5 + 1)]
    held = held_out_speakers(clips, 0.1)
    share = sum(c.speaker in held for c in clips) / len(clips)
    assert 0.1 <= share < 0.1 + 5 / len(clips) + 1e-9
    assert held == held_out_speakers(list(reversed(clips)), 0.1)  # order does not matter
    assert held != held_out_speakers(clips, 0.1, seed=1)
    with pytest.raises(InputError, match="fraction"):
        held_out_speakers(clips, 1.5)


def test_lrs3_pretrain_config_follows_the_pretraining_runner(tmp_path):
    """recipes/LRS3/pretrain/hparams/base.yaml is run by the SynthGRID pretraining
    runner: same top-level keys as that recipe's base.yaml, and it loads."""
    from hyperpyyaml import load_hyperpyyaml

    root = Path(__file__).resolve().parents[2]
    lrs3 = root / "recipes/LRS3/pretrain/hparams/base.yaml"
    synth = root / "recipes/SynthGRID/pretrain/hparams/base.yaml"
    with open(lrs3) as f:
        hp = load_hyperpyyaml(f, overrides={"output_folder": str(tmp_path / "lrs3")})
    with open(synth) as f:
        ref = load_hyperpyyaml(f, overrides={"output_folder": str(tmp_path / "synth")})
    assert set(hp) - {"noise_folder"} == set(ref)
    assert hp["train_noise"] == "exp/noise/train.csv"
    assert hp["model_preset"] == "base"
