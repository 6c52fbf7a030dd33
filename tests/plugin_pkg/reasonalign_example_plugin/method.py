"""An external method: SFT on refusals of harmful prompts only (no benign data).

It shows the plugin API end to end: a typed config with its own key (``harmful_only``), a
method that composes the shared stages plus one stage of its own, and YAML shipped in the package.
"""

from dataclasses import dataclass

from reasonalign.config import MethodConfig
from reasonalign.methods.base import Method
from reasonalign.methods.stages import BASELINE_DATA
from reasonalign.pipeline import Stage, read_jsonl, write_jsonl


@dataclass
class RefusalSFTConfig(MethodConfig):
    harmful_only: bool = True


class RefusalSFT(Method):
    name = "refusal_sft"
    Config = RefusalSFTConfig
    config_path = "pkg://reasonalign_example_plugin.conf"
    description = "SFT on refusals of harmful prompts only"

    def stages(self):
        s = self.common

        def select(ctx):
            rows = read_jsonl(ctx.inputs[BASELINE_DATA] / "sft.jsonl")
            keep = [r for r in rows if r["label"] == "harmful" or not self.config.method.harmful_only]
            write_jsonl(ctx.out / "sft.jsonl", keep)
            return {"kept": len(keep), "dropped": len(rows) - len(keep)}

        pick = Stage("select", select, deps=[BASELINE_DATA], config={"harmful_only": self.config.method.harmful_only})
        return [s.prompts(), s.base_responses(), s.baseline_data(), pick,
                s.sft("sft", data=("select", "sft.jsonl")), *s.evaluation(final="sft")]
