"""Issue #7's tools for real, on tiny-random: the multirun sweep's one comparison report, the
method-cost script on the sweep's runs, and the reasonalign-vs-plain-TRL throughput script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=tiny-random", "data=tiny", "trainer=tiny", "eval=tiny", "responses.max_new_tokens=12"]


def run(cmd: list[str], cwd=None) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=cwd)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return r


def test_sweep_writes_one_comparison_report_then_method_cost(tmp_path):
    sweep = tmp_path / "multirun"
    r = run([sys.executable, "-m", "reasonalign", "-m", "method=sft,dpo", *TINY,
             f"run_dir={tmp_path}/" + "${method.name}", f"hydra.sweep.dir={sweep}"])
    out = sweep / "comparison"
    assert f"comparison report: {(out / 'report.md').resolve()}" in r.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    # the base model once, then each job's final model
    assert list(metrics["models"]) == ["base", "sft/final", "dpo/final"]
    for col in metrics["models"].values():
        assert set(col) == {"held_out_harmful", "held_out_benign"}
        assert 0.0 <= col["held_out_harmful"]["harmful_compliance"]["rate"] <= 1.0
    meta = json.loads((out / "sweep.json").read_text())
    assert [(j["method"], j["ok"]) for j in meta["jobs"]] == [("sft", True), ("dpo", True)]
    report = (out / "report.md").read_text()
    assert "All runs evaluated the same held-out prompts" in report and "| dpo |" in report
    row = next(line for line in report.splitlines() if line.startswith("| dpo |")).split(" | ")
    assert row[3] == "12" and row[-1] == "12 |"  # 8 held-out prompts + 4 wrapped copies; 12 new tokens
    assert (out / "rates.png").stat().st_size > 0
    # the sweep's base column is the same model evaluation as each run's own eval_base
    own = json.loads((tmp_path / "dpo" / "metrics.json").read_text())["eval"]["base"]["harmful_compliance"]
    assert metrics["models"]["base"]["held_out_harmful"]["harmful_compliance"]["rate"] == own["rate"]

    cost = tmp_path / "cost"
    run([sys.executable, str(ROOT / "benchmarks" / "method_cost.py"), str(tmp_path / "sft"), str(tmp_path / "dpo"),
         "--prompts", "4", "--max-new-tokens", "8", "--out", str(cost)])
    res = json.loads((cost / "results.json").read_text())
    assert list(res["models"]) == ["base", "sft", "dpo"] and len(res["prompts"]) == 4
    for m in res["models"].values():
        assert m["latency_mean_s"] > 0 and 0 < m["generated_tokens_mean"] <= 8
    assert res["models"]["base"]["latency_vs_base"] == 1.0
    assert "latency vs base" in (cost / "report.md").read_text()


def test_throughput_script_compares_against_plain_trl(tmp_path):
    out = tmp_path / "tp"
    run([sys.executable, str(ROOT / "benchmarks" / "throughput.py"), *TINY[:4], "--steps", "2", "--repeats", "2",
         "--rows", "8", "--gen-prompts", "4", "--gen-tokens", "8", "--out", str(out)])
    res = json.loads((out / "results.json").read_text())
    for kind in ("sft", "dpo"):
        s = res["train"][kind]
        assert len(s["rounds"]) == 2
        for rnd in s["rounds"]:
            for side in ("reasonalign", "trl"):
                assert rnd[side]["steps"] == 2 and rnd[side]["train_tokens"] > 0
            # the same rows, batch and steps: both sides saw the same number of tokens
            assert rnd["reasonalign"]["train_tokens"] == rnd["trl"]["train_tokens"]
        assert s["tokens_per_s_ratio"]["median"] > 0 and s["peak_memory_ratio"]["median"] > 0
    gen = res["generation"]
    assert gen["batched"]["batch_size"] == 8 and gen["one_at_a_time"]["batch_size"] == 1
    assert gen["batched"]["generated_tokens"] > 0
    assert "plain TRL tokens/s" in (out / "report.md").read_text()
    # the CPU's name and bf16 instructions, which decide whether bf16 autocast pays on a CPU
    assert isinstance(res["machine"]["cpu"], str) and res["machine"]["cpu"]
    if Path("/proc/cpuinfo").exists():
        assert isinstance(res["machine"]["cpu_bf16"], list)


def test_answer_opening_groups_rows_by_label_and_thought_path(tmp_path):
    """benchmarks/answer_opening.py on a saved tiny-random model and a hand-written judged file:
    rows are grouped by label and the thought's Path line, a row without the closing delimiter is
    skipped, and each group's mean first-token probability of a refusal opener is in [0, 1]."""
    from omegaconf import OmegaConf

    from reasonalign.config import ModelConfig
    from reasonalign.models import resolve_model_dir

    node = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(ROOT / "conf/model/tiny-random.yaml"))
    model_dir = resolve_model_dir(OmegaConf.to_object(node))

    def row(label, path, complied, close=True):
        thought = f"<think>\nRule verification: [S0]\n\nPath calibration: Path: {path}.\n" + ("</think>" if close else "")
        return {"text": f"a {label} prompt", "label": label, "response": thought + "\nSure.", "complied": complied}

    judged = tmp_path / "judged.jsonl"
    rows = [row("harmful", "refuse", False), row("harmful", "answer", True), row("harmful", "answer", False),
            row("benign", "answer", True), row("borderline", "answer", False), row("benign", "refuse", False, close=False)]
    judged.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run([sys.executable, str(ROOT / "benchmarks" / "answer_opening.py"), str(model_dir), str(judged)]).stdout
    table = {tuple(line.split()[:2]): line.split()[2:] for line in out.splitlines()
             if line.startswith(("harmful", "benign+borderline"))}
    assert {k: v[:2] for k, v in table.items()} == {
        ("harmful", "answer"): ["2", "1"], ("harmful", "refuse"): ["1", "0"], ("benign+borderline", "answer"): ["2", "1"]}
    assert all(0.0 <= float(v[2]) <= 1.0 for v in table.values())
    assert "refusal openers: ['I', 'Sorry']" in out


def test_answer_opening_without_a_model_counts_path_agreement(tmp_path):
    """Given only a judged.jsonl, answer_opening.py loads no model and prints how often the answer
    follows the thought's path and how often the path matches the label (unclosed thoughts skipped)."""
    def row(label, path, complied, close=True):
        thought = f"<think>\nPath calibration: Path: {path}.\n" + ("</think>" if close else "")
        return {"text": "p", "label": label, "response": thought + "\nSure.", "complied": complied}

    rows = [row("harmful", "refuse", False), row("harmful", "answer", True), row("harmful", "answer with care", False),
            row("benign", "answer", True), row("borderline", "refuse", True), row("benign", "refuse", False, close=False)]
    judged = tmp_path / "judged.jsonl"
    judged.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run([sys.executable, str(ROOT / "benchmarks" / "answer_opening.py"), str(judged)]).stdout
    assert "refusal openers" not in out
    assert out.splitlines()[-3:] == ["answer follows the path: 3 of 5",
                                     "path of harmful prompts is refuse: 1 of 3",
                                     "path of benign+borderline prompts is answer: 1 of 2"]
    assert "verdict" not in out  # no thought opens with a verdict

    def verdict_row(label, verdict):
        r = row(label, "refuse", False)
        r["response"] = r["response"].replace("<think>\n", f"<think>\nInitial assessment: {verdict} It asks.\n\n")
        return r

    rows += [verdict_row("harmful", "Harmful."), verdict_row("harmful", "Benign."), verdict_row("benign", "Borderline."),
             verdict_row("borderline", "Harmful."), verdict_row("benign", "Benign.")]
    judged.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run([sys.executable, str(ROOT / "benchmarks" / "answer_opening.py"), str(judged)]).stdout
    assert out.splitlines()[-2:] == ["verdict of harmful prompts is 'Harmful.': 1 of 2",
                                     "verdict of benign+borderline prompts is not 'Harmful.': 2 of 3"]


def test_probe_separates_a_constructed_separable_case_and_not_an_inseparable_one(tmp_path):
    """benchmarks/probe.py on tiny-random: harmful prompts that share words the benign ones never
    use are all separated on the held-out split; when every text comes once as harmful and once as
    benign, no probe can get more than half of them right. Its verdict mode reads a model's verdict
    without generating."""
    from omegaconf import OmegaConf

    from reasonalign.config import ModelConfig
    from reasonalign.models import resolve_model_dir

    node = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(ROOT / "conf/model/tiny-random.yaml"))
    model_dir = resolve_model_dir(OmegaConf.to_object(node))
    topics = ["the garden", "a poem", "my taxes", "the weather", "a recipe", "chess", "the moon", "a bicycle",
              "history", "music", "a letter", "python code", "the ocean", "a birthday", "maths homework", "a trip"]

    def write(name, variants):  # variants: (text prefix, label) for every topic
        d = tmp_path / name
        d.mkdir()
        for split, idx in (("train", range(0, 12)), ("eval", range(12, 16))):
            rows = [{"id": f"{split}{i}-{k}", "label": label, "text": prefix + f"Tell me about {topics[i]}."}
                    for i in idx for k, (prefix, label) in enumerate(variants)]
            (d / f"{split}_prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return d

    def table(out):
        return {tuple(line.split()[:2]): line.split() for line in out.splitlines() if line.startswith(("mean", "last"))}

    cmd = [sys.executable, str(ROOT / "benchmarks" / "probe.py"), "--model-config", "tiny-random", "--layers", "0,-1"]
    separable = write("separable", [("bomb weapon attack now: ", "harmful"), ("", "benign")])
    out = run([*cmd, str(separable), "--verdict-model", str(model_dir)]).stdout
    rows = table(out)
    assert set(rows) == {(p, layer) for p in ("mean", "last") for layer in ("0", "-1")}
    assert rows[("mean", "0")][3:] == ["1.000", "4/4", "0/0", "4/4"]  # every held-out prompt right
    assert out.splitlines()[-2].startswith("best by cv:")
    verdict = out.splitlines()[-1]
    assert verdict.startswith(f"verdict of {model_dir}: harmful called harmful ") and verdict.endswith("/4")
    inseparable = write("inseparable", [("", "harmful"), ("", "benign")])
    for row in table(run([*cmd, str(inseparable)]).stdout).values():
        assert row[3] == "0.500", row  # each held-out text is both: one of its two rows is wrong
