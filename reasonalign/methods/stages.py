"""Stages that methods share: prompts, base-model answers, baseline data, SFT, DPO, evaluation.

Each builder returns a :class:`~reasonalign.pipeline.Stage` whose ``config`` is exactly the config
slice that shapes its output, so a change re-runs that stage and, through the fingerprints,
everything downstream, and nothing else.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from reasonalign.config import Config
from reasonalign.paths import cache_dir
from reasonalign.pipeline import Stage, StageContext, read_jsonl, without_off, write_jsonl

log = logging.getLogger("reasonalign.stages")

PROMPTS = "prompts"
RESPONSES = "base_responses"
BASELINE_DATA = "baseline_data"


EVAL_ONLY_KEYS = {"verdict_head": None, "verdict_style": "ex_ante"}  # python -m reasonalign.eval's
# eval.backend, replaced by the top-level generation_backend (in no fingerprint: both backends give
# the same outputs), stays in eval fingerprints at its old default so earlier runs keep theirs
LEGACY_EVAL_KEYS = {"backend": "auto"}


def eval_fingerprint(ev) -> dict:
    """An EvalConfig as an eval stage's fingerprint; the eval-only keys, unused here, are left out
    while unset so that runs made before them keep their fingerprints."""
    return {**without_off(asdict(ev), EVAL_ONLY_KEYS), **LEGACY_EVAL_KEYS}


def model_dir_of(stage_path: Path) -> str:
    return str(Path(stage_path) / "model")


def head_stage_name(model_stage: str) -> str:
    """The stage that fits ``model_stage``'s verdict head (``CommonStages.verdict_head``)."""
    return f"{model_stage}_head"


class CommonStages:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.cache = cache_dir(cfg.cache_dir)

    # -- helpers ---------------------------------------------------------------------------------
    def base_model_dir(self) -> str:
        from reasonalign.models import resolve_model_dir

        return resolve_model_dir(self.cfg.model, self.cache)

    def _model_fp(self) -> dict:
        return asdict(self.cfg.model)

    def _init_dir(self, ctx: StageContext, init: str | None) -> str:
        return model_dir_of(ctx.inputs[init]) if init else self.base_model_dir()

    # -- data ------------------------------------------------------------------------------------
    def prompts(self) -> Stage:
        """Load every prompt source, dedup, split train/eval, run the leakage check."""

        def run(ctx: StageContext) -> dict:
            from reasonalign.data.prompts import prompt_splits

            train, evals, report = prompt_splits(self.cfg.data, self.cache)
            write_jsonl(ctx.out / "train_prompts.jsonl", (r.to_dict() for r in train))
            write_jsonl(ctx.out / "eval_prompts.jsonl", (r.to_dict() for r in evals))
            (ctx.out / "split_report.json").write_text(json.dumps(report, indent=2, default=str))
            log.info("prompts: %d train, %d eval; leakage check: %s", len(train), len(evals),
                     report.get("leakage", report.get("leakage_removed")))
            return {"train": len(train), "eval": len(evals), "split_report": report}

        data = asdict(self.cfg.data)  # an empty exclude (added later) keeps older runs' fingerprints
        # an exclude field with no values excludes nothing: left out, like an empty exclude
        for src in data["sources"]:
            src["exclude"] = {f: vs for f, vs in src["exclude"].items() if vs}
        data["sources"] = [without_off(src, {"exclude": {}}) for src in data["sources"]]
        return Stage(PROMPTS, run, config=data)

    def base_responses(self) -> Stage:
        """The base model's own answers to the training prompts (batched, resumable)."""

        def run(ctx: StageContext) -> dict:
            from reasonalign.components.generation import (
                generate_resumable,
                load_generator,
                release_generator,
            )
            from reasonalign.components.judges import get_judge
            from reasonalign.models import chat_messages

            prompts = read_jsonl(ctx.inputs[PROMPTS] / "train_prompts.jsonl")
            path = self.base_model_dir()
            model, tok = load_generator(self.cfg.model, path, self.cfg.generation_backend, seed=self.cfg.seed)
            items = [{"id": p["id"], "messages": chat_messages(self.cfg.model, p["text"])} for p in prompts]
            rows = generate_resumable(model, tok, items, self.cfg.responses, ctx.out / "generations.jsonl",
                                      desc="base answers (train prompts)", seed=self.cfg.seed)
            release_generator(model)  # the judge may load a model onto the GPU next
            del model
            judge = get_judge(self.cfg.eval.judge)
            complied = judge.judge([p["text"] for p in prompts], [r["response"] for r in rows])
            out = [{**p, "response": r["response"], "n_tokens": r["n_tokens"], "complied": c}
                   for p, r, c in zip(prompts, rows, complied, strict=True)]
            write_jsonl(ctx.out / "responses.jsonl", out)
            return {"n": len(out), **_compliance(out)}

        return Stage(RESPONSES, run, deps=[PROMPTS],
                     config={"model": self._model_fp(), "generation": asdict(self.cfg.responses),
                             "judge": self.cfg.eval.judge})

    def baseline_data(self) -> Stage:
        """SFT records and preference pairs for the plain baselines (``components/pairs.py``)."""

        def run(ctx: StageContext) -> dict:
            from reasonalign.components.pairs import build_baseline_data
            from reasonalign.models import chat_messages

            rows = read_jsonl(ctx.inputs[RESPONSES] / "responses.jsonl")
            sft, pairs, counts = build_baseline_data(
                rows, {r["id"]: r["response"] for r in rows}, {r["id"]: r["complied"] for r in rows},
                prompt_messages=lambda t: chat_messages(self.cfg.model, t))
            write_jsonl(ctx.out / "sft.jsonl", sft)
            write_jsonl(ctx.out / "pairs.jsonl", pairs)
            return {"sft_rows": len(sft), "pairs": len(pairs), **counts}

        return Stage(BASELINE_DATA, run, deps=[RESPONSES], config={"system_prompt": self.cfg.model.system_prompt})

    # -- training --------------------------------------------------------------------------------
    def sft(self, name: str, data: tuple[str, str], init: str | None = None, trainer=None) -> Stage:
        """SFT on ``data = (stage, file)``, starting from stage ``init``'s model (None: the base).
        ``trainer``: a method's own TrainerConfig for this stage (default ``cfg.trainer``)."""
        t = trainer or self.cfg.trainer

        def run(ctx: StageContext) -> dict:
            from reasonalign.components.sft import train_sft

            rows = read_jsonl(ctx.inputs[data[0]] / data[1])
            return train_sft(self._init_dir(ctx, init), rows, ctx.out, self.cfg.model, t)

        return Stage(name, run, deps=[data[0]] + ([init] if init else []),
                     config={"model": self._model_fp(), "data_file": data[1], "sft": asdict(t.sft),
                             "finetune": t.finetune, "lora": asdict(t.lora), "seed": t.seed, "save": t.save},
                     distributed=True)

    def dpo(self, name: str, data: tuple[str, str], init: str | None = None, trainer=None) -> Stage:
        """DPO on ``data``; ``init``'s model is both the starting policy and the reference.
        ``trainer``: a method's own TrainerConfig for this stage (default ``cfg.trainer``)."""
        t = trainer or self.cfg.trainer

        def run(ctx: StageContext) -> dict:
            from reasonalign.components.dpo import train_dpo

            rows = read_jsonl(ctx.inputs[data[0]] / data[1])
            return train_dpo(self._init_dir(ctx, init), rows, ctx.out, self.cfg.model, t)

        return Stage(name, run, deps=[data[0]] + ([init] if init else []),
                     config={"model": self._model_fp(), "data_file": data[1], "dpo": asdict(t.dpo),
                             "finetune": t.finetune, "lora": asdict(t.lora), "seed": t.seed, "save": t.save},
                     distributed=True)

    def verdict_head(self, model_stage: str, head_cfg) -> Stage:
        """``<model_stage>_head``: a verdict head (``components/verdict_head.py``) fitted on the
        training prompts with ``model_stage``'s model; writes ``verdict_head.json``."""

        def run(ctx: StageContext) -> dict:
            from dataclasses import asdict as as_dict

            from reasonalign.components.verdict_head import HEAD_FILE, fit_head
            from reasonalign.models import load_model, load_tokenizer

            path = model_dir_of(ctx.inputs[model_stage])
            model, tok = load_model(self.cfg.model, path), load_tokenizer(self.cfg.model, path)
            head = fit_head(model, tok, self.cfg.model, read_jsonl(ctx.inputs[PROMPTS] / "train_prompts.jsonl"),
                            head_cfg)
            head.save(ctx.out / HEAD_FILE)
            return {k: v for k, v in as_dict(head).items() if k not in ("mean", "scale", "coef")}

        return Stage(head_stage_name(model_stage), run, deps=[PROMPTS, model_stage],
                     config={"model": self._model_fp(), "verdict_head": head_cfg.fingerprint()})

    # -- evaluation ------------------------------------------------------------------------------
    def eval_stage(self, name: str, model_stage: str | None, eval_cfg=None, head: tuple[str, str] | None = None) -> Stage:
        """Generate on the held-out prompts with ``model_stage``'s model (None: the base) and judge;
        with ``eval.benchmarks`` (eval=suite) also run the benchmark suite (leakage-checked against
        this run's training prompts). ``eval_cfg``: a method's own EvalConfig (default ``cfg.eval``).
        ``head``: ``(verdict head stage, reasoning style)``: its verdict opens every thought."""
        ev = eval_cfg or self.cfg.eval

        def run(ctx: StageContext) -> dict:
            from reasonalign.eval.runner import evaluate_model

            path = self._init_dir(ctx, model_stage)
            metrics = evaluate_model(path, ctx.inputs[PROMPTS] / "eval_prompts.jsonl", ctx.out,
                                     self.cfg.model, ev, self.cfg.cot,
                                     verdict_head=ctx.inputs[head[0]] if head else None,
                                     style=head[1] if head else "ex_ante", backend=self.cfg.generation_backend)
            if ev.benchmarks or ev.prompt_files:  # the benchmark suite too
                from reasonalign.eval.suite import evaluate_suite, load_train_texts

                train = load_train_texts(ctx.inputs[PROMPTS] / "train_prompts.jsonl")
                metrics["benchmarks"] = evaluate_suite(path, ctx.out / "benchmarks", self.cfg.model, ev,
                                                       self.cfg.cot, train, self.cache,
                                                       verdict_head=ctx.inputs[head[0]] if head else None,
                                                       style=head[1] if head else "ex_ante",
                                                       backend=self.cfg.generation_backend)
                (ctx.out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
            return metrics

        suite = bool(ev.benchmarks or ev.prompt_files)
        # the suite opens thoughts with the head too (before, only the held-out prompts did)
        head_fp = {"verdict_head": {"style": head[1], **({"suite": True} if suite else {})}} if head else {}
        return Stage(name, run, deps=[PROMPTS] + ([model_stage] if model_stage else []) + ([head[0]] if head else []),
                     config={"model": self._model_fp(), "eval": eval_fingerprint(ev), "cot": asdict(self.cfg.cot),
                             **head_fp})

    def evaluation(self, final: str | None, eval_cfg=None, head_style: str | None = None,
                   head_of: str | None = None) -> list[Stage]:
        """``eval_base`` (if ``eval.evaluate_base``) and ``eval_final`` on ``final``'s model (with
        a verdict head when ``head_style`` is given: ``head_of``'s, by default ``final``'s)."""
        out = []
        if self.cfg.eval.evaluate_base or final is None:
            out.append(self.eval_stage("eval_base", None, eval_cfg))
        if final is not None:
            head = (head_stage_name(head_of or final), head_style) if head_style else None
            out.append(self.eval_stage("eval_final", final, eval_cfg, head))
        return out


def _compliance(rows: list[dict]) -> dict:
    out = {}
    for label in ("harmful", "benign", "borderline"):
        sel = [r["complied"] for r in rows if r["label"] == label]
        if sel:
            out[f"base_{label}_compliance"] = sum(sel) / len(sel)
    return out
