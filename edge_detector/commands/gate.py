"""`edge-detect gate`: the authentication gate. Exit 0 only on accept; every error fails closed."""
from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Optional

import click

from ..audio_source import STDIN_NAME, cli_input, display_name, with_name_fields
from ..errors import EdgeDetectorError, ExitCode, MissingFileError
from ..records import gate_code, gate_error_record, gate_record
from ._common import build_detector, emit, exit_with, log, runtime_options

GATE_HELP = """Decide whether the voice in FILE is a live human (bona fide).

FILE may be `-` for standard input, /dev/stdin or a FIFO: such input is read once into
memory (at most 256 MiB) and decoded from there.

\b
Exit codes (0 only on accept; every error fails closed):
   0  accept        calibrated score >= accept threshold
   3  reject        calibrated score <  reject threshold
   4  uncertain     between the two thresholds
   5  bad audio     cannot read the file, undecodable, empty, silent, too short/long, NaN/Inf
   6  missing file
  13  not speech    no voice in the audio (a tone, buzz, noise, clicks, an offset):
                    refused before the model is asked
   7  bad bundle    missing, tampered (sha256), unknown format, a manifest value out of range,
                    model load failure, model inputs/outputs that do not fit the manifest
   8  bad profile
   1  internal error
 130  interrupted
\b
Long audio: with --windows all, windows of the bundle's length and hop cover the
file and their scores combine by the bundle's rule (mean unless the manifest says
otherwise) before calibration.
"""


@click.command("gate", help=GATE_HELP)
@click.argument("file")  # "-" = standard input, read once
@runtime_options
@click.option("--json", "as_json", is_flag=True, help="Print the decision record as one JSON line on stdout.")
@click.option("--windows", type=click.Choice(["first", "all"]), default=None, help="Window rule (default: bundle's).")
def gate_command(file: str, bundle_path: Optional[str], profile: Optional[str], threads: Optional[int],
                 as_json: bool, windows: Optional[str]) -> None:
    code = ExitCode.INTERNAL_ERROR
    record: dict = {"file": file}
    try:
        path = Path(file)
        if file != STDIN_NAME and not os.path.lexists(path):
            raise MissingFileError(f"{display_name(file)}: no such file")
        detector = build_detector(bundle_path, profile, threads)
        src, source = cli_input(file)
        result = detector.score_file(src, windows=windows, source=source)
        record = gate_record(result)
        code = gate_code(result.decision)
        log(f"{display_name(file)}: {result.decision} (calibrated {result.calibrated:.3f}, "
            f"accept >= {result.thresholds['accept']:.3f}, reject < {result.thresholds['reject']:.3f})")
    except EdgeDetectorError as exc:
        code = exc.exit_code
        record = gate_error_record(file, exc.kind, str(exc), code)
        log(f"edge-detect gate: {exc}")
    except KeyboardInterrupt:
        code = ExitCode.INTERRUPTED
        log("edge-detect gate: interrupted")
        record = gate_error_record(file, "interrupted", "interrupted", code)
    except (Exception, SystemExit) as exc:  # fail closed on anything unforeseen, even a stray sys.exit(0)
        code = ExitCode.INTERNAL_ERROR
        record = gate_error_record(file, "internal_error", repr(exc), code)
        log("edge-detect gate: internal error\n" + traceback.format_exc())
    record["exit_code"] = int(code)
    if as_json:
        try:
            emit(with_name_fields(record, file))
        except KeyboardInterrupt:
            code = ExitCode.INTERRUPTED
        except Exception:  # stdout gone (closed pipe, full disk): no record, so no accept either
            code = code if code != ExitCode.ACCEPT else ExitCode.INTERNAL_ERROR
    exit_with(code)
