"""The ``Method`` plugin API.

A method is small: it lists its stages (:class:`~reasonalign.pipeline.Stage`) and wires shared
components together. Methods register through the ``reasonalign.methods`` entry-point group, the
built-ins included; a plugin package can add its Hydra YAML (``conf/method/<name>.yaml``) by
setting ``config_path`` to a Hydra search-path entry such as ``"pkg://my_plugin.conf"``.

    class MyMethod(Method):
        name = "mine"
        Config = MyConfig            # a dataclass subclassing MethodConfig: typed, checked keys
        config_path = "pkg://my_plugin.conf"

        def stages(self):
            s = self.common
            return [s.prompts(), s.base_responses(), s.baseline_data(),
                    s.sft("sft", data=("baseline_data", "sft.jsonl")), *s.evaluation(final="sft")]
"""

from __future__ import annotations

from typing import Any, ClassVar

from omegaconf import DictConfig, OmegaConf

from reasonalign.config import Config, MethodConfig
from reasonalign.pipeline import Stage


class Method:
    name: ClassVar[str] = ""
    Config: ClassVar[type] = MethodConfig
    config_path: ClassVar[str | None] = None
    description: ClassVar[str] = ""

    def __init__(self, cfg: DictConfig, method_cfg: Any):
        from reasonalign.methods.stages import CommonStages

        self.cfg = cfg
        self.mcfg = method_cfg  # an instance of self.Config
        self.config: Config = OmegaConf.to_object(cfg) if isinstance(cfg, DictConfig) else cfg
        self.common = CommonStages(self.config)

    def stages(self) -> list[Stage]:
        raise NotImplementedError

    @property
    def final_stage(self) -> str | None:
        """The stage whose ``model/`` is this method's result (None: no training)."""
        return None
