"""Training and generation throughput: reasonalign against plain TRL (issue #7, docs/benchmarks.md).

    python benchmarks/throughput.py                       # embedded default, CPU: 3 rounds
    python benchmarks/throughput.py model=tiny-random --steps 2 --repeats 1   # smoke run
    python benchmarks/throughput.py model=mistral7b model.random_init=true distributed=zero3 \
        trainer.sft.gradient_checkpointing=true --fill-tokens 1024 --warmup-steps 2   # one GPU

Arguments that contain ``=`` are reasonalign config overrides (model, trainer...). The same SFT
and DPO work (same model, rows, batch, steps, sequence length, LoRA, precision) runs through
reasonalign's trainer wrappers (``components/sft.py``, ``components/dpo.py``) and through
``benchmarks/plain_trl.py``, a minimal TRL script, alternately, each in a fresh process (so peak
memory is that run's own). Reported per kind: training-loop tokens/s (TRL's ``num_tokens`` over
``train_runtime``), peak memory (RSS on CPU, ``torch.cuda.max_memory_allocated`` on a GPU),
their reasonalign/TRL ratios (median over rounds) and the end-to-end wall time (reasonalign's also
snapshots the trainable weights and saves the merged model). Then generation: the same prompts
batched (``eval.generation.batch_size``) against one prompt at a time, generated tokens/s.

``distributed=zero2|zero3`` trains both sides under the same DeepSpeed JSON
(``reasonalign.distributed.deepspeed_config``), each in a one-process DeepSpeed world;
``trainer.{sft,dpo}.gradient_checkpointing`` reaches both sides. ``--fill-tokens N`` lengthens every
completion to at least N tokens, so that sequences are cut at ``max_length`` and all have its length;
``--warmup-steps W`` also reports the tokens/s after the first W steps (``steady_tokens_per_s``, from
the wall time at each logged step, the same callback on both sides). ``benchmarks/gpu_check.py``
drives this on one GPU.

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


def make_rows(cfg, n: int, fill_tokens: int = 0) -> tuple[list[dict], list[dict]]:
    """SFT records and DPO pairs over the configured training prompts (deterministic).

    ``fill_tokens``: append filler text to every completion (chosen and rejected alike) until it is
    at least that many tokens long (a word is at least one token), so that training cuts it at
    ``max_length``."""
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
        if fill_tokens:
            filler = " " + helpful * (fill_tokens // len(helpful.split()) + 1)
            good, bad = good + filler, bad + filler
        sft.append({"prompt": prompt, "completion": [{"role": "assistant", "content": good}]})
        dpo.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": good}],
                    "rejected": [{"role": "assistant", "content": bad}]})
    return sft, dpo


# ------------------------------------------------------------------------------------- workers
# ------------------------------------------------------------------------------------- workers
def plain_trl_module():
    """``benchmarks/plain_trl.py`` as a module (its step clock is shared by both sides)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import plain_trl

    return plain_trl


def worker_reasonalign(kind: str, overrides: list[str], data: str, out: str, steps: int,
                       deepspeed: str | None = None) -> None:
    from dataclasses import replace

    import reasonalign.components.training as T
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
    # measurement only: the same step clock the plain-TRL side adds to its trainer
    clock = plain_trl_module().step_clock()
    own_callbacks = T.callbacks
    T.callbacks = lambda: [*own_callbacks(), clock]
    m = train(model_dir, rows, work, cfg.model, tc, deepspeed=deepspeed)
    import torch

    json.dump({"train_runtime": m["train_runtime"], "train_tokens": m["train_tokens"], "steps": m["steps"],
               "wall_s": time.time() - t0, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
               "zero_stage": m.get("zero_stage"), "marks": clock.marks},
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
def steady_rate(marks: list, warmup: int) -> float | None:
    """Tokens/s between the end of step ``warmup`` and the last logged step; ``marks`` are
    ``(seconds, global step, cumulative tokens)`` at each logged step. None when no step follows
    the warm-up."""
    if warmup <= 0:
        return None
    after = [m for m in marks if m[1] >= warmup]
    if len(after) < 2 or after[0][1] != warmup:
        return None
    (t0, _, n0), (t1, _, n1) = after[0], after[-1]
    return (n1 - n0) / (t1 - t0) if t1 > t0 else None


def single_process_world() -> dict:
    """Environment for a one-process DeepSpeed world (no launcher), the same for both sides."""
    from reasonalign.distributed import free_port

    return {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "LOCAL_RANK": "0",
            "WORLD_SIZE": "1"}


def run_worker(cmd: list[str], out: Path, env: dict | None = None, warmup: int = 0) -> dict:
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=None if env is None else {**os.environ, **env})
    if proc.returncode != 0 or not out.is_file():
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"benchmark worker failed ({proc.returncode}): {' '.join(cmd)}")
    res = json.loads(out.read_text())
    res["process_s"] = round(time.time() - t0, 2)
    res["tokens_per_s"] = res["train_tokens"] / res["train_runtime"] if res.get("train_tokens") else None
    res["steady_tokens_per_s"] = steady_rate(res.get("marks") or [], warmup)
    return res


def train_settings(cfg) -> dict:
    """What both sides train with: precision as reasonalign decides it (``trl_kwargs``), LoRA, ZeRO."""
    from reasonalign import device as D
    from reasonalign.distributed import zero_stage

    tc = cfg.trainer
    if tc.finetune != "lora":
        raise SystemExit("the plain-TRL side is LoRA only: use trainer=default (finetune: lora)")
    bf16 = bool(tc.bf16) if tc.bf16 is not None else (D.is_cuda(D.resolve()) and cfg.model.dtype == "bfloat16")
    return {"bf16": bf16, "lora_r": tc.lora.r, "lora_alpha": tc.lora.alpha, "zero_stage": zero_stage(cfg.distributed)}


def train_rounds(cfg, overrides: list[str], kinds: list[str], data: dict, tmp: Path, steps: int, repeats: int,
                 warmup: int = 0, deadline: float | None = None, log=print) -> tuple[dict, list[str]]:
    """SFT/DPO through reasonalign and plain TRL, alternating: ``repeats`` rounds, each running
    every kind once per side, each run in a fresh process.

    With a ``deadline`` (``time.time()`` value), a round after the first starts only when the
    previous round's duration still fits before it; the skipped rounds are listed in the notes.
    """
    from reasonalign.distributed import deepspeed_config
    from reasonalign.models import resolve_model_dir

    model_dir = resolve_model_dir(cfg.model)
    tc, ts = cfg.trainer, train_settings(cfg)
    ds_file = None
    if ts["zero_stage"] is not None:  # one DeepSpeed JSON for both sides, one-process worlds
        ds_file = tmp / "deepspeed.json"
        ds_file.write_text(json.dumps(deepspeed_config(cfg.distributed)))
    plain = {}
    for kind in kinds:
        s = getattr(tc, kind)
        plain[kind] = [sys.executable, str(HERE / "plain_trl.py"), kind, model_dir, str(data[kind]), "",
                       "--steps", str(steps), "--batch", str(s.per_device_train_batch_size), "--max-length",
                       str(s.max_length), "--lr", str(s.learning_rate), "--lora-r", str(tc.lora.r), "--lora-alpha",
                       str(tc.lora.alpha), "--dtype", cfg.model.dtype,
                       "--gradient-checkpointing", str(bool(s.gradient_checkpointing)).lower()] + \
            (["--bf16"] if ts["bf16"] else []) + (["--beta", str(s.beta)] if kind == "dpo" else []) + \
            (["--deepspeed", str(ds_file)] if ds_file else [])
    rounds: dict[str, list] = {kind: [] for kind in kinds}
    notes, last = [], 0.0
    for i in range(repeats):  # a round: every kind, each side once (odd rounds reasonalign first)
        if deadline is not None and i > 0 and time.time() + last > deadline:
            notes.append(f"rounds {i + 1}-{repeats} skipped: the time budget would be exceeded "
                         f"(round {i} took {last:.0f} s)")
            break
        t_round = time.time()
        for kind in kinds:
            pair = {}
            order = ("reasonalign", "trl") if i % 2 == 0 else ("trl", "reasonalign")
            for side in order:
                res_file = tmp / f"{kind}-{side}-{i}.json"
                if side == "trl":
                    cmd = plain[kind][:5] + [str(res_file)] + plain[kind][6:]
                else:
                    cmd = [sys.executable, str(Path(__file__).resolve()), *overrides, "--worker", kind, "--data",
                           str(data[kind]), "--result", str(res_file), "--steps", str(steps)] + \
                          (["--deepspeed", str(ds_file)] if ds_file else [])
                pair[side] = run_worker(cmd, res_file, single_process_world() if ds_file else None, warmup)
                mem = (f"{pair[side]['peak_gpu_mib']:.0f} MiB GPU" if pair[side].get("peak_gpu_mib")
                       else f"{pair[side]['peak_rss_mib']:.0f} MiB RSS")
                log(f"{kind} round {i + 1} {side}: {pair[side]['tokens_per_s']:.1f} tokens/s, peak {mem}")
            rounds[kind].append(pair)
        last = time.time() - t_round
    results = {kind: summarize(r) for kind, r in rounds.items() if r}
    return results, notes


def write_rows(cfg, n: int, tmp: Path, fill_tokens: int = 0) -> dict:
    sft_rows, dpo_rows = make_rows(cfg, n, fill_tokens)
    data = {"sft": tmp / "sft.jsonl", "dpo": tmp / "dpo.jsonl"}
    for k, rows in (("sft", sft_rows), ("dpo", dpo_rows)):
        data[k].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*", help="reasonalign config overrides, e.g. model=tiny-random")
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps per training run")
    ap.add_argument("--repeats", type=int, default=3, help="alternating rounds (reasonalign, TRL)")
    ap.add_argument("--rows", type=int, default=64, help="training rows")
    ap.add_argument("--fill-tokens", type=int, default=0, help="lengthen every completion to at least N tokens")
    ap.add_argument("--warmup-steps", type=int, default=0, help="also report tokens/s after the first W steps")
    ap.add_argument("--kinds", default="sft,dpo,gen", help="comma-separated: sft, dpo, gen")
    ap.add_argument("--gen-prompts", type=int, default=32)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--out", default="runs/bench/throughput")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--deepspeed", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker == "gen":
        return worker_generation(a.overrides, a.result, a.gen_prompts, a.gen_tokens)
    if a.worker:
        return worker_reasonalign(a.worker, a.overrides, a.data, a.result, a.steps, a.deepspeed)

    cfg = load_config(a.overrides)
    kinds = a.kinds.split(",")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    data = write_rows(cfg, a.rows, tmp, a.fill_tokens)
    ts = train_settings(cfg)
    results: dict = {"config": {"model": cfg.model.name, "steps": a.steps, "rows": a.rows, "repeats": a.repeats,
                                "overrides": a.overrides, "bf16": ts["bf16"], "lora_r": ts["lora_r"],
                                "zero_stage": ts["zero_stage"], "fill_tokens": a.fill_tokens,
                                "warmup_steps": a.warmup_steps},
                     "machine": machine(), "train": {}}
    results["train"], _ = train_rounds(cfg, a.overrides, [k for k in kinds if k in ("sft", "dpo")], data, tmp,
                                       a.steps, a.repeats, a.warmup_steps, log=lambda m: print(m, flush=True))
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

    def ratios(key):
        vals = [r["reasonalign"][key] / r["trl"][key] for r in rounds if r["reasonalign"].get(key) and r["trl"].get(key)]
        return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)} if vals else None

    mem_key = "peak_gpu_mib" if rounds[0]["trl"].get("peak_gpu_mib") else "peak_rss_mib"
    keys = ("tokens_per_s", "steady_tokens_per_s", mem_key, "wall_s", "train_runtime", "train_tokens")
    return {"rounds": rounds, "memory_kind": mem_key,
            "reasonalign": {k: med("reasonalign", k) for k in keys},
            "trl": {k: med("trl", k) for k in keys},
            "tokens_per_s_ratio": ratios("tokens_per_s"),
            "steady_tokens_per_s_ratio": ratios("steady_tokens_per_s"),
            "peak_memory_ratio": ratios(mem_key)}


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
