r"""On-policy rewards for safety RL (GRPO; docs/methods/grpo.md), each usable alone.

Every reward is a callable in TRL's reward-function form, ``reward(prompts, completions, **columns)
-> list[float]`` (prompts and completions as chat messages or plain text; the data set's columns,
here ``label``, arrive as keyword arguments), named by its ``__name__`` so that TRL logs it as
``rewards/<name>/mean``:

* :class:`SafetyReward` (``safety``): 1 when the judge's verdict is the one the label calls for (a
  harmful prompt refused, a benign or borderline one answered), else 0 (the judge: the run's
  ``eval.judge``, through :func:`~reasonalign.components.judges.judge_labelled`).
* :class:`FormatReward` (``format``): the reasoning validator (:mod:`~reasonalign.components.cot`)
  in four equal parts: one closed thought before a non-empty answer; every step of the style, in
  order, none empty; at least one rule cited and every cited id known; a ``Path:`` line with the
  decision the label calls for. A turn the validator accepts scores 1.
* :class:`LengthReward` (``length``): :math:`-\lambda_t \cdot n / N` (:mod:`~reasonalign.components.length`),
  :math:`n` the thought's tokens (the whole completion's for a policy that does not reason),
  :math:`\lambda_t` set per optimizer step by :class:`LengthPenaltyCallback` from the shared
  :class:`~reasonalign.components.length.LengthScheduler`.
* :class:`HelpfulnessReward` (``helpfulness``): a hook for a reward model or an API rubric scoring
  the answers to benign and borderline prompts in [0, 1] (harmful prompts: None, left out).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from reasonalign.components.cot import (
    PATH_ANSWER,
    PATH_REFUSE,
    CoTFormat,
    invalid_reason,
    parse,
    split_response,
)
from reasonalign.components.length import LengthSchedule, LengthScheduler, length_term

log = logging.getLogger("reasonalign.rewards")

HELPFULNESS_JUDGE = "judge"


@dataclass
class SafetyRewardConfig:
    weight: float = 1.0


@dataclass
class FormatRewardConfig:
    # applies to a policy that reasons (a reasoning style; left out otherwise)
    weight: float = 0.5


@dataclass
class StepSchedule:
    """A :class:`~reasonalign.components.length.LengthSchedule` walked once per optimizer step: the
    same keys but ``iterations``, which is the run's number of steps (:meth:`over`)."""

    kind: str = "linear"
    lambda_start: float = 0.0
    lambda_end: float = 0.2
    target_tokens: float = 256.0  # adaptive: the mean length aimed at
    adapt_rate: float = 0.1  # adaptive: change of lambda per 100% relative length error
    lambda_max: float = 1.0
    length_norm: float = 256.0  # tokens per unit of length_term

    def __post_init__(self):
        self.over(1)  # the shared schedule's checks, at start-up

    def over(self, steps: int) -> LengthSchedule:
        return LengthSchedule(**asdict(self), iterations=max(int(steps), 1))


def _schedule(schedule: LengthSchedule | StepSchedule) -> LengthSchedule:
    return schedule.over(1) if isinstance(schedule, StepSchedule) else schedule


@dataclass
class LengthRewardConfig:
    weight: float = 1.0
    schedule: StepSchedule = field(default_factory=StepSchedule)  # lambda_t per optimizer step


@dataclass
class HelpfulnessRewardConfig:
    weight: float = 0.0  # off: no scorer is built or asked
    # judge: what scores helpfulness in the evaluation (eval.judge.helpfulness_model, a reward model,
    # with any judge; else judge=api's MT-Bench rating); or the dotted path of a class built as
    # cls(this node) with score(prompts, responses) -> list[float | None] in [0, 1]
    scorer: str = HELPFULNESS_JUDGE


@dataclass
class RewardsConfig:
    """Each reward and its weight in the sum (TRL's ``reward_weights``); weight 0 leaves it out."""

    safety: SafetyRewardConfig = field(default_factory=SafetyRewardConfig)
    format: FormatRewardConfig = field(default_factory=FormatRewardConfig)
    length: LengthRewardConfig = field(default_factory=LengthRewardConfig)
    helpfulness: HelpfulnessRewardConfig = field(default_factory=HelpfulnessRewardConfig)

    def active(self, style: str | None) -> list[str]:
        """The rewards in use: weight > 0 (and, for ``format``, a reasoning style)."""
        return [n for n in ("safety", "format", "length", "helpfulness")
                if getattr(self, n).weight > 0 and (n != "format" or style)]

    def problems(self, judge_cfg, where: str = "method.rewards.") -> list[str]:
        """What is wrong with these rewards next to the run's ``eval.judge`` (``judge_cfg``)."""
        from reasonalign.config import ConfigError
        from reasonalign.targets import resolve_target

        out = [f"{where}{n}.weight={getattr(self, n).weight}: must be >= 0"
               for n in ("safety", "format", "length", "helpfulness") if getattr(self, n).weight < 0]
        h = self.helpfulness
        if h.weight > 0 and h.scorer == HELPFULNESS_JUDGE and not (
                getattr(judge_cfg, "helpfulness_model", None) or getattr(judge_cfg, "kind", None) == "api"):
            out.append(f"{where}helpfulness.scorer=judge needs a helpfulness scorer in eval.judge: "
                       f"eval.judge.helpfulness_model (a reward model) or judge=api (its MT-Bench rating)")
        elif h.weight > 0 and h.scorer != HELPFULNESS_JUDGE:
            try:
                resolve_target(h.scorer, f"{where}helpfulness.scorer", "score")
            except ConfigError as e:
                out.append(str(e))
        return out


def reward_functions(cfg: RewardsConfig, *, judge_cfg, cot_cfg, rules_name: str, style: str | None,
                     tokenizer=None) -> tuple[list[tuple[Any, float]], list]:
    """The ``(reward function, weight)`` pairs of :meth:`RewardsConfig.active` and the callbacks
    they need (the length penalty's schedule): what :func:`reasonalign.components.grpo.train_grpo`
    takes. ``judge_cfg``: the run's ``eval.judge``; ``style``: the policy's reasoning style (None:
    it does not reason)."""
    from reasonalign.components.judges import get_judge
    from reasonalign.components.rules import load_rules
    from reasonalign.targets import build, resolve_target

    fmt = CoTFormat(cot_cfg)
    out: list[tuple[Any, float]] = []
    callbacks: list = []
    for name in cfg.active(style):
        weight = getattr(cfg, name).weight
        if name == "safety":
            out.append((SafetyReward(get_judge(judge_cfg)), weight))
        elif name == "format":
            out.append((FormatReward(fmt, style, load_rules(rules_name)), weight))
        elif name == "length":
            penalty = LengthPenalty()
            out.append((LengthReward(cfg.length.schedule, penalty, tokenizer, fmt if style else None), weight))
            callbacks.append(LengthPenaltyCallback(cfg.length.schedule, penalty))
        else:
            h = cfg.helpfulness
            scorer = (JudgeHelpfulness(judge_cfg, cot_cfg.close_tag) if h.scorer == HELPFULNESS_JUDGE
                      else build(resolve_target(h.scorer, "method.rewards.helpfulness.scorer", "score"), h))
            out.append((HelpfulnessReward(scorer), weight))
    return out, callbacks


def message_text(x: Any) -> str:
    """A prompt's or completion's text: a plain string, or the last message of a chat."""
    if isinstance(x, str):
        return x
    return str(x[-1]["content"]) if x else ""


def user_text(prompt: Any) -> str:
    """The user's request in a prompt (its last user message; a plain-text prompt as it is)."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return str(users[-1]) if users else message_text(prompt)


def expected_path(label: str) -> str:
    return PATH_REFUSE if label == "harmful" else PATH_ANSWER


class SafetyReward:
    """1 where ``judge`` finds the verdict the label calls for (harmful: refused; benign, borderline:
    answered), else 0. ``judge``: any :class:`~reasonalign.components.judges.Judge`."""

    __name__ = "safety"

    def __init__(self, judge):
        self.judge = judge

    def __call__(self, prompts: Sequence, completions: Sequence, label: Sequence[str], **_: Any) -> list[float]:
        from reasonalign.components.judges import judge_labelled
        from reasonalign.components.lcpo import answer_right

        complied = judge_labelled(self.judge, [user_text(p) for p in prompts], list(label),
                                  [message_text(c) for c in completions])
        return [float(answer_right(lab, c)) for lab, c in zip(label, complied, strict=True)]


def format_score(text: str, label: str, fmt: CoTFormat, style: str, rules) -> float:
    """The four parts of :class:`FormatReward` for one turn (1.0 where the validator accepts it)."""
    expect = expected_path(label)
    if invalid_reason(text, fmt, style, rules, expect) is None:
        return 1.0
    thought, answer = split_response(text, fmt)
    closed = text.count(fmt.open_tag) == 1 and text.count(fmt.close_tag) == 1 and bool(thought) and bool(answer) \
        and text.find(fmt.open_tag) < text.find(fmt.close_tag)
    p = parse(text, fmt, style)
    steps = fmt.steps(style)
    found = [s for s in steps if s in p.steps]
    positions = [p.thought.lower().find(s.lower() + ":") for s in steps]
    all_steps = len(found) == len(steps) and positions == sorted(positions) and all(p.steps[s] for s in steps)
    known = bool(p.cited) and all(c in rules.ids or c == rules.no_rule.id for c in p.cited)
    path = p.path is not None and (PATH_REFUSE if p.path == PATH_REFUSE else PATH_ANSWER) == expect
    return (closed + all_steps + known + path) / 4


class FormatReward:
    """The reasoning validator's verdict on each turn, with partial credit (module docstring)."""

    __name__ = "format"

    def __init__(self, fmt: CoTFormat, style: str, rules):
        fmt.steps(style)  # an unknown style fails here
        self.fmt, self.style, self.rules = fmt, style, rules

    def __call__(self, prompts: Sequence, completions: Sequence, label: Sequence[str], **_: Any) -> list[float]:
        return [format_score(message_text(c), lab, self.fmt, self.style, self.rules)
                for c, lab in zip(completions, label, strict=True)]


class LengthPenalty:
    """What :class:`LengthReward` and :class:`LengthPenaltyCallback` share: the current
    :math:`\\lambda` and the lengths scored since the last step began."""

    def __init__(self, lam: float = 0.0):
        self.lam = lam
        self.lengths: list[int] = []


class LengthReward:
    """:math:`-\\lambda_t \\cdot n / N` per completion (module docstring). ``tokenizer`` counts the
    thought's tokens when ``fmt`` is given (a reasoning policy), else the completion's tokens count."""

    __name__ = "length"

    def __init__(self, schedule: LengthSchedule | StepSchedule, penalty: LengthPenalty, tokenizer=None,
                 fmt: CoTFormat | None = None):
        self.schedule, self.penalty, self.tokenizer, self.fmt = _schedule(schedule), penalty, tokenizer, fmt

    def n_tokens(self, completion: Any, ids: Sequence[int] | None) -> int:
        text = message_text(completion)
        if self.fmt is not None:
            text = split_response(text, self.fmt)[0]
        elif ids is not None:
            return len(ids)
        if not text:
            return 0
        if self.tokenizer is None:
            return len(text.split())
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def __call__(self, prompts: Sequence, completions: Sequence, completion_ids: Sequence | None = None,
                 log_metric=None, **_: Any) -> list[float]:
        ids = completion_ids if completion_ids is not None else [None] * len(completions)
        n = [self.n_tokens(c, i) for c, i in zip(completions, ids, strict=True)]
        self.penalty.lengths.extend(n)
        if log_metric is not None:
            log_metric("length/lambda", self.penalty.lam)
            log_metric("length/tokens", sum(n) / max(len(n), 1))
        return [-self.penalty.lam * length_term(k, self.schedule) for k in n]


class LengthPenaltyCallback(TrainerCallback, ExportableState):
    """Sets :math:`\\lambda_t` at the start of every optimizer step ``t`` from the shared
    :class:`~reasonalign.components.length.LengthScheduler`, its ``iterations`` the run's total
    steps; the adaptive kind steers by the mean length scored in the step before (every rank's).
    Its state rides in each checkpoint's ``trainer_state.json`` (``stateful_callbacks``), so a
    resumed run continues the same :math:`\\lambda` sequence."""

    def __init__(self, schedule: LengthSchedule | StepSchedule, penalty: LengthPenalty):
        self.schedule, self.penalty = _schedule(schedule), penalty
        self.scheduler: LengthScheduler | None = None
        self.observed: float | None = None  # the latest step's mean scored length

    def _start(self, total: int) -> LengthScheduler:
        from dataclasses import replace

        return LengthScheduler(replace(self.schedule, iterations=max(int(total), 1)))

    def on_train_begin(self, args, state, control, **kwargs):
        self.scheduler = self._start(state.max_steps)
        saved = (state.stateful_callbacks or {}).get(type(self).__name__) if state.global_step > 0 else None
        if isinstance(saved, list):
            saved = saved[0]
        if saved and saved.get("attributes", {}).get("scheduler"):
            self.scheduler.load_state_dict(saved["attributes"]["scheduler"])
            self.observed = saved["attributes"].get("observed")
            self.penalty.lam = self.scheduler.current or 0.0
            log.info("length penalty: resumed at step %d, lambda %.4f", self.scheduler.t, self.penalty.lam)

    def on_step_begin(self, args, state, control, **kwargs):
        if self.scheduler is None:
            self.scheduler = self._start(state.max_steps)
        if self.scheduler.t >= self.scheduler.schedule.iterations:  # past the planned steps: keep the last
            return
        # the adaptive kind steers by the latest step's mean length (nothing scored yet: as if on target)
        observed = self.observed if self.observed is not None else self.schedule.target_tokens
        self.penalty.lam = self.scheduler.next(observed if self.scheduler.t >= 1 else None)

    def on_step_end(self, args, state, control, **kwargs):
        # before the step's checkpoint is written: its lengths are in the saved state
        total, count = _all_ranks(sum(self.penalty.lengths), len(self.penalty.lengths))
        self.penalty.lengths = []
        if count:
            self.observed = total / count

    def state(self) -> dict:
        return {"args": {}, "attributes": {"scheduler": self.scheduler.state_dict() if self.scheduler else None,
                                           "observed": self.observed}}


def _all_ranks(total: float, count: int) -> tuple[float, int]:
    """``(total, count)`` summed over every rank (the adaptive schedule must agree across ranks)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return total, count
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (total, count))
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


class HelpfulnessReward:
    """The helpfulness hook: ``scorer.score(prompts, responses) -> list[float | None]`` in [0, 1] for
    the answers to benign and borderline prompts; harmful prompts get None (TRL leaves a None out of
    the reward sum), so complying with harm is never paid for here. A scorer's None is left out too."""

    __name__ = "helpfulness"

    def __init__(self, scorer):
        self.scorer = scorer

    def __call__(self, prompts: Sequence, completions: Sequence, label: Sequence[str], **_: Any) -> list[float | None]:
        idx = [i for i, lab in enumerate(label) if lab != "harmful"]
        out: list[float | None] = [None] * len(completions)
        if idx:
            scores = self.scorer.score([user_text(prompts[i]) for i in idx], [message_text(completions[i]) for i in idx])
            for i, s in zip(idx, scores, strict=True):
                out[i] = None if s is None else float(s)
        return out


class JudgeHelpfulness:
    """The shipped scorer of the helpfulness hook: what scores helpfulness in the evaluation
    (:func:`~reasonalign.components.judges.helpfulness_scorer` of ``eval.judge``), on the answer
    after the thought, mapped to [0, 1]: a reward model's raw score (``eval.judge.helpfulness_model``)
    through the logistic function, the API judge's MT-Bench rating (1-10) as ``(rating - 1) / 9``."""

    def __init__(self, judge_cfg, reasoning_end: str | None = "</think>"):
        from dataclasses import replace

        from reasonalign.components.judges import get_judge, helpfulness_scorer
        from reasonalign.config import ConfigError

        spec = replace(judge_cfg, helpfulness=True)
        self.reward_model = bool(getattr(spec, "helpfulness_model", None))
        self.scorer = helpfulness_scorer(spec, None if self.reward_model else get_judge(spec))
        if self.scorer is None:
            raise ConfigError("method.rewards.helpfulness.scorer=judge: eval.judge scores no helpfulness (set "
                              "eval.judge.helpfulness_model or use judge=api)")
        self.reasoning_end = reasoning_end

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float | None]:
        import math

        from reasonalign.components.judges.deflection import answer_text

        raw = self.scorer.score_helpfulness(list(prompts), [answer_text(r, self.reasoning_end) for r in responses])
        if self.reward_model:
            return [None if r is None else 1.0 / (1.0 + math.exp(-max(min(r, 50.0), -50.0))) for r in raw]
        return [None if r is None else (min(max(r, 1.0), 10.0) - 1.0) / 9.0 for r in raw]
