"""Direct preference optimisation: a thin, typed wrapper over ``trl.DPOTrainer``.

The model at ``init_dir`` (say, the SFT stage's output) is both the policy's start and the
reference. With LoRA the reference is the same weights with the adapter switched off (TRL's way,
no second copy); with full fine-tuning TRL builds the frozen reference itself.
"""

from __future__ import annotations

from pathlib import Path

from reasonalign.components import training as T
from reasonalign.config import ModelConfig, TrainerConfig

REWARD_KEYS = ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected")


def train_dpo(init_dir: str, rows: list[dict], out_dir: Path, model_cfg: ModelConfig,
              trainer_cfg: TrainerConfig, deepspeed: dict | str | None = None) -> dict:
    """Preference-tune the model at ``init_dir`` on ``rows``; the result lands in ``out_dir/model``."""
    from trl import DPOConfig, DPOTrainer

    metrics = T.fit("DPO", DPOTrainer, DPOConfig, trainer_cfg.dpo, rows, ("prompt", "chosen", "rejected"),
                    init_dir, out_dir, model_cfg, trainer_cfg, deepspeed, REWARD_KEYS, ref_model=None)
    return {**metrics, "pairs": len(rows)}
