"""`edge-detect doctor` and the CPU fallback a GPU profile takes on a CPU-only machine."""
from __future__ import annotations

import json
import os
import platform
import warnings
from pathlib import Path

import onnxruntime as ort
import pytest
from click.testing import CliRunner

from edge_detector.cli import main
from edge_detector.cpu import parse_cpuinfo
from edge_detector.errors import ExitCode

GPU_PROVIDERS = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
needs_cpu_only = pytest.mark.skipif(bool(GPU_PROVIDERS & set(ort.get_available_providers())),
                                    reason="this onnxruntime build has GPU providers: no fallback to test")


def doctor(*args: str):
    return CliRunner().invoke(main, ["doctor", *args])


def test_doctor_text_report(tiny_bundle):
    res = doctor("--bundle", str(tiny_bundle), "--runs", "2")
    assert res.exit_code == 0, res.output
    out = res.stdout
    # what the report must say, read here from the system rather than from cpu_info()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert f"{cores} usable / {os.cpu_count()} core(s)" in out
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), None)
    if model:
        assert f"cpu         {model} [{platform.machine()}]" in out
    assert "dot-product" in out and "VNNI" in out and "AVX2" in out
    for name in ort.get_available_providers():
        assert name in out
    assert "CPUExecutionProvider: median" in out and "ms per window" in out
    assert "verdict     OK" in out


@needs_cpu_only
def test_doctor_gpu_profile_falls_back_to_cpu_visibly(tiny_bundle):
    res = doctor("--profile", "jetson-orin-nano", "--bundle", str(tiny_bundle), "--runs", "1", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["profile"]["providers"] == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    runs = {r["requested"]: r for r in doc["inference"]}
    for gpu in ("TensorrtExecutionProvider", "CUDAExecutionProvider"):
        assert runs[gpu]["fallback"] is True
        assert runs[gpu]["ran_on"][0] == "CPUExecutionProvider"
        assert "falling back to CPUExecutionProvider" in runs[gpu]["warning"]
        assert runs[gpu]["latency_ms_median"] > 0
    assert runs["CPUExecutionProvider"]["fallback"] is False
    # never silent: the warning is on stderr as well as in the JSON
    assert "WARNING: TensorrtExecutionProvider is not available" in res.stderr
    status = {c["check"]: c["status"] for c in doc["checks"]}
    assert status["provider TensorrtExecutionProvider"] == "warn"
    assert status["provider CPUExecutionProvider"] == "ok"


def test_doctor_json_document(tiny_bundle):
    res = doctor("--profile", "x86", "--bundle", str(tiny_bundle), "--runs", "2", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert set(doc) >= {"system", "cpu", "onnxruntime", "profile", "checks", "bundle", "inference", "verdict"}
    assert doc["cpu"]["cores"] >= 1 and isinstance(doc["cpu"]["features"], list)
    assert {"dot_product", "vnni", "avx2"} <= set(doc["cpu"])
    assert doc["onnxruntime"]["providers"] == ort.get_available_providers()
    (run,) = doc["inference"]
    assert run["requested"] == "CPUExecutionProvider" and run["runs"] == 2 and run["finite"]
    assert doc["bundle"]["variant"] == "fp32" and doc["exit_code"] == 0


def test_doctor_exit_codes(tiny_bundle, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[providers]]\nname = "TensorRTExecutionProvider"\n')
    res = doctor("--profile", str(bad), "--bundle", str(tiny_bundle))
    assert res.exit_code == ExitCode.BAD_PROFILE
    assert "did you mean 'TensorrtExecutionProvider'" in res.stderr
    (tiny_bundle / "model.onnx").write_bytes(b"not a model")
    res = doctor("--bundle", str(tiny_bundle), "--json")
    assert res.exit_code == ExitCode.BAD_BUNDLE
    assert json.loads(res.stdout)["checks"][-1]["status"] == "fail"


@needs_cpu_only
def test_runtime_cpu_fallback_with_gpu_profile(tiny_bundle, tmp_path):
    """The path a Jetson takes without onnxruntime-gpu: warning, CPU session, inference works."""
    from audio_synth import speechlike, write as write_wav
    from edge_detector.commands._common import build_detector

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        det = build_detector(str(tiny_bundle), "jetson-orin-nano", None)
    messages = [str(w.message) for w in caught]
    assert any("falling back past missing provider(s)" in m and "TensorrtExecutionProvider" in m for m in messages)
    assert det.provider == "CPUExecutionProvider"
    assert det.session.get_providers() == ["CPUExecutionProvider"]
    assert det.settings.intra_op_threads == 4 and det.settings.allow_spinning is False
    result = det.score_file(write_wav(tmp_path / "s.wav", speechlike(4.5, seed=5)))
    assert result.provider == "CPUExecutionProvider"
    assert result.decision == "accept" and result.calibrated > 0.1  # speech-like: the tiny model leans bona fide


def test_parse_cpuinfo_arm_and_x86():
    pi4 = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n"
    model, feats = parse_cpuinfo(pi4)
    assert model == "Cortex-A72" and "asimd" in feats and "asimddp" not in feats
    pi5 = pi4.replace("0xd08", "0xd0b").replace("crc32", "crc32 atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp")
    model, feats = parse_cpuinfo(pi5)
    assert model == "Cortex-A76" and "asimddp" in feats
    model, feats = parse_cpuinfo("model name\t: Intel(R) Xeon(R)\nflags\t\t: fpu sse4_2 avx2 avx512_vnni\n")
    assert model == "Intel(R) Xeon(R)" and {"avx2", "avx512_vnni"} <= feats


def test_doctor_reports_which_onnxruntime_builds_are_installed(tiny_bundle):
    from edge_detector.session import installed_onnxruntime_builds

    builds = installed_onnxruntime_builds()
    # pip's own view, read here: every installed distribution whose name is an onnxruntime build
    from importlib import metadata

    names = {(d.metadata["Name"] or "").lower().replace("_", "-") for d in metadata.distributions()}
    assert sorted(builds) == sorted(n for n in names if n == "onnxruntime" or n.startswith("onnxruntime-")
                                    and n != "onnxruntime-extensions")
    assert "onnxruntime" in builds  # this environment has the CPU build
    r = CliRunner().invoke(main, ["doctor", "--bundle", str(tiny_bundle), "--json"])
    doc = json.loads(r.stdout)
    check = next(c for c in doc["checks"] if c["check"] == "onnxruntime builds")
    if len(builds) == 1:
        assert check["status"] == "ok" and "onnxruntime" in check["detail"]
    else:
        assert check["status"] == "warn" and "pip uninstall" in check["detail"]
