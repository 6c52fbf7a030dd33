"""Every config group composes into the typed schema; bad keys and options fail at start-up."""

import os
import subprocess
import sys
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
    with pytest.raises(Exception, match="learnin_rate"):
        compose_with(["trainer.sft.learnin_rate=1e-4"])


def test_wrong_type_fails():
    with pytest.raises(Exception, match="max_steps"):
        compose_with(["trainer.sft.max_steps=many"])


def test_unknown_method_key_fails_with_its_name():
    from reasonalign.methods.dpo import DPOMethodConfig

    cfg = compose_with(["+method.sft_warmpu=false"])
    with pytest.raises(ConfigError, match="sft_warmpu"):
        validate_method_config(cfg.method, DPOMethodConfig)


def run_cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "reasonalign", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=900)


def test_cli_unknown_option_lists_choices():
    r = run_cli("method=nosuch")
    assert r.returncode != 0
    assert "Available options in 'method'" in r.stderr and "dpo" in r.stderr and "sft" in r.stderr


def test_cli_misspelled_key_names_it():
    r = run_cli("trainer.dpo.bta=0.2")
    assert r.returncode != 0
    assert "bta" in r.stderr


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
    # a 7B recipe's own trainer and eval settings reach its stages (no 135M CPU-default overrides)
    for name, st in stages.items():
        if "dpo" in st.config:
            assert st.config["dpo"]["learning_rate"] == obj.trainer.dpo.learning_rate, name
            assert st.config["dpo"]["max_length"] == obj.trainer.dpo.max_length, name
        if "sft" in st.config:
            assert st.config["sft"]["num_train_epochs"] == obj.trainer.sft.num_train_epochs, name
        if "eval" in st.config and "generation" in st.config["eval"]:
            assert st.config["eval"]["generation"] == dict(vars(obj.eval.generation)), name


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
