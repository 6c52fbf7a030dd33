"""A local transformers chat model as the teacher (``teacher=hf``).

``teacher.model`` is a hub id or a local model directory; the model loads on the first
:meth:`HFTeacher.write` (on the GPU in bfloat16 when there is one, else on the CPU in float32).
It generates with the run's ``generation_backend`` (``components/generation.load_generator``):
vLLM on a GPU when it is installed, else transformers. Sampling uses ``teacher.temperature`` /
``top_p`` (greedy at temperature 0), seeded with ``teacher.seed + request.sample`` (vLLM: that
and the request's key, one seed per request), so a re-run writes the same thoughts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from reasonalign.components.teachers.base import clean_thought, instruction_messages
from reasonalign.config import ConfigError, GenerationSettings, ModelConfig, TeacherConfig

if TYPE_CHECKING:
    from reasonalign.components.cot import CoTFormat, ThoughtRequest
    from reasonalign.components.rules import RuleSet

log = logging.getLogger("reasonalign.teachers.hf")


class HFTeacher:
    """Writes thoughts with a local transformers chat model.

    ``model_cfg``: used when ``cfg.model`` is unset (any :class:`ModelConfig` kind, e.g. the run's
    own model); with ``cfg.model`` set, a plain ``hf`` model config is built from it.
    """

    def __init__(self, cfg: TeacherConfig, model_cfg: ModelConfig | None = None, backend: str = "auto"):
        if cfg.model:
            model_cfg = ModelConfig(name=f"teacher:{cfg.model}", kind="hf", name_or_path=str(cfg.model),
                                    trust_remote_code=cfg.trust_remote_code)
        elif model_cfg is None:
            raise ConfigError("teacher kind 'hf' needs teacher.model (a hub id or a local model directory)")
        if cfg.batch_size < 1 or cfg.max_new_tokens < 1:
            raise ConfigError(f"teacher.batch_size and teacher.max_new_tokens must be >= 1 "
                              f"(got {cfg.batch_size}, {cfg.max_new_tokens})")
        self.cfg, self.model_cfg, self.backend = cfg, model_cfg, backend
        self._model = self._tok = None
        self._system_ok = True

    def __repr__(self) -> str:
        return f"HFTeacher(model={self.model_cfg.name_or_path or self.model_cfg.name!r})"

    def _load(self) -> None:
        from dataclasses import replace

        from reasonalign import device as D
        from reasonalign.components.generation import load_generator

        mcfg = replace(self.model_cfg, dtype=D.inference_dtype(self.model_cfg.dtype))
        log.info("loading teacher model %s (%s)", mcfg.name_or_path or mcfg.name, mcfg.dtype)
        model, tok = load_generator(mcfg, None, self.backend, seed=self.cfg.seed, what="teacher generation")
        try:  # some chat templates (e.g. Gemma's) reject a system turn: fold it into the user turn
            tok.apply_chat_template([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                                    add_generation_prompt=True, tokenize=False)
        except Exception:
            self._system_ok = False
            log.info("teacher chat template has no system role; the instructions go into the user turn")
        self._model, self._tok = model, tok

    def _messages(self, req: ThoughtRequest, rules: RuleSet, fmt: CoTFormat) -> list[dict]:
        messages = instruction_messages(req, rules, fmt)
        if self._system_ok:
            return messages
        system, user = messages
        return [{"role": "user", "content": f"{system['content']}\n\n{user['content']}"}]

    def write(self, requests: Sequence[ThoughtRequest], rules: RuleSet, fmt: CoTFormat) -> list[str]:
        import torch

        from reasonalign.components.generation import generate, is_vllm
        from reasonalign.components.vllm_backend import request_seed

        if not requests:
            return []
        if self._model is None:
            self._load()
        cfg = self.cfg
        settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                                      do_sample=cfg.temperature > 0, temperature=cfg.temperature or 1.0,
                                      top_p=cfg.top_p)
        out: list[str] = [""] * len(requests)
        by_sample: dict[int, list[int]] = {}
        for i, req in enumerate(requests):
            by_sample.setdefault(req.sample, []).append(i)
        for sample, idx in sorted(by_sample.items()):
            torch.manual_seed(cfg.seed + sample)
            seeds = [request_seed(cfg.seed + sample, requests[i].key()) for i in idx] if is_vllm(self._model) else None
            texts = generate(self._model, self._tok, [self._messages(requests[i], rules, fmt) for i in idx],
                             settings, desc="teacher (hf)", seeds=seeds)
            for i, text in zip(idx, texts, strict=True):
                out[i] = clean_thought(text, fmt)
        return out
