"""Sampling helpers: shortest rejection sampling over teacher chains, and resumable generation
that continues raw text (a rendered prompt plus the start of the assistant turn).

Shortest rejection sampling (SaRO's reasoning-style warmup data): the teacher writes ``n`` chains
for one prompt; the validator drops malformed ones and ones whose decision contradicts the
expected one; of the rest, the shortest is kept (ties: the lowest sample index). The saving is
reported as the mean length of the chosen chains against the mean length of all accepted ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reasonalign.config import GenerationSettings

log = logging.getLogger("reasonalign.sampling")


# -------------------------------------------------------------------- shortest rejection sampling
@dataclass
class ShortestChoice:
    """The outcome of shortest rejection sampling for one prompt."""

    index: int | None  # the chosen sample's position in the candidates (None: none accepted)
    text: str | None
    length: int | None
    accepted: list[int] = field(default_factory=list)  # positions of the accepted candidates
    lengths: list[int] = field(default_factory=list)  # their lengths, in the same order
    rejected: dict[int, str] = field(default_factory=dict)  # position -> why it was rejected
    n: int = 0  # candidates looked at

    @property
    def ok(self) -> bool:
        return self.index is not None


def select_shortest(candidates: Sequence[str | None], accept: Callable[[str], str | None],
                    length: Callable[[str], int]) -> ShortestChoice:
    """Keep the candidates ``accept`` passes and return the shortest of them.

    ``candidates``: the samples in order (None: the teacher gave nothing usable). ``accept(text)``
    returns None when the candidate is acceptable, else the reason it is not (e.g. a validator
    message). ``length(text)`` measures it (tokenizer tokens or characters).
    """
    choice = ShortestChoice(None, None, None, n=len(candidates))
    for i, text in enumerate(candidates):
        if text is None or not text.strip():
            choice.rejected[i] = "empty or missing"
            continue
        reason = accept(text)
        if reason is not None:
            choice.rejected[i] = reason
            continue
        n = length(text)
        choice.accepted.append(i)
        choice.lengths.append(n)
        if choice.length is None or n < choice.length:
            choice.index, choice.text, choice.length = i, text, n
    return choice


def validator_accept(fmt, style: str, rules, expect: str | None, answer: str) -> Callable[[str], str | None]:
    """An ``accept`` for :func:`select_shortest`: the thought, followed by ``answer``, passes
    :func:`reasonalign.components.cot.validate` with the ``expect``-ed decision."""
    from reasonalign.components.cot import invalid_reason

    return lambda thought: invalid_reason(fmt.compose(thought, answer or "."), fmt, style, rules, expect)


def length_saved(choices: Sequence[ShortestChoice]) -> dict:
    """Mean length of the chosen samples against the mean of every accepted sample.

    ``saved`` = mean(accepted) - mean(chosen); ``saved_fraction`` = saved / mean(accepted). Only
    prompts with at least one accepted sample count.
    """
    chosen = [c.length for c in choices if c.ok]
    accepted = [n for c in choices if c.ok for n in c.lengths]
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    m_chosen, m_all = mean(chosen), mean(accepted)
    return {"prompts": len(choices), "prompts_with_accepted": len(chosen),
            "samples": sum(c.n for c in choices), "accepted": len(accepted),
            "rejected": sum(len(c.rejected) for c in choices),
            "mean_chosen": round(m_chosen, 2), "mean_accepted": round(m_all, 2),
            "saved": round(m_all - m_chosen, 2),
            "saved_fraction": round((m_all - m_chosen) / m_all, 4) if m_all else 0.0}


def shortest_chains(data, style: str, length: Callable[[str], int], prompt_messages: Callable[[str], list[dict]]
                    ) -> tuple[list[dict], list[dict], list[ShortestChoice]]:
    """Shortest rejection sampling over a teacher-written data stage's groups of chains
    (``data``: :class:`~reasonalign.methods.stages.TeacherData`, each prompt's requests the
    samples of one correct chain): ``(chains, sft, choices)``, the kept chain of every prompt that
    has one (with its prompt, answer and the base model's response), its SFT record
    (``prompt_messages(text)`` -> the chat prompt; completion: chain + reference answer), and every
    prompt's :class:`ShortestChoice` (:func:`length_saved`)."""
    chains, sft, choices = [], [], []
    for pid, (r, rule, ref) in data.refs.items():
        group = data.requests[pid]
        cands = [(data.thoughts.get(q.key()) or {}).get("thought") for q in group]
        choice = select_shortest(cands, validator_accept(data.fmt, style, data.rules, group[0].expect, ref), length)
        choices.append(choice)
        if not choice.ok:
            continue
        meta = {"id": pid, "label": r["label"], "category": r.get("category", "unknown"), "rule": rule.id,
                "attack": r.get("attack", "")}
        chains.append({**meta, "text": r["text"], "thought": choice.text.strip(), "answer": ref,
                       "sample": choice.index, "length": choice.length, "accepted": len(choice.accepted),
                       "complied": r["complied"], "response": r["response"]})
        sft.append({**meta, "sample": choice.index, "prompt": prompt_messages(r["text"]),
                    "completion": [{"role": "assistant", "content": data.fmt.compose(choice.text, ref)}]})
    return chains, sft, choices


def token_length(tokenizer) -> Callable[[str], int]:
    return lambda text: len(tokenizer(text, add_special_tokens=False).input_ids)


# --------------------------------------------------------------------- raw-text continuation
def generate_text_resumable(model, tokenizer, items: list[dict], settings: GenerationSettings, out_path: Path,
                            desc: str = "continuing", seed: int = 0) -> list[dict]:
    """Continue raw texts ``items`` (``{"id", "text"}``), appending ``{"id", "response", "n_tokens"}``
    rows to ``out_path`` batch by batch; ids finished there are not generated again.

    ``text`` is already rendered (chat template, generation prompt and any start of the assistant
    turn) and is tokenized with the tokenizer's default special tokens, as TRL tokenizes a
    standard-format prompt. Batching, padding, stopping and decoding are those of
    :mod:`reasonalign.components.generation`; ``model`` is either kind :func:`load_generator
    <reasonalign.components.generation.load_generator>` returns (``seed``: with the item ids, the
    per-request sampling seeds on vLLM).
    """
    from tqdm.auto import tqdm

    from reasonalign.components.generation import _batches, is_vllm, item_seeds
    from reasonalign.pipeline import append_jsonl, read_finished_lines

    out_path = Path(out_path)
    ids = [it["id"] for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate item ids")
    wanted = set(ids)
    done = {r["id"]: r for r in read_finished_lines(out_path) if isinstance(r, dict) and r.get("id") in wanted}
    todo = [it for it in items if it["id"] not in done]
    if done:
        log.info("%s: %d of %d already generated; generating %d", desc, len(done), len(items), len(todo))
    if todo:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        encoded = [list(tokenizer(it["text"]).input_ids) for it in todo]
        seeds = item_seeds(seed, [it["id"] for it in todo]) if is_vllm(model) else None
        with tqdm(total=len(items), initial=len(done), desc=desc, unit="prompt", dynamic_ncols=True) as bar:
            for idx, texts, counts in _batches(model, tokenizer, encoded, settings, None, None, seeds):
                rows = [{"id": todo[i]["id"], "response": t, "n_tokens": n}
                        for i, t, n in zip(idx, texts, counts, strict=True)]
                append_jsonl(out_path, rows)
                done.update((r["id"], r) for r in rows)
                bar.update(len(idx))
    return [done[i] for i in ids]
