"""Graph utilities around onnxruntime's QDQ quantizer: quantizable groups and QDQ clean-up.

Two things the stock quantizer leaves to us:

1. **Which nodes belong together.** A per-layer sensitivity analysis must leave a
   *layer* in fp32, but in the MatMul GRU one recurrent weight is used by one MatMul per
   time step (29 nodes). Nodes are therefore grouped by the weight initializer they
   multiply by; a Conv or Gemm is its own group.

2. **Fan-out of quantized tensors.** ``quantize_static`` (QDQ) replaces a quantized
   tensor by its DequantizeLinear output for *every* consumer, so a residual ``Add`` or
   the GRU's ``h - n`` also sees the int8-rounded value, and one Q→DQ pair feeds several
   node units. On x86, onnxruntime runs int8 (S8S8) QDQ groups by first turning each
   S8 Q→DQ pair into U8 (its x86 kernels are U8S8); it only does so for a Q feeding a
   single DQ. A fanned-out pair stays S8 and its Conv/MatMul silently runs in fp32
   (measured: 7 of 13 convolutions and 28 of 29 MatMuls of the tiny MatMul-GRU model).
   :func:`dedicate_qdq` gives every quantized consumer its own Q→DQ pair and hands
   non-quantized consumers (residual adds, elementwise GRU ops) the original fp32 tensor.
   The quantized Conv/MatMul/Gemm see exactly the same int8 values as before; the
   other consumers see *less* rounding, never more.

3. **Weight-only int8 where no int8 kernel exists.** onnxruntime's CPU provider has no
   int8 GRU; :func:`int8_weights_only` stores a GRU op's W and R as int8 behind a
   DequantizeLinear (4x smaller weights, fp32 compute), and :func:`narrow_conv_groups`
   names the convolutions too narrow for an int8 kernel to pay.
"""
from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

#: Ops whose weights static int8 converts by default (the ones that carry the MACs).
DEFAULT_OP_TYPES: tuple[str, ...] = ("Conv", "MatMul", "Gemm")


@dataclass
class NodeGroup:
    """Nodes that share one weight (one "layer" for the sensitivity analysis)."""

    name: str
    op_type: str
    nodes: list[str] = field(default_factory=list)
    weight: str | None = None
    weight_elements: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.name, "op_type": self.op_type, "weight": self.weight,
                "weight_elements": self.weight_elements, "nodes": list(self.nodes)}


def name_unnamed_nodes(model: Any) -> int:
    """Give every unnamed node a stable name (nodes_to_exclude works by name). Returns how many."""
    seen = {n.name for n in model.graph.node if n.name}
    fixed = 0
    for i, node in enumerate(model.graph.node):
        if not node.name:
            candidate = f"{node.op_type}_auto_{i}"
            while candidate in seen:
                candidate += "_"
            node.name = candidate
            seen.add(candidate)
            fixed += 1
    return fixed


def quantizable_groups(model: Any, op_types: Sequence[str] = DEFAULT_OP_TYPES) -> list[NodeGroup]:
    """Group the quantizable nodes of ``model`` (an onnx ModelProto) by their weight initializer.

    The weight is input 1 of Conv / MatMul / Gemm when it is an initializer; a node
    without a constant weight is a group of its own. Order follows the graph.
    """
    inits = {init.name: init for init in model.graph.initializer}
    groups: dict[str, NodeGroup] = {}
    for node in model.graph.node:
        if node.op_type not in op_types:
            continue
        weight = node.input[1] if len(node.input) > 1 and node.input[1] in inits else None
        key = weight if weight is not None else f"node:{node.name}"
        if key not in groups:
            elements = 0
            if weight is not None:
                elements = 1
                for d in inits[weight].dims:
                    elements *= int(d)
            groups[key] = NodeGroup(name=node.name, op_type=node.op_type, weight=weight, weight_elements=elements)
        groups[key].nodes.append(node.name)
    out = list(groups.values())
    for g in out:
        # A shared weight names its group ("folded.gru.w_hh_0": one name for 28 per-step
        # MatMuls), and so does a MatMul weight, whose node name ("/gru/MatMul_29") says little.
        if g.weight is not None and (len(g.nodes) > 1 or g.op_type == "MatMul"):
            g.name = g.weight
    return out


def conv_input_channels(model: Any, group: NodeGroup) -> int | None:
    """Input channels per group of a Conv group's weight (``W.dims[1]``: [out, in/groups, k...]); None if unknown."""
    if group.op_type != "Conv" or group.weight is None:
        return None
    for init in model.graph.initializer:
        if init.name == group.weight:
            return int(init.dims[1]) if len(init.dims) > 1 else None
    return None


def narrow_conv_groups(model: Any, groups: Sequence[NodeGroup], min_channels: int) -> list[NodeGroup]:
    """Conv groups with fewer than ``min_channels`` input channels per group (kept fp32 for speed).

    Why: a convolution's int8 kernel (QLinearConv) reduces over in_channels x kernel
    products; for RawNet2's 8-channel stage-1 blocks that is 24, too short for VNNI to pay
    for the quantize / dequantize / layout passes around it: measured slower than fp32
    Conv on an AVX-512 VNNI x86 (benchmarks/results/int8_speed.json).
    """
    if min_channels <= 0:
        return []
    out = []
    for g in groups:
        ch = conv_input_channels(model, g)
        if ch is not None and ch < min_channels:
            out.append(g)
    return out


#: Recurrent ops whose weights can be stored int8 behind a DequantizeLinear (weight-only):
#: onnxruntime's CPU provider has no int8 GRU kernel, so the op itself computes in fp32.
WEIGHT_ONLY_OP_TYPES: tuple[str, ...] = ("GRU",)
#: Inputs of a GRU holding weights: W [dirs, 3H, in] and R [dirs, 3H, H] (the bias B stays fp32).
_GRU_WEIGHT_INPUTS = (1, 2)


def weight_only_groups(model: Any) -> list[NodeGroup]:
    """One group per ONNX GRU node whose W and R are initializers used by that node only."""
    inits = {i.name: i for i in model.graph.initializer}
    uses: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        for name in node.input:
            uses[name] += 1
    out = []
    for node in model.graph.node:
        if node.op_type not in WEIGHT_ONLY_OP_TYPES:
            continue
        names = [node.input[i] for i in _GRU_WEIGHT_INPUTS if len(node.input) > i]
        if len(names) != len(_GRU_WEIGHT_INPUTS) or not all(n in inits and uses[n] == 1 for n in names):
            continue
        elements = sum(int(np.prod(inits[n].dims)) for n in names)
        out.append(NodeGroup(name=node.name, op_type=node.op_type, nodes=[node.name], weight=names[0],
                             weight_elements=elements))
    return out


def int8_weights_only(model: Any, node_names: Iterable[str]) -> dict[str, Any]:
    """Store the W and R initializers of the named GRU nodes as int8, read through DequantizeLinear.

    Symmetric per-row scales (one per gate row, ``axis=1`` of [dirs, 3H, K]; max |w| / 127
    over directions and K), zero point 0: ``w ≈ scale[row] * q``, |error| ≤ scale / 2.
    The GRU receives the dequantized fp32 weight, so only storage (and rounding) changes;
    onnxruntime runs the DequantizeLinear once per call (it does not constant-fold a DQ
    in a QDQ model). Modifies ``model`` in place; returns counts and the bytes saved.
    Raises ValueError for a name that is not a GRU with private W / R initializers.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    wanted = set(node_names)
    eligible = {g.name for g in weight_only_groups(model)}
    unknown = wanted - eligible
    if unknown:
        raise ValueError(f"not GRU nodes with private weight initializers: {sorted(unknown)}")
    stats: dict[str, Any] = {"nodes": 0, "weights": 0, "bytes_saved": 0}
    new_dq = []
    for node in graph.node:
        if node.name not in wanted:
            continue
        for i in _GRU_WEIGHT_INPUTS:
            name = node.input[i]
            w = numpy_helper.to_array(inits[name]).astype(np.float32)
            scale = (np.abs(w).max(axis=(0, 2)) / 127.0).astype(np.float32)
            scale[scale == 0] = 1.0
            q = np.clip(np.rint(w / scale[None, :, None]), -127, 127).astype(np.int8)
            graph.initializer.remove(inits[name])
            graph.initializer.extend([numpy_helper.from_array(q, f"{name}_quantized"),
                                      numpy_helper.from_array(scale, f"{name}_scale"),
                                      numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"{name}_zero_point")])
            new_dq.append(helper.make_node("DequantizeLinear", [f"{name}_quantized", f"{name}_scale",
                                                                f"{name}_zero_point"], [name],
                                           name=f"{name}_DequantizeLinear", axis=1))
            stats["weights"] += 1
            stats["bytes_saved"] += int(w.size) * 3 - scale.size * 5
        stats["nodes"] += 1
    for k, dq in enumerate(new_dq):
        graph.node.insert(k, dq)
    return stats


def resolve_exclusions(tokens: Iterable[str], groups: Sequence[NodeGroup], all_nodes: Iterable[str]) -> list[str]:
    """Map ``--exclude`` tokens (group names or node names) to node names; unknown → ValueError."""
    by_group = {g.name: g.nodes for g in groups}
    known = set(all_nodes)
    nodes: list[str] = []
    unknown = []
    for raw in tokens:
        tok = raw.strip()
        if not tok:
            continue
        if tok in by_group:
            nodes.extend(by_group[tok])
        elif tok in known:
            nodes.append(tok)
        else:
            unknown.append(tok)
    if unknown:
        sample = ", ".join(g.name for g in list(groups)[:8])
        raise ValueError(f"unknown node or group name(s) {unknown}; groups are e.g. {sample}")
    return list(dict.fromkeys(nodes))


def dedicate_qdq(model: Any, op_types: Sequence[str] = DEFAULT_OP_TYPES) -> dict[str, int]:
    """Rewrite a QDQ model in place so that each activation Q→DQ pair feeds one node (see module doc).

    - A DQ output consumed by a quantized op *and* by other nodes: the other nodes are
      rewired to the fp32 tensor that went into the Q.
    - A DQ output (or Q output) still consumed by several nodes: each extra consumer gets
      its own copy of the Q and DQ (same scale / zero point initializers).
    Weight DQs (whose input is an initializer) are left alone.
    Returns counts of what was changed.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    graph_outputs = {o.name for o in graph.output}

    def consumers() -> dict[str, list[Any]]:
        table: dict[str, list[Any]] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                table[name].append(node)
        return table

    stats = {"rewired_to_fp32": 0, "duplicated_pairs": 0}
    uses = consumers()
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or dq.output[0] in graph_outputs:
            continue
        users = uses.get(dq.output[0], [])
        if len(users) > 1 and any(u.op_type in op_types for u in users):
            for user in users:
                if user.op_type in op_types:
                    continue
                for k, name in enumerate(user.input):
                    if name == dq.output[0]:
                        user.input[k] = q.input[0]
                        stats["rewired_to_fp32"] += 1

    uses = consumers()
    new_nodes: list[Any] = []
    for node in graph.node:
        new_nodes.append(node)
        if node.op_type != "DequantizeLinear":
            continue
        q = producer.get(node.input[0])
        if q is None or q.op_type != "QuantizeLinear" or node.output[0] in graph_outputs:
            continue
        users = uses.get(node.output[0], [])
        q_users = uses.get(q.output[0], [])
        # extra consumers of this DQ, and (if the Q also feeds other DQs) this DQ itself
        extra = users[1:]
        for k, user in enumerate(extra, start=1):
            q2 = copy.deepcopy(q)
            q2.name = f"{q.name}__dedicated{k}_{node.name}"
            q2.output[0] = f"{q.output[0]}__dedicated{k}_{node.name}"
            dq2 = copy.deepcopy(node)
            dq2.name = f"{node.name}__dedicated{k}"
            dq2.input[0] = q2.output[0]
            dq2.output[0] = f"{node.output[0]}__dedicated{k}"
            new_nodes.extend([q2, dq2])
            for j, name in enumerate(user.input):
                if name == node.output[0]:
                    user.input[j] = dq2.output[0]
            stats["duplicated_pairs"] += 1
        if len(q_users) > 1 and node is not q_users[0]:
            q2 = copy.deepcopy(q)
            q2.name = f"{q.name}__for_{node.name}"
            q2.output[0] = f"{q.output[0]}__for_{node.name}"
            node.input[0] = q2.output[0]
            new_nodes.append(q2)
            stats["duplicated_pairs"] += 1
    # Keep a valid topological order: a copied Q must come before its DQ, which must come
    # before its consumer; re-sort the whole list once.
    del graph.node[:]
    graph.node.extend(_topological(new_nodes, {i.name for i in graph.input} | {i.name for i in graph.initializer}))
    return stats


def _topological(nodes: list[Any], available: set[str]) -> list[Any]:
    """Kahn's algorithm over node lists (stable: original order wherever possible)."""
    produced_by = {out: idx for idx, n in enumerate(nodes) for out in n.output}
    deps: list[set[int]] = []
    for n in nodes:
        deps.append({produced_by[i] for i in n.input if i and i in produced_by})
    users: dict[int, list[int]] = defaultdict(list)
    for idx, d in enumerate(deps):
        for p in d:
            users[p].append(idx)
    remaining = [len(d) for d in deps]
    import heapq

    ready = [i for i, r in enumerate(remaining) if r == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            remaining[u] -= 1
            if remaining[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        raise ValueError("graph has a cycle after QDQ rewrite")
    return [nodes[i] for i in order]


def count_ops(model: Any) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        counts[node.op_type] += 1
    return dict(sorted(counts.items()))
