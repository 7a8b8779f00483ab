"""Neural-codec re-synthesis through Lyra v2 (SoundStream encoder, residual VQ, LyraGAN decoder).

Training side only. Zero-shot TTS built on codec language models writes its speech through a
neural codec decoder; a countermeasure that never saw codec output misses it (CodecFake:
H. Wu, Y. Tseng, H. Lee, Interspeech 2024, arXiv 2406.07237; CodecFake+, arXiv 2501.08238).
Re-synthesising a bona fide file through the codec gives a spoof that keeps the speaker, the
words and the channel of its source, so it can be used as a (bona fide, copy) training pair
like the signal-processing vocoders of :mod:`export.vocode`.

Facts used (from ``../shared/models/lyra/README.md``, read from google/lyra release 1.3.2,
``lyra_config.cc``, ``soundstream_encoder.cc``, ``residual_vector_quantizer.cc``,
``lyra_gan_model.cc``):

* 16 kHz mono, 320 samples per frame (50 frames/s); the encoder and decoder are stateful across
  calls, so every file gets fresh interpreters;
* ``soundstream_encoder.tflite``: ``[1, 320]`` float32 in [-1, 1] → ``[1, 1, 64]`` features;
* ``quantizer.tflite``: ``encode(input_frames [1,1,64], num_quantizers)`` → indices (one per
  quantizer); ``decode(encoding_indices [46,1,1])`` → ``[1,1,64]`` lossy features, unused
  quantizers given index -1;
* 16, 30 or 46 quantizers = 3.2, 6 or 9.2 kbps;
* ``lyragan.tflite``: ``[1,1,64]`` → ``[1,320]`` samples, aligned with the input frame.

Runtime: the ``ai-edge-litert`` package (TFLite interpreter), installed by the ``train`` extra.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

FRAME = 320
MAX_QUANTIZERS = 46
QUANTIZERS_BY_KBPS = {3.2: 16, 6.0: 30, 9.2: 46}
MODEL_FILES = ("soundstream_encoder.tflite", "quantizer.tflite", "lyragan.tflite")


def check_model_dir(model_dir: str | Path) -> Path:
    """The Lyra model folder, checked to hold the three TFLite files.

    Raises:
        FileNotFoundError: the folder or one of :data:`MODEL_FILES` is missing.
        ModuleNotFoundError: ``ai_edge_litert`` is not installed.
    """
    d = Path(model_dir)
    missing = [f for f in MODEL_FILES if not (d / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{d}: Lyra model files missing: {', '.join(missing)}")
    import ai_edge_litert.interpreter  # noqa: F401  (fail early, with the package's name)

    return d


def _runner(path: Path, signature: str):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    return interp, interp.get_signature_runner(signature)


def lyra_resynthesis(x: np.ndarray, model_dir: str | Path, kbps: float = 6.0) -> np.ndarray:
    """Encode, quantize and decode a 16 kHz signal through Lyra v2.

    Args:
        x: signal, shape ``(n,)``, 16 kHz, float in [-1, 1] (values outside are clipped).
        model_dir: folder with :data:`MODEL_FILES` (``../shared/models/lyra``).
        kbps: bit rate, one of 3.2, 6 or 9.2 (16, 30 or 46 residual quantizers).
    Returns:
        float32 array of shape ``(n,)``: the decoded signal, frame-aligned with the input (the
        last partial frame is zero-padded before coding and cut after).
    Raises:
        ValueError: unknown bit rate; FileNotFoundError / ModuleNotFoundError: see
        :func:`check_model_dir`.
    """
    if kbps not in QUANTIZERS_BY_KBPS:
        raise ValueError(f"Lyra bit rate {kbps} kbps: choose from {sorted(QUANTIZERS_BY_KBPS)}")
    d = check_model_dir(model_dir)
    n_q = np.int32(QUANTIZERS_BY_KBPS[kbps])
    # fresh interpreters: encoder and decoder carry state from one call to the next
    keep = [_runner(d / "soundstream_encoder.tflite", "serving_default")]
    encode = keep[0][1]
    q_interp, q_encode = _runner(d / "quantizer.tflite", "encode")
    q_decode = q_interp.get_signature_runner("decode")
    keep.append(_runner(d / "lyragan.tflite", "serving_default"))
    decode = keep[1][1]
    n = len(x)
    frames = -(-n // FRAME)
    padded = np.zeros(frames * FRAME, dtype=np.float32)
    padded[:n] = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)
    out = np.empty_like(padded)
    indices = np.full((MAX_QUANTIZERS, 1, 1), -1, dtype=np.int32)
    for k in range(frames):
        feats = encode(input_audio=padded[None, k * FRAME:(k + 1) * FRAME])["output_0"]
        idx = np.asarray(q_encode(input_frames=feats, num_quantizers=n_q)["output_0"]).reshape(-1)
        indices[:] = -1
        indices[:len(idx), 0, 0] = idx
        lossy = q_decode(encoding_indices=indices)["output_0"]
        out[k * FRAME:(k + 1) * FRAME] = np.asarray(decode(input_audio=lossy)["output_0"]).reshape(-1)
    return out[:n]
