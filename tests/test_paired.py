"""Paired comparisons of two models on the same prompts: the exact McNemar test, the paired
bootstrap interval and ``python -m reasonalign.compare``'s paired-difference table."""

import json
import math

import pytest

from reasonalign.eval.metrics import mcnemar_exact, paired_bootstrap_ci, paired_difference


def test_mcnemar_exact_against_hand_computed_binomial():
    # 2 prompts only the first model complied with, 10 only the second: n = 12 discordant pairs,
    # P(X <= 2 | Bin(12, 1/2)) = (1 + 12 + 66) / 4096, two-sided: twice that
    assert mcnemar_exact(2, 10) == pytest.approx(2 * 79 / 4096)
    assert mcnemar_exact(10, 2) == mcnemar_exact(2, 10)
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)  # 0 of 5: 2 * (1/2)^5
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0


def test_paired_difference_counts_only_shared_prompts():
    first = {"a": True, "b": True, "c": False, "d": False, "x": True}
    second = {"a": True, "b": False, "c": False, "d": True, "e": True, "f": False}
    d = paired_difference(first, second)
    assert d["n"] == 4  # a, b, c, d
    assert (d["first_rate"], d["second_rate"], d["diff"]) == (0.5, 0.5, 0.0)
    assert (d["first_only"], d["second_only"]) == (1, 1) and d["p_value"] == 1.0
    assert paired_difference({"a": True}, {"b": True}) is None


def test_paired_bootstrap_interval_covers_the_difference_and_shrinks_with_n():
    # second complies on 30 of 40 prompts where first complied on 10 (20 discordant, all one way)
    first = [True] * 10 + [False] * 30
    second = [True] * 30 + [False] * 10
    lo, hi = paired_bootstrap_ci(first, second, seed=1)
    assert 0 < lo < 0.5 < hi <= 1.0
    big_lo, big_hi = paired_bootstrap_ci(first * 10, second * 10, seed=1)
    assert big_hi - big_lo < (hi - lo) / 2  # ~1/sqrt(10) as wide
    assert paired_bootstrap_ci(first, first) == (0.0, 0.0)
    assert paired_bootstrap_ci(first, second, seed=1) == (lo, hi)  # seeded
    assert mcnemar_exact(0, 20) < 1e-5 and not math.isnan(lo)


def test_compare_reports_paired_differences(tmp_path):
    from reasonalign.compare import main as compare_main
    from reasonalign.eval.metrics import rate

    labels = {f"h{i}": "harmful" for i in range(12)} | {f"b{i}": "benign" for i in range(6)}

    def run(name, harmful_complied: set, benign_complied: set):
        d = tmp_path / name
        (d / "stages" / "eval_final").mkdir(parents=True)
        rows = [{"id": i, "label": lb, "text": i,
                 "complied": i in (harmful_complied if lb == "harmful" else benign_complied)} for i, lb in labels.items()]
        (d / "stages" / "eval_final" / "judged.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        m = {"harmful_compliance": rate([r["complied"] for r in rows if r["label"] == "harmful"]),
             "benign_compliance": rate([r["complied"] for r in rows if r["label"] == "benign"]),
             "mean_response_tokens": 90.0, "mean_thought_tokens": 30.0 if name == "erpo" else 0.0}
        (d / "metrics.json").write_text(json.dumps({"method": name, "eval": {"final": m}}))
        return d

    # dpo complies with 11 of 12 harmful prompts, erpo with 1 (the same one): 10 discordant pairs
    a = run("dpo", {f"h{i}" for i in range(11)}, {f"b{i}" for i in range(6)})
    b = run("erpo", {"h0"}, {f"b{i}" for i in range(5)})
    out = tmp_path / "cmp"
    assert compare_main([str(a), str(b), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "## Paired differences" in report
    [harm] = [ln for ln in report.splitlines() if ln.startswith("| held_out_harmful | dpo/final | erpo/final |")]
    cells = [c.strip() for c in harm.strip("|").split("|")]
    assert cells[3:7] == ["12", "91.7%", "8.3%", "-83.3"]
    assert cells[8:10] == ["10", "0"] and float(cells[10]) == pytest.approx(2 / 2 ** 10, rel=1e-2)
    [benign] = [ln for ln in report.splitlines() if ln.startswith("| held_out_benign | dpo/final |")]
    assert benign.rstrip().endswith("| 1 | 0 | 1 |")  # one discordant prompt: p = 1
    # the held-out split's token means reach the details tables: answer = response - thought
    erpo_details = report.split("## Details: erpo/final")[1].split("##")[0]
    assert "| held_out_harmful | 8.3% [1–35] (n=12) | 83.3% [44–97] (n=6) | – | – | 60.0 | 30.0 |" in erpo_details
    paired = json.loads((out / "metrics.json").read_text())["paired"]
    assert {(p["benchmark"], p["first_only"], p["second_only"]) for p in paired} == {
        ("held_out_harmful", 10, 0), ("held_out_benign", 1, 0)}


def test_compare_names_an_unfinished_run_and_its_finished_stages(tmp_path, capsys):
    from reasonalign.compare import main as compare_main

    run = tmp_path / "half"
    for stage in ("prompts", "sft"):
        (run / "stages" / stage).mkdir(parents=True)
        (run / "stages" / stage / "stage.json").write_text("{}")
    (run / "stages" / "dpo.partial").mkdir()
    assert compare_main([str(run), "--out", str(tmp_path / "cmp")]) == 2
    out = capsys.readouterr().out
    assert f"error: {run}: no metrics.json" in out and "stages finished so far: prompts, sft)" in out
    assert not (tmp_path / "cmp").exists()


def test_seed_is_the_runs_training_seed_and_names_its_run_dir():
    """``seed=<n>`` moves training and the method's sampling, not the data split or evaluation, and
    gives the run its own directory; seed 0 keeps the plain run_dir."""
    from test_config import compose_with

    from reasonalign.cli import build_method

    plain, seeded = compose_with(["method=erpo", "model=tiny-random"]), compose_with(["method=erpo", "model=tiny-random", "seed=2"])
    assert plain.run_dir == "runs/erpo-tiny-random-default" and seeded.run_dir == "runs/erpo-tiny-random-default-seed2"
    assert (seeded.trainer.seed, seeded.method.seed, seeded.data.seed, seeded.eval.seed) == (2, 2, 0, 0)
    fp = {s.name: s.config for s in build_method(plain).stages()}
    fp2 = {s.name: s.config for s in build_method(seeded).stages()}
    assert fp["prompts"] == fp2["prompts"] and fp["eval_base"] == fp2["eval_base"]  # same prompts, same base eval
    assert fp["sft"] != fp2["sft"] and fp["erpo_data"] != fp2["erpo_data"]


def test_sweep_report_gives_mean_and_sd_over_seeds(tmp_path):
    from reasonalign.eval.metrics import rate
    from reasonalign.sweep import seed_lines

    def job(method, seed, k):
        d = tmp_path / f"{method}-{seed}"
        d.mkdir()
        m = {"harmful_compliance": rate([True] * k + [False] * (10 - k))}
        (d / "metrics.json").write_text(json.dumps({"method": method, "eval": {"final": m}}))
        return {"method": method, "run_dir": str(d), "seed": seed, "overrides": [f"method={method}", f"seed={seed}"]}

    jobs = [job("dpo", 0, 2), job("dpo", 1, 4), job("dpo", 2, 3), job("erpo", 0, 1)]
    lines = seed_lines(jobs)
    [row] = [ln for ln in lines if ln.startswith("| method=dpo |")]
    assert row == "| method=dpo | held_out_harmful | 3 | 30.0% ± 10.0 | 20.0%, 40.0%, 30.0% |"
    assert not any(ln.startswith("| method=erpo") for ln in lines)  # one seed: no spread to report
    assert seed_lines(jobs[3:]) == []


def test_comparison_sized_eval_has_the_sizes_it_promises():
    """eval=compare: >= 400 harmful and jailbreak prompts and >= 300 benign/borderline ones, every
    benchmark of eval=suite, loaded offline from the pinned wheels and the shipped contrast pairs."""
    from omegaconf import OmegaConf
    from test_config import compose_with

    from reasonalign.eval.suite import suite_benchmarks

    ev = OmegaConf.to_object(compose_with(["eval=compare"])).eval
    suite = OmegaConf.to_object(compose_with(["eval=suite"])).eval
    loaded = suite_benchmarks(ev)
    assert [n for n, _, _ in loaded] == [b.name for b in suite.benchmarks]
    harmful = sum(r["label"] == "harmful" for _, _, rows in loaded for r in rows)
    other = sum(r["label"] != "harmful" for _, _, rows in loaded for r in rows)
    assert harmful >= 400 and other >= 300, (harmful, other)
    assert all(len(rows) > 16 for _, _, rows in loaded)  # each larger than the suite's quick subsets


def test_eval_limits_name_benchmarks_and_a_wrong_name_fails_at_start_up():
    from omegaconf import OmegaConf
    from test_config import compose_with

    from reasonalign.cli import preflight
    from reasonalign.config import ConfigError
    from reasonalign.eval.suite import suite_benchmarks

    cfg = OmegaConf.to_object(compose_with(["eval=suite_tiny", "model=tiny-random", "+eval.limits.mtbench=5"]))
    sizes = {n: len(rows) for n, _, rows in suite_benchmarks(cfg.eval)}
    assert sizes["mtbench"] == 2 and sizes["harmbench"] == 2  # max_per_benchmark still caps (suite_tiny: 2)
    cfg = OmegaConf.to_object(compose_with(["eval=suite", "model=tiny-random", "+eval.limits.mtbench=5"]))
    assert {n: len(rows) for n, _, rows in suite_benchmarks(cfg.eval)}["mtbench"] == 5
    bad = OmegaConf.to_object(compose_with(["eval=suite", "model=tiny-random", "+eval.limits.mtbenh=5"]))
    with pytest.raises(ConfigError, match="eval.limits: no benchmark 'mtbenh' in eval=suite"):
        preflight(bad)
