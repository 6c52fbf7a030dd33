"""What the SFT and DPO wrappers share: TRL argument building, LoRA, resume, saving, loss logs."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from reasonalign.config import LoraSettings, ModelConfig, TrainerConfig

log = logging.getLogger("reasonalign.training")

# keys of SFTSettings/DPOSettings that are ours, not TRL's
_OWN_KEYS = {"extra"}


def trl_kwargs(settings: Any, trainer_cfg: TrainerConfig, model_cfg: ModelConfig, output_dir: Path,
               deepspeed: dict | str | None = None) -> dict:
    """Keyword arguments for ``trl.SFTConfig``/``trl.DPOConfig`` from our typed settings."""
    kw = {f.name: getattr(settings, f.name) for f in fields(settings) if f.name not in _OWN_KEYS}
    kw.update(dict(settings.extra or {}))
    if isinstance(kw.get("loss_type"), (list, tuple)):
        kw["loss_type"] = list(kw["loss_type"])
    on_gpu = torch.cuda.is_available()
    kw.update(
        output_dir=str(output_dir),
        seed=trainer_cfg.seed,
        report_to="none",
        save_strategy="steps",
        save_steps=trainer_cfg.save_steps,
        save_total_limit=1,
        bf16=(on_gpu and model_cfg.dtype == "bfloat16") if trainer_cfg.bf16 is None else trainer_cfg.bf16,
        fp16=on_gpu and model_cfg.dtype == "float16",
        use_cpu=not on_gpu,
        dataloader_num_workers=0,
        remove_unused_columns=True,
    )
    if deepspeed:
        kw["deepspeed"] = deepspeed
    return kw


def lora_config(lora: LoraSettings):
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )


def last_checkpoint(output_dir: Path) -> str | None:
    """The newest ``checkpoint-N`` a previous, interrupted attempt left behind."""
    ckpts = sorted(Path(output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None


class LossLog(TrainerCallback):
    """Keeps every logged row (loss, rewards...) so the stage can report a trajectory."""

    def __init__(self):
        self.rows: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            self.rows.append({"step": state.global_step, **{k: v for k, v in logs.items()
                                                            if isinstance(v, (int, float))}})


def parameter_snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def parameter_change(before: dict[str, torch.Tensor], model) -> float:
    """Relative L2 change of the trainable parameters (LoRA or full)."""
    num = den = 0.0
    params = dict(model.named_parameters())
    for n, old in before.items():
        new = params[n].detach().float().cpu()
        num += float((new - old).pow(2).sum())
        den += float(old.pow(2).sum())
    return (num ** 0.5) / max(den ** 0.5, 1e-12)


def save_final(trainer, tokenizer, out_dir: Path, save: str) -> Path:
    """Save the trained model as a plain HF directory (LoRA merged) or as an adapter."""
    out = Path(out_dir)
    model = trainer.accelerator.unwrap_model(trainer.model) if hasattr(trainer, "accelerator") else trainer.model
    is_peft = hasattr(model, "merge_and_unload")
    if is_peft and save == "merged":
        model = model.merge_and_unload()
    if trainer.args.should_save:
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    return out


def summarize(log_rows: list[dict], keys: tuple[str, ...]) -> dict:
    """First/last/mean of each key over the logged training rows (no eval rows)."""
    out: dict[str, Any] = {}
    for key in keys:
        vals = [r[key] for r in log_rows if key in r]
        if vals:
            k = len(vals)
            head = vals[: max(1, k // 4)]
            tail = vals[-max(1, k // 4):]
            out[key] = {"first": vals[0], "last": vals[-1], "n": k,
                        "first_quarter_mean": sum(head) / len(head), "last_quarter_mean": sum(tail) / len(tail)}
    return out


def write_log(out_dir: Path, rows: list[dict]) -> None:
    (Path(out_dir) / "train_log.json").write_text(json.dumps(rows, indent=1))


def cleanup_checkpoints(output_dir: Path) -> None:
    for p in Path(output_dir).glob("checkpoint-*"):
        shutil.rmtree(p, ignore_errors=True)
