"""`edge-detect devices` lists every rate *and channel count* a microphone accepts (issue 16, item 11).

A microphone that offers only 48 kHz stereo is usable (capture mixes to mono and
resamples), so it must not be listed as accepting nothing. Uses the fake PyAudio module.
"""
from __future__ import annotations

import json
import sys

from click.testing import CliRunner

from edge_detector.cli import main
from fake_pyaudio import FakeDevice, FakeModule


def run_devices(monkeypatch, devices: list[FakeDevice], *args: str):
    monkeypatch.setitem(sys.modules, "pyaudio", FakeModule(devices).as_module())
    return CliRunner().invoke(main, ["devices", *args])


def test_stereo_only_48k_microphone_is_listed_with_what_it_accepts(monkeypatch):
    devices = [FakeDevice("stereo48", max_input_channels=2, default_rate=48000, rates=(48000,), channels=(2,)),
               FakeDevice("mono-multi", max_input_channels=1, default_rate=16000, rates=(16000, 44100), channels=(1,)),
               FakeDevice("array", max_input_channels=12, default_rate=48000, rates=(16000, 48000),
                          channels=(2, 12))]
    res = run_devices(monkeypatch, devices, "--json")
    assert res.exit_code == 0, res.output
    recs = {r["name"]: r for r in map(json.loads, res.stdout.splitlines())}
    assert recs["stereo48"]["rates"] == [48000]
    assert recs["stereo48"]["formats"] == [{"rate": 48000, "channels": [2]}]
    assert recs["mono-multi"]["formats"] == [{"rate": 16000, "channels": [1]}, {"rate": 44100, "channels": [1]}]
    # counts probed: 1, 2, 4, 6, 8 up to the maximum, and the maximum itself
    assert recs["array"]["formats"] == [{"rate": 16000, "channels": [2, 12]}, {"rate": 48000, "channels": [2, 12]}]


def test_table_shows_rates_with_channel_counts(monkeypatch):
    res = run_devices(monkeypatch, [FakeDevice("stereo48", max_input_channels=2, default_rate=48000, rates=(48000,),
                                               channels=(2,))])
    assert res.exit_code == 0, res.output
    assert "accepts 48000 (2 ch)" in res.stdout
