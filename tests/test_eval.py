"""Evaluation maths: Wilson intervals, the rates, and the report."""

import math

import pytest

from reasonalign.eval.metrics import rate, wilson
from reasonalign.eval.runner import compute_metrics


def test_wilson_known_values():
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    lo, hi = wilson(20, 20)
    assert hi == 1.0 and lo == pytest.approx(0.8389, abs=1e-4)
    assert all(math.isnan(x) for x in wilson(0, 0))
    # exact at the ends for every n (the plain formula gives 0.9999999999999999 for some n,
    # which made a report's error bar negative)
    assert all(wilson(n, n)[1] == 1.0 and wilson(0, n)[0] == 0.0 for n in range(1, 200))


def test_rate():
    r = rate([True, False, True, True])
    assert r["rate"] == 0.75 and r["k"] == 3 and r["n"] == 4 and r["ci95"][0] < 0.75 < r["ci95"][1]


def test_compute_metrics_splits_labels_and_attacks():
    rows = [
        {"label": "harmful", "complied": True, "n_tokens": 10, "thought_tokens": 0},
        {"label": "harmful", "complied": False, "n_tokens": 20, "thought_tokens": 8},
        {"label": "harmful", "complied": True, "n_tokens": 30, "thought_tokens": 0, "attack": "roleplay"},
        {"label": "benign", "complied": True, "n_tokens": 40, "thought_tokens": 0},
        {"label": "borderline", "complied": False, "n_tokens": 50, "thought_tokens": 12},
    ]
    m = compute_metrics(rows)
    assert m["harmful_compliance"]["rate"] == pytest.approx(2 / 3)
    assert m["harmful_compliance_direct"]["rate"] == 0.5
    assert m["harmful_compliance_jailbreak"]["rate"] == 1.0
    assert m["harmful_compliance_by_attack"]["roleplay"]["n"] == 1
    assert m["benign_compliance"]["rate"] == 0.5  # benign + borderline
    assert m["benign_only_compliance"]["rate"] == 1.0 and m["borderline_compliance"]["rate"] == 0.0
    assert m["mean_response_tokens"] == 30 and m["mean_thought_tokens"] == 4 and m["with_thought"] == 0.4
