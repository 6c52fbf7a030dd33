"""Supervised fine-tuning: a thin, typed wrapper over ``trl.SFTTrainer``.

Data are TRL conversational prompt-completion records (``docs/data.md``), so the loss falls on the
completion only (TRL's ``completion_only_loss``), whatever the chat template. LoRA (PEFT) or full
fine-tuning, per ``trainer.finetune``. An interrupted run resumes from its last ``checkpoint-N``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from datasets import Dataset

from reasonalign.components import training as T
from reasonalign.config import ModelConfig, TrainerConfig
from reasonalign.distributed import after_training, check_can_train, trainer_deepspeed
from reasonalign.models import load_model, load_tokenizer

log = logging.getLogger("reasonalign.sft")


def train_sft(init_dir: str, rows: list[dict], out_dir: Path, model_cfg: ModelConfig,
              trainer_cfg: TrainerConfig, deepspeed: dict | str | None = None) -> dict:
    """Fine-tune the model at ``init_dir`` on ``rows``; the result lands in ``out_dir/model``."""
    from trl import SFTConfig, SFTTrainer

    if not rows:
        raise ValueError("SFT got an empty data set")
    out_dir = Path(out_dir)
    work = out_dir / "trainer"
    check_can_train()
    if deepspeed is None:
        deepspeed = trainer_deepspeed()  # the run's distributed=zero* setting, if any
    tokenizer = load_tokenizer(model_cfg, init_dir)
    tokenizer.padding_side = "right"
    # the arguments first: under ZeRO-3 they make from_pretrained load the weights already sharded
    args = SFTConfig(**T.trl_kwargs(trainer_cfg.sft, trainer_cfg, model_cfg, work, deepspeed),
                     completion_only_loss=True)
    model = load_model(model_cfg, init_dir, for_training=True)
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    peft_config = T.lora_config(trainer_cfg.lora) if trainer_cfg.finetune == "lora" else None
    losses = T.LossLog()
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=T.callbacks(losses))
    before = T.parameter_snapshot(trainer.model)
    resume = T.last_checkpoint(work)
    if resume:
        log.info("resuming SFT from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    change = T.parameter_change(before, trainer.model)
    model_dir = T.save_final(trainer, tokenizer, out_dir / "model", trainer_cfg.save, init_dir, model_cfg)
    T.write_log(out_dir, losses.rows)
    T.cleanup_checkpoints(work)
    metrics = {"examples": len(rows), "steps": trainer.state.global_step,
               "relative_param_change": change, **T.run_info(trainer), **T.summarize(losses.rows, ("loss",))}
    log.info("SFT done: %d steps, loss %s", trainer.state.global_step, metrics.get("loss"))
    del trainer, model
    after_training()
    return {"model_dir": str(model_dir), **metrics}
