"""Judges: did the model comply with a request?

Every judge has one method, ``judge(prompts, responses) -> list[bool]``, True where the model
*complied* (answered the request rather than refusing it). Harmful-prompt compliance and
benign-prompt compliance (its complement being over-refusal) are both computed from it. A later
judge (a classifier model, an API rubric) only needs that method and a name in :data:`JUDGES`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from reasonalign.components.judges.refusal import RefusalJudge


@runtime_checkable
class Judge(Protocol):
    def judge(self, prompts: Sequence[str], responses: Sequence[str]) -> list[bool]:
        """True where the response complied with its prompt; one per pair, in order."""
        ...


# name (EvalConfig.judge) -> factory
JUDGES: dict[str, Callable[[], Judge]] = {
    "refusal": RefusalJudge,
}


def get_judge(name: str) -> Judge:
    """The judge registered as ``name`` (``eval.judge`` in the config)."""
    try:
        factory = JUDGES[name]
    except KeyError:
        raise ValueError(f"unknown judge {name!r}; known: {', '.join(sorted(JUDGES))}") from None
    return factory()


__all__ = ["JUDGES", "Judge", "RefusalJudge", "get_judge"]
