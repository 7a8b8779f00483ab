#!/usr/bin/env python3
"""Bounded load test of `edge-detect serve` on loopback: latency, throughput, errors, server RSS.

What is measured
----------------
The script starts the real server (`edge-detect serve --port 0`, 127.0.0.1 only), waits
for its "listening" line, warms it up with sequential requests, then:

1. **Within the limit**: ``--clients`` threads (default 8), each with its own HTTP
   connection, POST the same in-memory WAV (synthetic speech, ``--seconds`` long) to
   ``/v1/gate`` until ``--requests`` answers have come back in total. The server runs
   with ``--concurrency`` inferences at once and ``--queue`` waiting places; their sum
   is at least the number of clients, so every request must be answered 200: the
   error count is expected to be 0.
2. **Beyond the limit** (``--overload-clients``, default 16 > concurrency + queue): the
   same for ``--overload-requests`` requests; the answers are 200 or 503 + Retry-After,
   nothing else, and the server's memory stays bounded.

Latency is the client's wall time per request (connection kept alive), p50 and p99 over
the phase; throughput is answers per second of the phase's wall time. The server's
resident memory (VmRSS from /proc) is read after warm-up, after phase 1 and after phase
2, and its peak (VmHWM, start-up included) at the end. The machine's load average is
recorded with the result: on a shared machine latency and throughput follow it, the error
count must not. Everything stops by itself: a fixed number of
requests and a wall-clock cap (``--max-wall``); the server is stopped with SIGTERM.

Usage
-----
    nice -n 15 python benchmarks/serve_load.py [--bundle B] [--clients 8] [--requests 400] \
        [--out benchmarks/results/serve_load.json]

Needs the `serve` extra and httpx (`dev` extra). Loopback only: the server binds
127.0.0.1 and the clients send nowhere else.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import queue
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process in KiB, from /proc (Linux)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def test_audio(seconds: float) -> bytes:
    """A 16 kHz 16-bit WAV of synthetic speech (the tests' generator), held in memory."""
    import soundfile as sf
    from audio_synth import speechlike

    buf = io.BytesIO()
    sf.write(buf, speechlike(seconds, seed=3), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def start_server(args: list[str], log_path: Path) -> tuple[subprocess.Popen, dict[str, Any]]:
    cmd = [sys.executable, "-m", "edge_detector.cli", "serve", "--host", "127.0.0.1", "--port", "0", *args]
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=str(REPO))
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=120)
    except queue.Empty:
        proc.kill()
        raise SystemExit(f"server did not start; log: {log_path}")
    if not line:
        raise SystemExit(f"server exited with {proc.wait()}; log: {log_path}")
    announce = json.loads(line)
    assert announce["host"] == "127.0.0.1", announce
    return proc, announce


def run_phase(url: str, body: bytes, clients: int, total: int, max_wall: float) -> dict[str, Any]:
    """``clients`` threads POST ``body`` until ``total`` answers (or ``max_wall`` s); latencies and statuses."""
    import httpx

    lock = threading.Lock()
    issued = {"n": 0}
    latencies: list[tuple[float, str]] = []  # (seconds, status key)
    statuses: dict[str, int] = {}
    retry_after: set[str] = set()
    failures: list[str] = []
    stop_at = time.monotonic() + max_wall

    def worker() -> None:
        with httpx.Client(timeout=60.0) as client:
            while time.monotonic() < stop_at:
                with lock:
                    if issued["n"] >= total:
                        return
                    issued["n"] += 1
                t0 = time.perf_counter()
                try:
                    r = client.post(f"{url}/v1/gate", content=body, headers={"Content-Type": "audio/wav"})
                    dt = time.perf_counter() - t0
                    key = str(r.status_code)
                    if r.status_code == 200:
                        if r.json().get("decision") not in ("accept", "reject", "uncertain"):
                            key = "200-without-decision"
                    elif r.status_code == 503:
                        retry_after.add(r.headers.get("Retry-After", "missing"))
                except Exception as exc:  # connection errors count as errors, the run goes on
                    dt = time.perf_counter() - t0
                    key = f"exception:{type(exc).__name__}"
                    with lock:
                        failures.append(repr(exc))
                with lock:
                    latencies.append((dt, key))
                    statuses[key] = statuses.get(key, 0) + 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    answered = len(latencies)

    def summary(key: str) -> Optional[dict[str, float]]:
        ms = np.asarray([dt for dt, k in latencies if k == key]) * 1000.0
        if not len(ms):
            return None
        return {"p50": round(float(np.percentile(ms, 50)), 2), "p99": round(float(np.percentile(ms, 99)), 2),
                "max": round(float(ms.max()), 2)}

    return {
        "clients": clients, "requests": answered, "wall_s": round(wall, 3),
        "throughput_rps": round(answered / wall, 2) if wall > 0 else None,
        "decisions_per_s": round(statuses.get("200", 0) / wall, 2) if wall > 0 else None,
        "latency_ms_200": summary("200"),
        "latency_ms_503": summary("503"),
        "statuses": dict(sorted(statuses.items())),
        "errors": answered - statuses.get("200", 0),
        "retry_after": sorted(retry_after),
        "first_failures": failures[:3],
        "stopped_by_wall_clock": answered < total,
    }


def server_metric_sum(url: str, name: str) -> float:
    """Sum of every series of one metric in /metrics (e.g. a histogram's ``_sum`` over endpoints)."""
    import httpx

    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.split()[-1])
    return total


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=None, help="Bundle to serve (default: the shipped default).")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=2, help="Server: inferences at once.")
    ap.add_argument("--queue", type=int, default=8, help="Server: waiting places (concurrency + queue >= clients).")
    ap.add_argument("--threads", type=int, default=1, help="Server: onnxruntime intra-op threads per inference.")
    ap.add_argument("--seconds", type=float, default=4.0, help="Length of the test audio.")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--overload-clients", type=int, default=16)
    ap.add_argument("--overload-requests", type=int, default=160)
    ap.add_argument("--max-wall", type=float, default=240.0, help="Wall-clock cap per phase (s).")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "serve_load.json"))
    a = ap.parse_args(argv)
    if a.concurrency + a.queue < a.clients:
        ap.error("--concurrency + --queue must be at least --clients for the within-limit phase")

    import httpx

    body = test_audio(a.seconds)
    server_args = ["--concurrency", str(a.concurrency), "--queue", str(a.queue), "--threads", str(a.threads)]
    if a.bundle:
        server_args += ["--bundle", a.bundle]
    log_path = Path(tempfile.gettempdir()) / f"serve_load-{os.getpid()}.server.log"  # stderr of the server
    proc, announce = start_server(server_args, log_path)
    url = announce["url"]
    try:
        for _ in range(a.warmup):
            r = httpx.post(f"{url}/v1/gate", content=body, headers={"Content-Type": "audio/wav"}, timeout=60)
            r.raise_for_status()
        rss_before = rss_kib(proc.pid)
        load_before = os.getloadavg()
        within = run_phase(url, body, a.clients, a.requests, a.max_wall)
        rss_after = rss_kib(proc.pid)
        overload = run_phase(url, body, a.overload_clients, a.overload_requests, a.max_wall)
        rss_after_overload = rss_kib(proc.pid)
        load_after = os.getloadavg()
        inf_sum = server_metric_sum(url, "edge_detect_inference_seconds_sum")
        inf_count = server_metric_sum(url, "edge_detect_inference_seconds_count")
        healthy = httpx.get(f"{url}/healthz", timeout=30).status_code == 200
        info = httpx.get(f"{url}/v1/info", timeout=30).json()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    result = {
        "command": "nice -n 15 python benchmarks/serve_load.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:])),
        "what": "POST /v1/gate with one in-memory WAV; client wall time per request over loopback; "
                "server RSS from /proc",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "python": platform.python_version(),
                    # other work on the machine: latency and throughput scale with it, errors must not
                    "loadavg_1_5_15_before": [round(x, 2) for x in load_before],
                    "loadavg_1_5_15_after": [round(x, 2) for x in load_after]},
        "server": {"args": server_args, "model_id": info["model_id"], "provider": info["provider"],
                   "limits": info["limits"], "exit_code_after_sigterm": code},
        "audio": {"seconds": a.seconds, "bytes": len(body), "format": "WAV PCM_16 16 kHz mono"},
        "warmup_requests": a.warmup,
        "within_limit": within,
        "beyond_limit": overload,
        "server_inference_ms_mean": round(1000.0 * inf_sum / inf_count, 3) if inf_count else None,
        "server_rss_kib": {"after_warmup": rss_before["VmRSS"], "after_within_limit": rss_after["VmRSS"],
                           "after_beyond_limit": rss_after_overload["VmRSS"],
                           "peak_until_warmup": rss_before["VmHWM"], "peak_until_within_limit": rss_after["VmHWM"],
                           "peak": rss_after_overload["VmHWM"]},
        "healthy_after": healthy,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if within["errors"] == 0 and healthy and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
