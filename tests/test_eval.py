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


def test_compute_metrics_framed_benign_rows_are_benign():
    rows = [
        {"label": "harmful", "complied": False, "n_tokens": 10},
        {"label": "harmful", "complied": True, "n_tokens": 10, "attack": "roleplay"},
        {"label": "harmful", "complied": False, "n_tokens": 10, "attack": "roleplay"},
        {"label": "benign", "complied": True, "n_tokens": 10},
        {"label": "borderline", "complied": True, "n_tokens": 10},
        {"label": "benign", "complied": False, "n_tokens": 10, "attack": "roleplay"},  # refused for its framing
        {"label": "borderline", "complied": True, "n_tokens": 10, "attack": "prefix_injection"},
    ]
    m = compute_metrics(rows)
    # the framed benign rows are no harmful jailbreaks
    assert m["harmful_compliance"]["n"] == 3 and m["harmful_compliance_jailbreak"]["n"] == 2
    assert m["harmful_compliance_jailbreak"]["rate"] == 0.5
    assert set(m["harmful_compliance_by_attack"]) == {"roleplay"} and m["harmful_compliance_by_attack"]["roleplay"]["n"] == 2
    # they count as benign (or borderline), and are reported apart
    assert m["benign_compliance"]["n"] == 4 and m["benign_compliance"]["rate"] == 0.75
    assert m["benign_compliance_direct"]["rate"] == 1.0 and m["benign_compliance_direct"]["n"] == 2
    assert m["benign_compliance_wrapped"]["rate"] == 0.5 and m["benign_compliance_wrapped"]["n"] == 2
    assert m["benign_only_compliance"]["n"] == 2 and m["borderline_compliance"]["n"] == 2
    # framed benign rows alone: no harmful jailbreak metrics at all
    only = compute_metrics([r for r in rows if r["label"] != "harmful" or not r.get("attack")])
    assert "harmful_compliance_jailbreak" not in only and only["benign_compliance_wrapped"]["n"] == 2
    # none framed: no benign split
    plain = compute_metrics([r for r in rows if not r.get("attack")])
    assert "benign_compliance_wrapped" not in plain and "benign_compliance_direct" not in plain


def test_report_shows_framed_benign_compliance(tmp_path):
    from reasonalign.eval.report import write_report
    from reasonalign.pipeline import StageResult

    def res(name, rows):
        return StageResult(name, "fp", tmp_path, False, 0.0, compute_metrics(rows))

    base = [{"label": "benign", "complied": True, "n_tokens": 1}]
    framed = base + [{"label": "benign", "complied": False, "n_tokens": 1, "attack": "roleplay"}]
    _, report = write_report(tmp_path, "x", {"eval_base": res("eval_base", base),
                                             "eval_final": res("eval_final", framed)}, "m")
    text = report.read_text()
    assert "| final | 100.0% [" in text and "| 0.0% [" in text and "jailbreak-framed" in text
    assert "| base | 100.0%" not in text.split("jailbreak-framed")[1]  # only evaluations with framed rows


def test_report_shows_helpfulness_when_the_judge_graded_it(tmp_path):
    from reasonalign.eval.report import write_report
    from reasonalign.pipeline import StageResult

    def res(name, rows):
        return StageResult(name, "fp", tmp_path, False, 0.0, compute_metrics(rows))

    plain = [{"label": "benign", "complied": True, "n_tokens": 1}]
    graded = [{"label": "benign", "complied": True, "n_tokens": 1, "helpfulness": s} for s in (8, 6, 10)]
    _, report = write_report(tmp_path, "x", {"eval_base": res("eval_base", plain)}, "m")
    assert "Helpfulness" not in report.read_text()  # no rating, no section
    _, report = write_report(tmp_path, "x", {"eval_base": res("eval_base", plain),
                                             "eval_final": res("eval_final", graded)}, "m")
    [row] = [ln for ln in report.read_text().splitlines() if ln.startswith("| final | 8.00 [")]
    assert "| 3 | 66.7% [" in row and "(≥ 7" in row  # two of three at or above the default threshold 7
