"""Distributed training on CPU with gloo: the DeepSpeed config generator, the relaunch logic, the
rank-aware pipeline, and 2-rank SFT+DPO runs under ZeRO-2 and ZeRO-3 through the real CLI.

The 2-rank runs reuse the data stages of one single-process run (same fingerprints, so they are
skipped) and train a few steps each; their logged losses must match the single-process run with
the same global batch (1 x 4 vs 2 x 2).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reasonalign import distributed as D
from reasonalign.config import ConfigError, DistributedConfig

TINY = ["model=tiny-random", "data=tiny", "trainer=tiny", "eval=tiny", "responses.max_new_tokens=12",
        "method=dpo", "eval.evaluate_base=false", "trainer.sft.max_steps=3", "trainer.dpo.max_steps=3"]
TWO_RANKS = ["distributed.num_processes=2", "trainer.sft.per_device_train_batch_size=2",
             "trainer.dpo.per_device_train_batch_size=2"]
DATA_STAGES = ("prompts", "base_responses", "baseline_data")


# ------------------------------------------------------------------------- DeepSpeed config


def test_no_deepspeed_for_none_and_ddp():
    assert D.deepspeed_config(DistributedConfig()) is None
    assert D.deepspeed_config(DistributedConfig(name="ddp", num_processes=0)) is None


@pytest.mark.parametrize("stage", [2, 3])
def test_generated_config_per_stage(stage):
    ds = D.deepspeed_config(DistributedConfig(name=f"zero{stage}", zero_stage=stage), cuda=False)
    z = ds["zero_optimization"]
    assert z["stage"] == stage
    # batch sizes and precision are left to HF Trainer, which fills them from the trainer settings
    for k in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
              "gradient_clipping"):
        assert ds[k] == "auto"
    assert ds["bf16"] == {"enabled": "auto"} and ds["fp16"] == {"enabled": "auto"}
    assert "offload_optimizer" not in z and "offload_param" not in z
    if stage == 3:
        assert z["stage3_gather_16bit_weights_on_model_save"] is True
        assert z["stage3_prefetch_bucket_size"] == "auto"
    else:
        assert "stage3_gather_16bit_weights_on_model_save" not in z
        assert z["allgather_bucket_size"] == 500_000_000
    assert z["overlap_comm"] is False  # CPU
    assert D.deepspeed_config(DistributedConfig(zero_stage=stage), cuda=True)["zero_optimization"]["overlap_comm"]


def test_offload_and_bad_combinations():
    ds = D.deepspeed_config(DistributedConfig(name="zero3_offload", zero_stage=3, offload_optimizer=True,
                                              offload_param=True), cuda=True)
    z = ds["zero_optimization"]
    assert z["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert z["offload_param"] == {"device": "cpu", "pin_memory": True}
    with pytest.raises(ConfigError, match="offload_param"):
        D.deepspeed_config(DistributedConfig(zero_stage=2, offload_param=True))
    with pytest.raises(ConfigError, match="zero_stage"):
        D.deepspeed_config(DistributedConfig(zero_stage=5))


def test_user_json_merged_over_generated(tmp_path):
    user = tmp_path / "ds.json"
    user.write_text(json.dumps({"zero_optimization": {"reduce_bucket_size": 12345, "sub_group_size": 7},
                                "steps_per_print": 5}))
    ds = D.deepspeed_config(DistributedConfig(zero_stage=3, deepspeed_config=str(user)), cuda=False)
    z = ds["zero_optimization"]
    assert z["reduce_bucket_size"] == 12345 and z["sub_group_size"] == 7  # user keys win / are added
    assert z["stage"] == 3 and z["stage3_gather_16bit_weights_on_model_save"] is True  # the rest stays
    assert ds["steps_per_print"] == 5
    with pytest.raises(ConfigError, match="deepspeed_config"):
        D.deepspeed_config(DistributedConfig(zero_stage=3, deepspeed_config=str(tmp_path / "missing.json")))


def test_shipped_group_options_compose():
    from hydra import compose, initialize_config_dir

    from reasonalign.cli import conf_dir
    from reasonalign.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        for name, stage in [("none", None), ("ddp", None), ("zero2", 2), ("zero3", 3), ("zero3_offload", 3)]:
            cfg = compose("config", overrides=[f"distributed={name}"])
            assert cfg.distributed.name == name and D.zero_stage(cfg.distributed) == stage
            D.validate(cfg.distributed)
        off = D.deepspeed_config(compose("config", overrides=["distributed=zero3_offload"]).distributed)
        assert {"offload_optimizer", "offload_param"} <= set(off["zero_optimization"])


# ---------------------------------------------------------------------------------- relaunch


def test_relaunch_marker_prevents_a_second_launch():
    z3 = DistributedConfig(name="zero3", zero_stage=3, num_processes=2)
    assert D.needs_launch(z3, env={})
    assert not D.needs_launch(z3, env={D.CHILD_ENV: "1"})  # our own relaunched child
    assert not D.needs_launch(z3, env={"LOCAL_RANK": "0"})  # started by any launcher
    assert not D.needs_launch(DistributedConfig(), env={})


def test_launch_commands(tmp_path):
    one = D.launch_command(DistributedConfig(name="zero2", zero_stage=2, num_processes=4), ["a=1"], env={})
    assert one[1:3] == ["-m", "torch.distributed.run"] and "--nproc_per_node=4" in one and "--nnodes=1" in one
    assert one[one.index("-m", 3):] == ["-m", "reasonalign", "a=1"]
    multi = D.launch_command(DistributedConfig(name="zero3", num_processes=8, num_machines=2, machine_rank=1,
                                               main_process_ip="10.0.0.1", main_process_port=1234), [], env={})
    assert {"--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.1", "--master_port=1234"} <= set(multi)
    with pytest.raises(ConfigError, match="main_process_ip"):
        D.launch_command(DistributedConfig(name="zero3", num_machines=2), [], env={})
    slurm_env = {"SLURM_JOB_ID": "7", "SLURM_NNODES": "4", "SLURM_NODEID": "2",
                 "SLURM_JOB_NODELIST": "gpu[003-006]"}
    s = D.launch_command(DistributedConfig(name="zero3", num_processes=8, slurm=True), [], env=slurm_env)
    assert {"--nnodes=4", "--node_rank=2", "--master_addr=gpu003", "--master_port=29500"} <= set(s)
    hf = tmp_path / "hostfile"
    hf.write_text("# two nodes\nnode-a slots=8\nnode-b slots=8\n")
    h = D.launch_command(DistributedConfig(name="zero3", hostfile=str(hf)), ["x=2"], env={})
    assert h[1:3] == ["-m", "deepspeed.launcher.runner"] and h[h.index("--num_nodes") + 1] == "2"
    assert h[h.index("--master_addr") + 1] == "node-a" and h[-4:] == ["--no_local_rank", "--module", "reasonalign", "x=2"]
    assert "--no_ssh_check" not in h
    h = D.launch_command(DistributedConfig(name="zero3", hostfile=str(hf), ssh_check=False), [], env={})
    assert "--no_ssh_check" in h


def test_helpers():
    assert D.first_host("gpu[003-005,9],cpu1") == "gpu003" and D.first_host("n1,n2") == "n1"
    assert D.child_args(["a=1", "run_dir=x", "b=2"], "/r") == ["a=1", "b=2", "run_dir=/r"]
    assert D.hydra_rank_overrides({"RANK": "0"}) == []
    assert "hydra.output_subdir=null" in D.hydra_rank_overrides({"RANK": "1"})


# ------------------------------------------------------------------- rank-aware pipeline (gloo)


def _pipeline_worker(rank: int, root: str, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from reasonalign.pipeline import Stage, run_pipeline

    D.init(DistributedConfig(name="ddp", num_processes=2))

    def prep(ctx):  # rank 0 only
        (ctx.out / f"ran-on-{D.rank()}").write_text("x")
        (ctx.out / "data.txt").write_text("hello")
        return {"rank": D.rank()}

    def train(ctx):  # every rank; reads prep's finished output
        assert (ctx.inputs["prep"] / "data.txt").read_text() == "hello"
        assert D.in_training_stage()
        if D.is_main():
            (ctx.out / "model.txt").write_text("trained")
        return {"rank": D.rank()}

    res = run_pipeline([Stage("prep", prep), Stage("train", train, deps=["prep"], distributed=True)], Path(root))
    # every rank sees rank 0's finished stages and metrics
    assert res["prep"].metrics == {"rank": 0} and res["train"].metrics == {"rank": 0}
    assert (res["train"].path / "model.txt").exists()
    Path(root, f"done-{rank}").write_text(json.dumps({k: r.skipped for k, r in res.items()}))
    D.barrier()


def test_rank_aware_pipeline(tmp_path):
    import torch.multiprocessing as mp

    for attempt in range(2):  # the second run skips both stages on both ranks
        mp.spawn(_pipeline_worker, args=(str(tmp_path), D.free_port()), nprocs=2, join=True)
        for r in (0, 1):
            assert json.loads((tmp_path / f"done-{r}").read_text()) == {"prep": bool(attempt), "train": bool(attempt)}
    prep = tmp_path / "stages" / "prep"
    assert sorted(p.name for p in prep.iterdir()) == ["data.txt", "ran-on-0", "stage.json"]
    assert not list((tmp_path / "stages").glob("*.partial"))


def _lcpo_fake_generate(model, tok, items, settings, out_path, desc="", **kw):
    """Canned policy samples (a random tiny model writes no thoughts): even samples refuse after a
    refusing thought, odd ones comply after an answering thought, so every sampled prompt has one
    correct and one wrong sample and gives a decision pair."""
    from reasonalign.components.cot import CoTFormat

    thought = "Initial assessment: x.\n\nRule verification: [S0] No rule applies.\n\nPath calibration: Path: {}."
    fmt = CoTFormat()
    return [{"id": it["id"], "n_tokens": 20,
             "response": fmt.compose(thought.format("refuse"), "I can't help with that.") if k % 2 == 0
             else fmt.compose(thought.format("answer"), "Sure, here it is: first, second, third.")}
            for k, it in enumerate(items)]


def _erpo_worker(rank: int, root: str, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    from hydra import compose, initialize_config_dir

    import reasonalign.components.generation as gen
    from reasonalign.cli import build_method, conf_dir
    from reasonalign.config import register_configs
    from reasonalign.pipeline import run_pipeline

    D.init(DistributedConfig(name="ddp", num_processes=2))
    gen.generate_resumable = _lcpo_fake_generate
    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[
            "method=erpo", "model=tiny-random", "data=tiny", "trainer=tiny", "eval=tiny", f"run_dir={root}",
            "method.lcpo.iterations=1", "method.lcpo.samples_per_prompt=2", "method.lcpo.prompts_per_iteration=4",
            "method.lcpo.max_steps=2", "trainer.sft.max_steps=2", "trainer.dpo.max_steps=2",
            "trainer.sft.per_device_train_batch_size=2", "trainer.dpo.per_device_train_batch_size=2"])
    stages = [s for s in build_method(cfg).stages() if not s.name.startswith("eval")]
    res = run_pipeline(stages, Path(root))
    Path(root, f"done-{rank}").write_text(json.dumps(res["lcpo_1"].metrics, default=str))
    D.barrier()


def test_erpo_lcpo_trains_on_two_ranks(tmp_path):
    """ERPO's stage 3 under 2 ranks: rank 0 samples and pairs (``lcpo_1_pairs``), then every rank
    trains (``lcpo_1``); one stage doing both used to refuse to train under several ranks."""
    import torch.multiprocessing as mp

    mp.spawn(_erpo_worker, args=(str(tmp_path), D.free_port()), nprocs=2, join=True)
    m0, m1 = (json.loads((tmp_path / f"done-{r}").read_text()) for r in (0, 1))
    assert m0 == m1  # rank 1 reads rank 0's marker
    assert m0["pairs"] == 4 and m0["pairs_by_kind"]["decision"] == 4
    assert m0["dpo"]["world_size"] == 2 and m0["dpo"]["steps"] == 2 and m0["dpo"]["relative_param_change"] > 0
    assert (tmp_path / "stages" / "lcpo_1_pairs" / "samples.jsonl").exists()
    assert (tmp_path / "stages" / "lcpo_1" / "model" / "config.json").exists()
    assert not list((tmp_path / "stages").glob("*.partial"))


# ---------------------------------------------------------------- 2-rank runs through the CLI


def run_cli(*args, timeout=420):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(D.CHILD_ENV, None)
    r = subprocess.run([sys.executable, "-m", "reasonalign", *args], capture_output=True, text=True, env=env,
                       timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    return r


def losses(run_dir: Path, stage: str) -> list[float]:
    return [row["loss"] for row in json.loads((run_dir / "stages" / stage / "train_log.json").read_text())
            if "loss" in row]


def stage_metrics(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / "stages" / stage / "stage.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One single-process run (batch 4): the reference losses and the shared data stages."""
    run_dir = tmp_path_factory.mktemp("dist") / "single"
    run_cli(*TINY, f"run_dir={run_dir}", "distributed=none")
    return run_dir


def two_rank_run(single: Path, name: str, *extra: str) -> tuple[Path, subprocess.CompletedProcess]:
    run_dir = single.parent / name
    for s in DATA_STAGES:  # same fingerprints: skipped, so only training and eval run
        shutil.copytree(single / "stages" / s, run_dir / "stages" / s)
    r = run_cli(*TINY, f"run_dir={run_dir}", *TWO_RANKS, *extra)
    return run_dir, r


def check_run(run_dir: Path, r, zero: int) -> None:
    out = r.stdout + r.stderr
    assert out.count("reasonalign: relaunching under torch.distributed.run") == 1  # once, not again
    assert f"report: {(run_dir / 'report.md').resolve()}" in r.stdout
    for stage in ("sft", "dpo"):
        m = stage_metrics(run_dir, stage)
        assert m["world_size"] == 2 and m["zero_stage"] == zero and m["steps"] == 3
    for s in DATA_STAGES:
        assert json.loads((run_dir / "metrics.json").read_text())["stages"][s]["skipped"]
    assert not list((run_dir / "stages").glob("*.partial")) and not list((run_dir / "stages").glob("*.adapter"))
    assert not list((run_dir / "stages" / "dpo" / "trainer").glob("checkpoint-*"))
    assert len(list(run_dir.glob("*.log"))) <= 1  # rank 0's log only


def assert_same_losses(a: Path, b: Path) -> None:
    for stage in ("sft", "dpo"):
        la, lb = losses(a, stage), losses(b, stage)
        assert len(la) == len(lb) == 3, (la, lb)
        assert lb == pytest.approx(la, rel=2e-3, abs=2e-3), (stage, la, lb)


def reload_plain(model_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(model_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    for n, p in model.state_dict().items():
        assert p.numel() > 0 and torch.isfinite(p).all(), n
    return model


def test_zero2_lora_matches_single_process(single):
    run_dir, r = two_rank_run(single, "zero2", "distributed=zero2")
    check_run(run_dir, r, zero=2)
    assert_same_losses(single, run_dir)
    reload_plain(run_dir / "stages" / "dpo" / "model")


def test_zero3_lora_matches_single_process_and_merges(single):
    run_dir, r = two_rank_run(single, "zero3", "distributed=zero3")
    check_run(run_dir, r, zero=3)
    assert_same_losses(single, run_dir)
    reload_plain(run_dir / "stages" / "dpo" / "model")  # LoRA merged into full weights on rank 0


def test_zero3_full_finetune_checkpoint_reloads(single):
    import torch

    run_dir, r = two_rank_run(single, "zero3_full", "distributed=zero3", "trainer.finetune=full")
    check_run(run_dir, r, zero=3)
    assert stage_metrics(run_dir, "dpo")["relative_param_change"] > 0
    trained = reload_plain(run_dir / "stages" / "dpo" / "model")
    start = reload_plain(run_dir / "stages" / "sft" / "model")
    diff = [n for n, p in trained.state_dict().items() if not torch.equal(p, start.state_dict()[n])]
    assert diff  # the gathered 16-bit weights are the trained ones, not the initial shards


def test_ddp_lora_matches_single_process(single):
    run_dir, r = two_rank_run(single, "ddp", "distributed=ddp")
    check_run(run_dir, r, zero=None)
    assert_same_losses(single, run_dir)
    reload_plain(run_dir / "stages" / "dpo" / "model")


def test_zero3_offload_lora_matches_single_process(single):
    """Optimizer states and parameters offloaded to CPU memory (DeepSpeed's CPU Adam)."""
    run_dir, r = two_rank_run(single, "zero3_offload", "distributed=zero3_offload")
    check_run(run_dir, r, zero=3)
    assert_same_losses(single, run_dir)
    reload_plain(run_dir / "stages" / "dpo" / "model")


def test_zero2_full_finetune_checkpoint_reloads(single):
    import torch

    run_dir, r = two_rank_run(single, "zero2_full", "distributed=zero2", "trainer.finetune=full")
    check_run(run_dir, r, zero=2)
    trained = reload_plain(run_dir / "stages" / "dpo" / "model")
    start = reload_plain(run_dir / "stages" / "sft" / "model")
    assert any(not torch.equal(p, start.state_dict()[n]) for n, p in trained.state_dict().items())


def test_hostfile_launches_through_the_deepspeed_runner(single, tmp_path):
    """A one-host hostfile: the DeepSpeed launcher starts both ranks on this machine."""
    hf = tmp_path / "hostfile"
    hf.write_text("localhost slots=2\n")
    run_dir, r = two_rank_run(single, "hostfile", "distributed=zero2", f"distributed.hostfile={hf}",
                              "distributed.ssh_check=false")  # no sshd on a CI machine
    out = r.stdout + r.stderr
    assert out.count("reasonalign: relaunching under deepspeed.launcher.runner") == 1
    for stage in ("sft", "dpo"):
        m = stage_metrics(run_dir, stage)
        assert m["world_size"] == 2 and m["zero_stage"] == 2 and m["steps"] == 3
    assert_same_losses(single, run_dir)


# ----------------------------------------------------------------------- random_init (offline)


def test_random_init_builds_a_target_architecture_offline(tmp_path):
    import dataclasses

    from reasonalign.config import ModelConfig
    from reasonalign.models import ARCHITECTURES, load_model, load_tokenizer, resolve_model_dir

    small = {"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
             "num_key_value_heads": 2}
    cfg = ModelConfig(name="mistral7b", kind="hf", name_or_path="mistralai/Mistral-7B-Instruct-v0.3",
                      random_init=True, config_overrides=small, attn_implementation="eager")
    path = resolve_model_dir(cfg, tmp_path)  # the hub is offline: the tokenizer falls back to SmolLM2's GGUF
    assert Path(path).name.startswith("random-mistral7b-")
    model, tok = load_model(cfg, cache=tmp_path), load_tokenizer(cfg, cache=tmp_path)
    assert model.config.model_type == "mistral" and model.config.num_hidden_layers == 1
    rope = getattr(model.config, "rope_parameters", None) or {"rope_theta": getattr(model.config, "rope_theta", None)}
    assert rope["rope_theta"] == ARCHITECTURES["mistral7b"]["rope_theta"]
    assert model.config._attn_implementation == "eager"  # load_model passes attn_implementation
    assert tok.chat_template and model.config.vocab_size >= len(tok)
    assert resolve_model_dir(dataclasses.replace(cfg), tmp_path) == path  # cached


def test_zero2_interrupted_stage_resumes_from_its_deepspeed_checkpoint(single):
    run_dir = single.parent / "resume"
    for s in DATA_STAGES:
        shutil.copytree(single / "stages" / s, run_dir / "stages" / s)
    args = [*TINY, f"run_dir={run_dir}", *TWO_RANKS, "distributed=zero2", "trainer.save_steps=2", "method.sft_warmup=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REASONALIGN_INTERRUPT_AFTER_SAVE": "2"}
    r = subprocess.run([sys.executable, "-m", "reasonalign", *args], capture_output=True, text=True, env=env,
                       timeout=420)
    assert r.returncode != 0 and "interrupted after saving checkpoint-2" in r.stdout + r.stderr
    ckpt = run_dir / "stages" / "dpo.partial" / "trainer" / "checkpoint-2"
    assert list(ckpt.glob("global_step2/*optim_states.pt"))  # a DeepSpeed ZeRO checkpoint, both ranks' shards
    r = run_cli(*args)
    assert "resuming DPO from" in r.stdout + r.stderr
    m = stage_metrics(run_dir, "dpo")
    assert m["steps"] == 3 and m["zero_stage"] == 2
    # the loss log covers the steps before the checkpoint too (restored with the trainer's state); the
    # tokens counted are the resumed attempt's only: one step's
    rows = [row for row in json.loads((run_dir / "stages/dpo/train_log.json").read_text()) if "loss" in row]
    assert [row["step"] for row in rows] == [1, 2, 3]
    assert m["train_tokens"] == rows[2]["num_tokens"] > 0  # TRL counts the resumed attempt from zero
