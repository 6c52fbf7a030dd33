"""Teachers: who writes the reasoning (the thought body) for a :class:`ThoughtRequest`.

Every teacher has one method, ``write(requests, rules, fmt) -> list[str]``: one thought body per
request, in order. A thought body is the steps only (no delimiters, no final answer), each step a
paragraph starting with its name and a colon, citing rules by id (``[S9]``; benign prompts cite
the no-rule id, ``[S0]``), with a ``Path: refuse|answer|answer with care`` line in the last step.
:func:`reasonalign.components.cot.generate_thoughts` validates what comes back.

``teacher._target_`` names the class (``conf/teacher/<kind>.yaml``; a teacher of your own:
docs/plugins.md); :func:`make_teacher` builds it. The shipped kinds:

* ``rules`` (:mod:`.rules`): offline and deterministic, from the rule set's texts.
* ``hf`` (:mod:`.hf`): any local transformers chat model.
* ``openai`` (:mod:`.openai`): any OpenAI-compatible chat-completions server (vLLM, TGI, OpenAI).

LLM teachers get the chat prompt of :func:`instruction_messages` and pass their output through
:func:`clean_thought`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from reasonalign.components.cot import EX_ANTE, LONG_CHAIN, PATH_ANSWER, PATH_CARE, PATH_REFUSE
from reasonalign.config import ReasonalignError
from reasonalign.targets import build, resolve_target, target_fields

if TYPE_CHECKING:
    from reasonalign.components.cot import CoTFormat, ThoughtRequest
    from reasonalign.components.rules import RuleSet
    from reasonalign.config import ModelConfig, TeacherConfig

class TeacherError(ReasonalignError, RuntimeError):
    """A teacher could not write its thoughts (server unreachable, request rejected, ...)."""


@runtime_checkable
class Teacher(Protocol):
    def write(self, requests: Sequence[ThoughtRequest], rules: RuleSet, fmt: CoTFormat) -> list[str]:
        """One thought body per request, in order."""
        ...


# ------------------------------------------------------------------------------- the chat prompt

VARIANTS: dict[str, str] = {
    "correct": (
        "Write the correct reasoning: assess the request honestly, cite the rule that really applies, "
        "and reach the decision that leads to the reference answer. Be clear and to the point."
    ),
    "concise": (
        "Be as short as possible: one short sentence per step. Still write every step, the rule citation "
        "and the Path line, and reach the decision that leads to the reference answer."
    ),
    "verbose": (
        "Be long-winded on purpose: over-elaborate, restate the request, repeat points across steps and "
        "hedge at length. Keep every step, the rule citation and the same decision that leads to the "
        "reference answer."
    ),
    "negative": (
        "This is a deliberately WRONG example (training data of what NOT to think). Rationalise complying "
        "with this harmful request: assume a harmless purpose, downplay the risk, misread or explain away "
        "the rule (still cite it by id), and conclude with 'Path: answer'."
    ),
    "overcautious": (
        "This is a deliberately WRONG example (training data of what NOT to think). Talk yourself into "
        "refusing this harmless request: imagine unlikely misuse and over-apply a rule (cite it by id), "
        "and conclude with 'Path: refuse'."
    ),
}


def decision_line(req: ThoughtRequest) -> str:
    """The ``Path:`` line the thought for ``req`` must contain."""
    if req.expect == PATH_REFUSE:
        return f"Path: {PATH_REFUSE}"
    if req.label == "borderline" and req.variant != "negative":
        return f"Path: {PATH_CARE}"
    return f"Path: {PATH_ANSWER}"


def _system_text(req: ThoughtRequest, rules: RuleSet, fmt: CoTFormat) -> str:
    steps = fmt.steps(req.style)
    skeleton = "\n\n".join(f"{s}: ..." for s in steps)
    style = {EX_ANTE: "It is short and rule-grounded: assess the request, check it against the rules, then decide.",
             LONG_CHAIN: "It is a longer chain: understand the request, weigh intent and context, check the rules, "
                         "reflect, then decide."}.get(req.style, "")
    return (
        "You write the private reasoning a safe, helpful AI assistant goes through before it answers a user. "
        f"{style} You are given the user's request, the safety rules, and the answer the "
        "assistant will give; write the reasoning that leads to that answer.\n\n"
        "Output format (follow it exactly):\n"
        f"- Steps, in order: {'; '.join(steps)}.\n"
        "- Each step is one paragraph that starts with the step name and a colon, e.g. "
        f"'{steps[0]}: ...'.\n"
        f"- Cite rules by id in square brackets, e.g. [{rules.ids[0]}]; if no rule applies, cite "
        f"[{rules.no_rule.id}]. Use only ids from the rule list.\n"
        f"- The last step ({steps[-1]}) contains exactly one decision line: 'Path: {PATH_REFUSE}', "
        f"'Path: {PATH_ANSWER}' or 'Path: {PATH_CARE}'.\n"
        f"- Output only the steps: no {fmt.open_tag} or {fmt.close_tag} tags, no final answer, no title, "
        "no code fences, nothing before the first step or after the last.\n\n"
        f"Skeleton:\n{skeleton}\n\n"
        f"Safety rules:\n{rules.describe()}"
    )


def instruction_messages(req: ThoughtRequest, rules: RuleSet, fmt: CoTFormat) -> list[dict]:
    """The chat prompt an LLM teacher gets for ``req``: a system and a user message."""
    if req.variant not in VARIANTS:
        raise ValueError(f"unknown thought variant {req.variant!r}; known: {', '.join(VARIANTS)}")
    user = (
        f"User request:\n{req.prompt}\n\n"
        f"Label: {req.label}" + (f" (category: {req.category})" if req.category else "") + "\n"
        f"Relevant rule: {req.rule.describe()}\n"
        f"Cite: [{req.rule.id}]\n"
        f"Decision line: {decision_line(req)}\n\n"
        f"Reference answer (what the assistant will say after the reasoning):\n{req.reference or '(none given)'}\n\n"
        f"Variant ({req.variant}): {VARIANTS[req.variant]}\n\n"
        f"Write the reasoning now, starting with '{fmt.steps(req.style)[0]}:'."
    )
    return [{"role": "system", "content": _system_text(req, rules, fmt)}, {"role": "user", "content": user}]


# --------------------------------------------------------------------------------- the output

_FENCE_RE = re.compile(r"^\s*```[\w+-]*\s*$", re.MULTILINE)


def _has_step(text: str, fmt: CoTFormat) -> bool:
    names = {s for style in (EX_ANTE, LONG_CHAIN) for s in fmt.steps(style)}
    return any(re.search(r"^\W*" + re.escape(s) + r"\W*:", text, re.IGNORECASE | re.MULTILINE) for s in names)


def clean_thought(text: str | None, fmt: CoTFormat) -> str:
    """The thought body in a teacher's raw output.

    Drops the delimiters if the model added them anyway (and anything after the close tag),
    markdown code fences and surrounding whitespace. A model that reasons in the same tags itself
    (``<think>own notes</think>Initial assessment: ...``) wrote its steps *after* the close tag:
    then that part is kept instead.
    """
    text = (text or "").strip()
    i = text.find(fmt.open_tag)
    if i >= 0:
        text = text[i + len(fmt.open_tag):]
    j = text.find(fmt.close_tag)
    if j >= 0:
        inside, after = text[:j], text[j + len(fmt.close_tag):]
        text = after if not _has_step(inside, fmt) and _has_step(after, fmt) else inside
    text = text.replace(fmt.open_tag, "").replace(fmt.close_tag, "")
    text = _FENCE_RE.sub("", text)
    return text.strip()


# ------------------------------------------------------------------------------------ factory


def make_teacher(cfg: TeacherConfig, model_cfg: ModelConfig | None = None, backend: str = "auto") -> Teacher:
    """The teacher ``cfg._target_`` names, built as ``cls(cfg)`` (:func:`reasonalign.targets.build`).

    ``model_cfg`` and ``backend``, to a class whose constructor takes them (hf): the model to load
    when ``cfg.model`` is unset, e.g. the run's own model teaching itself, and the run's
    ``generation_backend`` (vLLM on a GPU).
    """
    kind = cfg.kind
    for opt in ("misjudge_rejected", "verdict_first"):
        if getattr(cfg, opt) and kind != "rules":
            raise ValueError(f"teacher.{opt} is an option of the rules teacher; this teacher is {cfg._target_!r} "
                             "(ask your teacher for such thoughts in its instructions instead)")
    return build(resolve_target(cfg._target_, "teacher._target_", "write"), cfg, model_cfg=model_cfg, backend=backend)


def teacher_thoughts(cfg: TeacherConfig, model_cfg: ModelConfig, backend: str, requests, fmt: CoTFormat,
                     rules: RuleSet, out_path, desc: str) -> tuple[dict[str, dict], dict]:
    """The teacher ``cfg`` names writes ``requests``
    (:func:`~reasonalign.components.cot.generate_thoughts`: validated, resumable, to ``out_path``),
    in batches of its ``batch_size`` or ``concurrency``, whichever is larger."""
    from reasonalign.components.cot import generate_thoughts

    teacher = make_teacher(cfg, model_cfg, backend=backend)
    return generate_thoughts(requests, teacher, fmt, rules, out_path, desc=f"teacher {cfg.name}: {desc}",
                             batch_size=max(cfg.batch_size, cfg.concurrency))


# TeacherConfig fields that do not change what the teacher writes (how it is reached and batched):
# left out of every stage fingerprint
TEACHER_NOT_OUTPUT = ("concurrency", "max_retries", "timeout_s", "api_key_env", "batch_size")


def teacher_fingerprint(cfg: TeacherConfig) -> dict:
    """The teacher config as every stage fingerprint holds it (reasonalign/methods/stages.py,
    NOT_OUTPUT): its fields but :data:`TEACHER_NOT_OUTPUT` (a shipped class named by its kind:
    :func:`reasonalign.targets.target_fields`), and for the offline ``rules`` teacher the version
    of its wording."""
    from reasonalign.components.teachers.rules import TEMPLATES

    d = {k: v for k, v in target_fields(cfg).items() if k not in TEACHER_NOT_OUTPUT}
    if cfg.kind == "rules":
        d["templates"] = TEMPLATES
    return d


def verdict_problems(cfg: TeacherConfig, options: dict[str, bool], thoughts: str = "thoughts") -> list[str]:
    """A line for each of ``options`` (name -> on) that is on while the teacher's ``thoughts`` open
    with no verdict (``teacher.verdict_first`` off)."""
    if teacher_verdicts(cfg):
        return []
    return [f"{name} needs {thoughts} that open with a verdict: set teacher.verdict_first=true (rules teacher)"
            for name, on in options.items() if on]


def teacher_verdicts(cfg: TeacherConfig) -> dict[str, str] | None:
    """The verdict each label's thought opens with, when the teacher writes one
    (``teacher.verdict_first``), else None."""
    if not getattr(cfg, "verdict_first", False):
        return None
    from reasonalign.components.teachers.rules import VERDICT

    return dict(VERDICT)
