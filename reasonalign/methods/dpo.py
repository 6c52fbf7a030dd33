"""Baseline: plain DPO on (refusal > compliance) and (helpful answer > refusal) pairs.

With ``sft_warmup: true`` (the default, the usual SFT-then-DPO recipe) an SFT stage on the chosen
responses runs first and its model is DPO's starting policy and reference; with ``false`` DPO starts
from the base model.
"""

from __future__ import annotations

from dataclasses import dataclass

from reasonalign.config import MethodConfig
from reasonalign.methods.base import Method
from reasonalign.methods.stages import BASELINE_DATA


@dataclass
class DPOMethodConfig(MethodConfig):
    sft_warmup: bool = True


class DPOMethod(Method):
    name = "dpo"
    Config = DPOMethodConfig
    description = "plain DPO on refusal/helpfulness pairs (optionally after SFT)"

    def stages(self):
        s = self.common
        stages = [s.prompts(), s.base_responses(), s.baseline_data()]
        init = None
        if self.config.method.sft_warmup:
            stages.append(s.sft("sft", data=(BASELINE_DATA, "sft.jsonl")))
            init = "sft"
        stages.append(s.dpo("dpo", data=(BASELINE_DATA, "pairs.jsonl"), init=init))
        return [*stages, *s.evaluation(final="dpo")]
