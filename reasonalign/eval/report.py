"""The run's ``metrics.json`` and ``report.md``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from reasonalign.pipeline import StageResult, dumps, read_jsonl


def _fmt(r: dict | None) -> str:
    if not r or r.get("n", 0) == 0 or (isinstance(r.get("rate"), float) and math.isnan(r["rate"])):
        return "–"
    lo, hi = r["ci95"]
    return f"{100 * r['rate']:.1f}% [{100 * lo:.0f}–{100 * hi:.0f}] (n={r['n']})"


def write_report(run_dir: Path, method: str, results: dict[str, StageResult], model_name: str) -> tuple[Path, Path]:
    run_dir = Path(run_dir)
    metrics = {"method": method, "model": model_name,
               "stages": {n: {"fingerprint": r.fingerprint, "skipped": r.skipped, "seconds": round(r.seconds, 2),
                              **r.placement, "metrics": r.metrics} for n, r in results.items()}}
    evals = {n: r for n, r in results.items() if n.startswith("eval_")}
    metrics["eval"] = {n.removeprefix("eval_"): r.metrics for n, r in evals.items()}
    (run_dir / "metrics.json").write_text(dumps(metrics))

    lines = [f"# reasonalign report: `{method}` on `{model_name}`", ""]
    lines += ["## Evaluation (held-out prompts, refusal judge, 95% Wilson intervals)", "",
              "| model | harmful compliance ↓ | direct | jailbreak-wrapped | benign+borderline compliance ↑ | benign "
              "| borderline | deflected ↓ | helpful ↑ | mean response tokens | mean thought tokens |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, r in evals.items():
        m = r.metrics
        lines.append(
            f"| {n.removeprefix('eval_')} | {_fmt(m.get('harmful_compliance'))} | {_fmt(m.get('harmful_compliance_direct'))} | "
            f"{_fmt(m.get('harmful_compliance_jailbreak'))} | {_fmt(m.get('benign_compliance'))} | "
            f"{_fmt(m.get('benign_only_compliance'))} | {_fmt(m.get('borderline_compliance'))} | "
            f"{_fmt(m.get('deflected'))} | {_fmt(m.get('benign_helpful'))} | "
            f"{m.get('mean_response_tokens', 0):.1f} | {m.get('mean_thought_tokens', 0):.1f} |")
    lines += ["", "Deflected: benign and borderline prompts answered without substance (an offer to help, or one "
              "answer given to many different prompts; docs/evaluation.md, \"Deflections\"), counted in compliance; "
              "helpful: complied and not deflected.", ""]
    graded = {n.removeprefix("eval_"): r.metrics["helpfulness"] for n, r in evals.items() if r.metrics.get("helpfulness")}
    if graded:  # eval.judge.helpfulness=true (docs/evaluation.md)
        from reasonalign.eval.suite_report import scorer_label

        scorers = "; ".join(sorted({scorer_label(h) for h in graded.values()}))
        lines += [f"Helpfulness of the answered benign and borderline prompts ({scorers}, 95% t interval):", "",
                  "| model | mean score | scored | share at or above threshold |", "|---|---|---|---|"]
        for n, h in graded.items():
            mean, (lo, hi) = h.get("mean"), h.get("ci95") or (None, None)
            mean, lo, hi = (math.nan if x is None else x for x in (mean, lo, hi))
            share = "–" if h.get("threshold") is None else f"{_fmt(h.get('share_at_least'))} (≥ {h['threshold']:g})"
            lines.append(f"| {n} | {mean:.2f} [{lo:.2f}, {hi:.2f}] | {h.get('n', 0)} | {share} |")
        lines.append("")
    attacks = sorted({a for r in evals.values() for a in r.metrics.get("harmful_compliance_by_attack", {})})
    if attacks:
        lines += ["Harmful compliance by jailbreak family:", "",
                  "| model | " + " | ".join(attacks) + " |", "|---|" + "---|" * len(attacks)]
        for n, r in evals.items():
            by = r.metrics.get("harmful_compliance_by_attack", {})
            lines.append(f"| {n.removeprefix('eval_')} | " + " | ".join(_fmt(by.get(a)) for a in attacks) + " |")
        lines.append("")
    framed = {n.removeprefix("eval_"): r.metrics for n, r in evals.items() if "benign_compliance_wrapped" in r.metrics}
    if framed:  # data.jailbreak.benign_eval_fraction: benign/borderline prompts inside the same framings
        lines += ["Benign+borderline compliance, direct and jailbreak-framed (`data.jailbreak.benign_eval_fraction`):",
                  "", "| model | direct ↑ | framed ↑ |", "|---|---|---|",
                  *(f"| {n} | {_fmt(m.get('benign_compliance_direct'))} | {_fmt(m['benign_compliance_wrapped'])} |"
                    for n, m in framed.items()), ""]
    suites = {n.removeprefix("eval_"): r.metrics["benchmarks"] for n, r in evals.items() if r.metrics.get("benchmarks")}
    if suites:  # eval=suite: the benchmark suite, per evaluated model (reasonalign/eval/suite_report.py)
        from reasonalign.eval.suite_report import family_lines, helpfulness_lines, plot_rates, table_lines

        png = plot_rates(suites, run_dir / "benchmarks.png", f"{method} on {model_name}: benchmark suite")
        lines += ["## Benchmark suite (95% Wilson intervals)", "", *table_lines(suites), "",
                  f"![benchmark suite]({png.name})", "", *family_lines(suites), ""]
        helpful = helpfulness_lines(suites)
        if helpful:
            lines += [*helpful, ""]
    split = results.get("prompts")
    if split:
        rep = split.metrics.get("split_report", {})
        lines += ["## Data", "", f"- train prompts: {split.metrics.get('train')}, eval prompts: {split.metrics.get('eval')} "
                  "(both include the jailbreak-wrapped copies of `data.jailbreak`)",
                  f"- per label, before wrapping: train {rep.get('train')}, eval {rep.get('eval')}",
                  f"- dedup removed {rep.get('dedup_removed', 0)}; train/eval leakage removed: "
                  f"{json.dumps(rep.get('leakage_removed', {}), default=str)[:300]}"]
        if rep.get("shortfall"):
            lines.append(f"- **fewer prompts than asked for** (the sources hold no more): {json.dumps(rep['shortfall'])}")
        if rep.get("too_long_removed"):
            lines.append(f"- prompts longer than the model's context left out: {json.dumps(rep['too_long_removed'])}")
        lines.append("")
    train = {n: r for n, r in results.items() if "steps" in r.metrics}
    if train:
        lines += ["## Training", "", "| stage | steps | loss first → last | reward margin first → last | rel. param change |",
                  "|---|---|---|---|---|"]
        for n, r in train.items():
            m = r.metrics
            loss = m.get("loss", {})
            mar = m.get("rewards/margins", {})
            lines.append(f"| {n} | {m['steps']} | {_pair(loss)} | {_pair(mar)} | {m.get('relative_param_change', 0):.4f} |")
        lines.append("")
    for n, r in results.items():  # on-policy training (GRPO): each reward's mean per optimizer step
        if r.metrics.get("rewards_per_step"):
            lines += _reward_lines(n, r.metrics)
    analyses = {n: r for n, r in results.items() if n.startswith("analysis_") and "knn_purity" in r.metrics}
    if analyses:
        lines += ["## Embedding-space analysis (held-out prompts, harmful vs not)", "",
                  "| model | n | pooling | k-NN purity | silhouette | purity by group | plots |",
                  "|---|---|---|---|---|---|---|"]
        for n, r in analyses.items():
            m = r.metrics
            sil = "–" if m.get("silhouette") is None else f"{m['silhouette']:.3f}"
            groups = ", ".join(f"{g} {v:.2f}" for g, v in m.get("knn_purity_by_group", {}).items())
            plots = ", ".join(f"[{key.removesuffix('_png')}]({Path(os.path.relpath(r.path, run_dir)) / m[key]})"
                              for key in ("pca_png", "tsne_png") if m.get(key))
            lines.append(f"| {n.removeprefix('analysis_')} | {m.get('n')} | {m.get('pooling', '–')} | "
                         f"{m['knn_purity']:.3f} (k={m.get('k')}) | {sil} | {groups} | {plots} |")
        lines.append("")
    for n, r in evals.items():
        judged = r.path / "judged.jsonl"
        if judged.exists():
            rows = read_jsonl(judged)
            lines += [f"## Sample generations: {n.removeprefix('eval_')}", ""]
            for label in ("harmful", "borderline", "benign"):
                for row in [x for x in rows if x["label"] == label][:2]:
                    resp = row["response"].replace("\n", " ")[:240]
                    lines.append(f"- **{label}** ({'complied' if row['complied'] else 'refused'}): "
                                 f"_{row['text'][:120]}_ → {resp}")
            lines.append("")
    lines += ["## Stages", "", "| stage | fingerprint | status | seconds | device | peak memory (MiB) | generation |",
              "|---|---|---|---|---|---|---|"]
    for n, r in results.items():
        p = r.placement
        peak = f"{p['peak_memory_mib']:.0f} ({_MEMORY_KINDS.get(p.get('memory_kind'), p.get('memory_kind'))})" \
            if p.get("peak_memory_mib") is not None else "–"
        lines.append(f"| {n} | `{r.fingerprint}` | {'skipped (finished)' if r.skipped else 'ran'} | {r.seconds:.1f} | "
                     f"{p.get('device', '–')} | {peak} | {', '.join(p.get('generation_backends') or []) or '–'} |")
    report = run_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return run_dir / "metrics.json", report


_MEMORY_KINDS = {"cuda_max_allocated": "CUDA max allocated", "rss_peak": "peak RSS",
                 "rss_peak_process": "process peak RSS"}


def _pair(d: dict) -> str:
    if not d:
        return "–"
    return f"{d['first_quarter_mean']:.3f} → {d['last_quarter_mean']:.3f}"


def _reward_lines(stage: str, m: dict) -> list[str]:
    """A table of an on-policy stage's rewards per step (``rewards_per_step``: each reward's mean
    over the step's samples, the weighted total, the length penalty's lambda, completion tokens)."""
    weights = m.get("rewards") or {}
    steps = m["rewards_per_step"]
    names = list(weights) or sorted({k for s in steps for k in s} - {"step", "reward", "lambda", "completion_tokens"})

    def cell(v, digits: int = 3) -> str:
        return "–" if v is None else f"{v:.{digits}f}"

    lines = [f"## Rewards per step: `{stage}`", "",
             "Each reward's mean over the step's samples (before its weight), the weighted total, the length "
             "penalty's λ and the mean completion tokens; weights: "
             + (", ".join(f"{k} {v:g}" for k, v in weights.items()) or "–") + ".", "",
             "| step | total | " + " | ".join(names) + " | length λ | completion tokens |",
             "|---|---|" + "---|" * len(names) + "---|---|"]
    for s in steps:
        cells = [cell(s.get("reward")), *(cell(s.get(k)) for k in names), cell(s.get("lambda")),
                 cell(s.get("completion_tokens"), 1)]
        lines.append(f"| {s['step']} | " + " | ".join(cells) + " |")
    return lines + [""]
