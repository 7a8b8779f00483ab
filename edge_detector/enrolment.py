"""Enrolment recording: keep the device's own utterances for `edge-detect adapt` (opt-in only).

`listen --record-enrolment DIR` hands every utterance it decides on (accepted or not) to
:class:`EnrolmentRecorder`, which writes the audio the model scored as a 16-bit WAV in
DIR and appends a protocol line labelling it bona fide, so that after a session of the
owner speaking ``edge-detect adapt BUNDLE --protocol DIR/protocol.txt --audio-dir DIR``
works as is (add spoofs: known attacks, or vocoded copies from `edge-detect vocode`).
Only the owner's *live* voice belongs there: whoever records is vouching for the label.

Nothing is ever overwritten: file names carry the UTC time and a counter, and a name
that exists is skipped. Each file is written to a hidden temporary name and renamed, so
a crash never leaves half a WAV under a real name. A failure to write is reported and
never changes a decision.
"""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Optional

import numpy as np

PROTOCOL_NAME = "protocol.txt"
SPEAKER = "enrolment"


class EnrolmentRecorder:
    """Writes utterances to ``folder`` (created if missing) and lists them in ``folder/protocol.txt``."""

    def __init__(self, folder: os.PathLike | str, sample_rate: int) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise NotADirectoryError(f"{self.folder}: not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sample_rate = int(sample_rate)
        self.count = 0


    def write(self, samples: np.ndarray, decision: str) -> Optional[Path]:
        """Write float32 mono ``samples`` (at ``sample_rate``) as ``enrol-<UTC time>-<n>.wav``; return its path.

        Appends ``enrolment FILE_ID - - bonafide`` to the protocol (the decision the gate
        made goes to the log, not the label). Raises OSError when the folder is not writable.
        """
        import soundfile as sf

        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        tmp = self.folder / f".enrol-{stamp}-{os.getpid()}.wav.part"
        pcm = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
        sf.write(str(tmp), pcm, self.sample_rate, subtype="PCM_16", format="WAV")
        try:
            while True:  # link() refuses an existing name: nothing is ever overwritten
                self.count += 1
                file_id = f"enrol-{stamp}-{self.count:04d}"
                path = self.folder / f"{file_id}.wav"
                try:
                    os.link(tmp, path)
                    break
                except FileExistsError:
                    continue
        finally:
            tmp.unlink(missing_ok=True)
        with open(self.folder / PROTOCOL_NAME, "a", encoding="utf-8") as f:
            f.write(f"{SPEAKER} {file_id} - - bonafide\n")
        return path
