"""Tables and PNG plots of benchmark metrics, for one model (eval-only runs) or several (compare).

``models`` is ``{model label: {benchmark: metrics}}`` with the metrics of
:func:`reasonalign.eval.suite.evaluate_benchmark`.
"""

from __future__ import annotations

import math
from pathlib import Path

from reasonalign.pipeline import dumps

FAMILY_ORDER = ("harmful", "jailbreak", "overrefusal", "benign", "custom")


def fmt_rate(r: dict | None) -> str:
    if not r or r.get("n", 0) == 0 or (isinstance(r.get("rate"), float) and math.isnan(r["rate"])):
        return "–"
    lo, hi = r["ci95"]
    return f"{100 * r['rate']:.1f}% [{100 * lo:.0f}–{100 * hi:.0f}] (n={r['n']})"


def fmt_score(h: dict | None) -> str:
    """A ``helpfulness`` metric's mean with its 95% t interval and n (``–`` when nothing was scored)."""
    if not h or not h.get("n") or h.get("mean") is None or math.isnan(h["mean"]):
        return "–"
    lo, hi = h.get("ci95") or (None, None)
    ci = "" if lo is None or hi is None or math.isnan(lo) or math.isnan(hi) else f" [{lo:.2f}, {hi:.2f}]"
    return f"{h['mean']:.2f}{ci} (n={h['n']})"


def fmt_share(h: dict | None) -> str:
    """A ``helpfulness`` metric's share scored at or above its threshold (``–`` without one)."""
    if not h or h.get("share_at_least") is None or h.get("threshold") is None:
        return "–"
    return f"{fmt_rate(h['share_at_least'])} ≥ {h['threshold']:g}"


def scorer_label(h: dict) -> str:
    """Who scored a ``helpfulness`` metric, in words."""
    if h.get("scorer") == "reward_model":
        return f"reward model `{h.get('scorer_model')}` (its own score units)"
    if h.get("scorer") == "mtbench" and h.get("scorer_model"):
        return f"MT-Bench rating 1-10 by `{h['scorer_model']}`"
    return "MT-Bench rating 1-10"


def _scorers(models: dict[str, dict[str, dict]]) -> list[str]:
    return sorted({scorer_label(m["helpfulness"]) for bench in models.values() for m in bench.values()
                   if m.get("helpfulness")})


def _benchmarks(models: dict[str, dict[str, dict]]) -> list[str]:
    names: dict[str, str] = {}
    for bench in models.values():
        for name, m in bench.items():
            names.setdefault(name, m.get("family", "custom"))
    return sorted(names, key=lambda n: (FAMILY_ORDER.index(names[n]) if names[n] in FAMILY_ORDER else 9,
                                        list(names).index(n)))


def headline(m: dict) -> dict | None:
    return m.get(m.get("headline", "harmful_compliance"))


def table_lines(models: dict[str, dict[str, dict]]) -> list[str]:
    """Markdown: one row per benchmark, one column per model (its headline rate with the CI)."""
    labels = list(models)
    lines = ["| benchmark | family | rate | " + " | ".join(labels) + " |",
             "|---|---|---|" + "---|" * len(labels)]
    for b in _benchmarks(models):
        some = next(bench[b] for bench in models.values() if b in bench)
        what = "harmful compliance ↓" if some.get("headline") == "harmful_compliance" else "answered ↑"
        lines.append(f"| {b} | {some.get('family', '')} | {what} | "
                     + " | ".join(fmt_rate(headline(models[lb][b])) if b in models[lb] else "–" for lb in labels)
                     + " |")
    return lines


def family_lines(models: dict[str, dict[str, dict]]) -> list[str]:
    """Harmful compliance per jailbreak family (attack / template name), per model."""
    attacks: dict[str, None] = {}
    for bench in models.values():
        for m in bench.values():
            for a in m.get("harmful_compliance_by_attack", {}):
                attacks.setdefault(a)
    if not attacks:
        return []
    labels = list(models)
    lines = ["| jailbreak family | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for a in attacks:
        cells = []
        for lb in labels:
            r = next((m["harmful_compliance_by_attack"][a] for m in models[lb].values()
                      if a in m.get("harmful_compliance_by_attack", {})), None)
            cells.append(fmt_rate(r))
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return lines


def helpfulness_lines(models: dict[str, dict[str, dict]]) -> list[str]:
    """Helpfulness of the answered benign and borderline prompts: one row per benchmark and model,
    its answered share next to the mean score (95% t interval, n) and the share at or above the
    threshold; only benchmarks where some model was scored (none: no lines)."""
    benches = [b for b in _benchmarks(models) if any(bench.get(b, {}).get("helpfulness") for bench in models.values())]
    if not benches:
        return []
    lines = ["Helpfulness of the answered benign and borderline prompts, scored by "
             + "; ".join(_scorers(models)) + ": the mean score with its 95% t interval, and the share scored "
             "at or above the threshold (`eval.judge.helpfulness_threshold`; 95% Wilson interval).", "",
             "| benchmark | model | answered ↑ | helpfulness ↑ | share ≥ threshold ↑ |", "|---|---|---|---|---|"]
    for b in benches:
        for lb, bench in models.items():
            if b in bench:
                h = bench[b].get("helpfulness")
                lines.append(f"| {b} | {lb} | {fmt_rate(bench[b].get('benign_compliance'))} | {fmt_score(h)} | "
                             f"{fmt_share(h)} |")
    return lines


def detail_lines(label: str, bench: dict[str, dict]) -> list[str]:
    """One model's table: every rate per benchmark, with its helpfulness score and share at or above
    the threshold next to compliance and deflections when helpfulness was scored."""
    scored = any(m.get("helpfulness") for m in bench.values())
    extra = " helpfulness | share ≥ threshold |" if scored else ""
    lines = ["| benchmark | harmful compliance | benign compliance | over-refusal | deflected |" + extra
             + " mean answer tokens | mean reasoning tokens | s/prompt | tokens/s | leakage removed |",
             "|---|---|---|---|---|" + ("---|---|" if scored else "") + "---|---|---|---|---|"]
    for b in _benchmarks({label: bench}):
        m = bench[b]
        lat = m.get("latency", {})
        sp = lat.get("seconds_per_prompt")
        tps = lat.get("tokens_per_s")
        help_cells = f"{fmt_score(m.get('helpfulness'))} | {fmt_share(m.get('helpfulness'))} | " if scored else ""
        lines.append(f"| {b} | {fmt_rate(m.get('harmful_compliance'))} | {fmt_rate(m.get('benign_compliance'))} | "
                     f"{fmt_rate(m.get('over_refusal'))} | {fmt_rate(m.get('deflected'))} | {help_cells}"
                     f"{m.get('mean_answer_tokens', 0):.1f} | "
                     f"{m.get('mean_thought_tokens', 0):.1f} | {'–' if sp is None else f'{sp:.2f}'} | "
                     f"{'–' if tps is None else f'{tps:.1f}'} | {m.get('leakage', {}).get('removed', 0)} |")
    return lines


def plot_rates(models: dict[str, dict[str, dict]], path: Path, title: str = "") -> Path:
    """Grouped bars: benchmarks on x, one bar per model, 95% CI error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = _benchmarks(models)
    labels = list(models)
    width = 0.8 / max(1, len(labels))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(benches) + 2), 4.5))
    for k, lb in enumerate(labels):
        xs, ys, lo, hi = [], [], [], []
        for i, b in enumerate(benches):
            r = headline(models[lb][b]) if b in models[lb] else None
            if not r or not r.get("n"):
                continue
            xs.append(i - 0.4 + width * (k + 0.5))
            ys.append(100 * r["rate"])
            # clamped: a Wilson bound can miss a rate of 0 or 1 by a rounding error
            lo.append(max(0.0, 100 * (r["rate"] - r["ci95"][0])))
            hi.append(max(0.0, 100 * (r["ci95"][1] - r["rate"])))
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=lb)
    ticks = []
    for b in benches:
        some = next(bench[b] for bench in models.values() if b in bench)
        ticks.append(f"{b}\n({'harm ↓' if some.get('headline') == 'harmful_compliance' else 'answered ↑'})")
    ax.set_xticks(range(len(benches)))
    ax.set_xticklabels(ticks, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("rate (%), 95% Wilson CI")
    ax.set_ylim(0, 105)
    ax.set_title(title or "compliance by benchmark")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_lengths(judged: dict[str, list[dict]], path: Path) -> Path:
    """Histograms of reasoning tokens and answer tokens per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, what in ((axes[0], "thought_tokens", "reasoning tokens"), (axes[1], "answer_tokens", "answer tokens")):
        for lb, rows in judged.items():
            vals = [r.get(key, r.get("n_tokens", 0) if key == "answer_tokens" else 0) for r in rows]
            if vals:
                ax.hist(vals, bins=20, alpha=0.5, label=lb)
        ax.set_xlabel(what)
        ax.set_ylabel("responses")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_suite_report(out_dir: Path, title: str, models: dict[str, dict[str, dict]],
                       judged: dict[str, list[dict]] | None = None, extra: dict | None = None) -> tuple[Path, Path]:
    """``report.md``, ``metrics.json``, ``rates.png`` (and ``lengths.png``) in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rates_png = plot_rates(models, out_dir / "rates.png", title)
    lines = [f"# {title}", "", "Headline rate per benchmark (harmful: attack success, lower is better; "
             "over-refusal/benign: answered share, higher is better), 95% Wilson intervals.", "",
             *table_lines(models), "", f"![rates by benchmark]({rates_png.name})", ""]
    fam = family_lines(models)
    if fam:
        lines += ["## Harmful compliance by jailbreak family", "", *fam, ""]
    helpful = helpfulness_lines(models)
    if helpful:  # eval.judge.helpfulness=true (docs/evaluation.md)
        lines += ["## Helpfulness", "", *helpful, ""]
    for lb, bench in models.items():
        lines += [f"## Details: {lb}", "", *detail_lines(lb, bench), ""]
        leaks = {b: m["leakage"] for b, m in bench.items() if m.get("leakage", {}).get("removed")}
        if leaks:
            lines += ["Removed for leakage (repeat a training prompt of the run):", ""]
            lines += [f"- {b}: {v['removed']} (exact {v['exact']}, near {v['near']}); e.g. "
                      f"_{v['examples'][0]['prompt'][:100]}_" for b, v in leaks.items()] + [""]
    if judged:
        lengths = plot_lengths(judged, out_dir / "lengths.png")
        lines += ["## Response lengths", "", f"![reasoning and answer lengths]({lengths.name})", ""]
    metrics = {"kind": "suite", "title": title, "models": models, **(extra or {})}
    (out_dir / "metrics.json").write_text(dumps(metrics))
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return out_dir / "metrics.json", out_dir / "report.md"
