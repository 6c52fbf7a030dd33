"""Rule-embedded chain-of-thought: the format, its parser and validator, and the generator.

An assistant turn is ``<open>\\n<thought>\\n<close>\\n<answer>`` (delimiters configurable,
default ``<think>``/``</think>``). The thought is a sequence of steps, each a paragraph that starts
with its name and a colon:

* ERPO's *ex-ante* style: ``Initial assessment`` (what is asked, likely intent, risk signals),
  ``Rule verification`` (the relevant rules, cited by id as ``[S9]``, and whether the request
  violates them), ``Path calibration`` (``Path: refuse`` / ``Path: answer`` /
  ``Path: answer with care``, plus style advice).
* SaRO's *long-chain* style: ``Understanding the request``, ``Intent and context``,
  ``Policy check``, ``Reflection``, ``Decision`` (the same ``Path: ...`` line).

The validator rejects malformed teacher output (and the generator counts the rejects): missing or
repeated delimiters, missing or out-of-order steps, no cited rule or an unknown rule id, no
``Path:`` decision, a decision that contradicts the expected one, an empty answer.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from reasonalign.components.rules import Rule, RuleSet
from reasonalign.config import CoTConfig

log = logging.getLogger("reasonalign.cot")

EX_ANTE = "ex_ante"
LONG_CHAIN = "long_chain"

PATH_REFUSE = "refuse"
PATH_ANSWER = "answer"
PATH_CARE = "answer with care"
_PATH_RE = re.compile(r"Path:\s*(refuse|answer with care|answer)\b", re.IGNORECASE)
_RULE_RE = re.compile(r"\[(S\d+)\]")


class CoTFormat:
    """The reasoning format, from :class:`reasonalign.config.CoTConfig`."""

    def __init__(self, cfg: CoTConfig | None = None):
        cfg = cfg or CoTConfig()
        self.open_tag, self.close_tag = cfg.open_tag, cfg.close_tag
        self._steps = {EX_ANTE: tuple(cfg.ex_ante_steps), LONG_CHAIN: tuple(cfg.long_chain_steps)}

    def steps(self, style: str) -> tuple[str, ...]:
        if style not in self._steps:
            raise ValueError(f"unknown reasoning style {style!r}; expected {EX_ANTE!r} or {LONG_CHAIN!r}")
        return self._steps[style]

    def compose(self, thought: str, answer: str) -> str:
        return f"{self.open_tag}\n{thought.strip()}\n{self.close_tag}\n{answer.strip()}"


@dataclass
class Parsed:
    thought: str
    answer: str
    steps: dict[str, str] = field(default_factory=dict)
    cited: list[str] = field(default_factory=list)
    path: str | None = None


def split_response(text: str, fmt: CoTFormat) -> tuple[str, str]:
    """``(thought, answer)``; a response without a closed thought is all answer (thought "")."""
    i = text.find(fmt.open_tag)
    j = text.find(fmt.close_tag, i + len(fmt.open_tag)) if i >= 0 else -1
    if i < 0 or j < 0:
        if i >= 0:  # opened, never closed: all thought, no answer
            return text[i + len(fmt.open_tag):].strip(), ""
        return "", text.strip()
    return text[i + len(fmt.open_tag):j].strip(), text[j + len(fmt.close_tag):].strip()


def parse_steps(thought: str, steps: tuple[str, ...]) -> dict[str, str]:
    """Each step's text, keyed by its name, for the step names found (in any order)."""
    pat = re.compile(r"^\s*(?:\d+[.)]\s*)?(?:\*\*)?(" + "|".join(re.escape(s) for s in steps) + r")(?:\*\*)?\s*:",
                     re.IGNORECASE | re.MULTILINE)
    marks = [(m.start(), m.end(), m.group(1)) for m in pat.finditer(thought)]
    out = {}
    canon = {s.lower(): s for s in steps}
    for k, (_, end, name) in enumerate(marks):
        stop = marks[k + 1][0] if k + 1 < len(marks) else len(thought)
        out.setdefault(canon[name.lower()], thought[end:stop].strip())
    return out


def parse(text: str, fmt: CoTFormat, style: str) -> Parsed:
    thought, answer = split_response(text, fmt)
    steps = parse_steps(thought, fmt.steps(style))
    m = _PATH_RE.search(thought)
    return Parsed(thought, answer, steps, _RULE_RE.findall(thought), m.group(1).lower() if m else None)


class ValidationError(ValueError):
    pass


def validate(text: str, fmt: CoTFormat, style: str, rules: RuleSet, expect: str | None = None) -> Parsed:
    """Parse and check a full assistant turn; raise :class:`ValidationError` with the reason.

    ``expect``: ``"refuse"`` or ``"answer"`` (``answer with care`` counts as answer), or None.
    """
    for tag in (fmt.open_tag, fmt.close_tag):
        n = text.count(tag)
        if n != 1:
            raise ValidationError(f"expected exactly one {tag!r}, found {n}")
    if text.find(fmt.open_tag) > text.find(fmt.close_tag):
        raise ValidationError("close tag before open tag")
    p = parse(text, fmt, style)
    if not p.thought:
        raise ValidationError("empty thought")
    if not p.answer:
        raise ValidationError("empty answer after the thought")
    steps = fmt.steps(style)
    missing = [s for s in steps if s not in p.steps]
    if missing:
        raise ValidationError(f"missing step(s): {', '.join(missing)}")
    positions = [p.thought.lower().find(s.lower() + ":") for s in steps]
    if positions != sorted(positions):
        raise ValidationError("steps out of order")
    empty = [s for s in steps if not p.steps[s]]
    if empty:
        raise ValidationError(f"empty step(s): {', '.join(empty)}")
    if not p.cited:
        raise ValidationError("no rule cited (expected an id like [S1])")
    unknown = [c for c in p.cited if c not in rules.ids and c != rules.no_rule.id]
    if unknown:
        raise ValidationError(f"unknown rule id(s): {', '.join(sorted(set(unknown)))}")
    if p.path is None:
        raise ValidationError("no decision line (expected 'Path: refuse|answer|answer with care')")
    if expect is not None:
        got = PATH_REFUSE if p.path == PATH_REFUSE else PATH_ANSWER
        if got != expect:
            raise ValidationError(f"decision {p.path!r} contradicts the expected {expect!r}")
    return p


def invalid_reason(text: str, fmt: CoTFormat, style: str, rules: RuleSet, expect: str | None = None) -> str | None:
    """Why :func:`validate` rejects ``text``, or None when it passes."""
    try:
        validate(text, fmt, style, rules, expect)
    except ValidationError as e:
        return str(e)
    return None


# ------------------------------------------------------------------------------------- generation
@dataclass
class ThoughtRequest:
    """What a teacher needs to write one thought."""

    id: str
    prompt: str
    label: str  # harmful | benign | borderline
    category: str
    rule: Rule
    reference: str  # the answer the thought leads to
    style: str = EX_ANTE
    # correct | concise | verbose | negative (rationalises complying with a harmful request)
    # | overcautious (talks itself into refusing a benign one)
    variant: str = "correct"
    sample: int = 0

    @property
    def expect(self) -> str:
        wrong = self.variant in ("negative", "overcautious")
        refuse = self.label == "harmful"
        return PATH_REFUSE if refuse != wrong else PATH_ANSWER

    def key(self) -> str:
        return f"{self.id}|{self.style}|{self.variant}|{self.sample}"


def generate_thoughts(requests: list[ThoughtRequest], teacher, fmt: CoTFormat, rules: RuleSet, out_path: Path,
                      desc: str = "teacher thoughts", batch_size: int = 16) -> tuple[dict[str, dict], dict]:
    """Write one validated thought per request to ``out_path`` (append-only, resumable).

    Returns ``({request.key(): row}, counts)``; a row is ``{"key", "thought", "ok", "reason"}``
    (``ok`` False: the validator rejected it; such rows are kept, so a resumed run does not ask
    the teacher again, and counted).
    """
    from tqdm.auto import tqdm

    from reasonalign.pipeline import append_jsonl, read_finished_lines

    done = {r["key"]: r for r in read_finished_lines(out_path)}
    todo = [r for r in requests if r.key() not in done]
    if done:
        log.info("%s: resuming, %d of %d already written", desc, len(requests) - len(todo), len(requests))
    bar = tqdm(total=len(requests), initial=len(requests) - len(todo), desc=desc, unit="thought")
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        thoughts = teacher.write(batch, rules, fmt)
        rows = []
        for req, thought in zip(batch, thoughts, strict=True):
            reason = invalid_reason(fmt.compose(thought, req.reference or "."), fmt, req.style, rules, req.expect)
            row = {"key": req.key(), "thought": thought, "ok": reason is None, "reason": reason or ""}
            rows.append(row)
            done[row["key"]] = row
        append_jsonl(out_path, rows)
        bar.update(len(batch))
    bar.close()
    counts = {"requested": len(requests), "resumed": len(requests) - len(todo),
              "accepted": sum(done[r.key()]["ok"] for r in requests),
              "rejected": sum(not done[r.key()]["ok"] for r in requests)}
    rejected = [done[r.key()] for r in requests if not done[r.key()]["ok"]]
    if rejected:
        log.warning("%s: validator rejected %d of %d (first: %s)", desc, len(rejected), len(requests),
                    rejected[0]["reason"])
    return done, counts
