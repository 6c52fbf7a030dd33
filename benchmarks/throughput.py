"""Training and generation throughput: reasonalign against plain TRL (issue #7, docs/benchmarks.md).

    python benchmarks/throughput.py                       # embedded default, CPU: 3 rounds
    python benchmarks/throughput.py model=tiny-random --steps 2 --repeats 1   # smoke run
    python benchmarks/throughput.py model=mistral7b model.random_init=true --batch 4  # a GPU

Arguments that contain ``=`` are reasonalign config overrides (model, trainer...). The same SFT
and DPO work (same model, rows, batch, steps, sequence length, LoRA, precision) runs through
reasonalign's trainer wrappers (``components/sft.py``, ``components/dpo.py``) and through
``benchmarks/plain_trl.py``, a minimal TRL script, alternately, each in a fresh process (so peak
memory is that run's own). Reported per kind: training-loop tokens/s (TRL's ``num_tokens`` over
``train_runtime``), peak memory (RSS on CPU, ``torch.cuda.max_memory_allocated`` on a GPU),
their reasonalign/TRL ratios (median over rounds) and the end-to-end wall time (reasonalign's also
snapshots the trainable weights and saves the merged model). Then generation: the same prompts
batched (``eval.generation.batch_size``) against one prompt at a time, generated tokens/s.

Writes ``--out`` (default ``runs/bench/throughput``): ``results.json`` and ``report.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load_config(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from reasonalign.cli import conf_dir, register_configs
    from reasonalign.config import Config

    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), cfg))


def make_rows(cfg, n: int) -> tuple[list[dict], list[dict]]:
    """SFT records and DPO pairs over the configured training prompts (deterministic)."""
    from reasonalign.components.pairs import refusal_text
    from reasonalign.data.prompts import build_prompt_sets
    from reasonalign.models import chat_messages
    from reasonalign.paths import cache_dir

    train, _, _ = build_prompt_sets(cfg.data, cache_dir())
    helpful = ("Here is a clear, step-by-step answer. First, consider what you want to achieve and the "
               "constraints you have. Second, break the task into small parts and handle each in turn. "
               "Third, check the result against your goal and adjust where needed. ")
    sft, dpo = [], []
    for i in range(n):
        r = train[i % len(train)]
        prompt = chat_messages(cfg.model, r.text)
        refusal = refusal_text(r.id, None)
        good = refusal if r.label == "harmful" else helpful * 2
        bad = helpful * 2 if r.label == "harmful" else refusal
        sft.append({"prompt": prompt, "completion": [{"role": "assistant", "content": good}]})
        dpo.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": good}],
                    "rejected": [{"role": "assistant", "content": bad}]})
    return sft, dpo


# ------------------------------------------------------------------------------------- workers
def worker_reasonalign(kind: str, overrides: list[str], data: str, out: str, steps: int) -> None:
    from dataclasses import replace

    from reasonalign.models import resolve_model_dir

    cfg = load_config(overrides)
    t0 = time.time()
    rows = [json.loads(line) for line in open(data)]
    tc = cfg.trainer
    settings = replace(getattr(tc, kind), max_steps=steps, logging_steps=1)
    tc = replace(tc, save_steps=10**9, **{kind: settings})
    model_dir = resolve_model_dir(cfg.model)
    work = Path(tempfile.mkdtemp(prefix=f"bench-ra-{kind}-"))
    if kind == "sft":
        from reasonalign.components.sft import train_sft as train
    else:
        from reasonalign.components.dpo import train_dpo as train
    m = train(model_dir, rows, work, cfg.model, tc)
    import torch

    json.dump({"train_runtime": m["train_runtime"], "train_tokens": m["train_tokens"], "steps": m["steps"],
               "wall_s": time.time() - t0, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None},
              open(out, "w"))


def worker_generation(overrides: list[str], out: str, n: int, max_new_tokens: int) -> None:
    from dataclasses import replace

    import torch

    from reasonalign.components.generation import GenerationStats, generate
    from reasonalign.data.prompts import build_prompt_sets
    from reasonalign.models import chat_messages, load_model, load_tokenizer, resolve_model_dir
    from reasonalign.paths import cache_dir

    cfg = load_config(overrides)
    path = resolve_model_dir(cfg.model)
    model, tok = load_model(cfg.model, path), load_tokenizer(cfg.model, path)
    _, evals, _ = build_prompt_sets(cfg.data, cache_dir())
    prompts = [chat_messages(cfg.model, r.text) for r in evals[:n]]
    res = {}
    for label, bs in (("batched", cfg.eval.generation.batch_size), ("one_at_a_time", 1)):
        settings = replace(cfg.eval.generation, batch_size=bs, max_new_tokens=max_new_tokens, do_sample=False)
        stats = GenerationStats()
        torch.manual_seed(0)
        t0 = time.time()
        generate(model, tok, prompts, settings, desc=f"generation {label}", stats=stats)
        dt = time.time() - t0
        res[label] = {"batch_size": bs, "prompts": len(prompts), "seconds": round(dt, 2),
                      "generated_tokens": stats.n_new_tokens, "tokens_per_s": round(stats.n_new_tokens / dt, 2)}
    json.dump(res, open(out, "w"))


# ------------------------------------------------------------------------------------- driver
def run_worker(cmd: list[str], out: Path) -> dict:
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not out.is_file():
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"benchmark worker failed ({proc.returncode}): {' '.join(cmd)}")
    res = json.loads(out.read_text())
    res["process_s"] = round(time.time() - t0, 2)
    res["tokens_per_s"] = res["train_tokens"] / res["train_runtime"] if res.get("train_tokens") else None
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*", help="reasonalign config overrides, e.g. model=tiny-random")
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps per training run")
    ap.add_argument("--repeats", type=int, default=3, help="alternating rounds (reasonalign, TRL)")
    ap.add_argument("--rows", type=int, default=64, help="training rows")
    ap.add_argument("--kinds", default="sft,dpo,gen", help="comma-separated: sft, dpo, gen")
    ap.add_argument("--gen-prompts", type=int, default=32)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--out", default="runs/bench/throughput")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker == "gen":
        return worker_generation(a.overrides, a.result, a.gen_prompts, a.gen_tokens)
    if a.worker:
        return worker_reasonalign(a.worker, a.overrides, a.data, a.result, a.steps)

    from reasonalign.models import resolve_model_dir

    cfg = load_config(a.overrides)
    kinds = a.kinds.split(",")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = resolve_model_dir(cfg.model)
    sft_rows, dpo_rows = make_rows(cfg, a.rows)
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    data = {"sft": tmp / "sft.jsonl", "dpo": tmp / "dpo.jsonl"}
    for k, rows in (("sft", sft_rows), ("dpo", dpo_rows)):
        data[k].write_text("".join(json.dumps(r) + "\n" for r in rows))
    tc = cfg.trainer
    if tc.finetune != "lora":
        raise SystemExit("the plain-TRL side is LoRA only: use trainer=default (finetune: lora)")
    bf16 = bool(tc.bf16) if tc.bf16 is not None else False
    results: dict = {"config": {"model": cfg.model.name, "steps": a.steps, "rows": a.rows, "repeats": a.repeats,
                                "overrides": a.overrides, "bf16": bf16, "lora_r": tc.lora.r},
                     "machine": machine(), "train": {}}
    for kind in [k for k in kinds if k in ("sft", "dpo")]:
        s = getattr(tc, kind)
        plain = [sys.executable, str(HERE / "plain_trl.py"), kind, model_dir, str(data[kind]), "",
                 "--steps", str(a.steps), "--batch", str(s.per_device_train_batch_size), "--max-length",
                 str(s.max_length), "--lr", str(s.learning_rate), "--lora-r", str(tc.lora.r), "--lora-alpha",
                 str(tc.lora.alpha), "--dtype", cfg.model.dtype,
                 "--gradient-checkpointing", str(bool(s.gradient_checkpointing)).lower()] + (["--bf16"] if bf16 else []) + \
                (["--beta", str(s.beta)] if kind == "dpo" else [])
        rounds = []
        for i in range(a.repeats):
            pair = {}
            order = ("reasonalign", "trl") if i % 2 == 0 else ("trl", "reasonalign")
            for side in order:
                res_file = tmp / f"{kind}-{side}-{i}.json"
                if side == "trl":
                    cmd = plain[:5] + [str(res_file)] + plain[6:]
                else:
                    cmd = [sys.executable, __file__, *a.overrides, "--worker", kind, "--data", str(data[kind]),
                           "--result", str(res_file), "--steps", str(a.steps)]
                pair[side] = run_worker(cmd, res_file)
                print(f"{kind} round {i + 1} {side}: {pair[side]['tokens_per_s']:.1f} tokens/s, "
                      f"peak {pair[side]['peak_rss_mib']:.0f} MiB RSS", flush=True)
            rounds.append(pair)
        results["train"][kind] = summarize(rounds)
    if "gen" in kinds:
        res_file = tmp / "gen.json"
        cmd = [sys.executable, __file__, *a.overrides, "--worker", "gen", "--result", str(res_file),
               "--gen-prompts", str(a.gen_prompts), "--gen-tokens", str(a.gen_tokens)]
        subprocess.run(cmd, check=True, capture_output=True)
        results["generation"] = json.loads(res_file.read_text())
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "report.md").write_text(report(results, " ".join(sys.argv[1:])))
    print((out / "report.md").read_text())


def summarize(rounds: list[dict]) -> dict:
    def med(side, key):
        vals = [r[side][key] for r in rounds if r[side].get(key) is not None]
        return statistics.median(vals) if vals else None

    tps = [r["reasonalign"]["tokens_per_s"] / r["trl"]["tokens_per_s"] for r in rounds]
    mem_key = "peak_gpu_mib" if rounds[0]["trl"].get("peak_gpu_mib") else "peak_rss_mib"
    mem = [r["reasonalign"][mem_key] / r["trl"][mem_key] for r in rounds]
    return {"rounds": rounds, "memory_kind": mem_key,
            "reasonalign": {k: med("reasonalign", k) for k in ("tokens_per_s", mem_key, "wall_s", "train_runtime")},
            "trl": {k: med("trl", k) for k in ("tokens_per_s", mem_key, "wall_s", "train_runtime")},
            "tokens_per_s_ratio": {"median": statistics.median(tps), "min": min(tps), "max": max(tps)},
            "peak_memory_ratio": {"median": statistics.median(mem), "min": min(mem), "max": max(mem)}}


def machine() -> dict:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            **cpu(), "gpu": gpu}


def cpu() -> dict:
    """The CPU's model name and its bf16 instructions (Linux ``/proc/cpuinfo``): whether bf16
    autocast is faster than fp32 on a CPU depends on them (docs/benchmarks.md, section 4)."""
    out = {"cpu": platform.processor() or platform.machine()}
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]  # the first processor's block
    except OSError:
        return out
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first.splitlines())}
    out["cpu"] = fields.get("model name") or out["cpu"]
    out["cpu_bf16"] = sorted(f for f in fields.get("flags", "").split() if "bf16" in f or f == "amx_tile")
    return out


def report(res: dict, argv: str) -> str:
    c = res["config"]
    lines = [f"# Throughput: reasonalign vs plain TRL ({c['model']})", "",
             f"Command: `python benchmarks/throughput.py {argv}`", "",
             f"Machine: {res['machine']}. {c['steps']} optimizer steps per run, {c['rows']} rows, "
             f"{c['repeats']} alternating rounds, LoRA r={c['lora_r']}, bf16={c['bf16']}.", "",
             "| work | reasonalign tokens/s | plain TRL tokens/s | ratio (median, min–max) | reasonalign peak MiB | "
             "plain TRL peak MiB | memory ratio (median) | wall s (ra / TRL) |",
             "|---|---|---|---|---|---|---|---|"]
    for kind, s in res["train"].items():
        mk = s["memory_kind"]
        r, t = s["reasonalign"], s["trl"]
        q, m = s["tokens_per_s_ratio"], s["peak_memory_ratio"]
        lines.append(f"| {kind} | {r['tokens_per_s']:.1f} | {t['tokens_per_s']:.1f} | {q['median']:.3f} "
                     f"({q['min']:.3f}–{q['max']:.3f}) | {r[mk]:.0f} | {t[mk]:.0f} | {m['median']:.3f} | "
                     f"{r['wall_s']:.1f} / {t['wall_s']:.1f} |")
    g = res.get("generation")
    if g:
        lines += ["", "| generation | batch size | prompts | seconds | generated tokens | tokens/s |",
                  "|---|---|---|---|---|---|"]
        for k, v in g.items():
            lines.append(f"| {k} | {v['batch_size']} | {v['prompts']} | {v['seconds']} | {v['generated_tokens']} | "
                         f"{v['tokens_per_s']} |")
        lines += ["", f"Batched generation: {g['batched']['tokens_per_s'] / g['one_at_a_time']['tokens_per_s']:.2f}x "
                  "the tokens/s of one prompt at a time."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
