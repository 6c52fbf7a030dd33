"""Supervised fine-tuning: a thin, typed wrapper over ``trl.SFTTrainer``.

Data are TRL conversational prompt-completion records (``docs/data.md``), so the loss falls on the
completion only (TRL's ``completion_only_loss``, on by default here; ``trainer.sft.completion_only_loss=false``
trains on the prompt too), whatever the chat template. LoRA (PEFT) or full
fine-tuning, per ``trainer.finetune``. An interrupted run resumes from its last ``checkpoint-N``.
"""

from __future__ import annotations

from pathlib import Path

from reasonalign.components import training as T
from reasonalign.config import ModelConfig, TrainerConfig


def train_sft(init_dir: str, rows: list[dict], out_dir: Path, model_cfg: ModelConfig,
              trainer_cfg: TrainerConfig, deepspeed: dict | str | None = None) -> dict:
    """Fine-tune the model at ``init_dir`` on ``rows``; the result lands in ``out_dir/model``."""
    from trl import SFTConfig, SFTTrainer

    metrics = T.fit("SFT", SFTTrainer, SFTConfig, trainer_cfg.sft, rows, ("prompt", "completion"), init_dir,
                    out_dir, model_cfg, trainer_cfg, deepspeed, ("loss",),
                    config_defaults={"completion_only_loss": True})
    return {**metrics, "examples": len(rows)}
