"""SaRO: Safety-oriented Reasoning Optimization (Mou et al., 2025; docs/methods/saro.md).

1. ``saro_data`` (reasoning-style warmup data): the teacher writes ``rw_samples`` long-chain,
   policy-guided thoughts (understanding, intent and context, policy check, reflection, decision)
   per training prompt (harmful, jailbreak-wrapped, benign, borderline). Shortest rejection
   sampling keeps the shortest one the validator accepts with the right decision. SFT records:
   prompt -> thought + reference answer (a refusal with the rule's safe alternative for harmful
   prompts, the base model's own answer for benign ones it complied with).
2. ``rw_sft``: SFT on those records (the RW model).
3. ``srpo_pairs``: process-level pairs (branching at a reasoning step, by default the Reflection:
   shared prefix in the prompt, a continuation that reflects correctly against one that reaches
   the wrong outcome) and outcome-level pairs (whole turns), in TRL's standard text format.
4. ``srpo``: DPO on those pairs from the RW model (also the reference).
5. Evaluation of the base, RW and final models; embedding-space analysis (``analysis_base``,
   ``analysis_final``) of harmful, jailbreak-wrapped and benign prompts in the hidden states.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field, replace

from reasonalign.analysis.embedding import POOLINGS, EmbeddingConfig
from reasonalign.components.cot import CoTFormat, ThoughtRequest
from reasonalign.components.srpo import SRPOConfig, srpo_pairs
from reasonalign.components.teachers.base import verdict_problems
from reasonalign.config import ConfigError, DPOOverrides, SFTOverrides
from reasonalign.methods.base import Method
from reasonalign.methods.stages import PROMPTS, ReasoningMethodConfig, model_dir_of
from reasonalign.pipeline import Stage, StageContext, read_jsonl, write_jsonl

log = logging.getLogger("reasonalign.saro")

DATA = "saro_data"
RW = "rw_sft"
PAIRS = "srpo_pairs"
FINAL = "srpo"
LENGTH_UNITS = ("tokens", "chars")


@dataclass
class SaROConfig(ReasoningMethodConfig):
    style: str = "long_chain"
    rw_samples: int = 4  # chains the teacher writes per prompt for shortest rejection sampling
    rw_length: str = "tokens"  # how chain length is measured: tokens (the model's tokenizer) | chars
    srpo: SRPOConfig = field(default_factory=SRPOConfig)
    seed: int = 0
    # SaRO's own sequence length for rw_sft and srpo and its own evaluation budget (null:
    # trainer.{sft,dpo}.max_length and eval.generation.max_new_tokens). Long chains need more than
    # the shared values where those are small: conf/method_scale/saro_<model>.yaml sets them
    max_length: int | None = None
    eval_max_new_tokens: int | None = None
    # repeat benign/borderline RW records until they match the harmful ones in number
    # (components/pairs.balance_labels: with about twice as many harmful records, plain and
    # jailbreak-wrapped, the 135M default learned to refuse by default)
    balance_labels: bool = True
    # the same for the SRPO pairs (58% of them are harmful on the default data; balanced, SRPO
    # raised benign compliance where unbalanced it had not; docs/methods/saro.md)
    balance_pairs: bool = True
    analysis: bool = True  # embedding-space analysis of the base and final models
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    # rw_sft's SFT settings over trainer.sft (null keeps the trainer's; a model's own:
    # conf/method_scale/saro_<model>.yaml)
    sft: SFTOverrides = field(default_factory=SFTOverrides)
    # srpo's DPO settings over trainer.dpo (null keeps the trainer's): an SFT term on the chosen
    # side (as ERPO's stage 2) that keeps the chain's format
    dpo: DPOOverrides = field(default_factory=lambda: DPOOverrides(
        loss_type=["sigmoid", "sft"], loss_weights=[1.0, 1.0]))
    evaluate_rw: bool = True  # also evaluate the RW model (eval_rw)


class SaROMethod(Method):
    """SaRO's stages: reasoning-style warmup (RW), then SRPO's process- and outcome-level DPO."""

    name = "saro"
    Config = SaROConfig
    description = "long-chain reasoning warmup (shortest rejection sampling), process+outcome DPO, embedding analysis"

    def stages(self):
        s, m = self.common, self.config.method
        # ours, optional: the SRPO model's verdict head opens eval_final's chains
        trainer, ev, head = self.stage_trainer(), self.stage_eval(), s.verdict_head(FINAL)
        # 1: long-chain data (shortest of N); 2: reasoning-style warmup
        stages = [s.prompts(), s.base_responses(), *self.warmup(),
                  self.pairs_stage(),  # 3: process- and outcome-level pairs; 4: DPO on them
                  s.dpo(FINAL, data=(PAIRS, "pairs.jsonl"), init=RW, trainer=m.dpo.apply(trainer)), *head.stages]
        evals = s.evaluation(final=FINAL, eval_cfg=ev, head=head)
        if m.evaluate_rw:
            evals.insert(-1, s.eval_stage("eval_rw", RW, ev))
        stages += evals
        if m.analysis:  # 5: the embedding space, before and after
            stages += [self.analysis_stage("analysis_base", None), self.analysis_stage("analysis_final", FINAL)]
        return stages

    def validate(self):
        m = self.config.method
        steps = CoTFormat(self.config.cot).steps(m.style)  # an unknown style fails here
        problems = []
        if m.rw_samples < 1:
            problems.append(f"rw_samples must be >= 1 (got {m.rw_samples})")
        if m.rw_length not in LENGTH_UNITS:
            problems.append(f"rw_length must be one of {', '.join(LENGTH_UNITS)} (got {m.rw_length!r})")
        problems += m.srpo.problems(steps, m.style)
        problems += verdict_problems(self.config.teacher, {"srpo.verdict_ratio": m.srpo.verdict_ratio > 0,
                                                           "verdict_head": m.verdict_head.enabled}, "chains")
        if m.embedding.pooling not in POOLINGS:
            problems.append(f"embedding.pooling must be one of {', '.join(POOLINGS)} (got {m.embedding.pooling!r})")
        if problems:
            raise ConfigError("method saro: " + "; ".join(problems))

    def warmup(self) -> list[Stage]:
        """Stages 1-2 after ``prompts`` and ``base_responses``: the long-chain data (``saro_data``) and
        the reasoning-style warmup SFT on it (``rw_sft``, the RW model); also a warm start for other
        methods (GRPO's ``init: saro_rw``)."""
        return [self.data_stage(), self.common.sft(RW, data=(DATA, "rw.jsonl"),
                                                   trainer=self.config.method.sft.apply(self.stage_trainer()))]

    def stage_trainer(self):
        """``trainer`` with SaRO's ``max_length`` (if set) for both SFT and DPO."""
        t, n = self.config.trainer, self.config.method.max_length
        return t if n is None else replace(t, sft=replace(t.sft, max_length=n), dpo=replace(t.dpo, max_length=n))

    def stage_eval(self):
        """``eval`` with SaRO's ``eval_max_new_tokens`` (if set)."""
        e, n = self.config.eval, self.config.method.eval_max_new_tokens
        return e if n is None else replace(e, generation=replace(e.generation, max_new_tokens=n))

    def data_stage(self) -> Stage:
        """Stage 1's data: ``rw_samples`` correct long chains per prompt from the teacher; shortest
        rejection sampling keeps the shortest the validator accepts (``chains.jsonl``, ``rw.jsonl``)."""
        c, m = self.config, self.config.method

        def requests(r, rule, ref):
            return [ThoughtRequest(r["id"], r["text"], r["label"], r.get("category", "unknown"), rule, ref,
                                   style=m.style, variant="correct", sample=k) for k in range(m.rw_samples)]

        def build(ctx: StageContext, d) -> dict:
            from reasonalign.components.pairs import balance_labels
            from reasonalign.components.sampling import length_saved, shortest_chains, token_length
            from reasonalign.models import chat_messages, load_tokenizer

            length = token_length(load_tokenizer(c.model, self.common.base_model_dir())) if m.rw_length == "tokens" else len
            chains, sft, choices = shortest_chains(d, m.style, length, lambda text: chat_messages(c.model, text))
            picked = Counter(choice.index for choice in choices if choice.ok)
            write_jsonl(ctx.out / "chains.jsonl", chains)
            if m.balance_labels:
                sft = balance_labels(sft, random.Random(m.seed))
            write_jsonl(ctx.out / "rw.jsonl", sft)
            saved = {"unit": m.rw_length, **length_saved(choices),
                     "chosen_sample": {str(k): picked[k] for k in sorted(picked)}}
            log.info("saro data: %d RW records; shortest rejection sampling %s; validator %s", len(sft), saved, d.counts)
            return {"rw_rows": len(sft), "rw_rows_by_label": dict(Counter(r["label"] for r in sft)),
                    "shortest_rejection_sampling": saved, "prompts_without_accepted_chain": len(d.refs) - len(chains),
                    "rw_by_label": dict(Counter(ch["label"] for ch in chains))}

        return self.common.teacher_data(
            DATA, requests, build, desc=f"long-chain thoughts x{m.rw_samples}",
            keys=("method.style", "method.rw_samples", "method.rw_length", "method.balance_labels", "method.seed"))

    def pairs_stage(self) -> Stage:
        """``srpo_pairs``: the preference pairs of the RW chains (``components/srpo.srpo_pairs``)."""
        c, m = self.config, self.config.method
        policy = m.srpo.rejected_source == "policy"

        def run(ctx: StageContext) -> dict:
            from reasonalign.models import load_tokenizer

            return srpo_pairs(ctx.out, c, m.srpo, read_jsonl(ctx.inputs[DATA] / "chains.jsonl"),
                              load_tokenizer(c.model, self.common.base_model_dir()), style=m.style, seed=m.seed,
                              balance_pairs=m.balance_pairs, rw_model=model_dir_of(ctx.inputs[RW]) if policy else None)

        # the policy's sampling settings and the judge shape the pairs only with rejected_source=policy
        return Stage(PAIRS, run, deps=[DATA] + ([RW] if policy else []), config=self.common.slice(
            "method.srpo", "method.balance_pairs", "method.style", "method.seed", "rules", "cot", "teacher", "model",
            *(("eval.judge",) if policy else ()), drop=() if policy else ("method.srpo.policy",)))

    def analysis_stage(self, name: str, model_stage: str | None) -> Stage:
        cfg, m = self.config, self.config.method

        def run(ctx: StageContext) -> dict:
            from reasonalign.analysis.embedding import analysis_prompts, analyze_model

            rows = read_jsonl(ctx.inputs[PROMPTS] / "eval_prompts.jsonl")
            prompts = analysis_prompts(rows, list(cfg.data.jailbreak.eval_families), m.embedding.max_per_group,
                                       m.embedding.seed)
            path = model_dir_of(ctx.inputs[model_stage]) if model_stage else self.common.base_model_dir()
            which = name.removeprefix("analysis_")
            return analyze_model(path, cfg.model, prompts, ctx.out, m.embedding,
                                 title=f"{which} model ({m.embedding.pooling} pooling)")

        return Stage(name, run, deps=[PROMPTS] + ([model_stage] if model_stage else []),
                     config=self.common.slice("model", "method.embedding", "data.jailbreak.eval_families"))
