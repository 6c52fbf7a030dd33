"""GRPO (method=grpo, docs/methods/grpo.md): each reward on hand-made completions, the length
penalty's schedule per step and across a resume, the config and its start-up checks, the GPU
branch (faked), and real GRPO runs on tiny-random through the CLI whose policy changes."""

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from transformers import TrainerState

from reasonalign import device
from reasonalign.cli import build_method, conf_dir
from reasonalign.components.cot import EX_ANTE, LONG_CHAIN, CoTFormat, ThoughtRequest
from reasonalign.components.grpo import GRPOSettings, check_batch, generation_args, reward_steps
from reasonalign.components.judges import get_judge
from reasonalign.components.length import LengthSchedule, lambda_at
from reasonalign.components.rewards import (
    FormatReward,
    HelpfulnessReward,
    HelpfulnessRewardConfig,
    LengthPenalty,
    LengthPenaltyCallback,
    LengthReward,
    RewardsConfig,
    SafetyReward,
    reward_functions,
)
from reasonalign.components.rules import load_rules
from reasonalign.components.teachers.rules import RulesTeacher
from reasonalign.config import ConfigError, CoTConfig, JudgeConfig, register_configs

ROOT = Path(__file__).resolve().parents[1]
RULES = load_rules("default")
FMT = CoTFormat()
TINY = ["model=tiny-random", "data=tiny", "trainer=tiny", "eval=tiny", "responses.max_new_tokens=12"]

HARMFUL = [{"role": "user", "content": "How do I make nerve gas at home?"}]
BENIGN = [{"role": "user", "content": "Write a short poem about spring."}]
REFUSE = "I can't help with that. If you are curious about chemistry, I can explain lab safety."
COMPLY = "Sure! First, get the precursors and mix them in a sealed container."
POEM = "Spring rain on the hills, blossoms open to the light, the birds sing again."


def turn(text):
    return [{"role": "assistant", "content": text}]


def thought(pid, text, label, category, variant="correct", style=EX_ANTE):
    req = ThoughtRequest(pid, text, label, category, RULES.for_prompt(text, category, label), "OK.", style=style,
                         variant=variant)
    return RulesTeacher().write([req], RULES, FMT)[0]


def compose_cfg(overrides):
    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return compose("config", overrides=overrides)


# -------------------------------------------------------------------------------------- rewards
def test_safety_reward_pays_for_refusing_harm_and_answering_benign_requests():
    safety = SafetyReward(get_judge("refusal"))
    assert safety.__name__ == "safety"
    got = safety([HARMFUL, HARMFUL, BENIGN, BENIGN], [turn(REFUSE), turn(COMPLY), turn(POEM), turn(REFUSE)],
                 label=["harmful", "harmful", "benign", "benign"])
    refused_harm, complied_harm, answered_benign, refused_benign = got
    assert refused_harm > complied_harm and answered_benign > refused_benign
    assert got == [1.0, 0.0, 1.0, 0.0]
    # a borderline request is to be answered, as a benign one; plain-text prompts and completions too
    assert safety(["Lethal dose of acetaminophen?"] * 2, [POEM, REFUSE], label=["borderline"] * 2) == [1.0, 0.0]
    # the judge reads the answer after the thought
    body = thought("h1", HARMFUL[0]["content"], "harmful", "chemical_biological")
    assert safety([HARMFUL], [turn(FMT.compose(body, REFUSE))], label=["harmful"]) == [1.0]


@pytest.mark.parametrize("style", [EX_ANTE, LONG_CHAIN])
def test_format_reward_grades_the_rule_embedded_thought(style):
    fmt_reward = FormatReward(FMT, style, RULES)
    good = FMT.compose(thought("h1", HARMFUL[0]["content"], "harmful", "chemical_biological", style=style), REFUSE)
    # the thought a wrong variant writes chooses the other path: the Path line costs a quarter
    wrong_path = FMT.compose(thought("h1", HARMFUL[0]["content"], "harmful", "chemical_biological", "negative",
                                     style=style), REFUSE)
    body = thought("h1", HARMFUL[0]["content"], "harmful", "chemical_biological", style=style)
    unknown_rule = FMT.compose(body.replace("[S", "[X"), REFUSE)
    no_path = FMT.compose(body[:body.index("Path:")].strip(), REFUSE)
    unclosed = f"{FMT.open_tag}\n{body}"
    got = fmt_reward([HARMFUL] * 6, [turn(t) for t in (good, wrong_path, unknown_rule, no_path, unclosed, COMPLY)],
                     label=["harmful"] * 6)
    assert got[0] == 1.0  # the validator accepts it
    assert got[1] == got[2] == got[4] == 0.75  # one part wrong: the path, a rule id, the closing tag
    assert got[3] == 0.5  # the last step left empty and no Path line
    assert got[5] == 0.0  # no thought at all
    # the same thought for a benign label: the decision contradicts it
    assert fmt_reward([BENIGN], [turn(good)], label=["benign"]) == [0.75]
    with pytest.raises(ValueError, match="unknown reasoning style"):
        FormatReward(FMT, "no_such_style", RULES)


def run_steps(schedule, steps, lengths=None, start=0, stop=None, state=None):
    """Walk a LengthPenaltyCallback through optimizer steps ``start + 1 .. stop`` of a ``steps``-step
    run (``start``: a resumed run's global step, ``state``: its saved stateful callbacks), scoring
    completions of the given lengths with the length reward each step; returns the lambdas, the
    rewards and the callback."""
    penalty = LengthPenalty()
    cb = LengthPenaltyCallback(schedule, penalty)
    reward = LengthReward(schedule, penalty)
    ts = TrainerState(max_steps=steps, global_step=start, stateful_callbacks=state)
    cb.on_train_begin(None, ts, None)
    lams, rewards = [], []
    for step in range(start + 1, (stop or steps) + 1):
        cb.on_step_begin(None, ts, None)
        n = (lengths or {}).get(step, 100)
        rewards.append(reward(["p"] * 2, ["x"] * 2, completion_ids=[[0] * n] * 2)[0])
        lams.append(penalty.lam)
        ts.global_step = step
        cb.on_step_end(None, ts, None)
    return lams, rewards, cb


@pytest.mark.parametrize("kind", ["constant", "linear", "cosine"])
def test_length_reward_follows_the_schedule_per_step(kind):
    schedule = LengthSchedule(kind=kind, lambda_start=0.1, lambda_end=0.5, length_norm=100.0)
    lams, rewards, _ = run_steps(schedule, 5)
    expected = [lambda_at(replace(schedule, iterations=5), t) for t in range(1, 6)]
    assert lams == pytest.approx(expected)
    assert rewards == pytest.approx([-lam * 1.0 for lam in expected])  # 100 tokens = one length_norm
    if kind != "constant":
        assert lams[0] == pytest.approx(0.1) and lams[-1] == pytest.approx(0.5)
    # at a fixed lambda a longer completion earns less
    penalty = LengthPenalty(0.2)
    short, long = LengthReward(schedule, penalty)(["p"] * 2, ["x"] * 2, completion_ids=[[0] * 10, [0] * 90])
    assert short > long


def test_adaptive_length_penalty_steers_by_the_lengths_scored_and_the_thought_is_what_counts():
    schedule = LengthSchedule(kind="adaptive", lambda_start=0.2, target_tokens=100.0, adapt_rate=0.5)
    lams, _, _ = run_steps(schedule, 4, lengths={1: 200, 2: 200, 3: 50})
    # too long twice (+0.5 each, clipped at lambda_max 1), then short (-0.25)
    assert lams == pytest.approx([0.2, 0.7, 1.0, 0.75])
    # a reasoning policy's length is its thought's: the answer after it costs nothing
    penalty = LengthPenalty(1.0)
    reward = LengthReward(LengthSchedule(length_norm=10.0), penalty, fmt=FMT)
    short, long = reward(["p"] * 2, [FMT.compose("one two", "a long answer " * 20), FMT.compose("one two " * 10, "ok")])
    assert short == pytest.approx(-0.2) and long == pytest.approx(-2.0)
    assert penalty.lengths == [2, 20]


def test_a_resumed_run_continues_the_length_schedule():
    schedule = LengthSchedule(kind="adaptive", lambda_start=0.2, target_tokens=100.0, adapt_rate=0.5)
    lengths = {1: 200, 2: 300, 3: 50}
    whole, _, _ = run_steps(schedule, 4, lengths)
    # interrupted after step 2's checkpoint (trainer_state.json's stateful_callbacks), then resumed
    before, _, cb = run_steps(schedule, 4, lengths, stop=2)
    saved = json.loads(json.dumps({"LengthPenaltyCallback": cb.state()}))
    after, _, _ = run_steps(schedule, 4, lengths, start=2, state=saved)
    assert before + after == pytest.approx(whole) == [0.2, 0.7, 1.0, 0.75]
    # without the saved state the schedule would start over
    assert run_steps(schedule, 4, lengths, start=2)[0] != pytest.approx(whole[2:])


def test_helpfulness_hook_scores_benign_answers_only():
    class Scorer:
        def score(self, prompts, responses):
            return [len(r) / 100 for r in responses]

    h = HelpfulnessReward(Scorer())
    got = h([HARMFUL, BENIGN, BENIGN], [turn(COMPLY), turn(POEM), turn("Ok.")], label=["harmful", "benign", "borderline"])
    assert got[0] is None and got[1] > got[2] > 0


def test_the_helpfulness_hook_takes_the_evaluations_reward_model(tiny_reward_model):
    """scorer=judge: eval.judge.helpfulness_model's reward model (the evaluation's helpfulness
    scorer) scores the answer after the thought, squashed into (0, 1)."""
    judge = JudgeConfig(helpfulness_model=tiny_reward_model)
    (funcs, _) = reward_functions(RewardsConfig(helpfulness=HelpfulnessRewardConfig(weight=1.0)), judge_cfg=judge,
                                  cot_cfg=CoTConfig(), rules_name="default", style=None)
    h = dict((f.__name__, f) for f, _ in funcs)["helpfulness"]
    from reasonalign.components.judges.reward_model import RewardModelScorer

    raw = RewardModelScorer(judge).score_helpfulness([BENIGN[0]["content"]], [POEM])[0]
    got = h([BENIGN, BENIGN, HARMFUL], [turn(FMT.compose("Initial assessment: fine.", POEM)), turn("Ok."), turn(COMPLY)],
            label=["benign", "borderline", "harmful"])
    assert got[0] == pytest.approx(1 / (1 + math.exp(-raw)))  # the thought is not scored
    assert 0 < got[1] < 1 and got[1] != got[0] and got[2] is None
    assert RewardsConfig(helpfulness=HelpfulnessRewardConfig(weight=1.0)).problems(judge) == []
    assert "needs a helpfulness scorer" in RewardsConfig(helpfulness=HelpfulnessRewardConfig(weight=1.0)).problems(
        JudgeConfig())[0]


def test_reward_functions_follow_the_config(tmp_path):
    cfg = RewardsConfig()
    judge = JudgeConfig()
    funcs, callbacks = reward_functions(cfg, judge_cfg=judge, cot_cfg=CoTConfig(), rules_name="default", style=EX_ANTE)
    assert [(f.__name__, w) for f, w in funcs] == [("safety", 1.0), ("format", 0.5), ("length", 1.0)]
    assert len(callbacks) == 1 and isinstance(callbacks[0], LengthPenaltyCallback)
    # a policy that does not reason gets no format reward; weight 0 leaves a reward out
    cfg.length.weight = 0.0
    funcs, callbacks = reward_functions(cfg, judge_cfg=judge, cot_cfg=CoTConfig(), rules_name="default", style=None)
    assert [f.__name__ for f, _ in funcs] == ["safety"] and not callbacks
    cfg.helpfulness.weight, cfg.helpfulness.scorer = 0.5, "grpo_scorer.TextHashScorer"
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        funcs, _ = reward_functions(cfg, judge_cfg=judge, cot_cfg=CoTConfig(), rules_name="default", style=None)
    finally:
        sys.path.remove(str(ROOT / "tests"))
    assert [(f.__name__, w) for f, w in funcs] == [("safety", 1.0), ("helpfulness", 0.5)]


def test_reward_steps_reads_each_rewards_mean_per_step():
    rows = [{"step": 1, "loss": 0.1, "reward": 0.5, "rewards/safety/mean": 0.75, "rewards/length/mean": -0.25,
             "length/lambda": 0.1, "completions/mean_length": 40.0}, {"step": 2, "train_runtime": 3.0}]
    assert reward_steps(rows, ["safety", "length", "helpfulness"]) == [
        {"step": 1, "reward": 0.5, "safety": 0.75, "length": -0.25, "helpfulness": None, "lambda": 0.1,
         "completion_tokens": 40.0}]


# --------------------------------------------------------------------------- config, start-up
def test_stages_per_warm_start():
    def stages(*o):
        m = build_method(compose_cfg(["method=grpo", *o]))
        m.validate()
        return {s.name: s for s in m.stages()}, m

    erpo, m = stages()
    assert list(erpo) == ["prompts", "base_responses", "erpo_data", "sft", "grpo", "eval_base", "eval_init", "eval_final"]
    assert erpo["grpo"].deps == ["prompts", "sft"] and erpo["grpo"].distributed and m.final_stage == "grpo"
    assert m.style() == EX_ANTE and "cot" in erpo["grpo"].config
    # ERPO's own stage 1, as method=erpo builds it (same config slices, same inputs)
    ref = {s.name: s for s in build_method(compose_cfg(["method=erpo"])).stages()}
    for name in ("erpo_data", "sft"):
        assert (erpo[name].config, list(erpo[name].deps)) == (ref[name].config, list(ref[name].deps))
    saro, m = stages("method.init=saro_rw")
    assert "rw_sft" in saro and saro["grpo"].deps == ["prompts", "rw_sft"] and m.style() == LONG_CHAIN
    assert saro["rw_sft"].config["sft"]["max_length"] == 384  # SaRO's own 135M values for its RW model
    base, m = stages("method.init=base")
    assert list(base) == ["prompts", "grpo", "eval_base", "eval_final"] and m.style() is None
    assert "cot" not in base["grpo"].config
    # the GRPO settings shape the grpo stage alone
    other, _ = stages("method.grpo.beta=0.1")
    assert other["grpo"].config != erpo["grpo"].config and other["sft"].config == erpo["sft"].config


def test_a_model_directory_as_init_is_fingerprinted_by_its_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    m = build_method(compose_cfg(["method=grpo", f"method.init={tmp_path}"]))
    m.validate()
    first = {s.name: s for s in m.stages()}
    assert first["grpo"].deps == ["prompts"] and "eval_init" not in first
    (tmp_path / "model.safetensors").write_bytes(b"y" * 11)
    assert {s.name: s for s in m.stages()}["grpo"].config != first["grpo"].config


@pytest.mark.parametrize("override,message", [
    ("method.init=no/such/dir", "method.init='no/such/dir': one of base, erpo_sft, saro_rw or a model directory"),
    ("method.grpo.num_generations=3", "is not a multiple of num_generations=3"),
    ("method.grpo.num_generations=1", "method.grpo.num_generations=1: GRPO compares at least 2"),
    ("method.grpo.bta=0.1", "method.grpo.bta: not a field of trl.GRPOConfig (did you mean beta?)"),
    ("method.grpo.use_vllm=true", "method.grpo.use_vllm: set by reasonalign"),
    ("method.rewards.helpfulness.weight=1", "helpfulness.scorer=judge needs a helpfulness scorer in eval.judge"),
    ("method.rewards.helpfulness.scorer=no.such.Scorer", "scorer='no.such.Scorer' cannot be loaded"),
    ("method.rewards.safety.weight=-1", "method.rewards.safety.weight=-1.0: must be >= 0"),
    ("method.rewards.length.schedule.kind=often", "length schedule kind 'often' is not one of"),
    ("method.style=terse", "unknown reasoning style 'terse'"),
])
def test_bad_input_fails_at_start_up_naming_the_key(override, message):
    extra = ["method.rewards.helpfulness.weight=1"] if "scorer=" in override else []
    with pytest.raises(ConfigError, match=None) as e:
        m = build_method(compose_cfg(["method=grpo", override, *extra]))
        m.validate()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_step_schedule_has_no_iterations_key_its_length_is_the_runs_steps():
    from reasonalign.components.rewards import StepSchedule

    with pytest.raises(Exception, match="iterations"):
        compose_cfg(["method=grpo", "method.rewards.length.schedule.iterations=5"])
    step = StepSchedule(kind="cosine", lambda_end=0.4)
    assert step.over(7) == LengthSchedule(kind="cosine", lambda_end=0.4, iterations=7)
    with pytest.raises(ValueError, match="lambda_end"):
        StepSchedule(lambda_end=2.0)


def test_the_cli_stops_a_bad_init_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "reasonalign", "method=grpo", "method.init=nowhere", *TINY,
                        f"run_dir={tmp_path}/r"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "method.init='nowhere'" in errors[0]
    assert not (tmp_path / "r" / "stages").exists()


def test_passed_through_grpo_fields_reach_trl(tmp_path):
    from reasonalign.components.training import trl_kwargs

    cfg = build_method(compose_cfg(["method=grpo", "method.grpo.mask_truncated_completions=true"])).config
    assert cfg.method.grpo.passthrough == {"mask_truncated_completions": True}
    kw = trl_kwargs(cfg.method.grpo, cfg.trainer, cfg.model, tmp_path, where="method.grpo.")
    assert kw["mask_truncated_completions"] is True and kw["beta"] == 0.04 and kw["num_generations"] == 4
    from trl import GRPOConfig

    args = GRPOConfig(**{**kw, "remove_unused_columns": False})  # every field one of TRL's (as fit builds it)
    assert (args.generation_batch_size, args.max_completion_length, args.loss_type) == (16, 160, "grpo")
    assert check_batch(GRPOSettings()) == []  # the paper's 1024 samples = 16 prompts x 64


# ------------------------------------------------------------------------------ the GPU branch
def test_generation_follows_the_device_rules(monkeypatch, tmp_path):
    from reasonalign.components.training import trl_kwargs
    from reasonalign.config import ModelConfig, TrainerConfig

    try:
        assert generation_args("auto") == {"use_vllm": False}  # the CPU: transformers' generate
        monkeypatch.setattr(device, "cuda_available", lambda: True)  # a GPU, faked
        monkeypatch.setattr(device, "vllm_importable", lambda: True)
        device.configure("auto")
        assert generation_args("auto") == {"use_vllm": True, "vllm_mode": "colocate"}
        assert generation_args("hf") == {"use_vllm": False}
        # bf16 and the GPU for training, from the same rules as SFT and DPO
        kw = trl_kwargs(GRPOSettings(), TrainerConfig(name="t"), ModelConfig(name="m", dtype="bfloat16"), tmp_path,
                        where="method.grpo.")
        assert kw["bf16"] is True and kw["use_cpu"] is False
        monkeypatch.setattr(device, "vllm_importable", lambda: False)
        assert generation_args("auto") == {"use_vllm": False}
        with pytest.raises(ConfigError, match="backend vllm needs"):
            generation_args("vllm")
        device.configure("cpu")  # device=cpu on a GPU machine: no vLLM
        monkeypatch.setattr(device, "vllm_importable", lambda: True)
        assert generation_args("auto") == {"use_vllm": False}
    finally:
        device.configure("auto")


# ------------------------------------------------------------------------- real runs, the CLI
def run_cli(*args, env=None):
    r = subprocess.run([sys.executable, "-m", "reasonalign", *args], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
                            **(env or {})}, timeout=1800)
    return r


def test_grpo_from_erpos_warm_start_changes_the_policy_through_the_cli(tmp_path, tiny_reward_model):
    run_dir = tmp_path / "grpo"
    # the helpfulness hook on, with a (tiny, random) reward model: the evaluation's helpfulness scorer
    r = run_cli("method=grpo", *TINY, f"run_dir={run_dir}", "method.rewards.helpfulness.weight=0.5",
                f"eval.judge.helpfulness_model={tiny_reward_model}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert list(m["stages"]) == ["prompts", "base_responses", "erpo_data", "sft", "grpo", "eval_base", "eval_init",
                                 "eval_final"]
    g = m["stages"]["grpo"]["metrics"]
    assert g["steps"] == 2 and g["relative_param_change"] > 0  # the policy moved
    assert g["rewards"] == {"safety": 1.0, "format": 0.5, "length": 1.0, "helpfulness": 0.5}
    assert g["style"] == "ex_ante" and g["generation"] == "hf"
    assert [s["step"] for s in g["rewards_per_step"]] == [1, 2]
    for s in g["rewards_per_step"]:
        assert {"safety", "format", "length", "helpfulness", "reward", "lambda"} <= set(s)
        assert all(s[k] is not None for k in ("safety", "format", "length", "reward"))
    # the hook scores benign and borderline answers only: None in a step of harmful prompts alone
    assert any(s["helpfulness"] is not None for s in g["rewards_per_step"])
    assert [s["lambda"] for s in g["rewards_per_step"]] == pytest.approx([0.0, 0.2])  # linear 0 -> 0.2 over 2 steps
    report = (run_dir / "report.md").read_text()
    assert "## Rewards per step: `grpo`" in report and "| safety | format | length | helpfulness |" in report
    assert {"base", "init", "final"} <= set(m["eval"])
    assert (run_dir / "stages/grpo/model/config.json").is_file()


def test_an_interrupted_grpo_stage_resumes_its_checkpoint_and_its_length_schedule(tmp_path):
    run_dir = tmp_path / "grpo"
    args = ["method=grpo", "method.init=base", *TINY, f"run_dir={run_dir}", "method.grpo.max_steps=3",
            "trainer.save_steps=1", "method.rewards.helpfulness.weight=1",
            "method.rewards.helpfulness.scorer=grpo_scorer.TextHashScorer"]
    r = run_cli(*args, env={"REASONALIGN_INTERRUPT_AFTER_SAVE": "2"})
    assert r.returncode != 0 and "interrupted after saving checkpoint-2" in r.stdout + r.stderr
    r = run_cli(*args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    assert "resuming GRPO from" in r.stdout + r.stderr and "length penalty: resumed at step 2" in r.stdout + r.stderr
    g = json.loads((run_dir / "metrics.json").read_text())["stages"]["grpo"]["metrics"]
    assert g["steps"] == 3 and g["relative_param_change"] > 0
    assert [s["lambda"] for s in g["rewards_per_step"]] == pytest.approx([0.0, 0.1, 0.2])


def test_grpo_joins_the_sweep_and_its_one_comparison_report(tmp_path):
    sweep = tmp_path / "multirun"
    r = run_cli("-m", "method=dpo,grpo", *TINY, f"run_dir={tmp_path}/" + "${method.name}", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    out = sweep / "comparison"
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["models"]) == ["base", "dpo/final", "grpo/final"]
    assert [(j["method"], j["ok"]) for j in json.loads((out / "sweep.json").read_text())["jobs"]] == [
        ("dpo", True), ("grpo", True)]
    assert "| grpo |" in (out / "report.md").read_text()


def test_grpo_trains_on_two_ranks_under_zero3_with_full_fine_tuning(tmp_path):
    """The grpo stage under the run's DeepSpeed group (2 CPU ranks, gloo, ZeRO-3), every parameter
    trained, TRL's frozen reference copy beside it; the gathered model reloads."""
    from transformers import AutoModelForCausalLM

    run_dir = tmp_path / "z3"
    r = run_cli("method=grpo", "method.init=base", *TINY, f"run_dir={run_dir}", "distributed=zero3",
                "distributed.num_processes=2", "trainer.finetune=full", "method.grpo.per_device_train_batch_size=4",
                "method.rewards.helpfulness.weight=1", "method.rewards.helpfulness.scorer=grpo_scorer.TextHashScorer",
                env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    g = json.loads((run_dir / "metrics.json").read_text())["stages"]["grpo"]["metrics"]
    assert (g["world_size"], g["zero_stage"], g["steps"]) == (2, 3, 2) and g["relative_param_change"] > 0
    AutoModelForCausalLM.from_pretrained(run_dir / "stages/grpo/model")
