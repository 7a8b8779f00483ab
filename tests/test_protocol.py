"""Tests of edge_detector.protocol with protocol files written into tmp_path."""
from __future__ import annotations

from pathlib import Path

import pytest

from edge_detector.errors import DataError, MissingFileError
from edge_detector.protocol import (
    DEFAULT_HOLDOUT_SOURCES,
    ProtocolEntry,
    find_audio,
    random_split,
    read_protocol,
    resolve_audio,
    source_of,
    split_by_source,
    split_by_speaker,
    split_by_system,
    write_protocol,
)

GOOD = """\
LA_0079 LA_T_1138215 - - bonafide
LA_0079 LA_T_1271820 - A01 spoof
LJ DEV_00001 - hifigan_v2 spoof
LJ DEV_00002 - melgan spoof
VCTK_p225 DEV_00003 - - bonafide
VCTK_hifiganss3 DEV_00004 - hifigan_v3 spoof
ARCTIC_slt DEV_00005 - - bonafide
LIBRI_19 DEV_00006 - - bonafide
LIBRI_26 DEV_00007 - - bonafide
"""


def _write(tmp_path: Path, text: str, name: str = "protocol.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture()
def entries(tmp_path: Path) -> list[ProtocolEntry]:
    return read_protocol(_write(tmp_path, GOOD))


# --------------------------------------------------------------------------- reading


def test_read_good_file(entries: list[ProtocolEntry]) -> None:
    assert len(entries) == 9
    first = entries[0]
    assert first == ProtocolEntry("LA_0079", "LA_T_1138215", "-", "bonafide")
    assert first.is_bonafide and first.target == 1
    assert entries[1].system == "A01" and not entries[1].is_bonafide
    assert entries[1].target == 0
    assert [e.file_id for e in entries[2:4]] == ["DEV_00001", "DEV_00002"]


def test_comments_and_blank_lines_ignored(tmp_path: Path) -> None:
    text = "# header\n\n   \nLJ DEV_1 - melgan spoof\n  # indented comment\nLIBRI_1 DEV_2 - - bonafide\n\n"
    entries = read_protocol(_write(tmp_path, text))
    assert [e.file_id for e in entries] == ["DEV_1", "DEV_2"]


@pytest.mark.parametrize(
    "bad_line, match",
    [
        ("LJ DEV_9 - melgan", "expected 5 fields"),
        ("LJ DEV_9 - melgan spoof extra", "expected 5 fields"),
        ("LJ DEV_9 x melgan spoof", "third field must be '-'"),
        ("LJ DEV_9 - melgan fake", "label must be 'bonafide' or 'spoof'"),
        ("LJ DEV_9 - melgan Spoof", "label must be"),
        ("LJ DEV_9 - - spoof", "spoof entry must name its system"),
        ("LJ DEV_9 - melgan bonafide", "bona fide entry must have system '-'"),
        ("LJ ../etc - melgan spoof", "plain file name"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, bad_line: str, match: str) -> None:
    path = _write(tmp_path, f"# comment\nLJ DEV_1 - melgan spoof\n{bad_line}\n", "proto.txt")
    with pytest.raises(DataError, match=match) as info:
        read_protocol(path)
    message = str(info.value)
    assert "line 3" in message
    assert "proto.txt" in message


def test_duplicate_file_id(tmp_path: Path) -> None:
    path = _write(tmp_path, "LJ DEV_1 - melgan spoof\nLIBRI_1 DEV_2 - - bonafide\nLIBRI_2 DEV_1 - - bonafide\n")
    with pytest.raises(DataError, match=r"line 3: duplicate file id 'DEV_1' \(first on line 1\)"):
        read_protocol(path)


def test_missing_and_empty_protocol(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError):
        read_protocol(tmp_path / "absent.txt")
    with pytest.raises(DataError, match="no entries"):
        read_protocol(_write(tmp_path, "# only a comment\n\n"))


def test_entry_validates_fields() -> None:
    with pytest.raises(ValueError, match="label"):
        ProtocolEntry("LJ", "DEV_1", "melgan", "fake")
    with pytest.raises(ValueError, match="whitespace"):
        ProtocolEntry("LJ speaker", "DEV_1", "melgan", "spoof")


def test_write_round_trip(tmp_path: Path, entries: list[ProtocolEntry]) -> None:
    out = write_protocol(entries[2:5], tmp_path / "sub" / "subset.txt")
    assert out.read_text().splitlines()[0] == "LJ DEV_00001 - hifigan_v2 spoof"
    assert read_protocol(out) == entries[2:5]
    assert not list((tmp_path / "sub").glob("*.tmp"))
    with pytest.raises(DataError, match="duplicate"):
        write_protocol([entries[0], entries[0]], tmp_path / "dup.txt")


# --------------------------------------------------------------------------- audio


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_find_audio_extension_preference(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    _touch(audio / "A.ogg")
    assert find_audio(audio, "A") == audio / "A.ogg"
    _touch(audio / "A.mp3")
    assert find_audio(audio, "A") == audio / "A.mp3"
    _touch(audio / "A.wav")
    assert find_audio(audio, "A") == audio / "A.wav"
    _touch(audio / "A.flac")
    assert find_audio(audio, "A") == audio / "A.flac"


def test_find_audio_asvspoof_layout(tmp_path: Path) -> None:
    root = tmp_path / "ASVspoof2019_LA_train"
    _touch(root / "flac" / "LA_T_1138215.flac")
    assert find_audio(root, "LA_T_1138215") == root / "flac" / "LA_T_1138215.flac"
    # A file directly in the folder wins over flac/.
    _touch(root / "LA_T_1138215.wav")
    assert find_audio(root, "LA_T_1138215") == root / "LA_T_1138215.wav"


def test_find_audio_missing(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="no audio for 'X'"):
        find_audio(tmp_path, "X")
    with pytest.raises(MissingFileError, match="audio folder not found"):
        find_audio(tmp_path / "nowhere", "X")
    (tmp_path / "X.flac").mkdir()  # a folder is not an audio file
    with pytest.raises(MissingFileError):
        find_audio(tmp_path, "X")


def test_resolve_audio(tmp_path: Path, entries: list[ProtocolEntry]) -> None:
    audio = tmp_path / "audio"
    for i, e in enumerate(entries):
        if i % 2:
            _touch(audio / "flac" / f"{e.file_id}.flac")
        else:
            _touch(audio / f"{e.file_id}.wav")
    _touch(audio / f"{entries[1].file_id}.mp3")  # direct folder wins over flac/
    resolved = resolve_audio(entries, audio)
    assert set(resolved) == {e.file_id for e in entries}
    for e in entries:
        assert resolved[e.file_id] == find_audio(audio, e.file_id)
    assert resolved[entries[1].file_id] == audio / f"{entries[1].file_id}.mp3"


def test_resolve_audio_lists_missing(tmp_path: Path) -> None:
    entries = [ProtocolEntry("LJ", f"DEV_{i:03d}", "melgan", "spoof") for i in range(15)]
    _touch(tmp_path / "DEV_000.flac")
    with pytest.raises(MissingFileError) as info:
        resolve_audio(entries, tmp_path)
    message = str(info.value)
    assert "14 of 15 audio files missing" in message
    assert "DEV_001" in message and "DEV_010" in message
    assert "DEV_011" not in message and "and 4 more" in message
    assert "DEV_000" not in message


# --------------------------------------------------------------------------- splits


def test_source_of() -> None:
    assert source_of("VCTK_p225") == "VCTK"
    assert source_of("ARCTIC_slt") == "ARCTIC"
    assert source_of("LJ") == "LJ"
    assert source_of("LA") == "LA"
    assert source_of("LA_0079") == "LA"
    assert "LA" in DEFAULT_HOLDOUT_SOURCES and "VCTK" in DEFAULT_HOLDOUT_SOURCES


def test_split_by_speaker(entries: list[ProtocolEntry]) -> None:
    train, held = split_by_speaker(entries, ["LJ", "LA_0079"])
    assert {e.speaker for e in held} == {"LJ", "LA_0079"}
    assert len(held) == 4 and len(train) == 5
    assert not {e.file_id for e in train} & {e.file_id for e in held}
    # A bare string is one speaker, not a list of characters.
    _, held = split_by_speaker(entries, "LJ")
    assert [e.file_id for e in held] == ["DEV_00001", "DEV_00002"]


def test_split_by_system(entries: list[ProtocolEntry]) -> None:
    train, held = split_by_system(entries, ("melgan", "A01"))
    assert sorted(e.file_id for e in held) == ["DEV_00002", "LA_T_1271820"]
    assert len(train) == 7


def test_split_by_source(entries: list[ProtocolEntry]) -> None:
    train, held = split_by_source(entries, ["VCTK", "ARCTIC", "LA"])
    assert {e.source for e in held} == {"VCTK", "ARCTIC", "LA"}
    assert {e.source for e in train} == {"LJ", "LIBRI"}
    assert len(held) + len(train) == len(entries)


def test_split_errors(entries: list[ProtocolEntry]) -> None:
    with pytest.raises(DataError, match="not in the protocol: JSUT"):
        split_by_source(entries)  # defaults include JSUT and CSMSC, absent here
    with pytest.raises(DataError, match="nothing to train on"):
        split_by_source(entries, ["LA", "LJ", "VCTK", "ARCTIC", "LIBRI"])
    with pytest.raises(DataError, match="not in the protocol"):
        split_by_speaker(entries, ["nobody"])
    with pytest.raises(DataError, match="no systems"):
        split_by_system(entries, [])


def test_random_split_stratified_and_deterministic(entries: list[ProtocolEntry]) -> None:
    many = [ProtocolEntry("S", f"B{i}", "-", "bonafide") for i in range(40)] + [
        ProtocolEntry("S", f"P{i}", "x", "spoof") for i in range(60)
    ]
    train, valid = random_split(many, 0.2, seed=1)
    assert sum(e.is_bonafide for e in valid) == 8
    assert sum(not e.is_bonafide for e in valid) == 12
    assert len(train) == 80
    assert random_split(many, 0.2, seed=1) == (train, valid)
    assert random_split(many, 0.2, seed=2) != (train, valid)
    # Order of the protocol is kept on both sides.
    order = {e.file_id: i for i, e in enumerate(many)}
    assert [order[e.file_id] for e in valid] == sorted(order[e.file_id] for e in valid)
    # Tiny sets still get both labels on both sides.
    train, valid = random_split(entries, 0.1, seed=0)
    assert {e.label for e in valid} == {"bonafide", "spoof"}
    assert {e.label for e in train} == {"bonafide", "spoof"}


def test_random_split_errors() -> None:
    one = [ProtocolEntry("S", "B0", "-", "bonafide")]
    with pytest.raises(ValueError, match="fraction"):
        random_split(one, 1.0, seed=0)
    with pytest.raises(DataError, match="empty"):
        random_split(one, 0.3, seed=0)
