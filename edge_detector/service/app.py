"""The scoring service as an ASGI app (Starlette): :func:`create_app` builds it around one Detector.

Endpoints (JSON unless noted)
-----------------------------
``POST /v1/score``  audio as the body (its audio/* type, or application/octet-stream) or as
    multipart/form-data field ``file``; optional ``?windows=first|all``. 200 with the record
    `edge-detect score` prints for a file; an error record (``file``, ``error``, ``message``,
    ``exit_code``) with 400/408/413/415/422/503 otherwise.
``POST /v1/gate``   the same input; 200 with `gate --json`'s record for *any* decision
    (accept / reject / uncertain, ``exit_code`` 0 / 3 / 4); errors carry
    ``"decision": "error"`` and a non-zero ``exit_code``: the gate fails closed.
``WebSocket /v1/stream``  see :mod:`edge_detector.service.stream_ws`.
``GET /healthz`` alive · ``GET /readyz`` 200 once the model has run an inference, else 503 ·
``GET /v1/info`` manifest summary, verification state, limits (``?verify=1`` re-hashes the
    files now) · ``GET /metrics`` Prometheus text format.

With a token configured, every endpoint but ``/healthz`` and ``/readyz`` needs
``Authorization: Bearer <token>`` (compared with :func:`hmac.compare_digest`); a
missing or wrong token gets 401 (HTTP) or a refused handshake (WebSocket).

The same Detector and decoding as the CLI are used (uploads are decoded from memory by
:func:`edge_detector.audio.load_audio`), so every check the runtime makes on a file (size,
duration, silence, NaN, ...) applies to an upload with the same error kind.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import hmac
import io
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Optional, Union

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from .. import __version__
from ..bundle import verify_files
from ..detector import DetectionResult, Detector
from ..enrolment import EnrolmentRecorder
from ..errors import BundleError, EdgeDetectorError
from ..records import error_record, gate_error_record, gate_record
from ..session import SessionSettings
from .inference import InferencePool
from .metrics import CONTENT_TYPE, ServiceMetrics
from .problems import BadRequestError, UnauthorizedError, http_status
from .settings import ServiceSettings
from .stream_ws import handle_stream
from .upload import extract_audio, read_body

log = logging.getLogger("edge_detector.service")

#: Endpoints reachable without the token (they reveal nothing but "up" / "ready").
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
#: Longest client-given name kept for the record's ``file`` field (it is only echoed back).
MAX_NAME = 255


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class ScoringService:
    """State shared by the endpoints: the detector, limits, metrics, inference pool, readiness."""

    def __init__(self, detector: Detector, settings: ServiceSettings) -> None:
        self.detector = detector
        self.settings = settings
        b = detector.bundle
        self.metrics = ServiceMetrics(b.model_id, b.model_sha256)
        self.pool = InferencePool(settings.max_concurrent, settings.max_queue, settings.retry_after,
                                  on_change=self.metrics.inflight.set)
        self.open_streams = 0
        self.ready = False
        # load_bundle verified every sha256 when the Detector was built.
        self.verification: dict[str, Any] = {"verified": True, "problem": None, "checked_at": _utc_now()}
        # Opt-in (serve --record-enrolment): raises OSError when the folder cannot be made.
        self.recorder = (EnrolmentRecorder(settings.enrolment_dir, b.sample_rate)
                         if settings.enrolment_dir is not None else None)
        self._recorder_lock = threading.Lock()  # workers and the event loop share one recorder

    def record_enrolment(self, samples: np.ndarray, decision: str) -> Optional[str]:
        """Keep float32 mono ``samples`` (model rate) a decision was made on, when recording is on.

        Returns the WAV's path, or None when recording is off or failed (logged: a full
        disk never changes a decision or a status).
        """
        if self.recorder is None:
            return None
        try:
            with self._recorder_lock:
                return str(self.recorder.write(samples, decision))
        except Exception as exc:  # OSError, soundfile's errors: the decision stands
            log.warning("enrolment recording failed: %s", exc)
            return None

    def _keep_upload(self, samples: np.ndarray, result: DetectionResult) -> None:
        path = self.record_enrolment(samples, result.decision)
        if path is not None:
            result.extra["enrolment_file"] = path

    def warm_up(self) -> None:
        """Run one inference (a seeded noise window) so the first request does not pay for it.

        Raises BundleError when the model cannot run; sets ``ready`` when it did.
        """
        w = self.detector.bundle.window_rule.window
        x = (0.01 * np.random.default_rng(0).standard_normal((1, w))).astype(np.float32)
        try:
            scores = self.detector.score_windows(x)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BundleError(f"{self.detector.bundle.model_path}: the model failed to run ({exc})") from None
        if scores.shape != (1,) or not np.isfinite(scores).all():
            raise BundleError(f"{self.detector.bundle.model_path}: the model gave {scores!r} for one window")
        self.ready = True
        self.metrics.ready.set(1)

    def verify(self) -> dict[str, Any]:
        """Re-hash the bundle's files now; the result becomes the reported verification state."""
        try:
            verify_files(self.detector.bundle)
            self.verification = {"verified": True, "problem": None, "checked_at": _utc_now()}
        except BundleError as exc:
            self.verification = {"verified": False, "problem": str(exc), "checked_at": _utc_now()}
        return self.verification

    def info(self) -> dict[str, Any]:
        """``GET /v1/info``: what is loaded, whether it verified, and the limits in force."""
        b, s = self.detector.bundle, self.settings
        m = b.manifest
        r = b.window_rule
        return {
            "service": "edge-detect serve", "version": __version__, "bundle": str(b.path),
            "model_id": b.model_id, "model_sha256": b.model_sha256,
            "model": {k: m["model"].get(k) for k in ("family", "variant", "parameters")},
            "provider": self.detector.provider, "ready": self.ready, "verification": dict(self.verification),
            "audio": {"sample_rate": b.sample_rate, "min_seconds": b.min_seconds, "max_seconds": b.max_seconds},
            "windows": {"window": r.window, "hop": r.hop, "mode": r.mode, "combine": r.combine},
            "calibration": {k: m["calibration"].get(k) for k in ("method", "scale", "offset")},
            "thresholds": {"accept": b.accept_threshold, "reject": b.reject_threshold},
            "quantization": m.get("quantization"), "evaluation": m.get("evaluation"),
            "limits": {"max_body_bytes": s.max_body_bytes, "max_seconds": min(s.max_seconds, b.max_seconds),
                       "max_concurrent": s.max_concurrent, "max_queue": s.max_queue,
                       "request_timeout": s.request_timeout, "max_streams": s.max_streams,
                       "max_stream_seconds": s.max_stream_seconds, "max_message_bytes": s.max_message_bytes},
            "auth": "bearer" if s.token else "none",
        }

    async def score_request(self, request: Request, endpoint: str) -> Response:
        """``/v1/score`` and ``/v1/gate``: admit, read, decode from memory, score on a worker thread."""
        t0 = time.monotonic()
        deadline = t0 + self.settings.request_timeout
        source = "upload"
        gate = endpoint == "gate"
        try:
            windows = request.query_params.get("windows", self.settings.windows)
            if windows not in (None, "first", "all"):
                raise BadRequestError(f"windows must be 'first' or 'all', got {windows!r}")
            slot = self.pool.admit()
            try:
                body = await read_body(request.stream(), request.headers.get("content-length"),
                                       self.settings.max_body_bytes, deadline)
                upload = extract_audio(request.headers.get("content-type"), body)
                source = (upload.filename or request.query_params.get("name") or "upload")[:MAX_NAME]
                result = await self.pool.run(self.detector.score_file, io.BytesIO(upload.data), windows, source,
                                             self.settings.max_seconds,
                                             self._keep_upload if self.recorder is not None else None,
                                             timeout=deadline - time.monotonic(), slot=slot)
            finally:
                slot.drop()
        except EdgeDetectorError as exc:
            status = http_status(exc)
            record = gate_error_record(source, exc.kind, str(exc), exc.exit_code) if gate else error_record(source, exc)
            headers = {"Retry-After": str(self.settings.retry_after)} if status == 503 else None
            self.metrics.request(endpoint, exc.kind, time.monotonic() - t0)
            return JSONResponse(record, status_code=status, headers=headers)
        except Exception as exc:  # fail closed on anything unforeseen; the service goes on
            log.exception("%s: internal error", endpoint)
            message = f"internal error ({type(exc).__name__})"
            record = (gate_error_record(source, "internal_error", message, 1) if gate else
                      {"file": source, "error": "internal_error", "message": message, "exit_code": 1})
            self.metrics.request(endpoint, "internal_error", time.monotonic() - t0)
            return JSONResponse(record, status_code=500)
        self.metrics.decision(endpoint, result.decision, result.calibrated, result.latency_ms)
        self.metrics.request(endpoint, "ok", time.monotonic() - t0)
        return JSONResponse(gate_record(result) if gate else result.to_record())


class BearerAuth:
    """ASGI middleware: every HTTP request and WebSocket handshake outside OPEN_PATHS needs the token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode("utf-8")

    def allowed(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in OPEN_PATHS or self.allowed(scope):
            await self.app(scope, receive, send)
            return
        exc = UnauthorizedError("missing or wrong bearer token (send 'Authorization: Bearer <token>')")
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # before accept: the handshake is refused (403)
            return
        response = JSONResponse({"error": exc.kind, "message": str(exc), "exit_code": int(exc.exit_code)},
                                status_code=401, headers={"WWW-Authenticate": 'Bearer realm="edge-detect"'})
        await response(scope, receive, send)


def create_app(detector: Union[Detector, str, os.PathLike], settings: Optional[ServiceSettings] = None,
               session_settings: Optional[SessionSettings] = None) -> Starlette:
    """The ASGI app around one Detector (or a bundle path, loaded and verified here: raises BundleError).

    The app warms the model up at start-up (lifespan) unless that was done already
    (:meth:`ScoringService.warm_up`); ``/readyz`` answers 200 from then on. ``app.state.service``
    is the :class:`ScoringService`.
    """
    det = detector if isinstance(detector, Detector) else Detector(detector, session_settings or SessionSettings())
    service = ScoringService(det, settings or ServiceSettings())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not service.ready:
            await asyncio.get_running_loop().run_in_executor(None, service.warm_up)
        yield
        service.pool.shutdown()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        return JSONResponse({"ready": service.ready, "model_id": det.bundle.model_id},
                            status_code=200 if service.ready else 503)

    async def info(request: Request) -> Response:
        if request.query_params.get("verify") in ("1", "true", "yes"):
            await asyncio.get_running_loop().run_in_executor(None, service.verify)
        return JSONResponse(service.info())

    async def metrics(request: Request) -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    async def score(request: Request) -> Response:
        return await service.score_request(request, "score")

    async def gate(request: Request) -> Response:
        return await service.score_request(request, "gate")

    async def stream(ws: WebSocket) -> None:
        await handle_stream(ws, service)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        kind = {404: "not_found", 405: "method_not_allowed"}.get(status, "bad_request")
        return JSONResponse({"error": kind, "message": str(getattr(exc, "detail", exc)), "exit_code": 2},
                            status_code=status, headers=getattr(exc, "headers", None))

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/v1/info", info, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/score", score, methods=["POST"]),
        Route("/v1/gate", gate, methods=["POST"]),
        WebSocketRoute("/v1/stream", stream),
    ]
    token = service.settings.token
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error},
                    middleware=[Middleware(BearerAuth, token=token)] if token else [])
    app.state.service = service
    return app
