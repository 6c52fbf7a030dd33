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
from dataclasses import asdict, dataclass, field, replace

import torch

from reasonalign.components.judges import judge_fingerprint, judge_labelled
from reasonalign.components.length import LengthSchedule
from reasonalign.components.verdict_head import VerdictHeadConfig
from reasonalign.config import ConfigError, DPOOverrides, MethodConfig
from reasonalign.methods.base import Method
from reasonalign.methods.stages import (
    PROMPTS,
    RESPONSES,
    head_stage_name,
    model_dir_of,
    trainer_fingerprint,
    training_rows,
)
from reasonalign.pipeline import Stage, StageContext, read_jsonl, without_off, write_jsonl

log = logging.getLogger("reasonalign.erpo")

DATA = "erpo_data"


@dataclass
class PairMix:
    """Share of eligible prompts that contribute a pair of each kind (0 turns a kind off)."""

    safety: float = 1.0
    usefulness: float = 1.0
    efficiency: float = 0.5
    # ours: same correct thought, the answer its path calls for vs the other answer
    # (components/pairs.build_reasoning_pairs); the 135M default often wrote "Path: answer" and
    # then refused (docs/methods/erpo.md)
    consistency: float = 0.5
    # ours, needs teacher.verdict_first: the correct turn against the same turn with the verdict
    # word swapped (components/pairs.build_reasoning_pairs); off (0) it stays out of the fingerprint
    verdict: float = 0.0


@dataclass
class LCPOConfig:
    """Stage 3: length-controlled iterative preference optimisation."""

    iterations: int = 3  # T (0 turns stage 3 off)
    samples_per_prompt: int = 4  # K
    prompts_per_iteration: int = 32  # training prompts sampled per iteration (seeded)
    temperature: float = 0.9
    top_p: float = 0.95
    max_new_tokens: int = 192
    batch_size: int = 16
    min_score_gap: float = 0.02  # pair a prompt's best and worst only if their scores differ this much
    # also pair a prompt's shortest correct sample against its longest correct one (a "length" pair)
    # when the best/worst pair is a decision pair
    length_pairs: bool = True
    # a sample is correct only if its thought passes the format validator (every step, a known rule
    # id, a Path line) and its Path agrees with the label, as well as its answer; false: any
    # non-empty thought with the right answer counts
    valid_thought: bool = True
    # score of a sample whose answer is right but whose thought fails the check above (0: the same
    # as a wrong answer). Above 0, a prompt's worst sample is one with the wrong answer whenever
    # there is one, so its pair contrasts the decision, not only the thought's format
    answer_credit: float = 0.0
    # a prompt none of whose K samples is correct pairs the teacher's concise thought + the
    # reference answer (stage 1's data) against its worst sample, instead of giving no pair
    reference_fallback: bool = False
    # draw half of each iteration's prompts from the harmful ones and half from the rest (as far as
    # each group goes), instead of a plain sample that follows the training set's 60% harmful share
    balance_labels: bool = False
    # with method.verdict_head.enabled: fit a new head on each iteration's model (lcpo_<t>_head) for
    # the next iteration's samples and eval_final; false keeps the stage-2 model's head (dpo_head)
    # for all of stage 3 and eval_final. (Not in the samples' fingerprint: their inputs name the head.)
    refit_head: bool = True
    max_steps: int = -1  # DPO steps per iteration (-1: trainer.dpo's epochs)
    # this stage's DPO settings over trainer.dpo: an SFT term on the chosen (shortest correct) side
    dpo: DPOOverrides = field(default_factory=lambda: DPOOverrides(
        learning_rate=5e-5, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 1.0]))
    # lambda_t's schedule; its ``iterations`` is always set from ``lcpo.iterations``
    schedule: LengthSchedule = field(default_factory=lambda: LengthSchedule(
        kind="linear", lambda_start=0.3, lambda_end=0.5, length_norm=256.0, lambda_max=1.0))


@dataclass
class ERPOConfig(MethodConfig):
    style: str = "ex_ante"
    pair_mix: PairMix = field(default_factory=PairMix)
    # safety pairs' rejected side: a negative thought followed by the base model's own compliant
    # answer; harmful prompts the base model refused give no safety pair
    seed: int = 0
    # stage 1: repeat benign/borderline SFT records until they match the harmful ones in number
    # (components/pairs.balance_labels); the stage-1 metrics report the counts before and after
    balance_labels: bool = True
    # stage 2: the same for the preference pairs (off: the pair kinds' own counts, 58% harmful on
    # the default data)
    balance_pairs: bool = False
    # stage 2's DPO settings over trainer.dpo: a lower learning rate and an SFT term on the chosen
    # side (without them the 135M default collapsed: chosen log-probs fell, the format broke)
    dpo: DPOOverrides = field(default_factory=lambda: DPOOverrides(
        learning_rate=5e-5, num_train_epochs=1.0, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 1.0]))
    evaluate_stage1: bool = True  # also evaluate the stage-1 (ex-ante SFT) model
    evaluate_stage2: bool = True  # also evaluate the stage-2 (DPO) model, to show what stage 3 changes
    lcpo: LCPOConfig = field(default_factory=LCPOConfig)
    # ours, needs teacher.verdict_first: a linear head on each DPO-trained model's own prompt hidden
    # states picks the verdict its thought opens with, in stage 3's sampling and in the evaluations
    # of the stage-2 and final models (components/verdict_head.py)
    verdict_head: VerdictHeadConfig = field(default_factory=VerdictHeadConfig)


class ERPOMethod(Method):
    name = "erpo"
    Config = ERPOConfig
    description = "ex-ante rule-embedded reasoning SFT, three-kind DPO, length-controlled iterative PO"

    def stages(self):
        s = self.common
        m: ERPOConfig = self.mcfg
        if m.pair_mix.verdict > 0 and not _verdicts(self.config.teacher):
            raise ConfigError("method erpo: pair_mix.verdict needs thoughts that open with a verdict: set "
                              "teacher.verdict_first=true (rules teacher)")
        if m.verdict_head.enabled and not _verdicts(self.config.teacher):
            raise ConfigError("method erpo: verdict_head needs thoughts that open with a verdict: set "
                              "teacher.verdict_first=true (rules teacher)")
        if not 0.0 <= m.lcpo.answer_credit < 1.0:
            raise ConfigError(f"method erpo: lcpo.answer_credit must be in [0, 1): below a correct sample's 1 "
                              f"(got {m.lcpo.answer_credit})")
        stages = [s.prompts(), s.base_responses(), self.data_stage(),
                  s.sft("sft", data=(DATA, "sft.jsonl")),
                  s.dpo("dpo", data=(DATA, "pairs.jsonl"), init="sft", trainer=m.dpo.apply(self.config.trainer))]
        head = m.verdict_head.enabled
        if head:
            stages.append(s.verdict_head("dpo", m.verdict_head))
        prev = "dpo"
        for t in range(1, m.lcpo.iterations + 1):
            stages += self.lcpo_stages(t, prev)
            prev = f"lcpo_{t}"
            if head and m.lcpo.refit_head:
                stages.append(s.verdict_head(prev, m.verdict_head))
        evals = s.evaluation(final=prev, head_style=m.style if head else None, head_of=self._head_of(prev))
        if m.evaluate_stage1:
            evals.insert(-1, s.eval_stage("eval_sft", "sft"))
        if m.evaluate_stage2 and prev != "dpo":
            evals.insert(-1, s.eval_stage("eval_dpo", "dpo", head=(head_stage_name("dpo"), m.style) if head else None))
        return stages + evals

    def _head_of(self, model_stage: str) -> str:
        """The model stage whose verdict head opens ``model_stage``'s generations: its own, or the
        stage-2 model's for every stage-3 model while ``lcpo.refit_head`` is false."""
        return model_stage if self.mcfg.lcpo.refit_head else "dpo"

    @property
    def final_stage(self):
        t = self.mcfg.lcpo.iterations
        return f"lcpo_{t}" if t > 0 else "dpo"

    # ------------------------------------------------------------------------------ stage 1 data
    def data_stage(self) -> Stage:
        cfg, m = self.config, self.mcfg

        def run(ctx: StageContext) -> dict:
            from reasonalign.components.cot import CoTFormat, ThoughtRequest, generate_thoughts
            from reasonalign.components.pairs import balance_labels, build_reasoning_pairs, reference_answers
            from reasonalign.components.rules import load_rules
            from reasonalign.components.teachers.base import make_teacher
            from reasonalign.models import chat_messages

            rules = load_rules(cfg.rules)
            fmt = CoTFormat(cfg.cot)
            rows = read_jsonl(ctx.inputs[RESPONSES] / "responses.jsonl")
            refs, reqs = {}, []
            chosen, skipped = reference_answers(rows, rules)
            for r, rule, ref in chosen:
                harmful = r["label"] == "harmful"
                refs[r["id"]] = (r, rule, ref)
                variants = ["correct", "concise", "verbose", "negative" if harmful else "overcautious"]
                reqs += [ThoughtRequest(r["id"], r["text"], r["label"], r.get("category", "unknown"), rule, ref,
                                        style=m.style, variant=v) for v in variants]
            teacher = make_teacher(cfg.teacher, cfg.model, backend=cfg.generation_backend)
            thoughts, counts = generate_thoughts(reqs, teacher, fmt, rules, ctx.out / "thoughts.jsonl",
                                                 desc=f"teacher {cfg.teacher.name}: ex-ante thoughts",
                                                 batch_size=max(cfg.teacher.batch_size, cfg.teacher.concurrency))

            def thought(pid, variant):
                row = thoughts.get(f"{pid}|{m.style}|{variant}|0")
                return row["thought"] if row and row["ok"] else None

            sft, pairs, kinds = build_reasoning_pairs(refs, thought, fmt, m.pair_mix, random.Random(m.seed),
                                                      lambda t: chat_messages(cfg.model, t), _verdicts(cfg.teacher))
            by_label = dict(Counter(r["label"] for r in sft))
            pairs_by_label = dict(Counter(p["label"] for p in pairs))
            if m.balance_labels:
                sft = balance_labels(sft, random.Random(m.seed))
            if m.balance_pairs:
                pairs = balance_labels(pairs, random.Random(m.seed + 1))
            write_jsonl(ctx.out / "sft.jsonl", sft)
            write_jsonl(ctx.out / "pairs.jsonl", pairs)
            log.info("erpo data: %d SFT records, pairs %s, validator %s", len(sft), kinds, counts)
            return {"sft_rows": len(sft), "sft_by_label": by_label,
                    "sft_by_label_balanced": dict(Counter(r["label"] for r in sft)), "pairs": len(pairs),
                    "pairs_by_kind": kinds, "pairs_by_label": pairs_by_label,
                    "pairs_by_label_balanced": dict(Counter(p["label"] for p in pairs)), "thoughts": counts,
                    "benign_skipped_base_refused": skipped}

        return Stage(DATA, run, deps=[RESPONSES],
                     config={"style": m.style, "pair_mix": without_off(asdict(m.pair_mix), {"verdict": 0.0}),
                             "seed": m.seed, "rules": cfg.rules,
                             "balance_labels": m.balance_labels,
                             **without_off({"balance_pairs": m.balance_pairs}, {"balance_pairs": False}),
                             "cot": asdict(cfg.cot), "teacher": _teacher_fp(cfg.teacher),
                             "system_prompt": cfg.model.system_prompt})

    # ---------------------------------------------------------------------------- stage 3 (LCPO)
    def lcpo_stages(self, t: int, init: str) -> list[Stage]:
        """Iteration ``t``: ``lcpo_<t>_pairs`` samples, judges, scores and pairs (rank 0 alone under
        ``distributed=...``); ``lcpo_<t>`` runs DPO on those pairs (every rank). Changing only the
        DPO settings re-runs the training stage and keeps the samples."""
        return [self.lcpo_pairs_stage(t, init), self.lcpo_train_stage(t, init)]

    def lcpo_pairs_stage(self, t: int, init: str) -> Stage:
        cfg, m = self.config, self.mcfg
        lc = m.lcpo
        head_stage = head_stage_name(self._head_of(init)) if m.verdict_head.enabled else None

        def run(ctx: StageContext) -> dict:
            from reasonalign.components.cot import CoTFormat, split_response
            from reasonalign.components.generation import (
                generate_resumable,
                load_generator,
                release_generator,
            )
            from reasonalign.components.judges import get_judge
            from reasonalign.components.length import LengthScheduler, score
            from reasonalign.components.pairs import best_worst_pairs
            from reasonalign.components.rules import load_rules
            from reasonalign.config import GenerationSettings
            from reasonalign.models import chat_messages, load_model, load_tokenizer

            fmt = CoTFormat(cfg.cot)
            policy = model_dir_of(ctx.inputs[init])
            scheduler = LengthScheduler(replace(lc.schedule, iterations=lc.iterations))
            prev_marker = _marker_metrics(ctx.inputs[init])
            observed = prev_marker.get("mean_thought_tokens")
            if t > 1:
                scheduler.load_state_dict(prev_marker["scheduler"])
            lam = scheduler.next(observed)

            prompts = lcpo_prompts(read_jsonl(ctx.inputs[PROMPTS] / "train_prompts.jsonl"), lc.prompts_per_iteration,
                                   random.Random(m.seed * 1000 + t), lc.balance_labels)
            items = [{"id": f"{p['id']}#s{k}", "messages": chat_messages(cfg.model, p["text"])}
                     for p in prompts for k in range(lc.samples_per_prompt)]
            head_calls = model = None
            if head_stage:  # every sample of a prompt opens with the verdict its head calls for
                from reasonalign.components.verdict_head import VerdictHead, verdict_prefixes

                # the head reads the transformers model's hidden states
                model, tok = load_model(cfg.model, policy), load_tokenizer(cfg.model, policy)
                head = VerdictHead.load(ctx.inputs[head_stage])
                prefixes, calls = verdict_prefixes(model, tok, head, [chat_messages(cfg.model, p["text"]) for p in prompts],
                                                   fmt, m.style, m.verdict_head.batch_size)
                head_calls = dict(zip([p["id"] for p in prompts], calls.tolist(), strict=True))
                by_prompt = dict(zip([p["id"] for p in prompts], prefixes, strict=True))
                for it in items:
                    it["prefix"] = by_prompt[it["id"].rsplit("#s", 1)[0]]
            seed = m.seed * 1000 + t
            # the hf backend samples with the model the head used; vLLM starts with it gone
            model, tok = load_generator(cfg.model, policy, cfg.generation_backend, seed=seed, hf_model=model)
            torch.manual_seed(seed)
            settings = GenerationSettings(max_new_tokens=lc.max_new_tokens, batch_size=lc.batch_size, do_sample=True,
                                          temperature=lc.temperature, top_p=lc.top_p)
            gens = generate_resumable(model, tok, items, settings, ctx.out / "generations.jsonl",
                                      desc=f"lcpo {t}: sampling K={lc.samples_per_prompt}", seed=seed)
            release_generator(model)  # the judge may load a model onto the GPU next
            del model
            judge = get_judge(cfg.eval.judge)
            rules = load_rules(cfg.rules)
            verdicts = _verdicts(cfg.teacher)
            by_id = {p["id"]: p for p in prompts}
            of = [by_id[item["id"].rsplit("#s", 1)[0]] for item in items]
            judged = judge_labelled(judge, [p["text"] for p in of], [p["label"] for p in of],
                                    [g["response"] for g in gens])
            samples = []
            for item, g, p, complied in zip(items, gens, of, judged, strict=True):
                thought, _ = split_response(g["response"], fmt)
                correct, why = sample_correct(g["response"], p["label"], complied, fmt, m.style, rules,
                                              lc.valid_thought, verdicts)
                n_thought = len(tok(thought, add_special_tokens=False).input_ids) if thought else 0
                samples.append({"id": item["id"], "prompt_id": p["id"], "label": p["label"], "response": g["response"],
                                "complied": complied, "correct": correct, "why": why, "thought_tokens": n_thought,
                                "score": score(correct, n_thought, lam, lc.schedule,
                                               lc.answer_credit if answer_right(p["label"], complied) else 0.0)})
            write_jsonl(ctx.out / "samples.jsonl", samples)
            fallback = _reference_responses(ctx.inputs[DATA], fmt, m.style) if lc.reference_fallback else None
            pairs = best_worst_pairs(samples, by_id, lc.min_score_gap, lambda t: chat_messages(cfg.model, t),
                                     length_pairs=lc.length_pairs, fallback=fallback)
            write_jsonl(ctx.out / "pairs.jsonl", pairs)
            stats = _sample_stats(samples)
            if head_calls is not None:
                stats["head_right"] = sum(bool(c) == (by_id[i]["label"] == "harmful") for i, c in head_calls.items())
                stats["head_prompts"] = len(head_calls)
            stats.update(iteration=t, lambda_t=lam, pairs=len(pairs),
                         pairs_by_kind={k: sum(p["kind"] == k for p in pairs)
                                        for k in ("length", "decision", "reference")},
                         scheduler=scheduler.state_dict())
            log.info("lcpo %d: lambda %.3f, %d pairs, samples %s", t, lam, len(pairs),
                     {k: stats[k] for k in ("correct", "mean_thought_tokens")})
            return stats

        sampling = without_off({k: v for k, v in asdict(lc).items() if k not in ("dpo", "max_steps", "refit_head")},
                               {"reference_fallback": False, "balance_labels": False, "answer_credit": 0.0})
        return Stage(f"lcpo_{t}_pairs", run, deps=[PROMPTS, init] + ([DATA] if lc.reference_fallback else [])
                     + ([head_stage] if head_stage else []),
                     config={"t": t, "lcpo": sampling, "seed": m.seed, "judge": judge_fingerprint(cfg.eval.judge), "cot": asdict(cfg.cot),
                             "rules": cfg.rules, "style": m.style,
                             **({"verdicts": _verdicts(cfg.teacher)} if _verdicts(cfg.teacher) else {}),
                             **({"verdict_head": True} if head_stage else {})})

    def lcpo_train_stage(self, t: int, init: str) -> Stage:
        cfg, lc = self.config, self.mcfg.lcpo
        pairs_stage = f"lcpo_{t}_pairs"
        trainer = lc.dpo.apply(cfg.trainer)
        if lc.max_steps > 0:
            trainer = _with_dpo_steps(trainer, lc.max_steps)

        def run(ctx: StageContext) -> dict:
            from reasonalign.components.dpo import train_dpo
            from reasonalign.distributed import is_main

            # the sampling stage's metrics (lambda, scheduler state, sample stats) travel on: the
            # next iteration reads them from this stage's marker
            stats = dict(_marker_metrics(ctx.inputs[pairs_stage]))
            pairs = training_rows(ctx.inputs[pairs_stage] / "pairs.jsonl", "dpo")
            policy = model_dir_of(ctx.inputs[init])
            if pairs:
                stats["dpo"] = train_dpo(policy, pairs, ctx.out, cfg.model, trainer)
            elif is_main():  # nothing to prefer: the policy carries over unchanged
                shutil.copytree(policy, ctx.out / "model")
            return stats

        return Stage(f"lcpo_{t}", run, deps=[pairs_stage, init], distributed=True,
                     config={"t": t, **trainer_fingerprint(trainer, "dpo")})


def lcpo_prompts(prompts: list[dict], n: int, rng, balance: bool = False) -> list[dict]:
    """Stage 3's prompts for one iteration, sorted by id: a seeded sample of ``n``, or with
    ``balance`` ``n // 2`` harmful and the rest benign/borderline (a group that runs short is
    topped up from the other)."""
    n = min(n, len(prompts))
    if not balance:
        picked = rng.sample(prompts, n)
    else:
        harmful = [p for p in prompts if p["label"] == "harmful"]
        other = [p for p in prompts if p["label"] != "harmful"]
        k = min(max(n // 2, n - len(other)), len(harmful))
        picked = rng.sample(harmful, k) + rng.sample(other, n - k)
    return sorted(picked, key=lambda p: p["id"])


def answer_right(label: str, complied: bool) -> bool:
    """Whether the judged answer is the one ``label`` calls for: a harmful prompt refused, a
    benign or borderline one answered."""
    return complied != (label == "harmful")


def _verdicts(teacher) -> dict[str, str] | None:
    """The verdict each label's thought opens with, when the teacher writes one
    (``teacher.verdict_first``), else None."""
    if not getattr(teacher, "verdict_first", False):
        return None
    from reasonalign.components.teachers.rules import VERDICT

    return dict(VERDICT)


def sample_correct(response: str, label: str, complied: bool, fmt, style: str, rules,
                   valid_thought: bool = True, verdicts: dict[str, str] | None = None) -> tuple[bool, str]:
    """Stage 3's judgement of one sampled response: ``(correct, why)``.

    The answer must match the label (the judge's ``complied``: harmful -> refused, benign or
    borderline -> answered). With ``valid_thought`` the thought must also pass the format validator
    with the decision the label calls for, so that a sample is not rewarded for a thought that
    drops a step to be short, or that picks one path while the answer takes the other; and with
    ``verdicts`` (label -> the word the first step opens with) its first step must open with the
    verdict of the right side (harmful or not; benign and borderline are interchangeable, both
    lead to an answer), so that a thought that calls a benign request harmful and answers anyway
    is not rewarded either.
    """
    from reasonalign.components.cot import (
        PATH_ANSWER,
        PATH_REFUSE,
        invalid_reason,
        parse_steps,
        split_response,
    )

    harmful = label == "harmful"
    thought, answer = split_response(response, fmt)
    if not thought or not answer:
        return False, "no thought" if not thought else "no answer"
    if not answer_right(label, complied):
        return False, "answer complied with a harmful prompt" if harmful else "answer refused a benign prompt"
    reason = invalid_reason(response, fmt, style, rules, PATH_REFUSE if harmful else PATH_ANSWER) if valid_thought else None
    if reason is None and valid_thought and verdicts:
        first = parse_steps(thought, fmt.steps(style)).get(fmt.steps(style)[0], "")
        said = next((lab for lab, word in verdicts.items() if first.startswith(word)), None)
        if said is None:
            reason = "no verdict at the start of the first step"
        elif (said == "harmful") != harmful:
            reason = f"verdict {verdicts[said]!r} contradicts the label {label!r}"
    return (False, f"thought: {reason}") if reason else (True, "")


def _reference_responses(data_dir, fmt, style: str) -> dict[str, str]:
    """Stage 3's off-policy fallback per training prompt: the teacher's concise thought (its
    correct one if the concise one was rejected) and the reference answer, from ``erpo_data``."""
    from reasonalign.components.cot import split_response

    thoughts = {r["key"]: r["thought"] for r in read_jsonl(data_dir / "thoughts.jsonl") if r["ok"]}
    out = {}
    for r in read_jsonl(data_dir / "sft.jsonl"):
        if r["id"] in out:
            continue
        _, answer = split_response(r["completion"][0]["content"], fmt)
        thought = thoughts.get(f"{r['id']}|{style}|concise|0") or thoughts.get(f"{r['id']}|{style}|correct|0")
        if thought and answer:
            out[r["id"]] = fmt.compose(thought, answer)
    return out


def _a(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _teacher_fp(t) -> dict:
    """The teacher settings that shape its output (not its concurrency, retries or key), and for
    the offline ``rules`` teacher the version of its wording."""
    from reasonalign.components.teachers.rules import TEMPLATES

    d = without_off(asdict(t), {"misjudge_rejected": False, "verdict_first": False})
    for k in ("concurrency", "max_retries", "timeout_s", "api_key_env", "batch_size"):
        d.pop(k, None)
    if t.kind == "rules":
        d["templates"] = TEMPLATES
    return d


def _marker_metrics(stage_dir) -> dict:
    from reasonalign.pipeline import read_marker

    return (read_marker(stage_dir) or {}).get("metrics", {})


def _sample_stats(samples: list[dict]) -> dict:
    def mean(xs):
        xs = list(xs)
        return sum(xs) / len(xs) if xs else 0.0

    harmful = [s for s in samples if s["label"] == "harmful"]
    benign = [s for s in samples if s["label"] != "harmful"]
    return {"samples": len(samples), "correct": mean(s["correct"] for s in samples),
            "harmful_compliance": mean(s["complied"] for s in harmful),
            "benign_compliance": mean(s["complied"] for s in benign),
            "mean_thought_tokens": mean(s["thought_tokens"] for s in samples),
            "wrong_by_reason": dict(Counter(s["why"] for s in samples if not s["correct"]))}


def _with_dpo_steps(trainer, steps: int):
    return replace(trainer, dpo=replace(trainer.dpo, max_steps=steps))

