"""`edge-detect score`: score files and folders, one JSON line (or ASVspoof line) per file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Optional

import click

from ..audio_source import STDIN_NAME, cli_input, display_name, with_name_fields
from ..errors import EdgeDetectorError, ExitCode, FileReadError
from ..records import error_record
from ._common import build_detector, emit, exit_with, fail, log, runtime_options

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".au", ".caf", ".w64", ".rf64"}


class UnlistableFolder(type(Path())):  # type: ignore[misc]
    """A folder met while walking that could not be listed; ``reason`` says why (its files are unknown)."""

    reason = ""


def _unlistable(err: OSError) -> Path:
    folder = UnlistableFolder(err.filename)
    folder.reason = err.strerror or str(err)
    return folder


def iter_inputs(paths: tuple[str, ...]) -> Iterator[Path]:
    """Files as given; folders walked (sorted) for audio files. Missing paths are yielded too.

    A folder inside the walk that cannot be listed (permission denied, I/O error) is yielded
    as an :class:`UnlistableFolder`, so the caller reports it instead of silently scoring less.
    """
    for raw in paths:
        p = Path(raw)
        if raw == STDIN_NAME:  # standard input; Path("-") would be a file named "-"
            yield p
        elif p.is_dir():
            skipped = 0
            failed: list[OSError] = []
            for root, dirs, files in os.walk(p, onerror=failed.append):
                while failed:
                    yield _unlistable(failed.pop(0))
                dirs.sort()
                for name in sorted(files):
                    fp = Path(root) / name
                    if fp.suffix.lower() in AUDIO_SUFFIXES:
                        yield fp
                    else:
                        skipped += 1
            while failed:
                yield _unlistable(failed.pop(0))
            if skipped:
                log(f"{display_name(p)}: skipped {skipped} file(s) without an audio extension")
        else:
            yield p


@click.command("score")
@click.argument("paths", nargs=-1, required=True)
@runtime_options
@click.option("--format", "fmt", type=click.Choice(["jsonl", "asvspoof"]), default="jsonl", show_default=True,
              help="jsonl: one JSON object per file; asvspoof: 'utt_id score' lines for evaluation.")
@click.option("--windows", type=click.Choice(["first", "all"]), default=None,
              help="first: the official first 4.04 s; all: windows over the whole file combined by the "
                   "bundle's rule. Default: what the bundle says.")
@click.option("--speech-check/--no-speech-check", default=True, show_default=True,
              help="Refuse audio without speech (error not_speech, exit 13) before the model. Turn off only to "
                   "evaluate the model alone on a labelled corpus; `gate` and `listen` always check.")
def score_command(paths: tuple[str, ...], bundle_path: Optional[str], profile: Optional[str],
                  threads: Optional[int], fmt: str, windows: Optional[str], speech_check: bool = True) -> None:
    """Score audio FILES (folders are walked; `-` reads standard input once). One line per file on stdout.

    A file that cannot be scored gives an error record ({"file", "error", "message",
    "exit_code"}) and the others are still scored; the exit status is then that of the
    first failure (5 bad audio, 6 missing file), else 0.
    """
    try:
        detector = build_detector(bundle_path, profile, threads)
        detector.require_speech = speech_check
    except EdgeDetectorError as exc:
        fail(exc)
    first_error: Optional[int] = None
    n_ok = n_bad = 0
    if paths.count(STDIN_NAME) > 1:
        raise click.UsageError("'-' (standard input) may be given once")
    for path in iter_inputs(paths):
        try:
            if isinstance(path, UnlistableFolder):
                raise FileReadError(f"{display_name(path)}: cannot list this folder ({path.reason}); "
                                    "its audio files were not scored")
            src, source = cli_input(path)
            result = detector.score_file(src, windows=windows, source=source)
        except EdgeDetectorError as exc:
            n_bad += 1
            first_error = first_error or int(exc.exit_code)
            if fmt == "jsonl":
                emit(with_name_fields(error_record(path, exc), path))
            log(f"edge-detect: {exc}")
            continue
        except MemoryError:
            n_bad += 1
            first_error = first_error or int(ExitCode.BAD_AUDIO)
            emit(with_name_fields({"file": "", "error": "out_of_memory", "message": f"{display_name(path)}: out of memory",
                                   "exit_code": 5}, path))
            continue
        n_ok += 1
        if fmt == "jsonl":
            emit(with_name_fields(result.to_record(), path))
        else:
            click.echo(f"{display_name(path.stem)} {result.score:.6f}")
    log(f"scored {n_ok} file(s), {n_bad} failed")
    exit_with(first_error or ExitCode.ACCEPT)
