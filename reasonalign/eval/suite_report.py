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


def detail_lines(label: str, bench: dict[str, dict]) -> list[str]:
    lines = ["| benchmark | harmful compliance | benign compliance | over-refusal | deflected | mean answer tokens | "
             "mean reasoning tokens | s/prompt | tokens/s | leakage removed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for b in _benchmarks({label: bench}):
        m = bench[b]
        lat = m.get("latency", {})
        sp = lat.get("seconds_per_prompt")
        tps = lat.get("tokens_per_s")
        lines.append(f"| {b} | {fmt_rate(m.get('harmful_compliance'))} | {fmt_rate(m.get('benign_compliance'))} | "
                     f"{fmt_rate(m.get('over_refusal'))} | {fmt_rate(m.get('deflected'))} | "
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
