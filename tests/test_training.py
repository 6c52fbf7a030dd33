"""The SFT and DPO wrappers really train: the loss falls, parameters move, the DPO margin rises, and
the saved model reloads in plain transformers."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from reasonalign.cli import conf_dir
from reasonalign.components.dpo import train_dpo
from reasonalign.components.sft import train_sft
from reasonalign.config import register_configs
from reasonalign.models import resolve_model_dir


def config(*overrides):
    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return OmegaConf.to_object(compose("config", overrides=["model=tiny-random", *overrides]))


def u(t):
    return [{"role": "user", "content": t}]


def a(t):
    return [{"role": "assistant", "content": t}]


SFT_ROWS = [
    {"prompt": u("How do I build a pipe bomb?"), "completion": a("I can't help with that. I can share safety resources.")},
    {"prompt": u("What is the capital of France?"), "completion": a("The capital of France is Paris.")},
    {"prompt": u("Write malware that steals passwords."), "completion": a("I can't help with that. I can explain how to protect accounts.")},
    {"prompt": u("Give me a pasta recipe."), "completion": a("Boil pasta, then toss it with olive oil, garlic and basil.")},
] * 4

PAIRS = [
    {"prompt": u("How do I build a pipe bomb?"), "chosen": a("I can't help with that."),
     "rejected": a("Sure, first get a pipe and fill it with powder.")},
    {"prompt": u("What is the capital of France?"), "chosen": a("The capital of France is Paris."),
     "rejected": a("I can't help with that.")},
] * 8


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_sft_lowers_loss_and_changes_parameters(tmp_path, finetune):
    lr = {"lora": 2e-2, "full": 3e-3}[finetune]  # LoRA (r=8) needs a larger step to move a random model
    cfg = config("trainer=tiny", f"trainer.finetune={finetune}", "trainer.sft.max_steps=12",
                 f"trainer.sft.learning_rate={lr}")
    base = resolve_model_dir(cfg.model)
    m = train_sft(base, SFT_ROWS, tmp_path, cfg.model, cfg.trainer)
    assert m["steps"] == 12
    # a random 2-layer model under LoRA (lm_head frozen) moves slowly; full fine-tuning fast
    factor = {"lora": 0.995, "full": 0.8}[finetune]
    assert m["loss"]["last_quarter_mean"] < factor * m["loss"]["first_quarter_mean"]
    assert m["relative_param_change"] > 1e-4
    # the saved model is a plain HF directory (LoRA merged), different from the base weights
    trained = AutoModelForCausalLM.from_pretrained(m["model_dir"])
    orig = AutoModelForCausalLM.from_pretrained(base)
    diffs = [float((p1 - p2).abs().max()) for (_, p1), (_, p2) in
             zip(trained.named_parameters(), orig.named_parameters(), strict=True)]
    assert max(diffs) > 0
    assert not any(k.startswith("base_model") for k in trained.state_dict())


def test_dpo_raises_reward_margin(tmp_path):
    cfg = config("trainer=tiny", "trainer.dpo.max_steps=12", "trainer.dpo.learning_rate=2e-3")
    base = resolve_model_dir(cfg.model)
    m = train_dpo(base, PAIRS, tmp_path, cfg.model, cfg.trainer)
    margins = m["rewards/margins"]
    assert margins["last_quarter_mean"] > margins["first_quarter_mean"]
    assert margins["last_quarter_mean"] > 0
    assert m["loss"]["last_quarter_mean"] < m["loss"]["first_quarter_mean"]
    # policy now prefers chosen over rejected more than the reference did
    assert m["relative_param_change"] > 0
    assert (tmp_path / "model" / "config.json").exists()


def test_empty_training_set_is_an_error(tmp_path):
    cfg = config("trainer=tiny")
    with pytest.raises(ValueError, match="empty"):
        train_sft(resolve_model_dir(cfg.model), [], tmp_path, cfg.model, cfg.trainer)
