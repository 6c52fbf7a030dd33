"""One comparison report after a Hydra multirun (``python -m reasonalign -m method=sft,dpo,erpo,saro``).

:class:`ComparisonReport` is a Hydra callback (registered in ``conf/config.yaml`` under
``hydra.callbacks``). It records each job's run directory and wall time and, when the sweep ends,
writes ``<hydra.sweep.dir>/comparison/``: ``report.md`` (the base model once, then every job's
final model; headline rates with 95% Wilson intervals, per-jailbreak-family table, reasoning tokens
and generation time), ``rates.png`` and ``metrics.json``. Runs of one sweep share the data config,
so their held-out prompts are the same; the report says so when they are not.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from reasonalign.redaction import redact_overrides

log = logging.getLogger("reasonalign.sweep")


class ComparisonReport(Callback):
    def __init__(self, stages: list[str] | None = None, subdir: str = "comparison") -> None:
        self.stages = list(stages) if stages else ["base", "final"]
        self.subdir = subdir
        self.jobs: list[dict] = []
        self._t0 = 0.0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.jobs, self._t0 = [], time.time()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._job_t0 = time.time()

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        self.jobs.append({"method": str(config.method.name), "run_dir": str(config.run_dir),
                          "seed": int(config.seed),
                          "overrides": redact_overrides(job_return.overrides or []),
                          "ok": job_return.status == JobStatus.COMPLETED,
                          "seconds": round(time.time() - getattr(self, "_job_t0", time.time()), 1)})

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        ok = [j for j in self.jobs if j["ok"] and (Path(j["run_dir"]) / "metrics.json").is_file()]
        if not ok:
            log.warning("sweep: no finished job to compare")
            return
        out = Path(str(config.hydra.sweep.dir)) / self.subdir
        report = write_sweep_report(ok, out, self.stages, time.time() - self._t0,
                                    failed=[j for j in self.jobs if j not in ok])
        log.info("sweep comparison: %s", report.resolve())
        print(f"comparison report: {report.resolve()}")


def write_sweep_report(jobs: list[dict], out: Path, stages: list[str], wall_seconds: float,
                       failed: list[dict] | None = None) -> Path:
    """The comparison report (``reasonalign.compare``) plus a section on the sweep's jobs: wall
    time, final reasoning tokens and generation time per method against the base model."""
    from reasonalign.compare import compare

    runs = [j["run_dir"] for j in jobs]
    report = compare(runs, out, stages=stages, base_once=True,
                     title="reasonalign sweep: " + ", ".join(j["method"] for j in jobs))
    lines = ["## Sweep", "", f"Wall time of the whole sweep: {wall_seconds / 60:.1f} min "
             "(finished stages of earlier runs are reused, so a job's time is what it still had to do).", "",
             "| method | run dir | job wall time | eval prompts | final: mean reasoning tokens | "
             "final: mean response tokens | final: generation s | base: generation s | eval max new tokens |",
             "|---|---|---|---|---|---|---|---|---|"]
    prompt_sets = set()
    for j in jobs:
        data = json.loads((Path(j["run_dir"]) / "metrics.json").read_text())
        ev = data.get("eval") or {}
        fin, base = ev.get("final") or {}, ev.get("base") or {}
        cfg = _run_config(Path(j["run_dir"]))
        prompt_sets.add(_prompt_digest(Path(j["run_dir"])))
        n = sum((fin.get(k) or {}).get("n", 0) for k in ("harmful_compliance", "benign_compliance"))
        lines.append(f"| {j['method']} | `{j['run_dir']}` | {j['seconds'] / 60:.1f} min | {n or '–'} | "
                     f"{fin.get('mean_thought_tokens', 0):.1f} | {fin.get('mean_response_tokens', 0):.1f} | "
                     f"{fin.get('generation_seconds', '–')} | {base.get('generation_seconds', '–')} | "
                     f"{cfg.get('eval_max_new_tokens', '–')} |")
    lines.append("")
    if len(prompt_sets) > 1:
        lines += ["**Warning:** the runs' held-out prompt files differ (different data configs); "
                  "their rates are not comparable.", ""]
    else:
        lines += ["All runs evaluated the same held-out prompts (identical `eval_prompts.jsonl`).", ""]
    lines += seed_lines(jobs)
    if failed:
        lines += ["Failed or unfinished jobs (not in the table): "
                  + ", ".join(f"{j['method']} ({j['run_dir']})" for j in failed), ""]
    with open(report, "a") as f:
        f.write("\n".join(lines) + "\n")
    meta = out / "sweep.json"
    meta.write_text(json.dumps({"jobs": jobs, "wall_seconds": round(wall_seconds, 1), "stages": stages,
                                "failed": failed or []}, indent=2))
    return report


def seed_lines(jobs: list[dict]) -> list[str]:
    """``## Over seeds``: for every job group that ran with more than one seed (the same overrides
    but ``seed=``), each benchmark's final headline rate as mean ± sd over the seeds."""
    import statistics

    from reasonalign.compare import columns

    groups: dict[str, list[dict]] = {}
    for j in jobs:
        key = " ".join(o for o in j.get("overrides", []) if not o.split("=", 1)[0].lstrip("+~") == "seed") or j["method"]
        groups.setdefault(key, []).append(j)
    rows = []
    for key, js in groups.items():
        if len({j.get("seed", 0) for j in js}) < 2:
            continue
        per_bench: dict[str, list[float]] = {}
        for j in js:
            final = {label: b for label, b in columns(Path(j["run_dir"])).items() if label.endswith("/final")}
            for bench, m in next(iter(final.values()), {}).items():
                if (m.get(m.get("headline", ""), {}) or {}).get("n"):
                    per_bench.setdefault(bench, []).append(m[m["headline"]]["rate"])
        for bench, rates in per_bench.items():
            sd = statistics.stdev(rates) if len(rates) > 1 else 0.0
            rows.append(f"| {key} | {bench} | {len(rates)} | {100 * statistics.mean(rates):.1f}% ± {100 * sd:.1f} | "
                        + ", ".join(f"{100 * r:.1f}%" for r in rates) + " |")
    if not rows:
        return []
    return ["## Over seeds", "", "Final models' headline rate per benchmark over the seeds of each job group "
            "(mean ± sample sd, in points; each seed's rate listed).", "",
            "| jobs | benchmark | seeds | mean ± sd | per seed |", "|---|---|---|---|---|", *rows, ""]


def _prompt_digest(run_dir: Path) -> str | None:
    import hashlib

    p = run_dir / "stages" / "prompts" / "eval_prompts.jsonl"
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None


def _run_config(run_dir: Path) -> dict:
    """The evaluation budget a run's final model was evaluated with (a method may set its own)."""
    from omegaconf import OmegaConf

    p = run_dir / "config.yaml"
    if not p.is_file():
        return {}
    cfg = OmegaConf.load(p)
    n = OmegaConf.select(cfg, "method.eval_max_new_tokens", default=None)
    return {"eval_max_new_tokens": n if n is not None else OmegaConf.select(cfg, "eval.generation.max_new_tokens")}
