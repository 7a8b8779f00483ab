"""Output folders (edge_detector/output_dir.py): --overwrite only ever replaces one of our bundles.

Every writer (export, quantize, convert-fp16, calibrate -o) must refuse, with exit 2 and
nothing touched, an output that is a user's folder, the working directory, the home
folder, a file or a symlink, and must replace a real bundle atomically.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_detector.bundle import load_bundle
from edge_detector.cli import main
from edge_detector.errors import ExitCode, OutputRefusedError
from edge_detector.output_dir import bundle_problem, check_output_dir, publish_dir, staging_dir


def user_folder(root: Path) -> Path:
    """A folder of the user's: notes and a recording, nothing like a bundle."""
    d = root / "mywork"
    d.mkdir()
    (d / "notes.txt").write_text("meeting notes\n")
    (d / "take1.wav").write_bytes(b"RIFF....WAVE")
    return d


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def writers(tiny_checkpoint: Path, tiny_bundle: Path, tmp_path: Path) -> dict[str, list[str]]:
    """The argument lists (before -o) of every command that writes a bundle folder."""
    protocol = tmp_path / "protocol.txt"
    protocol.write_text("S1 F1 - - bonafide\n")
    return {
        "export": ["export", str(tiny_checkpoint)],
        "quantize": ["quantize", str(tiny_bundle), "--protocol", str(protocol), "--audio-dir", str(tmp_path)],
        "convert-fp16": ["convert-fp16", str(tiny_bundle)],
    }


@pytest.mark.parametrize("command", ["export", "quantize", "convert-fp16"])
def test_overwrite_refuses_a_users_folder(command, tiny_checkpoint, tiny_bundle, tmp_path):
    folder = user_folder(tmp_path)
    before = snapshot(folder)
    args = writers(tiny_checkpoint, tiny_bundle, tmp_path)[command]
    r = CliRunner().invoke(main, [*args, "-o", str(folder), "--overwrite"])
    assert r.exit_code == ExitCode.USAGE, r.output
    assert "refusing to replace" in r.stderr and "no manifest.json" in r.stderr
    assert snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left


@pytest.mark.parametrize("command", ["export", "quantize", "convert-fp16"])
def test_overwrite_refuses_the_working_directory(command, tiny_checkpoint, tiny_bundle, tmp_path, monkeypatch):
    cwd = tmp_path / "project"
    cwd.mkdir()
    (cwd / "keep.txt").write_text("mine")
    monkeypatch.chdir(cwd)
    args = writers(tiny_checkpoint, tiny_bundle, tmp_path)[command]
    for target in (".", str(cwd), str(tmp_path)):  # the cwd, by name, and a folder holding it
        r = CliRunner().invoke(main, [*args, "-o", target, "--overwrite"])
        assert r.exit_code == ExitCode.USAGE, r.output
        assert "working directory" in r.stderr
    assert (cwd / "keep.txt").read_text() == "mine"


def test_home_root_file_and_symlink_are_refused(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputRefusedError, match="home folder"):
        check_output_dir(home, overwrite=True)
    with pytest.raises(OutputRefusedError, match="root"):
        check_output_dir("/", overwrite=True)
    f = tmp_path / "sub" / "a_file"
    f.parent.mkdir()
    f.write_text("x")
    with pytest.raises(OutputRefusedError, match="not a folder"):
        check_output_dir(f, overwrite=True)
    link = tmp_path / "sub" / "link"
    link.symlink_to(tmp_path / "sub")
    with pytest.raises(OutputRefusedError, match="symbolic link"):
        check_output_dir(link, overwrite=True)
    with pytest.raises(OutputRefusedError, match="already exists"):
        check_output_dir(f, overwrite=False)
    assert check_output_dir(tmp_path / "sub" / "new", overwrite=False) == tmp_path / "sub" / "new"


def test_what_counts_as_a_replaceable_bundle(tiny_bundle, tmp_path):
    assert bundle_problem(tiny_bundle) is None
    (tiny_bundle / "notes.txt").write_text("mine")
    assert "does not list" in bundle_problem(tiny_bundle)
    (tiny_bundle / "notes.txt").unlink()
    (tiny_bundle / "recordings").mkdir()
    assert "'recordings'" in bundle_problem(tiny_bundle)
    (tiny_bundle / "recordings").rmdir()
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    (tiny_bundle / "manifest.json").write_text(json.dumps({**m, "format": "something-else"}))
    assert "not an edge-detector bundle" in bundle_problem(tiny_bundle)
    (tiny_bundle / "manifest.json").unlink()
    assert "no manifest.json" in bundle_problem(tiny_bundle)


def test_our_selfcheck_file_is_ours_only_for_the_same_model(tiny_bundle):
    """`selfcheck write` puts selfcheck.json beside the sealed manifest: a re-export may replace it."""
    from edge_detector.selfcheck import write as write_selfcheck

    write_selfcheck(tiny_bundle)
    assert bundle_problem(tiny_bundle) is None
    doc = json.loads((tiny_bundle / "selfcheck.json").read_text())
    (tiny_bundle / "selfcheck.json").write_text(json.dumps({**doc, "model_id": "someone-elses-model"}))
    assert "'selfcheck.json'" in bundle_problem(tiny_bundle)
    (tiny_bundle / "selfcheck.json").write_text("my own notes, not JSON")
    assert "'selfcheck.json'" in bundle_problem(tiny_bundle)
    (tiny_bundle / "selfcheck.json").unlink()


def test_a_look_alike_manifest_without_our_seal_is_not_ours(tmp_path):
    """A folder with a hand-written bundle-like manifest listing the user's own file is never replaced."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (mine / "manifest.json").write_text(json.dumps({"format": "edge-detector-bundle", "files": {"notes.txt": {}}}))
    assert "no valid seal" in bundle_problem(mine)


def test_overwrite_replaces_a_fusion_bundle_with_its_members(tiny_bundle_master, tmp_path):
    out = tmp_path / "fused"
    args = ["fuse", str(tiny_bundle_master), str(tiny_bundle_master), "-o", str(out)]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert bundle_problem(out) is None
    member = next(p for p in out.iterdir() if p.is_dir())
    (member / "notes.txt").write_text("mine")  # a user's file inside a member: the whole fusion is not ours
    assert repr(member.name) in bundle_problem(out)
    (member / "notes.txt").unlink()
    res = CliRunner().invoke(main, ["convert-fp16", str(tiny_bundle_master), "-o", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert load_bundle(out).manifest["model"]["family"] != "fusion" and not any(p.is_dir() for p in out.iterdir())


def test_publish_replaces_a_bundle_and_leaves_no_sibling(tiny_bundle, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(tiny_bundle, out)
    stage = staging_dir(out)
    for name in ("manifest.json", "model.onnx"):
        shutil.copy2(tiny_bundle / name, stage / name)
    (stage / "marker-is-not-listed").write_text("new")  # tells old from new below
    publish_dir(stage, out)
    assert (out / "marker-is-not-listed").exists() and not stage.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "out"]  # no .old-* or staging left


def test_publish_refuses_a_folder_that_appeared_meanwhile(tmp_path):
    """The check is repeated at the moment of replacing: a folder created since is kept."""
    out = user_folder(tmp_path)
    stage = staging_dir(out)
    with pytest.raises(OutputRefusedError):
        publish_dir(stage, out)
    assert (out / "notes.txt").read_text() == "meeting notes\n"


def test_export_overwrite_replaces_its_own_bundle(tiny_checkpoint, tmp_path):
    out = tmp_path / "b"
    args = ["export", str(tiny_checkpoint), "-o", str(out)]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(main, args)
    assert again.exit_code == ExitCode.USAGE and "already exists" in again.stderr
    replaced = CliRunner().invoke(main, [*args, "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert load_bundle(out).manifest["format"] == "edge-detector-bundle"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_quantize_and_fp16_refuse_to_write_over_their_input(tiny_bundle, tmp_path):
    protocol = tmp_path / "protocol.txt"
    protocol.write_text("S1 F1 - - bonafide\n")
    before = snapshot(tiny_bundle)
    for args in (["quantize", str(tiny_bundle), "--protocol", str(protocol), "--audio-dir", str(tmp_path)],
                 ["convert-fp16", str(tiny_bundle)]):
        r = CliRunner().invoke(main, [*args, "-o", str(tiny_bundle), "--overwrite"])
        assert r.exit_code == ExitCode.USAGE and "is the input bundle" in r.stderr, r.output
    assert snapshot(tiny_bundle) == before


def test_calibrate_out_must_be_new(tiny_bundle, tmp_path):
    protocol = tmp_path / "protocol.txt"
    protocol.write_text("S1 F1 - - bonafide\n")
    folder = user_folder(tmp_path)
    r = CliRunner().invoke(main, ["calibrate", str(tiny_bundle), "--protocol", str(protocol), "--audio-dir",
                                  str(tmp_path), "-o", str(folder)])
    assert r.exit_code == ExitCode.USAGE and "already exists" in r.stderr
    assert sorted(os.listdir(folder)) == ["notes.txt", "take1.wav"]
