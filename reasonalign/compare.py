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


def compare(run_dirs: list[str | Path], out: str | Path) -> Path:
    models: dict[str, dict[str, dict]] = {}
    for d in run_dirs:
        for label, bench in columns(Path(d)).items():
            while label in models:
                label += "'"
            models[label] = bench
    _, report = write_suite_report(Path(out), "reasonalign compare: " + ", ".join(map(str, run_dirs)), models,
                                   extra={"runs": [str(d) for d in run_dirs]})
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reasonalign.compare", description=__doc__.split("\n\n")[1])
    p.add_argument("runs", nargs="+", help="run directories holding metrics.json")
    p.add_argument("--out", default="runs/compare", help="output directory (default runs/compare)")
    args = p.parse_args(argv)
    try:
        report = compare(args.runs, args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}")
        return 2
    print(f"report: {Path(report).resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
