"""Baseline: supervised fine-tuning on the chosen responses (refusals for harmful prompts, the
base model's own answers for benign ones)."""

from __future__ import annotations

from reasonalign.methods.base import Method
from reasonalign.methods.stages import BASELINE_DATA


class SFTMethod(Method):
    name = "sft"
    description = "SFT on the chosen responses (safety SFT baseline)"

    def stages(self):
        s = self.common
        return [s.prompts(), s.base_responses(), s.baseline_data(),
                s.sft("sft", data=(BASELINE_DATA, "sft.jsonl")), *s.evaluation(final="sft")]
