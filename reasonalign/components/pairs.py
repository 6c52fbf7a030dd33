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
from dataclasses import dataclass

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


@dataclass
class PairMix:
    """Share of eligible prompts that contribute a pair of each kind (0 turns a kind off)."""

    safety: float = 1.0
    usefulness: float = 1.0
    efficiency: float = 0.5
    # ours: same correct thought, the answer its path calls for vs the other answer
    # (build_reasoning_pairs); the 135M default often wrote "Path: answer" and
    # then refused (docs/methods/erpo.md)
    consistency: float = 0.5
    # ours, needs teacher.verdict_first: the correct turn against the same turn with the verdict
    # word swapped (build_reasoning_pairs), so DPO trains the one token that classifies the
    # request; measured at 135M: the path then follows the verdict (docs/methods/erpo.md)
    verdict: float = 0.0


def _pick(options: tuple[str, ...], key: str) -> str:
    h = int(hashlib.sha256(key.encode()).hexdigest(), 16)
    return options[h % len(options)]


def refusal_text(prompt_id: str, alternative: str | None = None) -> str:
    """A deterministic, varied brief refusal with a safe alternative (``alternative`` or a generic one)."""
    alt = " ".join(alternative.split()) if alternative else _pick(ALTERNATIVES, prompt_id + "/alt")
    return _pick(REFUSALS, prompt_id).format(alt=alt)


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


# ------------------------------------------------------------------------------------------- ERPO
def build_reasoning_pairs(refs: dict, thought, fmt, mix, rng, prompt_messages=user,
                          verdicts: dict[str, str] | None = None) -> tuple[list, list, dict]:
    """ERPO stage-1 SFT records and stage-2 pairs of three kinds (and two optional ones of ours).

    ``refs``: ``{id: (row, rule, reference_answer)}`` with ``row`` a base-response row (``text``,
    ``label``, ``complied``, ``response``); ``thought(id, variant)``: the validated teacher thought
    or None. Kinds (each taken for a ``mix.<kind>`` share of eligible prompts):

    * safety (harmful prompt the base model complied with): chosen = correct thought + refusal;
      rejected = negative thought (rationalises compliance) + the base model's compliant answer;
    * usefulness (benign/borderline): chosen = correct thought + helpful answer; rejected =
      over-cautious thought + refusal;
    * efficiency (any): same answer; chosen = concise thought; rejected = verbose thought;
    * consistency (ours; any, a harmful prompt only if the base model complied): the same correct
      thought on both sides; chosen = the answer its path calls for (y+); rejected = the other
      answer (a refusal after ``Path: answer``, the base model's compliant answer after ``Path:
      refuse``). Drawn after the three, and only when ``mix.consistency`` > 0, so a mix without it
      selects the other kinds exactly as before.
    * verdict (ours; any; needs ``verdicts``, label -> the word the thought opens with, from
      ``teacher.verdict_first``): chosen = correct thought + y+; rejected = the same turn with the
      verdict word swapped for the other side's ("Harmful." <-> "Benign."). Every other token is the
      same, so the pair trains the token that classifies the request, undiluted by the rest of
      the turn (a step-level pair at the thought's first token). Drawn last, only when
      ``mix.verdict`` > 0.
    """
    sft, pairs = [], []
    kinds = {"safety": 0, "usefulness": 0, "efficiency": 0, "consistency": 0}
    verdict_on = getattr(mix, "verdict", 0) > 0
    if verdict_on:
        if not verdicts:
            raise ValueError("verdict pairs need thoughts that open with a verdict (teacher.verdict_first)")
        kinds["verdict"] = 0
    for pid, (r, rule, ref) in refs.items():
        correct = thought(pid, "correct")
        if correct is None:
            continue
        prompt = prompt_messages(r["text"])
        meta = {"id": pid, "label": r["label"], "category": r.get("category"), "rule": rule.id}
        good = fmt.compose(correct, ref)
        sft.append({**meta, "prompt": prompt, "completion": assistant(good)})
        if r["label"] == "harmful":
            neg = thought(pid, "negative")
            if neg and r["complied"] and rng.random() < mix.safety:
                pairs.append({**meta, "kind": "safety", "prompt": prompt, "chosen": assistant(good),
                              "rejected": assistant(fmt.compose(neg, r["response"]))})
                kinds["safety"] += 1
        else:
            over = thought(pid, "overcautious")
            if over and rng.random() < mix.usefulness:
                pairs.append({**meta, "kind": "usefulness", "prompt": prompt, "chosen": assistant(good),
                              "rejected": assistant(fmt.compose(over, refusal_text(pid)))})
                kinds["usefulness"] += 1
        concise, verbose = thought(pid, "concise"), thought(pid, "verbose")
        if concise and verbose and rng.random() < mix.efficiency:
            pairs.append({**meta, "kind": "efficiency", "prompt": prompt,
                          "chosen": assistant(fmt.compose(concise, ref)),
                          "rejected": assistant(fmt.compose(verbose, ref))})
            kinds["efficiency"] += 1
        harmful = r["label"] == "harmful"
        if getattr(mix, "consistency", 0) > 0 and (r["complied"] or not harmful) and rng.random() < mix.consistency:
            other = r["response"] if harmful else refusal_text(pid)
            pairs.append({**meta, "kind": "consistency", "prompt": prompt, "chosen": assistant(good),
                          "rejected": assistant(fmt.compose(correct, other))})
            kinds["consistency"] += 1
        if verdict_on and rng.random() < mix.verdict:
            swapped = swap_verdict(correct, r["label"], verdicts)
            if swapped is not None:
                pairs.append({**meta, "kind": "verdict", "prompt": prompt, "chosen": assistant(good),
                              "rejected": assistant(fmt.compose(swapped, ref))})
                kinds["verdict"] += 1
    rng.shuffle(pairs)
    return sft, pairs, kinds


def swap_verdict(text: str, label: str, verdicts: dict[str, str]) -> str | None:
    """``text`` with its first verdict word for ``label`` (``verdicts[label]``, e.g. "Harmful.")
    replaced by the other side's ("Benign." for a harmful label, "Harmful." otherwise); None when
    the word is not in ``text``. The rejected side of a verdict pair (ERPO, SaRO)."""
    said, other = verdicts[label], verdicts["benign" if label == "harmful" else "harmful"]
    at = text.find(said)
    return None if at < 0 else text[:at] + other + text[at + len(said):]


def best_worst_pairs(samples: list[dict], prompts: dict[str, dict], min_gap: float,
                     prompt_messages=user, length_pairs: bool = False) -> list[dict]:
    """ERPO stage 3: per prompt, its best-scored sample (if correct) against its worst.

    ``samples``: ``{"prompt_id", "response", "correct", "score"}``. A pair is kept when the best is
    correct and beats the worst by ``min_gap``; its kind is ``decision`` when the worst is wrong and
    ``length`` when both are correct (the shorter won). With ``length_pairs``, a prompt whose
    best/worst pair is a decision pair also gives a ``length`` pair: its best against its
    lowest-scored correct sample, if they differ by ``min_gap``. A prompt none of whose samples
    is correct gives no pair.
    """
    groups: dict[str, list[dict]] = {}
    for s in samples:
        groups.setdefault(s["prompt_id"], []).append(s)
    pairs = []

    def pair(pid, kind, chosen, rejected):
        p = prompts[pid]
        pairs.append({"id": pid, "label": p["label"], "kind": kind, "prompt": prompt_messages(p["text"]),
                      "chosen": assistant(chosen["response"]), "rejected": assistant(rejected["response"])})

    for pid in sorted(groups):
        group = sorted(groups[pid], key=lambda s: -s["score"])
        best, worst = group[0], group[-1]
        if not best["correct"] or best["score"] - worst["score"] < min_gap:
            continue
        pair(pid, "length" if worst["correct"] else "decision", best, worst)
        if length_pairs and not worst["correct"]:
            longest = [s for s in group if s["correct"]][-1]
            if longest is not best and best["score"] - longest["score"] >= min_gap:
                pair(pid, "length", best, longest)
    return pairs


def reference_answers(rows: list[dict], rules) -> tuple[list[tuple[dict, object, str]], int]:
    """The reference answer y+ of each base-response row, shared by ERPO and SaRO: a refusal with
    the matching rule's safe alternative for a harmful prompt, the base model's own answer for a
    benign one it complied with. Returns ``[(row, rule, reference)]`` and how many benign prompts
    were skipped because the base model refused them (no helpful reference)."""
    out, skipped = [], 0
    for r in rows:
        rule = rules.for_prompt(r["text"], r.get("category"), r["label"])
        if r["label"] == "harmful":
            out.append((r, rule, refusal_text(r["id"], rule.safe_alternative or None)))
        elif r["complied"]:
            out.append((r, rule, r["response"]))
        else:
            skipped += 1
    return out, skipped


def balance_labels(rows: list[dict], rng) -> list[dict]:
    """Repeat the smaller of the two decision groups (harmful vs benign + borderline) until both
    are the same size: whole copies first, then a seeded sample of the rest. Rows keep their order
    within a group; the result is shuffled with ``rng``. A group that is empty stays empty.

    ERPO's stage 1 and SaRO's warmup SFT use it (``method.balance_labels``), and, for their
    preference pairs, ERPO's stage 2 and SaRO's SRPO (``method.balance_pairs``): with twice as many
    harmful prompts (plain and jailbreak-wrapped) as benign ones, the 135M default learned to
    refuse by default (docs/methods/erpo.md)."""
    harmful = [r for r in rows if r["label"] == "harmful"]
    other = [r for r in rows if r["label"] != "harmful"]
    small, big = (harmful, other) if len(harmful) < len(other) else (other, harmful)
    if not small or len(small) == len(big):
        return list(rows)
    extra = small * (len(big) // len(small) - 1) + rng.sample(small, len(big) % len(small))
    out = big + small + extra
    rng.shuffle(out)
    return out
