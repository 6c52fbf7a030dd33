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
from dataclasses import asdict, dataclass, field, replace

from reasonalign.analysis.embedding import POOLINGS, EmbeddingConfig
from reasonalign.components.judges import judge_fingerprint
from reasonalign.components.srpo import SPLITS
from reasonalign.components.verdict_head import VerdictHeadConfig
from reasonalign.config import ConfigError, DPOOverrides, MethodConfig, SFTOverrides
from reasonalign.methods.base import Method
from reasonalign.methods.erpo import _teacher_fp, _verdicts
from reasonalign.methods.stages import PROMPTS, RESPONSES, model_dir_of
from reasonalign.pipeline import Stage, StageContext, read_jsonl, without_off, write_jsonl

log = logging.getLogger("reasonalign.saro")

DATA = "saro_data"
RW = "rw_sft"
PAIRS = "srpo_pairs"
FINAL = "srpo"
LENGTH_UNITS = ("tokens", "chars")
REJECTED_SOURCES = ("teacher", "policy")


@dataclass
class PolicySampling:
    """``srpo.rejected_source=policy``: continuations sampled from the RW model at each branch."""

    samples: int = 4  # continuations per branch; the first one judged wrong is the rejected side
    temperature: float = 1.0
    top_p: float = 0.95
    max_new_tokens: int = 192
    batch_size: int = 16


@dataclass
class SRPOConfig:
    """Stage 3: the preference pairs."""

    split: str = "steps"  # steps (by step headers) | sentences
    branch_steps: list[str] = field(default_factory=lambda: ["Reflection"])  # step names to branch at
    steps_per_chain: int = 1  # branch points per chain, drawn from branch_steps (0: no process pairs)
    sentence_offset: int = 0  # split=sentences: branch this many sentences into the step
    process_ratio: float = 1.0  # share of chains that give process-level pairs
    outcome_ratio: float = 0.5  # share of chains that give an outcome-level pair
    # ours: share of chains that give an answer-level pair (the whole correct chain shared in the
    # prompt; the right answer against the wrong one), so the answer follows the chain's decision
    answer_ratio: float = 0.0
    # ours, needs teacher.verdict_first: share of chains that give a verdict pair (the correct turn
    # against the same turn with its verdict word swapped: components/srpo.py)
    verdict_ratio: float = 0.0
    rejected_source: str = "teacher"  # teacher (negative/overcautious chains) | policy (sampled from the RW model)
    policy: PolicySampling = field(default_factory=PolicySampling)


@dataclass
class SaROConfig(MethodConfig):
    style: str = "long_chain"
    rw_samples: int = 4  # chains the teacher writes per prompt for shortest rejection sampling
    rw_length: str = "tokens"  # how chain length is measured: tokens (the model's tokenizer) | chars
    srpo: SRPOConfig = field(default_factory=SRPOConfig)
    seed: int = 0
    # long chains are 120-200 SmolLM2 tokens before the answer: SaRO's own sequence length for
    # rw_sft and srpo and its own evaluation budget (null: trainer.{sft,dpo}.max_length and
    # eval.generation.max_new_tokens), so ``method=saro`` alone neither truncates chains in
    # training nor counts cut-off chains as refusals
    max_length: int | None = 384
    eval_max_new_tokens: int | None = 320
    # repeat benign/borderline RW records until they match the harmful ones in number
    # (components/pairs.balance_labels)
    balance_labels: bool = True
    # the same for the SRPO pairs (58% of them are harmful on the default data; balanced, SRPO
    # raised benign compliance where unbalanced it had not; docs/methods/saro.md)
    balance_pairs: bool = True
    # rw_sft's SFT settings over trainer.sft: long chains need more passes than short answers (at
    # the trainer's 2 epochs the 135M default's RW loss was still 1.4 and it wrote "Path: refuse"
    # and then complied; docs/methods/saro.md)
    sft: SFTOverrides = field(default_factory=lambda: SFTOverrides(num_train_epochs=3.0))
    # srpo's DPO settings over trainer.dpo: the plain DPO baseline's learning rate for 2 epochs,
    # with an SFT term on the chosen side (as ERPO's stage 2) that keeps the chain's format
    dpo: DPOOverrides = field(default_factory=lambda: DPOOverrides(
        learning_rate=2e-4, num_train_epochs=2.0, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 1.0]))
    evaluate_rw: bool = True  # also evaluate the RW model (eval_rw)
    analysis: bool = True  # embedding-space analysis of the base and final models
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    # ours, needs teacher.verdict_first: a linear head on the SRPO model's own prompt hidden states
    # picks the verdict its chain opens with in eval_final (components/verdict_head.py; ERPO's
    # method.verdict_head)
    verdict_head: VerdictHeadConfig = field(default_factory=VerdictHeadConfig)


class SaROMethod(Method):
    name = "saro"
    Config = SaROConfig
    description = "long-chain reasoning warmup (shortest rejection sampling), process+outcome DPO, embedding analysis"

    def stages(self):
        self._check()
        s, m = self.common, self.mcfg
        trainer, ev = self.stage_trainer(), self.stage_eval()
        stages = [s.prompts(), s.base_responses(), self.data_stage(),
                  s.sft(RW, data=(DATA, "rw.jsonl"), trainer=m.sft.apply(trainer)),
                  self.pairs_stage(), s.dpo(FINAL, data=(PAIRS, "pairs.jsonl"), init=RW, trainer=m.dpo.apply(trainer))]
        if m.verdict_head.enabled:
            stages.append(s.verdict_head(FINAL, m.verdict_head))
        evals = s.evaluation(final=FINAL, eval_cfg=ev, head_style=m.style if m.verdict_head.enabled else None)
        if m.evaluate_rw:
            evals.insert(-1, s.eval_stage("eval_rw", RW, ev))
        stages += evals
        if m.analysis:
            stages += [self.analysis_stage("analysis_base", None), self.analysis_stage("analysis_final", FINAL)]
        return stages

    @property
    def final_stage(self):
        return FINAL

    def stage_trainer(self):
        """``trainer`` with SaRO's ``max_length`` (if set) for both SFT and DPO."""
        t, n = self.config.trainer, self.mcfg.max_length
        if n is None:
            return t
        return replace(t, sft=replace(t.sft, max_length=n), dpo=replace(t.dpo, max_length=n))

    def stage_eval(self):
        """``eval`` with SaRO's ``eval_max_new_tokens`` (if set)."""
        e, n = self.config.eval, self.mcfg.eval_max_new_tokens
        return e if n is None else replace(e, generation=replace(e.generation, max_new_tokens=n))

    def _check(self) -> None:
        from reasonalign.components.cot import CoTFormat

        m = self.mcfg
        steps = CoTFormat(self.config.cot).steps(m.style)  # an unknown style fails here
        problems = []
        if m.rw_samples < 1:
            problems.append(f"rw_samples must be >= 1 (got {m.rw_samples})")
        if m.rw_length not in LENGTH_UNITS:
            problems.append(f"rw_length must be one of {', '.join(LENGTH_UNITS)} (got {m.rw_length!r})")
        if m.srpo.split not in SPLITS:
            problems.append(f"srpo.split must be one of {', '.join(SPLITS)} (got {m.srpo.split!r})")
        if m.srpo.rejected_source not in REJECTED_SOURCES:
            problems.append(f"srpo.rejected_source must be one of {', '.join(REJECTED_SOURCES)} "
                            f"(got {m.srpo.rejected_source!r})")
        if m.srpo.verdict_ratio > 0 and not _verdicts(self.config.teacher):
            problems.append("srpo.verdict_ratio needs chains that open with a verdict: set teacher.verdict_first=true "
                            "(rules teacher)")
        if m.verdict_head.enabled and not _verdicts(self.config.teacher):
            problems.append("verdict_head needs chains that open with a verdict: set teacher.verdict_first=true "
                            "(rules teacher)")
        for k in ("process_ratio", "outcome_ratio", "answer_ratio", "verdict_ratio"):
            if not 0.0 <= getattr(m.srpo, k) <= 1.0:
                problems.append(f"srpo.{k} must be a share between 0 and 1 (got {getattr(m.srpo, k)})")
        unknown = [b for b in m.srpo.branch_steps if b not in steps]
        if unknown:
            problems.append(f"srpo.branch_steps {unknown} are not steps of style {m.style!r} ({', '.join(steps)})")
        if m.embedding.pooling not in POOLINGS:
            problems.append(f"embedding.pooling must be one of {', '.join(POOLINGS)} (got {m.embedding.pooling!r})")
        if problems:
            raise ConfigError("method saro: " + "; ".join(problems))

    # ------------------------------------------------------------------ stage 1: RW data
    def data_stage(self) -> Stage:
        cfg, m = self.config, self.mcfg

        def run(ctx: StageContext) -> dict:
            from reasonalign.components.cot import CoTFormat, ThoughtRequest, generate_thoughts
            from reasonalign.components.pairs import balance_labels, reference_answers
            from reasonalign.components.rules import load_rules
            from reasonalign.components.sampling import (
                length_saved,
                select_shortest,
                token_length,
                validator_accept,
            )
            from reasonalign.components.teachers.base import make_teacher
            from reasonalign.models import chat_messages, load_tokenizer

            rules = load_rules(cfg.rules)
            fmt = CoTFormat(cfg.cot)
            rows = read_jsonl(ctx.inputs[RESPONSES] / "responses.jsonl")
            refs, reqs = {}, []
            chosen, skipped = reference_answers(rows, rules)
            for r, rule, ref in chosen:
                group = [ThoughtRequest(r["id"], r["text"], r["label"], r.get("category", "unknown"), rule, ref,
                                        style=m.style, variant="correct", sample=k) for k in range(m.rw_samples)]
                refs[r["id"]] = (r, rule, ref, group)
                reqs += group
            teacher = make_teacher(cfg.teacher, cfg.model, backend=cfg.generation_backend)
            thoughts, counts = generate_thoughts(reqs, teacher, fmt, rules, ctx.out / "thoughts.jsonl",
                                                 desc=f"teacher {cfg.teacher.name}: long-chain thoughts x{m.rw_samples}",
                                                 batch_size=max(cfg.teacher.batch_size, cfg.teacher.concurrency))
            if m.rw_length == "tokens":
                length = token_length(load_tokenizer(cfg.model, self.common.base_model_dir()))
            else:
                length = len
            chains, sft, choices, picked = [], [], [], Counter()
            for pid, (r, rule, ref, group) in refs.items():
                cands = [(thoughts.get(q.key()) or {}).get("thought") for q in group]
                choice = select_shortest(cands, validator_accept(fmt, m.style, rules, group[0].expect, ref), length)
                choices.append(choice)
                if not choice.ok:
                    continue
                picked[choice.index] += 1
                meta = {"id": pid, "label": r["label"], "category": r.get("category", "unknown"), "rule": rule.id,
                        "attack": r.get("attack", "")}
                chains.append({**meta, "text": r["text"], "thought": choice.text.strip(), "answer": ref,
                               "sample": choice.index, "length": choice.length, "accepted": len(choice.accepted),
                               "complied": r["complied"], "response": r["response"]})
                sft.append({**meta, "sample": choice.index, "prompt": chat_messages(cfg.model, r["text"]),
                            "completion": [{"role": "assistant", "content": fmt.compose(choice.text, ref)}]})
            write_jsonl(ctx.out / "chains.jsonl", chains)
            if m.balance_labels:
                sft = balance_labels(sft, random.Random(m.seed))
            write_jsonl(ctx.out / "rw.jsonl", sft)
            saved = {"unit": m.rw_length, **length_saved(choices),
                     "chosen_sample": {str(k): picked[k] for k in sorted(picked)}}
            log.info("saro data: %d RW records; shortest rejection sampling %s; validator %s", len(sft), saved, counts)
            return {"rw_rows": len(sft), "rw_rows_by_label": dict(Counter(r["label"] for r in sft)), "thoughts": counts, "shortest_rejection_sampling": saved,
                    "prompts_without_accepted_chain": len(refs) - len(chains),
                    "rw_by_label": dict(Counter(c["label"] for c in chains)),
                    "benign_skipped_base_refused": skipped}

        return Stage(DATA, run, deps=[RESPONSES],
                     config={"style": m.style, "rw_samples": m.rw_samples, "rw_length": m.rw_length,
                             "balance_labels": m.balance_labels, "seed": m.seed,
                             "rules": cfg.rules, "cot": asdict(cfg.cot), "teacher": _teacher_fp(cfg.teacher),
                             "system_prompt": cfg.model.system_prompt})

    # --------------------------------------------------------------- stage 3: SRPO pairs
    def pairs_stage(self) -> Stage:
        cfg, m = self.config, self.mcfg
        sp = m.srpo
        policy = sp.rejected_source == "policy"

        def run(ctx: StageContext) -> dict:
            from reasonalign.components.cot import CoTFormat, ThoughtRequest, generate_thoughts
            from reasonalign.components.pairs import balance_labels, refusal_text, swap_verdict
            from reasonalign.components.rules import load_rules
            from reasonalign.components.srpo import (
                make_pair,
                newlines_end_prompt,
                plan_branches,
                render_prompt,
                teacher_rejected,
            )
            from reasonalign.components.teachers.base import make_teacher
            from reasonalign.models import chat_messages, load_tokenizer

            rules = load_rules(cfg.rules)
            fmt = CoTFormat(cfg.cot)
            verdicts = _verdicts(cfg.teacher)
            chains = {c["id"]: c for c in read_jsonl(ctx.inputs[DATA] / "chains.jsonl")}
            tok = load_tokenizer(cfg.model, self.common.base_model_dir())
            branches, plan = plan_branches(list(chains.values()), fmt, m.style,
                                           lambda text: render_prompt(tok, chat_messages(cfg.model, text)), sp,
                                           random.Random(m.seed), keep_newlines=newlines_end_prompt(tok))
            rejected: dict[str, tuple[str, str]] = {}
            stats: dict = {"branches": len(branches), **plan}
            if policy and branches:  # a verdict pair's rejected side is its own chain, swapped: no sampling
                rejected, stats["policy"] = self._policy_rejected(ctx, [b for b in branches if b.kind != "verdict"], fmt)

            # teacher: the wrong chain (negative for harmful, overcautious for benign) and its answer
            def wrong_answer(c):
                if c["label"] == "harmful":
                    return c["response"] if c["complied"] else None
                return refusal_text(c["id"])

            need = sorted({b.id for b in branches if b.key not in rejected and b.kind not in ("answer", "verdict")})
            # an answer pair's rejected side is the wrong answer alone: no wrong chain needed
            wrong_answers = {b.id: ("", a) for b in branches
                             if b.kind == "answer" and (a := wrong_answer(chains[b.id])) is not None}
            reqs = []
            for pid in need:
                c, answer = chains[pid], wrong_answer(chains[pid])
                if answer is None:
                    continue
                rule = rules.for_prompt(c["text"], c.get("category"), c["label"])
                reqs.append(ThoughtRequest(pid, c["text"], c["label"], c.get("category", "unknown"), rule, answer,
                                           style=m.style, variant="negative" if c["label"] == "harmful" else "overcautious"))
            wrong = {}
            if reqs:
                teacher = make_teacher(cfg.teacher, cfg.model, backend=cfg.generation_backend)
                thoughts, stats["thoughts"] = generate_thoughts(
                    reqs, teacher, fmt, rules, ctx.out / "thoughts.jsonl",
                    desc=f"teacher {cfg.teacher.name}: wrong long-chain thoughts",
                    batch_size=max(cfg.teacher.batch_size, cfg.teacher.concurrency))
                for q in reqs:
                    row = thoughts.get(q.key())
                    if row and row["ok"]:
                        wrong[q.id] = (row["thought"], q.reference)

            pairs, dropped = [], Counter()
            for b in branches:
                teacher_side = wrong_answers if b.kind == "answer" else wrong
                if b.kind == "verdict":
                    text, source = swap_verdict(b.chosen, b.label, verdicts), "verdict_swap"
                    if text is None:
                        dropped["chain_has_no_verdict"] += 1
                        continue
                elif b.key in rejected:
                    text, source = rejected[b.key]
                elif b.id in teacher_side:
                    text, source = teacher_rejected(b, *teacher_side[b.id], fmt, m.style, sp), "teacher"
                else:
                    c = chains[b.id]
                    dropped["harmful_base_refused" if c["label"] == "harmful" and not c["complied"]
                            else "wrong_chain_rejected_by_validator"] += 1
                    continue
                if text is None:
                    dropped["wrong_chain_lacks_branch_step"] += 1
                    continue
                pair = make_pair(b, text, tok.eos_token, source)
                if pair is None:
                    dropped["identical_continuations"] += 1
                    continue
                pairs.append(pair)
            random.Random(m.seed).shuffle(pairs)
            stats["pairs_by_label"] = dict(Counter(p["label"] for p in pairs))
            if m.balance_pairs:
                pairs = balance_labels(pairs, random.Random(m.seed + 1))
            write_jsonl(ctx.out / "pairs.jsonl", pairs)
            by_kind = {k: sum(p["kind"] == k for p in pairs) for k in ("process", "outcome", "answer")}
            if sp.verdict_ratio > 0:
                by_kind["verdict"] = sum(p["kind"] == "verdict" for p in pairs)
            stats.update(pairs=len(pairs), pairs_by_kind=by_kind,
                         pairs_by_kind_label=dict(Counter(
                             f"{p['kind']}_{'harmful' if p['label'] == 'harmful' else 'benign'}" for p in pairs)),
                         pairs_by_source=dict(Counter(p["source"] for p in pairs)),
                         process_by_step=dict(Counter(p["step"] for p in pairs if p["kind"] == "process")),
                         dropped=dict(dropped))
            log.info("srpo pairs: %d (%s), by source %s, dropped %s", len(pairs), by_kind,
                     stats["pairs_by_source"], dict(dropped))
            if not pairs:
                raise RuntimeError("srpo_pairs produced no preference pairs; see the stage metrics' 'dropped' counts")
            return stats

        deps = [DATA] + ([RW] if policy else [])
        srpo = without_off({k: v for k, v in asdict(sp).items() if policy or k != "policy"},
                           {"answer_ratio": 0.0, "verdict_ratio": 0.0})
        conf = {"srpo": srpo, **without_off({"balance_pairs": m.balance_pairs}, {"balance_pairs": False}),
                "style": m.style, "seed": m.seed, "rules": cfg.rules, "cot": asdict(cfg.cot),
                "teacher": _teacher_fp(cfg.teacher), "model": asdict(cfg.model),
                "judge": judge_fingerprint(cfg.eval.judge) if policy else None}
        return Stage(PAIRS, run, deps=deps, config=conf)

    def _policy_rejected(self, ctx: StageContext, branches, fmt) -> tuple[dict, dict]:
        """Sample continuations of each branch from the RW model; the first one judged wrong is the
        branch's rejected side. Every sample and its verdict go to ``policy_samples.jsonl``."""
        import torch

        from reasonalign.components.generation import load_generator, release_generator
        from reasonalign.components.judges import get_judge
        from reasonalign.components.sampling import generate_text_resumable
        from reasonalign.components.srpo import judge_continuation
        from reasonalign.config import GenerationSettings

        cfg, m = self.config, self.mcfg
        ps = m.srpo.policy
        rw = model_dir_of(ctx.inputs[RW])
        model, tok = load_generator(cfg.model, rw, cfg.generation_backend, seed=m.seed)
        items = [{"id": f"{b.key}#s{j}", "text": b.prompt} for b in branches for j in range(ps.samples)]
        torch.manual_seed(m.seed)
        settings = GenerationSettings(max_new_tokens=ps.max_new_tokens, batch_size=ps.batch_size, do_sample=True,
                                      temperature=ps.temperature, top_p=ps.top_p)
        gens = {g["id"]: g for g in generate_text_resumable(model, tok, items, settings,
                                                            ctx.out / "policy_generations.jsonl",
                                                            desc=f"srpo: {ps.samples} continuations per branch",
                                                            seed=m.seed)}
        release_generator(model)  # the judge may load a model onto the GPU next
        del model
        judge = get_judge(cfg.eval.judge)
        rejected, judged = {}, []
        for b in branches:
            for j in range(ps.samples):
                g = gens[f"{b.key}#s{j}"]
                verdict = judge_continuation(b, g["response"], fmt, m.style, judge)
                judged.append({"branch": b.key, "sample": j, "response": g["response"], **verdict})
                if verdict["wrong"] and b.key not in rejected:
                    rejected[b.key] = (b.lead + g["response"].strip(), "policy")
        write_jsonl(ctx.out / "policy_samples.jsonl", judged)
        stats = {"samples": len(judged), "judged_wrong": sum(j["wrong"] for j in judged),
                 "branches_with_policy_rejected": len(rejected),
                 "branches_fallback_teacher": len(branches) - len(rejected)}
        log.info("srpo policy sampling: %s", stats)
        return rejected, stats

    # --------------------------------------------------------------------- analysis
    def analysis_stage(self, name: str, model_stage: str | None) -> Stage:
        cfg, m = self.config, self.mcfg

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
                     config={"model": asdict(cfg.model), "embedding": asdict(m.embedding),
                             "eval_families": list(cfg.data.jailbreak.eval_families)})
