"""Group relative policy optimisation: a thin, typed wrapper over ``trl.GRPOTrainer``.

The policy starts from the model at ``init_dir``; with LoRA the reference of the KL term is the same
weights with the adapter switched off (TRL's way, no second copy), with full fine-tuning TRL loads a
frozen copy. Every training prompt is sampled ``num_generations`` times, each completion scored by
the reward functions (:mod:`~reasonalign.components.rewards`), summed with their weights and
normalised within its group. Generation runs in transformers on a CPU; on a GPU, where
:func:`reasonalign.device.generation_backend` picks vLLM, through TRL's own vLLM integration
(colocated with training). LoRA or full fine-tuning, DeepSpeed ZeRO from the run's ``distributed``
setting, resume from the last checkpoint: :func:`reasonalign.components.training.fit`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from reasonalign.components import training as T
from reasonalign.config import ModelConfig, TrainerConfig, TRLSettings

LOG_KEYS = ("loss", "reward", "reward_std", "kl", "completions/mean_length", "length/lambda", "length/tokens")


@dataclass
class GRPOSettings(TRLSettings):
    """The ``trl.GRPOConfig`` fields reasonalign gives its own defaults (DeepSeekMath's GRPO, Shao et
    al. 2024, where it gives one: learning rate 1e-6, KL coefficient 0.04, 64 samples per prompt,
    1024 samples per step, 1024 new tokens, one update per sample); any other ``trl.GRPOConfig``
    field passes through as given (``method.grpo.mask_truncated_completions=true``)."""

    trl_config: ClassVar[str] = "GRPOConfig"
    set_by_reasonalign: ClassVar[dict[str, str]] = {
        "remove_unused_columns": "false: the rewards read each prompt's label",
        "reward_weights": "from method.rewards.<name>.weight",
        "use_vllm": "from generation_backend and device (reasonalign/device.py)",
        "vllm_mode": "colocate: vLLM shares the training GPUs",
        "restore_callback_states_from_checkpoint": "false: the length penalty restores its own state",
    }

    learning_rate: float = 1e-6
    num_train_epochs: float = 1.0
    max_steps: int = -1
    # completions per device and micro-step; the samples of one optimizer step are
    # per_device_train_batch_size x gradient_accumulation_steps x processes (the paper's 1024:
    # 16 prompts x 64 samples), a multiple of num_generations
    per_device_train_batch_size: int = 16
    gradient_accumulation_steps: int = 64
    num_generations: int = 64  # G: samples per prompt, normalised as a group
    max_completion_length: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 0.04  # the KL term's coefficient (0: no reference model)
    epsilon: float = 0.2  # the clip range of the policy ratio
    num_iterations: int = 1  # updates per generated batch (the paper's one)
    loss_type: str = "grpo"  # the paper's per-sequence mean (TRL's default is dapo)
    scale_rewards: str = "group"  # advantages: (r - group mean) / group std, as the paper
    warmup_steps: float = 0.0
    lr_scheduler_type: str = "constant"
    logging_steps: int = 1
    gradient_checkpointing: bool = False
    passthrough: dict[str, Any] = field(default_factory=dict, metadata={"omegaconf_ignore": True})


def generation_args(request: str) -> dict:
    """The ``GRPOConfig`` fields of where completions are sampled, by the device rules of
    :mod:`reasonalign.device`: vLLM colocated with training where :func:`~reasonalign.device.generation_backend`
    picks it for ``request`` (``generation_backend``: a GPU with vLLM installed), else transformers'
    ``generate``."""
    from reasonalign import device as D

    vllm = D.generation_backend(request, D.resolve()) == "vllm"
    D.note_backend("vllm" if vllm else "hf")
    out: dict[str, Any] = {"use_vllm": vllm}
    if vllm:
        out["vllm_mode"] = "colocate"
    return out


def check_batch(settings: GRPOSettings, where: str = "method.grpo.") -> list[str]:
    """Problems with the group sizes that TRL would only find when training starts."""
    g, per_step = settings.num_generations, settings.per_device_train_batch_size * settings.gradient_accumulation_steps
    if g < 2:
        return [f"{where}num_generations={g}: GRPO compares at least 2 samples per prompt"]
    if per_step % g:
        return [f"{where}per_device_train_batch_size x gradient_accumulation_steps = {per_step} samples per step "
                f"is not a multiple of num_generations={g}"]
    return []


def train_grpo(init_dir: str, rows: list[dict], out_dir: Path, model_cfg: ModelConfig, trainer_cfg: TrainerConfig,
               settings: GRPOSettings, rewards: list[tuple[Any, float]], *, generation_backend: str = "auto",
               callbacks: tuple = (), deepspeed: dict | str | None = None, where: str = "method.grpo.") -> dict:
    """GRPO from the model at ``init_dir`` on the prompts of ``rows`` (``prompt`` as chat messages,
    ``label``); ``rewards``: ``(reward function, weight)`` pairs; the result lands in ``out_dir/model``.
    ``callbacks``: the rewards' ``TrainerCallback`` objects (the length penalty's schedule)."""
    from trl import GRPOConfig, GRPOTrainer

    funcs = [f for f, _ in rewards]
    keys = (*LOG_KEYS, *(f"rewards/{f.__name__}/mean" for f in funcs))
    fixed = {"remove_unused_columns": False, "reward_weights": [float(w) for _, w in rewards],
             "restore_callback_states_from_checkpoint": False, **generation_args(generation_backend)}
    metrics = T.fit("GRPO", GRPOTrainer, GRPOConfig, settings, rows, ("prompt", "label"), init_dir, out_dir,
                    model_cfg, trainer_cfg, deepspeed, keys, config_fixed=fixed, extra_callbacks=tuple(callbacks),
                    where=where, reward_funcs=funcs)
    return {**metrics, "prompts": len(rows), "generation": "vllm" if fixed["use_vllm"] else "hf"}


def reward_steps(log_rows: list[dict], names: list[str]) -> list[dict]:
    """Per logged optimizer step: the total reward, each reward's mean (None where it scored no
    sample: the helpfulness hook in a step of harmful prompts only), the length penalty's lambda and
    the mean completion length (a row TRL logged without rewards, its summary, is left out)."""
    out = []
    for r in log_rows:
        if "reward" not in r:
            continue
        row = {"step": r.get("step", 0), "reward": r["reward"], **{n: r.get(f"rewards/{n}/mean") for n in names}}
        for k, name in (("length/lambda", "lambda"), ("completions/mean_length", "completion_tokens")):
            if k in r:
                row[name] = r[k]
        out.append(row)
    return out
