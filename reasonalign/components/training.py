"""What the SFT and DPO wrappers share: TRL argument building, LoRA, resume, saving, loss logs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from reasonalign import device as D
from reasonalign.config import (
    ConfigError,
    DPOSettings,
    LoraSettings,
    ModelConfig,
    TrainerConfig,
    check_trl_fields,
)
from reasonalign.distributed import active, after_training, barrier, is_main, world_size

log = logging.getLogger("reasonalign.training")

def trl_kwargs(settings: Any, trainer_cfg: TrainerConfig, model_cfg: ModelConfig, output_dir: Path,
               deepspeed: dict | str | None = None, where: str | None = None) -> dict:
    """Keyword arguments for TRL's config class (``trl.SFTConfig``, ``trl.DPOConfig``, a method's
    own): every field of the settings (``trainer.sft`` / ``trainer.dpo`` / a method's
    :class:`~reasonalign.config.TRLSettings`: reasonalign's defaults and the passed-through TRL
    fields), then the fields reasonalign sets itself (:data:`~reasonalign.config.TRL_SET_BY_REASONALIGN`).
    ``where``: the settings' config key, for error messages (default ``trainer.sft.`` / ``trainer.dpo.``)."""
    if where is None:
        where = "trainer.dpo." if isinstance(settings, DPOSettings) else "trainer.sft."
    check_trl_fields(type(settings), settings.passthrough, where)
    kw = settings.trl_fields()
    for k in ("loss_type", "loss_weights"):
        if isinstance(kw.get(k), (list, tuple)):
            kw[k] = list(kw[k])
    if kw.get("loss_weights") is not None and len(kw["loss_weights"]) != len(kw.get("loss_type") or []):
        raise ConfigError(f"trainer.dpo.loss_weights {kw['loss_weights']} needs one weight per loss_type "
                          f"{kw.get('loss_type')}")
    on_gpu = D.is_cuda(D.resolve())  # device=cpu trains on the CPU of a GPU machine too
    kw.update(
        output_dir=str(output_dir),
        seed=trainer_cfg.seed,
        report_to=list(trainer_cfg.report_to) or ["none"],
        save_strategy="steps",
        save_steps=trainer_cfg.save_steps,
        save_total_limit=2,  # a crash while the newest checkpoint is written leaves the one before it whole
        bf16=(on_gpu and model_cfg.dtype == "bfloat16") if trainer_cfg.bf16 is None else trainer_cfg.bf16,
        fp16=on_gpu and model_cfg.dtype == "float16",
        use_cpu=not on_gpu,
        dataloader_num_workers=0,
        remove_unused_columns=True,
    )
    if deepspeed:
        kw["deepspeed"] = deepspeed
    if world_size() > 1 or deepspeed:
        if not on_gpu:
            kw["ddp_backend"] = "gloo"
        kw["ddp_timeout"] = int(60 * float(getattr(active(), "timeout_minutes", 720) or 720))
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
    """The checkpoint a previous, interrupted attempt left to resume from: transformers'
    ``get_last_checkpoint`` (the highest ``checkpoint-N``) once it is complete.

    A checkpoint is complete once its ``trainer_state.json`` (which HF ``Trainer`` writes last)
    parses; a newer, incomplete one (the run died while saving it) is removed by rank 0 with a
    warning, so training resumes from the checkpoint before it. Every rank calls this and waits for
    rank 0's clean-up, so all resume from the same checkpoint."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = Path(output_dir)

    def newest() -> str | None:
        return get_last_checkpoint(str(folder)) if folder.is_dir() else None

    while is_main() and (ckpt := newest()) is not None:
        try:
            json.loads((Path(ckpt) / "trainer_state.json").read_text())
            break
        except (OSError, ValueError):
            shutil.rmtree(ckpt)
            before = newest()
            log.warning("checkpoint %s is incomplete (the run stopped while saving it): removed it%s", ckpt,
                        f", resuming from {Path(before).name}" if before else "; training starts over")
    barrier()
    return newest()


def log_rows(log_history: list[dict]) -> list[dict]:
    """The trainer's logged rows (loss, rewards..., and the final summary) with numeric values only.

    ``trainer.state.log_history`` is restored from a checkpoint on resume, so the rows cover the
    steps before the interruption too."""
    return [{"step": r.get("step", 0), **{k: v for k, v in r.items() if isinstance(v, (int, float))}}
            for r in log_history]


def _full_params(model, keep: bool):
    """``(name, full tensor on CPU or None)`` of the trainable parameters; ZeRO-3 shards are gathered.

    Under ZeRO-3 every rank must call this (the gather is collective); only ranks with ``keep``
    (rank 0) get copies, so a full fine-tuning run holds one CPU snapshot, not one per rank.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    for n, p in named:
        if hasattr(p, "ds_id"):  # a ZeRO-3 partitioned parameter
            import deepspeed

            with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                yield n, (p.detach().float().cpu().clone() if keep else None)
        else:
            yield n, (p.detach().float().cpu() if keep else None)


class InterruptAfterSave(TrainerCallback):
    """Test hooks: stop training right after checkpoint ``$REASONALIGN_INTERRUPT_AFTER_SAVE`` is saved,
    as a crash would, so a test can check that the next run resumes from it; the ``checkpoint_write``
    crash point (reasonalign/pipeline/faults.py)."""

    def on_save(self, args, state, control, **kwargs):
        import os

        from reasonalign.pipeline import faults

        if faults.armed("checkpoint_write"):  # fault injection: killed before the checkpoint's last file
            Path(args.output_dir, f"checkpoint-{state.global_step}", "trainer_state.json").unlink(missing_ok=True)
            faults.die()
        if os.environ.get("REASONALIGN_INTERRUPT_AFTER_SAVE") == str(state.global_step):
            raise RuntimeError(f"interrupted after saving checkpoint-{state.global_step} (test hook)")


def callbacks() -> list:
    return [InterruptAfterSave()]


def parameter_snapshot(model) -> dict[str, torch.Tensor]:
    return {n: t.clone() for n, t in _full_params(model, is_main()) if t is not None}


def parameter_change(before: dict[str, torch.Tensor], model) -> float:
    """Relative L2 change of the trainable parameters (LoRA or full); 0 on ranks other than 0."""
    num = den = 0.0
    for n, new in _full_params(model, is_main()):
        old = before.get(n)
        if new is None or old is None or old.shape != new.shape:
            continue
        num += float((new - old).pow(2).sum())
        den += float(old.pow(2).sum())
    return (num ** 0.5) / max(den ** 0.5, 1e-12)


def save_final(trainer, tokenizer, out_dir: Path, save: str, init_dir: str | None = None,
               model_cfg: ModelConfig | None = None) -> Path:
    """Save the trained model as a plain HF directory (LoRA merged) or as an adapter.

    Every rank must call it. Under DeepSpeed, ``trainer.save_model`` gathers the (ZeRO-3 sharded)
    16-bit weights on all ranks and writes from rank 0; a LoRA adapter to merge is then reloaded on
    CPU on rank 0 over the base weights of ``init_dir`` and merged there.
    """
    out = Path(out_dir)
    if getattr(trainer, "is_deepspeed_enabled", False):
        return _save_deepspeed(trainer, tokenizer, out, save, init_dir, model_cfg)
    model = trainer.accelerator.unwrap_model(trainer.model) if hasattr(trainer, "accelerator") else trainer.model
    is_peft = hasattr(model, "merge_and_unload")
    if is_peft and save == "merged":
        model = model.merge_and_unload()
    if trainer.args.should_save:
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    return out


def _save_deepspeed(trainer, tokenizer, out: Path, save: str, init_dir, model_cfg) -> Path:
    model = trainer.accelerator.unwrap_model(trainer.model)
    is_peft = hasattr(model, "merge_and_unload")
    if not (is_peft and save == "merged"):
        trainer.save_model(str(out))  # collective under ZeRO-3; rank 0 writes
        if trainer.args.should_save:
            tokenizer.save_pretrained(out)
        barrier()
        return out
    adapter = out.parent / (out.name + ".adapter")
    trainer.save_model(str(adapter))
    # training is over: from here on from_pretrained must load whole weights, not ZeRO-3 shards
    # (sharded loading is collective and rank 0 loads alone)
    after_training()
    barrier()
    if is_main():
        from peft import PeftModel

        from reasonalign.models import load_model

        if init_dir is None or model_cfg is None:
            raise ValueError("merging a LoRA adapter trained under DeepSpeed needs init_dir and model_cfg")
        # merging is arithmetic, not inference: on the CPU, next to the GPU memory training still holds
        base = load_model(model_cfg, init_dir, for_training=False, device="cpu")
        merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
        merged.config.use_cache = True
        merged.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        shutil.rmtree(adapter, ignore_errors=True)
    barrier()
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


def run_info(trainer) -> dict:
    """How the training ran: world size and the DeepSpeed ZeRO stage (None: no DeepSpeed)."""
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None) if hasattr(trainer, "accelerator") else None
    stage = plugin.zero_stage if (plugin is not None and getattr(trainer, "is_deepspeed_enabled", False)) else None
    return {"world_size": trainer.args.world_size, "zero_stage": stage}


def throughput(result, rows: list[dict], resumed_at: int = 0) -> dict:
    """The training loop's wall time and tokens/s (TRL's ``num_tokens``: tokens seen on all ranks),
    both for this attempt only. TRL counts from zero again in a resumed attempt, so after a resume
    from step ``resumed_at`` only the rows logged after it are this attempt's."""
    runtime = (getattr(result, "metrics", None) or {}).get("train_runtime")
    tokens = max((r["num_tokens"] for r in rows if "num_tokens" in r and r["step"] > resumed_at), default=None)
    out = {"train_runtime": runtime, "train_tokens": tokens}
    if runtime and tokens:
        out["train_tokens_per_s"] = round(tokens / runtime, 2)
    return out


def write_log(out_dir: Path, rows: list[dict]) -> None:
    if is_main():
        (Path(out_dir) / "train_log.json").write_text(json.dumps(rows, indent=1))


def cleanup_checkpoints(output_dir: Path) -> None:
    barrier()
    if is_main():
        for p in Path(output_dir).glob("checkpoint-*"):
            shutil.rmtree(p, ignore_errors=True)
    barrier()


def fit(name: str, trainer_cls, config_cls, settings, rows: list[dict], columns: tuple[str, ...],
        init_dir: str, out_dir: Path, model_cfg: ModelConfig, trainer_cfg: TrainerConfig,
        deepspeed: dict | str | None, summary_keys: tuple[str, ...], *, config_defaults: dict | None = None,
        config_fixed: dict | None = None, extra_callbacks: tuple = (), where: str | None = None,
        **trainer_kwargs) -> dict:
    """What the training wrappers (SFT, DPO, a method's own) share: build the TRL trainer, train
    (resuming from the last checkpoint), save the final model, write the loss log and return the
    stage metrics. ``config_defaults``: the wrapper's defaults for TRL fields the settings do not
    list (a passed-through value wins); ``config_fixed``: TRL fields the wrapper sets over
    everything (its settings class's ``set_by_reasonalign``); ``extra_callbacks``: the wrapper's
    own ``TrainerCallback`` objects; ``where``: the settings' config key, for error messages."""
    from datasets import Dataset

    from reasonalign.distributed import after_training, check_can_train, trainer_deepspeed
    from reasonalign.models import load_model, load_tokenizer

    if not rows:
        raise ValueError(f"{name} got an empty data set")
    out_dir = Path(out_dir)
    work = out_dir / "trainer"
    check_can_train()
    if deepspeed is None:
        deepspeed = trainer_deepspeed()  # the run's distributed=zero* setting, if any
    tokenizer = load_tokenizer(model_cfg, init_dir)
    tokenizer.padding_side = "right"
    # the arguments first: under ZeRO-3 they make from_pretrained load the weights already sharded
    args = config_cls(**{**(config_defaults or {}), **trl_kwargs(settings, trainer_cfg, model_cfg, work, deepspeed,
                                                                   where), **(config_fixed or {})})
    model = load_model(model_cfg, init_dir, for_training=True)
    data = Dataset.from_list([{k: r[k] for k in columns} for r in rows])
    peft_config = lora_config(trainer_cfg.lora) if trainer_cfg.finetune == "lora" else None
    trainer = trainer_cls(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                          peft_config=peft_config, callbacks=[*callbacks(), *extra_callbacks], **trainer_kwargs)
    before = parameter_snapshot(trainer.model)
    resume = last_checkpoint(work)
    if resume:
        log.info("resuming %s from %s", name, resume)
    result = trainer.train(resume_from_checkpoint=resume)
    change = parameter_change(before, trainer.model)
    rows = log_rows(trainer.state.log_history)
    speed = throughput(result, rows, int(Path(resume).name.split("-")[-1]) if resume else 0)
    model_dir = save_final(trainer, tokenizer, out_dir / "model", trainer_cfg.save, init_dir, model_cfg)
    write_log(out_dir, rows)
    cleanup_checkpoints(work)
    metrics = {"steps": trainer.state.global_step, "relative_param_change": change, **run_info(trainer), **speed,
               **summarize(rows, summary_keys)}
    log.info("%s done: %d steps, %s %s", name, trainer.state.global_step, summary_keys[0],
             metrics.get(summary_keys[0]))
    del trainer, model
    after_training()
    return {"model_dir": str(model_dir), **metrics}
