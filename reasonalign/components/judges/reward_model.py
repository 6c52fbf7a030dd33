"""A reward model scoring helpfulness (``eval.judge.helpfulness_model``).

Any sequence-classification reward model with one output (``num_labels=1``) whose class ships with
transformers (``trust_remote_code`` stays off), by hub id or local directory: e.g.
``Skywork/Skywork-Reward-Llama-3.1-8B-v0.2`` or ``Skywork/Skywork-Reward-Gemma-2-27B-v0.2``. Each
(prompt, answer) is rendered as a two-turn conversation with the reward model's **own** chat
template (the answer as the assistant turn) and scored by one forward pass; the score is the
model's raw output, in its own units (higher: more preferred). A tokenizer without a chat template
gets the tokenizer's text-pair encoding of (prompt, answer) instead (how cross-encoder reward
models such as DeBERTa ones are fed).

It scores next to any judge (``refusal``, ``classifier``, ``api``): the evaluation gives it the
benign and borderline answers the judge counted as complied, without their thought
(``eval/runner.mark_helpfulness``). The model is loaded on first use through
:func:`reasonalign.models.load_model` (the run's device, :mod:`reasonalign.device`) in bfloat16 on a
GPU that supports it, float32 otherwise; a checkpoint whose score head is missing (a plain language
model, or a reward model whose head lives in its own code, such as ArmoRM's) stops with a
:class:`~reasonalign.config.ConfigError` rather than scoring with a random head. ``score_fn``
(prompts, answers -> scores) can be injected, which is how the tests check the metric without a
model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from reasonalign.config import ConfigError, JudgeConfig

log = logging.getLogger("reasonalign.judges.reward_model")


class RewardModelScorer:
    """``score_helpfulness(prompts, answers) -> list[float]`` with the reward model
    ``cfg.helpfulness_model`` (module docstring)."""

    helpfulness = True  # what eval/runner.mark_helpfulness asks of a scorer

    def __init__(self, cfg: JudgeConfig, score_fn: Callable[[list[str], list[str]], list[float]] | None = None):
        if score_fn is None and not cfg.helpfulness_model:
            raise ConfigError("a reward-model helpfulness scorer needs eval.judge.helpfulness_model (a hub id or a "
                              "local directory, e.g. Skywork/Skywork-Reward-Llama-3.1-8B-v0.2)")
        if cfg.helpfulness_batch_size < 1:
            raise ConfigError(f"eval.judge.helpfulness_batch_size={cfg.helpfulness_batch_size}: must be > 0")
        self.cfg = cfg
        self.model_id = cfg.helpfulness_model
        self._score = score_fn
        self._model = self._tok = None
        self.helpfulness_unparsed = 0  # a reward model always gives a score (the metric's shape)

    # -- loading ---------------------------------------------------------------------------------
    def _load(self):
        if self._model is None:
            from transformers import AutoTokenizer

            from reasonalign import device as D
            from reasonalign.config import ModelConfig
            from reasonalign.models import load_model

            self._tok = AutoTokenizer.from_pretrained(self.model_id, trust_remote_code=False)
            # on the run's device (reasonalign/device.py), bfloat16 there when the GPU has it
            self._model = load_model(ModelConfig(name="eval.judge.helpfulness_model", kind="hf",
                                                 name_or_path=self.model_id, dtype=D.inference_dtype("float32")),
                                     task="sequence_classification")
            labels = int(getattr(self._model.config, "num_labels", 1))
            if labels != 1:
                raise ConfigError(f"eval.judge.helpfulness_model {self.model_id!r} gives {labels} scores per answer; "
                                  f"a reward model with one (num_labels=1) is needed")
            log.info("helpfulness: reward model %s on %s (%s), %s", self.model_id, self._model.device,
                     self._model.dtype, "its chat template" if self.has_template else "text-pair encoding")

    @property
    def has_template(self) -> bool:
        return bool(getattr(self._tok, "chat_template", None))

    # -- rendering -------------------------------------------------------------------------------
    def encode(self, prompt: str, answer: str) -> list[int]:
        """The token ids the reward model scores for one (prompt, answer): its chat template with the
        prompt as the user turn and the answer as the assistant turn (the template's own special
        tokens, none added), else the tokenizer's text-pair encoding."""
        tok = self._tok
        if self.has_template:
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
            text = tok.apply_chat_template(messages, tokenize=False)
            return list(tok(text, add_special_tokens=False)["input_ids"])
        return list(tok(prompt, answer)["input_ids"])

    def _hf_score(self, prompts: list[str], answers: list[str]) -> list[float]:
        import torch

        encoded = [self.encode(p, a) for p, a in zip(prompts, answers, strict=True)]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))  # similar lengths batched together
        scores: list[float] = [0.0] * len(encoded)
        size = self.cfg.helpfulness_batch_size
        for start in range(0, len(order), size):
            idx = order[start:start + size]
            batch = [encoded[i] for i in idx]
            pad = self._pad_id(batch)
            width = max(len(ids) for ids in batch)
            # right padding with a pad id no sequence of the batch holds: the model pools the last
            # token that is not the pad id, which is then each sequence's own last token
            ids = torch.tensor([x + [pad] * (width - len(x)) for x in batch], device=self._model.device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in batch], device=self._model.device)
            self._model.config.pad_token_id = pad
            with torch.inference_mode():
                logits = self._model(input_ids=ids, attention_mask=mask).logits
            for i, value in zip(idx, logits[:, 0].float().tolist(), strict=True):
                scores[i] = float(value)
        return scores

    def _pad_id(self, batch: list[list[int]]) -> int:
        """The tokenizer's pad id, or (when it has none, or a sequence of the batch holds it, as an
        end-of-turn token doubling as the pad does) the highest vocabulary id none of them holds."""
        used = {t for ids in batch for t in ids}
        pad = self._tok.pad_token_id
        if pad is not None and pad not in used:
            return int(pad)
        vocab = int(getattr(self._model.config, "vocab_size", None) or len(self._tok))
        return next(i for i in range(vocab - 1, -1, -1) if i not in used)

    # -- scoring ---------------------------------------------------------------------------------
    def score_helpfulness(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """The reward model's score of each answer (its own units; higher: more helpful)."""
        if len(prompts) != len(responses):
            raise ValueError(f"score_helpfulness got {len(prompts)} prompts and {len(responses)} responses")
        if not prompts:
            return []
        if self._score is None:
            self._load()
        out = [float(s) for s in (self._score or self._hf_score)(list(prompts), list(responses))]
        if len(out) != len(prompts):
            raise ValueError(f"the reward model gave {len(out)} scores for {len(prompts)} answers")
        return out
