"""Does the ONNX graph take and return what the manifest says? Checked when a bundle is loaded.

The hashes prove a bundle's files are the ones written; they do not prove the model fits
the manifest. A graph whose output is ``[batch, 2]`` (two log-probabilities) would have
its scores interleaved by the runtime, and one that takes another window length would be
fed windows it was never exported for. Both give confident wrong answers, so the graph's
input and output names, ranks and fixed sizes are compared with the manifest and any
mismatch is a :class:`~edge_detector.errors.BundleError` (exit 7).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from .errors import BundleError


def expected_input_shape(manifest: Mapping[str, Any], frontend: Any) -> list[Any]:
    """``[batch, window]`` for a waveform graph, ``[batch, filters, pooled]`` behind a numpy front end."""
    window = int(manifest["windows"]["window"])
    if frontend is None:
        return ["batch", window]
    return ["batch", *frontend.output_shape(window)]


def _fixed(dim: Any) -> Optional[int]:
    """A graph dimension that is a fixed size (onnxruntime gives names or None for symbolic ones)."""
    return int(dim) if isinstance(dim, int) and not isinstance(dim, bool) else None


def check_shape(where: str, what: str, actual: Sequence[Any], expected: Sequence[Any]) -> None:
    """Same rank, and every dimension fixed in both agrees. Raises BundleError."""
    if len(actual) != len(expected):
        raise BundleError(f"{where}: {what} has shape {list(actual)}, the manifest needs {list(expected)} "
                          f"(rank {len(expected)})")
    for k, (a, e) in enumerate(zip(actual, expected)):
        fa, fe = _fixed(a), _fixed(e)
        if fa is not None and fe is not None and fa != fe:
            raise BundleError(f"{where}: {what} has shape {list(actual)}, the manifest needs {list(expected)} "
                              f"(dimension {k}: {fa} != {fe})")


def check_model_io(session: Any, manifest: Mapping[str, Any], frontend: Any, where: str) -> None:
    """Compare an onnxruntime session's input/output with ``manifest`` (an ONNX-family manifest).

    - the input named ``onnx.input`` exists and has the shape the window rule and front
      end imply (``windows.window`` samples, or the front end's ``[filters, pooled]``),
      and ``onnx.input_shape`` when the manifest states it;
    - the output named ``onnx.output`` exists and is one score per window: ``[batch]`` or
      ``[batch, 1]``.

    Symbolic dimensions (names) match anything; :class:`~edge_detector.detector.WindowScorer`
    also checks at run time that a batch gives exactly one score per window. Raises
    BundleError naming the mismatch.
    """
    onnx = manifest["onnx"]
    inputs = {i.name: list(i.shape or []) for i in session.get_inputs()}
    outputs = {o.name: list(o.shape or []) for o in session.get_outputs()}
    if onnx["input"] not in inputs or onnx["output"] not in outputs:
        raise BundleError(f"{where}: model has inputs {list(inputs)} / outputs {list(outputs)}, "
                          f"manifest expects {onnx['input']!r} / {onnx['output']!r}")
    in_shape = inputs[onnx["input"]]
    if in_shape:  # an empty shape: the graph states none, the run-time check on the output still applies
        check_shape(where, f"model input {onnx['input']!r}", in_shape, expected_input_shape(manifest, frontend))
        stated = onnx.get("input_shape")
        if stated:
            check_shape(where, f"model input {onnx['input']!r} (onnx.input_shape)", in_shape, stated)
    out_shape = outputs[onnx["output"]]
    if out_shape:
        second = _fixed(out_shape[1]) if len(out_shape) == 2 else None
        one_score = len(out_shape) == 1 or (len(out_shape) == 2 and second in (None, 1))
        if not one_score:
            raise BundleError(f"{where}: model output {onnx['output']!r} has shape {out_shape}; the runtime needs "
                              "one score per window ([batch] or [batch, 1]), e.g. log P(bona fide)")
