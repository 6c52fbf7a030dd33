"""Prompt sets: dedup, near-duplicate detection, the seeded train/eval split and its leakage check.

See docs/data.md ("Splits, dedup and leakage") for the procedure in words.
"""

from __future__ import annotations

import os
import random
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from math import ceil
from typing import Any

from reasonalign.config import ConfigError, DataConfig
from reasonalign.data.schema import LABELS, DataError, PromptRecord
from reasonalign.data.sources import load_prompt_source

SHINGLE = 5  # character n-gram size for near-duplicate detection
N_EXAMPLES = 5  # leaked pairs quoted in the report

_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lowercase, drop punctuation, collapse whitespace (NFKC first, so look-alike forms agree)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if ch.isspace() else ch for ch in text if not unicodedata.category(ch).startswith("P"))
    return _SPACE.sub(" ", text).strip()


def dedup(records: Iterable[PromptRecord]) -> tuple[list[PromptRecord], int]:
    """Drop records whose normalized text was seen before (the first one wins)."""
    seen: set[str] = set()
    kept: list[PromptRecord] = []
    removed = 0
    for rec in records:
        key = normalize(rec.text)
        if key in seen:
            removed += 1
            continue
        seen.add(key)
        kept.append(rec)
    return kept, removed


def shingles(text: str, n: int = SHINGLE) -> frozenset[str]:
    """Character n-grams of the normalized text (a text shorter than ``n`` is its own shingle)."""
    t = normalize(text)
    if len(t) <= n:
        return frozenset([t]) if t else frozenset()
    return frozenset(t[i : i + n] for i in range(len(t) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def near_duplicates(
    a_texts: Sequence[str], b_texts: Sequence[str], threshold: float
) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, score)`` with character 5-gram Jaccard(a[i], b[j]) >= ``threshold``.

    An all-pairs similarity join with prefix filtering: shingles are ordered rarest first; two sets
    with Jaccard >= t must share a shingle among the first ``|s| - ceil(t*|s|) + 1`` of each, so only
    pairs sharing such a prefix shingle (and of compatible sizes) are scored, exactly.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
    a_sets = [shingles(t) for t in a_texts]
    b_sets = [shingles(t) for t in b_texts]
    freq: Counter[str] = Counter()
    for s in (*a_sets, *b_sets):
        freq.update(s)

    def prefix(s: frozenset[str]) -> list[str]:
        ordered = sorted(s, key=lambda g: (freq[g], g))
        return ordered[: len(s) - ceil(threshold * len(s) - 1e-9) + 1]

    index: dict[str, list[int]] = defaultdict(list)
    for j, s in enumerate(b_sets):
        if s:
            for g in prefix(s):
                index[g].append(j)
    pairs: list[tuple[int, int, float]] = []
    for i, s in enumerate(a_sets):
        if not s:
            continue
        candidates = {j for g in prefix(s) for j in index.get(g, ())}
        lo, hi = threshold * len(s), len(s) / threshold
        for j in sorted(candidates):
            if not lo - 1e-9 <= len(b_sets[j]) <= hi + 1e-9:
                continue
            score = jaccard(s, b_sets[j])
            if score >= threshold:
                pairs.append((i, j, round(score, 4)))
    return pairs


def check_leakage(train_texts: Sequence[str], eval_texts: Sequence[str], threshold: float) -> dict[str, Any]:
    """Eval prompts that repeat a train prompt.

    Returns ``{"exact": [(train_i, eval_j)], "near": [(train_i, eval_j, score)],
    "eval_indices": sorted eval positions involved, "n_exact", "n_near"}``; ``exact`` means the same
    normalized text, ``near`` a 5-gram Jaccard at or above ``threshold`` that is not exact.
    """
    by_text: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(train_texts):
        by_text[normalize(t)].append(i)
    exact = [(i, j) for j, t in enumerate(eval_texts) for i in by_text.get(normalize(t), ())]
    exact_set = set(exact)
    near = [
        (i, j, s)
        for i, j, s in near_duplicates(train_texts, eval_texts, threshold)
        if (i, j) not in exact_set
    ]
    leaked = sorted({j for _, j in exact} | {j for _, j, _ in near})
    return {"exact": exact, "near": near, "eval_indices": leaked, "n_exact": len(exact), "n_near": len(near)}


def _check_sizes(sizes: Mapping[str, int], what: str) -> dict[str, int]:
    out = {}
    for label, n in sizes.items():
        if label not in LABELS:
            raise ConfigError(f"data.{what}: unknown label {label!r}; expected one of {', '.join(LABELS)}")
        if int(n) < 0:
            raise ConfigError(f"data.{what}.{label}: must be >= 0, got {n}")
        out[label] = int(n)
    return out


def _pool_by_label(records: Sequence[PromptRecord], seed: int) -> dict[str, list[PromptRecord]]:
    """Per label: sorted by (id, text), so the input order does not matter, then a seeded shuffle."""
    pools: dict[str, list[PromptRecord]] = {}
    for label in LABELS:
        pool = sorted((r for r in records if r.label == label), key=lambda r: (r.id, r.text))
        random.Random(f"{seed}/{label}").shuffle(pool)
        pools[label] = pool
    return pools


def split_prompts(
    records: Sequence[PromptRecord],
    train: Mapping[str, int],
    eval: Mapping[str, int],
    seed: int,
    near_dup_threshold: float,
) -> tuple[list[PromptRecord], list[PromptRecord], dict[str, Any]]:
    """Deduplicate, split per label (eval first, then train), then remove and refill leaked eval prompts.

    ``train``/``eval`` map a label (``harmful``, ``benign``, ``borderline``) to a count. A label with
    fewer prompts than asked is split in proportion and gets a warning; none at all is a DataError.
    """
    train_n, eval_n = _check_sizes(train, "train"), _check_sizes(eval, "eval")
    pool, n_dedup = dedup(records)
    pools = _pool_by_label(pool, seed)
    sources = sorted({r.source for r in records})
    warnings: list[str] = []

    train_set: dict[str, list[PromptRecord]] = {}
    eval_set: dict[str, list[PromptRecord]] = {}
    unused: dict[str, list[PromptRecord]] = {}
    for label in LABELS:
        want_t, want_e = train_n.get(label, 0), eval_n.get(label, 0)
        avail = pools[label]
        if want_t + want_e == 0:
            continue
        if not avail:
            have = ", ".join(f"{lb} {len(p)}" for lb, p in pools.items() if p) or "none"
            raise DataError(
                ", ".join(sources) or "no sources",
                None,
                "label",
                f"no prompts labelled {label!r} in the sources (asked train {want_t}, eval {want_e}); available: {have}",
            )
        if len(avail) < want_t + want_e:
            n_e = min(want_e, max(1 if want_e else 0, len(avail) * want_e // (want_t + want_e)))
            n_t = min(want_t, len(avail) - n_e)
            warnings.append(
                f"label {label!r}: {len(avail)} prompts after dedup, asked {want_t + want_e} "
                f"(train {want_t} + eval {want_e}); using train {n_t}, eval {n_e}"
            )
        else:
            n_t, n_e = want_t, want_e
        eval_set[label] = avail[:n_e]
        train_set[label] = avail[n_e : n_e + n_t]
        unused[label] = avail[n_e + n_t :]

    train_out = [r for label in LABELS for r in train_set.get(label, [])]
    train_texts = [r.text for r in train_out]

    # leakage: an eval prompt that repeats (exactly or nearly) any train prompt is replaced
    eval_flat = [r for label in LABELS for r in eval_set.get(label, [])]
    leak = check_leakage(train_texts, [r.text for r in eval_flat], near_dup_threshold)
    leaked = {id(eval_flat[j]) for j in leak["eval_indices"]}  # by identity: ids may repeat in user files
    examples = [
        {"eval": eval_flat[j].text, "train": train_out[i].text, "score": 1.0, "kind": "exact"}
        for i, j in leak["exact"]
    ] + [
        {"eval": eval_flat[j].text, "train": train_out[i].text, "score": s, "kind": "near"}
        for i, j, s in leak["near"]
    ]
    refilled: dict[str, int] = {}
    for label in list(eval_set):
        keep = [r for r in eval_set[label] if id(r) not in leaked]
        removed = len(eval_set[label]) - len(keep)
        if not removed:
            continue
        candidates = unused[label]
        bad = {
            j for _, j, _ in near_duplicates(train_texts, [c.text for c in candidates], near_dup_threshold)
        }
        clean = [c for k, c in enumerate(candidates) if k not in bad]
        refill = clean[:removed]
        eval_set[label] = keep + refill
        unused[label] = [c for c in candidates if c not in refill]
        refilled[label] = len(refill)
        if len(refill) < removed:
            warnings.append(
                f"label {label!r}: {removed} eval prompts removed for leakage, only {len(refill)} could be replaced"
            )

    eval_out = [r for label in LABELS for r in eval_set.get(label, [])]
    left = check_leakage(train_texts, [r.text for r in eval_out], near_dup_threshold)
    random.Random(f"{seed}/order/train").shuffle(train_out)
    random.Random(f"{seed}/order/eval").shuffle(eval_out)
    report: dict[str, Any] = {
        "seed": seed,
        "near_duplicate_threshold": near_dup_threshold,
        "asked": {"train": train_n, "eval": eval_n},
        "train": _count(train_out),
        "eval": _count(eval_out),
        "pool_after_dedup": {label: len(p) for label, p in pools.items() if p},
        "dedup_removed": n_dedup,
        "leakage_removed": {
            "prompts": len(leaked),
            "exact": leak["n_exact"],
            "near": leak["n_near"],
            "examples": examples[:N_EXAMPLES],
        },
        "refilled": refilled,
        "leakage_left": {"exact": left["n_exact"], "near": left["n_near"]},
        "warnings": warnings,
    }
    return train_out, eval_out, report


def _count(records: Iterable[PromptRecord]) -> dict[str, int]:
    counts = Counter(r.label for r in records)
    return {label: counts[label] for label in LABELS if counts[label]}


def build_prompt_sets(
    cfg: DataConfig, cache: str | os.PathLike | None = None
) -> tuple[list[PromptRecord], list[PromptRecord], dict[str, Any]]:
    """Load every configured source, dedup across them, split; the report also lists each source."""
    if not cfg.sources:
        raise ConfigError(f"data config {cfg.name!r} has no sources")
    names = [src.name for src in cfg.sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(
            f"data sources need distinct names (ids are <name>:<line>); repeated: {', '.join(dupes)}"
        )
    records: list[PromptRecord] = []
    per_source: dict[str, dict[str, Any]] = {}
    for src in cfg.sources:
        recs = load_prompt_source(src, cache)
        per_source[src.name] = {"uri": src.uri, "prompts": len(recs), "labels": _count(recs)}
        records.extend(recs)
    train, eval_, report = split_prompts(records, cfg.train, cfg.eval, cfg.seed, cfg.near_duplicate_threshold)
    return train, eval_, {"data": cfg.name, "sources": per_source, **report}


def prompt_splits(
    cfg: DataConfig, cache: str | os.PathLike | None = None
) -> tuple[list[PromptRecord], list[PromptRecord], dict[str, Any]]:
    """:func:`build_prompt_sets`, then the jailbreak-wrapped copies of ``cfg.jailbreak``: the train
    and held-out prompts a run uses (the ``prompts`` stage, ``reasonalign.analysis``, benchmarks)."""
    from reasonalign.data.jailbreaks import augment_splits

    train, evals, report = build_prompt_sets(cfg, cache)
    train, evals = augment_splits(train, evals, cfg.jailbreak, cfg.seed)
    return train, evals, report
