"""The bundle: the one contract between the training side and the device.

A bundle is a folder holding the ONNX model and ``manifest.json``. The manifest states
everything the runtime must not guess: sample rate, window, pad rule, window
combination rule, score orientation, calibration, thresholds, where the model came
from, how it was quantized, how closely it matched PyTorch, and the sha256 of every
file. Loading verifies the hashes and the schema and refuses anything else with a
message that says which check failed.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from .digest import sha256
from .errors import BundleError
from .families import check_frontend, family_of, parse_frontend
from .frontend import FrontEndSpec
from .textio import read_text
from .windows import COMBINE_RULES, WINDOW_MODES, WindowRule

FORMAT_NAME = "edge-detector-bundle"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
ORIENTATION = "higher_is_bonafide"

PathLike = Union[str, os.PathLike]

# Required manifest fields of every family: dotted path -> accepted types. Checked on every load;
# each family adds its own (edge_detector.families, e.g. ONNX_FIELDS for the onnxruntime families).
_NUM = (int, float)
SCHEMA: dict[str, tuple[type, ...]] = {
    "format": (str,),
    "format_version": (int,),
    "model_id": (str,),
    "model.family": (str,),
    "model.variant": (str,),
    "model.config": (dict,),
    "model.parameters": (int,),
    "audio.sample_rate": (int,),
    "audio.min_seconds": _NUM,
    "audio.max_seconds": _NUM,
    "windows.window": (int,),
    "windows.hop": (int,),
    "windows.mode": (str,),
    "windows.combine": (str,),
    "windows.pad": (str,),
    "score.orientation": (str,),
    "score.kind": (str,),
    "calibration.method": (str,),
    "calibration.scale": _NUM,
    "calibration.offset": _NUM,
    "thresholds.accept": _NUM,
    "thresholds.reject": _NUM,
    "thresholds.on": (str,),
    "source_checkpoint": (dict,),
    "files": (dict,),
}


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    h = sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


#: Top-level manifest field holding the sha256 of the manifest's own content (see :func:`manifest_digest`).
MANIFEST_DIGEST_FIELD = "manifest_sha256"


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 (hex) of the manifest's canonical JSON without its ``manifest_sha256`` field.

    Canonical form: keys sorted, no whitespace, UTF-8, no NaN. Every writer of a manifest
    (:func:`write_manifest`: export, calibrate, quantize, fp16, adapt) stores it, and
    :func:`load_bundle` refuses a manifest whose content no longer matches: a hand edit of
    a threshold or of the calibration (which would move what the gate accepts) is caught
    like a changed model file. Tamper-evident, not tamper-proof: whoever can write the
    folder can recompute it, as they can recompute the files' sha256.
    """
    body = {k: v for k, v in manifest.items() if k != MANIFEST_DIGEST_FIELD}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    h = sha256()
    h.update(text.encode("utf-8"))
    return h.hexdigest()


def check_manifest_digest(manifest: dict[str, Any], where: str) -> None:
    """Raise BundleError when the manifest carries a self-checksum its content does not match.

    Manifests written before the field existed carry none and are accepted as they are.
    """
    stored = manifest.get(MANIFEST_DIGEST_FIELD)
    if stored is None:
        return
    try:
        actual = manifest_digest(manifest)
    except ValueError:  # NaN/Infinity cannot be canonical JSON; validate_manifest names the field first
        actual = ""
    if not isinstance(stored, str) or stored != actual:
        raise BundleError(
            f"{where}: the manifest was edited by hand (its {MANIFEST_DIGEST_FIELD} does not match its content); "
            "change calibration or thresholds with `edge-detect calibrate`, or re-export the bundle")


def _get(d: dict[str, Any], dotted: str) -> Any:
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(dotted)
        cur = cur[part]
    return cur


def validate_manifest(manifest: Any, where: str = "manifest") -> None:
    """Raise BundleError naming the first missing or wrong-typed field."""
    if not isinstance(manifest, dict):
        raise BundleError(f"{where}: not a JSON object")
    if manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{where}: not an edge-detector bundle manifest (format={manifest.get('format')!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError(f"{where}: field 'format_version' must be an integer")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{where}: bundle format version {version} is newer than this runtime understands "
            f"({FORMAT_VERSION}); upgrade edge-detector"
        )
    if version < 1:
        raise BundleError(f"{where}: invalid format version {version}")
    _check_fields(manifest, SCHEMA, where)
    try:
        family = family_of(manifest)
    except BundleError as exc:
        raise BundleError(f"{where}: {exc}") from None
    _check_fields(manifest, family.fields, where)
    if manifest["score"]["orientation"] != ORIENTATION:
        raise BundleError(f"{where}: unsupported score orientation {manifest['score']['orientation']!r}")
    if manifest["windows"]["mode"] not in WINDOW_MODES:
        raise BundleError(f"{where}: field 'windows.mode' must be one of {WINDOW_MODES}")
    if manifest["windows"]["combine"] not in COMBINE_RULES:
        raise BundleError(f"{where}: field 'windows.combine' must be one of {COMBINE_RULES}")
    if manifest["windows"]["pad"] != "repeat":
        raise BundleError(f"{where}: unsupported pad rule {manifest['windows']['pad']!r}")
    if family.check is not None:
        family.check(manifest, where)
    if manifest["thresholds"]["reject"] > manifest["thresholds"]["accept"]:
        raise BundleError(f"{where}: thresholds.reject must not exceed thresholds.accept")
    _validate_ranges(manifest, where)
    # Optional ``frontend``: absent/None = the model takes the waveform; else a registered numpy front
    # end the family accepts. An unknown type is refused rather than ignored: feeding raw audio to a
    # model that expects features (or the reverse) would give confident nonsense.
    check_frontend(manifest, where)
    model_file = _get(manifest, family.model_file_field)
    if model_file not in manifest["files"]:
        raise BundleError(f"{where}: the model file {model_file!r} has no entry in 'files'")
    for name, entry in manifest["files"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("bytes"), int):
            raise BundleError(f"{where}: files.{name} needs 'sha256' (string) and 'bytes' (integer)")
        if "/" in name or "\\" in name or name.startswith("."):
            raise BundleError(f"{where}: file name {name!r} must be a plain name inside the bundle")


#: Range rules checked at every load: dotted field -> (test, what the value must be). Fields a
#: family may not have (``onnx.*``, ``parity.*``) are checked when present.
RANGES: dict[str, tuple[Any, str]] = {
    "model.parameters": (lambda v: v >= 0, "zero or more"),
    "audio.sample_rate": (lambda v: v > 0, "a positive number of Hz"),
    "audio.min_seconds": (lambda v: v >= 0, "zero or more seconds"),
    "audio.max_seconds": (lambda v: v > 0, "more than zero seconds"),
    "windows.window": (lambda v: v > 0, "a positive number of samples"),
    "windows.hop": (lambda v: v > 0, "a positive number of samples"),
    # The manifest's orientation is "higher is bona fide": calibration must preserve it.
    "calibration.scale": (lambda v: v > 0, "positive (zero or a negative slope erases or inverts the score; "
                                           "re-run `edge-detect calibrate` with correctly labelled audio)"),
    "onnx.opset": (lambda v: v >= 1, "a positive integer"),
    "parity.tolerance": (lambda v: v >= 0, "zero or more"),
}


def _validate_ranges(manifest: dict[str, Any], where: str) -> None:
    """Values and relations that types alone do not guarantee; BundleError names the field."""
    for key, (ok, what) in RANGES.items():
        try:
            value = _get(manifest, key)
        except KeyError:
            continue  # required fields were checked before; the others are optional
        if isinstance(value, _NUM) and not isinstance(value, bool) and not ok(value):
            raise BundleError(f"{where}: field '{key}' must be {what}, got {value!r}")
    audio, windows = manifest["audio"], manifest["windows"]
    if audio["max_seconds"] < audio["min_seconds"]:
        raise BundleError(f"{where}: field 'audio.max_seconds' ({audio['max_seconds']}) must not be below "
                          f"'audio.min_seconds' ({audio['min_seconds']})")
    if windows["hop"] > windows["window"]:
        raise BundleError(f"{where}: field 'windows.hop' ({windows['hop']}) must not exceed 'windows.window' "
                          f"({windows['window']}), or the windows would skip audio")
    for key in ("target_far", "target_frr"):
        value = manifest["thresholds"].get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, _NUM)
                                  or not 0.0 <= float(value) <= 1.0):
            raise BundleError(f"{where}: field 'thresholds.{key}' must be a rate between 0 and 1, got {value!r}")
    onnx = manifest.get("onnx")
    shape = onnx.get("input_shape") if isinstance(onnx, dict) else None
    if shape is not None and (not isinstance(shape, list) or not shape or not all(
            isinstance(d, str) or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in shape)):
        raise BundleError(f"{where}: field 'onnx.input_shape' must be a list of positive sizes or axis names, "
                          f"got {shape!r}")


def _check_fields(manifest: dict[str, Any], schema: Any, where: str) -> None:
    """Raise BundleError naming the first field of ``schema`` (dotted path → types) missing or wrong-typed."""
    for key, types in schema.items():
        try:
            value = _get(manifest, key)
        except KeyError:
            raise BundleError(f"{where}: missing field '{key}'") from None
        if isinstance(value, bool) or not isinstance(value, types):
            names = "/".join(t.__name__ for t in types)
            raise BundleError(f"{where}: field '{key}' must be {names}, got {type(value).__name__}")
        if types == _NUM and not math.isfinite(float(value)):
            raise BundleError(f"{where}: field '{key}' must be finite")


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    path: Path
    manifest: dict[str, Any]

    @property
    def family(self) -> Any:
        """The registered :class:`edge_detector.families.Family` named by ``model.family``."""
        return family_of(self.manifest)

    @property
    def model_file(self) -> str:
        """Name of the model file inside the bundle (the family says which field names it)."""
        return str(_get(self.manifest, self.family.model_file_field))

    @property
    def model_path(self) -> Path:
        return self.path / self.model_file

    @property
    def model_sha256(self) -> str:
        return self.manifest["files"][self.model_file]["sha256"]

    @property
    def model_id(self) -> str:
        return self.manifest["model_id"]

    @property
    def sample_rate(self) -> int:
        return int(self.manifest["audio"]["sample_rate"])

    @property
    def min_seconds(self) -> float:
        return float(self.manifest["audio"]["min_seconds"])

    @property
    def max_seconds(self) -> float:
        return float(self.manifest["audio"]["max_seconds"])

    @property
    def window_rule(self) -> WindowRule:
        w = self.manifest["windows"]
        return WindowRule(window=w["window"], hop=w["hop"], mode=w["mode"], combine=w["combine"])

    @property
    def frontend(self) -> Any:
        """The spec of the numpy front end the runtime applies before the model (None: the model takes
        the waveform); its type is the registered front end's (FrontEndSpec for ``sinc-fft-numpy``)."""
        return parse_frontend(self.manifest.get("frontend"))

    @property
    def accept_threshold(self) -> float:
        return float(self.manifest["thresholds"]["accept"])

    @property
    def reject_threshold(self) -> float:
        return float(self.manifest["thresholds"]["reject"])

    def calibrate(self, raw_score: float) -> float:
        """Affine map from the raw model score to the calibrated score the thresholds apply to."""
        c = self.manifest["calibration"]
        return float(c["scale"]) * float(raw_score) + float(c["offset"])


def load_bundle(path: PathLike, verify: bool = True) -> Bundle:
    """Read and check a bundle folder (or its manifest file). Raises BundleError."""
    p = Path(path)
    if p.is_file() and p.name == MANIFEST_NAME:
        p = p.parent
    if not p.exists():
        raise BundleError(f"{p}: bundle not found")
    if not p.is_dir():
        raise BundleError(f"{p}: a bundle is a folder holding {MANIFEST_NAME} and the model")
    mpath = p / MANIFEST_NAME
    if not mpath.is_file():
        raise BundleError(f"{p}: no {MANIFEST_NAME} in the bundle")
    try:
        manifest = json.loads(read_text(mpath))  # UTF-8, a leading BOM dropped
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{mpath}: manifest is not valid JSON ({exc})") from None
    validate_manifest(manifest, where=str(mpath))
    check_manifest_digest(manifest, where=str(mpath))
    bundle = Bundle(p, manifest)
    if verify:
        verify_files(bundle)
    return bundle


def verify_files(bundle: Bundle) -> dict[str, str]:
    """Check size and sha256 of every file the manifest lists; raise on the first mismatch.

    Then the bundles it holds (a fusion's members, :attr:`Family.members`), each loaded and
    verified against its own manifest. Returns ``{file name: sha256}`` of the bundle's own files.
    """
    results = {}
    for name, entry in bundle.manifest["files"].items():
        fp = bundle.path / name
        if not fp.is_file():
            raise BundleError(f"{bundle.path}: file {name} listed in the manifest is missing")
        size = fp.stat().st_size
        if size != entry["bytes"]:
            raise BundleError(f"{fp}: size {size} bytes differs from the manifest's {entry['bytes']} (truncated or replaced)")
        digest = sha256_file(fp)
        if digest != entry["sha256"]:
            raise BundleError(f"{fp}: sha256 does not match the manifest (file was changed)")
        results[name] = digest
    bundle.family.members(bundle)  # loads (and so verifies) every member; BundleError names the one that fails
    return results


def copy_bundle_files(bundle: Bundle, dest: PathLike, with_manifest: bool = True) -> None:
    """Copy the files ``bundle``'s manifest lists (and ``manifest.json`` unless ``with_manifest`` is False)
    into the folder ``dest`` (created), then its member bundles (a fusion's) into sub-folders of the
    same names, manifests included. Nothing else of the source folder is copied."""
    import shutil

    d = Path(dest)
    d.mkdir(parents=True, exist_ok=True)
    for name in bundle.manifest["files"]:
        shutil.copy2(bundle.path / name, d / name)
    if with_manifest:
        shutil.copy2(bundle.path / MANIFEST_NAME, d / MANIFEST_NAME)
    for member in bundle.family.members(bundle):
        copy_bundle_files(member, d / member.path.name)


def file_entry(path: PathLike) -> dict[str, Any]:
    p = Path(path)
    return {"sha256": sha256_file(p), "bytes": p.stat().st_size}


def write_manifest(bundle_dir: PathLike, manifest: dict[str, Any]) -> Path:
    """Hash every file named in ``manifest['files']``, validate, seal and write ``manifest.json``.

    Sealing stores :func:`manifest_digest` as ``manifest_sha256``.
    """
    d = Path(bundle_dir)
    manifest = dict(manifest)
    manifest["files"] = {name: file_entry(d / name) for name in manifest["files"]}
    validate_manifest(manifest, where=str(d / MANIFEST_NAME))
    manifest[MANIFEST_DIGEST_FIELD] = manifest_digest(manifest)
    out = d / MANIFEST_NAME
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(out)
    return out


def default_manifest(
    *,
    model_id: str,
    model_config: dict[str, Any],
    parameters: int,
    onnx_file: str = "model.onnx",
    variant: str = "fp32",
    opset: int = 17,
    source_checkpoint: Optional[dict[str, Any]] = None,
    window_rule: Optional[WindowRule] = None,
    sample_rate: int = 16000,
    frontend: Optional[FrontEndSpec] = None,
) -> dict[str, Any]:
    """A complete manifest skeleton with uncalibrated thresholds (posterior 0.5).

    With ``frontend`` the graph takes pooled filter-bank features (input ``features``,
    ``[batch, filters, pooled]``) and the runtime computes them in numpy from the window.
    """
    rule = window_rule or WindowRule()
    if frontend is not None:
        onnx_input, input_shape = "features", ["batch", *frontend.output_shape(rule.window)]
    else:
        onnx_input, input_shape = "waveform", ["batch", rule.window]
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_id": model_id,
        "model": {"family": "RawNet2", "variant": variant, "config": model_config, "parameters": int(parameters)},
        "onnx": {"file": onnx_file, "input": onnx_input, "output": "score", "opset": opset,
                 "graph_optimization_level": "all", "input_shape": input_shape},
        "frontend": frontend.to_manifest() if frontend is not None else None,
        "audio": {"sample_rate": sample_rate, "channels": "mono (mean of channels)", "min_seconds": 0.5,
                  "max_seconds": 600.0, "normalisation": "none", "resampler": "edge_detector.resample"},
        "windows": {"window": rule.window, "hop": rule.hop, "mode": rule.mode, "combine": rule.combine,
                    "pad": "repeat"},
        "score": {"orientation": ORIENTATION, "kind": "log_softmax_bonafide",
                  "description": "log P(bona fide) from the model; higher = more bona fide"},
        "calibration": {"method": "none", "scale": 1.0, "offset": -math.log(0.5),
                        "description": "uncalibrated: calibrated = log P(bona fide) - log 0.5; run `edge-detect calibrate`"},
        "thresholds": {"accept": 0.0, "reject": 0.0, "on": "calibrated",
                       "rule": "accept if calibrated >= accept; reject if calibrated < reject; else uncertain"},
        "source_checkpoint": source_checkpoint or {},
        "quantization": None,
        "parity": {"tolerance": 1e-4},
        "evaluation": None,
        "files": {onnx_file: {}},
    }


def publish(staging: PathLike, out: PathLike) -> None:
    """Move a fully written staging folder to ``out``, replacing it only if it is one of our bundles.

    Writers build a bundle in a sibling temporary folder and publish it only once it is
    complete and hashed, so a failed export/quantization never leaves a half bundle.
    Anything at ``out`` that is not a bundle (a user's folder, a file) is refused with
    OutputRefusedError (exit 2): see :mod:`edge_detector.output_dir`.
    """
    from .output_dir import publish_dir

    publish_dir(staging, out)
