"""Stages that methods share: prompts, base-model answers, baseline data, teacher-written data,
SFT, DPO, verdict heads, evaluation.

Each builder returns a :class:`~reasonalign.pipeline.Stage` whose ``config`` is exactly the config
slice that shapes its output (:meth:`CommonStages.slice`: dotted paths into the run config, plus
computed values), so a change re-runs that stage and, through the fingerprints, everything
downstream, and nothing else. The fields that never shape an output are declared once per config
type in :data:`NOT_OUTPUT`. When a stage's code changes what it writes, bump its ``version``
(reasonalign/pipeline/stage.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasonalign.components.judges import helpfulness_fingerprint, judge_fingerprint
from reasonalign.components.teachers.base import teacher_fingerprint
from reasonalign.components.verdict_head import HEAD_NOT_OUTPUT, VerdictHeadConfig
from reasonalign.config import Config, EvalConfig, JudgeConfig, MethodConfig, TeacherConfig, TrainerConfig
from reasonalign.paths import cache_dir
from reasonalign.pipeline import (
    Stage,
    StageContext,
    config_slice,
    config_value,
    dumps,
    read_jsonl,
    write_jsonl,
)

log = logging.getLogger("reasonalign.stages")

PROMPTS = "prompts"
RESPONSES = "base_responses"
BASELINE_DATA = "baseline_data"


# TrainerConfig fields that do not change what a training stage produces: the option's name, how
# often it checkpoints, where it logs. Every other field is in the stage's fingerprint, including any added later.
TRAINER_NOT_OUTPUT = ("name", "save_steps", "report_to")
# EvalConfig fields no stage of a run reads: whether eval_base runs at all, and the eval-only
# entry's (python -m reasonalign.eval) leakage file and verdict head (a run's head is its method's)
EVAL_NOT_OUTPUT = ("evaluate_base", "train_prompts", "verdict_head", "verdict_style")
# the one place that says, per config type, which fields are left out of every stage's fingerprint
# (wherever the type appears in a slice): those that do not change what a stage writes. The
# teacher's and the judge's come with their functions, which leave out TEACHER_NOT_OUTPUT /
# JUDGE_NOT_OUTPUT (and name a shipped class by its kind; the rules teacher adds its wording's version)
NOT_OUTPUT: dict[type, Any] = {
    TrainerConfig: TRAINER_NOT_OUTPUT, EvalConfig: EVAL_NOT_OUTPUT, VerdictHeadConfig: HEAD_NOT_OUTPUT,
    TeacherConfig: teacher_fingerprint, JudgeConfig: judge_fingerprint}


def fingerprint_value(value: Any) -> Any:
    """``value`` (a config dataclass, or anything JSON-able) as a stage's fingerprint holds it:
    without the fields :data:`NOT_OUTPUT` declares."""
    return config_value(value, NOT_OUTPUT)


@dataclass
class ReasoningMethodConfig(MethodConfig):
    """The keys of the reasoning methods (ERPO, SaRO) have in common."""

    # ours, needs teacher.verdict_first: a linear head on a DPO-trained model's own prompt hidden
    # states picks the verdict its thought opens with (components/verdict_head.py), added by one
    # hook (CommonStages.verdict_head): in ERPO's stage-3 sampling and its evaluations of the
    # stage-2 and final models, in SaRO's eval_final
    verdict_head: VerdictHeadConfig = field(default_factory=VerdictHeadConfig)


def trainer_fingerprint(t, kind: str) -> dict:
    """The trainer settings a ``kind`` (``sft`` | ``dpo``) stage trains with, for its fingerprint: the
    whole TrainerConfig but the other trainer's settings and :data:`TRAINER_NOT_OUTPUT`."""
    fp = fingerprint_value(t)
    fp.pop("dpo" if kind == "sft" else "sft")
    return fp


def training_rows(path: Path, kind: str) -> list[dict]:
    """The rows of an SFT (``kind="sft"``) or preference (``"dpo"``) data file, each checked against
    TRL's schema (docs/plugins.md): a bad row fails before training with its file, line and field."""
    from reasonalign.data.schema import check_preference_row, check_sft_row

    check = check_sft_row if kind == "sft" else check_preference_row
    rows = read_jsonl(path)
    for i, row in enumerate(rows, 1):
        check(row, str(path), i)
    return rows


def model_dir_of(stage_path: Path) -> str:
    return str(Path(stage_path) / "model")


def marker_metrics(stage_dir: Path) -> dict:
    """The metrics a finished stage recorded in its marker (``{}`` if none)."""
    from reasonalign.pipeline import read_marker

    return (read_marker(stage_dir) or {}).get("metrics", {})


@dataclass
class TeacherData:
    """What :meth:`CommonStages.teacher_data` hands its ``build``: per prompt id the base-model row,
    its rule and reference answer (``refs``) and the thought requests made for it (``requests``);
    every written thought by request key (``thoughts``: ``{"thought", "ok", "reason"}``, rejected
    ones included) and the validator's ``counts``."""

    refs: dict[str, tuple]
    requests: dict[str, list]
    thoughts: dict[str, dict]
    counts: dict
    fmt: object
    rules: object


def head_stage_name(model_stage: str) -> str:
    """The stage that fits ``model_stage``'s verdict head (``CommonStages.verdict_head``)."""
    return f"{model_stage}_head"


@dataclass(frozen=True)
class VerdictHeadUse:
    """The verdict head (ours, optional; ``method.verdict_head``) as :meth:`CommonStages.verdict_head`
    hands it to a method: the stage that fits it (``stages``: none while off) and, for the stages
    that generate with it, the input to add (``deps``), its reasoning style and the fitted head
    (``input(ctx)``). While off it is empty and false, and every use of it is a no-op."""

    stages: tuple[Stage, ...] = ()
    style: str | None = None
    batch_size: int = 8

    def __bool__(self) -> bool:
        return bool(self.stages)

    @property
    def deps(self) -> list[str]:
        return [s.name for s in self.stages]

    def input(self, ctx: StageContext):
        """The fitted head for a stage that has :attr:`deps` among its inputs (None while off)."""
        from reasonalign.components.verdict_head import VerdictHeadInput

        return VerdictHeadInput(ctx.inputs[self.stages[0].name], self.style, self.batch_size) if self else None


class CommonStages:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.cache = cache_dir(cfg.cache_dir)

    # -- helpers ---------------------------------------------------------------------------------
    def slice(self, *keys: str, drop: Sequence[str] = (), **computed: Any) -> dict:
        """A stage's ``config``: the run config at each dotted path in ``keys`` (``"method.lcpo"``,
        ``"teacher"``, ``"eval.judge"``), whole but for :data:`NOT_OUTPUT` and the paths in
        ``drop``, plus ``computed`` values (an iteration's ``t``, a method's own trainer)."""
        out = config_slice(self.cfg, keys, NOT_OUTPUT, drop)
        clash = set(out) & set(computed)
        if clash:
            raise ValueError(f"computed fingerprint values {sorted(clash)} shadow config keys")
        return {**out, **{k: fingerprint_value(v) for k, v in computed.items()}}

    def base_model_dir(self) -> str:
        from reasonalign.models import resolve_model_dir

        return resolve_model_dir(self.cfg.model, self.cache)

    def _model_fp(self) -> dict:
        return fingerprint_value(self.cfg.model)

    def _init_dir(self, ctx: StageContext, init: str | None) -> str:
        return model_dir_of(ctx.inputs[init]) if init else self.base_model_dir()

    # -- data ------------------------------------------------------------------------------------
    def prompts(self) -> Stage:
        """Load every prompt source, dedup, split train/eval, run the leakage check."""

        def run(ctx: StageContext) -> dict:
            from reasonalign.data.prompts import prompt_splits

            train, evals, report = prompt_splits(self.cfg.data, self.cache)
            train, evals = self._fit_context(train, evals, report)
            short = {split: {label: f"{report[split].get(label, 0)} of {n}" for label, n in asked.items()
                             if report[split].get(label, 0) < n} for split, asked in report["asked"].items()}
            short = {split: v for split, v in short.items() if v}
            if short:
                report["shortfall"] = short
                log.warning("prompts: the sources hold fewer prompts than asked for: %s", short)
            write_jsonl(ctx.out / "train_prompts.jsonl", (r.to_dict() for r in train))
            write_jsonl(ctx.out / "eval_prompts.jsonl", (r.to_dict() for r in evals))
            (ctx.out / "split_report.json").write_text(json.dumps(report, indent=2, default=str))
            log.info("prompts: %d train, %d eval; leakage check: %s", len(train), len(evals),
                     report.get("leakage", report.get("leakage_removed")))
            return {"train": len(train), "eval": len(evals), "split_report": report}

        return Stage(PROMPTS, run, config=self.slice("data", max_prompt_tokens=self._max_prompt_tokens_fp()))

    def _generation_budget(self) -> int:
        return max(self.cfg.responses.max_new_tokens, self.cfg.eval.generation.max_new_tokens)

    def _max_prompt_tokens_fp(self) -> dict:
        """What decides the longest prompt kept (the model's context, from its config, minus the
        generation budget), for the prompts stage's fingerprint, without loading anything."""
        return {"model": self._model_fp(), "budget": self._generation_budget()}

    def _fit_context(self, train: list, evals: list, report: dict) -> tuple[list, list]:
        """Drop prompts whose tokens and the generation budget exceed the model's context (a 1 MB
        prompt would otherwise reach generation and ask for tens of GB); the count goes to the
        report and the console."""
        from transformers import AutoConfig

        from reasonalign.models import load_tokenizer

        path = self.base_model_dir()
        config = AutoConfig.from_pretrained(path, trust_remote_code=self.cfg.model.trust_remote_code)
        context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        if not context:
            return train, evals
        limit = int(context) - self._generation_budget()
        tok = load_tokenizer(self.cfg.model, path)
        kept, dropped = [], {}
        for split, rows in (("train", train), ("eval", evals)):
            ok = [r for r in rows if 4 * len(r.text) <= limit or len(tok(r.text, add_special_tokens=False).input_ids) <= limit]
            kept.append(ok)
            if len(ok) < len(rows):
                dropped[split] = len(rows) - len(ok)
        if dropped:
            from collections import Counter

            for split, rows in zip(("train", "eval"), kept, strict=True):
                report[split] = dict(Counter(r.label for r in rows))
            report["too_long_removed"] = {"max_prompt_tokens": limit, **dropped}
            log.warning("prompts: %s prompts longer than %d tokens (the model's context %d minus the generation "
                        "budget) left out", dropped, limit, context)
        return kept[0], kept[1]

    def base_responses(self) -> Stage:
        """The base model's own answers to the training prompts (batched, resumable)."""

        def run(ctx: StageContext) -> dict:
            from reasonalign.components.generation import (
                generate_resumable,
                load_generator,
                release_generator,
            )
            from reasonalign.components.judges import get_judge, judge_labelled
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
            complied = judge_labelled(judge, [p["text"] for p in prompts], [p["label"] for p in prompts],
                                      [r["response"] for r in rows])
            out = [{**p, "response": r["response"], "n_tokens": r["n_tokens"], "complied": c}
                   for p, r, c in zip(prompts, rows, complied, strict=True)]
            write_jsonl(ctx.out / "responses.jsonl", out)
            return {"n": len(out), **_compliance(out)}

        return Stage(RESPONSES, run, deps=[PROMPTS], config=self.slice("model", "responses", "eval.judge"))

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

        return Stage(BASELINE_DATA, run, deps=[RESPONSES], config=self.slice("model.system_prompt"))

    def teacher_data(self, name: str, requests: Callable, build: Callable, keys: Sequence[str], desc: str) -> Stage:
        """A data stage the teacher writes (ERPO's ``erpo_data``, SaRO's ``saro_data``). For every
        training prompt with a reference answer (``components/pairs.reference_answers``: a refusal
        with the rule's safe alternative for a harmful prompt, the base model's own answer for a
        benign one it answered), ``requests(row, rule, reference)`` lists the thoughts to write; the
        teacher writes them (validated, resumable: ``thoughts.jsonl``) and ``build(ctx, data)``
        (:class:`TeacherData`) writes the stage's files and returns its metrics. ``keys``: the
        method's config paths (:meth:`slice`); the rules, CoT format, teacher and system prompt
        join them."""
        cfg = self.cfg

        def run(ctx: StageContext) -> dict:
            from reasonalign.components.cot import CoTFormat
            from reasonalign.components.pairs import reference_answers
            from reasonalign.components.rules import load_rules
            from reasonalign.components.teachers.base import teacher_thoughts

            rules, fmt = load_rules(cfg.rules), CoTFormat(cfg.cot)
            chosen, skipped = reference_answers(read_jsonl(ctx.inputs[RESPONSES] / "responses.jsonl"), rules)
            refs = {r["id"]: (r, rule, ref) for r, rule, ref in chosen}
            reqs = {r["id"]: requests(r, rule, ref) for r, rule, ref in chosen}
            thoughts, counts = teacher_thoughts(cfg.teacher, cfg.model, cfg.generation_backend,
                                                [q for group in reqs.values() for q in group], fmt, rules,
                                                ctx.out / "thoughts.jsonl", desc)
            metrics = build(ctx, TeacherData(refs, reqs, thoughts, counts, fmt, rules))
            return {**metrics, "thoughts": counts, "benign_skipped_base_refused": skipped}

        return Stage(name, run, deps=[RESPONSES],
                     config=self.slice(*keys, "rules", "cot", "teacher", "model.system_prompt"))

    # -- training --------------------------------------------------------------------------------
    def sft(self, name: str, data: tuple[str, str], init: str | None = None, trainer=None) -> Stage:
        """SFT on ``data = (stage, file)``, starting from stage ``init``'s model (None: the base).
        ``trainer``: a method's own TrainerConfig for this stage (default ``cfg.trainer``)."""
        return self._training("sft", name, data, init, trainer)

    def dpo(self, name: str, data: tuple[str, str], init: str | None = None, trainer=None) -> Stage:
        """DPO on ``data``; ``init``'s model is both the starting policy and the reference.
        ``trainer``: a method's own TrainerConfig for this stage (default ``cfg.trainer``)."""
        return self._training("dpo", name, data, init, trainer)

    def _training(self, kind: str, name: str, data: tuple[str, str], init: str | None, trainer) -> Stage:
        t = trainer or self.cfg.trainer

        def run(ctx: StageContext) -> dict:
            from reasonalign.components.dpo import train_dpo
            from reasonalign.components.sft import train_sft

            rows = training_rows(ctx.inputs[data[0]] / data[1], kind)
            return (train_sft if kind == "sft" else train_dpo)(self._init_dir(ctx, init), rows, ctx.out,
                                                               self.cfg.model, t)

        return Stage(name, run, deps=[data[0]] + ([init] if init else []),
                     config=self.slice("model", data_file=data[1], **trainer_fingerprint(t, kind)),
                     distributed=True)

    def verdict_head(self, model_stage: str) -> VerdictHeadUse:
        """The one hook of the verdict head (ours; ``method.verdict_head``, off by default): while
        enabled, ``<model_stage>_head``, which fits a head on ``model_stage``'s model, and how the
        stages that generate use it (:class:`VerdictHeadUse`: a method adds ``head.stages`` after
        ``model_stage`` and passes ``head`` to :meth:`eval_stage` / :meth:`evaluation`, or to its
        own sampling stage); while off (or for a method without the key) an empty one."""
        m = self.cfg.method
        head_cfg = getattr(m, "verdict_head", None)
        if head_cfg is None or not head_cfg.enabled:
            return VerdictHeadUse()
        return VerdictHeadUse((self._verdict_head_stage(model_stage),), m.style, head_cfg.batch_size)

    def _verdict_head_stage(self, model_stage: str) -> Stage:
        """``<model_stage>_head``: a verdict head (``components/verdict_head.py``) fitted on the
        training prompts with ``model_stage``'s model; writes ``verdict_head.json``."""
        head_cfg = self.cfg.method.verdict_head

        def run(ctx: StageContext) -> dict:
            from dataclasses import asdict

            from reasonalign.components.verdict_head import HEAD_FILE, fit_head
            from reasonalign.models import load_model, load_tokenizer

            path = model_dir_of(ctx.inputs[model_stage])
            model, tok = load_model(self.cfg.model, path), load_tokenizer(self.cfg.model, path)
            head = fit_head(model, tok, self.cfg.model, read_jsonl(ctx.inputs[PROMPTS] / "train_prompts.jsonl"),
                            head_cfg)
            head.save(ctx.out / HEAD_FILE)
            return {k: v for k, v in asdict(head).items() if k not in ("mean", "scale", "coef")}

        return Stage(head_stage_name(model_stage), run, deps=[PROMPTS, model_stage],
                     config=self.slice("model", "method.verdict_head"))

    # -- evaluation ------------------------------------------------------------------------------
    def eval_stage(self, name: str, model_stage: str | None, eval_cfg=None,
                   head: VerdictHeadUse = VerdictHeadUse()) -> Stage:
        """Generate on the held-out prompts with ``model_stage``'s model (None: the base) and judge;
        with ``eval.benchmarks`` (eval=suite) also run the benchmark suite (leakage-checked against
        this run's training prompts). ``eval_cfg``: a method's own EvalConfig (default ``cfg.eval``).
        ``head`` (:meth:`verdict_head`): its verdict opens every thought."""
        ev = eval_cfg or self.cfg.eval

        def run(ctx: StageContext) -> dict:
            from reasonalign.eval.runner import evaluate_model

            path = self._init_dir(ctx, model_stage)
            fitted = head.input(ctx)
            opens = {"verdict_head": fitted.path if fitted else None, "style": head.style or "ex_ante"}
            metrics = evaluate_model(path, ctx.inputs[PROMPTS] / "eval_prompts.jsonl", ctx.out,
                                     self.cfg.model, ev, self.cfg.cot, **opens, backend=self.cfg.generation_backend)
            if ev.benchmarks or ev.prompt_files:  # the benchmark suite too
                from reasonalign.eval.suite import evaluate_suite, load_train_texts

                train = load_train_texts(ctx.inputs[PROMPTS] / "train_prompts.jsonl")
                metrics["benchmarks"] = evaluate_suite(path, ctx.out / "benchmarks", self.cfg.model, ev,
                                                       self.cfg.cot, train, self.cache, **opens,
                                                       backend=self.cfg.generation_backend)
                (ctx.out / "metrics.json").write_text(dumps(metrics))
            return metrics

        # version 2: judged rows and metrics carry deflections (eval/runner.mark_deflections)
        return Stage(name, run, deps=[PROMPTS] + ([model_stage] if model_stage else []) + head.deps,
                     config=self.slice("model", "cot", eval=ev, verdict_style=head.style,
                                       **helpfulness_fingerprint(ev.judge)), version="2")

    def evaluation(self, final: str | None, eval_cfg=None, head: VerdictHeadUse = VerdictHeadUse()) -> list[Stage]:
        """``eval_base`` (if ``eval.evaluate_base``) and ``eval_final`` on ``final``'s model (with
        ``head``, :meth:`verdict_head`, opening its thoughts)."""
        out = []
        if self.cfg.eval.evaluate_base or final is None:
            out.append(self.eval_stage("eval_base", None, eval_cfg))
        if final is not None:
            out.append(self.eval_stage("eval_final", final, eval_cfg, head))
        return out


def _compliance(rows: list[dict]) -> dict:
    out = {}
    for label in ("harmful", "benign", "borderline"):
        sel = [r["complied"] for r in rows if r["label"] == label]
        if sel:
            out[f"base_{label}_compliance"] = sum(sel) / len(sel)
    return out
