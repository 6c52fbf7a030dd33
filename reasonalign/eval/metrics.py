"""Rates with 95% Wilson score intervals."""

from __future__ import annotations

import math


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for ``k`` successes out of ``n`` (``(nan, nan)`` when n = 0)."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # exact at the ends (the formula misses 0 and 1 by a rounding error there)
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return (lo, hi)


def rate(flags: list[bool]) -> dict:
    """``{"rate", "k", "n", "ci95": [lo, hi]}`` for a list of booleans."""
    n, k = len(flags), sum(bool(f) for f in flags)
    lo, hi = wilson(k, n)
    return {"rate": (k / n) if n else math.nan, "k": k, "n": n, "ci95": [lo, hi]}


def agreement(predicted: list[bool], gold: list[bool]) -> dict:
    """Accuracy and Cohen's kappa of ``predicted`` against human labels ``gold``."""
    if len(predicted) != len(gold) or not gold:
        raise ValueError(f"agreement needs two equal, non-empty lists (got {len(predicted)}, {len(gold)})")
    n = len(gold)
    acc = sum(p == g for p, g in zip(predicted, gold, strict=True)) / n
    p_yes, g_yes = sum(map(bool, predicted)) / n, sum(map(bool, gold)) / n
    chance = p_yes * g_yes + (1 - p_yes) * (1 - g_yes)
    kappa = 1.0 if chance == 1 else (acc - chance) / (1 - chance)
    return {"n": n, "accuracy": acc, "kappa": kappa, "accuracy_ci95": list(wilson(round(acc * n), n))}
