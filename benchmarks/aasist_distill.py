"""Distil a cheap AASIST-L encoder variant back towards the official model (blocks 0-2 only).

The variant (``ct3``, ``ct3-p16r16``, ... as in :mod:`aasist_edge`) changes blocks 0-1 (and,
for ``ct3``, block 2's pool); everything after block 2 is the official model unchanged. So the
student's blocks 0-2 are fine-tuned to reproduce the official model's **block-2 output**
(``[24, 23, 795]`` per window for AASIST-L) from the student's own input map (the sinc map
pooled 3 × ``pool`` by the numpy front end), loss = mean squared error normalised by the
target's variance, on random time crops (the convolutions are local in time, so a crop's
centre equals the whole window's; ``--margin`` target frames at each crop edge are left out of
the loss). The official model is the teacher; no labels are used. Adam, one thread, stopped
after ``--cpu-seconds`` of this process's CPU time.

Data: dev windows that the edge benchmark never scores: the first ``--reserve`` entries of
``balanced_order(protocol, seed)`` (the benchmark's fidelity subset and its calibration windows
come from there) are excluded, the next ``--train`` decodable ones train, the following
``--val`` check (Spearman of the full-model scores against the official ones, before / after).
The checkpoint (``{"model": AASIST module, "variant", "train_ids", ...}``) goes to ``--out``,
outside the repository; ``aasist_edge.py --distilled VARIANT+d=CKPT`` scores it on the subset.

    nice -n 15 python benchmarks/aasist_distill.py ../shared/models/aasist/AASIST-L.pth \\
        --protocol DATA/protocol.txt --audio-dir DATA --variant ct3 --out CACHE/ct3-distilled.pt \\
        --json benchmarks/results/aasist/distill_ct3.json
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# first: sets the one-thread environment before numpy loads, puts the repository on sys.path
from aasist_edge import WINDOW, approximate, log, read_protocol, spearman  # noqa: E402

import numpy as np  # noqa: E402

DEPTH = 3  # blocks 0..2 are trained; the target is block 2's output


def student_input(model: Any, windows: "Any", pool: int) -> "Any":
    """``[n, window]`` → the student's pooled sinc map ``[n, 1, F, T]`` (max-pool 3 × ``pool``), before
    the first BatchNorm; equal to what the numpy front end + the body graph's filter-group max give."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        return F.max_pool2d(torch.abs(model.sinc(windows)).unsqueeze(1), (3, pool))


def head(model: Any, pooled: "Any") -> "Any":
    """First BatchNorm + SELU, then encoder blocks 0..DEPTH-1 (each as the model defines it)."""
    x = model.selu(model.first_bn(pooled))
    for i in range(DEPTH):
        x = model.encoder[i](x)
    return x


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--protocol", required=True)
    ap.add_argument("--audio-dir", required=True)
    ap.add_argument("--variant", required=True)
    ap.add_argument("--out", required=True, help="fine-tuned model (outside the repository)")
    ap.add_argument("--json", required=True, help="before/after report")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--reserve", type=int, default=340, help="leading entries of the order left to the benchmark")
    ap.add_argument("--train", type=int, default=160)
    ap.add_argument("--val", type=int, default=40)
    ap.add_argument("--calibration", type=int, default=9, help="low-rank fitting windows (variants with lr)")
    ap.add_argument("--crop", type=int, default=64, help="target frames per crop (block-2 resolution)")
    ap.add_argument("--margin", type=int, default=4, help="target frames left out of the loss at each crop edge")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--cpu-seconds", type=float, default=200.0, help="training budget (process CPU time)")
    args = ap.parse_args(argv)
    import torch

    from export.aasist import load_aasist
    from export.fold import selu_vectorised
    from quantize.static_int8 import balanced_order, load_set

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t_start = time.process_time()
    order = balanced_order(read_protocol(args.protocol), args.seed)
    reserved = frozenset(e.file_id for e in order[: args.reserve])
    train = load_set(order, args.audio_dir, args.train, 16000, WINDOW, 600.0, log, exclude_ids=reserved)
    val = load_set(order, args.audio_dir, args.val, 16000, WINDOW, 600.0, log,
                   exclude_ids=reserved | frozenset(train.file_ids))
    teacher, _ = load_aasist(args.checkpoint)
    teacher.eval()
    fast = copy.deepcopy(teacher).use_selu(selu_vectorised)
    calib = train.windows[: args.calibration]
    student, pool = approximate(fast, args.variant, calib)
    student.eval()  # BatchNorm statistics stay frozen: the teacher's running statistics apply

    # teacher targets (block-2 outputs) and student inputs, one window at a time
    targets, inputs = [], []
    with torch.no_grad():
        for row in train.windows:
            w = torch.from_numpy(row[None])
            targets.append(head(teacher, teacher.front(w))[0])
            inputs.append(student_input(teacher, w, pool)[0])
    targets_t = torch.stack(targets)  # [n, C, F, L]
    inputs_t = torch.stack(inputs)  # [n, 1, F, L * r]
    ratio = inputs_t.shape[-1] // targets_t.shape[-1]
    var = float(targets_t.var())
    log(f"{args.variant}: {len(train.file_ids)} train windows, targets {tuple(targets_t.shape)}, "
        f"inputs {tuple(inputs_t.shape)} (ratio {ratio}), teacher pass {time.process_time() - t_start:.0f} CPU-s")

    def val_scores(model: Any) -> np.ndarray:
        from export.aasist_export import AASISTBody
        from edge_detector.frontend import SincFFTFrontEnd
        import dataclasses
        from export.aasist_export import frontend_spec_for

        spec = dataclasses.replace(frontend_spec_for(teacher), pool=pool)
        feats = SincFFTFrontEnd(spec)(val.windows)
        body = AASISTBody(model).eval()
        with torch.no_grad():
            return np.concatenate([body(torch.from_numpy(feats[i:i + 8])).numpy() for i in range(0, len(feats), 8)])

    with torch.no_grad():
        official_val = teacher(torch.from_numpy(val.windows))[:, 1].numpy()

    def full_mse(model: Any, n: int = 8) -> float:
        n = min(n, len(inputs_t))
        with torch.no_grad():
            out = torch.stack([head(model, inputs_t[i:i + 1])[0] for i in range(n)])
        return float(((out - targets_t[:n]) ** 2).mean() / var)

    before = {"val_spearman": spearman(official_val, val_scores(student)),
              "train_block2_nmse_first8": full_mse(student)}
    log(f"before: {before}")
    params = [p for i in range(DEPTH) for p in student.encoder[i].parameters()]
    for p in student.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=args.lr)
    n, L = targets_t.shape[0], targets_t.shape[-1]
    crop, m = args.crop, args.margin
    step, t_train, losses = 0, time.process_time(), []
    while time.process_time() - t_train < args.cpu_seconds:
        idx = rng.integers(0, n, args.batch)
        starts = rng.integers(0, L - crop + 1, args.batch)
        x = torch.stack([inputs_t[i, :, :, s * ratio:(s + crop) * ratio] for i, s in zip(idx, starts)])
        y = torch.stack([targets_t[i, :, :, s:s + crop] for i, s in zip(idx, starts)])
        out = head(student, x)
        loss = ((out - y)[..., m:crop - m] ** 2).mean() / var
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % 50 == 0:
            log(f"step {step}: loss {np.mean(losses[-50:]):.4f} ({time.process_time() - t_train:.0f} CPU-s)")
    student.eval()
    for p in student.parameters():
        p.requires_grad_(False)
    after = {"val_spearman": spearman(official_val, val_scores(student)),
             "train_block2_nmse_first8": full_mse(student)}
    log(f"after {step} steps: {after}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": student, "variant": args.variant, "front_pool": pool,
                "train_ids": list(train.file_ids), "val_ids": list(val.file_ids)}, out)
    report = {
        "what": f"distillation of AASIST-L variant {args.variant}: blocks 0-{DEPTH - 1} fitted to the official "
                "model's block-2 output (normalised MSE on time crops), teacher = official AASIST-L",
        "command": "nice -n 15 python benchmarks/aasist_distill.py " + " ".join(
            argv if argv is not None else sys.argv[1:]),
        "data_rule": (f"balanced_order(protocol, seed={args.seed}) without its first {args.reserve} entries "
                      f"(the edge benchmark's subset and calibration): next {args.train} decodable train, "
                      f"next {args.val} validate"),
        "train_windows": len(train.file_ids), "val_windows": len(val.file_ids),
        "steps": step, "batch": args.batch, "crop_frames": crop, "margin_frames": m, "lr": args.lr,
        "train_cpu_seconds": time.process_time() - t_train, "total_cpu_seconds": time.process_time() - t_start,
        "loss_first50": float(np.mean(losses[:50])) if losses else None,
        "loss_last50": float(np.mean(losses[-50:])) if losses else None,
        "before": before, "after": after, "threads": 1,
    }
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("steps", "before", "after", "train_cpu_seconds")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
