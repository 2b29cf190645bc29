"""avsr.data.manifest: reading and validating training manifests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from avsr.data.manifest import Utterance, read_manifest
from avsr.errors import InputError

HEADER = "id,text,duration,audio,mouths,video,speaker"


def write(folder: Path, *rows: str, header: str = HEADER, name: str = "m.csv") -> Path:
    path = folder / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def media(tmp_path: Path) -> Path:
    """A folder with a few (fake) media files; the manifest only checks that they exist."""
    (tmp_path / "clips").mkdir()
    for name in ("a.flac", "a.npz", "b.flac", "b.npz"):
        (tmp_path / "clips" / name).write_bytes(b"x")
    return tmp_path


def test_reads_rows_in_order_with_absolute_paths_and_extra_columns(media: Path) -> None:
    path = write(
        media,
        "u1, bin  blue \t at ,1.5,clips/a.flac,clips/a.npz,clips/a.mp4,s1",
        f"u2,lay red,2,{media / 'clips/b.flac'},,,s2",
    )
    rows = read_manifest(path)
    assert [r.id for r in rows] == ["u1", "u2"]
    u1, u2 = rows
    assert isinstance(u1, Utterance)
    assert u1.text == "bin blue at"  # whitespace normalised
    assert u1.duration == 1.5 and isinstance(u1.duration, float)
    assert u1.audio == os.fspath((media / "clips/a.flac").resolve())
    assert u1.mouths == os.fspath((media / "clips/a.npz").resolve())
    assert u1.video == os.fspath((media / "clips/a.mp4").resolve())  # not checked: training never reads it
    assert u1.extra == {"speaker": "s1"}
    assert u2.audio == os.fspath((media / "clips/b.flac").resolve())
    assert u2.mouths is None and u2.video is None


def test_paths_are_relative_to_the_manifest_folder_not_the_cwd(media: Path, tmp_path: Path, monkeypatch) -> None:
    path = write(media, "u1,a b,1.0,clips/a.flac,,,s")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert read_manifest(path)[0].audio == os.fspath((media / "clips/a.flac").resolve())


def test_missing_file_names_the_utterance_column_and_path(media: Path) -> None:
    path = write(media, "u1,a b,1.0,clips/a.flac,clips/a.npz,,s", "u2,c d,1.0,clips/gone.flac,clips/b.npz,,s")
    with pytest.raises(InputError) as e:
        read_manifest(path)
    msg = str(e.value)
    assert e.value.path == os.fspath(path)
    assert "'u2'" in msg and "audio" in msg and "gone.flac" in msg and "does not exist" in msg
    # check_files=False skips the existence check (e.g. to list a manifest on another machine)
    assert read_manifest(path, check_files=False)[1].audio.endswith("gone.flac")


def test_missing_mouths_file(media: Path) -> None:
    path = write(media, "u1,a b,1.0,clips/a.flac,clips/nope.npz,,s")
    with pytest.raises(InputError, match=r"'u1'.*mouths file .*nope\.npz does not exist"):
        read_manifest(path)


@pytest.mark.parametrize(
    "row, pattern",
    [
        ("u1,,1.0,clips/a.flac,,,s", r"utterance 'u1': empty transcript"),
        ("u1,  \t ,1.0,clips/a.flac,,,s", r"utterance 'u1': empty transcript"),
        ("u1,a b,abc,clips/a.flac,,,s", r"utterance 'u1': duration 'abc' is not a number"),
        ("u1,a b,,clips/a.flac,,,s", r"utterance 'u1': duration '' is not a number"),
        ("u1,a b,0,clips/a.flac,,,s", r"utterance 'u1': duration must be positive"),
        ("u1,a b,-2,clips/a.flac,,,s", r"utterance 'u1': duration must be positive"),
        ("u1,a b,nan,clips/a.flac,,,s", r"utterance 'u1': duration must be positive"),
        ("u1,a b,inf,clips/a.flac,,,s", r"utterance 'u1': duration must be positive"),
        (",a b,1.0,clips/a.flac,,,s", r"line 3: empty id"),
        ("u1,a b,1.0,,,,s", r"utterance 'u1': neither audio nor mouths"),
    ],
)
def test_bad_row_names_the_row_and_the_problem(media: Path, row: str, pattern: str) -> None:
    path = write(media, "u0,ok,1.0,clips/a.flac,,,s", row)
    with pytest.raises(InputError, match=pattern) as e:
        read_manifest(path)
    assert e.value.path == os.fspath(path)


def test_duplicate_id_names_the_line(media: Path) -> None:
    path = write(media, "u1,a b,1.0,clips/a.flac,,,s", "u2,a b,1.0,clips/a.flac,,,s", "u1,c d,1.0,clips/b.flac,,,s")
    with pytest.raises(InputError, match=r"line 4: duplicate id 'u1'"):
        read_manifest(path)


@pytest.mark.parametrize(
    "header, pattern",
    [
        ("id,duration,audio", r"lacks the column\(s\) text"),
        ("text,audio", r"lacks the column\(s\) id, duration"),
        ("id,text,duration,video", r"needs an 'audio' or a 'mouths' column"),
    ],
)
def test_missing_columns(media: Path, header: str, pattern: str) -> None:
    row = ",".join("clips/a.flac" if c in ("audio", "video") else "1.0" if c == "duration" else "x" for c in header.split(","))
    with pytest.raises(InputError, match=pattern):
        read_manifest(write(media, row, header=header))


def test_need_audio_and_need_mouths(media: Path) -> None:
    path = write(media, "u1,a b,1.0,clips/a.flac,,,s", "u2,a b,1.0,,clips/b.npz,,s")
    assert len(read_manifest(path)) == 2
    with pytest.raises(InputError, match=r"'u2': no audio file"):
        read_manifest(path, need_audio=True)
    with pytest.raises(InputError, match=r"'u1': no mouths file"):
        read_manifest(path, need_mouths=True)


def test_missing_empty_and_unreadable_manifests(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such manifest"):
        read_manifest(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="has no rows"):
        read_manifest(write(tmp_path, header="id,text,duration,audio"))
    with pytest.raises(InputError, match="lacks the column"):
        read_manifest(write(tmp_path, header="", name="empty.csv"))
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"id,text,duration,audio\nu1,\xff\xfe\xfa,1,a.flac\n")
    with pytest.raises(InputError, match="not a readable CSV manifest"):
        read_manifest(binary)
