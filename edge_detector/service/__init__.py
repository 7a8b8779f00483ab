"""`edge-detect serve`: the detector as a local HTTP / WebSocket scoring service (extra `serve`).

Modules: :mod:`.app` (the ASGI app, :func:`~.app.create_app`), :mod:`.settings` (limits,
the loopback/token rule), :mod:`.upload` (bounded bodies, multipart in memory),
:mod:`.inference` (bounded worker pool), :mod:`.stream_ws` (the WebSocket stream),
:mod:`.metrics` (Prometheus), :mod:`.problems` (HTTP-only errors and status codes).
Importing this package imports nothing heavy; :mod:`.app` needs the `serve` extra.
"""
