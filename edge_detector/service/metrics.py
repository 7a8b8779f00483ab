"""Prometheus metrics of the scoring service (prometheus-client, one registry per app).

Exposed at ``GET /metrics``. Label values come from fixed sets (endpoint names, error
kinds, decisions), never from the request path or a client's text, so a scan of random
URLs cannot grow the series count. Every decision series carries ``model_id``, so a
dashboard shows which model made it and drift in the calibrated scores after a bundle
change is visible per model.
"""
from __future__ import annotations

import math
from typing import Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

#: Request latency buckets (seconds): a 4 s window takes tens to hundreds of ms on a Pi.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Calibrated-score (llr) buckets: wide around the thresholds, open at both ends.
SCORE_BUCKETS = (-20.0, -10.0, -6.0, -4.0, -3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 10.0, 20.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServiceMetrics:
    """The service's counters, gauges and histograms in their own :class:`CollectorRegistry`."""

    def __init__(self, model_id: str, model_sha256: str) -> None:
        self.registry = CollectorRegistry()
        self.model_id = model_id
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, cpu seconds, open fds (Linux)
        self.info = Gauge("edge_detect_model_info", "The loaded bundle (value 1).", ["model_id", "model_sha256"],
                          registry=r)
        self.info.labels(model_id, model_sha256).set(1)
        self.requests = Counter("edge_detect_requests", "Requests by endpoint and outcome (ok or an error kind).",
                                ["endpoint", "outcome"], registry=r)
        self.latency = Histogram("edge_detect_request_seconds", "Request time from arrival to answer.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("edge_detect_inference_seconds", "Model time per scored request or stream "
                                   "decision (front end + onnxruntime).", ["endpoint"], buckets=LATENCY_BUCKETS,
                                   registry=r)
        self.decisions = Counter("edge_detect_decisions", "Decisions by kind.", ["endpoint", "decision", "model_id"],
                                 registry=r)
        self.scores = Histogram("edge_detect_calibrated_score", "Calibrated scores (llr) of decisions: watch for "
                                "drift.", ["model_id"], buckets=SCORE_BUCKETS, registry=r)
        self.inflight = Gauge("edge_detect_requests_admitted", "Requests holding an inference slot or queue place.",
                              registry=r)
        self.streams = Gauge("edge_detect_streams_open", "Open WebSocket streams.", registry=r)
        self.ready = Gauge("edge_detect_ready", "1 once the model has run one inference.", registry=r)

    def request(self, endpoint: str, outcome: str, seconds: float) -> None:
        """Count one answered request (``outcome``: ``ok`` or the error kind) and its latency."""
        self.requests.labels(endpoint, outcome).inc()
        self.latency.labels(endpoint).observe(seconds)

    def decision(self, endpoint: str, decision: str, llr: Optional[float], inference_ms: Optional[float]) -> None:
        """Count one decision, its calibrated score and the model time it took."""
        self.decisions.labels(endpoint, decision, self.model_id).inc()
        if isinstance(llr, (int, float)) and math.isfinite(llr):  # a refusal before the model has no score
            self.scores.labels(self.model_id).observe(llr)
        if isinstance(inference_ms, (int, float)):
            self.inference.labels(endpoint).observe(inference_ms / 1000.0)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
