"""The JSON records `score` and `gate` print, built in one place.

`edge-detect score`, `edge-detect gate --json` and the HTTP service (`/v1/score`,
`/v1/gate`) all answer with these records, so a client reads the same fields whether it
ran the CLI or asked the service. Field meanings: README, "JSON fields".
"""
from __future__ import annotations

from typing import Any

from .detector import DetectionResult
from .errors import EdgeDetectorError, ExitCode

#: Decision -> gate exit code. Only ``accept`` maps to 0; anything else fails closed.
DECISION_CODES: dict[str, ExitCode] = {"accept": ExitCode.ACCEPT, "reject": ExitCode.REJECT,
                                       "uncertain": ExitCode.UNCERTAIN}


def error_record(source: str, exc: EdgeDetectorError) -> dict[str, Any]:
    """`score`'s record for an input that could not be scored: ``file``, ``error`` (kind), ``message``, ``exit_code``."""
    return {"file": str(source), "error": exc.kind, "message": str(exc), "exit_code": int(exc.exit_code)}


def gate_code(decision: str) -> ExitCode:
    """Exit code of a decision (``INTERNAL_ERROR`` for anything that is not a known decision: fail closed)."""
    return DECISION_CODES.get(decision, ExitCode.INTERNAL_ERROR)


def gate_record(result: DetectionResult) -> dict[str, Any]:
    """`gate --json`'s record for a decision: the score record plus ``exit_code`` (0 only on accept)."""
    record = result.to_record()
    record["exit_code"] = int(gate_code(result.decision))
    return record


def gate_error_record(source: str, kind: str, message: str, code: ExitCode | int) -> dict[str, Any]:
    """`gate --json`'s record when no decision could be made: ``decision`` is ``"error"`` (never accept)."""
    return {"file": str(source), "decision": "error", "error": kind, "message": message, "exit_code": int(code)}
