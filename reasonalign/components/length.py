r"""Length-penalty schedule for ERPO stage 3 (length-controlled iterative preference optimisation).

Stage 3 runs iterations :math:`t = 1..T`. In each, the policy samples several responses per prompt;
each is scored

.. math::  r = \mathbb{1}[\text{correct}] - \lambda_t \cdot \ell(n), \qquad \ell(n) = n / N

where :math:`n` is the response length in tokens and :math:`N` is ``length_norm`` (so
:math:`\ell = 1` at :math:`N` tokens). The highest- and lowest-scoring responses become a
preference pair. The ERPO paper's exact reward and schedule are not public; this module is our
choice, kept simple enough to reason about:

* ``constant``: :math:`\lambda_t = \lambda_s`.
* ``linear``: :math:`\lambda_t = \lambda_s + (\lambda_e - \lambda_s)\,\frac{t-1}{T-1}`
  (:math:`\lambda_1 = \lambda_s`, :math:`\lambda_T = \lambda_e`).
* ``cosine``: :math:`\lambda_t = \lambda_e + (\lambda_s - \lambda_e)\,\frac{1 + \cos(\pi\,\frac{t-1}{T-1})}{2}`
  (half a cosine: flat near both ends, the midpoint is the mean of the two).
* ``adaptive``: :math:`\lambda_1 = \lambda_s`, then
  :math:`\lambda_t = \mathrm{clip}\big(\lambda_{t-1} + \eta\,\frac{\bar n_{t-1} - n^*}{n^*},\ 0,\ \lambda_{\max}\big)`
  where :math:`\bar n_{t-1}` is the mean response length observed in iteration :math:`t-1`,
  :math:`n^*` is ``target_tokens`` and :math:`\eta` is ``adapt_rate``: the penalty rises while
  responses are longer than the target and falls while they are shorter (an additive, relative-error
  controller; ``lambda_end`` is unused).

With :math:`T = 1` every kind gives :math:`\lambda_s`. Iterations outside ``1..T`` are errors.
``lambda_start`` and ``lambda_end`` must lie in ``[0, lambda_max]``.

Two properties follow from the score and are what makes it a *length control*, not a change of
goal: among correct responses the shorter one scores higher whenever :math:`\lambda_t > 0`; and a
correct response always beats a wrong one as long as :math:`\lambda_t\,\ell(n) < 1` for the correct
one (a wrong response scores at most 0). Keep :math:`\lambda_{\max}` times the longest useful
:math:`\ell` below 1, e.g. ``lambda_max=0.25`` with ``max_new_tokens = 4 * length_norm``.

:class:`LengthScheduler` walks the schedule one iteration at a time and saves/restores its state,
so a resumed run continues with the same :math:`\lambda` sequence.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

KINDS = ("constant", "linear", "cosine", "adaptive")


@dataclass
class LengthSchedule:
    """How :math:`\\lambda_t` evolves over the ``iterations`` of stage 3 (see the module docstring)."""

    kind: str = "linear"
    lambda_start: float = 0.0
    lambda_end: float = 0.2
    iterations: int = 3  # T
    target_tokens: float = 256.0  # adaptive: the mean response length aimed at
    adapt_rate: float = 0.1  # adaptive: change of lambda per 100% relative length error
    lambda_max: float = 1.0
    length_norm: float = 256.0  # tokens per unit of length_term

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"length schedule kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if int(self.iterations) != self.iterations or self.iterations < 1:
            raise ValueError(f"length schedule iterations must be an integer >= 1, got {self.iterations}")
        self.iterations = int(self.iterations)
        if not self.length_norm > 0:
            raise ValueError(f"length_norm must be > 0, got {self.length_norm}")
        if not self.lambda_max >= 0:
            raise ValueError(f"lambda_max must be >= 0, got {self.lambda_max}")
        for name in ("lambda_start", "lambda_end"):
            v = getattr(self, name)
            if not 0 <= v <= self.lambda_max:
                raise ValueError(f"{name} must lie in [0, lambda_max={self.lambda_max}], got {v}")
        if self.kind == "adaptive":
            if not self.target_tokens > 0:
                raise ValueError(f"target_tokens must be > 0 for the adaptive schedule, got {self.target_tokens}")
            if not self.adapt_rate >= 0:
                raise ValueError(f"adapt_rate must be >= 0, got {self.adapt_rate}")


def _check_t(schedule: LengthSchedule, t: int) -> None:
    if int(t) != t or not 1 <= t <= schedule.iterations:
        raise ValueError(f"iteration t={t} is outside 1..{schedule.iterations}")


def lambda_at(schedule: LengthSchedule, t: int, observed_mean_tokens: float | None = None,
              prev_lambda: float | None = None) -> float:
    """:math:`\\lambda_t` for iteration ``t`` (1-based).

    ``observed_mean_tokens`` (the mean response length in iteration ``t-1``) and ``prev_lambda``
    (:math:`\\lambda_{t-1}`) are needed by the adaptive kind for ``t >= 2`` and ignored otherwise.
    """
    _check_t(schedule, t)
    s, e, T = schedule.lambda_start, schedule.lambda_end, schedule.iterations
    if schedule.kind == "constant" or t == 1:
        return float(s)
    frac = (t - 1) / (T - 1)  # T >= 2 here, since 1 < t <= T
    if schedule.kind == "linear":
        return float(s + (e - s) * frac)
    if schedule.kind == "cosine":
        return float(e + (s - e) * (1 + math.cos(math.pi * frac)) / 2)
    # adaptive
    if observed_mean_tokens is None or prev_lambda is None:
        raise ValueError(f"adaptive length schedule at t={t} needs observed_mean_tokens and prev_lambda")
    if observed_mean_tokens < 0:
        raise ValueError(f"observed_mean_tokens must be >= 0, got {observed_mean_tokens}")
    n_star = schedule.target_tokens
    lam = prev_lambda + schedule.adapt_rate * (observed_mean_tokens - n_star) / n_star
    return float(min(max(lam, 0.0), schedule.lambda_max))


def length_term(n_tokens: float, schedule: LengthSchedule) -> float:
    """:math:`\\ell(n) = n / \\mathrm{length\\_norm}`."""
    if n_tokens < 0:
        raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
    return n_tokens / schedule.length_norm


def score(correct: bool, n_tokens: int, lam: float, schedule: LengthSchedule) -> float:
    """The reward of one sampled response: ``1[correct] - lam * length_term(n_tokens)`` (a wrong
    response scores 0 before the length term)."""
    if lam < 0:
        raise ValueError(f"lambda must be >= 0, got {lam}")
    return (1.0 if correct else 0.0) - lam * length_term(n_tokens, schedule)


@dataclass
class LengthScheduler:
    """Walks a :class:`LengthSchedule` one iteration at a time.

    ``next(observed_mean_tokens)`` starts the next iteration and returns its :math:`\\lambda`; pass
    the mean response length observed in the iteration just finished (required by the adaptive
    kind from the second call on, recorded otherwise). ``state_dict()`` / ``load_state_dict()``
    save and restore the position, so a resumed run continues the same sequence.
    """

    schedule: LengthSchedule
    t: int = 0  # iterations started so far (the current iteration's number)
    current: float | None = None  # lambda of the current iteration
    history: list[dict] = field(default_factory=list)

    def next(self, observed_mean_tokens: float | None = None) -> float:
        t = self.t + 1
        if t > self.schedule.iterations:
            raise ValueError(f"length schedule exhausted: all {self.schedule.iterations} iterations done")
        lam = lambda_at(self.schedule, t, observed_mean_tokens, self.current)
        if self.history and observed_mean_tokens is not None:
            self.history[-1]["observed_mean_tokens"] = float(observed_mean_tokens)
        self.t, self.current = t, lam
        self.history.append({"t": t, "lambda": lam, "observed_mean_tokens": None})
        return lam

    def state_dict(self) -> dict:
        return {"schedule": asdict(self.schedule), "t": self.t, "current": self.current,
                "history": [dict(h) for h in self.history]}

    def load_state_dict(self, state: dict) -> None:
        saved = LengthSchedule(**state["schedule"])
        if saved != self.schedule:
            raise ValueError(f"saved length schedule {asdict(saved)} differs from this run's "
                             f"{asdict(self.schedule)}; resume with the same schedule")
        self.t = int(state["t"])
        self.current = None if state["current"] is None else float(state["current"])
        self.history = [dict(h) for h in state["history"]]
