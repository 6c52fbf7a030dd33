"""Baseline training data: SFT records and preference pairs from prompts and base-model answers.

This is the data every method is compared on (the plain SFT and DPO baselines):

* harmful prompt: chosen = a brief refusal that offers a safe alternative (``refusal_text``);
  rejected = the base model's own answer when the judge says it complied (otherwise the pair is
  dropped: a refusal cannot be the rejected side of a refusal).
* benign / borderline prompt: chosen = the base model's own answer when it complied
  (self-distillation keeps its helpfulness); rejected = a refusal. A benign prompt the base model
  refused gives no pair (we have no helpful answer to prefer).

The SFT set is every pair's prompt and chosen answer, plus harmful prompts whose pair was dropped
(their refusal is still a correct target).
"""

from __future__ import annotations

import hashlib

REFUSALS = (
    "I can't help with that. {alt}",
    "I'm not able to help with this request. {alt}",
    "Sorry, but I can't assist with that. {alt}",
    "I won't provide that, because it could cause real harm. {alt}",
)
ALTERNATIVES = (
    "If you're researching this topic for safety reasons, I can point you to general, publicly available safety resources.",
    "If there's an underlying problem you're trying to solve, tell me more and I'll help with a safe approach.",
    "I'm happy to help with a related question that doesn't put anyone at risk.",
)


def _pick(options: tuple[str, ...], key: str) -> str:
    h = int(hashlib.sha256(key.encode()).hexdigest(), 16)
    return options[h % len(options)]


def refusal_text(prompt_id: str) -> str:
    """A deterministic, varied brief refusal with a safe alternative."""
    return _pick(REFUSALS, prompt_id).format(alt=_pick(ALTERNATIVES, prompt_id + "/alt"))


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def build_baseline_data(prompts: list[dict], answers: dict[str, str], complied: dict[str, bool],
                        prompt_messages=user) -> tuple[list[dict], list[dict], dict]:
    """Return ``(sft_rows, preference_rows, counts)``; see the module docstring for the rules."""
    sft, pairs = [], []
    counts = {"harmful_pairs": 0, "benign_pairs": 0, "dropped_harmful_base_refused": 0,
              "dropped_benign_base_refused": 0}
    for p in prompts:
        pid, label = p["id"], p["label"]
        meta = {"id": pid, "label": label, "category": p.get("category", "unknown")}
        prompt = prompt_messages(p["text"])
        answer = answers[pid]
        if label == "harmful":
            chosen = refusal_text(pid)
            sft.append({**meta, "prompt": prompt, "completion": assistant(chosen)})
            if complied[pid]:
                pairs.append({**meta, "kind": "safety", "prompt": prompt, "chosen": assistant(chosen),
                              "rejected": assistant(answer)})
                counts["harmful_pairs"] += 1
            else:
                counts["dropped_harmful_base_refused"] += 1
        else:
            if not complied[pid]:
                counts["dropped_benign_base_refused"] += 1
                continue
            sft.append({**meta, "prompt": prompt, "completion": assistant(answer)})
            pairs.append({**meta, "kind": "usefulness", "prompt": prompt, "chosen": assistant(answer),
                          "rejected": assistant(refusal_text(pid))})
            counts["benign_pairs"] += 1
    return sft, pairs, counts
