"""Device profiles: shipped files validate, mistakes give one clear message, settings map."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from edge_detector.errors import ExitCode, ProfileError
from firmware_config import PROFILES_DIR, VARIANTS, ProfileWarning, list_profiles, load_profile

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ["jetson-nano", "jetson-orin-nano", "pi4", "pi5", "x86"]

MINIMAL = """
[session]
intra_op_threads = 2
"""


def write(tmp_path: Path, text: str, name: str = "user.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def error_for(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    assert info.value.exit_code == ExitCode.BAD_PROFILE
    msg = str(info.value)
    assert str(path) in msg, msg  # every message names the file
    assert "\n" not in msg  # ... in one line
    return msg


def test_shipped_profiles_are_listed():
    assert list_profiles() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_profile_loads(name):
    p = load_profile(name)
    assert p.name == name
    assert p.source == PROFILES_DIR / f"{name}.toml"
    assert 1 <= p.intra_op_threads <= 8
    assert p.variant in VARIANTS
    assert p.provider_names[-1] == "CPUExecutionProvider"  # every device can fall back to the CPU
    assert p.mic.rate == 16000 and p.mic.channels == 1 and p.mic.buffer_frames > 0
    assert p.stream.hop_seconds > 0 and p.gate.windows >= 1
    if name != "x86":
        assert p.allow_spinning is False  # daemons must not burn idle cores


def test_profiles_ship_as_package_data():
    import tomllib

    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "firmware_config" in cfg["packages"]
    pattern = cfg["package-data"]["firmware_config"]
    assert pattern == ["profiles/*.toml"]
    assert sorted(p.stem for p in PROFILES_DIR.glob("*.toml")) == SHIPPED


def test_session_settings_mapping():
    s = load_profile("pi5").session_settings()
    assert (s.intra_op_threads, s.inter_op_threads, s.allow_spinning, s.graph_optimization_level) == (3, 1, False, "all")
    assert list(s.providers) == ["CPUExecutionProvider"]
    j = load_profile("jetson-orin-nano").session_settings()
    trt, cuda, cpu = j.providers
    assert trt[0] == "TensorrtExecutionProvider"
    # onnxruntime's Python API takes option values as strings; booleans as "True"/"False".
    assert trt[1]["trt_fp16_enable"] == "True" and trt[1]["trt_int8_enable"] == "False"
    assert trt[1]["trt_engine_cache_enable"] == "True"
    assert trt[1]["trt_engine_cache_path"] == "/var/cache/edge-detector/trt"
    assert cuda == ("CUDAExecutionProvider", {"device_id": "0", "cudnn_conv_algo_search": "HEURISTIC"})
    assert cpu == "CPUExecutionProvider"
    # A fresh object each time: build_detector mutates it for --threads.
    assert load_profile("pi5").session_settings() is not load_profile("pi5").session_settings()


def test_user_profile_defaults_and_relative_engine_cache(tmp_path):
    p = load_profile(write(tmp_path, MINIMAL + """
[bundle]
variant = "int8-symmetric"
[[providers]]
name = "TensorrtExecutionProvider"
[providers.options]
trt_int8_enable = true
trt_engine_cache_path = "engines"
[[providers]]
name = "CPUExecutionProvider"
"""))
    assert p.name == "user" and p.variant == "int8-symmetric"
    assert p.providers[0].options["trt_engine_cache_path"] == str(tmp_path / "engines")
    assert p.gate.uncertain == "report" and p.mic.rate == 16000


def test_unknown_key_names_key_and_file_and_suggests(tmp_path):
    msg = error_for(tmp_path, "[session]\nintra_threads = 2\n")
    assert "'session.intra_threads'" in msg and "did you mean 'intra_op_threads'" in msg


def test_unknown_table_and_provider_option(tmp_path):
    assert "did you mean 'session'" in error_for(tmp_path, "[sesion]\nintra_op_threads = 2\n")
    msg = error_for(tmp_path, MINIMAL + '[[providers]]\nname = "TensorrtExecutionProvider"\n'
                                        "[providers.options]\ntrt_fp16_enabled = true\n")
    assert "'providers[0].options.trt_fp16_enabled'" in msg and "did you mean 'trt_fp16_enable'" in msg


@pytest.mark.parametrize("text, key, needle", [
    ('[session]\nintra_op_threads = "2"\n', "session.intra_op_threads", "must be an integer, got string"),
    ("[session]\nintra_op_threads = 2\nallow_spinning = 1\n", "session.allow_spinning", "must be a boolean"),
    (MINIMAL + "[mic]\nrate = 16000.5\n", "mic.rate", "must be an integer, got float"),
    (MINIMAL + "[gate]\nwindows = true\n", "gate.windows", "must be an integer, got boolean"),
    (MINIMAL + '[stream]\nhop_seconds = "1"\n', "stream.hop_seconds", "must be a number"),
])
def test_wrong_type(tmp_path, text, key, needle):
    msg = error_for(tmp_path, text)
    assert f"'{key}'" in msg and needle in msg, msg


@pytest.mark.parametrize("text, key, needle", [
    ("[session]\nintra_op_threads = 0\n", "session.intra_op_threads", "between 1 and 256, got 0"),
    (MINIMAL + "[mic]\nbuffer_frames = -512\n", "mic.buffer_frames", "must be > 0"),
    (MINIMAL + "[stream]\nhop_seconds = 0\n", "stream.hop_seconds", "must be > 0"),
    (MINIMAL + '[bundle]\nvariant = "fp61"\n', "bundle.variant", "did you mean 'fp16'"),
    (MINIMAL + '[session]\n', "session", ""),  # duplicate table: TOML error, still names the file
    (MINIMAL + '[gate]\nuncertain = "accept"\n', "gate.uncertain", "report, reject, retry"),
    (MINIMAL + "[gate]\nretries = 2\n", "gate.retries", 'only applies with gate.uncertain = "retry"'),
])
def test_impossible_values(tmp_path, text, key, needle):
    msg = error_for(tmp_path, text)
    if key != "session":
        assert f"'{key}'" in msg
    assert needle in msg, msg


def test_unknown_provider_suggests_the_real_name(tmp_path):
    msg = error_for(tmp_path, MINIMAL + '[[providers]]\nname = "CUDAExecutionProvidr"\n')
    assert "'providers[0].name'" in msg and "unknown execution provider" in msg
    assert "did you mean 'CUDAExecutionProvider'" in msg


def test_trt_int8_needs_symmetric_variant(tmp_path):
    msg = error_for(tmp_path, MINIMAL + '[bundle]\nvariant = "int8"\n[[providers]]\nname = "TensorrtExecutionProvider"\n'
                                        "[providers.options]\ntrt_int8_enable = true\n")
    assert "int8-symmetric" in msg and "'providers[0].options.trt_int8_enable'" in msg


def test_missing_file_and_unknown_name():
    with pytest.raises(ProfileError, match="profile file not found"):
        load_profile("/nonexistent/dir/p.toml")
    with pytest.raises(ProfileError, match="did you mean 'pi5'"):
        load_profile("pi-5")


def _bundle_with_variant(dst: Path, variant: str) -> Path:
    """Resolution reads only the manifest's model.variant: a manifest is enough here."""
    dst.mkdir(parents=True)
    (dst / "manifest.json").write_text(json.dumps({"model": {"variant": variant}}))
    return dst


def test_variant_resolution(tmp_path):
    default = _bundle_with_variant(tmp_path / "models" / "default", "fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the wanted variant is the default: no warning
        assert load_profile("pi4").resolve_bundle(default) == default
    sibling = _bundle_with_variant(default.with_name(default.name + "-fp16"), "fp16")
    assert load_profile("jetson-orin-nano").resolve_bundle(default) == sibling
    # A sibling whose manifest says another variant is not taken.
    _bundle_with_variant(default.with_name(default.name + "-int8"), "fp32")
    wants_int8 = load_profile(write(tmp_path, MINIMAL + '[bundle]\nvariant = "int8"\n', name="int8.toml"))
    with pytest.warns(ProfileWarning, match="wants bundle variant 'int8'.*using .*variant 'fp32'"):
        assert wants_int8.resolve_bundle(default) == default
    user = load_profile(write(tmp_path, MINIMAL + '[bundle]\nvariant = "int8-symmetric"\n'))
    symmetric = _bundle_with_variant(default.with_name(default.name + "-int8-symmetric"), "int8-symmetric")
    assert user.resolve_bundle(default) == symmetric


def test_cli_profile_path_and_bad_profile(tiny_bundle, tmp_path):
    from click.testing import CliRunner

    from audio_synth import speechlike, write as write_wav
    from edge_detector.cli import main

    wav = write_wav(tmp_path / "a.wav", speechlike(4.5, seed=3))
    user = write(tmp_path, MINIMAL + '[[providers]]\nname = "CPUExecutionProvider"\n')
    ok = CliRunner().invoke(main, ["score", str(wav), "--bundle", str(tiny_bundle), "--profile", str(user)])
    assert ok.exit_code == 0, ok.output
    rec = json.loads(ok.stdout.strip().splitlines()[-1])
    assert rec["provider"] == "CPUExecutionProvider"
    bad = write(tmp_path, "[session]\nintra_op_threads = 0\n", name="bad.toml")
    res = CliRunner().invoke(main, ["score", str(wav), "--bundle", str(tiny_bundle), "--profile", str(bad)])
    assert res.exit_code == ExitCode.BAD_PROFILE
    assert "bad.toml" in res.stderr and "session.intra_op_threads" in res.stderr


def test_firmware_config_imports_no_training_stack():
    code = ("import sys, firmware_config; firmware_config.load_profile('jetson-orin-nano'); "
            "print([m for m in ('torch', 'onnx', 'scipy', 'onnxruntime') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout
