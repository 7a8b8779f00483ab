"""Pair-aware batches for generalising countermeasures (training side).

Three ideas, each aimed at a shortcut the dev corpus offers (DESIGN §9):

* **Pairs.** A bona fide crop and the same crop of its vocoded copy (copy-synthesis,
  :mod:`export.vocode`) enter the batch together, under the *same* recording condition
  (:func:`export.augment_codec.same_condition`). Speaker, words and channel are identical
  within a pair; only the vocoder's artefacts differ. A supervised contrastive term
  (P. Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, eq. 2) on the
  utterance embeddings pulls same-class embeddings together and pushes each bona fide
  embedding away from its own vocoded copy, as X. Wang and J. Yamagishi do with vocoded
  pairs (ICASSP 2023, arXiv 2210.10570).
* **Class and system balance.** The rest of the batch is half bona fide, half spoof; within
  a class, groups (spoofing system, or bona fide corpus) are drawn with weight
  ∝ sqrt(group size), so no single voice or system dominates.
* **Non-speech negatives.** A small share of crops are synthetic signals that are not a
  human voice (tones, chirps, buzz, coloured noise, clicks, formant synthesis; random
  parameters from :mod:`edge_detector.sanity` and :mod:`edge_detector.demo_audio`),
  labelled spoof: a gate must never call them bona fide.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from edge_detector.protocol import ProtocolEntry, source_of
from edge_detector.windows import WINDOW_SAMPLES


def supervised_contrastive(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SupCon loss (Khosla et al. 2020, L^sup_out) over one batch.

    Args:
        embeddings: [batch, dim] float; L2-normalised inside.
        labels: [batch] int class ids.
        temperature: τ of the softmax over cosine similarities.
    Returns:
        scalar tensor: mean over anchors with at least one positive of
        −mean_{p ∈ P(i)} log(exp(z_i·z_p/τ) / Σ_{a ≠ i} exp(z_i·z_a/τ)); 0 when no anchor has one.
    """
    z = F.normalize(embeddings, dim=1)
    sim = z @ z.t() / temperature
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels.unsqueeze(0) == labels.unsqueeze(1)) & ~eye
    n_pos = pos.sum(dim=1)
    has = n_pos > 0
    if not bool(has.any()):
        return embeddings.sum() * 0.0
    per_anchor = -(log_prob.masked_fill(~pos, 0.0).sum(dim=1)[has] / n_pos[has])
    return per_anchor.mean()


def pair_index(entries: Sequence[ProtocolEntry], pairs: dict[str, str]) -> dict[int, list[int]]:
    """{index of a bona fide entry: indices of its vocoded copies} within ``entries``.

    ``pairs`` maps vocoded file id → source file id (``pairs.tsv``); copies whose source is
    not in ``entries`` are ignored (e.g. the source is a validation file).
    """
    pos = {e.file_id: i for i, e in enumerate(entries)}
    out: dict[int, list[int]] = defaultdict(list)
    for vid, sid in pairs.items():
        if vid in pos and sid in pos and entries[pos[sid]].is_bonafide:
            out[pos[sid]].append(pos[vid])
    return dict(out)


def group_key(entry: ProtocolEntry) -> str:
    """The balancing group: the spoofing system, or the corpus of a bona fide speaker."""
    return f"spoof:{entry.system}" if not entry.is_bonafide else f"bonafide:{source_of(entry.speaker)}"


def sqrt_balanced(keys: Sequence[object]) -> np.ndarray:
    """Draw probabilities for items with group ``keys``: each item ∝ 1/sqrt(its group's size), so a
    group's total mass is ∝ sqrt(size); normalised to sum 1 (an empty array for no items)."""
    counts: dict[object, int] = defaultdict(int)
    for k in keys:
        counts[k] += 1
    w = np.array([counts[k] ** -0.5 for k in keys], dtype=np.float64)
    return w / w.sum() if len(w) else w


class BalancedSampler:
    """Draw file indices class-balanced, groups weighted ∝ sqrt(size) (each file ∝ 1/sqrt(group size))."""

    def __init__(self, entries: Sequence[ProtocolEntry], rng: np.random.Generator) -> None:
        self.rng = rng
        self.by_class: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for c in (0, 1):  # group keys carry the class, so counting within a class counts the group
            idx = np.array([i for i, e in enumerate(entries) if e.target == c], dtype=np.int64)
            self.by_class[c] = (idx, sqrt_balanced([group_key(entries[i]) for i in idx]))

    def draw(self, label: int, k: int) -> np.ndarray:
        idx, p = self.by_class[label]
        if k <= 0 or len(idx) == 0:
            return np.zeros(0, dtype=np.int64)
        return self.rng.choice(idx, size=k, replace=True, p=p)


def nonspeech_bank(count: int, seed: int, seconds: float = WINDOW_SAMPLES / 16000 + 0.1) -> list[np.ndarray]:
    """``count`` synthetic non-voice signals at 16 kHz with random parameters (float32 1-D).

    Generators and their parameter ranges differ from the sanity set the tests use (those
    use the generators' defaults), so the tests check generalisation to the kind, not
    memorisation of the instance.
    """
    from edge_detector import sanity
    from edge_detector.demo_audio import synthesize_vowels

    rng = np.random.default_rng(seed)
    makers = [
        lambda: sanity.tone(seconds, freq=float(rng.uniform(80, 6000))),
        lambda: sanity.am_tone(seconds, freq=float(rng.uniform(150, 3000)), rate=float(rng.uniform(2, 9))),
        lambda: sanity.fm_tone(seconds, freq=float(rng.uniform(150, 2000)), dev=float(rng.uniform(10, 200)),
                               rate=float(rng.uniform(2, 9))),
        lambda: sanity.chirp(seconds, f0=float(rng.uniform(50, 500)), f1=float(rng.uniform(1000, 7900)),
                             log=bool(rng.random() < 0.5)),
        lambda: sanity.square(seconds, freq=float(rng.uniform(60, 800))),
        lambda: sanity.sawtooth(seconds, freq=float(rng.uniform(60, 500))),
        lambda: sanity.buzz(seconds, f0=float(rng.uniform(70, 300))),
        lambda: sanity.am_buzz(seconds, f0=float(rng.uniform(70, 300))),
        lambda: sanity.vibrato_am_buzz(seconds, f0=float(rng.uniform(70, 300))),
        lambda: sanity.white_noise(seconds, seed=int(rng.integers(2**31))),
        lambda: sanity.pink_noise(seconds, seed=int(rng.integers(2**31))),
        lambda: sanity.brown_noise(seconds, seed=int(rng.integers(2**31))),
        lambda: sanity.am_noise(seconds, seed=int(rng.integers(2**31))),
        lambda: sanity.clicks(seconds, rate=float(rng.uniform(1, 20))),
        lambda: sanity.impulse_train(seconds, freq=float(rng.uniform(60, 300))),
        lambda: synthesize_vowels(seconds, seed=int(rng.integers(2**31)), f0=float(rng.uniform(80, 260))),
    ]
    bank = []
    for i in range(count):
        x = np.asarray(makers[i % len(makers)](), dtype=np.float32)
        gain = float(10 ** (rng.uniform(-30, 0) / 20))
        bank.append((x * gain).astype(np.float32))
    return bank


def aligned_crops(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                  window: int = WINDOW_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """The same ``window``-sample span of a signal and its (time-aligned) vocoded copy.

    Shorter signals are tiled (the official pad rule) before cutting; the start is drawn once.
    """
    from edge_detector.windows import tile_to_length

    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    if n <= window:
        return tile_to_length(a, window), tile_to_length(b, window)
    start = int(rng.integers(0, n - window + 1))
    return a[start : start + window], b[start : start + window]


def pick_copy(copies: Sequence[int], rng: np.random.Generator) -> Optional[int]:
    return int(copies[int(rng.integers(len(copies)))]) if copies else None


def matched_index(entries: Sequence[ProtocolEntry],
                  pairs: Optional[dict[int, list[int]]] = None) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """Speaker-matched couples for :class:`export.train.Trainer` (``matched_fraction``).

    Returns ``(spoofs, weights, bona_of)``: the indices of spoofs of real systems (vocoded
    copies, the values of ``pairs``, are left out: their pairs already match them) whose source
    (:func:`edge_detector.protocol.source_of` of the speaker, e.g. ``LJ``) also has bona fide
    files; their draw probabilities (∝ 1/sqrt(system size), as :class:`BalancedSampler`); and
    for each such spoof the indices of the bona fide files of its source. Empty arrays when
    no spoof has a same-source bona fide file.
    """
    copies = {j for js in (pairs or {}).values() for j in js}
    bona: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(entries):
        if e.is_bonafide:
            bona[source_of(e.speaker)].append(i)
    spoofs = [i for i, e in enumerate(entries)
              if not e.is_bonafide and i not in copies and source_of(e.speaker) in bona]
    bona_of = {i: np.array(bona[source_of(entries[i].speaker)], dtype=np.int64) for i in spoofs}
    return np.array(spoofs, dtype=np.int64), sqrt_balanced([group_key(entries[i]) for i in spoofs]), bona_of
