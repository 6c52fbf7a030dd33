"""Every config group composes into the typed schema; bad keys and options fail at start-up."""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from reasonalign.cli import build_method, conf_dir
from reasonalign.config import Config, ConfigError, register_configs, validate_method_config

CONF = Path(conf_dir())
GROUPS = ["method", "model", "data", "trainer", "eval", "judge", "distributed"]


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_with(overrides):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(group, option):
    overrides = [f"{group}={option}"]
    if (group, option) == ("model", "hf"):
        overrides.append("model.name_or_path=some/model")
    if (group, option) == ("data", "file"):
        overrides.append("data.sources.0.uri=file:prompts.jsonl")
    cfg = compose_with(overrides)
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, Config)
    node = cfg.eval.judge if group == "judge" else getattr(cfg, group)  # judge/ lands in eval.judge
    assert node.name in (option, "some/model")  # model=hf is named after its path
    method = build_method(cfg)  # the method node validates against its dataclass
    assert method.stages()


def test_misspelled_key_fails_with_its_name():
    with pytest.raises(Exception, match="trainer.lora.rr"):
        compose_with(["trainer.lora.rr=8"])
    # trainer.sft / trainer.dpo take any field of TRL's config: a typo there fails at start-up
    with pytest.raises(ConfigError, match="trainer.sft.learnin_rate: not a field of trl.SFTConfig"):
        build_method(compose_with(["trainer.sft.learnin_rate=1e-4"]))


def test_wrong_type_fails():
    with pytest.raises(Exception, match="max_steps"):
        compose_with(["trainer.sft.max_steps=many"])


def test_unknown_method_key_fails_with_its_name():
    from reasonalign.methods.dpo import DPOMethodConfig

    with pytest.raises(Exception, match="sft_warmpu"):  # the method node is typed as Hydra composes
        compose_with(["method.sft_warmpu=false"])
    cfg = compose_with(["+method.sft_warmpu=false"])  # Hydra's "+" (its own hint) adds it anyway
    with pytest.raises(ConfigError, match="sft_warmpu"):
        build_method(cfg)
    with pytest.raises(ConfigError, match="sft_warmpu"):  # a node from elsewhere (plugins' own YAML)
        validate_method_config(OmegaConf.create({"name": "dpo", "sft_warmpu": False}), DPOMethodConfig)


def run_cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "reasonalign", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=900)


def test_cli_unknown_option_lists_choices():
    r = run_cli("method=nosuch")
    assert r.returncode != 0
    assert "Available options in 'method'" in r.stderr and "dpo" in r.stderr and "sft" in r.stderr


def test_cli_misspelled_key_names_it():
    r = run_cli("trainer.dpo.bta=0.2")
    # one line, before any stage: the key, TRL's config class it is no field of, the closest field
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and errors == ["error: trainer.dpo.bta: not a field of trl.DPOConfig (did you mean beta?)"]


def test_cli_help_lists_groups_and_options():
    r = run_cli("--help")
    assert r.returncode == 0
    for group in GROUPS:
        assert group in r.stdout
    for opt in ("smollm2-135m", "tiny-random", "sft", "dpo"):
        assert opt in r.stdout


ROOT = CONF.parent
# the 7-8B recipes (GPU); the *-smollm2-135m-* recipes are the best settings measured on the CPU default
CPU_TAG = "-smollm2-135m-"
RECIPES = sorted(r for r in (ROOT / "recipes").glob("*.yaml") if CPU_TAG not in r.name)
# CPU recipe -> (method doc, the run_dir that marks the measured command it reproduces, the
# overrides that turn back on what that command switched off to save time: reports only, no model)
CPU_RECIPES = {
    "erpo-smollm2-135m-vhead": ("docs/methods/erpo.md", "run_dir=runs/erpo-vhead-s2head", []),
    "saro-smollm2-135m-vhead": ("docs/methods/saro.md", "run_dir=runs/saro-vhead-b32v2",
                                ["method.analysis=true", "method.evaluate_rw=true", "eval.evaluate_base=true"]),
    "grpo-smollm2-135m-erpo": ("docs/methods/grpo.md", "run_dir=runs/grpo-cpu", []),
}
REPORT_ONLY_STAGES = ("eval_", "analysis_")


def test_cpu_recipes_are_the_listed_ones():
    assert sorted(r.stem for r in (ROOT / "recipes").glob(f"*{CPU_TAG}*.yaml")) == sorted(CPU_RECIPES)


def documented_overrides(doc: str, marker: str) -> list[str]:
    """The overrides of the one ``python -m reasonalign method=...`` command in ``doc`` holding ``marker``."""
    [line] = [ln.strip() for ln in (ROOT / doc).read_text().splitlines()
              if ln.strip().startswith("python -m reasonalign method=") and marker in ln.split()]
    return line.split()[3:]


@pytest.mark.parametrize("recipe", sorted(CPU_RECIPES))
def test_cpu_recipe_is_the_documented_measured_command(recipe):
    """A CPU recipe composes to the config of the measured command its method doc gives (all but the
    run directory and the listed report-only switches), so every stage of that command that makes a
    model or data is in the recipe with the same config and inputs (the same fingerprints), and the
    doc names the recipe."""
    doc, marker, report_only = CPU_RECIPES[recipe]
    path = ROOT / "recipes" / f"{recipe}.yaml"
    command = f"python -m reasonalign --config-dir recipes --config-name {recipe}"
    assert command in path.read_text() and command in (ROOT / doc).read_text()
    register_configs()
    with initialize_config_dir(config_dir=str(path.parent), version_base="1.3"):
        from_recipe = compose(recipe, overrides=[f"hydra.searchpath=[file://{CONF}]"])
    measured = [o for o in documented_overrides(doc, marker) if not o.startswith("run_dir=")]
    from_doc = compose_with(measured)
    assert from_recipe.run_dir == f"runs/{recipe}" != from_doc.run_dir

    def resolved(cfg):
        out = OmegaConf.to_container(cfg, resolve=True)
        out.pop("run_dir")
        return out

    assert resolved(from_recipe) == resolved(compose_with(measured + report_only))
    assert resolved(from_recipe) != resolved(compose_with([f"method={from_doc.method.name}"]))
    ours = {s.name: (s.config, list(s.deps)) for s in build_method(from_recipe).stages()}
    theirs = {s.name: (s.config, list(s.deps)) for s in build_method(from_doc).stages()}
    # every model-making stage is the measured one; an evaluation's settings may carry a report switch
    trained = [n for n in theirs if not n.startswith(REPORT_ONLY_STAGES)]
    assert trained and {n: ours.get(n) for n in trained} == {n: theirs[n] for n in trained}
    assert all(n.startswith(REPORT_ONLY_STAGES) for n in set(ours) - set(trained)), set(ours) - set(trained)
    if not report_only:
        assert ours == theirs


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_every_recipe_composes_and_names_its_command(recipe):
    """The exact command in the recipe's header composes a typed config (printed, not run)."""
    assert f"--config-dir recipes --config-name {recipe.stem}" in recipe.read_text()
    r = run_cli("--config-dir", "recipes", "--config-name", recipe.stem, "--cfg", "job", cwd=ROOT)
    assert r.returncode == 0, r.stderr
    cfg = OmegaConf.create(r.stdout)
    obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), cfg))
    assert obj.model.kind == "hf" and obj.model.dtype == "bfloat16"
    stages = {s.name: s for s in build_method(OmegaConf.merge(OmegaConf.structured(Config), cfg)).stages()}
    # a 7B recipe's stages train and generate at the 7B sizes: the trainer's learning rates and
    # epochs (no 135M CPU-default overrides), the method's own sequence length and evaluation
    # budget where it sets one at this size (SaRO's long chains), else the trainer's and eval's
    own_length, own_tokens = cfg.method.get("max_length"), cfg.method.get("eval_max_new_tokens")
    assert obj.trainer.sft.learning_rate == 1e-4 and obj.trainer.dpo.learning_rate == 5e-6
    for name, st in stages.items():
        if "dpo" in st.config:
            assert st.config["dpo"]["learning_rate"] == obj.trainer.dpo.learning_rate, name
            assert st.config["dpo"]["max_length"] == (own_length or obj.trainer.dpo.max_length) >= 1024, name
        if "sft" in st.config:
            assert st.config["sft"]["num_train_epochs"] == obj.trainer.sft.num_train_epochs, name
            assert st.config["sft"]["max_length"] == (own_length or obj.trainer.sft.max_length) >= 1024, name
        if "eval" in st.config and "generation" in st.config["eval"]:
            generation = {**vars(obj.eval.generation), "max_new_tokens": own_tokens or obj.eval.generation.max_new_tokens}
            assert st.config["eval"]["generation"] == generation and generation["max_new_tokens"] >= 512, name


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_7b_recipe_is_method_x_model_plus_its_teacher(recipe):
    """A 7-8B recipe's sizes come with its model (conf/scale, conf/method_scale): it composes exactly
    like `method=<m> model=<model>` with its teacher."""
    register_configs()
    with initialize_config_dir(config_dir=str(recipe.parent), version_base="1.3"):
        from_recipe = compose(recipe.stem, overrides=[f"hydra.searchpath=[file://{CONF}]"])
    method, model = recipe.stem.split("-", 1)
    plain = compose_with([f"method={method}", f"model={model}", f"teacher={from_recipe.teacher.name}"])
    ours, theirs = (OmegaConf.to_container(c, resolve=True) for c in (from_recipe, plain))
    assert ours.pop("teacher") != theirs.pop("teacher") and ours == theirs


def test_dpo_loss_weights_must_match_loss_types(tmp_path):
    from dataclasses import replace

    from reasonalign.components.training import trl_kwargs
    from reasonalign.config import DPOOverrides, ModelConfig, TrainerConfig

    t = TrainerConfig(name="t")
    t2 = DPOOverrides(loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5]).apply(t)
    kw = trl_kwargs(t2.dpo, t2, ModelConfig(name="m"), tmp_path)
    assert kw["loss_type"] == ["sigmoid", "sft"] and kw["loss_weights"] == [1.0, 0.5]
    assert DPOOverrides().apply(t) is t
    bad = replace(t, dpo=replace(t.dpo, loss_type=["sigmoid", "sft"], loss_weights=[1.0]))
    with pytest.raises(ConfigError, match="one weight per loss_type"):
        trl_kwargs(bad.dpo, bad, ModelConfig(name="m"), tmp_path)


def test_redact_hides_secrets_but_keeps_token_budgets():
    from reasonalign.cli import redact

    cfg = {"teacher": {"api_key": "sk-1", "api_key_env": "OPENAI_API_KEY", "max_new_tokens": 512},
           "model": {"hf_token": "hf_x", "name": "m"}, "eval": {"generation": {"max_new_tokens": 160}},
           "judge": {"client_secret": "s", "password": "p"}, "lcpo": {"schedule": {"target_tokens": 256.0}}}
    out = redact(cfg)
    assert out["teacher"] == {"api_key": "***", "api_key_env": "OPENAI_API_KEY", "max_new_tokens": 512}
    assert out["model"] == {"hf_token": "***", "name": "m"}
    assert out["judge"] == {"client_secret": "***", "password": "***"}
    assert out["eval"]["generation"]["max_new_tokens"] == 160
    assert out["lcpo"]["schedule"]["target_tokens"] == 256.0


# ------------------------------------------------------------------ settings that follow the model
# conf/scale/<model>.yaml (after `model` in the defaults list) and conf/method_scale/<method>_<model>.yaml
# (after `method`); a model without them (hf) gets conf/config.yaml's general values and the schema's.
METHODS = ["sft", "dpo", "erpo", "saro"]
MODELS = {"smollm2-135m": [], "mistral7b": [], "llama3-8b": [], "qwen2.5-7b": [], "hf": ["model.name_or_path=x"]}
SEVEN_B = ("mistral7b", "llama3-8b", "qwen2.5-7b")
# per size: LoRA rank; per trainer the learning rate, epochs, max_length and the batch per device x
# gradient accumulation; eval's and the base responses' max_new_tokens; data sizes; bf16
SIZES = {
    "smollm2-135m": dict(r=16, alpha=32, sft=(5e-4, 2, 256, 8), dpo=(2e-4, 2, 320, 8), gen=160, responses=64,
                         train={"harmful": 32, "benign": 16, "borderline": 16},
                         eval={"harmful": 24, "benign": 12, "borderline": 12}, bf16=True, checkpointing=False),
    "7b": dict(r=64, alpha=128, sft=(1e-4, 2, 1024, 32), dpo=(5e-6, 1, 1024, 32), gen=512, responses=512,
               train={"harmful": 800, "benign": 40, "borderline": 150},
               eval={"harmful": 135, "benign": 40, "borderline": 117}, bf16=True, checkpointing=True),
    "hf": dict(r=16, alpha=32, sft=(2e-4, 1, 512, 4), dpo=(5e-5, 1, 512, 4), gen=512, responses=256,
               train={"harmful": 32, "benign": 16, "borderline": 16},
               eval={"harmful": 24, "benign": 12, "borderline": 12}, bf16=None, checkpointing=False),
}
# a method's own stage settings at a size (None: the trainer's / eval's value applies)
METHOD_SIZES = {
    ("erpo", "smollm2-135m"): dict(stage2_lr=5e-5, stage2_epochs=1, stage3_lr=5e-5, lcpo=(32, 192, 16)),
    ("erpo", "7b"): dict(stage2_lr=None, stage2_epochs=None, stage3_lr=None, lcpo=(512, 512, 32)),
    ("erpo", "hf"): dict(stage2_lr=None, stage2_epochs=None, stage3_lr=None, lcpo=(32, 512, 16)),
    ("saro", "smollm2-135m"): dict(max_length=384, eval_tokens=320, rw_epochs=3, srpo_lr=2e-4, srpo_epochs=2,
                                   policy=(192, 16), embedding_batch=8),
    ("saro", "7b"): dict(max_length=1536, eval_tokens=1024, rw_epochs=None, srpo_lr=None, srpo_epochs=None,
                         policy=(768, 32), embedding_batch=16),
    ("saro", "hf"): dict(max_length=None, eval_tokens=None, rw_epochs=None, srpo_lr=None, srpo_epochs=None,
                         policy=(512, 16), embedding_batch=8),
}


def size_of(model):
    return "7b" if model in SEVEN_B else model


def trains(settings):
    """(learning rate, epochs, max_length, effective batch per device) of a stage's sft/dpo settings."""
    s = settings if isinstance(settings, dict) else vars(settings)
    return (s["learning_rate"], s["num_train_epochs"], s["max_length"],
            s["per_device_train_batch_size"] * s["gradient_accumulation_steps"])


@pytest.mark.parametrize("method,model", [(m, md) for m in METHODS for md in MODELS])
def test_settings_follow_the_model(method, model):
    """Each method x model pair composes the sizes of its model (and of the method at that size),
    and its stages train and generate with them."""
    cfg = compose_with([f"method={method}", f"model={model}", *MODELS[model]])
    obj = OmegaConf.to_object(cfg)
    size = SIZES[size_of(model)]
    t = obj.trainer
    assert (t.lora.r, t.lora.alpha, t.bf16) == (size["r"], size["alpha"], size["bf16"])
    assert trains(t.sft) == size["sft"] and trains(t.dpo) == size["dpo"]
    assert t.sft.gradient_checkpointing == t.dpo.gradient_checkpointing == size["checkpointing"]
    assert (obj.data.train, obj.data.eval) == (size["train"], size["eval"])
    assert obj.eval.generation.max_new_tokens == size["gen"] and obj.responses.max_new_tokens == size["responses"]

    own = METHOD_SIZES.get((method, size_of(model)), {})
    stages = {s.name: s.config for s in build_method(cfg).stages()}
    assert stages["base_responses"]["responses"]["max_new_tokens"] == size["responses"]
    tokens = own.get("eval_tokens") or size["gen"]
    assert stages["eval_final"]["eval"]["generation"]["max_new_tokens"] == tokens
    length = own.get("max_length")
    sft_stage, dpo_stage = ("rw_sft", "srpo") if method == "saro" else ("sft", "dpo")
    lr, epochs, max_length, batch = size["sft"]
    if method != "dpo" or cfg.method.sft_warmup:
        assert trains(stages[sft_stage]["sft"]) == (lr, own.get("rw_epochs") or epochs, length or max_length, batch)
    if method != "sft":
        lr, epochs, max_length, batch = size["dpo"]
        stage_lr = own.get("srpo_lr") or own.get("stage2_lr") or lr
        stage_epochs = own.get("srpo_epochs") or own.get("stage2_epochs") or epochs
        assert trains(stages[dpo_stage]["dpo"]) == (stage_lr, stage_epochs, length or max_length, batch)
    if method == "erpo":
        assert stages["lcpo_1"]["dpo"]["learning_rate"] == (own["stage3_lr"] or size["dpo"][0])
        lcpo = stages["lcpo_1_pairs"]["method.lcpo"]
        assert (lcpo["prompts_per_iteration"], lcpo["max_new_tokens"], lcpo["batch_size"]) == own["lcpo"]
    if method == "saro":
        policy = cfg.method.srpo.policy
        assert (policy.max_new_tokens, policy.batch_size) == own["policy"]
        assert cfg.method.embedding.batch_size == stages["analysis_final"]["method.embedding"]["batch_size"] \
            == own["embedding_batch"]


@pytest.mark.parametrize("method", METHODS)
def test_7b_models_share_their_sizes_and_tiny_random_the_default(method):
    """The 7-8B models compose the same sizes (one shared file, scale/7b.yaml); tiny-random, the test
    stand-in for the embedded default, composes exactly like smollm2-135m but for the model."""

    def without_model(model):
        cfg = OmegaConf.to_container(compose_with([f"method={method}", f"model={model}"]), resolve=True)
        del cfg["model"], cfg["run_dir"], cfg["eval_dir"]
        return cfg

    assert without_model("mistral7b") == without_model("llama3-8b") == without_model("qwen2.5-7b")
    assert without_model("tiny-random") == without_model("smollm2-135m") != without_model("mistral7b")


@pytest.mark.parametrize("method", METHODS)
def test_group_choices_win_over_the_model_sizes(method):
    """trainer=tiny data=tiny eval=tiny come after scale/<model> in the defaults list: with a 7B model
    they compose exactly as with the tiny test model."""
    tiny = ["trainer=tiny", "data=tiny", "eval=tiny"]
    big = OmegaConf.to_object(compose_with([f"method={method}", "model=mistral7b", *tiny]))
    small = OmegaConf.to_object(compose_with([f"method={method}", "model=tiny-random", *tiny]))
    assert big.trainer.report_to == ["tensorboard"]  # where it logs stays the model's choice
    assert (replace(big.trainer, report_to=["none"]), big.data, big.eval) == (small.trainer, small.data, small.eval)
    t = big.trainer
    assert (t.lora.r, t.bf16, t.sft.learning_rate, t.sft.max_steps, t.sft.max_length) == (8, None, 1e-3, 6, 128)
    assert (t.dpo.gradient_accumulation_steps, t.dpo.gradient_checkpointing, t.dpo.num_train_epochs) == (1, False, 1)
    assert big.data.train == {"harmful": 6, "benign": 3, "borderline": 3}
    assert big.eval.generation.max_new_tokens == 12
    # the kind from the group, the sizes from the model
    full = OmegaConf.to_object(compose_with([f"method={method}", "model=mistral7b", "trainer=full"]))
    assert (full.trainer.finetune, full.trainer.sft.learning_rate, full.trainer.sft.max_length) == ("full", 2e-5, 1024)


def test_scale_files_can_be_chosen_for_any_model():
    """scale=7b method_scale=<method>_7b give any model (model=hf) the 7-8B sizes; every option of
    both groups composes with its method."""
    for option in options("scale"):
        obj = OmegaConf.to_object(compose_with(["model=hf", "model.name_or_path=x", f"scale={option}"]))
        assert obj.trainer.lora.r == SIZES[size_of(option) if option != "tiny-random" else "smollm2-135m"]["r"]
    for option in options("method_scale"):
        method = option.split("_", 1)[0]
        cfg = compose_with([f"method={method}", "model=hf", "model.name_or_path=x", f"method_scale={option}"])
        assert build_method(cfg).stages()
    hf7b, m7b = (OmegaConf.to_container(compose_with(o), resolve=True) for o in (
        ["method=saro", "model=hf", "model.name_or_path=x", "scale=7b", "method_scale=saro_7b"],
        ["method=saro", "model=mistral7b"]))
    for cfg in (hf7b, m7b):
        del cfg["model"], cfg["run_dir"], cfg["eval_dir"]
    assert hf7b == m7b


def test_hydra_flags_may_come_anywhere_and_hub_ids_do_not_nest_run_dirs():
    import subprocess
    import sys

    from reasonalign.cli import hydra_argv

    assert hydra_argv(["model=x", "--cfg", "job", "method=y", "-m", "--info", "a=b", "--config-dir", "d"]) == \
        ["--cfg", "job", "-m", "--info", "--config-dir", "d", "model=x", "method=y", "a=b"]
    for entry in ("reasonalign", "reasonalign.eval"):
        r = subprocess.run([sys.executable, "-m", entry, "model=hf", "model.name_or_path=Qwen/Qwen2.5-0.5B-Instruct",
                            "--cfg", "job", "--resolve", "data=tiny"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-1500:]
        assert "runs/dpo-Qwen_Qwen2.5-0.5B-Instruct-tiny" in r.stdout
        assert "eval_dir: runs/eval-Qwen_Qwen2.5-0.5B-Instruct-" in r.stdout


def _leaves(node: dict, prefix: str = ""):
    for k, v in node.items():
        if isinstance(v, dict) and v:
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def test_yaml_options_hold_only_what_differs_from_the_dataclass():
    """One source of defaults: the dataclasses of reasonalign/config.py (and each method's Config)
    hold every default; a group option's YAML sets a key only to a value that differs from it, or to
    reset a key that conf/config.yaml or a conf/scale file sets (data=tiny beating a model's sizes).
    A teacher or judge option names its class (``_target_``) even where it is the default's."""
    import yaml

    from reasonalign.config import (
        DataConfig,
        DistributedConfig,
        EvalConfig,
        JudgeConfig,
        ModelConfig,
        TeacherConfig,
        TrainerConfig,
    )
    from reasonalign.methods.registry import get_method

    layered = set()
    for path in [CONF / "config.yaml", *sorted((CONF / "scale").glob("*.yaml"))]:
        node = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k not in ("defaults", "hydra")}
        layered |= {k for k, _ in _leaves(node)}
    schemas = {"data": DataConfig, "eval": EvalConfig, "model": ModelConfig, "distributed": DistributedConfig,
               "teacher": TeacherConfig, "judge": JudgeConfig, "trainer": TrainerConfig}
    schemas |= {f"method/{o}": get_method(o).Config for o in options("method")}
    repeated = []
    for key, schema in schemas.items():
        group = key.split("/")[0]
        defaults = dict(_leaves(OmegaConf.to_container(OmegaConf.structured(schema))))
        files = [CONF / f"{key}.yaml"] if "/" in key else sorted((CONF / group).glob("*.yaml"))
        for path in files:
            node = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k != "defaults"}
            for leaf, value in _leaves(node):
                if leaf not in ("name", "_target_") and leaf in defaults and value == defaults[leaf] and f"{group}.{leaf}" not in layered:
                    repeated.append(f"{path.relative_to(CONF)}: {leaf}")
    assert not repeated, repeated
    # and the method files extend their dataclass (every key printed by --cfg job, typos caught by Hydra)
    for o in options("method"):
        assert yaml.safe_load((CONF / "method" / f"{o}.yaml").read_text())["defaults"] == [f"base_{o}", "_self_"]
