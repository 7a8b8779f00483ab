#!/usr/bin/env python3
"""End-of-speech → decision latency of `edge-detect listen`, measured on a virtual microphone.

What is measured
----------------
A private PulseAudio daemon (null sink → monitor → remapped source; see
tests/virtual_audio.py) plays a known utterance with ``paplay`` while the listener
captures it in real time from the ALSA ``pulse`` device with PyAudio, through exactly
the code `edge-detect listen` runs (:func:`edge_detector.commands.listen.run_listener`,
:class:`edge_detector.stream.StreamGate`, :class:`edge_detector.mic.Microphone`).

* **Ground truth for the end of speech**: the captured audio is cross-correlated with
  the utterance to find where each play landed on the stream clock; the end of speech is
  the last sample of the synthetic speech in the file (not the VAD's estimate).
* **When that sample was captured**: the callback that delivered it arrived at wall
  time A with its last sample at stream position P, so sample q was captured at
  ``A - (P - q) / 16000``.
* **Latency** = wall time the decision record was ready − that capture time. It
  contains the VAD hangover, the wait for the callback buffer, the queue, resampling,
  the VAD and the model. PortAudio's own input latency (buffering before the callback,
  reported as ``input_latency_ms``) comes on top and is reported separately; on the
  virtual device it is PulseAudio's buffering, not a sound card's.

The listener is warmed up first (more than one window of silence), so every play is
decided in steady state, not in the first 4 s of a stream (where the first window has to
fill before any decision: the rule's stated exception).

Usage
-----
    python benchmarks/mic_latency.py --bundle BUNDLE [--runs 5] [--threads 1] \
        [--windows first|all] [--min-speech 1.5] [--out benchmarks/results/mic_latency.json]

Needs pulseaudio, pulseaudio-utils, libasound2-plugins and PyAudio (scripts/install-dev.sh).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

SR = 16000


def utterance(speech_s: float, lead_s: float, tail_s: float, seed: int) -> tuple[np.ndarray, int]:
    """Silence, synthetic speech, silence; returns the signal and the sample where speech ends."""
    from audio_synth import speechlike

    lead, tail = np.zeros(int(lead_s * SR), np.float32), np.zeros(int(tail_s * SR), np.float32)
    sp = speechlike(speech_s, seed=seed)
    return np.concatenate([lead, sp, tail]), len(lead) + len(sp)


def locate(captured: np.ndarray, ref: np.ndarray, lo: int, hi: int) -> tuple[int, float]:
    """Offset ``o`` in ``captured[lo:hi]`` where ``ref`` best matches (normalised cross-correlation via FFT)."""
    seg = captured[max(0, lo) : hi].astype(np.float64)
    r = ref.astype(np.float64)
    if len(seg) < len(r):
        return -1, 0.0
    n = 1 << int(np.ceil(np.log2(len(seg) + len(r))))
    corr = np.fft.irfft(np.fft.rfft(seg, n) * np.conj(np.fft.rfft(r, n)), n)[: len(seg) - len(r) + 1]
    c = np.concatenate([[0.0], np.cumsum(seg ** 2)])
    sliding = np.maximum(c[len(r) :] - c[: len(seg) - len(r) + 1], 0.0)  # energy of each len(r) stretch
    energy = np.sqrt(sliding) * np.linalg.norm(r) + 1e-12
    ncc = corr / energy
    k = int(np.argmax(ncc))
    return max(0, lo) + k, float(ncc[k])


def percentile(xs: list[float], q: float) -> Optional[float]:
    return float(np.percentile(xs, q)) if xs else None


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=os.environ.get("EDGE_DETECTOR_BUNDLE"), help="Bundle folder.")
    ap.add_argument("--runs", type=int, default=5, help="Utterances played (one decision each).")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads.")
    ap.add_argument("--windows", choices=["first", "all"], default=None, help="Window mode (default: bundle's).")
    ap.add_argument("--min-speech", type=float, default=1.5)
    ap.add_argument("--speech-seconds", type=float, default=2.5, help="Length of each utterance's speech.")
    ap.add_argument("--rate", type=int, default=None, help="Capture rate (default: 16000 if accepted).")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "mic_latency.json"))
    args = ap.parse_args(argv)

    from virtual_audio import PulseServer, pulse_missing

    from edge_detector.commands.listen import decision_record, run_listener
    from edge_detector.defaults import resolve_bundle_path
    from edge_detector.detector import Detector
    from edge_detector.mic import CaptureConfig, Microphone
    from edge_detector.session import SessionSettings
    from edge_detector.stream import GatePolicy, StreamGate
    import soundfile as sf

    t_start = time.monotonic()

    def progress(msg: str) -> None:
        print(f"[{time.monotonic() - t_start:6.1f} s] {msg}", file=sys.stderr)

    reason = pulse_missing()
    if reason:
        print(f"mic_latency: cannot run: {reason}", file=sys.stderr)
        return 2
    bundle = resolve_bundle_path(args.bundle)
    detector = Detector(bundle, SessionSettings(intra_op_threads=args.threads, allow_spinning=False))
    policy = GatePolicy(min_speech=args.min_speech, mode=args.windows)
    gate = StreamGate.from_detector(detector, policy)
    window_s = gate.rule.window / SR

    x, speech_end_in_file = utterance(args.speech_seconds, lead_s=0.5, tail_s=2.0, seed=5)
    tmp = Path(tempfile.mkdtemp(prefix="mic-latency-"))
    wav = tmp / "utterance.wav"
    sf.write(str(wav), x, SR, subtype="PCM_16")
    ref = x[: speech_end_in_file]  # correlate on the speech part (the silences match anything)

    captured: list[np.ndarray] = []
    chunks: list[tuple[int, int, float]] = []  # (start pos, end pos, arrival)
    decisions: list[dict[str, Any]] = []
    plays: list[float] = []
    stop = threading.Event()
    warmup_s = window_s + 1.0
    per_play_s = len(x) / SR + 1.5

    progress(f"bundle {detector.bundle.model_id} loaded ({detector.provider}, {args.threads} thread(s))")
    srv = PulseServer(tmp / "pulse")
    srv.start()
    progress("PulseAudio null sink up")
    old_env = dict(os.environ)
    os.environ.update(srv.env)  # this process's PyAudio must find the private server (via HOME/XDG too)
    try:
        mic = Microphone("pulse", SR, CaptureConfig(rate=args.rate))
        mic.open()

        def player() -> None:
            time.sleep(warmup_s)
            for _ in range(args.runs):
                if stop.is_set():
                    return
                plays.append(time.monotonic())
                p = srv.play(wav)
                p.wait(60)
                time.sleep(per_play_s - len(x) / SR)

        def on_chunk(chunk: Any, before: int, n: int) -> None:
            captured.append(chunk.samples[:n])
            chunks.append((before, before + n, chunk.arrival))

        def on_decision(d: Any, chunk: Any) -> bool:
            t_ready = time.monotonic()
            rec = decision_record(d, chunk, mic, detector, gate, chunks[-1][1] if chunks else d.position)
            decisions.append({"record": rec, "t_ready": t_ready})
            progress(f"decision {len(decisions)}: {rec['decision']} at {rec['end']:.2f} s "
                     f"(VAD end of speech → decision {rec['end_of_speech_to_decision_ms']} ms)")
            return len(decisions) >= args.runs

        progress(f"capturing from {mic.device.name if mic.device else '?'} at {mic.rate} Hz; "
                 f"{warmup_s:.1f} s warm-up, then {args.runs} plays")
        th = threading.Thread(target=player, daemon=True)
        th.start()
        limit = warmup_s + args.runs * (per_play_s + 1.0) + 5.0
        run_listener(mic, gate, max_seconds=limit, on_decision=on_decision, on_chunk=on_chunk)
        stop.set()
        progress(f"{len(decisions)} decision(s)")
        input_latency_ms = mic.input_latency * 1000.0
        overflows, dropped = mic.overflows, mic.dropped_seconds
        device = {"name": mic.device.name if mic.device else None, "rate": mic.rate, "channels": mic.channels,
                  "buffer_frames": mic.buffer_frames}
        mic.close()
    finally:
        os.environ.clear()
        os.environ.update(old_env)
        srv.stop()

    stream = np.concatenate(captured) if captured else np.zeros(0, np.float32)
    starts = np.array([c[0] for c in chunks])
    runs = []
    prev_end = 0
    for dec in decisions:
        rec = dec["record"]
        end_pos = int(round(rec["end"] * SR))
        lo = max(prev_end, end_pos - int((len(x) / SR + 6.0) * SR))
        off, ncc = locate(stream, ref, lo, end_pos + SR)
        prev_end = end_pos
        true_end = off + speech_end_in_file
        i = int(np.searchsorted(starts, true_end, side="right") - 1)
        c_start, c_end, arrival = chunks[i]
        captured_at = arrival - (c_end - true_end) / SR
        runs.append({
            "decision": rec["decision"],
            "trigger": rec["trigger"],
            "segment": [rec["start"], rec["end"]],
            "match_ncc": round(ncc, 4),
            "true_speech_end_s": round(true_end / SR, 4),
            "vad_speech_end_s": rec["speech_end"],
            "end_of_speech_to_decision_ms": round((dec["t_ready"] - captured_at) * 1000.0, 2),
            "reported_end_of_speech_to_decision_ms": rec["end_of_speech_to_decision_ms"],
            "processing_ms": rec["latency_ms"],
            "inference_ms": rec["inference_ms"],
        })
    lat = [r["end_of_speech_to_decision_ms"] for r in runs if r["match_ncc"] > 0.5 and r["trigger"] == "end_of_speech"]
    proc = [r["processing_ms"] for r in runs]
    m = detector.bundle.manifest
    result = {
        "what": "end of speech -> decision record ready, PulseAudio null sink, real time",
        "command": "python benchmarks/mic_latency.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "summary": {
            "runs": len(runs),
            "median_ms": percentile(lat, 50), "p90_ms": percentile(lat, 90), "max_ms": max(lat) if lat else None,
            "processing_median_ms": percentile(proc, 50),
            "inference_median_ms": percentile([r["inference_ms"] for r in runs], 50),
            "vad_hangover_ms": gate.vad.config.hangover_s * 1000.0,
            "callback_buffer_ms": device["buffer_frames"] / device["rate"] * 1000.0 if device["rate"] else None,
            "portaudio_input_latency_ms": round(input_latency_ms, 2),
            "overflows": overflows, "dropped_s": dropped,
        },
        "runs": runs,
        "settings": {
            "bundle": str(bundle), "model_id": detector.bundle.model_id,
            "parameters": m["model"]["parameters"], "variant": m["model"]["variant"],
            "source_checkpoint": m.get("source_checkpoint"),
            "window_s": window_s, "hop_s": gate.rule.hop / SR, "mode": gate.rule.mode, "combine": gate.rule.combine,
            "min_speech_s": policy.min_speech, "max_windows": policy.max_windows, "threads": args.threads,
            "provider": detector.provider, "device": device, "utterance_speech_s": args.speech_seconds,
        },
        "environment": {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
                        "python": platform.python_version(), "cpus": os.cpu_count(),
                        "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return 0 if lat else 1


if __name__ == "__main__":
    sys.exit(main())
