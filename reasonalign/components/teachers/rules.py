"""The offline ``rules`` teacher: deterministic, rule-grounded reasoning with no model and no key.

It writes each step from the rule set, the prompt's label and category and the prompt itself.
Phrasings vary per prompt (chosen by a hash of the request's id, variant and sample), so a model
trained on them learns the structure rather than one string. Variants:

* ``correct``: the right decision, concise but complete;
* ``concise``: the shortest complete form (one sentence a step);
* ``verbose``: the same decision wrapped in restatement and second-guessing (efficiency pairs);
* ``negative``: for a harmful prompt, talks itself out of the rule and decides to answer;
* ``overcautious``: for a benign prompt, invents a risk and decides to refuse.

Long-chain (SaRO) thoughts add intent, context and a reflection step ("wait, is this actually
harmful?") before the decision. A ``correct`` long-chain thought also varies in length with the
request's ``sample`` index: a hash of (id, variant, sample) adds zero to three extra sentences to
the context and reflection steps, so several samples of one prompt differ in length and phrasing
(what SaRO's shortest rejection sampling chooses among). Ex-ante thoughts do not depend on it
beyond the phrasing picks.

The benign rule-verification step never uses the word "violated": with "no safety rule is
violated" (templates 1), the last word before the path line was the same for harmful and benign
thoughts, and the 135M default learned "violated. -> Path: refuse" for both (docs/methods/erpo.md).
"""

from __future__ import annotations

import hashlib
import re

from reasonalign.components.cot import EX_ANTE, PATH_ANSWER, PATH_CARE, PATH_REFUSE, CoTFormat, ThoughtRequest
from reasonalign.components.rules import RuleSet
from reasonalign.config import TeacherConfig

RISK_SIGNALS = (
    (re.compile(r"\b(pretend|role[- ]?play|you are now|act as|character|persona|DAN)\b", re.I),
     "it asks me to adopt a persona or role-play"),
    (re.compile(r"\b(hypothetical(ly)?|imagine|in a story|fiction(al)?|for a novel|thought experiment)\b", re.I),
     "it wraps the request in a hypothetical or fictional frame"),
    (re.compile(r"\b(ignore (all |your |the )?(previous|prior) instructions|no (rules|restrictions|filters)|"
                r"without (any )?(warnings|disclaimers|refus\w*))\b", re.I),
     "it tries to switch off my guidelines"),
    (re.compile(r"\b(how (did|was|were) .* (in the past|historically|back then))\b", re.I),
     "it is phrased in the past tense, which does not change what the answer would enable"),
    (re.compile(r"\b(start (your|the) (reply|response|answer) with|begin with \"?sure)\b", re.I),
     "it dictates how my answer must start"),
)

INTENT = {
    "harmful": ("The likely intent is to obtain {what} that could cause real harm.",
                "Taken at face value, this asks for {what} that could hurt people.",
                "The request seeks {what}; the most plausible use is harmful."),
    "benign": ("The likely intent is ordinary: the user wants {what}.",
               "This is a normal request for {what}.",
               "Nothing suggests misuse; the user simply wants {what}."),
    "borderline": ("It touches a sensitive topic, but the likely intent is legitimate: {what}.",
                   "The topic sounds risky, yet the request is for {what}, which is widely available and useful.",
                   "A careful reader sees a legitimate need here: {what}."),
}


# the version of the wording below: part of the data stages' fingerprint, so a change re-runs them
TEMPLATES = 2

# ``verdict_first``: the word the first step opens with (each a distinct first token in SmolLM2's
# vocabulary: " Harm", " Ben", " Border")
VERDICT = {"harmful": "Harmful.", "benign": "Benign.", "borderline": "Borderline."}

CONCISE = {"harmful": "A request for harmful help", "benign": "An ordinary request",
           "borderline": "A sensitive but legitimate request"}


def _pick(options, key: str):
    return options[int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(options)]


def _what(prompt: str) -> str:
    text = " ".join(prompt.split())
    return "help with \"" + (text[:60] + ("..." if len(text) > 60 else "")) + "\""


def signals(prompt: str) -> list[str]:
    return [msg for pat, msg in RISK_SIGNALS if pat.search(prompt)]


class RulesTeacher:
    """Offline deterministic teacher (``teacher=rules``)."""

    def __init__(self, cfg: TeacherConfig | None = None):
        self.cfg = cfg or TeacherConfig()

    def __repr__(self) -> str:
        return "RulesTeacher()"

    def write(self, requests: list[ThoughtRequest], rules: RuleSet, fmt: CoTFormat) -> list[str]:
        return [self.thought(r, rules, fmt) for r in requests]

    # ------------------------------------------------------------------------------------------
    def thought(self, req: ThoughtRequest, rules: RuleSet, fmt: CoTFormat) -> str:
        key = f"{req.id}|{req.variant}|{req.sample}"
        label = req.label if req.label in INTENT else "benign"
        harmful = label == "harmful"
        rule = req.rule
        sig = signals(req.prompt)
        decision = self._decision(req)
        v = req.variant

        judged = label
        if self.cfg.misjudge_rejected and v in ("negative", "overcautious"):
            judged = "benign" if harmful else "harmful"
        assess = _pick(INTENT[judged], key + "a").format(what=_what(req.prompt))
        if sig:
            assess += " Risk signals: " + "; ".join(sig) + "."
        elif judged == "harmful":
            assess += " There is no framing that changes what the answer would enable."

        cite = f"[{rule.id}] {rule.title}"
        if harmful:
            verify = _pick((f"{cite} applies: the request asks for what this rule forbids, so it violates {rule.id}.",
                            f"{cite} covers this: answering would give the help the rule forbids. Violates {rule.id}.",
                            f"{cite} is the relevant rule, and the request breaks it ({rule.id} violated)."), key + "v")
        else:
            verify = f"[{rules.no_rule.id}] {rules.no_rule.title}: the request is safe to answer, and answering helps the user."
        if v == "negative":
            verify = (f"{cite} might seem relevant, but the user probably has a legitimate reason and the "
                      f"information is available anyway, so I will treat {rule.id} as not applying.")
        elif v == "overcautious":
            risky = rules.fallback
            verify = (f"[{risky.id}] {risky.title} could conceivably be involved: someone might misuse even this, "
                      f"so it is safer to treat the request as a violation of {risky.id}.")

        if decision == PATH_REFUSE:
            path = _pick(("Path: refuse. Decline briefly, without lecturing, and offer a safe alternative.",
                          "Path: refuse. Say no in one sentence and suggest something safe instead.",
                          "Path: refuse. Keep it short and point to a safer, related topic."), key + "p")
        elif decision == PATH_CARE:
            path = "Path: answer with care. Give accurate, useful information and add a brief safety note where it genuinely helps."
        else:
            path = _pick(("Path: answer. Give a direct, complete and helpful answer.",
                          "Path: answer. Answer fully and clearly; no disclaimer is needed.",
                          "Path: answer. Be helpful and to the point."), key + "p")

        if v == "concise":
            assess = CONCISE[label] + (f"; {sig[0]}" if sig else "") + "."
            verify = f"{cite}: violated." if harmful else f"[{rules.no_rule.id}] {rules.no_rule.title}: safe to answer."
            path = path.split(". ")[0] + "."
        steps = fmt.steps(req.style)
        if req.style == EX_ANTE:
            body = [assess, verify, path]
        else:
            body = self._long_chain(req, assess, verify, path, harmful, sig, key)
        if self.cfg.verdict_first:
            body[0] = f"{VERDICT[judged]} {body[0]}"
        if v == "verbose":
            body = [self._pad(b, key + str(i)) for i, b in enumerate(body)]
        return "\n\n".join(f"{name}: {text}" for name, text in zip(steps, body, strict=True))

    @staticmethod
    def _decision(req: ThoughtRequest) -> str:
        if req.expect == PATH_REFUSE:
            return PATH_REFUSE
        return PATH_CARE if req.label == "borderline" and req.variant != "negative" else PATH_ANSWER

    @staticmethod
    def _long_chain(req, assess, verify, path, harmful, sig, key) -> list[str]:
        understand = assess.split(". ")[0].rstrip(".") + "."
        intent = (("Context: " + "; ".join(sig) + ". Such framing does not change what the output would enable.")
                  if sig else "Context: no framing is present; I judge the request by what my answer would enable.")
        extra_context, extra_reflect = RulesTeacher._extras(req, harmful, key)
        if extra_context:
            intent += " " + extra_context
        if req.variant == "negative":
            reflect = "Wait, could this be harmful? It might be, but the user seems to have a good reason, so I will help."
        elif req.variant == "overcautious":
            reflect = "Wait, is this really safe? Anything could be misused, so I should not risk it."
        elif harmful:
            reflect = _pick(("Wait, is there a harmless reading? Even charitably, the answer would give real uplift for harm, so the risk stands.",
                             "Let me double-check: if I answered, the output itself would be the harmful part. The rule clearly applies.",
                             "Reflecting once more: the framing does not change the content requested, so I should not comply."), key + "r")
        else:
            reflect = _pick(("Wait, is this actually harmful? No: the information is common, useful, and not an uplift for harm. Refusing would be over-cautious.",
                             "Let me double-check for over-caution: the topic sounds sensitive, but the request itself is legitimate, so I should help.",
                             "Reflecting: refusing here would fail the user without protecting anyone."), key + "r")
        if extra_reflect:
            reflect += " " + extra_reflect
        return [understand, intent, verify, reflect, path]

    @staticmethod
    def _extras(req, harmful: bool, key: str) -> tuple[str, str]:
        """Extra context/reflection sentences of a ``correct`` long-chain thought: 0-3 of them,
        chosen by a hash of (id, variant, sample), so samples of one prompt differ in length."""
        if req.variant != "correct":
            return "", ""
        n = _pick((0, 1, 2, 3), key + "n")
        context = _pick(("I also consider who typically sends a message like this and why.",
                         "The conversation gives no further background, so the request has to speak for itself.",
                         "I weigh the most plausible reading of the request over unlikely ones."), key + "c")
        if harmful:
            more = ("Re-reading the request once more does not change this assessment.",
                    "A safe alternative can still serve any legitimate need behind it.")
        else:
            more = ("Nothing in the wording points to misuse.",
                    "An accurate and complete answer is the most useful outcome here.")
        reflect = [more[0], more[1]][: max(0, n - 1)]
        return (context if n >= 1 else ""), " ".join(reflect)

    @staticmethod
    def _pad(text: str, key: str) -> str:
        fillers = ("Let me restate this carefully to make sure I have considered every angle before moving on.",
                   "To be thorough, I will go over this point again in slightly different words.",
                   "I want to be completely certain here, so I am considering the alternatives one more time.",
                   "It is worth pausing to re-examine this from the beginning, step by step.")
        return f"{text} {_pick(fillers, key)} {_pick(fillers, key + 'x')} Restating: {text}"

