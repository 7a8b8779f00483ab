"""`edge-detect serve`: the real server in a subprocess on a free loopback port, real HTTP and WebSocket clients.

Two servers per module run the tiny test bundle: one without a token and with tight
limits (body 256 KiB, one inference and no queue, one stream), one that requires a
token. Everything is sent to 127.0.0.1 only; the rule that any other address needs a
token is checked without listening anywhere (the bind function is replaced).
"""
from __future__ import annotations

import io
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

httpx = pytest.importorskip("httpx")
ws_client = pytest.importorskip("websockets.sync.client")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from audio_synth import speechlike  # noqa: E402

from edge_detector.audio import prepare_array  # noqa: E402
from edge_detector.commands._common import build_detector  # noqa: E402
from edge_detector.records import gate_code  # noqa: E402
from edge_detector.stream import StreamGate  # noqa: E402

TOKEN = "test-token-0123456789abcdef"
MAX_BODY = 256 * 1024
TOKEN_SERVER_TIMEOUT = 8  # s; the slow-upload test waits this long for its 408
START_TIMEOUT = 90.0


# -- helpers ---------------------------------------------------------------------------------
class Server:
    """A `edge-detect serve` subprocess; ``url`` from the JSON line it prints once listening."""

    def __init__(self, args: list[str], tmp: Path, env: dict | None = None) -> None:
        self.log_path = tmp / f"serve-{os.getpid()}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "edge_detector.cli", "serve", *args],
                                     stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     env={**os.environ, **(env or {})})
        lines: "queue.Queue[str]" = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=START_TIMEOUT)
        except queue.Empty:
            self.stop()
            raise AssertionError(f"server did not start: {self.log()}")
        if not line:
            self.proc.wait(timeout=30)
            self._log.close()
            self.announce = None
            return
        self.announce = json.loads(line)
        assert self.announce["host"] == "127.0.0.1"
        self.port = self.announce["port"]
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def wav_bytes(x: np.ndarray, sr: int = 16000, fmt: str = "WAV", subtype: str | None = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def metric(url: str, name: str, headers: dict | None = None) -> float:
    """Value of one un-labelled (or fully written-out) series in /metrics; 0 when absent."""
    text = httpx.get(f"{url}/metrics", headers=headers).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle_dir(tiny_bundle_master, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("serve") / "bundle"
    shutil.copytree(tiny_bundle_master, dst)
    return dst


@pytest.fixture(scope="module")
def server(bundle_dir, tmp_path_factory):
    server_tmp = tmp_path_factory.mktemp("server-tmp")  # its TMPDIR: uploads must never land there
    s = Server(["--bundle", str(bundle_dir), "--port", "0", "--max-body-mb", str(MAX_BODY / 2**20),
                "--concurrency", "1", "--queue", "0", "--timeout", "30", "--max-streams", "1"],
               tmp_path_factory.mktemp("serve-log"), env={"TMPDIR": str(server_tmp)})
    assert s.announce is not None, s.log()
    at_start = sorted(server_tmp.iterdir())  # onnxruntime writes $TMPDIR/.ses when imported: not ours
    yield s
    code = s.stop()
    assert code == 0, s.log()  # SIGTERM: graceful shutdown, exit 0
    assert "Traceback" not in s.log(), s.log()
    assert sorted(server_tmp.iterdir()) == at_start  # no temporary files from uploads (multipart included)


@pytest.fixture(scope="module")
def token_server(bundle_dir, tmp_path_factory):
    s = Server(["--bundle", str(bundle_dir), "--port", "0", "--require-token", "--timeout", str(TOKEN_SERVER_TIMEOUT)],
               tmp_path_factory.mktemp("serve-log"),
               env={"EDGE_DETECT_TOKEN": TOKEN})
    assert s.announce is not None and s.announce["auth"] == "bearer", s.log()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def detector(bundle_dir):
    """The CLI's own detector on the same bundle (same settings as the server's)."""
    return build_detector(str(bundle_dir), None, None)


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "voice.wav"
    x = np.stack([speechlike(2.5, sr=22050, seed=5), speechlike(2.5, sr=22050, seed=6)], axis=1)
    sf.write(str(path), x, 22050, subtype="PCM_16")  # stereo at 22.05 kHz: mixing and resampling are exercised
    return path


# -- HTTP endpoints --------------------------------------------------------------------------
def test_health_ready_info_metrics(server, bundle_dir):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    info = httpx.get(f"{server.url}/v1/info?verify=1").json()
    assert info["model_id"] == manifest["model_id"] == server.announce["model_id"]
    assert info["verification"]["verified"] is True and info["verification"]["problem"] is None
    assert info["thresholds"] == {"accept": manifest["thresholds"]["accept"], "reject": manifest["thresholds"]["reject"]}
    assert info["limits"]["max_body_bytes"] == MAX_BODY and info["limits"]["max_concurrent"] == 1
    assert info["auth"] == "none"
    m = httpx.get(f"{server.url}/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    assert f'edge_detect_model_info{{model_id="{manifest["model_id"]}"' in m.text
    assert "edge_detect_ready 1.0" in m.text and "process_resident_memory_bytes" in m.text
    nf = httpx.get(f"{server.url}/no/such/path")
    assert nf.status_code == 404 and nf.json()["error"] == "not_found"


def test_score_gives_the_cli_record_raw_and_multipart(server, detector, speech_wav):
    expected = detector.score_file(speech_wav).to_record()
    data = speech_wav.read_bytes()
    raw = httpx.post(f"{server.url}/v1/score", content=data, headers={"Content-Type": "audio/wav"})
    assert raw.status_code == 200, raw.text
    multi = httpx.post(f"{server.url}/v1/score", files={"file": ("voice.wav", data, "audio/wav")})
    assert multi.status_code == 200, multi.text
    for rec, name in ((raw.json(), "upload"), (multi.json(), "voice.wav")):
        assert set(rec) == set(expected)
        assert rec["file"] == name
        assert rec["source_rate"] == 22050 and rec["source_channels"] == 2
        assert rec["decision"] == expected["decision"] and rec["windows"][0]["start"] == 0.0
        assert rec["score"] == pytest.approx(expected["score"], abs=1e-5)
        assert rec["llr"] == pytest.approx(expected["llr"], abs=1e-5)
        assert rec["duration"] == pytest.approx(expected["duration"])
    every = httpx.post(f"{server.url}/v1/score?windows=all", content=data, headers={"Content-Type": "audio/wav"})
    assert len(every.json()["windows"]) == len(detector.score_file(speech_wav, windows="all").windows)


def test_gate_answers_200_with_the_decision_and_its_exit_code(server, detector, speech_wav):
    r = httpx.post(f"{server.url}/v1/gate", content=speech_wav.read_bytes(), headers={"Content-Type": "audio/x-wav"})
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["decision"] == detector.score_file(speech_wav).decision
    assert rec["exit_code"] == int(gate_code(rec["decision"]))


@pytest.mark.parametrize("case, status, kind", [
    ("garbage", 422, "unreadable_audio"),
    ("truncated_header", 422, "unreadable_audio"),
    ("truncated_data", 422, "too_short"),
    ("truncated_flac", 422, "unreadable_audio"),
    ("silent", 422, "silent_audio"),
    ("text_plain", 415, "unsupported_media_type"),
    ("no_content_type", 415, "unsupported_media_type"),
    ("multipart_without_file", 400, "bad_request"),
    ("bad_windows", 400, "bad_request"),
    ("oversize", 413, "too_large"),
    ("oversize_chunked", 413, "too_large"),
])
def test_bad_requests_get_json_errors_and_the_gate_fails_closed(server, case, status, kind):
    voice = wav_bytes(speechlike(2.0, seed=9))
    url, kwargs = "", {"headers": {"Content-Type": "audio/wav"}}
    if case == "garbage":
        kwargs["content"] = os.urandom(4000)
    elif case == "truncated_header":
        kwargs["content"] = voice[:20]
    elif case == "truncated_data":
        kwargs["content"] = voice[: 44 + 2 * 4000]  # the header promises 2 s, 0.25 s arrive
    elif case == "truncated_flac":
        kwargs["content"] = wav_bytes(speechlike(2.0, seed=9), fmt="FLAC")[:6000]
    elif case == "silent":
        kwargs["content"] = wav_bytes(np.zeros(32000, np.float32))
    elif case == "text_plain":
        kwargs = {"content": voice, "headers": {"Content-Type": "text/plain"}}
    elif case == "no_content_type":
        kwargs = {"content": voice}
    elif case == "multipart_without_file":
        kwargs = {"data": {"note": "no audio here"}, "files": {"other": (None, b"x")}}
    elif case == "bad_windows":
        url, kwargs["content"] = "?windows=most", voice
    elif case == "oversize":
        kwargs["content"] = os.urandom(MAX_BODY + 1)
    elif case == "oversize_chunked":  # no Content-Length: refused while reading
        kwargs["content"] = iter([os.urandom(64 * 1024) for _ in range(6)])
    for endpoint in ("score", "gate"):
        if case == "oversize_chunked" and endpoint == "gate":
            kwargs["content"] = iter([os.urandom(64 * 1024) for _ in range(6)])
        r = httpx.post(f"{server.url}/v1/{endpoint}{url}", **kwargs)
        assert r.status_code == status, (endpoint, r.text)
        rec = r.json()
        assert rec["error"] == kind and rec["exit_code"] != 0 and rec["message"]
        if endpoint == "gate":
            assert rec["decision"] == "error"
    # the service goes on
    ok = httpx.post(f"{server.url}/v1/score", content=voice, headers={"Content-Type": "audio/wav"})
    assert ok.status_code == 200 and ok.json()["decision"] in ("accept", "reject", "uncertain")


def test_requests_beyond_the_limit_get_503_with_retry_after(server):
    """One slot, no queue: a request whose body is still arriving holds it; the next one is refused at once."""
    body = wav_bytes(speechlike(2.0, seed=11))
    admitted = "edge_detect_requests_admitted"
    wait_for(lambda: metric(server.url, admitted) == 0, "an idle server")
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        slow.sendall(b"POST /v1/gate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/wav\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body[:1000])
        wait_for(lambda: metric(server.url, admitted) == 1, "the slow request to be admitted")
        for endpoint in ("score", "gate"):
            busy = httpx.post(f"{server.url}/v1/{endpoint}", content=body, headers={"Content-Type": "audio/wav"})
            assert busy.status_code == 503, busy.text
            assert busy.headers["Retry-After"] == "1"
            assert busy.json()["error"] == "busy" and busy.json()["exit_code"] != 0
            if endpoint == "gate":
                assert busy.json()["decision"] == "error"
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # the loop is not blocked
        slow.sendall(body[1000:])
        reply = b""
        while chunk := slow.recv(65536):
            reply += chunk
    finally:
        slow.close()
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), reply[:300]
    assert json.loads(payload)["decision"] in ("accept", "reject", "uncertain")
    wait_for(lambda: metric(server.url, admitted) == 0, "the slot to be given back")
    assert 'edge_detect_requests_total{endpoint="gate",outcome="busy"}' in httpx.get(f"{server.url}/metrics").text


# -- WebSocket stream ------------------------------------------------------------------------
def pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")


def collect(ws) -> list[dict]:
    out = []
    while True:
        msg = json.loads(ws.recv(timeout=60))
        out.append(msg)
        if msg["event"] in ("end", "error"):
            return out


def test_stream_gives_the_listen_decisions(server, detector):
    rate = 22050
    speech = np.concatenate([np.zeros(int(0.5 * rate), np.float32), speechlike(5.0, sr=rate, seed=21),
                             np.zeros(int(1.0 * rate), np.float32)])
    pcm = pcm16(speech)
    # What `listen` decides on the same audio: the offline resampler, the same StreamGate.
    gate = StreamGate.from_detector(detector)
    expected = [d.to_record() for d in gate.feed(prepare_array(pcm, rate, 16000))]
    last = gate.finish()
    expected += [last.to_record()] if last is not None else []
    assert expected, "the test audio must give at least one decision"

    with ws_client.connect(f"{server.ws_url}/v1/stream?rate={rate}", open_timeout=30) as ws:
        ready = json.loads(ws.recv(timeout=30))
        assert ready["event"] == "ready" and ready["sample_rate"] == 16000 and ready["source_rate"] == rate
        raw = pcm.tobytes()
        for i in range(0, len(raw), 3001):  # odd chunk sizes: samples split across messages
            ws.send(raw[i : i + 3001])
        ws.send(json.dumps({"event": "end"}))
        msgs = collect(ws)
    decisions = [m for m in msgs if m["event"] == "decision"]
    assert msgs[-1]["event"] == "end" and msgs[-1]["decisions"] == len(decisions) == len(expected)
    assert msgs[-1]["seconds"] == pytest.approx(len(speech) / rate, abs=0.01)
    for got, want in zip(decisions, expected):
        assert (got["start"], got["end"], got["trigger"], got["decision"]) == \
            (want["start"], want["end"], want["trigger"], want["decision"])
        assert got["llr"] == pytest.approx(want["llr"], abs=1e-4)
        assert got["model_id"] == detector.bundle.model_id
    text = httpx.get(f"{server.url}/metrics").text
    series = f'edge_detect_decisions_total{{decision="{decisions[0]["decision"]}",endpoint="stream",model_id='
    assert series in text  # prometheus-client writes labels sorted by name


def test_stream_rate_in_first_message_stereo_and_bad_headers(server):
    with ws_client.connect(f"{server.ws_url}/v1/stream", open_timeout=30) as ws:
        ws.send(json.dumps({"rate": 8000, "channels": 2}))
        ready = json.loads(ws.recv(timeout=30))
        assert ready["event"] == "ready" and ready["channels"] == 2 and ready["source_rate"] == 8000
        ws.send(np.zeros((800, 2), "<i2").tobytes())
        ws.send(json.dumps({"event": "end"}))
        msgs = collect(ws)
        assert msgs[-1] == {"event": "end", "decisions": 0, "seconds": pytest.approx(0.1, abs=0.01),
                            "reason": "client"}
    for url, first in ((f"{server.ws_url}/v1/stream", b"\x00\x01"), (f"{server.ws_url}/v1/stream?rate=abc", None),
                       (f"{server.ws_url}/v1/stream?rate=16000&windows=some", None)):
        with ws_client.connect(url, open_timeout=30) as ws:
            if first is not None:
                ws.send(first)
            err = json.loads(ws.recv(timeout=30))
            assert err["event"] == "error" and err["error"] == "bad_request", err
            with pytest.raises(Exception):
                ws.recv(timeout=30)
            assert ws.close_code == 1003


def test_client_vanishing_mid_stream_leaves_the_server_serving(server):
    audio = pcm16(speechlike(3.0, sr=16000, seed=4)).tobytes()
    with ws_client.connect(f"{server.ws_url}/v1/stream?rate=16000", open_timeout=30) as ws:
        assert json.loads(ws.recv(timeout=30))["event"] == "ready"
        # a second stream is refused while the only one is open
        with ws_client.connect(f"{server.ws_url}/v1/stream?rate=16000", open_timeout=30) as other:
            err = json.loads(other.recv(timeout=30))
            assert err["error"] == "busy"
            with pytest.raises(Exception):
                other.recv(timeout=30)
            assert other.close_code == 1013
        ws.send(audio[: len(audio) // 2])
        ws.socket.shutdown(socket.SHUT_RDWR)  # gone without a closing handshake
        ws.socket.close()
    wait_for(lambda: metric(server.url, "edge_detect_streams_open") == 0, "the stream to be released")
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    with ws_client.connect(f"{server.ws_url}/v1/stream?rate=16000", open_timeout=30) as again:
        assert json.loads(again.recv(timeout=30))["event"] == "ready"
        again.send(json.dumps({"event": "end"}))
        assert collect(again)[-1]["event"] == "end"
    assert 'edge_detect_requests_total{endpoint="stream",outcome="client_gone"} 1.0' in \
        httpx.get(f"{server.url}/metrics").text


# -- token -----------------------------------------------------------------------------------
def test_token_required_everywhere_but_health(token_server):
    url = token_server.url
    voice = wav_bytes(speechlike(2.0, seed=2))
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert httpx.get(f"{url}/readyz").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}):
        for method, path in (("GET", "/v1/info"), ("GET", "/metrics"), ("POST", "/v1/score"), ("POST", "/v1/gate")):
            r = httpx.request(method, f"{url}{path}", headers={**headers, "Content-Type": "audio/wav"}, content=voice)
            assert r.status_code == 401, (headers, path, r.text)
            assert r.json()["error"] == "unauthorized" and r.headers["WWW-Authenticate"].startswith("Bearer")
        with pytest.raises(Exception) as refused:
            ws_client.connect(f"{token_server.ws_url}/v1/stream?rate=16000", additional_headers=headers,
                              open_timeout=30)
        assert "403" in str(refused.value)
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(f"{url}/v1/info", headers=good).json()["auth"] == "bearer"
    r = httpx.post(f"{url}/v1/gate", headers={**good, "Content-Type": "audio/wav"}, content=voice)
    assert r.status_code == 200 and r.json()["decision"] in ("accept", "reject", "uncertain")
    with ws_client.connect(f"{token_server.ws_url}/v1/stream?rate=16000", additional_headers=good,
                           open_timeout=30) as ws:
        assert json.loads(ws.recv(timeout=30))["event"] == "ready"


def test_a_stalled_upload_gets_408_and_frees_its_slot(token_server):
    body = wav_bytes(speechlike(2.0, seed=12))
    with socket.create_connection(("127.0.0.1", token_server.port), timeout=TOKEN_SERVER_TIMEOUT + 60) as stalled:
        stalled.sendall(b"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/wav\r\n"
                        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(body) + body[:500])
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = stalled.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), reply[:300]
    assert json.loads(payload)["error"] == "request_timeout"
    good = {"Authorization": f"Bearer {TOKEN}"}
    wait_for(lambda: metric(token_server.url, "edge_detect_requests_admitted", good) == 0, "the slot to be freed")
    r = httpx.post(f"{token_server.url}/v1/score", headers={**good, "Content-Type": "audio/wav"}, content=body)
    assert r.status_code == 200, r.text


# -- serve --record-enrolment (opt-in) -------------------------------------------------------
@pytest.fixture(scope="module")
def enrol_server(bundle_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("enrol") / "mine"  # created by the server
    s = Server(["--bundle", str(bundle_dir), "--port", "0", "--record-enrolment", str(folder)],
               tmp_path_factory.mktemp("serve-log"))
    assert s.announce is not None, s.log()
    s.folder = folder
    yield s
    assert s.stop() == 0, s.log()
    assert "Traceback" not in s.log(), s.log()


def _enrolled(folder: Path) -> tuple[list[Path], list]:
    from edge_detector.protocol import read_protocol

    wavs = sorted(folder.glob("enrol-*.wav"))
    return wavs, (read_protocol(folder / "protocol.txt") if (folder / "protocol.txt").exists() else [])


def test_record_enrolment_keeps_what_the_gate_decided_on_and_nothing_else(enrol_server, detector, speech_wav):
    folder, url = enrol_server.folder, enrol_server.url
    assert _enrolled(folder) == ([], [])
    tone = 0.3 * np.sin(2 * np.pi * 1000 * np.arange(32000) / 16000)
    for content, kind in ((wav_bytes(tone), "not_speech"), (os.urandom(4000), "unreadable_audio")):
        r = httpx.post(f"{url}/v1/gate", content=content, headers={"Content-Type": "audio/wav"})
        assert r.status_code == 422 and r.json()["error"] == kind and "enrolment_file" not in r.json(), r.text
    assert _enrolled(folder) == ([], [])  # refusals and errors are never kept

    r = httpx.post(f"{url}/v1/gate", content=speech_wav.read_bytes(), headers={"Content-Type": "audio/wav"})
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["decision"] == detector.score_file(speech_wav).decision
    wavs, protocol = _enrolled(folder)
    assert [str(w) for w in wavs] == [rec["enrolment_file"]]
    assert [(e.speaker, e.file_id, e.label) for e in protocol] == [("enrolment", wavs[0].stem, "bonafide")]
    kept, sr = sf.read(str(wavs[0]), dtype="float32")
    scored = detector.score_file(speech_wav)  # the first window's span of the decoded upload, at the model rate
    assert sr == 16000 and kept.ndim == 1 and len(kept) == round(scored.windows[0]["end"] * sr)
    again = detector.score_array(kept, sr)  # the kept audio is what was scored (16-bit WAV: within rounding)
    assert again.calibrated == pytest.approx(rec["llr"], abs=0.05)

    every = httpx.post(f"{url}/v1/score?windows=all", content=speech_wav.read_bytes(),
                       headers={"Content-Type": "audio/wav"}).json()
    kept_all, _ = sf.read(every["enrolment_file"], dtype="float32")
    assert len(kept_all) == round(every["duration"] * 16000)  # windows=all: the whole decoded audio
    assert len(_enrolled(folder)[1]) == 2


def test_record_enrolment_keeps_each_stream_segment_decided_on(enrol_server):
    folder = enrol_server.folder
    before = set(_enrolled(folder)[0])
    gap = np.zeros(16000, np.float32)
    speech = np.concatenate([gap, speechlike(4.0, seed=21), gap, speechlike(4.0, seed=22), *[gap] * 12])
    with ws_client.connect(f"{enrol_server.ws_url}/v1/stream?rate=16000", open_timeout=30) as ws:
        json.loads(ws.recv(timeout=30))
        ws.send(pcm16(speech).tobytes())  # one 22 s message: far more than the gate's ring holds
        ws.send(json.dumps({"event": "end"}))
        decided = [m for m in collect(ws) if m["event"] == "decision" and m["decision"] != "not_speech"]
    assert decided, "the test audio must give a decision"
    wavs, protocol = _enrolled(folder)
    assert sorted(m["enrolment_file"] for m in decided) == sorted(str(w) for w in set(wavs) - before)
    assert len(protocol) == len(wavs) and {e.label for e in protocol} == {"bonafide"}
    for m in decided:
        assert len(sf.read(m["enrolment_file"])[0]) == round((m["end"] - m["start"]) * 16000)


def test_record_enrolment_failure_changes_neither_decision_nor_status(enrol_server, detector, speech_wav):
    folder = enrol_server.folder
    folder.rename(folder.with_name("moved"))  # the folder is now a file: every write fails
    folder.write_text("not a folder")
    r = httpx.post(f"{enrol_server.url}/v1/gate", content=speech_wav.read_bytes(),
                   headers={"Content-Type": "audio/wav"})
    assert r.status_code == 200, r.text
    assert r.json()["decision"] == detector.score_file(speech_wav).decision and "enrolment_file" not in r.json()
    wait_for(lambda: "enrolment recording failed" in enrol_server.log(), "the failure in the log")


def test_without_record_enrolment_nothing_is_kept(server, speech_wav):
    before = sorted(Path.cwd().glob("enrol-*.wav"))
    r = httpx.post(f"{server.url}/v1/gate", content=speech_wav.read_bytes(), headers={"Content-Type": "audio/wav"})
    assert r.status_code == 200 and "enrolment_file" not in r.json()
    assert sorted(Path.cwd().glob("enrol-*.wav")) == before  # and the server fixture checks its TMPDIR is untouched


# -- start-up rules (no server listens in these) ---------------------------------------------
def test_bad_bundle_exits_7_before_listening(bundle_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(bundle_dir, bad)
    model = bad / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    s = Server(["--bundle", str(bad), "--port", "0"], tmp_path)
    assert s.announce is None and s.proc.returncode == 7, s.log()
    assert "sha256" in s.log()


def test_any_address_but_loopback_needs_a_token(monkeypatch, bundle_dir):
    from click.testing import CliRunner

    from edge_detector.commands import serve
    from edge_detector.service.settings import BindRefusedError, check_bind, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("127.8.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.168.1.2")
    assert not is_loopback("example.invalid")  # a name could resolve anywhere
    for host in ("0.0.0.0", "::", "10.0.0.1", "gate.local"):
        with pytest.raises(BindRefusedError):
            check_bind(host, None)
        check_bind(host, TOKEN)
    check_bind("127.0.0.1", None)

    def no_bind(host, port):  # never listen on anything in this test
        raise AssertionError(f"tried to listen on {host}:{port}")

    monkeypatch.setattr(serve, "bind_socket", no_bind)
    monkeypatch.delenv("EDGE_DETECT_TOKEN", raising=False)
    runner = CliRunner()
    for args in (["--host", "0.0.0.0"], ["--host", "::"], ["--require-token"],
                 ["--host", "0.0.0.0", "--token", "short"]):
        result = runner.invoke(serve.serve_command, ["--bundle", str(bundle_dir), "--port", "0", *args])
        assert result.exit_code == 2, (args, result.output, result.exception)
