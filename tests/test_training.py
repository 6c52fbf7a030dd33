"""The SFT and DPO wrappers really train: the loss falls, parameters move, the DPO margin rises, and
the saved model reloads in plain transformers."""

import json
import re

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from reasonalign.cli import conf_dir
from reasonalign.components.dpo import train_dpo
from reasonalign.components.sft import train_sft
from reasonalign.config import ConfigError, register_configs
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


def test_pass_through_fields_reach_trls_config_objects(tmp_path):
    """Any trl.SFTConfig / trl.DPOConfig field given as trainer.sft.<field> / trainer.dpo.<field>
    (no + needed) reaches TRL's config object; reasonalign's own defaults stay as they were."""
    from trl import DPOConfig, SFTConfig

    from reasonalign.components.training import trl_kwargs

    plain = config("trainer=tiny")
    cfg = config("trainer=tiny", "trainer.dpo.label_smoothing=0.1", "trainer.dpo.use_weighting=true",
                 "trainer.sft.neftune_noise_alpha=5", "+trainer.sft.packing=true",
                 "trainer.dpo.model_init_kwargs={dtype: float32}")
    assert cfg.trainer.dpo.passthrough == {"label_smoothing": 0.1, "use_weighting": True,
                                           "model_init_kwargs": {"dtype": "float32"}}
    dpo = DPOConfig(**trl_kwargs(cfg.trainer.dpo, cfg.trainer, cfg.model, tmp_path))
    assert (dpo.label_smoothing, dpo.use_weighting, dpo.model_init_kwargs) == (0.1, True, {"dtype": "float32"})
    sft = SFTConfig(**trl_kwargs(cfg.trainer.sft, cfg.trainer, cfg.model, tmp_path))
    assert (sft.neftune_noise_alpha, sft.packing) == (5, True)
    # the fields reasonalign lists keep their values; TRL's defaults for the rest when not given
    assert dpo.learning_rate == plain.trainer.dpo.learning_rate and dpo.beta == plain.trainer.dpo.beta
    base = DPOConfig(**trl_kwargs(plain.trainer.dpo, plain.trainer, plain.model, tmp_path))
    assert (base.label_smoothing, base.use_weighting) == (0.0, False)
    # a method's own settings over trainer.dpo (dataclasses.replace) keep the passed-through fields
    from reasonalign.config import DPOOverrides

    over = DPOOverrides(learning_rate=1e-5, loss_type=["sigmoid", "sft"]).apply(cfg.trainer)
    assert over.dpo.learning_rate == 1e-5 and over.dpo.passthrough == cfg.trainer.dpo.passthrough


def test_pass_through_fields_change_the_stage_fingerprint():
    from dataclasses import replace

    from reasonalign.methods.stages import trainer_fingerprint

    t = config("trainer=tiny").trainer
    fp = trainer_fingerprint(t, "dpo")
    assert fp["dpo"]["passthrough"] == {}  # no field passed through
    given = config("trainer=tiny", "trainer.dpo.label_smoothing=0.1").trainer
    assert trainer_fingerprint(given, "dpo")["dpo"]["passthrough"] == {"label_smoothing": 0.1}
    assert trainer_fingerprint(given, "dpo") != fp
    assert trainer_fingerprint(given, "sft") == trainer_fingerprint(t, "sft")  # DPO's fields: not SFT's stage
    assert trainer_fingerprint(replace(t, dpo=replace(t.dpo, passthrough={"label_smoothing": 0.0})), "dpo") != fp


def test_a_pass_through_field_reaches_a_real_training_run(tmp_path):
    """trainer.sft.include_num_input_tokens_seen (a transformers field reasonalign does not list)
    makes the trainer log the tokens it has seen: it reached the trainer that ran."""
    cfg = config("trainer=tiny", "trainer.sft.max_steps=2", "trainer.sft.include_num_input_tokens_seen=all")
    m = train_sft(resolve_model_dir(cfg.model), SFT_ROWS, tmp_path, cfg.model, cfg.trainer)
    assert m["steps"] == 2
    rows = json.loads((tmp_path / "train_log.json").read_text())
    assert [r["num_input_tokens_seen"] for r in rows if "loss" in r][-1] > 0


def test_trl_config_fields_set_by_reasonalign_are_refused(tmp_path):
    from dataclasses import replace

    from reasonalign.components.training import trl_kwargs

    cfg = config("trainer=tiny")
    t = replace(cfg.trainer, sft=replace(cfg.trainer.sft, passthrough={"seed": 3}))
    with pytest.raises(ConfigError, match=re.escape("trainer.sft.seed: set by reasonalign (from trainer.seed)")):
        trl_kwargs(t.sft, t, cfg.model, tmp_path)
    t = replace(cfg.trainer, dpo=replace(cfg.trainer.dpo, passthrough={"betta": 0.2}))
    with pytest.raises(ConfigError, match=re.escape("trainer.dpo.betta: not a field of trl.DPOConfig "
                                                    "(did you mean beta?)")):
        trl_kwargs(t.dpo, t, cfg.model, tmp_path)


def test_resume_point_is_the_last_complete_checkpoint(tmp_path, caplog):
    import logging

    from reasonalign.components.training import last_checkpoint

    assert last_checkpoint(tmp_path / "none") is None
    for step, whole in ((2, True), (4, True), (6, False)):  # checkpoint-6: killed before its state file
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if whole:
            (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (tmp_path / "checkpoint-final").mkdir()  # not a checkpoint-N: ignored
    with caplog.at_level(logging.WARNING, logger="reasonalign.training"):
        assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert "checkpoint-6 is incomplete" in caplog.text and "resuming from checkpoint-4" in caplog.text
    assert not (tmp_path / "checkpoint-6").exists()
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
