"""The ``Method`` plugin API.

A method is small: it lists its stages (:class:`~reasonalign.pipeline.Stage`) and wires shared
components together. Methods register through the ``reasonalign.methods`` entry-point group, the
built-ins included; a plugin package can add its Hydra YAML (``conf/method/<name>.yaml``) by
setting ``config_path`` to a Hydra search-path entry such as ``"pkg://my_plugin.conf"``.

    class MyMethod(Method):
        name = "mine"
        Config = MyConfig            # a dataclass subclassing MethodConfig: typed, checked keys
        config_path = "pkg://my_plugin.conf"

        def validate(self):          # optional: config checks, run at start-up
            if self.config.method.epochs < 1:
                raise ConfigError("method mine: epochs must be >= 1")

        def stages(self):
            s = self.common
            return [s.prompts(), s.base_responses(), s.baseline_data(),
                    s.sft("sft", data=("baseline_data", "sft.jsonl")), *s.evaluation(final="sft")]

A method reads its settings through one handle, ``self.config``: the typed run config
(:class:`~reasonalign.config.Config`) whose ``method`` is the method's own ``Config`` instance.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from omegaconf import DictConfig, OmegaConf

from reasonalign.config import Config, MethodConfig
from reasonalign.pipeline import Stage


class Method:
    name: ClassVar[str] = ""
    Config: ClassVar[type] = MethodConfig
    config_path: ClassVar[str | None] = None
    description: ClassVar[str] = ""

    def __init__(self, cfg: DictConfig | Config, method_cfg: Any = None):
        from reasonalign.methods.stages import CommonStages

        config = OmegaConf.to_object(cfg) if isinstance(cfg, DictConfig) else cfg
        # the run config, its ``method`` the validated instance of ``self.Config``
        self.config: Config = replace(config, method=method_cfg) if method_cfg is not None else config
        self._composed = cfg
        self.common = CommonStages(self.config)

    def validate(self) -> None:
        """Check the config; raise :class:`~reasonalign.config.ConfigError` on a bad combination.
        Runs at start-up, before any stage (``reasonalign.cli.run``)."""

    def stages(self) -> list[Stage]:
        raise NotImplementedError

    @property
    def final_stage(self) -> str | None:
        """The stage whose ``model/`` is this method's result: the last training stage
        (``Stage.distributed``) of :meth:`stages` (None: no training)."""
        return next((s.name for s in reversed(self.stages()) if s.distributed), None)

    # the handles of earlier versions, for plugins written against them
    @property
    def mcfg(self) -> Any:
        """Deprecated: ``self.config.method``."""
        return self.config.method

    @property
    def cfg(self) -> DictConfig | Config:
        """Deprecated: the composed ``DictConfig`` (read ``self.config``, the typed one)."""
        return self._composed
