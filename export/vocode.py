"""Copy-synthesis: vocoded spoofs made from bona fide audio (training side only).

Every bona fide file is analysed and re-synthesised by signal-processing vocoders; each
vocoder becomes a spoofing "system" with its own protocol line, and a pair table links
each vocoded file to the bona fide file it came from. A model that sees a human recording
and its own vocoded copy side by side (same speaker, same words, same channel) can only
separate them by the vocoder's artefacts, which is what it should learn.

Background: X. Wang and J. Yamagishi, "Spoofed training data for speech spoofing
countermeasure can be efficiently created using neural vocoders", ICASSP 2023
(arXiv 2210.10570): copy-synthesised bona fide data as training spoofs, with a
contrastive term over the (bona fide, vocoded) pairs.

The vocoders come from maintained libraries where one exists:

* ``world``: WORLD (M. Morise et al., IEICE Trans. Inf. & Syst. E99-D(7), 2016) through the
  ``pyworld`` package: DIO + StoneMask F0, CheapTrick envelope, D4C aperiodicity.
* ``mlsa``: mel-cepstral analysis and the MLSA filter (S. Imai, "Cepstral analysis synthesis
  on the mel frequency scale", ICASSP 1983) through ``pysptk``: WORLD envelope → 24th-order
  mel-cepstrum (alpha 0.42 for 16 kHz), pulse/noise excitation from the F0.
* ``lpc``: a linear-prediction source-filter vocoder (B. Atal and S. Hanauer, JASA 1971)
  through ``pysptk``: 16th-order LPC per 25 ms Hann frame, all-pole synthesis filter driven
  by a pulse train (voiced) or Gaussian noise (unvoiced).
* ``griffinlim``: phase reconstruction from the STFT magnitude alone (D. Griffin and J. Lim,
  IEEE Trans. ASSP 32(2), 1984), 32 iterations, with PyTorch's STFT.
* ``lyra`` (needs the model folder, ``lyra_dir``): neural-codec re-synthesis through Lyra v2
  (:mod:`export.lyra_codec`; SoundStream encoder, residual VQ, LyraGAN decoder) at a bit rate
  of 3.2, 6 or 9.2 kbps drawn per file from the seed.

Every output is deterministic (the random parts are seeded from the file id and the
vocoder name), keeps the source's length and loudness (RMS, peak capped at 0.99), and is
written at 16 kHz as FLAC. Runs are cached: a file whose output exists with the same
recipe version is skipped.
"""
from __future__ import annotations

import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from edge_detector.protocol import ProtocolEntry, resolve_audio, write_protocol

SAMPLE_RATE = 16000
FRAME_PERIOD_MS = 5.0  # analysis hop of the F0 / envelope vocoders
HOP = int(SAMPLE_RATE * FRAME_PERIOD_MS / 1000)  # 80 samples
RECIPE_VERSION = 1  # bump when a vocoder's output changes: cached files are then redone
VOCODERS = ("world", "mlsa", "lpc", "griffinlim")  # signal processing: no model files needed
NEURAL_CODECS = ("lyra",)  # need ``lyra_dir`` (../shared/models/lyra)
PAIRS_HEADER = "file_id\tsource_file_id\tvocoder\tspeaker\n"


def _seed(file_id: str, vocoder: str) -> int:
    return zlib.crc32(f"{file_id}|{vocoder}|{RECIPE_VERSION}".encode()) & 0x7FFFFFFF


def _world_features(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """F0 (Hz, 0 = unvoiced), time axis, spectral envelope and aperiodicity of WORLD."""
    import pyworld as pw

    f0, t = pw.dio(x, SAMPLE_RATE, frame_period=FRAME_PERIOD_MS)
    f0 = pw.stonemask(x, f0, t, SAMPLE_RATE)
    sp = pw.cheaptrick(x, f0, t, SAMPLE_RATE)
    ap = pw.d4c(x, f0, t, SAMPLE_RATE)
    return f0, t, sp, ap


def _excitation(f0: np.ndarray, seed: int) -> np.ndarray:
    """Pulse train at F0 for voiced frames, Gaussian noise for unvoiced ones (pysptk.excite)."""
    import pysptk

    period = np.where(f0 > 0, SAMPLE_RATE / np.maximum(f0, 1e-3), 0.0).astype(np.float64)
    return pysptk.excite(period, HOP, gaussian=True, seed=seed % 2**31)


def vocode_world(x: np.ndarray, seed: int) -> np.ndarray:
    import pyworld as pw

    f0, _, sp, ap = _world_features(x)
    return pw.synthesize(f0, sp, ap, SAMPLE_RATE, FRAME_PERIOD_MS)


def vocode_mlsa(x: np.ndarray, seed: int, order: int = 24, alpha: float = 0.42) -> np.ndarray:
    import pysptk
    from pysptk.synthesis import MLSADF, Synthesizer

    f0, _, sp, _ = _world_features(x)
    mc = pysptk.sp2mc(sp, order=order, alpha=alpha)
    b = pysptk.mc2b(mc, alpha)
    synth = Synthesizer(MLSADF(order=order, alpha=alpha), HOP)
    return synth.synthesis(_excitation(f0, seed), b)


def vocode_lpc(x: np.ndarray, seed: int, order: int = 16, frame: int = 400) -> np.ndarray:
    import pysptk
    from pysptk.synthesis import AllPoleDF, Synthesizer

    f0, _, _, _ = _world_features(x)
    n_frames = len(f0)
    padded = np.pad(x, (frame // 2, frame // 2 + HOP * n_frames))
    win = np.hanning(frame)
    coefs = np.empty((n_frames, order + 1))
    for i in range(n_frames):
        seg = padded[i * HOP : i * HOP + frame] * win
        if not np.any(seg):
            coefs[i] = 0.0
            coefs[i, 0] = 1e-8
            continue
        try:
            coefs[i] = pysptk.lpc(seg + 1e-9 * np.random.default_rng(i).standard_normal(frame), order)
        except RuntimeError:
            coefs[i] = coefs[i - 1] if i else np.r_[1e-8, np.zeros(order)]
    synth = Synthesizer(AllPoleDF(order=order), HOP)
    return synth.synthesis(_excitation(f0, seed), coefs)


def vocode_griffinlim(x: np.ndarray, seed: int, n_fft: int = 512, hop: int = 128, iters: int = 32) -> np.ndarray:
    import torch

    window = torch.hann_window(n_fft, dtype=torch.float64)
    sig = torch.from_numpy(np.asarray(x, dtype=np.float64))
    mag = torch.stft(sig, n_fft, hop, window=window, return_complex=True).abs()
    gen = torch.Generator().manual_seed(seed)
    phase = torch.exp(2j * np.pi * torch.rand(mag.shape, generator=gen, dtype=torch.float64))
    for _ in range(iters):
        y = torch.istft(mag * phase, n_fft, hop, window=window, length=len(x))
        spec = torch.stft(y, n_fft, hop, window=window, return_complex=True)
        phase = spec / spec.abs().clamp_min(1e-12)
    return torch.istft(mag * phase, n_fft, hop, window=window, length=len(x)).numpy()


_VOCODER_FUNCS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "world": vocode_world,
    "mlsa": vocode_mlsa,
    "lpc": vocode_lpc,
    "griffinlim": vocode_griffinlim,
}
_KNOWN = VOCODERS + NEURAL_CODECS


def vocode_lyra(x: np.ndarray, seed: int, lyra_dir: str | Path) -> np.ndarray:
    """Lyra v2 re-synthesis at a bit rate drawn from the seed (3.2, 6 or 9.2 kbps)."""
    from .lyra_codec import QUANTIZERS_BY_KBPS, lyra_resynthesis

    rates = sorted(QUANTIZERS_BY_KBPS)
    return lyra_resynthesis(x, lyra_dir, rates[seed % len(rates)])


def match_level(y: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``y`` cut or zero-padded to the reference's length and scaled to its RMS (peak ≤ 0.99).

    Shapes: both 1-D float arrays; returns float32 of ``len(reference)``.
    """
    y = np.nan_to_num(np.asarray(y, dtype=np.float64)[: len(reference)])
    y = np.pad(y, (0, len(reference) - len(y)))
    ry, rx = np.sqrt(np.mean(y**2)), np.sqrt(np.mean(np.asarray(reference, np.float64) ** 2))
    if ry > 0:
        y = y * (rx / ry)
    peak = np.max(np.abs(y)) if len(y) else 0.0
    if peak > 0.99:
        y = y * (0.99 / peak)
    return y.astype(np.float32)


def copy_synthesis(x: np.ndarray, vocoder: str, file_id: str, lyra_dir: Optional[str | Path] = None) -> np.ndarray:
    """Re-synthesise a 16 kHz signal through one vocoder.

    Args:
        x: bona fide signal, shape ``(n,)``, 16 kHz, float in [-1, 1].
        vocoder: one of :data:`VOCODERS` or :data:`NEURAL_CODECS`.
        file_id: the source's id; seeds the vocoder's random parts (deterministic output).
        lyra_dir: the Lyra model folder, needed by ``lyra`` only.
    Returns:
        float32 array of shape ``(n,)`` at the source's RMS level.
    Raises:
        ValueError: unknown vocoder, ``lyra`` without ``lyra_dir``, or a signal too short to
            analyse (< 0.1 s).
    """
    if vocoder not in _KNOWN:
        raise ValueError(f"unknown vocoder {vocoder!r}; choose from {', '.join(_KNOWN)}")
    if vocoder in NEURAL_CODECS and lyra_dir is None:
        raise ValueError(f"vocoder {vocoder!r} needs its model folder (vocode --lyra-dir)")
    x = np.asarray(x, dtype=np.float64)
    if len(x) < SAMPLE_RATE // 10:
        raise ValueError(f"{file_id}: {len(x) / SAMPLE_RATE:.3f} s is too short to vocode (needs ≥ 0.1 s)")
    seed = _seed(file_id, vocoder)
    y = vocode_lyra(x, seed, lyra_dir) if vocoder == "lyra" else _VOCODER_FUNCS[vocoder](x, seed)
    return match_level(y, x)


@dataclass(frozen=True)
class VocodedFile:
    file_id: str
    source_file_id: str
    vocoder: str
    speaker: str


def vocoded_id(source_file_id: str, vocoder: str) -> str:
    """``DEV_00012`` + ``world`` → ``DEV_00012__voc-world`` (the protocol and file name)."""
    return f"{source_file_id}__voc-{vocoder}"


def system_name(vocoder: str) -> str:
    return f"copysyn_{vocoder}"


def chosen_vocoders(file_id: str, vocoders: Sequence[str], per_file: int) -> list[str]:
    """The vocoders one file goes through: all (``per_file`` ≤ 0) or ``per_file`` in rotation."""
    vocoders = list(vocoders)
    if per_file <= 0 or per_file >= len(vocoders):
        return vocoders
    start = zlib.crc32(file_id.encode()) % len(vocoders)
    return [vocoders[(start + k) % len(vocoders)] for k in range(per_file)]


def _work(args: tuple[str, str, str, Path, Path, Optional[str]]) -> tuple[str, str, Optional[str]]:
    """One (file, vocoder) job; returns (file_id, vocoder, error or None)."""
    import soundfile as sf

    from edge_detector.audio import load_audio

    file_id, vocoder, _speaker, src, out, lyra_dir = args
    try:
        import torch

        torch.set_num_threads(1)  # one job per core: intra-op threads only fight each other here
    except ModuleNotFoundError:
        pass
    try:
        x = load_audio(src).samples
        y = copy_synthesis(x, vocoder, file_id, lyra_dir)
        tmp = out.with_name(out.name + ".tmp.flac")
        sf.write(tmp, y, SAMPLE_RATE, subtype="PCM_16")
        tmp.replace(out)
        return file_id, vocoder, None
    except Exception as exc:  # one bad file never stops the others
        return file_id, vocoder, f"{type(exc).__name__}: {exc}"


def vocode_corpus(
    entries: Iterable[ProtocolEntry],
    audio_dir: str | Path,
    out_dir: str | Path,
    vocoders: Sequence[str] = VOCODERS,
    jobs: int = 1,
    progress: bool = True,
    per_file: int = 0,
    lyra_dir: Optional[str | Path] = None,
) -> dict:
    """Copy-synthesise every bona fide entry through every vocoder into ``out_dir``.

    Writes ``out_dir/<id>__voc-<vocoder>.flac`` (16 kHz), ``out_dir/protocol.txt`` (one
    spoof line per vocoded file, same speaker as its source, system ``copysyn_<vocoder>``)
    and ``out_dir/pairs.tsv`` (vocoded id, source id, vocoder, speaker). Spoof entries are
    ignored. Existing outputs of the same recipe version are reused. ``per_file`` > 0 sends
    each bona fide file through only that many of the vocoders, chosen in rotation from a
    hash of its id (every vocoder gets the same share of files; for a smaller CPU budget).
    ``lyra_dir`` is the Lyra model folder, needed when ``lyra`` is among the vocoders.

    Returns a summary dict (counts, failures with reasons, wall seconds).
    Raises ValueError for an unknown vocoder or ``lyra`` without ``lyra_dir``; MissingFileError
    when a source file is missing; FileNotFoundError / ModuleNotFoundError when the Lyra model
    folder or the ``ai-edge-litert`` package is missing.
    """
    for v in vocoders:
        if v not in _KNOWN:
            raise ValueError(f"unknown vocoder {v!r}; choose from {', '.join(_KNOWN)}")
    if any(v in NEURAL_CODECS for v in vocoders):
        if lyra_dir is None:
            raise ValueError("vocoder 'lyra' needs its model folder (vocode --lyra-dir)")
        from .lyra_codec import check_model_dir

        lyra_dir = str(check_model_dir(lyra_dir))
    started = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = out / "RECIPE"
    if stamp.exists() and stamp.read_text().strip() != str(RECIPE_VERSION):
        for v in vocoders:  # an older recipe: redo everything of ours (only our own files)
            for old in out.glob(f"*__voc-{v}.flac"):
                old.unlink()
    stamp.write_text(f"{RECIPE_VERSION}\n")
    bona = [e for e in entries if e.label == "bonafide"]
    paths = resolve_audio(bona, Path(audio_dir))
    files = [VocodedFile(vocoded_id(e.file_id, v), e.file_id, v, e.speaker)
             for e in bona for v in chosen_vocoders(e.file_id, vocoders, per_file)]
    todo = [(f.source_file_id, f.vocoder, f.speaker, paths[f.source_file_id], out / f"{f.file_id}.flac", lyra_dir)
            for f in files if not (out / f"{f.file_id}.flac").exists()]
    failures: dict[str, str] = {}
    t0 = time.time()
    results: Iterable
    if jobs > 1 and len(todo) > 1:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(jobs)
        results = pool.imap_unordered(_work, todo, chunksize=4)
    else:
        pool = None
        results = map(_work, todo)
    try:
        for i, (fid, voc, err) in enumerate(results, 1):
            if err:
                failures[vocoded_id(fid, voc)] = err
            if progress:
                eta = (time.time() - t0) / i * (len(todo) - i)
                print(f"\rvocoding {i}/{len(todo)} eta {eta:5.0f}s", end="", file=sys.stderr, flush=True)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    if progress and todo:
        print(file=sys.stderr)
    done = _earlier_copies(out, vocoders) + [f for f in files if f.file_id not in failures]
    write_protocol([ProtocolEntry(f.speaker, f.file_id, system_name(f.vocoder), "spoof") for f in done],
                   out / "protocol.txt")
    tmp = out / "pairs.tsv.tmp"  # written aside, then renamed: never half a table, never through a hard link
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(PAIRS_HEADER)
        for f in done:
            fh.write(f"{f.file_id}\t{f.source_file_id}\t{f.vocoder}\t{f.speaker}\n")
    tmp.replace(out / "pairs.tsv")
    return {"bonafide_sources": len(bona), "vocoders": list(vocoders), "written": len(todo) - len(failures),
            "reused": len(files) - len(todo), "failed": failures, "files": len(done),
            "wall_seconds": round(time.time() - started, 1)}


def _earlier_copies(out: Path, vocoders: Sequence[str]) -> list[VocodedFile]:
    """Copies of *other* vocoders listed in an existing ``pairs.tsv`` whose file is still there.

    A second run with other vocoders into the same folder adds to its protocol and pair table
    instead of dropping what the first run made.
    """
    table = out / "pairs.tsv"
    if not table.exists():
        return []
    kept = []
    with open(table, encoding="utf-8-sig") as fh:
        for line in fh:
            cols = line.rstrip("\r\n").split("\t")
            if len(cols) < 4 or cols[0] == "file_id" or cols[2] in vocoders:
                continue
            if (out / f"{cols[0]}.flac").exists():
                kept.append(VocodedFile(cols[0], cols[1], cols[2], cols[3]))
    return kept


def read_pairs(path: str | Path) -> dict[str, str]:
    """``pairs.tsv`` → {vocoded file id: source (bona fide) file id}.

    Raises DataError naming the line on a malformed row.
    """
    from edge_detector.errors import DataError

    pairs: dict[str, str] = {}
    with open(path, encoding="utf-8-sig") as fh:
        for n, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if n == 1 and line.startswith("file_id"):
                continue
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) < 2 or not cols[0] or not cols[1]:
                raise DataError(f"{path}:{n}: expected 'file_id<TAB>source_file_id...', got {line!r}")
            pairs[cols[0]] = cols[1]
    return pairs
