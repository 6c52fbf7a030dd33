"""``python -m reasonalign.compare RUN_DIR... [--out DIR]``: several runs side by side.

Reads each directory's ``metrics.json``: an eval-only run (``python -m reasonalign.eval``) gives one
column (its model); a training run gives one column per evaluation stage (``<run>/base``,
``<run>/final``...), with its benchmark-suite results when the run used ``eval=suite`` and its
held-out split as the benchmark ``held_out`` otherwise. Writes ``report.md`` (one table, headline
rate with 95% CI per benchmark and model, and the per-jailbreak-family table), ``rates.png``
(grouped bars with CI error bars) and ``metrics.json`` to ``--out`` (default ``runs/compare``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reasonalign.eval.suite_report import write_suite_report


def _held_out(m: dict) -> dict[str, dict]:
    out = {}
    if m.get("harmful_compliance", {}).get("n"):
        out["held_out_harmful"] = {**m, "family": "harmful", "headline": "harmful_compliance"}
    if m.get("benign_compliance", {}).get("n"):
        out["held_out_benign"] = {**m, "family": "benign", "headline": "benign_compliance"}
    return out


def columns(run_dir: Path) -> dict[str, dict[str, dict]]:
    """``{column label: {benchmark: metrics}}`` for one run directory."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.json (is it a finished reasonalign run?)")
    data = json.loads(path.read_text())
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


def compare(run_dirs: list[str | Path], out: str | Path, stages: list[str] | None = None,
            base_once: bool = False, title: str | None = None) -> Path:
    """One report over ``run_dirs``. ``stages``: keep only these evaluation stages of training runs
    (e.g. ``["base", "final"]``); ``base_once``: keep ``base`` from the first run that has it only
    (the runs of one sweep evaluate the same base model on the same prompts)."""
    models: dict[str, dict[str, dict]] = {}
    base_seen = False
    for d in run_dirs:
        for label, bench in columns(Path(d)).items():
            stage = label.rsplit("/", 1)[-1] if "/" in label else None
            if stage is not None and stages is not None and stage not in stages:
                continue
            if stage == "base" and base_once:
                if base_seen:
                    continue
                base_seen, label = True, "base"
            while label in models:
                label += "'"
            models[label] = bench
    _, report = write_suite_report(Path(out), title or "reasonalign compare: " + ", ".join(map(str, run_dirs)),
                                   models, extra={"runs": [str(d) for d in run_dirs]})
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reasonalign.compare", description=__doc__.split("\n\n")[1])
    p.add_argument("runs", nargs="+", help="run directories holding metrics.json")
    p.add_argument("--out", default="runs/compare", help="output directory (default runs/compare)")
    p.add_argument("--stages", default=None,
                   help="comma-separated evaluation stages to keep from training runs (e.g. base,final)")
    p.add_argument("--base-once", action="store_true",
                   help="keep the base model's column from the first run only (runs of one sweep)")
    args = p.parse_args(argv)
    try:
        report = compare(args.runs, args.out, stages=args.stages.split(",") if args.stages else None,
                         base_once=args.base_once)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}")
        return 2
    print(f"report: {Path(report).resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
