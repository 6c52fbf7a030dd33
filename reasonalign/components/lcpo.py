"""ERPO's stage 3, length-controlled iterative preference optimisation (LCPO): one iteration's
sample -> judge -> score -> pair (docs/methods/erpo.md).

:func:`sample_and_pair` draws ``prompts_per_iteration`` training prompts, samples
``samples_per_prompt`` responses per prompt from the current policy (each opening with the verdict
a verdict head calls for, if one is given), judges the answers
(:func:`~reasonalign.components.judges.judge_labelled`), checks the thoughts
(:func:`sample_correct`), measures the thought's length and scores
``correct - lambda_t * length/length_norm`` with ``lambda_t`` from the length-penalty scheduler
(:mod:`~reasonalign.components.length`), and pairs each prompt's best response against its worst
(:func:`~reasonalign.components.pairs.best_worst_pairs`). The DPO step on those pairs is a
training stage of the method.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from reasonalign.components.length import LengthSchedule
from reasonalign.config import DPOOverrides

if TYPE_CHECKING:
    from reasonalign.components.verdict_head import VerdictHeadInput

log = logging.getLogger("reasonalign.erpo")


@dataclass
class LCPOConfig:
    """Stage 3: length-controlled iterative preference optimisation. A sample is correct when its
    answer matches the label and its thought passes the validator (:func:`sample_correct`); it
    scores ``1[correct] - lambda_t * length/length_norm``."""

    iterations: int = 3  # T (0 turns stage 3 off)
    samples_per_prompt: int = 4  # K
    prompts_per_iteration: int = 32  # training prompts sampled per iteration (seeded)
    temperature: float = 0.9
    top_p: float = 0.95
    max_new_tokens: int = 512  # per sample, thought and answer (the 135M default: 192)
    batch_size: int = 16
    min_score_gap: float = 0.02  # pair a prompt's best and worst only if their scores differ this much
    # also pair a prompt's shortest correct sample against its longest correct one (a "length" pair)
    # when the best/worst pair is a decision pair
    length_pairs: bool = True
    max_steps: int = -1  # DPO steps per iteration (-1: trainer.dpo's epochs)
    # this stage's DPO settings over trainer.dpo (null keeps the trainer's): an SFT term on the
    # chosen (shortest correct) side; a model's own learning rate: conf/method_scale/erpo_<model>.yaml
    dpo: DPOOverrides = field(default_factory=lambda: DPOOverrides(
        loss_type=["sigmoid", "sft"], loss_weights=[1.0, 1.0]))
    # lambda_t's schedule; its ``iterations`` is always set from ``lcpo.iterations``
    schedule: LengthSchedule = field(default_factory=lambda: LengthSchedule(
        kind="linear", lambda_start=0.3, lambda_end=0.5, length_norm=256.0, lambda_max=1.0))

    def trainer(self, base):
        """The TrainerConfig of an iteration's DPO step: ``base`` with ``dpo`` and ``max_steps`` over it."""
        trainer = self.dpo.apply(base)
        return replace(trainer, dpo=replace(trainer.dpo, max_steps=self.max_steps)) if self.max_steps > 0 else trainer


def sample_and_pair(out: Path, t: int, lc: LCPOConfig, config, policy: str, train_prompts: list[dict],
                    previous: dict, *, seed: int, style: str, head: VerdictHeadInput | None = None) -> dict:
    """Iteration ``t`` of stage 3 with the policy at ``policy`` (a model dir); writes
    ``generations.jsonl``, ``samples.jsonl`` and ``pairs.jsonl`` under ``out`` and returns the
    iteration's stats (with the scheduler's state for the next iteration).

    ``config``: the run's :class:`~reasonalign.config.Config` (model, cot, rules, judge, teacher,
    generation backend); ``previous``: the metrics of the stage that made the policy (its mean
    thought length, and from iteration 2 on the scheduler state).
    """
    import torch

    from reasonalign.components.cot import CoTFormat, split_response
    from reasonalign.components.generation import generate_resumable, load_generator, release_generator
    from reasonalign.components.judges import get_judge, judge_labelled
    from reasonalign.components.length import LengthScheduler, score
    from reasonalign.components.pairs import best_worst_pairs
    from reasonalign.components.rules import load_rules
    from reasonalign.components.teachers.base import teacher_verdicts
    from reasonalign.config import GenerationSettings
    from reasonalign.models import chat_messages, load_model, load_tokenizer
    from reasonalign.pipeline import write_jsonl

    cfg = config
    fmt = CoTFormat(cfg.cot)
    scheduler = LengthScheduler(replace(lc.schedule, iterations=lc.iterations))
    if t > 1:
        scheduler.load_state_dict(previous["scheduler"])
    lam = scheduler.next(previous.get("mean_thought_tokens"))

    prompts = lcpo_prompts(train_prompts, lc.prompts_per_iteration, random.Random(seed * 1000 + t))
    items = [{"id": f"{p['id']}#s{k}", "messages": chat_messages(cfg.model, p["text"])}
             for p in prompts for k in range(lc.samples_per_prompt)]
    head_calls = model = None
    if head:  # every sample of a prompt opens with the verdict its head calls for
        from reasonalign.components.verdict_head import VerdictHead, verdict_prefixes

        # the head reads the transformers model's hidden states
        model, tok = load_model(cfg.model, policy), load_tokenizer(cfg.model, policy)
        prefixes, calls = verdict_prefixes(model, tok, VerdictHead.load(head.path),
                                           [chat_messages(cfg.model, p["text"]) for p in prompts],
                                           fmt, head.style, head.batch_size)
        head_calls = dict(zip([p["id"] for p in prompts], calls.tolist(), strict=True))
        by_prompt = dict(zip([p["id"] for p in prompts], prefixes, strict=True))
        for it in items:
            it["prefix"] = by_prompt[it["id"].rsplit("#s", 1)[0]]
    sample_seed = seed * 1000 + t
    # the hf backend samples with the model the head used; vLLM starts with it gone
    model, tok = load_generator(cfg.model, policy, cfg.generation_backend, seed=sample_seed, hf_model=model)
    torch.manual_seed(sample_seed)
    settings = GenerationSettings(max_new_tokens=lc.max_new_tokens, batch_size=lc.batch_size, do_sample=True,
                                  temperature=lc.temperature, top_p=lc.top_p)
    gens = generate_resumable(model, tok, items, settings, out / "generations.jsonl",
                              desc=f"lcpo {t}: sampling K={lc.samples_per_prompt}", seed=sample_seed)
    release_generator(model)  # the judge may load a model onto the GPU next
    del model
    judge = get_judge(cfg.eval.judge)
    rules = load_rules(cfg.rules)
    verdicts = teacher_verdicts(cfg.teacher)
    by_id = {p["id"]: p for p in prompts}
    of = [by_id[item["id"].rsplit("#s", 1)[0]] for item in items]
    judged = judge_labelled(judge, [p["text"] for p in of], [p["label"] for p in of], [g["response"] for g in gens])
    samples = []
    for item, g, p, complied in zip(items, gens, of, judged, strict=True):
        thought, _ = split_response(g["response"], fmt)
        correct, why = sample_correct(g["response"], p["label"], complied, fmt, style, rules, verdicts)
        n_thought = len(tok(thought, add_special_tokens=False).input_ids) if thought else 0
        samples.append({"id": item["id"], "prompt_id": p["id"], "label": p["label"], "response": g["response"],
                        "complied": complied, "correct": correct, "why": why, "thought_tokens": n_thought,
                        "score": score(correct, n_thought, lam, lc.schedule)})
    write_jsonl(out / "samples.jsonl", samples)
    pairs = best_worst_pairs(samples, by_id, lc.min_score_gap, lambda text: chat_messages(cfg.model, text),
                             length_pairs=lc.length_pairs)
    write_jsonl(out / "pairs.jsonl", pairs)
    stats = sample_stats(samples)
    if head_calls is not None:
        stats["head_right"] = sum(bool(c) == (by_id[i]["label"] == "harmful") for i, c in head_calls.items())
        stats["head_prompts"] = len(head_calls)
    stats.update(iteration=t, lambda_t=lam, pairs=len(pairs),
                 pairs_by_kind={k: sum(p["kind"] == k for p in pairs) for k in ("length", "decision")},
                 scheduler=scheduler.state_dict())
    log.info("lcpo %d: lambda %.3f, %d pairs, samples %s", t, lam, len(pairs),
             {k: stats[k] for k in ("correct", "mean_thought_tokens")})
    return stats


def lcpo_prompts(prompts: list[dict], n: int, rng) -> list[dict]:
    """Stage 3's prompts for one iteration: a seeded sample of ``n`` (it follows the training set's
    label shares), sorted by id."""
    return sorted(rng.sample(prompts, min(n, len(prompts))), key=lambda p: p["id"])


def answer_right(label: str, complied: bool) -> bool:
    """Whether the judged answer is the one ``label`` calls for: a harmful prompt refused, a
    benign or borderline one answered."""
    return complied != (label == "harmful")


def sample_correct(response: str, label: str, complied: bool, fmt, style: str, rules,
                   verdicts: dict[str, str] | None = None) -> tuple[bool, str]:
    """Stage 3's judgement of one sampled response: ``(correct, why)``.

    The answer must match the label (the judge's ``complied``: harmful -> refused, benign or
    borderline -> answered), and the thought must pass the format validator (every step, a known
    rule id, a Path line) with the decision the label calls for, so that a sample is not rewarded
    for a thought that drops a step to be short, or that picks one path while the answer takes the
    other (with answer-only correctness the 135M default's short winners dropped steps:
    docs/methods/erpo.md); and with
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
    reason = invalid_reason(response, fmt, style, rules, PATH_REFUSE if harmful else PATH_ANSWER)
    if reason is None and verdicts:
        first = parse_steps(thought, fmt.steps(style)).get(fmt.steps(style)[0], "")
        said = next((lab for lab, word in verdicts.items() if first.startswith(word)), None)
        if said is None:
            reason = "no verdict at the start of the first step"
        elif (said == "harmful") != harmful:
            reason = f"verdict {verdicts[said]!r} contradicts the label {label!r}"
    return (False, f"thought: {reason}") if reason else (True, "")


def sample_stats(samples: list[dict]) -> dict:
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
