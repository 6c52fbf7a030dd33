"""``python -m reasonalign.eval``: evaluate a model on the benchmark suite without training.

    python -m reasonalign.eval model=smollm2-135m                    # eval=suite is the default here
    python -m reasonalign.eval model=hf model.name_or_path=runs/dpo-smollm2-135m-default/stages/dpo/model
    python -m reasonalign.eval model=tiny-random eval=suite_tiny eval_dir=/tmp/ev judge=refusal

The same config tree as ``python -m reasonalign`` (``conf/config.yaml``), with ``eval=suite`` as
the default. One resumable pipeline stage per benchmark under ``eval_dir`` (default
``runs/eval-${safe_name:${model.name}}-${eval.name}``): re-running skips finished benchmarks and an interrupted
one resumes its generations. Writes ``report.md``, ``metrics.json``, ``rates.png`` and
``lengths.png``. A checkpoint inside a run (``<run>/stages/<stage>/model``) is leakage-checked against
that run's training prompts (or set ``eval.train_prompts=<run dir or file>``). A model trained with
a verdict head is evaluated with it by ``eval.verdict_head=<run>/stages/<stage>_head``
(``eval.verdict_style``: ``ex_ante`` for ERPO, ``long_chain`` for SaRO).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from reasonalign.cli import conf_dir, exit_codes, protect, redact
from reasonalign.config import Config, ConfigError, register_configs

log = logging.getLogger("reasonalign.eval")


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_eval(cfg: DictConfig | Config) -> Path:
    """Evaluate ``cfg.model`` on ``cfg.eval``'s benchmarks into ``cfg.eval_dir``; the report path."""
    from reasonalign.components.judges import get_judge, helpfulness_fingerprint, helpfulness_scorer
    from reasonalign.eval.suite import (
        ModelHandle,
        benchmark_limit,
        evaluate_benchmark,
        load_train_texts,
        suite_benchmarks,
        train_prompts_file,
    )
    from reasonalign.eval.suite_report import write_suite_report
    from reasonalign.methods.stages import fingerprint_value
    from reasonalign.models import resolve_model_dir
    from reasonalign.paths import cache_dir
    from reasonalign.pipeline import Stage, read_jsonl, run_pipeline

    config: Config = OmegaConf.to_object(cfg) if isinstance(cfg, DictConfig) else cfg
    ev = config.eval
    if not ev.benchmarks and not ev.prompt_files:
        raise ConfigError(f"eval={ev.name} has no benchmarks: use eval=suite (or eval=suite_tiny), or give "
                          f"eval.prompt_files=[file.jsonl,...]")
    from reasonalign.cli import preflight

    per_bench = [benchmark_limit(ev, b) or 100 for b in ev.benchmarks] + [min(100, ev.max_per_benchmark or 100)] * len(ev.prompt_files)
    preflight(config, None, n_tokens=sum(per_bench) * ev.generation.max_new_tokens)
    out = Path(config.eval_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(redact(OmegaConf.to_container(
        OmegaConf.structured(config), resolve=True)))))
    cache = cache_dir(config.cache_dir)
    model_path = resolve_model_dir(config.model, cache)
    train_file = train_prompts_file(ev, config.model.name_or_path if config.model.kind == "hf" else None)
    train_texts = load_train_texts(train_file)
    if train_file:
        log.info("leakage check against %d training prompts in %s", len(train_texts), train_file)
    weights = sorted(Path(model_path).glob("*.safetensors")) if Path(model_path).is_dir() else []
    model_fp = {"model": asdict(config.model), "path": model_path,
                "weights": [(w.name, w.stat().st_size, int(w.stat().st_mtime)) for w in weights]}
    handle = ModelHandle(config.model, model_path, config.generation_backend)
    head, head_fp, head_file = None, {}, None
    if ev.verdict_head:
        from reasonalign.components.cot import CoTFormat
        from reasonalign.components.verdict_head import HEAD_FILE, VerdictHead

        try:  # an unknown style fails here, before any generation
            CoTFormat(config.cot).steps(ev.verdict_style)
        except ValueError as e:
            raise ConfigError(f"eval.verdict_style: {e}") from None
        head_file = Path(ev.verdict_head).expanduser()
        head_file = head_file / HEAD_FILE if head_file.is_dir() else head_file
        if not head_file.is_file():
            raise FileNotFoundError(f"eval.verdict_head: no {HEAD_FILE} at {ev.verdict_head}")
        head = (VerdictHead.load(head_file), ev.verdict_style)
        head_fp = {"verdict_head": {"file": _digest(head_file.read_text()), "style": ev.verdict_style}}
        log.info("verdict head %s (layer %d) opens every thought, style %s", head_file, head[0].layer,
                 ev.verdict_style)
    judge_box: list = []

    def judge():
        """The judge and the helpfulness scorer, built once when a benchmark first needs them."""
        if not judge_box:
            j = get_judge(ev.judge)
            judge_box.extend([j, helpfulness_scorer(ev.judge, j)])
        return judge_box[0], judge_box[1]

    def stage(name: str, family: str, rows: list[dict]) -> Stage:
        def run(ctx):
            j, scorer = judge()
            return evaluate_benchmark(handle, name, family, rows, ctx.out, ev, config.cot, j, train_texts,
                                      head, scorer)

        return Stage(f"bench_{name}", run, config={
            **model_fp, "generation": asdict(ev.generation), "judge": fingerprint_value(ev.judge),
            "cot": asdict(config.cot), "rows": _digest(rows), "train": _digest(train_texts),
            "threshold": ev.near_duplicate_threshold, **head_fp, **helpfulness_fingerprint(ev.judge)},
            version="2")  # 2: judged rows and metrics carry deflections

    benches = suite_benchmarks(ev, cache)
    results = run_pipeline([stage(n, f, r) for n, f, r in benches], out)
    label = config.model.name
    models = {label: {n: results[f"bench_{n}"].metrics for n, _, _ in benches}}
    judged = {label: [row for n, _, _ in benches if (results[f"bench_{n}"].path / "judged.jsonl").exists()
                      for row in read_jsonl(results[f"bench_{n}"].path / "judged.jsonl")]}
    _, report = write_suite_report(out, f"reasonalign eval: `{label}` on `{ev.name}`", models, judged, extra={
        "model": label, "model_path": model_path, "eval": ev.name, "judge": redact({**asdict(ev.judge), "kind": ev.judge.kind}),
        "train_prompts": str(train_file) if train_file else None,
        "verdict_head": {"file": str(head_file), "style": ev.verdict_style} if head else None,
        "stages": {n: {"fingerprint": r.fingerprint, "skipped": r.skipped, "seconds": round(r.seconds, 2)}
                   for n, r in results.items()}})
    print(f"report: {report.resolve()}")
    return report


def _task(cfg: DictConfig) -> None:
    with exit_codes(cfg.eval_dir):
        run_eval(cfg)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    # hydra_argv puts Hydra's flags (--config-dir DIR, --cfg job) before every override
    if not any(a.split("=", 1)[0].lstrip("+~") == "eval" for a in args):
        args.append("eval=suite")
    if not any(a.startswith("hydra.run.dir=") for a in args):
        args.append("hydra.run.dir=${eval_dir}")
    from reasonalign.cli import hydra_argv

    sys.argv = [sys.argv[0], *hydra_argv(args)]
    protect(args)
    register_configs()
    hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")(_task)()


if __name__ == "__main__":
    main()
