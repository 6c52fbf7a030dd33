"""The plain-TRL side of ``benchmarks/throughput.py``: what a user would write without reasonalign.

``python benchmarks/plain_trl.py {sft|dpo} MODEL_DIR DATA.jsonl OUT.json --steps N --batch B
--max-length L --lr LR [--beta B] [--lora-r R --lora-alpha A] [--bf16] [--gradient-checkpointing true|false]
[--deepspeed DS.json]``

Builds the training arguments (first, as the transformers docs ask under ZeRO-3, so that the weights
load already sharded), loads the model with transformers, wraps it in a LoRA adapter through
``peft_config``, trains with ``trl.SFTTrainer`` (completion-only loss) or ``trl.DPOTrainer`` (the
adapter-less model is the reference) and writes the training loop's runtime, tokens and peak memory
to OUT.json. The step clock (:func:`step_clock`) only measures: ``benchmarks/throughput.py`` adds the
same one to reasonalign's trainer.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time


def step_clock():
    """A trainer callback that records ``(seconds, global step, cumulative num_tokens)`` at every
    logged step (``logging_steps=1``: every step), for tokens/s after warm-up steps."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.marks: list[tuple[float, int, int]] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "num_tokens" in logs:
                self.marks.append((time.perf_counter(), state.global_step, int(logs["num_tokens"])))

    return StepClock()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["sft", "dpo"])
    p.add_argument("model_dir")
    p.add_argument("data")
    p.add_argument("out")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--max-length", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--gradient-checkpointing", choices=["true", "false"], default="false",
                   help="set explicitly: TRL's own default is true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deepspeed", help="a DeepSpeed JSON (ZeRO); launch as a (one-process) distributed world")
    a = p.parse_args()

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    t0 = time.time()
    rows = [json.loads(line) for line in open(a.data)]
    cols = ("prompt", "completion") if a.kind == "sft" else ("prompt", "chosen", "rejected")
    data = Dataset.from_list([{k: r[k] for k in cols} for r in rows])
    tok = AutoTokenizer.from_pretrained(a.model_dir)
    tok.padding_side = "right"
    on_gpu = torch.cuda.is_available()
    common = dict(output_dir=tempfile.mkdtemp(prefix="plain-trl-"), max_steps=a.steps, per_device_train_batch_size=a.batch,
                  learning_rate=a.lr, lr_scheduler_type="constant", logging_steps=1, save_strategy="no",
                  report_to="none", bf16=a.bf16, use_cpu=not on_gpu, seed=a.seed, dataloader_num_workers=0,
                  max_length=a.max_length, gradient_checkpointing=a.gradient_checkpointing == "true")
    if a.deepspeed:
        common["deepspeed"] = a.deepspeed
    args = (SFTConfig(completion_only_loss=True, **common) if a.kind == "sft" else DPOConfig(beta=a.beta, **common))
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=getattr(torch, a.dtype))
    peft = LoraConfig(r=a.lora_r, lora_alpha=a.lora_alpha, lora_dropout=0.0,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                      task_type="CAUSAL_LM")
    clock = step_clock()
    trainer_cls = SFTTrainer if a.kind == "sft" else DPOTrainer
    trainer = trainer_cls(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft,
                          callbacks=[clock])
    result = trainer.train()
    tokens = max((r["num_tokens"] for r in trainer.state.log_history if "num_tokens" in r), default=None)
    json.dump({"train_runtime": result.metrics["train_runtime"], "train_tokens": tokens,
               "steps": trainer.state.global_step, "wall_s": time.time() - t0,
               "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if on_gpu else None,
               "zero_stage": trainer.accelerator.state.deepspeed_plugin.zero_stage if trainer.is_deepspeed_enabled else None,
               "marks": clock.marks}, open(a.out, "w"))


if __name__ == "__main__":
    main()
