"""``WebSocket /v1/stream``: 16-bit PCM in, one JSON decision per decision of the `listen` rule out.

Protocol
--------
1. Connect to ``/v1/stream?rate=48000`` (optional ``channels`` (1-8, default 1),
   ``windows`` (first/all), ``min_speech`` (s), ``max_windows``). Without ``rate`` in the
   query, the first message must be text: ``{"rate": 48000, "channels": 1, ...}`` with
   the same keys.
2. The server answers ``{"event": "ready", ...}`` (model rate, window, hop, thresholds).
3. Binary messages: signed 16-bit little-endian PCM, channels interleaved, in chunks of
   any size (a sample split across two messages is joined). Each chunk is mixed to mono
   and resampled to the model rate in numpy, exactly as the microphone path does
   (:class:`~edge_detector.stream.StreamResampler`), then fed to the same
   :class:`~edge_detector.stream.StreamGate` as `edge-detect listen`: same energy VAD,
   pre-roll, minimum speech, window and trigger rules (``RULE_TEXT``).
4. Every decision is sent at once: ``{"event": "decision", ...}`` with the fields of a
   `listen` line (start/end on the stream clock, windows, score, llr, decision, state,
   trigger, speech_s, ...) plus model_id, model_sha256, provider.
5. Text ``{"event": "end"}`` ends the stream: the rest of the audio is flushed, a last
   decision is made if enough speech was heard (``trigger: timeout``), then
   ``{"event": "end", "decisions": N, "seconds": S, "reason": "client"}`` and close 1000.
   Reaching ``max_stream_seconds`` ends it the same way with ``reason: "limit"``.

Errors are ``{"event": "error", "error": kind, "message", "exit_code"}`` followed by a
close: 1003 bad stream header, 1008 idle time-out (or another refusal), 1013 too many
streams or no inference slot in time (try later), 1011 internal error. Messages larger than the limit are closed with 1009 by the server.
A client that vanishes mid-stream only ends its own stream.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..audio import to_mono_float
from ..errors import EdgeDetectorError
from ..stream import NOT_SPEECH, GatePolicy, StreamGate, StreamResampler
from .problems import BadRequestError, BusyError, InferenceTimeoutError, RequestTimeoutError

if TYPE_CHECKING:  # pragma: no cover
    from .app import ScoringService

log = logging.getLogger("edge_detector.service")

MIN_RATE, MAX_RATE, MAX_CHANNELS = 1000, 384000, 8
CLOSE_NORMAL, CLOSE_UNSUPPORTED, CLOSE_POLICY, CLOSE_INTERNAL, CLOSE_TRY_LATER = 1000, 1003, 1008, 1011, 1013
ENDPOINT = "stream"


def stream_config(values: dict[str, Any]) -> dict[str, Any]:
    """Validated stream parameters from the query or the first message.

    Returns ``rate``, ``channels`` and the :class:`GatePolicy` keyword arguments given.
    Raises BadRequestError naming the bad value.
    """
    def number(key: str, kind: type, lo: float, hi: float) -> Any:
        raw = values.get(key)
        try:
            v = kind(raw)
        except (TypeError, ValueError):
            raise BadRequestError(f"stream parameter {key!r} must be a number, got {raw!r}") from None
        if not lo <= v <= hi:
            raise BadRequestError(f"stream parameter {key!r} must be within [{lo:g}, {hi:g}], got {v!r}")
        return v

    if values.get("rate") is None:
        raise BadRequestError("the stream needs its sample rate: ?rate=N in the URL or {\"rate\": N} first")
    out: dict[str, Any] = {"rate": number("rate", int, MIN_RATE, MAX_RATE),
                           "channels": number("channels", int, 1, MAX_CHANNELS) if values.get("channels") is not None
                           else 1, "policy": {}}
    if values.get("windows") is not None:
        if values["windows"] not in ("first", "all"):
            raise BadRequestError(f"stream parameter 'windows' must be 'first' or 'all', got {values['windows']!r}")
        out["policy"]["mode"] = values["windows"]
    if values.get("min_speech") is not None:
        out["policy"]["min_speech"] = number("min_speech", float, 0.02, 60.0)
    if values.get("max_windows") is not None:
        out["policy"]["max_windows"] = number("max_windows", int, 1, 16)
    return out


class PcmDecoder:
    """Interleaved int16 LE bytes in chunks of any size → float32 mono at the model rate."""

    def __init__(self, rate: int, channels: int, target_rate: int) -> None:
        self.channels = channels
        self.frame_bytes = 2 * channels
        self._carry = b""
        self.resampler = StreamResampler(rate, target_rate)

    def push(self, data: bytes) -> np.ndarray:
        data = self._carry + data
        usable = len(data) - len(data) % self.frame_bytes
        self._carry = data[usable:]
        if usable == 0:
            return np.zeros(0, np.float32)
        pcm = np.frombuffer(data[:usable], dtype="<i2").reshape(-1, self.channels)
        return self.resampler.push(to_mono_float(pcm if self.channels > 1 else pcm[:, 0]))

    def flush(self) -> np.ndarray:
        return self.resampler.flush()


async def handle_stream(ws: WebSocket, service: "ScoringService") -> None:
    """Serve one WebSocket stream until the client ends it, leaves, idles out or reaches the limit."""
    settings, metrics = service.settings, service.metrics
    t0 = time.monotonic()
    outcome = "ok"
    if service.open_streams >= settings.max_streams:
        await ws.accept()
        exc = BusyError(f"all {settings.max_streams} stream(s) are in use; retry after {settings.retry_after} s")
        await _send_error(ws, exc, CLOSE_TRY_LATER)
        metrics.request(ENDPOINT, exc.kind, time.monotonic() - t0)
        return
    service.open_streams += 1
    metrics.streams.set(service.open_streams)
    try:
        await ws.accept()
        outcome = await _run(ws, service)
    except WebSocketDisconnect:
        outcome = "client_gone"
    except EdgeDetectorError as exc:
        outcome = exc.kind
        code = (CLOSE_UNSUPPORTED if isinstance(exc, BadRequestError) else
                CLOSE_TRY_LATER if isinstance(exc, (BusyError, InferenceTimeoutError)) else CLOSE_POLICY)
        await _send_error(ws, exc, code)
    except Exception as exc:  # a bug must end this stream only, and say so
        outcome = "internal_error"
        log.exception("stream failed")
        await _send_error(ws, exc, CLOSE_INTERNAL)
    finally:
        service.open_streams -= 1
        metrics.streams.set(service.open_streams)
        metrics.request(ENDPOINT, outcome, time.monotonic() - t0)


async def _receive(ws: WebSocket, timeout: float) -> dict[str, Any]:
    try:
        msg = await asyncio.wait_for(ws.receive(), timeout=timeout)
    except asyncio.TimeoutError:
        raise RequestTimeoutError(f"no stream message for {timeout:g} s") from None
    if msg["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(msg.get("code", 1000))
    return msg


def _text_json(msg: dict[str, Any]) -> dict[str, Any]:
    try:
        value = json.loads(msg["text"])
    except (TypeError, ValueError):
        raise BadRequestError("text messages must be JSON objects") from None
    if not isinstance(value, dict):
        raise BadRequestError("text messages must be JSON objects")
    return value


async def _run(ws: WebSocket, service: "ScoringService") -> str:
    settings, metrics, detector = service.settings, service.metrics, service.detector
    params: dict[str, Any] = dict(ws.query_params)
    if params.get("rate") is None:
        first = await _receive(ws, settings.stream_idle_timeout)
        if first.get("text") is None:
            raise BadRequestError("the first message must be JSON text with the sample rate: {\"rate\": N}")
        params.update(_text_json(first))
    cfg = stream_config(params)
    try:
        policy = GatePolicy(**cfg["policy"])
    except ValueError as exc:
        raise BadRequestError(f"stream parameters: {exc}") from None
    gate = StreamGate.from_detector(detector, policy)
    pcm = PcmDecoder(cfg["rate"], cfg["channels"], gate.sample_rate)
    limit = int(settings.max_stream_seconds * gate.sample_rate)
    r = gate.rule
    await ws.send_json({"event": "ready", "sample_rate": gate.sample_rate, "source_rate": cfg["rate"],
                        "channels": cfg["channels"], "window": r.window / gate.sample_rate,
                        "hop": r.hop / gate.sample_rate, "windows": r.mode, "combine": r.combine,
                        "max_windows": policy.max_windows, "min_speech": policy.min_speech,
                        "thresholds": {"accept": gate.accept, "reject": gate.reject},
                        "max_seconds": settings.max_stream_seconds, "model_id": detector.bundle.model_id})

    async def feed(x: np.ndarray) -> None:
        x = x[: max(0, limit - gate.position)]
        if len(x):
            for d, kept in await service.pool.run(_feed, service, gate, x, timeout=settings.request_timeout):
                await _send_decision(ws, service, d, kept)

    reason = "client"
    while True:
        msg = await _receive(ws, settings.stream_idle_timeout)
        if msg.get("bytes") is not None:
            await feed(pcm.push(msg["bytes"]))
            if gate.position >= limit:
                reason = "limit"
                break
        elif msg.get("text") is not None:
            if _text_json(msg).get("event") == "end":
                await feed(pcm.flush())
                break
            raise BadRequestError("text messages after the header must be {\"event\": \"end\"}")
    last = await service.pool.run(gate.finish, timeout=settings.request_timeout)
    if last is not None:  # nothing was fed after it: the ring still holds its segment
        await _send_decision(ws, service, last, _keep(service, gate, last))
    await ws.send_json({"event": "end", "decisions": gate.decisions, "seconds": gate.position / gate.sample_rate,
                        "reason": reason})
    await ws.close(CLOSE_NORMAL)
    return "ok"


def _keep(service: "ScoringService", gate: StreamGate, d: Any) -> Optional[str]:
    """With --record-enrolment: keep the segment the model decided on (as `listen` does); its path or None."""
    if service.recorder is None or d.decision == NOT_SPEECH:
        return None
    try:
        samples = gate.ring.read(d.start, d.end)
    except ValueError as exc:  # cannot happen when fed as _feed does; a decision is never lost for it
        log.warning("enrolment recording failed: %s", exc)
        return None
    return service.record_enrolment(samples, d.decision)


def _feed(service: "ScoringService", gate: StreamGate, x: np.ndarray) -> list[tuple[Any, Optional[str]]]:
    """``gate.feed(x)`` on a worker thread, each decision with its kept enrolment file (or None).

    With recording on, ``x`` is fed half a second at a time so that every decided segment
    is still in the gate's ring (which holds the longest segment + a window + 1 s) when
    it is kept; one message may carry far more audio than that. Decisions do not depend
    on how the audio is split.
    """
    if service.recorder is None:
        return [(d, None) for d in gate.feed(x)]
    step = gate.sample_rate // 2
    return [(d, _keep(service, gate, d)) for i in range(0, len(x), step) for d in gate.feed(x[i : i + step])]


async def _send_decision(ws: WebSocket, service: "ScoringService", d: Any, kept: Optional[str] = None) -> None:
    b = service.detector.bundle
    rec = {"event": "decision", **d.to_record(), "position": d.position / d.sample_rate, "model_id": b.model_id,
           "model_sha256": b.model_sha256, "provider": service.detector.provider}
    if kept is not None:
        rec["enrolment_file"] = kept
    service.metrics.decision(ENDPOINT, d.decision, d.llr, d.inference_ms)
    await ws.send_json(rec)


async def _send_error(ws: WebSocket, exc: BaseException, code: int) -> None:
    """Tell the client what went wrong and close; nothing to do when it has already gone."""
    if isinstance(exc, EdgeDetectorError):
        rec: dict[str, Any] = {"event": "error", "error": exc.kind, "message": str(exc),
                               "exit_code": int(exc.exit_code)}
    else:
        rec = {"event": "error", "error": "internal_error", "message": repr(exc), "exit_code": 1}
    try:
        if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
            await ws.send_json(rec)
            await ws.close(code)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
