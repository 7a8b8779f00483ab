"""`edge-detect devices`: the input devices PortAudio sees and the rates and channel counts they accept."""
from __future__ import annotations

import traceback

import click

from ..errors import EdgeDetectorError, ExitCode
from ._common import emit, exit_with, log


@click.command("devices")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per device on stdout instead of a table.")
def devices_command(as_json: bool) -> None:
    """List audio input devices (index, name, host API, channels, default rate) and which of
    8000/16000/22050/44100/48000 Hz each accepts for 16-bit input, with the channel counts
    (1, 2, 4, 6, 8 and the device's maximum) accepted at each rate. Any of them works for
    `listen`: capture mixes channels to mono and resamples to the model's rate.

    `listen` captures at 16000 Hz when the device accepts it, else at its default rate
    (resampled in numpy). Pass an index or a (part of a) name to `listen --device`.
    Exit status: 0, or 9 when there is no input device, 12 when PyAudio is missing.
    """
    from ..mic import PortAudio

    try:
        with PortAudio() as pa:
            devices = pa.input_devices(probe_rates=True)
    except EdgeDetectorError as exc:
        log(f"edge-detect devices: {exc}")
        exit_with(exc.exit_code)
    except Exception:
        log("edge-detect devices: internal error\n" + traceback.format_exc())
        exit_with(ExitCode.INTERNAL_ERROR)
    if as_json:
        for d in devices:
            emit(d.to_dict())
    else:
        if devices:
            click.echo(f"{'idx':>3}  name  [host API, input channels, default rate, accepted rates (channels)]")
        for d in devices:
            click.echo(d.describe())
    if not devices:
        log("no audio input devices found")
        exit_with(ExitCode.NO_MICROPHONE)
    exit_with(ExitCode.ACCEPT)
