"""GPU check: one command, one GPU, about eight minutes (docs/benchmarks.md, "GPU check").

    python benchmarks/gpu_check.py                      # both parts, report in runs/bench/gpu_check
    python benchmarks/gpu_check.py --skip-throughput    # (a) only
    python benchmarks/gpu_check.py --model llama3-8b --rounds 3 --time-budget-s 900

(a) Pipeline: ``python -m reasonalign method=erpo`` and ``method=saro`` end to end on a small random
Llama (``model=tiny-random``, 4 layers, hidden 256, bf16) with the tiny data, trainer and eval
settings; then every ``stages/*/stage.json`` must say the stage ran on ``cuda``, and every stage
that generates must have used vLLM when ``import vllm`` works, else the HF backend.

(b) Throughput: SFT and DPO with LoRA on a random-init 7-8B architecture (``model.random_init``)
under DeepSpeed ZeRO-3, bf16 and gradient checkpointing, through reasonalign's trainer wrappers and
through a plain TRL script, alternating, each run in a fresh process (``benchmarks/throughput.py``).
Reports tokens/s after warm-up steps, peak memory (CUDA max allocated) and model-FLOPs utilisation
(MFU; :func:`training_flops_per_token` holds the formula).

Writes ``--out``: ``report.md`` (naming the GPU and the library versions) and ``results.json``.
Exit status: 0 all checks passed, 1 a check failed, 2 no CUDA GPU (or a bad argument).
Arguments containing ``=`` are extra reasonalign overrides for part (b) (e.g. ``trainer.lora.r=16``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODELS = ("mistral7b", "llama3-8b", "qwen2.5-7b")  # reasonalign/models.py ARCHITECTURES

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, in TFLOP/s, matched in
# order against torch.cuda.get_device_name(); anything else needs --peak-tflops.
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    (r"GH200", 989.0),
    (r"H200 NVL", 835.0),
    (r"H200", 989.0),
    (r"H100 NVL", 835.0),
    (r"H100 PCIe", 756.0),
    (r"H100", 989.0),  # SXM, e.g. "NVIDIA H100 80GB HBM3"
    (r"A100", 312.0),
    (r"L40S", 362.0),
    (r"L40\b", 181.0),
    (r"\bL4\b", 121.0),
    (r"\bA10\b", 125.0),
]

# (a): the small model and settings; both methods finish in a couple of minutes on one GPU
PIPE_MODEL = ["model=tiny-random", "model.tiny_layers=4", "model.tiny_hidden=256", "model.dtype=bfloat16"]
PIPE_COMMON = ["data=tiny", "trainer=tiny", "eval=tiny", "responses.max_new_tokens=12"]
PIPE_METHOD = {
    "erpo": ["method=erpo", "method.lcpo.iterations=1", "method.lcpo.samples_per_prompt=2",
             "method.lcpo.prompts_per_iteration=4", "method.lcpo.max_new_tokens=16",
             "method.evaluate_stage1=false", "method.evaluate_stage2=false"],
    "saro": ["method=saro", "method.rw_samples=3", "method.max_length=null", "method.eval_max_new_tokens=null",
             "method.evaluate_rw=false"],
}
# stages that generate text with a model (base answers, evaluations, ERPO's LCPO samples); any
# other stage that records a generation backend is checked the same way
GENERATING = re.compile(r"^(base_responses|eval_.+|lcpo_\d+_pairs)$")


# ------------------------------------------------------------------------------------ arguments
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*", help="extra reasonalign overrides for part (b)")
    ap.add_argument("--out", default="runs/bench/gpu_check", help="output directory")
    ap.add_argument("--skip-pipeline", action="store_true", help="skip part (a), the erpo/saro runs")
    ap.add_argument("--skip-throughput", action="store_true", help="skip part (b), the 7-8B throughput")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (reasonalign, plain TRL)")
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per training run")
    ap.add_argument("--warmup-steps", type=int, default=2, help="steps left out of tokens/s and MFU")
    ap.add_argument("--batch", type=int, default=4, help="per-device batch (SFT rows, DPO pairs)")
    ap.add_argument("--seq-len", type=int, default=1024, help="max_length; every sequence is filled to it")
    ap.add_argument("--model", default="mistral7b", choices=MODELS, help="random-init architecture for (b)")
    ap.add_argument("--lora-r", type=int, default=64, help="LoRA rank (alpha = 2r) for (b)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the GPU's dense bf16 peak, TFLOP/s (default: looked up from its name)")
    ap.add_argument("--time-budget-s", type=float, default=480.0,
                    help="rounds after the first are skipped when they would end past it")
    a = ap.parse_args(argv)
    if a.skip_pipeline and a.skip_throughput:
        ap.error("--skip-pipeline and --skip-throughput together leave nothing to check")
    if a.rounds < 1 or a.batch < 1 or a.seq_len < 16:
        ap.error("--rounds and --batch must be >= 1, --seq-len >= 16")
    if not 0 < a.warmup_steps < a.steps - 1:
        ap.error(f"--warmup-steps must be >= 1 and leave at least 2 measured steps (--steps {a.steps})")
    return a


def peak_tflops_for(gpu_name: str) -> float | None:
    """The dense bf16 peak of the GPU called ``gpu_name`` (TFLOP/s), or None when unknown."""
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if re.search(pattern, gpu_name, flags=re.IGNORECASE):
            return tflops
    return None


# ------------------------------------------------------------------------------------- the FLOPs
def matmul_params(arch: dict) -> int:
    """Weights that take part in matrix products, per token: every linear layer of every decoder
    layer (q, k, v, o; gate, up, down) plus the LM head. The input embedding (a lookup), norms and
    biases are left out."""
    d, layers, ff, vocab = arch["hidden_size"], arch["num_hidden_layers"], arch["intermediate_size"], arch["vocab_size"]
    heads = arch["num_attention_heads"]
    head_dim = arch.get("head_dim") or d // heads
    q = heads * head_dim
    kv = arch.get("num_key_value_heads", heads) * head_dim
    per_layer = d * q + 2 * d * kv + q * d + 3 * d * ff
    return layers * per_layer + vocab * d


def lora_params(arch: dict, r: int) -> int:
    """LoRA adapter weights (A: r x in, B: out x r) on the seven projections of every layer."""
    d, layers, ff = arch["hidden_size"], arch["num_hidden_layers"], arch["intermediate_size"]
    heads = arch["num_attention_heads"]
    head_dim = arch.get("head_dim") or d // heads
    q, kv = heads * head_dim, arch.get("num_key_value_heads", heads) * head_dim
    shapes = [(d, q), (d, kv), (d, kv), (q, d), (d, ff), (d, ff), (ff, d)]
    return layers * sum(r * (i + o) for i, o in shapes)


def training_flops_per_token(n_params: int, n_layers: int, hidden: int, seq_len: float, *, lora: bool = True,
                             grad_ckpt: bool = True, reference_forward: bool = False, n_adapter: int = 0,
                             n_head: int = 0) -> float:
    """FLOPs one training step spends per token (a multiply-add is 2 FLOPs).

    The convention is PaLM's (Chowdhery et al. 2022, appendix B): full training costs
    ``6N + 12·L·H·T`` per token, where ``N`` = ``n_params`` are the weights in matrix products
    (:func:`matmul_params`: the decoder layers' projections and the LM head), ``L`` the layers,
    ``H`` = ``hidden`` the attention width (query heads x head dim, the hidden size for these models)
    and ``T`` = ``seq_len`` the sequence length. Attention is counted over the whole ``T x T`` score
    matrix (no halving for the causal mask), as PaLM does and as the kernels compute it. The parts:

    * forward: ``2N`` for the weight products + ``4·L·H·T`` for ``QKᵀ`` and ``PV``;
    * backward, input gradients: ``2N`` + ``8·L·H·T`` (attention's backward is twice its forward);
    * backward, weight gradients: ``2N``, **only with full fine-tuning**. With LoRA the base weights
      are frozen and those products are skipped (``lora=True``): ``4N + 12·L·H·T``;
    * LoRA's own adapters (``n_adapter`` weights): ``2`` forward + ``4`` backward per weight;
    * gradient checkpointing (``grad_ckpt=True``) runs the decoder layers' forward once more in the
      backward pass: ``+2(N - n_head) + 4·L·H·T`` (and ``+2`` per adapter weight), where ``n_head``
      are the LM head's weights, which are not recomputed (``n_head=0``: ``+2N``). That is hardware
      work, not model work: PaLM's MFU leaves it out, its HFU counts it;
    * DPO (``reference_forward=True``): the reference model's forward on the same tokens,
      ``+2N + 4·L·H·T`` (no gradient, no recomputation; with LoRA it is the base model with the
      adapter disabled). Not when TRL's ``precompute_ref_log_probs`` computed it before training.

    So LoRA + gradient checkpointing is ``6N + 16·L·H·T`` per token (``8N + 20·L·H·T`` for DPO),
    less ``2·n_head``, plus ``8`` per adapter weight (the reference forward runs without the
    adapter). tests/test_gpu_check.py checks each part against a hand count and against
    ``torch.utils.flop_counter`` on a real 2-layer Llama.
    """
    attn = n_layers * hidden * seq_len
    flops = 2 * n_params + 4 * attn  # forward
    flops += 2 * n_params + 8 * attn  # backward: gradients of the activations
    if not lora:
        flops += 2 * n_params  # backward: gradients of the weights
    flops += 6 * n_adapter
    if grad_ckpt:
        flops += 2 * (n_params - n_head) + 4 * attn + 2 * n_adapter
    if reference_forward:
        flops += 2 * n_params + 4 * attn
    return float(flops)


def utilisation(tokens_per_s: float, flops_per_token: float, peak_tflops: float) -> float:
    """Achieved FLOP/s over the peak FLOP/s (MFU with the model FLOPs, HFU with the hardware FLOPs)."""
    return tokens_per_s * flops_per_token / (peak_tflops * 1e12)


# ----------------------------------------------------------------------------------- stage checks
def expected_backend(vllm_importable: bool) -> str:
    return "vllm" if vllm_importable else "hf"


def check_stage(name: str, record: dict, expect_backend: str) -> list[str]:
    """What is wrong with one stage's ``stage.json`` (empty: it passes)."""
    problems = []
    dev = str(record.get("device") or "")
    if not dev.startswith("cuda"):
        problems.append(f"{name}: ran on {dev or 'an unrecorded device'}, not cuda")
    backends = list(record.get("generation_backends") or [])
    if GENERATING.match(name) and not backends:
        problems.append(f"{name}: generates but recorded no generation backend (expected {expect_backend})")
    elif backends and set(backends) != {expect_backend}:
        problems.append(f"{name}: generated with {', '.join(backends)}, expected {expect_backend}")
    return problems


def check_run(run_dir: Path, expect_backend: str) -> tuple[list[dict], list[str]]:
    """Rows (one per finished stage) and the problems of a run directory's ``stages/*/stage.json``."""
    rows, problems = [], []
    markers = sorted(p for p in Path(run_dir).glob("stages/*/stage.json") if not p.parent.name.endswith(".partial"))
    if not markers:
        return rows, [f"{run_dir}: no finished stage (stages/*/stage.json)"]
    for path in markers:
        rec = json.loads(path.read_text())
        name = rec.get("stage") or path.parent.name
        bad = check_stage(name, rec, expect_backend)
        rows.append({"stage": name, "device": rec.get("device"), "peak_memory_mib": rec.get("peak_memory_mib"),
                     "memory_kind": rec.get("memory_kind"), "generation_backends": rec.get("generation_backends"),
                     "seconds": rec.get("seconds"), "ok": not bad})
        problems += bad
    if not any(GENERATING.match(r["stage"]) for r in rows):
        problems.append(f"{run_dir}: no generation stage finished")
    return rows, problems


# --------------------------------------------------------------------------------------- helpers
def versions() -> dict:
    out = {}
    for dist in ("torch", "transformers", "trl", "peft", "accelerate", "deepspeed", "vllm"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def subprocess_env() -> dict:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def run_pipeline(method: str, out: Path, timeout: float) -> dict:
    run_dir = out / f"pipeline-{method}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a check: every stage runs now, none is reused
    cmd = [sys.executable, "-m", "reasonalign", *PIPE_METHOD[method], *PIPE_MODEL, *PIPE_COMMON,
           f"run_dir={run_dir.resolve()}"]
    t0 = time.time()
    log_file = out / f"pipeline-{method}.log"
    try:
        with open(log_file, "w") as f:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=subprocess_env(), cwd=ROOT,
                                timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    return {"method": method, "command": "python -m reasonalign " + " ".join(cmd[3:]), "run_dir": str(run_dir),
            "returncode": rc, "seconds": round(time.time() - t0, 1), "log": str(log_file)}


def build_random_model(cfg) -> tuple[str, float]:
    """Build (once; cached) the random-init model, its weights drawn on the GPU: seconds, not the
    minutes 7-8B random draws take on a CPU. The weights only have to be random."""
    import torch

    from reasonalign.models import resolve_model_dir

    t0 = time.time()
    with torch.device("cuda"):
        path = resolve_model_dir(cfg.model)
    torch.cuda.empty_cache()
    return path, time.time() - t0


def throughput_overrides(a: argparse.Namespace) -> list[str]:
    b, s = a.batch, a.seq_len
    return [f"model={a.model}", "model.random_init=true", "model.dtype=bfloat16", "trainer=default",
            "trainer.bf16=true", f"trainer.lora.r={a.lora_r}", f"trainer.lora.alpha={2 * a.lora_r}",
            "trainer.save=adapter", "distributed=zero3",
            *(f"trainer.{k}.{key}={v}" for k in ("sft", "dpo")
              for key, v in (("per_device_train_batch_size", b), ("max_length", s), ("gradient_checkpointing", "true"))),
            *a.overrides]


def throughput_part(a: argparse.Namespace, out: Path, deadline: float, peak: float,
                    log) -> tuple[dict, list[str], list[str]]:
    """Part (b): the results, the notes (rounds skipped) and the problems (a side not under ZeRO-3)."""
    import tempfile

    sys.path.insert(0, str(HERE))
    import throughput as tp

    overrides = throughput_overrides(a)
    cfg = tp.load_config(overrides)
    model_dir, build_s = build_random_model(cfg)
    log(f"(b) random-init {a.model} at {model_dir} ({build_s:.0f} s)")
    arch = json.loads((Path(model_dir) / "config.json").read_text())
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-", dir=out))
    data = tp.write_rows(cfg, a.steps * a.batch, tmp, fill_tokens=a.seq_len)
    train, notes = tp.train_rounds(cfg, overrides, ["sft", "dpo"], data, tmp, a.steps, a.rounds, a.warmup_steps,
                                   deadline, log=log)
    n, n_adapter = matmul_params(arch), lora_params(arch, a.lora_r)
    problems = []
    for kind, s in train.items():
        seqs = a.steps * a.batch * (2 if kind == "dpo" else 1)
        for side in ("reasonalign", "trl"):
            runs = [r[side] for r in s["rounds"]]
            if any(r.get("zero_stage") != 3 for r in runs):
                problems.append(f"{kind} {side}: did not train under ZeRO-3 ({[r.get('zero_stage') for r in runs]})")
            tokens = statistics.median(r["train_tokens"] for r in runs)
            seq = tokens / seqs  # mean tokens per sequence; every sequence is filled to --seq-len
            common = dict(n_params=n, n_layers=arch["num_hidden_layers"],
                          hidden=arch["num_attention_heads"] * (arch.get("head_dim") or
                                                                arch["hidden_size"] // arch["num_attention_heads"]),
                          seq_len=seq, lora=True, reference_forward=kind == "dpo", n_adapter=n_adapter,
                          n_head=arch["vocab_size"] * arch["hidden_size"])
            model_f = training_flops_per_token(**common, grad_ckpt=False)
            hw_f = training_flops_per_token(**common, grad_ckpt=True)
            tps = s[side]["steady_tokens_per_s"]
            s[side].update(mean_seq_len=seq, model_flops_per_token=model_f, hardware_flops_per_token=hw_f,
                           model_tflops_per_s=tps * model_f / 1e12 if tps else None,
                           mfu=utilisation(tps, model_f, peak) if tps else None,
                           hfu=utilisation(tps, hw_f, peak) if tps else None)
    info = {"model": a.model, "model_dir": model_dir, "build_s": round(build_s, 1), "arch": arch,
            "matmul_params": n, "lora_params": n_adapter, "overrides": overrides, "train": train}
    return info, notes, problems


# ---------------------------------------------------------------------------------------- report
def report(res: dict) -> str:
    m = res["machine"]
    v = ", ".join(f"{k} {ver}" for k, ver in m["versions"].items() if ver) + (
        "" if m["versions"].get("vllm") else "; vLLM not installed")
    lines = ["# GPU check", "", f"GPU: **{m['gpu']}** (peak {res['peak_tflops']:g} dense bf16 TFLOP/s, "
             f"{res['peak_source']}). {v}.", "", f"Command: `python benchmarks/gpu_check.py {res['argv']}`", "",
             f"Result: **{'all checks passed' if res['ok'] else 'FAILED'}** in {res['seconds']:.0f} s "
             f"(budget {res['budget_s']:.0f} s)."]
    if res.get("problems"):
        lines += ["", *[f"* {p}" for p in res["problems"]]]
    pipe = res.get("pipeline")
    if pipe:
        lines += ["", f"## (a) Pipeline on one GPU (expected generation backend: {pipe['expect_backend']})", "",
                  "| run | stage | device | peak MiB | memory kind | backends | seconds | check |",
                  "|---|---|---|---|---|---|---|---|"]
        for run in pipe["runs"]:
            lines.append(f"| {run['method']} | (whole run, exit {run['returncode']}) | | | | | {run['seconds']} | |")
            for r in run.get("stages", []):
                lines.append(f"| {run['method']} | {r['stage']} | {r['device']} | {r['peak_memory_mib']} | "
                             f"{r['memory_kind']} | {', '.join(r['generation_backends'] or []) or '–'} | "
                             f"{r['seconds']} | {'ok' if r['ok'] else 'FAIL'} |")
    tp = res.get("throughput")
    if tp:
        c = res["config"]
        lines += ["", f"## (b) LoRA throughput, random-init {tp['model']} (ZeRO-3, bf16, gradient checkpointing)", "",
                  f"N = {tp['matmul_params'] / 1e9:.3f}e9 weights in matrix products, {tp['arch']['num_hidden_layers']} "
                  f"layers, LoRA r={c['lora_r']} ({tp['lora_params'] / 1e6:.1f}M adapter weights), batch {c['batch']}, "
                  f"sequences of {c['seq_len']} tokens, {c['steps']} steps per run of which the first "
                  f"{c['warmup_steps']} are left out of tokens/s; medians over the rounds run. Model random init: "
                  f"{tp['build_s']} s.", "",
                  "| work | side | tokens/s | peak MiB (CUDA max allocated) | model TFLOP/s | MFU | HFU | "
                  "tokens/s ratio ra/TRL (median, min–max) |", "|---|---|---|---|---|---|---|---|"]
        for kind, s in tp["train"].items():
            q = s.get("steady_tokens_per_s_ratio")
            for side in ("reasonalign", "trl"):
                x = s[side]
                ratio = f"{q['median']:.3f} ({q['min']:.3f}–{q['max']:.3f})" if q and side == "reasonalign" else ""
                lines.append(f"| {kind} | {'reasonalign' if side == 'reasonalign' else 'plain TRL'} | "
                             f"{_f(x['steady_tokens_per_s'], '.0f')} | {_f(x.get('peak_gpu_mib'), '.0f')} | "
                             f"{_f(x.get('model_tflops_per_s'), '.1f')} | {_f(x.get('mfu'), '.1%')} | "
                             f"{_f(x.get('hfu'), '.1%')} | {ratio} |")
            lines.append(f"| {kind} | rounds run | {len(s['rounds'])} | | | | | |")
        lines += ["", "MFU counts the model's FLOPs per token (LoRA: no weight gradients of the frozen base; DPO: "
                  "the reference forward too), HFU adds gradient checkpointing's recomputed forward "
                  "(`training_flops_per_token` in benchmarks/gpu_check.py)."]
    if res.get("notes"):
        lines += ["", "Notes:", "", *[f"* {n}" for n in res["notes"]]]
    return "\n".join(lines) + "\n"


def _f(x, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    t0 = time.time()
    deadline = t0 + a.time_budget_s
    sys.path.insert(0, str(ROOT))
    from reasonalign import device as D

    if not D.cuda_available():
        print("gpu_check: no CUDA GPU visible to torch (a CPU build of torch, or CUDA_VISIBLE_DEVICES hides it); "
              "this check needs one GPU", file=sys.stderr)
        return 2
    import torch

    gpu = torch.cuda.get_device_name(0)
    peak, source = a.peak_tflops, "--peak-tflops"
    if peak is None and not a.skip_throughput:
        peak, source = peak_tflops_for(gpu), "NVIDIA data sheet"
        if peak is None:
            print(f"gpu_check: no bf16 peak known for {gpu!r}; pass --peak-tflops", file=sys.stderr)
            return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:6.0f}s] {msg}", flush=True)

    res: dict = {"argv": " ".join(sys.argv[1:] if argv is None else argv), "budget_s": a.time_budget_s,
                 "peak_tflops": peak or 0.0, "peak_source": source if peak else "not needed",
                 "machine": {"gpu": gpu, "gpus": torch.cuda.device_count(), "cuda": torch.version.cuda,
                             "versions": versions()},
                 "config": {"rounds": a.rounds, "steps": a.steps, "warmup_steps": a.warmup_steps, "batch": a.batch,
                            "seq_len": a.seq_len, "model": a.model, "lora_r": a.lora_r},
                 "problems": [], "notes": []}
    if not a.skip_pipeline:
        expect = expected_backend(D.vllm_importable())
        res["pipeline"] = {"expect_backend": expect, "runs": []}
        for method in ("erpo", "saro"):
            log(f"(a) method={method} on {gpu}")
            run = run_pipeline(method, out, timeout=max(120.0, a.time_budget_s))
            if run["returncode"] != 0:
                res["problems"].append(f"method={method} exited {run['returncode']} (log: {run['log']})")
            run["stages"], problems = check_run(Path(run["run_dir"]), expect)
            res["problems"] += problems
            res["pipeline"]["runs"].append(run)
            log(f"(a) method={method}: exit {run['returncode']}, {len(run['stages'])} stages, {len(problems)} problems")
    if not a.skip_throughput:
        log(f"(b) SFT/DPO LoRA throughput, random-init {a.model}, ZeRO-3, bf16, gradient checkpointing")
        try:
            res["throughput"], notes, problems = throughput_part(a, out, deadline, peak, log)
        except (Exception, SystemExit) as e:  # a failed worker (its output went to stderr): still report
            notes, problems = [], [f"(b) failed: {type(e).__name__}: {e}"]
        res["notes"] += notes
        res["problems"] += problems
    res["seconds"] = time.time() - t0
    if res["seconds"] > a.time_budget_s:
        res["notes"].append(f"took {res['seconds']:.0f} s, over the {a.time_budget_s:.0f} s budget")
    res["ok"] = not res["problems"]
    (out / "results.json").write_text(json.dumps(res, indent=2, default=str))
    (out / "report.md").write_text(report(res))
    print((out / "report.md").read_text())
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
