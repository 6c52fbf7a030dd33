"""Judges: did the model comply with a request?

Every judge has one method, ``judge(prompts, responses) -> list[bool]``, True where the model
*complied* (answered the request rather than refusing it). Harmful-prompt compliance and
benign-prompt compliance (its complement being over-refusal) are both computed from it.

``eval.judge._target_`` names the class, built as ``cls(cfg)`` with the ``eval.judge`` node (config
group ``judge/``; a judge of your own: docs/plugins.md). The shipped kinds: ``refusal`` (phrase
patterns), ``classifier`` (a local Llama Guard 3 / WildGuard model) and ``api`` (any
OpenAI-compatible server with the StrongREJECT rubric). A judge with ``harm_only = True`` (Llama
Guard) cannot see refusals; the evaluation suite judges benign and borderline prompts with the
refusal patterns then.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from reasonalign.components.judges.refusal import RefusalJudge
from reasonalign.config import JUDGE_TARGETS, JudgeConfig
from reasonalign.targets import build, resolve_target, target_fields


@runtime_checkable
class Judge(Protocol):
    def judge(self, prompts: Sequence[str], responses: Sequence[str]) -> list[bool]:
        """True where the response complied with its prompt; one per pair, in order."""
        ...


# the shipped judges: kind -> the class ``_target_`` names (conf/judge/<kind>.yaml)
JUDGES = JUDGE_TARGETS


def get_judge(spec: str | JudgeConfig) -> Judge:
    """The judge ``spec`` names: a :class:`JudgeConfig` (``eval.judge``; its ``_target_``, built as
    ``cls(spec)``) or the name of a shipped kind (:data:`JUDGES`: refusal | classifier | api)."""
    if isinstance(spec, str):
        if spec not in JUDGES:
            raise ValueError(f"unknown judge {spec!r}; known: {', '.join(JUDGES)} (a judge of your own: "
                             f"eval.judge._target_)")
        spec = JudgeConfig(_target_=JUDGES[spec], name=spec)
    return build(resolve_target(spec._target_, "eval.judge._target_", "judge"), spec)


def judge_labelled(judge: Judge, prompts: Sequence[str], labels: Sequence[str],
                   responses: Sequence[str]) -> list[bool]:
    """``judge`` on every response; a harm-only judge (Llama Guard) judges the harmful prompts and
    leaves benign/borderline ones to the refusal patterns (it cannot see a refusal). Every stage that
    judges (base answers, stage-3 samples, SaRO's continuations, evaluation) goes through here."""
    if not getattr(judge, "harm_only", False):
        return list(judge.judge(list(prompts), list(responses)))
    out = [False] * len(prompts)
    harm = [i for i, label in enumerate(labels) if label == "harmful"]
    rest = [i for i, label in enumerate(labels) if label != "harmful"]
    for idx, j in ((harm, judge), (rest, RefusalJudge())):
        if idx:
            for i, c in zip(idx, j.judge([prompts[i] for i in idx], [responses[i] for i in idx]), strict=True):
                out[i] = bool(c)
    return out


# JudgeConfig fields that change how a judge is reached, not what it decides: left out of the
# fingerprint of every stage that judges, so changing them re-runs nothing
JUDGE_NOT_OUTPUT = ("concurrency", "timeout_s", "max_retries")
# the api judge's helpfulness scoring (eval/runner.mark_helpfulness): left out of judge_fingerprint,
# in the evaluation stages' fingerprints only when it is on (helpfulness_fingerprint)
HELPFULNESS_KEYS = ("helpfulness", "helpfulness_uri", "helpfulness_sha256", "helpfulness_prompt",
                    "helpfulness_threshold")


def judge_fingerprint(spec: str | JudgeConfig | Any) -> Any:
    """``spec`` (a judge name or a :class:`JudgeConfig`) as a stage fingerprint's JSON (a shipped
    class named by its kind: :func:`reasonalign.targets.target_fields`)."""
    from dataclasses import is_dataclass

    if not is_dataclass(spec):
        return spec
    # the helpfulness keys change only the evaluation's output: its stages add helpfulness_fingerprint
    return {k: v for k, v in target_fields(spec).items() if k not in JUDGE_NOT_OUTPUT + HELPFULNESS_KEYS}


def helpfulness_fingerprint(spec: Any) -> dict:
    """What the evaluation stages add to their fingerprints for the api judge's helpfulness scoring:
    ``{}`` while it is off (fingerprints as before it existed), else ``{"helpfulness": its keys}``
    (the training stages, which judge but score no helpfulness, never hold them)."""
    if not getattr(spec, "helpfulness", False):
        return {}
    return {"helpfulness": {k: getattr(spec, k) for k in HELPFULNESS_KEYS if k != "helpfulness"}}


def judge_name(spec: str | JudgeConfig | Any) -> str:
    return spec if isinstance(spec, str) else str(getattr(spec, "name", "judge"))


__all__ = ["HELPFULNESS_KEYS", "JUDGES", "JUDGE_NOT_OUTPUT", "Judge", "RefusalJudge", "get_judge",
           "helpfulness_fingerprint", "judge_fingerprint", "judge_labelled", "judge_name"]
