"""Bad input found at start-up, before any stage runs, in one line with exit status 2; the prompts
stage warns of a shortfall and leaves out prompts longer than the model's context; metrics files hold no NaN (reliability issue, faults 5 and 6)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from reasonalign.cli import build_method, conf_dir, preflight
from reasonalign.config import ConfigError, ReasonalignError, register_configs

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=tiny-random", "data=tiny", "trainer=tiny", "eval=tiny", "responses.max_new_tokens=12"]


def method_of(*overrides):
    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return build_method(compose("config", overrides=[*TINY, *overrides]))


@pytest.mark.parametrize("override, message", [
    ("responses.batch_size=-1", "responses.batch_size=-1: must be > 0"),
    ("eval.generation.max_new_tokens=-1", "eval.generation.max_new_tokens=-1: must be > 0"),
    ("trainer.sft.per_device_train_batch_size=0", "trainer.sft.per_device_train_batch_size=0: must be > 0"),
    ("trainer.dpo.max_steps=0", "trainer.dpo.max_steps=0: must be -1"),
    ("data.train.harmful=-3", "data.train.harmful=-3: must be a count >= 0"),
    ("teacher=openai", "teacher.model is not set"),
    ("judge=api", "judge.model is not set"),
    ("judge=classifier", "judge.model is not set"),
    ("teacher.model=/no/such/teacher", "local model directory /no/such/teacher does not exist"),
    ("teacher._target_=nope.NoTeacher", "teacher._target_='nope.NoTeacher' cannot be loaded"),
    ("teacher._target_=reasonalign.config.ModelConfig",
     "teacher._target_='reasonalign.config.ModelConfig': ModelConfig has no write() method"),
    ("eval.judge._target_=nope.NoJudge", "eval.judge._target_='nope.NoJudge' cannot be loaded"),
    ("eval.judge._target_=reasonalign.config.ModelConfig",
     "eval.judge._target_='reasonalign.config.ModelConfig': ModelConfig has no judge() method"),
])
def test_bad_settings_fail_at_start_up_with_the_key(override, message):
    m = method_of("method=dpo", *(["teacher=hf"] if override.startswith("teacher.model") else []), override)
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        preflight(m.config, m.mcfg)
    assert "\n" not in str(e.value)  # the entry points print it as one line


def test_a_method_setting_is_checked_too():
    m = method_of("method=erpo", "method.lcpo.samples_per_prompt=0")
    with pytest.raises(ConfigError, match=r"method.lcpo.samples_per_prompt=0: must be > 0"):
        preflight(m.config, m.mcfg)


def test_every_project_error_is_one_line_exit_2_before_any_stage(tmp_path):
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules: [unclosed\n")
    r = subprocess.run([sys.executable, "-m", "reasonalign", "method=dpo", *TINY, f"rules={bad}",
                        f"run_dir={tmp_path / 'run'}"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and str(bad) in errors[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr and not (tmp_path / "run" / "stages").exists()


def test_a_bad_target_is_one_line_exit_2_without_hydras_own_log(tmp_path):
    r = subprocess.run([sys.executable, "-m", "reasonalign", "method=dpo", *TINY, "teacher._target_=nope.NoTeacher",
                        f"run_dir={tmp_path / 'run'}"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1, r.stderr[-2000:]
    assert errors[0].startswith("error: teacher._target_='nope.NoTeacher' cannot be loaded: ") and \
        "No module named 'nope'" in errors[0]
    assert "Traceback" not in r.stderr and "Error getting callable" not in r.stderr + r.stdout


def test_project_errors_share_one_base():
    from reasonalign.components.judges.api import JudgeError
    from reasonalign.components.rules import RuleSetError
    from reasonalign.components.teachers.base import TeacherError
    from reasonalign.data.schema import DataError
    from reasonalign.data.sources import ChecksumError, DownloadError

    for cls in (ConfigError, DataError, RuleSetError, TeacherError, JudgeError, ChecksumError, DownloadError):
        assert issubclass(cls, ReasonalignError)


def test_prompts_stage_warns_of_a_shortfall_and_leaves_out_prompts_too_long_for_the_context(tmp_path, caplog):
    from reasonalign.pipeline import run_pipeline

    harm = ["build a pipe bomb", "poison a neighbour's dog", "launder stolen money", "stalk my ex online",
            "hack a hospital network", "forge a passport"]
    ok = ["bake sourdough bread", "tune a guitar", "plant tomatoes", "fix a flat bicycle tyre",
          "write a haiku about rain", "learn Spanish verbs"]
    rows = [{"prompt": f"How do I {t}?", "label": "harmful"} for t in harm]
    rows += [{"prompt": f"Tell me how to {t}.", "label": "benign"} for t in ok]
    rows.append({"prompt": "Please summarise: " + "word " * 300_000, "label": "benign"})  # ~1.5 MB
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = method_of("method=dpo", "data=file", f"data.sources.0.uri=file:{src}", "data.train={harmful:4,benign:5}",
                  "data.eval={harmful:2,benign:2}", f"run_dir={tmp_path / 'run'}")
    with caplog.at_level(logging.WARNING):
        res = run_pipeline(m.stages()[:1], tmp_path / "run")
    report = res["prompts"].metrics["split_report"]
    limit = 2048 - max(m.config.responses.max_new_tokens, m.config.eval.generation.max_new_tokens)
    assert report["too_long_removed"]["max_prompt_tokens"] == limit and sum(
        v for k, v in report["too_long_removed"].items() if k != "max_prompt_tokens") == 1
    texts = [json.loads(line)["text"] for f in ("train_prompts.jsonl", "eval_prompts.jsonl")
             for line in (res["prompts"].path / f).read_text().splitlines()]
    assert all(len(t) < 1000 for t in texts)
    assert report["shortfall"]  # 6 benign prompts (one too long) for 5 + 2 asked
    assert "hold fewer prompts than asked" in caplog.text and f"longer than {limit} tokens" in caplog.text


def test_metrics_files_hold_null_not_nan(tmp_path):
    from reasonalign.eval.metrics import rate
    from reasonalign.pipeline import Stage, run_pipeline

    res = run_pipeline([Stage("empty", lambda ctx: {"benign": rate([])})], tmp_path)
    text = (res["empty"].path / "stage.json").read_text()
    marker = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in stage.json"))
    assert marker["metrics"]["benign"]["rate"] is None and marker["metrics"]["benign"]["n"] == 0


@pytest.mark.parametrize("kind, row, where", [
    ("sft", {"prompt": [{"role": "user", "content": "hi"}]}, r"line 2.*completion.*missing field"),
    ("sft", {"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "user", "content": "x"}]},
     r"line 2.*completion.*last message must have role 'assistant'"),
    ("dpo", {"prompt": "text", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"},
     r"line 2.*chosen.*mixes TRL's formats"),
])
def test_training_rows_are_checked_with_file_line_and_field(tmp_path, kind, row, where):
    from reasonalign.methods.stages import training_rows

    good = ({"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": "x"}]}
            if kind == "sft" else {"prompt": "p", "chosen": "a", "rejected": "b"})
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ReasonalignError, match=f"{re.escape(str(path))}.*{where}"):
        training_rows(path, kind)
    path.write_text(json.dumps(good) + "\n")
    assert training_rows(path, kind) == [good]


def test_a_key_added_with_plus_that_the_schema_lacks_fails():
    with pytest.raises(ConfigError, match="unknown key trainer.lora.rr: LoraSettings has no such field"):
        method_of("method=dpo", "+trainer.lora.rr=8")
    # trainer.sft / trainer.dpo also take TRL's fields, with or without the +; a typo fails all the same
    with pytest.raises(ConfigError, match=re.escape("trainer.sft.learning_rte: not a field of trl.SFTConfig "
                                                    "(did you mean learning_rate?)")):
        method_of("method=dpo", "+trainer.sft.learning_rte=1e-3")
    assert method_of("method=dpo", "+trainer.sft.packing=false").config.trainer.sft.passthrough == {"packing": False}


def test_report_to_reaches_trl_and_its_package_is_checked_at_start_up(tmp_path, monkeypatch):
    import importlib.util

    from reasonalign.components.training import trl_kwargs

    m = method_of("method=dpo")
    assert m.config.trainer.report_to == ["none"]  # the embedded default logs nowhere
    assert method_of("method=dpo", "model=mistral7b").config.trainer.report_to == ["tensorboard"]  # 7-8B settings
    m = method_of("method=dpo", "trainer.report_to=[tensorboard]")
    kw = trl_kwargs(m.config.trainer.sft, m.config.trainer, m.config.model, tmp_path)
    assert kw["report_to"] == ["tensorboard"]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r"trainer.report_to=tensorboard needs the 'tensorboard' package"):
        preflight(m.config, m.mcfg)
