"""ERPO: Ex-Ante Reasoning Preference Optimization (Feng et al., 2025; docs/methods/erpo.md).

1. ``erpo_data``: the teacher writes a rule-embedded ex-ante thought (initial assessment, rule
   verification citing rule ids, path calibration) for every training prompt, plus the variant
   thoughts the preference pairs need (negative, over-cautious, concise, verbose); the validator
   rejects malformed ones. SFT records: prompt -> thought + safe reference answer (a refusal with
   the rule's safe alternative for harmful prompts, the base model's own answer for benign ones).
2. ``sft``: ex-ante SFT. ``dpo``: DPO on three kinds of pairs (safety, usefulness, efficiency)
   mixed by ``pair_mix``, from the SFT model (also the reference).
3. ``lcpo_1..T``: length-controlled iterative preference optimisation. Each iteration samples
   ``samples_per_prompt`` responses per prompt from the current policy, judges the decision and
   measures the thought's length, scores ``correct - lambda_t * length/length_norm`` with
   ``lambda_t`` from the length-penalty scheduler, pairs the best against the worst response of
   each prompt, and runs DPO with the current policy as reference.
"""

from __future__ import annotations

import logging
import random
import shutil
from collections import Counter
from dataclasses import dataclass, field

from reasonalign.components.cot import ThoughtRequest
from reasonalign.components.lcpo import LCPOConfig, sample_and_pair
from reasonalign.components.pairs import PairMix
from reasonalign.components.teachers.base import teacher_verdicts, verdict_problems
from reasonalign.config import ConfigError, DPOOverrides
from reasonalign.methods.base import Method
from reasonalign.methods.stages import (
    PROMPTS,
    ReasoningMethodConfig,
    marker_metrics,
    model_dir_of,
    trainer_fingerprint,
)
from reasonalign.pipeline import Stage, StageContext, read_jsonl, write_jsonl

log = logging.getLogger("reasonalign.erpo")

DATA = "erpo_data"
STAGE1 = "sft"  # the stage-1 (ex-ante SFT) model


@dataclass
class ERPOConfig(ReasoningMethodConfig):
    style: str = "ex_ante"
    pair_mix: PairMix = field(default_factory=PairMix)
    # safety pairs' rejected side: a negative thought followed by the base model's own compliant
    # answer; harmful prompts the base model refused give no safety pair
    seed: int = 0
    # stage 1: repeat benign/borderline SFT records until they match the harmful ones in number
    # (components/pairs.balance_labels; with about twice as many harmful records the 135M default
    # learned to refuse by default); the stage-1 metrics report the counts before and after
    balance_labels: bool = True
    # stage 2: the same for the preference pairs (off: the pair kinds' own counts, 58% harmful on
    # the default data); on in the CPU recipe, with verdict and consistency pairs
    balance_pairs: bool = False
    # stage 2's DPO settings over trainer.dpo (null keeps the trainer's): an SFT term on the chosen
    # side; the learning rate and epochs at a model's size: conf/method_scale/erpo_<model>.yaml
    dpo: DPOOverrides = field(default_factory=lambda: DPOOverrides(
        loss_type=["sigmoid", "sft"], loss_weights=[1.0, 1.0]))
    evaluate_stage1: bool = True  # also evaluate the stage-1 (ex-ante SFT) model
    evaluate_stage2: bool = True  # also evaluate the stage-2 (DPO) model, to show what stage 3 changes
    lcpo: LCPOConfig = field(default_factory=LCPOConfig)


class ERPOMethod(Method):
    """ERPO's three stages: ex-ante reasoning SFT, three-kind DPO, iterative LCPO."""

    Config = ERPOConfig
    name = "erpo"
    description = "ex-ante rule-embedded reasoning SFT, three-kind DPO, length-controlled iterative PO"

    def stages(self):
        s, m = self.common, self.config.method
        # ours, optional: the stage-2 model's verdict head opens stage 3's samples, eval_dpo and eval_final
        head = s.verdict_head("dpo")
        stages = [s.prompts(), s.base_responses(), *self.stage1(),  # 1: ex-ante reasoning SFT
                  # 2: DPO on safety, usefulness and efficiency pairs
                  s.dpo("dpo", data=(DATA, "pairs.jsonl"), init=STAGE1, trainer=m.dpo.apply(self.config.trainer)),
                  *head.stages]
        prev = "dpo"
        for t in range(1, m.lcpo.iterations + 1):  # 3: LCPO: sample, judge, score, pair; DPO
            stages += [self.lcpo_pairs_stage(t, prev, head), self.lcpo_train_stage(t, prev)]
            prev = f"lcpo_{t}"
        evals = s.evaluation(final=prev, head=head)
        if m.evaluate_stage1:
            evals.insert(-1, s.eval_stage("eval_sft", STAGE1))
        if m.evaluate_stage2 and prev != "dpo":
            evals.insert(-1, s.eval_stage("eval_dpo", "dpo", head=head))
        return stages + evals

    def validate(self):
        m = self.config.method
        problems = verdict_problems(self.config.teacher, {"pair_mix.verdict": m.pair_mix.verdict > 0,
                                                          "verdict_head": m.verdict_head.enabled})
        if problems:
            raise ConfigError("method erpo: " + "; ".join(problems))

    def stage1(self) -> list[Stage]:
        """Stage 1 after ``prompts`` and ``base_responses``: the teacher's data (``erpo_data``) and the
        ex-ante SFT on it (``sft``, :data:`STAGE1`), whose model the later stages start from; also a
        warm start for other methods (GRPO's ``init: erpo_sft``)."""
        return [self.data_stage(), self.common.sft(STAGE1, data=(DATA, "sft.jsonl"))]

    def data_stage(self) -> Stage:
        """Stage 1's data: the teacher's ex-ante thoughts (correct, concise, verbose and the wrong
        one), the SFT records and the stage-2 pairs (``components/pairs.build_reasoning_pairs``)."""
        c, m = self.config, self.config.method

        def requests(r, rule, ref):
            wrong = "negative" if r["label"] == "harmful" else "overcautious"
            return [ThoughtRequest(r["id"], r["text"], r["label"], r.get("category", "unknown"), rule, ref,
                                   style=m.style, variant=v) for v in ("correct", "concise", "verbose", wrong)]

        def build(ctx: StageContext, d) -> dict:
            from reasonalign.components.pairs import balance_labels, build_reasoning_pairs
            from reasonalign.models import chat_messages

            def thought(pid, variant):
                row = d.thoughts.get(f"{pid}|{m.style}|{variant}|0")
                return row["thought"] if row and row["ok"] else None

            sft, pairs, kinds = build_reasoning_pairs(d.refs, thought, d.fmt, m.pair_mix, random.Random(m.seed),
                                                      lambda t: chat_messages(c.model, t), teacher_verdicts(c.teacher))
            by_label, pairs_by_label = dict(Counter(r["label"] for r in sft)), dict(Counter(p["label"] for p in pairs))
            if m.balance_labels:
                sft = balance_labels(sft, random.Random(m.seed))
            if m.balance_pairs:
                pairs = balance_labels(pairs, random.Random(m.seed + 1))
            write_jsonl(ctx.out / "sft.jsonl", sft)
            write_jsonl(ctx.out / "pairs.jsonl", pairs)
            log.info("erpo data: %d SFT records, pairs %s, validator %s", len(sft), kinds, d.counts)
            return {"sft_rows": len(sft), "sft_by_label": by_label,
                    "sft_by_label_balanced": dict(Counter(r["label"] for r in sft)), "pairs": len(pairs),
                    "pairs_by_kind": kinds, "pairs_by_label": pairs_by_label,
                    "pairs_by_label_balanced": dict(Counter(p["label"] for p in pairs))}

        return self.common.teacher_data(
            DATA, requests, build, desc="ex-ante thoughts",
            keys=("method.style", "method.pair_mix", "method.seed", "method.balance_labels", "method.balance_pairs"))

    def lcpo_pairs_stage(self, t: int, init: str, head) -> Stage:
        """``lcpo_<t>_pairs``: iteration ``t``'s samples of ``init``'s model, judged, scored and
        paired (``components/lcpo.sample_and_pair``; rank 0 alone under ``distributed=...``), each
        opening with ``head``'s verdict (``CommonStages.verdict_head``; none while it is off)."""
        c, m = self.config, self.config.method
        lc, verdicts = m.lcpo, teacher_verdicts(c.teacher)

        def run(ctx: StageContext) -> dict:
            return sample_and_pair(ctx.out, t, lc, c, model_dir_of(ctx.inputs[init]),
                                   read_jsonl(ctx.inputs[PROMPTS] / "train_prompts.jsonl"), marker_metrics(ctx.inputs[init]),
                                   seed=m.seed, style=m.style, head=head.input(ctx))

        return Stage(f"lcpo_{t}_pairs", run, deps=[PROMPTS, init, *head.deps],
                     # the DPO step's settings are the next stage's; the head in use is an input
                     config=self.common.slice("method.lcpo", "method.seed", "method.style", "eval.judge", "cot", "rules",
                                              drop=("method.lcpo.dpo", "method.lcpo.max_steps"), t=t, verdicts=verdicts))

    def lcpo_train_stage(self, t: int, init: str) -> Stage:
        """``lcpo_<t>``: DPO on iteration ``t``'s pairs from ``init``'s model, also the reference
        (every rank). Changing only the DPO settings re-runs this stage and keeps the samples."""
        c, lc = self.config, self.config.method.lcpo
        pairs_stage, trainer = f"lcpo_{t}_pairs", lc.trainer(c.trainer)

        def run(ctx: StageContext) -> dict:
            from reasonalign.components.dpo import train_dpo
            from reasonalign.distributed import is_main
            from reasonalign.methods.stages import training_rows

            # the sampling stage's metrics (lambda, scheduler state, sample stats) travel on: the
            # next iteration reads them from this stage's marker
            stats = dict(marker_metrics(ctx.inputs[pairs_stage]))
            pairs = training_rows(ctx.inputs[pairs_stage] / "pairs.jsonl", "dpo")
            policy = model_dir_of(ctx.inputs[init])
            if pairs:
                stats["dpo"] = train_dpo(policy, pairs, ctx.out, c.model, trainer)
            elif is_main():  # nothing to prefer: the policy carries over unchanged
                shutil.copytree(policy, ctx.out / "model")
            return stats

        return Stage(f"lcpo_{t}", run, deps=[pairs_stage, init], distributed=True,
                     config=self.common.slice(t=t, **trainer_fingerprint(trainer, "dpo")))
