"""Rates with 95% Wilson score intervals; means of scores with 95% Student t intervals."""

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


# two-sided 95% Student t quantiles t(0.975, df) for df = 1..30; beyond, the Cornish-Fisher expansion
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788,
         2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
         2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (to 1e-4)."""
    if df < 1:
        raise ValueError(f"t975 needs df >= 1 (got {df})")
    if df <= len(_T975):
        return _T975[df - 1]
    z, v = 1.959964, float(df)
    return (z + (z ** 3 + z) / (4 * v) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * v ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * v ** 3))


def mean_t_interval(values: list[float]) -> dict:
    """``{"mean", "n", "ci95": [lo, hi]}``: the mean and its 95% Student t interval
    ``mean -/+ t(0.975, n-1) * sd / sqrt(n)`` (sample sd; nan bounds under two values)."""
    n = len(values)
    if n == 0:
        return {"mean": math.nan, "n": 0, "ci95": [math.nan, math.nan]}
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "n": n, "ci95": [math.nan, math.nan]}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "n": n, "ci95": [mean - half, mean + half]}


def helpfulness_stats(scores: list[float | None], threshold: float | None) -> dict:
    """The ``helpfulness`` metric over the scored answers' ratings (None: the grader gave none):
    :func:`mean_t_interval` of the ratings, ``unparsed`` (the Nones, left out) and
    ``share_at_least`` (rated >= ``threshold``, a rate with its Wilson interval, as :func:`rate`;
    None without a threshold)."""
    rated = [float(s) for s in scores if s is not None]
    out = mean_t_interval(rated)
    out["unparsed"] = len(scores) - len(rated)
    out["threshold"] = threshold
    out["share_at_least"] = None if threshold is None else rate([s >= threshold for s in rated])
    return out


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


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` prompts only the first model complied with and ``c``
    only the second did: the binomial test of ``min(b, c)`` out of ``b + c`` at 1/2 (1.0 when no
    prompt is discordant)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_bootstrap_ci(first: list[bool], second: list[bool], n_boot: int = 2000, seed: int = 0,
                        level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``rate(second) - rate(first)`` over prompts resampled in pairs (both
    models keep each drawn prompt's outcomes), seeded."""
    import random

    n = len(first)
    if n == 0 or n != len(second):
        raise ValueError(f"paired_bootstrap_ci needs two equal, non-empty lists (got {n}, {len(second)})")
    diffs = [int(bool(s)) - int(bool(f)) for f, s in zip(first, second, strict=True)]
    rng = random.Random(seed)
    stats = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    lo = stats[int(math.floor((1 - level) / 2 * n_boot))]
    hi = stats[min(n_boot - 1, int(math.ceil((1 + level) / 2 * n_boot)) - 1)]
    return (lo, hi)


def paired_difference(first: dict[str, bool], second: dict[str, bool], seed: int = 0) -> dict | None:
    """Two models' outcomes (``{prompt id: complied}``) on the prompts both were evaluated on:
    ``{"n", "first_rate", "second_rate", "diff", "first_only", "second_only", "p_value", "ci95"}`` with
    ``diff = rate(second) - rate(first)``, the exact McNemar p-value and a paired bootstrap
    interval; None when they share no prompt."""
    ids = sorted(set(first) & set(second))
    if not ids:
        return None
    a, b = [bool(first[i]) for i in ids], [bool(second[i]) for i in ids]
    first_only = sum(x and not y for x, y in zip(a, b, strict=True))
    second_only = sum(y and not x for x, y in zip(a, b, strict=True))
    n = len(ids)
    return {"n": n, "first_rate": sum(a) / n, "second_rate": sum(b) / n, "diff": (sum(b) - sum(a)) / n,
            "first_only": first_only, "second_only": second_only,
            "p_value": mcnemar_exact(first_only, second_only), "ci95": list(paired_bootstrap_ci(a, b, seed=seed))}
