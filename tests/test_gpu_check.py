"""benchmarks/gpu_check.py without a GPU: its arguments, the FLOPs formula (against a hand count and
against torch's FLOP counter on a real 2-layer Llama), MFU arithmetic, the peak lookup, the
stage.json checks, the report's wiring, and the exit status 2 on a machine without CUDA."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check as G  # noqa: E402
import throughput as TP  # noqa: E402

# a 2-layer Llama, hidden 64, 4 query heads of 16 (attention width 64), 2 KV heads (width 32),
# MLP 128, vocabulary 1000, untied LM head
ARCH = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 128, "vocab_size": 1000}
# by hand, per layer: q 64*64 = 4096, k 64*32 = 2048, v 2048, o 4096, gate/up/down 64*128 = 8192 each
# -> 4096 + 2048 + 2048 + 4096 + 3 * 8192 = 36864; two layers 73728; LM head 1000*64 = 64000
N = 137_728
HEAD = 64_000
# LoRA r=8, r*(in+out): q 8*128 = 1024, k 8*96 = 768, v 768, o 1024, gate/up/down 8*192 = 1536 each
# -> 8192 per layer, 16384 for two
ADAPTER = 16_384
T = 128  # tokens per sequence; L*H*T = 2 * 64 * 128 = 16384


# ------------------------------------------------------------------------------------ arguments
def test_defaults():
    a = G.parse_args([])
    assert a.out == "runs/bench/gpu_check" and a.rounds == 2 and a.time_budget_s == 480
    assert a.model == "mistral7b" and a.peak_tflops is None and a.lora_r == 64
    assert (a.steps, a.warmup_steps, a.batch, a.seq_len) == (8, 2, 4, 1024)
    assert not a.skip_pipeline and not a.skip_throughput and a.overrides == []


def test_flags_and_overrides():
    a = G.parse_args(["--skip-pipeline", "--rounds", "3", "--steps", "12", "--batch", "2", "--seq-len", "2048",
                      "--model", "llama3-8b", "--peak-tflops", "500", "--time-budget-s", "900", "--out", "x",
                      "trainer.lora.r=16"])
    assert a.skip_pipeline and not a.skip_throughput and a.rounds == 3 and a.steps == 12 and a.batch == 2
    assert a.seq_len == 2048 and a.model == "llama3-8b" and a.peak_tflops == 500 and a.time_budget_s == 900
    assert a.out == "x" and a.overrides == ["trainer.lora.r=16"]
    assert G.parse_args(["--model", "qwen2.5-7b", "--skip-throughput"]).model == "qwen2.5-7b"


@pytest.mark.parametrize("argv", [["--model", "gpt2"], ["--skip-pipeline", "--skip-throughput"], ["--rounds", "0"],
                                  ["--steps", "3", "--warmup-steps", "2"], ["--warmup-steps", "0"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        G.parse_args(argv)
    assert e.value.code == 2 and "error" in capsys.readouterr().err


def test_part_b_overrides_compose_to_zero3_bf16_and_gradient_checkpointing():
    """Every override part (b) passes is a real config key (Hydra rejects typos)."""
    from reasonalign.distributed import deepspeed_config

    cfg = TP.load_config(G.throughput_overrides(G.parse_args(["--lora-r", "32", "--seq-len", "512"])))
    assert cfg.model.name == "mistral7b" and cfg.model.random_init and cfg.model.dtype == "bfloat16"
    assert cfg.trainer.bf16 is True and cfg.trainer.finetune == "lora" and cfg.trainer.save == "adapter"
    assert (cfg.trainer.lora.r, cfg.trainer.lora.alpha) == (32, 64)
    for s in (cfg.trainer.sft, cfg.trainer.dpo):
        assert s.gradient_checkpointing is True and s.max_length == 512 and s.per_device_train_batch_size == 4
    assert deepspeed_config(cfg.distributed, cuda=True)["zero_optimization"]["stage"] == 3


STAGES = {  # what part (a) runs: the generating stages (GENERATING) must record a backend
    "erpo": ["prompts", "base_responses", "erpo_data", "sft", "dpo", "lcpo_1_pairs", "lcpo_1", "eval_base",
             "eval_final"],
    "saro": ["prompts", "base_responses", "saro_data", "rw_sft", "srpo_pairs", "srpo", "eval_base", "eval_final",
             "analysis_base", "analysis_final"],
}


@pytest.mark.parametrize("method", ["erpo", "saro"])
def test_part_a_runs_every_stage_but_the_intermediate_evaluations(method):
    """Part (a)'s overrides are real keys (the method builds its stages from them) on a small Llama."""
    from hydra import compose, initialize_config_dir

    from reasonalign.cli import build_method, conf_dir
    from reasonalign.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[*G.PIPE_METHOD[method], *G.PIPE_MODEL, *G.PIPE_COMMON])
    names = [st.name for st in build_method(cfg).stages()]
    assert sorted(names) == sorted(STAGES[method])
    assert {n for n in names if G.GENERATING.match(n)} == {"base_responses", "eval_base", "eval_final"} | (
        {"lcpo_1_pairs"} if method == "erpo" else set())
    assert cfg.model.kind == "tiny_random" and (cfg.model.tiny_layers, cfg.model.tiny_hidden) == (4, 256)
    assert cfg.model.dtype == "bfloat16" and cfg.trainer.name == "tiny"
    assert cfg.device == "auto"  # the check is that auto picks the GPU


# ------------------------------------------------------------------------------------ the FLOPs
def test_parameter_counts_by_hand_and_in_a_real_model():
    from peft import LoraConfig, get_peft_model
    from torch import nn
    from transformers import LlamaConfig, LlamaForCausalLM

    assert G.matmul_params(ARCH) == N and G.lora_params(ARCH, 8) == ADAPTER
    model = LlamaForCausalLM(LlamaConfig(**ARCH, tie_word_embeddings=False))
    assert sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear)) == N
    lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, task_type="CAUSAL_LM", target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    assert sum(p.numel() for p in lora.parameters() if p.requires_grad) == ADAPTER


def test_flops_formula_against_a_hand_count():
    f = G.training_flops_per_token
    # full training, no recomputation (PaLM): 6N + 12LHT = 826368 + 196608
    assert f(N, 2, 64, T, lora=False, grad_ckpt=False) == 1_022_976
    # LoRA, frozen base: 4N + 12LHT = 550912 + 196608
    assert f(N, 2, 64, T, lora=True, grad_ckpt=False) == 747_520
    # LoRA + gradient checkpointing: 6N + 16LHT = 826368 + 262144
    assert f(N, 2, 64, T) == 1_088_512
    # ... the LM head not recomputed: - 2 * 64000
    assert f(N, 2, 64, T, n_head=HEAD) == 960_512
    # ... adapters: + 8 * 16384 = 131072
    assert f(N, 2, 64, T, n_adapter=ADAPTER) == 1_219_584
    # DPO: the reference forward, + 2N + 4LHT = 275456 + 65536 -> 8N + 20LHT
    assert f(N, 2, 64, T, reference_forward=True) == 1_429_504
    # full training with recomputation: 8N + 16LHT = 1101824 + 262144
    assert f(N, 2, 64, T, lora=False) == 1_363_968
    # the attention term grows with the sequence: T = 256 adds 16 * 2 * 64 * 128 per token (LoRA + GC)
    assert f(N, 2, 64, 256) - f(N, 2, 64, T) == 262_144


def test_flops_formula_against_torch_flop_counter():
    """torch.utils.flop_counter counts every matrix product (and attention's) a real step runs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(**ARCH, tie_word_embeddings=False, attn_implementation="eager")
    x = torch.randint(0, 1000, (2, T))

    def per_token(fn):
        with FlopCounterMode(display=False) as fc:
            fn()
        return fc.get_total_flops() / x.numel()

    f = G.training_flops_per_token
    model = LlamaForCausalLM(cfg)
    forward = per_token(lambda: model(x))
    assert forward == 2 * N + 4 * 2 * 64 * T  # the DPO reference's share
    assert f(N, 2, 64, T, reference_forward=True) - f(N, 2, 64, T) == forward
    assert per_token(lambda: model(x, labels=x).loss.backward()) == f(N, 2, 64, T, lora=False, grad_ckpt=False)
    lora = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=8, lora_alpha=16, task_type="CAUSAL_LM", target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    lora.enable_input_require_grads()  # as TRL does with gradient checkpointing: every layer's backward runs
    assert per_token(lambda: lora(input_ids=x, labels=x).loss.backward()) == \
        f(N, 2, 64, T, grad_ckpt=False, n_adapter=ADAPTER)
    lora.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora.train()
    measured = per_token(lambda: lora(input_ids=x, labels=x).loss.backward())
    expected = f(N, 2, 64, T, n_adapter=ADAPTER, n_head=HEAD)
    # PyTorch's non-reentrant checkpoint stops recomputing once it has what the backward needs
    # (here the last LoRA B product of each layer, 2 * 2 * 512 per token)
    assert expected - 2048 <= measured <= expected
    assert abs(measured - expected) / expected < 0.005


def test_mfu_arithmetic():
    # 1000 tokens/s x 6e9 FLOPs per token = 6e12 FLOP/s, of a 989 TFLOP/s peak
    assert G.utilisation(1000, 6e9, 989) == pytest.approx(6 / 989)
    # 5000 tokens/s x 4.5e10 = 2.25e14 FLOP/s, of 312 TFLOP/s: 72.1%
    assert G.utilisation(5000, 4.5e10, 312) == pytest.approx(0.72115, abs=1e-5)


@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.0), ("NVIDIA H200 NVL", 835.0), ("NVIDIA GH200 480GB", 989.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A100 80GB PCIe", 312.0), ("NVIDIA L40S", 362.0),
    ("NVIDIA L40", 181.0), ("NVIDIA L4", 121.0), ("NVIDIA A10", 125.0),
    ("NVIDIA A10G", None), ("NVIDIA GeForce RTX 4090", None), ("Tesla V100-SXM2-16GB", None),
])
def test_peak_lookup_by_gpu_name(name, tflops):
    assert G.peak_tflops_for(name) == tflops


def test_steady_tokens_per_s_leaves_out_the_warm_up():
    marks = [(10.0, 1, 100), (12.0, 2, 200), (13.0, 3, 300), (14.0, 4, 400)]
    assert TP.steady_rate(marks, 2) == pytest.approx(200 / 2)  # steps 3 and 4: 200 tokens in 2 s
    assert TP.steady_rate(marks, 1) == pytest.approx(300 / 4)
    assert TP.steady_rate(marks, 0) is None and TP.steady_rate(marks, 4) is None


# ----------------------------------------------------------------------------------- stage checks
def write_stage(run_dir: Path, name: str, device: str, backends: list[str], partial: bool = False) -> None:
    d = run_dir / "stages" / (name + (".partial" if partial else ""))
    d.mkdir(parents=True)
    (d / "stage.json").write_text(json.dumps({"stage": name, "seconds": 1.5, "device": device,
                                              "peak_memory_mib": 100.0, "memory_kind": "cuda_max_allocated",
                                              "generation_backends": backends, "metrics": {}}))


def test_a_cuda_stage_passes_and_a_cpu_stage_fails(tmp_path):
    assert G.check_stage("sft", {"device": "cuda:0", "generation_backends": []}, "hf") == []
    assert G.check_stage("sft", {"device": "cpu", "generation_backends": []}, "hf") == ["sft: ran on cpu, not cuda"]
    assert G.check_stage("prompts", {}, "hf") == ["prompts: ran on an unrecorded device, not cuda"]
    write_stage(tmp_path, "prompts", "cuda:0", [])
    write_stage(tmp_path, "base_responses", "cuda:0", ["hf"])
    write_stage(tmp_path, "sft", "cuda:0", [])
    rows, problems = G.check_run(tmp_path, "hf")
    assert problems == [] and [r["stage"] for r in rows] == ["base_responses", "prompts", "sft"]
    assert all(r["ok"] for r in rows)
    write_stage(tmp_path, "dpo", "cpu", [])
    write_stage(tmp_path, "eval_final", "cpu", ["vllm"], partial=True)  # unfinished: not read
    rows, problems = G.check_run(tmp_path, "hf")
    assert problems == ["dpo: ran on cpu, not cuda"] and [r["ok"] for r in rows] == [True, False, True, True]


def test_generation_stages_must_use_vllm_when_it_is_importable(tmp_path):
    assert G.expected_backend(True) == "vllm" and G.expected_backend(False) == "hf"
    write_stage(tmp_path, "base_responses", "cuda:0", ["hf"])
    write_stage(tmp_path, "eval_base", "cuda:0", ["vllm"])
    write_stage(tmp_path, "lcpo_1_pairs", "cuda:0", [])
    write_stage(tmp_path, "sft", "cuda:0", ["hf"])  # not a generation stage by name, but it generated
    _, problems = G.check_run(tmp_path, "vllm")
    assert problems == ["base_responses: generated with hf, expected vllm",
                        "lcpo_1_pairs: generates but recorded no generation backend (expected vllm)",
                        "sft: generated with hf, expected vllm"]
    _, problems = G.check_run(tmp_path, "hf")
    assert "eval_base: generated with vllm, expected hf" in problems


def test_a_run_without_stages_or_generation_fails(tmp_path):
    assert G.check_run(tmp_path, "hf")[1] == [f"{tmp_path}: no finished stage (stages/*/stage.json)"]
    write_stage(tmp_path, "sft", "cuda:0", [])
    assert G.check_run(tmp_path, "hf")[1] == [f"{tmp_path}: no generation stage finished"]


# --------------------------------------------------------------------------------- main, faked GPU
def fake_gpu(monkeypatch, vllm: bool):
    import torch

    from reasonalign import device as D

    monkeypatch.setattr(D, "cuda_available", lambda: True)
    monkeypatch.setattr(D, "vllm_importable", lambda: vllm)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def fake_pipeline(backend: str):
    def run(method, out, timeout):
        run_dir = out / f"pipeline-{method}"
        shutil.rmtree(run_dir, ignore_errors=True)  # as the real one: a fresh run
        for name, backends in (("prompts", []), ("base_responses", [backend]), ("sft", []), ("eval_final", [backend])):
            write_stage(run_dir, name, "cuda:0", backends)
        return {"method": method, "command": "python -m reasonalign ...", "run_dir": str(run_dir), "returncode": 0,
                "seconds": 12.0, "log": str(out / f"pipeline-{method}.log")}
    return run


def test_main_checks_both_methods_and_writes_the_report(tmp_path, monkeypatch):
    fake_gpu(monkeypatch, vllm=True)
    monkeypatch.setattr(G, "run_pipeline", fake_pipeline("vllm"))
    assert G.main(["--skip-throughput", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["ok"] and res["pipeline"]["expect_backend"] == "vllm"
    assert [r["method"] for r in res["pipeline"]["runs"]] == ["erpo", "saro"]
    report = (tmp_path / "report.md").read_text()
    assert "GPU: **NVIDIA H200**" in report and "| erpo | eval_final | cuda:0 | 100.0 | cuda_max_allocated | vllm |" \
        in report and "all checks passed" in report
    # the same stages when vLLM is not installed: the check expects hf and fails
    fake_gpu(monkeypatch, vllm=False)
    assert G.main(["--skip-throughput", "--out", str(tmp_path)]) == 1
    res = json.loads((tmp_path / "results.json").read_text())
    assert "base_responses: generated with vllm, expected hf" in res["problems"]
    assert "FAILED" in (tmp_path / "report.md").read_text()


def test_throughput_part_computes_mfu_from_the_measured_rounds(tmp_path, monkeypatch):
    """Part (b)'s bookkeeping with the training runs faked: tokens per sequence from the measured
    tokens (DPO: two sequences a pair), MFU and HFU from the formula and the peak."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(ARCH))
    monkeypatch.setattr(G, "build_random_model", lambda cfg: (str(model_dir), 1.0))
    a = G.parse_args(["--skip-pipeline", "--steps", "4", "--warmup-steps", "1", "--batch", "2", "--seq-len", "128",
                      "--lora-r", "8"])

    def fake_rounds(cfg, overrides, kinds, data, tmp, steps, rounds, warmup, deadline, log):
        out = {}
        for kind in kinds:
            seqs = 4 * 2 * (2 if kind == "dpo" else 1)
            side = {"train_tokens": seqs * T, "zero_stage": 3, "steady_tokens_per_s": 1000.0}
            out[kind] = TP.summarize([{"reasonalign": dict(side, tokens_per_s=900.0, peak_gpu_mib=10.0),
                                       "trl": dict(side, tokens_per_s=950.0, peak_gpu_mib=10.0)}])
        return out, []

    monkeypatch.setattr(TP, "train_rounds", fake_rounds)
    info, notes, problems = G.throughput_part(a, tmp_path, deadline=0.0, peak=100.0, log=print)
    assert problems == [] and info["matmul_params"] == N and info["lora_params"] == ADAPTER
    sft, dpo = info["train"]["sft"]["reasonalign"], info["train"]["dpo"]["trl"]
    assert sft["mean_seq_len"] == dpo["mean_seq_len"] == T
    # SFT model FLOPs per token: 4N + 12LHT + 6A = 550912 + 196608 + 98304 = 845824
    assert sft["model_flops_per_token"] == 845_824 and sft["mfu"] == pytest.approx(1000 * 845_824 / 100e12)
    # HFU adds the recomputed decoder layers: + 2(N - head) + 4LHT + 2A = 147456 + 65536 + 32768
    assert sft["hardware_flops_per_token"] == 1_091_584
    # DPO adds the reference forward: + 2N + 4LHT = 275456 + 65536
    assert dpo["model_flops_per_token"] == 1_186_816 and dpo["hfu"] == pytest.approx(1000 * 1_432_576 / 100e12)


def test_without_cuda_the_script_exits_2_with_one_line():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", "/nonexistent/never"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("gpu_check: no CUDA GPU visible to torch")
    assert r.stdout == ""


def test_a_failed_throughput_worker_still_writes_the_report(tmp_path, monkeypatch):
    fake_gpu(monkeypatch, vllm=False)

    def fail(*args, **kw):
        raise SystemExit("benchmark worker failed (1): python plain_trl.py sft ...")

    monkeypatch.setattr(G, "throughput_part", fail)
    assert G.main(["--skip-pipeline", "--out", str(tmp_path)]) == 1
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["problems"] == ["(b) failed: SystemExit: benchmark worker failed (1): python plain_trl.py sft ..."]
    assert res["peak_tflops"] == 989.0 and "FAILED" in (tmp_path / "report.md").read_text()
