"""`edge-detect`: one console script, subcommands loaded only when used.

Subcommands live in :mod:`edge_detector.commands`, one module each, and are imported
lazily: `edge-detect score` must never import torch, onnx or scipy, and the training
commands import torch only when they run (and name the extra to install if it is
missing).
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Optional

import click

from . import __version__
from .errors import ExitCode

#: name -> "module:attribute" (relative to edge_detector.commands)
COMMANDS: dict[str, str] = {
    "score": "score:score_command",
    "gate": "gate:gate_command",
    "info": "info:info_command",
    "train": "train:train_command",
    "export": "export:export_command",
    "calibrate": "calibrate:calibrate_command",
    "quantize": "quantize:quantize_command",
    "bench": "bench:bench_command",
    "doctor": "doctor:doctor_command",
    "convert-fp16": "convert_fp16:convert_fp16_command",
    "prune": "prune:prune_command",
    "make-demo": "make_demo:make_demo_command",
    "listen": "listen:listen_command",
    "devices": "devices:devices_command",
    "serve": "serve:serve_command",
    "adapt": "adapt:adapt_command",
    "vocode": "vocode:vocode_command",
    "fuse": "fuse:fuse_command",
}


#: One-shot subcommands whose process ends with ``os._exit`` once stdout and stderr are
#: flushed, skipping the interpreter's teardown (freeing every module, the onnxruntime
#: session and its arena): ~45 ms of CPU, a sixth of a `gate` decision's cold start
#: (benchmarks/profile_path.py). Only when `edge-detect` is the process (console script or
#: ``python -m edge_detector.cli``), never when a program or test calls ``main([...])``.
FAST_EXIT_COMMANDS = frozenset({"gate"})


def _exit_code(code: Any) -> int:
    """The status ``sys.exit(code)`` would give: None → 0, an int as is, anything else → 1 (printed)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _exit_now(code: Any) -> None:
    """Flush stdout / stderr, then end the process with ``code`` without interpreter teardown.

    A decision that cannot be written out is not an accept: if flushing stdout fails, an
    exit code of 0 becomes 1 (internal error), as `gate` itself does for a failed write.
    """
    status = _exit_code(code)
    try:
        sys.stdout.flush()
    except Exception:  # closed pipe, full disk
        status = status if status != int(ExitCode.ACCEPT) else int(ExitCode.INTERNAL_ERROR)
    try:
        sys.stderr.flush()
    except Exception:
        pass
    os._exit(status)


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def main(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        """click's ``main``; when run as the process (no ``args``: the command line) a
        :data:`FAST_EXIT_COMMANDS` subcommand ends the process without teardown."""
        argv = sys.argv[1:]
        if args is not None or rest or not argv or argv[0] not in FAST_EXIT_COMMANDS:
            return super().main(args, *rest, **kwargs)
        try:
            super().main(None, **kwargs)
            code: Any = 0
        except SystemExit as exc:
            code = exc.code
        _exit_now(code)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        module = importlib.import_module(f"edge_detector.commands.{module_name}")
        return getattr(module, attr)

    def invoke(self, ctx: click.Context):
        """Run the subcommand; Ctrl-C (SIGINT) anywhere exits 130, never click's generic 1.

        Outputs are written to temporary siblings and renamed into place only when
        complete (:mod:`edge_detector.output_dir`), so an interrupted command leaves no
        complete-looking result behind; its ``finally`` blocks remove the temporaries.
        """
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("edge-detect: interrupted", err=True)
            sys.exit(int(ExitCode.INTERRUPTED))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge-detect")
def main() -> None:
    """On-device audio deepfake detection (RawNet2 → ONNX → numpy + onnxruntime).

    Results go to stdout (JSON Lines), logs and progress to stderr. Exit code 0 means
    success for `score`, and *accept* for `gate` / `listen --once`: see `gate --help`.
    """


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
