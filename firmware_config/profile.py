"""Device profiles: what differs per device, read from TOML and validated on load.

A profile says how to run the bundle on one kind of device (threads, spinning, graph
level, execution providers and their options, which bundle variant) and how the
device-side loop behaves (microphone, streaming hop, gate policy). Everything that
affects a *decision's meaning* stays in the bundle; a profile only changes how fast
and where it runs, and how the gate treats an uncertain result.

Validation is strict on purpose: a typo in a profile on a device in the field would
otherwise be silently ignored (e.g. ``intra_threads = 1`` leaving onnxruntime to spin
on every core of a Pi). Every problem raises :class:`ProfileError` with one message
naming the file and the dotted key, and suggests the nearest known key for typos.

This module imports neither onnxruntime nor torch/onnx/scipy: loading a profile must
be cheap and possible before the runtime is even installed (``doctor`` reports on a
broken install).
"""
from __future__ import annotations

import difflib
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from edge_detector.errors import ProfileError
from edge_detector.textio import read_text

if TYPE_CHECKING:  # only for type hints: importing session pulls in onnxruntime
    from edge_detector.session import SessionSettings

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"

#: Bundle variants a profile may ask for. "int8-symmetric" is the QDQ model with symmetric
#: (zero-point 0) activations and weights that TensorRT can build an int8 engine from; the
#: plain "int8" variant is onnxruntime's CPU default (asymmetric activations).
VARIANTS = ("fp32", "fp16", "int8", "int8-symmetric")
GRAPH_LEVELS = ("disabled", "basic", "extended", "all")
COMBINE_RULES = ("bundle", "mean", "median", "min")
UNCERTAIN_POLICIES = ("report", "reject", "retry")
ARCHES = ("any", "aarch64", "x86_64")
#: CPU features the doctor knows how to detect (see edge_detector.cpu).
CPU_FEATURES = ("asimd", "asimddp", "asimdhp", "i8mm", "sve", "avx2", "avx512f", "avx512_vnni", "avx_vnni", "fma")

#: Every execution provider name onnxruntime defines (a build offers a subset). A name not
#: here is a typo, not a provider this build happens to lack.
KNOWN_PROVIDERS = (
    "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider", "XnnpackExecutionProvider",
    "ACLExecutionProvider", "ArmNNExecutionProvider", "OpenVINOExecutionProvider", "DnnlExecutionProvider",
    "ROCMExecutionProvider", "MIGraphXExecutionProvider", "CoreMLExecutionProvider", "NnapiExecutionProvider",
    "QNNExecutionProvider", "DmlExecutionProvider", "CANNExecutionProvider", "VitisAIExecutionProvider",
    "RknpuExecutionProvider", "AzureExecutionProvider", "WebGpuExecutionProvider",
)
#: Provider options we validate by name (others' options are passed through unchecked).
PROVIDER_OPTIONS: dict[str, dict[str, tuple[type, ...]]] = {
    "CPUExecutionProvider": {"use_arena": (bool,)},
    "CUDAExecutionProvider": {
        "device_id": (int,), "gpu_mem_limit": (int,), "arena_extend_strategy": (str,),
        "cudnn_conv_algo_search": (str,), "do_copy_in_default_stream": (bool,),
        "cudnn_conv_use_max_workspace": (bool,), "cudnn_conv1d_pad_to_nc1d": (bool,), "enable_cuda_graph": (bool,),
        "use_tf32": (bool,), "prefer_nhwc": (bool,), "tunable_op_enable": (bool,), "tunable_op_tuning_enable": (bool,),
    },
    "TensorrtExecutionProvider": {
        "device_id": (int,), "trt_max_workspace_size": (int,), "trt_fp16_enable": (bool,), "trt_int8_enable": (bool,),
        "trt_int8_use_native_calibration_table": (bool,), "trt_int8_calibration_table_name": (str,),
        "trt_engine_cache_enable": (bool,), "trt_engine_cache_path": (str,), "trt_engine_cache_prefix": (str,),
        "trt_timing_cache_enable": (bool,), "trt_timing_cache_path": (str,), "trt_builder_optimization_level": (int,),
        "trt_max_partition_iterations": (int,), "trt_min_subgraph_size": (int,), "trt_dla_enable": (bool,),
        "trt_dla_core": (int,), "trt_dump_subgraphs": (bool,), "trt_layer_norm_fp32_fallback": (bool,),
        "trt_force_sequential_engine_build": (bool,), "trt_context_memory_sharing_enable": (bool,),
        "trt_detailed_build_log": (bool,), "trt_cuda_graph_enable": (bool,), "trt_auxiliary_streams": (int,),
        "trt_profile_min_shapes": (str,), "trt_profile_max_shapes": (str,), "trt_profile_opt_shapes": (str,),
        "trt_build_heuristics_enable": (bool,), "trt_sparsity_enable": (bool,), "trt_op_types_to_exclude": (str,),
    },
}
#: Options that are filesystem paths: ``~`` and ``$VARS`` are expanded, relative paths are
#: taken relative to the profile file (so a profile and its engine cache can travel together).
PATH_OPTIONS = ("trt_engine_cache_path", "trt_timing_cache_path")


class ProfileWarning(UserWarning):
    """Something in the profile cannot be honoured here; the runtime carries on (visibly)."""


@dataclass(frozen=True)
class ProviderConfig:
    """One execution provider, in the order onnxruntime should try them."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def ort_spec(self) -> Union[str, tuple[str, dict[str, str]]]:
        """The (name, options) form onnxruntime takes; option values as strings ("True"/"False")."""
        if not self.options:
            return self.name
        return self.name, {k: str(v) for k, v in self.options.items()}


@dataclass(frozen=True)
class MicConfig:
    """How to open the microphone (the audio is resampled to the bundle's rate in numpy)."""

    rate: int = 16000
    channels: int = 1
    buffer_frames: int = 1024
    device: Optional[Union[str, int]] = None  # None = system default; str = name substring; int = index


@dataclass(frozen=True)
class StreamConfig:
    """Streaming: how far the analysis window advances between decisions."""

    hop_seconds: float = 1.0


@dataclass(frozen=True)
class GateConfig:
    """The gate's policy: how much speech, how many windows, what to do when unsure."""

    min_speech_seconds: float = 1.0
    windows: int = 1  # windows combined into one decision
    combine: str = "bundle"  # "bundle" = the manifest's rule
    uncertain: str = "report"  # report (exit 4) | reject (exit 3, fail closed) | retry
    retries: int = 0  # extra captures when uncertain == "retry"


@dataclass(frozen=True)
class Profile:
    """A validated device profile (see firmware_config/profiles/*.toml for the format)."""

    name: str
    source: Path
    description: str = ""
    arch: str = "any"
    cpu_features: tuple[str, ...] = ()
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    allow_spinning: bool = False
    graph_optimization_level: Optional[str] = None
    providers: tuple[ProviderConfig, ...] = (ProviderConfig("CPUExecutionProvider"),)
    variant: str = "fp32"
    mic: MicConfig = field(default_factory=MicConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    gate: GateConfig = field(default_factory=GateConfig)

    @property
    def provider_names(self) -> list[str]:
        return [p.name for p in self.providers]

    def session_settings(self) -> "SessionSettings":
        """The onnxruntime settings this profile asks for (a fresh, mutable object)."""
        from edge_detector.session import SessionSettings

        return SessionSettings(
            intra_op_threads=self.intra_op_threads,
            inter_op_threads=self.inter_op_threads,
            allow_spinning=self.allow_spinning,
            graph_optimization_level=self.graph_optimization_level,
            providers=[p.ort_spec() for p in self.providers],
        )

    def variant_candidates(self, default_path: Union[str, os.PathLike]) -> list[Path]:
        """Where a bundle of this profile's variant may lie, next to the default bundle."""
        base = Path(default_path)
        return [base.with_name(f"{base.name}-{self.variant}"), base / self.variant]

    def resolve_bundle(self, default_path: Union[str, os.PathLike]) -> Path:
        """The bundle of the variant this profile wants, else ``default_path`` with a warning.

        The default bundle is used as is when its manifest already states the wanted
        variant; otherwise a sibling ``<default>-<variant>`` (or ``<default>/<variant>``)
        whose manifest states it is used. Falling back is never silent: the device would
        otherwise run, say, fp32 on a Jetson profile tuned for fp16 and nobody would know.
        """
        base = Path(default_path)
        if _bundle_variant(base) == self.variant:
            return base
        for cand in self.variant_candidates(base):
            found = _bundle_variant(cand)
            if found == self.variant:
                return cand
        have = _bundle_variant(base)
        warnings.warn(
            f"profile {self.name!r} wants bundle variant {self.variant!r} but none was found next to {base} "
            f"(looked for {', '.join(str(c) for c in self.variant_candidates(base))}); using {base}"
            f"{f' (variant {have!r})' if have else ''}",
            ProfileWarning,
            stacklevel=2,
        )
        return base


def _bundle_variant(path: Path) -> Optional[str]:
    """The manifest's model.variant, or None when there is no readable bundle at ``path``."""
    import json

    try:
        manifest = json.loads(read_text(path / "manifest.json"))
        variant = manifest["model"]["variant"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return variant if isinstance(variant, str) else None


# ---------------------------------------------------------------------------- schema
# A field spec: (accepted types, check(value) -> error text or None, default). Tables are dicts.
Check = Optional[Callable[[Any], Optional[str]]]
_NUM = (int, float)


def _positive(v: Any) -> Optional[str]:
    return None if v > 0 else f"must be > 0, got {v}"


def _non_negative(v: Any) -> Optional[str]:
    return None if v >= 0 else f"must be >= 0, got {v}"


def _one_of(options: tuple[str, ...]) -> Callable[[Any], Optional[str]]:
    def check(v: Any) -> Optional[str]:
        if v in options:
            return None
        close = difflib.get_close_matches(str(v), options, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"must be one of {', '.join(options)}; got {v!r}{hint}"

    return check


def _range(lo: float, hi: float) -> Callable[[Any], Optional[str]]:
    def check(v: Any) -> Optional[str]:
        return None if lo <= v <= hi else f"must be between {lo:g} and {hi:g}, got {v}"

    return check


def _features(v: Any) -> Optional[str]:
    for item in v:
        if not isinstance(item, str):
            return f"must be a list of strings, got an item of type {_type_name(item)}"
        if item not in CPU_FEATURES:
            return _one_of(CPU_FEATURES)(item)
    return None


SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], Check]]] = {
    "profile": {
        "name": ((str,), None),
        "description": ((str,), None),
        "arch": ((str,), _one_of(ARCHES)),
        "cpu_features": ((list,), _features),
    },
    "session": {
        # 0 would mean "onnxruntime's default = every core", which on a shared device is
        # exactly what a profile exists to prevent: a profile must name a count.
        "intra_op_threads": ((int,), _range(1, 256)),
        "inter_op_threads": ((int,), _range(1, 256)),
        "allow_spinning": ((bool,), None),
        "graph_optimization_level": ((str,), _one_of(GRAPH_LEVELS)),
    },
    "bundle": {
        "variant": ((str,), _one_of(VARIANTS)),
    },
    "mic": {
        "rate": ((int,), _range(8000, 192000)),
        "channels": ((int,), _range(1, 32)),
        "buffer_frames": ((int,), _positive),
        "device": ((str, int), None),
    },
    "stream": {
        "hop_seconds": (_NUM, _positive),
    },
    "gate": {
        "min_speech_seconds": (_NUM, _non_negative),
        "windows": ((int,), _range(1, 64)),
        "combine": ((str,), _one_of(COMBINE_RULES)),
        "uncertain": ((str,), _one_of(UNCERTAIN_POLICIES)),
        "retries": ((int,), _range(0, 10)),
    },
}
TOP_LEVEL = tuple(SCHEMA) + ("providers",)
PROVIDER_KEYS = ("name", "options")


def _type_name(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}.get(
        type(v), type(v).__name__
    )


def _types_text(types: tuple[type, ...]) -> str:
    names = {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string",
             list: "an array", dict: "a table"}
    if types == _NUM:
        return "a number"
    return " or ".join(names.get(t, t.__name__) for t in types)


def _type_ok(v: Any, types: tuple[type, ...]) -> bool:
    # TOML booleans are Python bools, which are also ints: never let true pass as 1.
    if isinstance(v, bool):
        return bool in types
    return isinstance(v, types)


class _Where:
    """Formats the one error message: file, dotted key, problem."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, problem: str) -> ProfileError:
        return ProfileError(f"{self.source}: key '{key}' {problem}")

    def unknown(self, key: str, known: Any) -> ProfileError:
        leaf = key.rsplit(".", 1)[-1]
        close = difflib.get_close_matches(leaf, list(known), n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"
        return ProfileError(f"{self.source}: unknown key '{key}'{hint}")


def _check_table(where: _Where, prefix: str, table: Any, spec: dict[str, tuple[tuple[type, ...], Check]]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise where.error(prefix, f"must be a table ([{prefix}]), got {_type_name(table)}")
    for key, value in table.items():
        dotted = f"{prefix}.{key}"
        if key not in spec:
            raise where.unknown(dotted, spec)
        types, check = spec[key]
        if not _type_ok(value, types):
            raise where.error(dotted, f"must be {_types_text(types)}, got {_type_name(value)} {value!r}")
        problem = check(value) if check else None
        if problem:
            raise where.error(dotted, problem)
    return table


def _expand_path(value: str, base: Path) -> str:
    p = Path(os.path.expandvars(os.path.expanduser(value)))
    return str(p if p.is_absolute() else (base / p))


def _check_providers(where: _Where, raw: Any, base: Path) -> tuple[ProviderConfig, ...]:
    if not isinstance(raw, list) or not raw:
        raise where.error("providers", "must be a non-empty array of tables ([[providers]] with name = \"...\")")
    out: list[ProviderConfig] = []
    for i, entry in enumerate(raw):
        key = f"providers[{i}]"
        if not isinstance(entry, dict):
            raise where.error(key, f"must be a table with 'name', got {_type_name(entry)}")
        for k in entry:
            if k not in PROVIDER_KEYS:
                raise where.unknown(f"{key}.{k}", PROVIDER_KEYS)
        name = entry.get("name")
        if not isinstance(name, str):
            raise where.error(f"{key}.name", "is required and must be a string such as \"CPUExecutionProvider\"")
        if name not in KNOWN_PROVIDERS:
            close = difflib.get_close_matches(name, KNOWN_PROVIDERS, n=1, cutoff=0.4)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise where.error(f"{key}.name", f"names unknown execution provider {name!r}{hint}")
        if name in (p.name for p in out):
            raise where.error(f"{key}.name", f"repeats provider {name!r}")
        options = entry.get("options", {})
        if not isinstance(options, dict):
            raise where.error(f"{key}.options", f"must be a table, got {_type_name(options)}")
        known = PROVIDER_OPTIONS.get(name)
        clean: dict[str, Any] = {}
        for opt, value in options.items():
            okey = f"{key}.options.{opt}"
            if known is not None:
                if opt not in known:
                    raise where.unknown(okey, known)
                if not _type_ok(value, known[opt]):
                    raise where.error(okey, f"must be {_types_text(known[opt])}, got {_type_name(value)} {value!r}")
            elif not isinstance(value, (str, int, float, bool)):
                raise where.error(okey, f"must be a string, number or boolean, got {_type_name(value)}")
            if isinstance(value, int) and not isinstance(value, bool) and value < 0:
                raise where.error(okey, f"must be >= 0, got {value}")
            clean[opt] = _expand_path(value, base) if opt in PATH_OPTIONS else value
        out.append(ProviderConfig(name, clean))
    return tuple(out)


def parse_profile(data: dict[str, Any], source: Union[str, Path], name: Optional[str] = None) -> Profile:
    """Validate an already-parsed TOML document and build the Profile. Raises ProfileError."""
    src = Path(source)
    where = _Where(str(source))
    for key in data:
        if key not in TOP_LEVEL:
            raise where.unknown(key, TOP_LEVEL)
    tables = {t: _check_table(where, t, data.get(t, {}), SCHEMA[t]) for t in SCHEMA}
    providers = _check_providers(where, data["providers"], src.parent) if "providers" in data else (
        ProviderConfig("CPUExecutionProvider"),)
    meta, sess, bundle = tables["profile"], tables["session"], tables["bundle"]
    variant = bundle.get("variant", "fp32")
    for i, p in enumerate(providers):
        if p.name == "TensorrtExecutionProvider" and p.options.get("trt_int8_enable") and variant != "int8-symmetric":
            raise where.error(
                f"providers[{i}].options.trt_int8_enable",
            f"needs bundle.variant = \"int8-symmetric\" (TensorRT builds int8 engines only from symmetric QDQ "
                f"models), got {variant!r}",
            )
    gate = tables["gate"]
    if gate.get("uncertain", "report") != "retry" and gate.get("retries", 0):
        raise where.error("gate.retries", "only applies with gate.uncertain = \"retry\"")
    return Profile(
        name=meta.get("name", name or src.stem),
        source=src,
        description=meta.get("description", ""),
        arch=meta.get("arch", "any"),
        cpu_features=tuple(meta.get("cpu_features", ())),
        intra_op_threads=sess.get("intra_op_threads", 1),
        inter_op_threads=sess.get("inter_op_threads", 1),
        allow_spinning=sess.get("allow_spinning", False),
        graph_optimization_level=sess.get("graph_optimization_level"),
        providers=providers,
        variant=variant,
        mic=MicConfig(**tables["mic"]),
        stream=StreamConfig(**{k: float(v) for k, v in tables["stream"].items()}),
        gate=GateConfig(**{k: (float(v) if k == "min_speech_seconds" else v) for k, v in gate.items()}),
    )


# ---------------------------------------------------------------------------- loading
def list_profiles() -> list[str]:
    """Names of the profiles shipped with the package."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def profile_path(name_or_path: Union[str, os.PathLike]) -> Path:
    """A shipped name → its file; anything that looks like a path → that path."""
    raw = str(name_or_path)
    p = Path(raw)
    looks_like_path = p.suffix == ".toml" or os.sep in raw or "/" in raw or p.is_file()
    if looks_like_path:
        if not p.is_file():
            raise ProfileError(f"{p}: profile file not found")
        return p
    shipped = PROFILES_DIR / f"{raw}.toml"
    if shipped.is_file():
        return shipped
    names = list_profiles()
    close = difflib.get_close_matches(raw, names, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ProfileError(f"no shipped profile named {raw!r}; {hint}shipped: {', '.join(names)} (or pass a path to a .toml file)")


def load_profile(name_or_path: Union[str, os.PathLike]) -> Profile:
    """Read and validate a profile (shipped name or TOML path). Raises ProfileError."""
    path = profile_path(name_or_path)
    try:
        text = read_text(path)  # UTF-8, a leading BOM dropped
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read profile ({exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML ({exc})") from None
    return parse_profile(data, path)
