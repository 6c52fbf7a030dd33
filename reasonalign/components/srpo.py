"""SaRO's safety-oriented reasoning process optimisation (SRPO): step splitting and the
process- and outcome-level preference pairs (docs/methods/saro.md).

A long-chain thought is split into units: its steps (``split="steps"``: by the step headers) or
its sentences (``split="sentences"``: each step cut after ``.``/``!``/``?`` and at line breaks,
the step's header staying with its first sentence). A *branch point* is a step name (by default
``Reflection``), optionally moved ``sentence_offset`` sentences into that step.

* **process pair** at a branch point: ``prompt`` = the rendered user turn + the open tag + the
  chain's units before the branch point (the shared prefix); ``chosen`` = the rest of the correct
  chain (it reflects correctly and reaches the right decision) + the right answer; ``rejected`` =
  a continuation from the same point that reaches the wrong outcome: the same step onwards of the
  teacher's ``negative`` (harmful prompt) or ``overcautious`` (benign prompt) chain + its answer,
  or a continuation sampled from the policy whose outcome was judged wrong.
* **outcome pair**: the whole assistant turn: ``prompt`` = the rendered user turn; ``chosen`` =
  correct chain + right answer; ``rejected`` = wrong chain + wrong answer.
* **answer pair** (ours): the branch point is the answer itself. ``prompt`` = the rendered user
  turn + the whole correct chain and its closing tag; ``chosen`` = the right answer; ``rejected`` =
  the wrong one (a refusal for a benign prompt, the base model's compliant answer for a harmful
  one). It teaches the answer to follow the decision the chain reached, which a small model's
  warmup alone does not (docs/methods/saro.md).
* **verdict pair** (ours; chains that open with a verdict, ``teacher.verdict_first``): the whole
  assistant turn, as an outcome pair; ``rejected`` = the correct turn with its verdict word swapped
  for the other side's (:func:`~reasonalign.components.pairs.swap_verdict`), everything else the
  same, so the pair trains the token that classifies the request.

Pairs use TRL's *standard* (plain text) preference format: a conversational prompt cannot end in
a partial assistant message. The prompt is the chat template's rendering with the generation
prompt (a leading BOS the tokenizer adds by itself is dropped, so it is not doubled); ``chosen``
and ``rejected`` end with the tokenizer's EOS (end-of-turn) token. Whitespace at the cut moves
into the continuation where the tokenizer would otherwise tokenize the prompt's end differently
alone than followed by the continuation (:func:`cut`, :func:`newlines_end_prompt`), so TRL finds
the prompt as an exact token prefix.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reasonalign.components.cot import PATH_REFUSE, CoTFormat, parse, split_response
from reasonalign.components.judges import judge_labelled

log = logging.getLogger("reasonalign.saro")

SPLITS = ("steps", "sentences")
REJECTED_SOURCES = ("teacher", "policy")


@dataclass
class PolicySampling:
    """``srpo.rejected_source=policy``: continuations sampled from the RW model at each branch."""

    samples: int = 4  # continuations per branch; the first one judged wrong is the rejected side
    temperature: float = 1.0
    top_p: float = 0.95
    max_new_tokens: int = 512  # the 135M default: 192
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
    # (measured: with verdict pairs and the verdict head it does more often; docs/methods/saro.md)
    answer_ratio: float = 0.0
    # ours, needs teacher.verdict_first: share of chains that give a verdict pair (the correct turn
    # against the same turn with its verdict word swapped: components/srpo.py), so DPO trains the
    # token that classifies the request; on with answer pairs and the head in the CPU recipe
    verdict_ratio: float = 0.0
    rejected_source: str = "teacher"  # teacher (negative/overcautious chains) | policy (sampled from the RW model)
    policy: PolicySampling = field(default_factory=PolicySampling)

    def problems(self, steps: Sequence[str], style: str) -> list[str]:
        """What is wrong with these settings for chains of ``steps`` (style ``style``), one line each
        (``srpo.verdict_ratio`` needs verdicts: :func:`~reasonalign.components.teachers.base.verdict_problems`)."""
        out = []
        if self.split not in SPLITS:
            out.append(f"srpo.split must be one of {', '.join(SPLITS)} (got {self.split!r})")
        if self.rejected_source not in REJECTED_SOURCES:
            out.append(f"srpo.rejected_source must be one of {', '.join(REJECTED_SOURCES)} (got {self.rejected_source!r})")
        for k in ("process_ratio", "outcome_ratio", "answer_ratio", "verdict_ratio"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                out.append(f"srpo.{k} must be a share between 0 and 1 (got {getattr(self, k)})")
        unknown = [b for b in self.branch_steps if b not in steps]
        if unknown:
            out.append(f"srpo.branch_steps {unknown} are not steps of style {style!r} ({', '.join(steps)})")
        return out
_SENTENCE_END = re.compile(r"(?<=[.!?])[ \t]+(?=[\"'(\[*A-Z0-9])|\n+")


@dataclass
class Segment:
    step: str | None  # the step the unit belongs to (None: text before the first step header)
    start: int  # character offset in the (stripped) thought
    text: str  # the unit, stripped


def _header_re(steps: Sequence[str]) -> re.Pattern:
    # the same step headers cot.parse_steps recognises
    return re.compile(r"^\s*(?:\d+[.)]\s*)?(?:\*\*)?(" + "|".join(re.escape(s) for s in steps) + r")(?:\*\*)?\s*:",
                      re.IGNORECASE | re.MULTILINE)


def segments(thought: str, fmt: CoTFormat, style: str, split: str = "steps") -> list[Segment]:
    """The units of ``thought`` (stripped first) with their step and offset; see the module doc."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    thought = thought.strip()
    steps = fmt.steps(style)
    canon = {s.lower(): s for s in steps}
    marks = [(m.start(), canon[m.group(1).lower()]) for m in _header_re(steps).finditer(thought)]
    # a header match may start on the blank line before it: move it to the header's first character
    marks = [(len(thought) - len(thought[i:].lstrip()), name) for i, name in marks]
    if not marks or marks[0][0] > 0:
        marks.insert(0, (0, None))
    out: list[Segment] = []
    for k, (start, name) in enumerate(marks):
        stop = marks[k + 1][0] if k + 1 < len(marks) else len(thought)
        block = thought[start:stop]
        if not block.strip():
            continue
        if split == "steps":
            out.append(Segment(name, start, block.strip()))
            continue
        pos = 0
        for m in list(_SENTENCE_END.finditer(block)) + [None]:
            end = m.start() if m else len(block)
            piece = block[pos:end]
            if piece.strip():
                lead = len(piece) - len(piece.lstrip())
                out.append(Segment(name, start + pos + lead, piece.strip()))
            pos = m.end() if m else len(block)
    return out


def split_steps(thought: str, fmt: CoTFormat, style: str, split: str = "steps") -> list[str]:
    """The units of ``thought``: its steps (by step headers) or its sentences."""
    return [s.text for s in segments(thought, fmt, style, split)]


def step_units(thought: str, fmt: CoTFormat, style: str, step: str, split: str = "steps") -> list[Segment]:
    """The units of ``thought`` that belong to ``step`` (one for ``split="steps"``)."""
    return [s for s in segments(thought, fmt, style, split) if s.step == step]


def branch_unit(thought: str, fmt: CoTFormat, style: str, step: str, split: str = "steps",
                sentence_offset: int = 0) -> tuple[int, int] | None:
    """The branch point at ``step``: ``(character offset in thought.strip(), unit index within the
    step)``. The index is ``sentence_offset`` for ``split="sentences"`` (clipped to the step's
    last sentence), else 0. None: the thought has no such step."""
    units = step_units(thought, fmt, style, step, split)
    if not units:
        return None
    j = min(max(sentence_offset, 0), len(units) - 1) if split == "sentences" else 0
    return units[j].start, j


def branch_offset(thought: str, fmt: CoTFormat, style: str, step: str, split: str = "steps",
                  sentence_offset: int = 0) -> int | None:
    """The character offset of :func:`branch_unit` (None: no such step)."""
    point = branch_unit(thought, fmt, style, step, split, sentence_offset)
    return None if point is None else point[0]


def cut(text: str, at: int, keep_newlines: bool = True) -> tuple[str, str]:
    """``text`` split at ``at``. Spaces and tabs before the cut go to the second part (a prompt
    never ends in a space the tokenizer would merge with the next word); so do line breaks unless
    ``keep_newlines`` (see :func:`newlines_end_prompt`)."""
    head = text[:at].rstrip(" \t") if keep_newlines else text[:at].rstrip()
    return head, text[len(head):]


def newlines_end_prompt(tokenizer) -> bool:
    """Whether a prompt may end with the blank line between two steps: True when the tokenizer
    gives that text the same tokens alone as before the next step (Llama 3 merges ``.\n\n``),
    False when the line breaks tokenize differently there and must start the continuation instead
    (GPT-2-style pre-tokenizers such as SmolLM2's split ``\n\n`` before a word). Either way the
    prompt then ends on a token boundary, which TRL needs to cut prompt from completion."""
    head, tail = "Policy check: it is fine.\n\n", "Reflection: sure."

    def ids(text):
        return list(tokenizer(text, add_special_tokens=False).input_ids)

    alone = ids(head)
    return ids(head + tail)[:len(alone)] == alone


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The chat-template rendering of ``messages`` with the generation prompt, as a standard-format
    prompt: a leading BOS is dropped when the tokenizer adds one by itself (TRL tokenizes the
    string with the default special tokens, which would double it)."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    bos, bos_id = tokenizer.bos_token, tokenizer.bos_token_id
    if bos and bos_id is not None and text.startswith(bos):
        ids = tokenizer("a").input_ids
        if ids and ids[0] == bos_id:
            text = text[len(bos):]
    return text


# ------------------------------------------------------------------------------------- branches
@dataclass
class Branch:
    """One preference pair's shared part: where the chain branches, and the chosen continuation."""

    id: str  # the prompt's id
    label: str
    category: str
    text: str  # the user request
    kind: str  # process | outcome | answer | verdict
    step: str | None  # the branch step (process) or None (outcome, answer)
    prompt: str  # rendered user turn + the assistant-turn prefix (standard-format prompt)
    prefix: str  # the assistant-turn prefix alone ("" for outcome pairs)
    chosen: str  # continuation of the correct chain + the right answer (no EOS)
    unit: int = 0  # the branch's unit index within its step (sentences: how far into the step)

    @property
    def key(self) -> str:
        return f"{self.id}|{self.kind}|{self.step or ''}"

    @property
    def lead(self) -> str:
        """The whitespace a continuation starts with (moved out of the prompt by :func:`cut`)."""
        return self.chosen[: len(self.chosen) - len(self.chosen.lstrip())]

    @property
    def harmful(self) -> bool:
        return self.label == "harmful"


def plan_branches(chains: list[dict], fmt: CoTFormat, style: str, render: Callable[[str], str], settings,
                  rng, keep_newlines: bool = True) -> tuple[list[Branch], dict]:
    """The branches (process and outcome) of every chain, chosen by the ratios.

    ``chains``: ``{"id", "label", "category", "text", "thought", "answer"}`` (the correct chain
    and the right answer). ``render(user_text)``: the rendered prompt. ``settings``: ``split``,
    ``branch_steps``, ``steps_per_chain``, ``sentence_offset``, ``process_ratio``,
    ``outcome_ratio``, ``answer_ratio`` (see :class:`SRPOConfig`).
    ``keep_newlines``: see :func:`cut` and :func:`newlines_end_prompt`. The process and outcome
    draws are made from ``rng`` for every chain, the answer draw from the chain's id, so changing
    one ratio does not reshuffle another kind's selection (the verdict draw, too, from the id).
    """
    out: list[Branch] = []
    counts = {"chains": len(chains), "no_branch_step": 0}
    for c in sorted(chains, key=lambda c: c["id"]):
        take_process = rng.random() < settings.process_ratio
        take_outcome = rng.random() < settings.outcome_ratio
        steps = list(settings.branch_steps)
        if 0 < settings.steps_per_chain < len(steps):
            picked = set(rng.sample(range(len(steps)), settings.steps_per_chain))
            steps = [s for i, s in enumerate(steps) if i in picked]
        thought = c["thought"].strip()
        good = fmt.compose(thought, c["answer"])
        rendered = render(c["text"])
        meta = {"id": c["id"], "label": c["label"], "category": c.get("category") or "unknown", "text": c["text"]}
        base = len(fmt.open_tag) + 1  # compose: open tag, newline, thought, ...
        if take_process and settings.steps_per_chain != 0:
            for step in steps:
                point = branch_unit(thought, fmt, style, step, settings.split, settings.sentence_offset)
                if point is None:
                    counts["no_branch_step"] += 1
                    continue
                head, rest = cut(good, base + point[0], keep_newlines)
                out.append(Branch(**meta, kind="process", step=step, prompt=rendered + head, prefix=head, chosen=rest,
                                  unit=point[1]))
        if take_outcome:
            out.append(Branch(**meta, kind="outcome", step=None, prompt=rendered, prefix="", chosen=good))
        if random.Random(f"{c['id']}|verdict").random() < settings.verdict_ratio:
            out.append(Branch(**meta, kind="verdict", step=None, prompt=rendered, prefix="", chosen=good))
        if random.Random(f"{c['id']}|answer").random() < settings.answer_ratio:
            head, rest = cut(good, len(good) - len(c["answer"].strip()), keep_newlines)
            out.append(Branch(**meta, kind="answer", step=None, prompt=rendered + head, prefix=head, chosen=rest))
    return out, counts


def teacher_rejected(branch: Branch, wrong_thought: str, wrong_answer: str, fmt: CoTFormat, style: str,
                     settings) -> str | None:
    """The rejected continuation of ``branch`` from a wrong teacher chain: the whole wrong turn
    (outcome), its part from the same branch point on (process: the same step and the same unit
    index within it) or the wrong answer alone (answer: ``wrong_thought`` is not used). None: the
    wrong chain has no such step, or too few sentences in it."""
    if branch.kind == "answer":
        return branch.lead + wrong_answer.strip()
    bad = fmt.compose(wrong_thought.strip(), wrong_answer)
    if branch.kind == "outcome":
        return bad
    units = step_units(wrong_thought, fmt, style, branch.step, settings.split)
    if branch.unit >= len(units):
        return None
    return branch.lead + bad[len(fmt.open_tag) + 1 + units[branch.unit].start:].lstrip()


def judge_continuation(branch: Branch, continuation: str, fmt: CoTFormat, style: str, judge) -> dict:
    """Does a sampled ``continuation`` of ``branch`` reach the wrong outcome?

    The full assistant turn is ``branch.prefix`` + the continuation. It is *wrong* when it closes
    the thought, has an answer, the judge says that answer complies with a harmful prompt or
    refuses a benign one, and the decision line (if any) agrees with that outcome. An answer
    branch's decision line is the correct one, in the shared prefix: there the continuation is the
    answer alone and its outcome decides (the RW model's refusal after the chain's ``Path: answer``
    is exactly the rejected side an answer pair wants).
    """
    full = branch.prefix + branch.lead + continuation.strip()
    _, answer = split_response(full, fmt)
    out = {"complied": None, "path": None, "wrong": False, "reason": ""}
    if not answer:
        out["reason"] = "no answer (the thought is not closed, or nothing follows it)"
        return out
    complied = judge_labelled(judge, [branch.text], [branch.label], [full])[0]
    path = parse(full, fmt, style).path
    out.update(complied=complied, path=path)
    refused_path = None if path is None else path == PATH_REFUSE
    if branch.kind == "answer":  # the decision is the prefix's: the outcome alone
        wrong = complied if branch.harmful else not complied
    elif branch.harmful:
        wrong = complied and refused_path is not True
    else:
        wrong = (not complied) and refused_path is not False
    out["wrong"] = wrong
    out["reason"] = "" if wrong else "right outcome or inconsistent decision"
    return out


def make_pair(branch: Branch, rejected: str, eos: str, source: str) -> dict | None:
    """The standard-format pair row, or None when chosen and rejected are the same text."""
    chosen = branch.chosen if branch.chosen.endswith(eos) else branch.chosen + eos
    rejected = rejected if rejected.endswith(eos) else rejected + eos
    if chosen == rejected:
        return None
    return {"id": branch.id, "label": branch.label, "category": branch.category, "kind": branch.kind,
            "step": branch.step, "source": source, "prompt": branch.prompt, "chosen": chosen, "rejected": rejected}


# ----------------------------------------------------------------------------------- the pairs
def srpo_pairs(out: Path, config, sp: SRPOConfig, chains: list[dict], tok, *, style: str, seed: int,
               balance_pairs: bool, rw_model: str | None = None) -> dict:
    """SaRO's stage 3: the process, outcome (and answer, verdict) pairs of the RW chains
    (``chains.jsonl`` of the data stage), shuffled (and balanced by label with ``balance_pairs``),
    written to ``out/pairs.jsonl``; returns the stage's stats.

    A branch's rejected side: with ``rw_model`` (``rejected_source=policy``) the first
    continuation sampled from that model and judged wrong (:func:`policy_rejected`); otherwise (or
    when none was) the teacher's wrong chain (negative for a harmful prompt, overcautious for a
    benign one) with the wrong answer (the base model's compliance, or a refusal); a verdict pair's
    is its own chain with the verdict swapped. ``config``: the run's Config (model, cot, rules,
    teacher, judge); ``tok``: the model's tokenizer (the prompts' rendering, the EOS).
    """
    from reasonalign.components.cot import ThoughtRequest
    from reasonalign.components.pairs import balance_labels, refusal_text, swap_verdict
    from reasonalign.components.rules import load_rules
    from reasonalign.components.teachers.base import teacher_thoughts, teacher_verdicts
    from reasonalign.models import chat_messages
    from reasonalign.pipeline import write_jsonl

    cfg = config
    rules = load_rules(cfg.rules)
    fmt = CoTFormat(cfg.cot)
    verdicts = teacher_verdicts(cfg.teacher)
    chains = {c["id"]: c for c in chains}
    branches, plan = plan_branches(list(chains.values()), fmt, style,
                                   lambda text: render_prompt(tok, chat_messages(cfg.model, text)), sp,
                                   random.Random(seed), keep_newlines=newlines_end_prompt(tok))
    rejected: dict[str, tuple[str, str]] = {}
    stats: dict = {"branches": len(branches), **plan}
    if rw_model and branches:  # a verdict pair's rejected side is its own chain, swapped: no sampling
        rejected, stats["policy"] = policy_rejected(out, config, rw_model, [b for b in branches if b.kind != "verdict"],
                                                    fmt, style, sp.policy, seed)

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
                                   style=style, variant="negative" if c["label"] == "harmful" else "overcautious"))
    wrong = {}
    if reqs:
        thoughts, stats["thoughts"] = teacher_thoughts(cfg.teacher, cfg.model, cfg.generation_backend, reqs, fmt, rules,
                                                       out / "thoughts.jsonl", "wrong long-chain thoughts")
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
            text, source = teacher_rejected(b, *teacher_side[b.id], fmt, style, sp), "teacher"
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
    random.Random(seed).shuffle(pairs)
    stats["pairs_by_label"] = dict(Counter(p["label"] for p in pairs))
    if balance_pairs:
        pairs = balance_labels(pairs, random.Random(seed + 1))
    write_jsonl(out / "pairs.jsonl", pairs)
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


def policy_rejected(out: Path, config, rw_model: str, branches: list[Branch], fmt: CoTFormat, style: str,
                    ps: PolicySampling, seed: int) -> tuple[dict, dict]:
    """Sample ``ps.samples`` continuations of each branch from the RW model at ``rw_model``; the
    first one judged wrong (:func:`judge_continuation`) is the branch's rejected side. Every sample
    and its verdict go to ``out/policy_samples.jsonl``. Returns ``({branch key: (text, "policy")},
    stats)``."""
    import torch

    from reasonalign.components.generation import load_generator, release_generator
    from reasonalign.components.judges import get_judge
    from reasonalign.components.sampling import generate_text_resumable
    from reasonalign.config import GenerationSettings
    from reasonalign.pipeline import write_jsonl

    cfg = config
    model, tok = load_generator(cfg.model, rw_model, cfg.generation_backend, seed=seed)
    items = [{"id": f"{b.key}#s{j}", "text": b.prompt} for b in branches for j in range(ps.samples)]
    torch.manual_seed(seed)
    settings = GenerationSettings(max_new_tokens=ps.max_new_tokens, batch_size=ps.batch_size, do_sample=True,
                                  temperature=ps.temperature, top_p=ps.top_p)
    gens = {g["id"]: g for g in generate_text_resumable(model, tok, items, settings, out / "policy_generations.jsonl",
                                                        desc=f"srpo: {ps.samples} continuations per branch",
                                                        seed=seed)}
    release_generator(model)  # the judge may load a model onto the GPU next
    del model
    judge = get_judge(cfg.eval.judge)
    rejected, judged = {}, []
    for b in branches:
        for j in range(ps.samples):
            g = gens[f"{b.key}#s{j}"]
            verdict = judge_continuation(b, g["response"], fmt, style, judge)
            judged.append({"branch": b.key, "sample": j, "response": g["response"], **verdict})
            if verdict["wrong"] and b.key not in rejected:
                rejected[b.key] = (b.lead + g["response"].strip(), "policy")
    write_jsonl(out / "policy_samples.jsonl", judged)
    stats = {"samples": len(judged), "judged_wrong": sum(j["wrong"] for j in judged),
             "branches_with_policy_rejected": len(rejected),
             "branches_fallback_teacher": len(branches) - len(rejected)}
    log.info("srpo policy sampling: %s", stats)
    return rejected, stats
