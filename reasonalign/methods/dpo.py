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
    """The baseline's one key (the trainer's DPO settings: ``trainer.dpo``)."""

    # SFT on the chosen responses first; its model is then DPO's policy and reference
    sft_warmup: bool = True


class DPOMethod(Method):
    """Plain DPO (Rafailov et al., 2023) on the baseline pairs: the base model's refusal against
    its compliance for harmful prompts, its answer against a refusal for benign ones."""

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
