"""``python -m reasonalign.compare RUN_DIR... [--out DIR]``: several runs side by side.

Reads each directory's ``metrics.json``: an eval-only run (``python -m reasonalign.eval``) gives one
column (its model); a training run gives one column per evaluation stage (``<run>/base``,
``<run>/final``...), with its benchmark-suite results when the run used ``eval=suite`` and its
held-out split as the benchmark ``held_out`` otherwise. Writes ``report.md`` (one table, headline
rate with 95% CI per benchmark and model, the per-jailbreak-family table and, where helpfulness was
scored, the helpfulness table: mean score and share at or above the threshold per benchmark and
model, next to the answered share), ``rates.png`` (grouped bars with CI error bars) and
``metrics.json`` to ``--out`` (default ``runs/compare``).

For every benchmark and every two columns evaluated on the same prompts (their judged rows in
``stages/``), the report adds the paired difference: the change in rate over the shared prompts,
its 95% paired-bootstrap interval and the exact McNemar p-value, which tells a real difference
between two models from the noise of a small prompt set better than two overlapping intervals do.

``--per-prompt`` also writes ``per_prompt.md``: every held-out prompt of the training runs'
evaluation stages (``stages/eval_<stage>/judged.jsonl``), with how many of the compared models
answered it and which; prompts are sorted by label, then by that count, so the benign prompts no
model answers and the harmful ones every model answers come first.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reasonalign.eval.suite_report import write_suite_report
from reasonalign.pipeline import read_jsonl


def _held_out(m: dict) -> dict[str, dict]:
    out = {}
    if "mean_response_tokens" in m:  # the suite's answer tokens: the response less its thought
        m = {**m, "mean_answer_tokens": max(0.0, m["mean_response_tokens"] - m.get("mean_thought_tokens", 0.0))}
    if m.get("harmful_compliance", {}).get("n"):  # helpfulness is the benign side's
        out["held_out_harmful"] = {**{k: v for k, v in m.items() if k != "helpfulness"}, "family": "harmful",
                                   "headline": "harmful_compliance"}
    if m.get("benign_compliance", {}).get("n"):
        out["held_out_benign"] = {**m, "family": "benign", "headline": "benign_compliance"}
    return out


def _metrics(run_dir: Path) -> dict:
    """A run directory's ``metrics.json``; a clear error where the run has not written it yet."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        done = sorted(p.parent.name for p in (Path(run_dir) / "stages").glob("*/stage.json"))
        hint = f"; stages finished so far: {', '.join(done)}" if done else ""
        raise FileNotFoundError(f"{run_dir}: no metrics.json (not a finished reasonalign run{hint})")
    return json.loads(path.read_text())


def columns(run_dir: Path) -> dict[str, dict[str, dict]]:
    """``{column label: {benchmark: metrics}}`` for one run directory."""
    path = Path(run_dir) / "metrics.json"
    data = _metrics(run_dir)
    name = Path(run_dir).resolve().name
    if data.get("kind") == "suite":
        models = data["models"]
        return {(name if len(models) == 1 else f"{name}/{lb}"): b for lb, b in models.items()}
    out = {}
    for stage, m in (data.get("eval") or {}).items():
        out[f"{name}/{stage}"] = m.get("benchmarks") or _held_out(m)
    if not out:
        raise ValueError(f"{path}: no evaluation results")
    return out


def outcomes(run_dir: Path) -> dict[str, dict[str, dict[str, bool]]]:
    """``{column label: {benchmark: {prompt id: complied}}}`` from the judged rows a run wrote, with
    the labels of :func:`columns`: a training run's ``stages/eval_<stage>/judged.jsonl`` (the
    held-out split, as ``held_out_harmful`` and ``held_out_benign``) and ``.../benchmarks/<name>/``,
    an eval-only run's ``stages/bench_<name>/judged.jsonl``."""
    run_dir = Path(run_dir)
    data = _metrics(run_dir)
    name, stages = run_dir.resolve().name, run_dir / "stages"

    def read(path: Path) -> list[dict]:
        return read_jsonl(path) if path.is_file() else []

    def flags(rows: list[dict]) -> dict[str, bool]:
        return {str(r["id"]): bool(r["complied"]) for r in rows}

    if data.get("kind") == "suite":
        models = data["models"]
        if len(models) != 1:
            return {}
        return {name: {b: flags(read(stages / f"bench_{b}" / "judged.jsonl")) for b in next(iter(models.values()))}}
    out = {}
    for stage in data.get("eval") or {}:
        d, per = stages / f"eval_{stage}", {}
        held = read(d / "judged.jsonl")
        per["held_out_harmful"] = flags([r for r in held if r["label"] == "harmful"])
        per["held_out_benign"] = flags([r for r in held if r["label"] != "harmful"])
        for bench in sorted(p.name for p in (d / "benchmarks").glob("*") if p.is_dir()):
            per[bench] = flags(read(d / "benchmarks" / bench / "judged.jsonl"))
        out[f"{name}/{stage}"] = {b: f for b, f in per.items() if f}
    return out


def paired_lines(models: dict[str, dict[str, dict]], per_prompt: dict[str, dict[str, dict[str, bool]]],
                 seed: int = 0) -> tuple[list[str], list[dict]]:
    """The report's paired-difference table and its rows: for each benchmark, every two columns
    that share prompts (in the order the columns are given)."""
    from itertools import combinations

    from reasonalign.eval.metrics import paired_difference
    from reasonalign.eval.suite_report import _benchmarks

    rows = []
    for bench in _benchmarks(models):
        cols = [c for c in models if per_prompt.get(c, {}).get(bench)]
        for first, second in combinations(cols, 2):
            d = paired_difference(per_prompt[first][bench], per_prompt[second][bench], seed=seed)
            if d:
                rows.append({"benchmark": bench, "first": first, "second": second, **d})
    if not rows:
        return [], []
    pct = lambda x: f"{100 * x:+.1f}" if x else "0.0"  # noqa: E731
    lines = ["## Paired differences", "",
             "Compliance on the prompts both models were evaluated on: the second model's rate minus the "
             "first's, its 95% paired-bootstrap interval (points), how many prompts only one of them "
             "complied with, and the exact McNemar p-value. p < 0.05: a difference this size is unlikely "
             "to be chance on these prompts (no correction for the number of comparisons).", "",
             "| benchmark | first | second | n | first | second | second − first | 95% CI | only first | "
             "only second | McNemar p |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["ci95"]
        lines.append(f"| {r['benchmark']} | {r['first']} | {r['second']} | {r['n']} | {100 * r['first_rate']:.1f}% | "
                     f"{100 * r['second_rate']:.1f}% | {pct(r['diff'])} | [{pct(lo)}, {pct(hi)}] | "
                     f"{r['first_only']} | {r['second_only']} | {r['p_value']:.3g} |")
    return lines, rows


def _unique_columns(items, base_once: bool):
    """``(label, value)`` pairs with unique labels (a repeat gets a ``'``); with ``base_once`` only
    the first ``<run>/base`` column is kept, as ``base`` (the runs of one sweep evaluate the same
    base model on the same prompts)."""
    taken, base_seen = set(), False
    for label, value in items:
        if base_once and label.endswith("/base"):
            if base_seen:
                continue
            base_seen, label = True, "base"
        while label in taken:
            label += "'"
        taken.add(label)
        yield label, value


def compare(run_dirs: list[str | Path], out: str | Path, stages: list[str] | None = None,
            base_once: bool = False, title: str | None = None) -> Path:
    """One report over ``run_dirs``. ``stages``: keep only these evaluation stages of training runs
    (e.g. ``["base", "final"]``); ``base_once``: keep ``base`` from the first run that has it only
    (the runs of one sweep evaluate the same base model on the same prompts)."""
    def kept():
        for d in run_dirs:
            flags = outcomes(Path(d))
            for label, bench in columns(Path(d)).items():
                stage = label.rsplit("/", 1)[-1] if "/" in label else None
                if stage is None or stages is None or stage in stages:
                    yield label, (bench, flags.get(label, {}))

    both = dict(_unique_columns(kept(), base_once))
    models = {label: bench for label, (bench, _) in both.items()}
    lines, paired = paired_lines(models, {label: flags for label, (_, flags) in both.items()})
    metrics, report = write_suite_report(Path(out), title or "reasonalign compare: " + ", ".join(map(str, run_dirs)),
                                         models, extra={"runs": [str(d) for d in run_dirs], "paired": paired})
    if lines:
        with open(report, "a") as f:
            f.write("\n".join(lines) + "\n")
    return report


def judged_columns(run_dir: Path, stages: list[str] | None = None) -> dict[str, list[dict]]:
    """``{"<run>/<stage>": judged rows}`` for each evaluation stage of a training run that wrote
    ``stages/eval_<stage>/judged.jsonl`` (eval-only runs have none: an empty dict)."""
    run_dir = Path(run_dir)
    data = _metrics(run_dir)
    out = {}
    for stage in data.get("eval") or {}:
        path = run_dir / "stages" / f"eval_{stage}" / "judged.jsonl"
        if path.is_file() and (stages is None or stage in stages):
            out[f"{run_dir.resolve().name}/{stage}"] = read_jsonl(path)
    return out


def per_prompt(run_dirs: list[str | Path], out: str | Path, stages: list[str] | None = None,
               base_once: bool = False) -> Path:
    """``per_prompt.md`` in ``out``: one row per held-out prompt, the models that answered it
    (the judge's ``complied``), sorted by label and then by how many answered. ``stages`` and
    ``base_once`` as in :func:`compare`."""
    judged = ((label, rows) for d in run_dirs for label, rows in judged_columns(Path(d), stages).items())
    cols = {label: {r["id"]: r for r in rows} for label, rows in _unique_columns(judged, base_once)}
    if not cols:
        raise ValueError("--per-prompt: no stages/eval_*/judged.jsonl in the given runs")
    ids = sorted({i for c in cols.values() for i in c})
    order = {"harmful": 0, "borderline": 1, "benign": 2}
    rows = []
    for i in ids:
        r = next(c[i] for c in cols.values() if i in c)
        marks = [("✓" if c[i]["complied"] else "·") if i in c else " " for c in cols.values()]
        rows.append((order.get(r["label"], 3), r["label"], -marks.count("✓") if r["label"] == "harmful"
                     else marks.count("✓"), r, marks))
    rows.sort(key=lambda x: (x[0], x[2], x[3]["id"]))
    names = list(cols)
    lines = ["# Per-prompt compliance", "", "✓ answered (complied), · refused, blank: not evaluated. Models: "
             + ", ".join(f"{k + 1} = `{n}`" for k, n in enumerate(names)) + ".", "",
             "| label | prompt | answered | " + " | ".join(str(k + 1) for k in range(len(names))) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for _, label, _, r, marks in rows:
        text = " ".join(r["text"].split())
        text = (text[:80] + "…" if len(text) > 80 else text).replace("|", "\\|")
        lines.append(f"| {label} | {text} | {marks.count('✓')}/{sum(m != ' ' for m in marks)} | "
                     + " | ".join(marks) + " |")
    path = Path(out) / "per_prompt.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reasonalign.compare", description=__doc__.split("\n\n")[1])
    p.add_argument("runs", nargs="+", help="run directories holding metrics.json")
    p.add_argument("--out", default="runs/compare", help="output directory (default runs/compare)")
    p.add_argument("--stages", default=None,
                   help="comma-separated evaluation stages to keep from training runs (e.g. base,final)")
    p.add_argument("--base-once", action="store_true",
                   help="keep the base model's column from the first run only (runs of one sweep)")
    p.add_argument("--per-prompt", action="store_true",
                   help="also write per_prompt.md: each held-out prompt and the models that answered it")
    args = p.parse_args(argv)
    stages = args.stages.split(",") if args.stages else None
    try:
        report = compare(args.runs, args.out, stages=stages, base_once=args.base_once)
        table = per_prompt(args.runs, args.out, stages, args.base_once) if args.per_prompt else None
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}")
        return 2
    print(f"report: {Path(report).resolve()}")
    if table:
        print(f"per-prompt table: {Path(table).resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
