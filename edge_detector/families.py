"""The registry of model families and front ends: how the runtime turns a manifest into a scorer.

The bundle manifest is the only contract between the training side and the device. Two
of its fields choose the code that runs: ``model.family`` (which model: RawNet2, LFCC-GMM
...) and ``frontend.type`` (which numpy feature extractor runs before the model, or
``null`` when the model takes the waveform). Everything that depends on them goes
through :func:`get_family` / :func:`get_frontend` here, never through ``if family == ...``
in commands, so a new family is one :class:`Family` entry plus its own module.

Adding a family (example: an ONNX graph with its own numpy front end)::

    register_frontend(FrontEnd(type="my-frontend-numpy", parse=MySpec.from_manifest,
                               check=my_spec_fits_manifest))
    register_family(Family(name="MyNet", make_scorer=onnx_scorer, fields=ONNX_FIELDS,
                           model_file_field="onnx.file", frontends=("my-frontend-numpy",),
                           summary=lambda m: f"my sizes {m['model']['config']}"))

A scorer (what ``make_scorer(bundle, settings, max_batch)`` returns) needs only:

* ``score(batch) -> np.ndarray``: raw scores ``[n]`` float32 for ``[n, window]`` float32
  windows at the bundle's sample rate, higher = more bona fide (``score.orientation``);
* ``max_batch`` (int, settable): at most this many windows per inner call (memory bound);
* ``providers`` (list of str): what actually runs it, first = the one used
  (onnxruntime execution providers, or ``["numpy"]``).

Optional: ``score_signal(samples, rule) -> (scores, starts)`` (scores the rule's windows of a
1-D signal, e.g. sharing front-end work between overlapping windows), and
``features(batch) -> [n, k]`` / ``features_signal(samples, rule) -> ([n_windows, k], starts)``:
the ``k`` scores `calibrate` fits on (a fusion's members' calibrated scores); without them
the one raw score is the feature.

Factories are registered as small functions that import their module lazily, so this
module imports nothing heavy and :mod:`edge_detector.bundle` can use it for validation.
Every lookup failure is a :class:`~edge_detector.errors.BundleError` (exit code 7)
naming what this runtime knows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Protocol

import numpy as np

from .errors import BundleError

if TYPE_CHECKING:  # imported for annotations only (bundle.py imports this module)
    from .bundle import Bundle
    from .session import SessionSettings

_NUM = (int, float)
Manifest = Mapping[str, Any]


class Scorer(Protocol):
    """What the Detector, calibration and benchmarks call (see the module docstring)."""

    max_batch: int

    @property
    def providers(self) -> list[str]: ...

    def score(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class FrontEnd:
    """A numpy front end the device runs before the model, keyed by ``manifest["frontend"]["type"]``.

    ``parse(entry)`` turns the manifest's ``frontend`` object into the front end's spec
    (BundleError when malformed); ``check(spec, manifest, where)`` raises BundleError when
    the spec does not fit the rest of the manifest (sample rate, window length ...).
    """

    type: str
    parse: Callable[[Mapping[str, Any]], Any]
    check: Optional[Callable[[Any, Manifest, str], None]] = None


@dataclass(frozen=True)
class Family:
    """One model family, keyed by ``manifest["model"]["family"]``.

    - ``make_scorer(bundle, settings, max_batch)``: a :class:`Scorer` for a verified bundle.
    - ``fields``: manifest fields this family requires beyond the common schema
      (dotted path → accepted types), checked with the same messages as the common ones.
    - ``model_file_field``: dotted path of the field naming the model file (its sha256 is
      the result's ``model_sha256``; its size is the benchmark's model size).
    - ``frontends``: the ``frontend.type`` values this family accepts (``None`` = no front end).
    - ``check(manifest, where)``: optional family-specific checks (raise BundleError).
    - ``summary(manifest)``: one line describing the model's sizes for ``edge-detect info``.
    - ``members(bundle)``: the bundles held inside this one (a fusion's members, each in
      its own sub-folder, each loaded and verified against its own manifest); ``()`` for
      a single model. :func:`edge_detector.bundle.verify_files` verifies them with the
      bundle, and writers that copy a bundle copy them.
    - ``fit_calibration(manifest, features, labels, fitted_on)``: what `calibrate` fits on the
      scorer's ``features`` ``[n, k]`` of labelled files; returns (manifest sections to
      replace, calibrated scores ``[n]``, a summary for the log). None: the affine logistic
      calibration of the one raw score (edge_detector.commands.calibrate).
    """

    name: str
    make_scorer: Callable[["Bundle", "SessionSettings", int], Scorer]
    fields: Mapping[str, tuple[type, ...]]
    model_file_field: str
    frontends: tuple[Optional[str], ...] = (None,)
    check: Optional[Callable[[Manifest, str], None]] = None
    summary: Callable[[Manifest], str] = lambda m: ", ".join(f"{k} {v}" for k, v in m["model"]["config"].items())
    members: Callable[["Bundle"], tuple["Bundle", ...]] = lambda bundle: ()
    fit_calibration: Optional[Callable[..., tuple[dict[str, Any], np.ndarray, dict[str, Any]]]] = None


_FAMILIES: dict[str, Family] = {}
_FRONTENDS: dict[str, FrontEnd] = {}


def register_family(family: Family) -> Family:
    """Add (or replace) a family; returns it."""
    _FAMILIES[family.name] = family
    return family


def register_frontend(frontend: FrontEnd) -> FrontEnd:
    """Add (or replace) a front end; returns it."""
    _FRONTENDS[frontend.type] = frontend
    return frontend


def family_names() -> tuple[str, ...]:
    return tuple(sorted(_FAMILIES))


def frontend_types() -> tuple[str, ...]:
    return tuple(sorted(_FRONTENDS))


def get_family(name: Any) -> Family:
    """The family registered as ``name``; BundleError naming the known ones otherwise."""
    if not isinstance(name, str) or name not in _FAMILIES:
        raise BundleError(f"unknown model family {name!r}; this runtime knows {list(family_names())}")
    return _FAMILIES[name]


def get_frontend(kind: Any) -> FrontEnd:
    """The front end registered as ``kind``; BundleError naming the known ones otherwise."""
    if not isinstance(kind, str) or kind not in _FRONTENDS:
        raise BundleError(f"unknown front-end type {kind!r}; this runtime knows {list(frontend_types())}")
    return _FRONTENDS[kind]


def family_of(manifest: Manifest) -> Family:
    """The family a manifest names in ``model.family``."""
    model = manifest.get("model")
    return get_family(model.get("family") if isinstance(model, Mapping) else None)


def parse_frontend(entry: Any) -> Any:
    """``manifest["frontend"]`` → its front end's spec (None stays None). Raises BundleError."""
    if entry is None:
        return None
    if not isinstance(entry, Mapping):
        raise BundleError(f"field 'frontend' must be an object or null, got {type(entry).__name__}")
    return get_frontend(entry.get("type")).parse(entry)


def check_frontend(manifest: Manifest, where: str) -> None:
    """The manifest's front end is known, accepted by its family, well formed and fits the manifest."""
    family = family_of(manifest)
    entry = manifest.get("frontend")
    kind = entry.get("type") if isinstance(entry, Mapping) else None
    try:
        spec = parse_frontend(entry)
    except BundleError as exc:
        raise BundleError(f"{where}: {exc}") from None
    if kind not in family.frontends:
        raise BundleError(f"{where}: family {family.name} takes front end(s) {list(family.frontends)}, "
                          f"the manifest states {kind!r}")
    if spec is not None:
        check = get_frontend(kind).check
        if check is not None:
            check(spec, manifest, where)


# --- the ONNX-graph families (RawNet2) -------------------------------------------------------

#: Fields every family whose model is an ONNX graph run by onnxruntime requires.
ONNX_FIELDS: dict[str, tuple[type, ...]] = {
    "onnx.file": (str,),
    "onnx.input": (str,),
    "onnx.output": (str,),
    "onnx.opset": (int,),
    "onnx.graph_optimization_level": (str,),
    "parity.tolerance": _NUM,
}
GRAPH_LEVELS = ("disabled", "basic", "extended", "all")


def check_onnx(manifest: Manifest, where: str) -> None:
    """The graph optimisation level is one onnxruntime knows."""
    if manifest["onnx"]["graph_optimization_level"] not in GRAPH_LEVELS:
        raise BundleError(f"{where}: field 'onnx.graph_optimization_level' must be one of {GRAPH_LEVELS}")


def onnx_scorer(bundle: "Bundle", settings: "SessionSettings", max_batch: int) -> Scorer:
    """onnxruntime session on ``onnx.file`` behind the manifest's numpy front end (if any)."""
    from .detector import WindowScorer
    from .model_io import check_model_io
    from .session import make_session

    m = bundle.manifest
    session = make_session(bundle.model_path, settings, default_level=m["onnx"]["graph_optimization_level"])
    check_model_io(session, m, bundle.frontend, where=str(bundle.model_path))
    scorer = WindowScorer(session, m["onnx"]["input"], m["onnx"]["output"], bundle.frontend, max_batch,
                          where=str(bundle.model_path))
    from .head import with_adapted_head  # a bundle from `edge-detect adapt` scores through its own final layer

    return with_adapted_head(bundle, scorer)


def _sinc_parse(entry: Mapping[str, Any]) -> Any:
    from .frontend import FrontEndSpec

    return FrontEndSpec.from_manifest(entry)


def _sinc_check(spec: Any, manifest: Manifest, where: str) -> None:
    if int(spec.sample_rate) != int(manifest["audio"]["sample_rate"]):
        raise BundleError(f"{where}: frontend.sample_rate {spec.sample_rate} differs from audio.sample_rate "
                          f"{manifest['audio']['sample_rate']}")
    if spec.output_length(manifest["windows"]["window"]) <= 0:
        raise BundleError(f"{where}: window of {manifest['windows']['window']} samples is too short for "
                          f"a {spec.taps}-tap front end with pool {spec.pool}")


def _rawnet2_summary(m: Manifest) -> str:
    cfg = m["model"]["config"]
    return (f"sinc {cfg.get('sinc_filters')}, channels {cfg.get('stage1_channels')}/{cfg.get('stage2_channels')}, "
            f"GRU {cfg.get('gru_hidden')}x{cfg.get('gru_layers')}, fc1 {cfg.get('fc1_dim')}")


register_frontend(FrontEnd(type="sinc-fft-numpy", parse=_sinc_parse, check=_sinc_check))
register_family(Family(name="RawNet2", make_scorer=onnx_scorer, fields=ONNX_FIELDS, model_file_field="onnx.file",
                       frontends=(None, "sinc-fft-numpy"), check=check_onnx, summary=_rawnet2_summary))


# --- AASIST / AASIST-L (export/aasist.py): ONNX graphs run like RawNet2's; their numpy front end is the
# same sinc stage (69 of 70 bands, |x|, max-pool 3 over time; the graph pools the filter axis) ----------


def _aasist_summary(m: Manifest) -> str:
    cfg = m["model"]["config"]
    return (f"sinc {cfg.get('sinc_filters')}x{cfg.get('sinc_kernel')}, encoder {cfg.get('encoder')}, "
            f"GAT dims {cfg.get('gat_dims')}, pool ratios {cfg.get('pool_ratios')}")


for _aasist in ("AASIST", "AASIST-L"):
    register_family(Family(name=_aasist, make_scorer=onnx_scorer, fields=ONNX_FIELDS, model_file_field="onnx.file",
                           frontends=(None, "sinc-fft-numpy"), check=check_onnx, summary=_aasist_summary))


# --- LFCC-GMM (ASVspoof 2021 baseline): numpy LFCC front end + two diagonal GMMs in an npz ----------

#: Fields an LFCC-GMM bundle requires (the GMM file's sha256 is in ``files`` like every file).
GMM_FIELDS: dict[str, tuple[type, ...]] = {
    "gmm.file": (str,),
    "gmm.components": (int,),
    "gmm.dims": (int,),
}


def _lfcc_gmm_scorer(bundle: "Bundle", settings: "SessionSettings", max_batch: int) -> Scorer:
    from .gmm import lfcc_gmm_scorer

    return lfcc_gmm_scorer(bundle, settings, max_batch)


def _lfcc_parse(entry: Mapping[str, Any]) -> Any:
    from .lfcc import LFCCSpec

    return LFCCSpec.from_manifest(entry)


def _lfcc_check(spec: Any, manifest: Manifest, where: str) -> None:
    from .lfcc import check_lfcc

    check_lfcc(spec, manifest, where)
    if int(manifest["gmm"]["dims"]) != spec.dims:
        raise BundleError(f"{where}: gmm.dims {manifest['gmm']['dims']} differs from the LFCC front end's {spec.dims}")


def _lfcc_gmm_summary(m: Manifest) -> str:
    f = m.get("frontend") or {}
    return (f"LFCC {f.get('cepstra')} cepstra x3 ({f.get('filters')} filters, {f.get('low_hz')}-{f.get('high_hz')} Hz), "
            f"2 diagonal GMMs x {m['gmm']['components']} components")


register_frontend(FrontEnd(type="lfcc-numpy", parse=_lfcc_parse, check=_lfcc_check))
register_family(Family(name="LFCC-GMM", make_scorer=_lfcc_gmm_scorer, fields=GMM_FIELDS, model_file_field="gmm.file",
                       frontends=("lfcc-numpy",), summary=_lfcc_gmm_summary))


# --- fusion (edge_detector/fusion.py): member bundles in sub-folders, weighted sum of their calibrated scores -----

def _fusion_scorer(bundle: "Bundle", settings: "SessionSettings", max_batch: int) -> Scorer:
    from .fusion import fusion_scorer

    return fusion_scorer(bundle, settings, max_batch)


def _fusion_check(manifest: Manifest, where: str) -> None:
    from .fusion import check_fusion_manifest

    check_fusion_manifest(manifest, where)


def _fusion_members(bundle: "Bundle") -> tuple["Bundle", ...]:
    from .fusion import load_members

    return load_members(bundle)


def _fusion_fit(*args: Any, **kwargs: Any) -> tuple[dict[str, Any], np.ndarray, dict[str, Any]]:
    from .fusion import fit_fusion

    return fit_fusion(*args, **kwargs)


def _fusion_summary(m: Manifest) -> str:
    f = m["fusion"]
    terms = " + ".join(f"{w:.4g} * llr[{name}]" for name, w in zip(f["members"], f["weights"]))
    ids = {e.get("folder"): e.get("model_id") for e in m["model"]["config"].get("members", []) if isinstance(e, dict)}
    inside = ", ".join(f"{name} = {ids.get(name)}" for name in f["members"])
    return f"fusion of {len(f['members'])} bundles: {terms} (+ calibration offset); {inside}"


#: Fields a fusion bundle requires (checked further by :func:`edge_detector.fusion.check_fusion_manifest`).
FUSION_FIELDS: dict[str, tuple[type, ...]] = {
    "fusion.file": (str,),
    "fusion.rule": (str,),
    "fusion.members": (list,),
    "fusion.weights": (list,),
}

register_family(Family(name="fusion", make_scorer=_fusion_scorer, fields=FUSION_FIELDS, model_file_field="fusion.file",
                       frontends=(None,), check=_fusion_check, summary=_fusion_summary, members=_fusion_members,
                       fit_calibration=_fusion_fit))
