"""`edge-detect serve`: the detector as a local HTTP / WebSocket scoring service (extra `serve`)."""
from __future__ import annotations

import json
import signal
import socket
import sys
from typing import Any, Optional

import click

from ..errors import EdgeDetectorError, ExitCode, MissingExtraError
from ._common import build_detector, exit_with, fail, log, runtime_options

SERVE_HELP = """Serve the detector over HTTP on this machine (one model, loaded and verified at start-up).

\b
  POST /v1/score   audio body (audio/* or multipart field 'file') -> the `score` record
  POST /v1/gate    same -> the `gate --json` record; HTTP 200 for any decision,
                   errors carry "decision": "error" (fail closed)
  WS   /v1/stream  16-bit PCM (?rate=N) -> one JSON line per decision, `listen` rules
  GET  /healthz /readyz /v1/info /metrics
\b
Listens on 127.0.0.1 unless --host says otherwise; any address but loopback needs a
token (--token or $EDGE_DETECT_TOKEN, at least 16 characters), which clients send as
'Authorization: Bearer <token>'. When listening, one JSON line
{"event": "listening", "url": ...} goes to stdout (with --port 0: the port picked).
\b
Exit codes: 0 stopped by SIGTERM (130: Ctrl-C), 2 bad option / refused address / port in use,
7 bad bundle (before listening), 8 bad profile, 12 the `serve` extra is missing.
\b
--record-enrolment DIR (opt-in, off by default): every utterance decided on
(accept / uncertain / reject; not errors or not_speech) by /v1/gate, /v1/score or
/v1/stream is written to DIR as a WAV and listed as bona fide in DIR/protocol.txt,
for `edge-detect adapt`; the record names it in "enrolment_file".
See docs/serve.md (systemd unit, limits, metrics).
"""


def require_serve_extra() -> None:
    """The HTTP stack is optional: name the extra to install instead of a traceback."""
    for module in ("starlette", "uvicorn", "prometheus_client", "python_multipart", "websockets"):
        try:
            __import__(module)
        except ModuleNotFoundError:
            raise MissingExtraError(f"`edge-detect serve` needs {module}: pip install 'edge-detector[serve]'") from None


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: the system picks a free one)."""
    from ..service.settings import BindRefusedError

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        raise BindRefusedError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    sock.set_inheritable(True)
    return sock


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging with every line on stderr (stdout carries only the JSON 'listening' line)."""
    fmt = {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(message)s", "use_colors": False}
    access = {"()": "uvicorn.logging.AccessFormatter", "use_colors": False,
              "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'}
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"default": fmt, "access": access},
        "handlers": {"default": {"formatter": "default", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
                     "access": {"formatter": "access", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
        "loggers": {"uvicorn": {"handlers": ["default"], "level": level.upper(), "propagate": False},
                    "uvicorn.error": {"level": level.upper()},
                    "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
                    "edge_detector.service": {"handlers": ["default"], "level": level.upper(), "propagate": False}},
    }


@click.command("serve", help=SERVE_HELP)
@runtime_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 = any free port.")
@click.option("--token", envvar="EDGE_DETECT_TOKEN", default=None, show_envvar=True,
              help="Bearer token clients must send (required for any address but loopback).")
@click.option("--require-token", is_flag=True, help="Require the token on loopback too.")
@click.option("--max-body-mb", type=click.FloatRange(min=0.001), default=16.0, show_default=True,
              help="Largest request body (MiB); larger ones get 413.")
@click.option("--max-seconds", type=click.FloatRange(min=0.1), default=120.0, show_default=True,
              help="Longest audio per request (s; never more than the bundle's limit).")
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True,
              help="Inferences running at once.")
@click.option("--queue", type=click.IntRange(min=0), default=4, show_default=True,
              help="Requests waiting for an inference slot; beyond that: 503 + Retry-After.")
@click.option("--timeout", "request_timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Request time-out (s): body upload + queue wait + inference.")
@click.option("--max-streams", type=click.IntRange(min=0), default=2, show_default=True,
              help="Open WebSocket streams at once.")
@click.option("--max-stream-seconds", type=click.FloatRange(min=1.0), default=600.0, show_default=True,
              help="Audio per stream (s); the stream ends with its last decision.")
@click.option("--windows", type=click.Choice(["first", "all"]), default=None,
              help="Default window rule of /v1/score and /v1/gate (default: the bundle's).")
@click.option("--record-enrolment", "enrolment_dir", type=click.Path(file_okay=False), default=None,
              help="Opt-in: write every utterance decided on as a WAV to this folder, listed as bona fide in its "
                   "protocol.txt, for `edge-detect adapt`. Only your own live voice belongs there.")
@click.option("--access-log", is_flag=True, help="Log every request on stderr.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="warning",
              show_default=True)
def serve_command(bundle_path: Optional[str], profile: Optional[str], threads: Optional[int], host: str, port: int,
                  token: Optional[str], require_token: bool, max_body_mb: float, max_seconds: float,
                  concurrency: int, queue: int, request_timeout: float, max_streams: int,
                  max_stream_seconds: float, windows: Optional[str], access_log: bool, log_level: str,
                  enrolment_dir: Optional[str] = None) -> None:
    try:
        require_serve_extra()
        from ..service.settings import BindRefusedError, ServiceSettings, check_bind

        token = token or None
        if require_token and not token:
            raise BindRefusedError("--require-token needs --token or $EDGE_DETECT_TOKEN")
        check_bind(host, token)
        try:
            settings = ServiceSettings(max_body_bytes=int(max_body_mb * 1024 * 1024), max_seconds=max_seconds,
                                       max_concurrent=concurrency, max_queue=queue, request_timeout=request_timeout,
                                       token=token, windows=windows, max_streams=max_streams,
                                       max_stream_seconds=max_stream_seconds, enrolment_dir=enrolment_dir)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        detector = build_detector(bundle_path, profile, threads)

        from ..service.app import create_app

        try:
            app = create_app(detector, settings)
        except OSError as exc:  # --record-enrolment: the folder cannot be made
            raise click.UsageError(f"--record-enrolment: {exc}") from None
        app.state.service.warm_up()  # a model that loads but cannot run fails here (exit 7), before listening
        sock = bind_socket(host, port)
    except EdgeDetectorError as exc:
        fail(exc)
    run_server(app, sock, settings, access_log, log_level)


def run_server(app: Any, sock: socket.socket, settings: Any, access_log: bool, log_level: str) -> None:
    """Announce the address, then serve until SIGINT / SIGTERM (graceful: open requests finish)."""
    import uvicorn

    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; SIGTERM
    # (systemd's stop) then ends the process with exit 0 instead of death by signal.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(int(ExitCode.ACCEPT)))
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    url = f"http://{shown}:{bound_port}"
    service = app.state.service
    sys.stdout.write(json.dumps({"event": "listening", "url": url, "host": bound_host, "port": bound_port,
                                 "model_id": service.detector.bundle.model_id,
                                 "auth": "bearer" if settings.token else "none"}) + "\n")
    sys.stdout.flush()
    log(f"edge-detect serve: {url} (model {service.detector.bundle.model_id}, provider {service.detector.provider}; "
        f"{settings.max_concurrent} inference(s) at once + {settings.max_queue} queued; "
        f"token {'required' if settings.token else 'not required'})")
    config = uvicorn.Config(app, log_config=uvicorn_log_config(log_level), access_log=access_log,
                            ws_max_size=settings.max_message_bytes, ws_per_message_deflate=False,
                            timeout_keep_alive=5, timeout_graceful_shutdown=int(settings.request_timeout) + 1,
                            limit_concurrency=64 + settings.max_streams, proxy_headers=False, server_header=False,
                            lifespan="on")
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    exit_with(ExitCode.ACCEPT if server.started else ExitCode.INTERNAL_ERROR)
