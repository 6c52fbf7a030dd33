"""Cost of a method at inference: reasoning tokens and per-request latency against the base model.

    python benchmarks/method_cost.py runs/sft-smollm2-135m-default runs/dpo-smollm2-135m-default \
        runs/erpo-smollm2-135m-default runs/saro-smollm2-135m-default

For the first run's base model and every run's final model: the same held-out prompts (the first
run's ``eval_prompts.jsonl``, ``--prompts`` of them, spread over the labels), one request at a
time (batch size 1, greedy, ``--max-new-tokens`` for every model so that long chains finish),
timed each. Reports mean and median latency per request, generated tokens, reasoning (thought)
tokens, answer tokens, and the latency ratio to the base model. ``--out`` (default
``runs/bench/method_cost``) gets ``results.json`` and ``report.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def run_models(run_dir: Path) -> tuple[dict, str, str]:
    """(config, base model dir, final model dir) of a finished training run."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ev = metrics.get("eval") or {}
    if "final" not in ev:
        raise SystemExit(f"{run_dir}: no final evaluation in metrics.json (is the run finished?)")
    return cfg, ev.get("base", {}).get("model_path"), ev["final"]["model_path"]


def pick_prompts(path: Path, n: int) -> list[dict]:
    rows = [json.loads(line) for line in open(path)]
    by_label: dict[str, list[dict]] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r)
    out, i = [], 0
    while len(out) < min(n, len(rows)):  # round-robin over labels, in file order
        for lab in sorted(by_label):
            if i < len(by_label[lab]) and len(out) < n:
                out.append(by_label[lab][i])
        i += 1
    return out


def measure(model_cfg, cot_cfg, path: str, prompts: list[dict], max_new_tokens: int) -> dict:
    import torch

    from reasonalign.components.cot import CoTFormat, split_response
    from reasonalign.components.generation import GenerationStats, generate
    from reasonalign.config import GenerationSettings
    from reasonalign.models import chat_messages, load_model, load_tokenizer

    model, tok = load_model(model_cfg, path), load_tokenizer(model_cfg, path)
    fmt = CoTFormat(cot_cfg)
    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=1, do_sample=False)
    generate(model, tok, [chat_messages(model_cfg, prompts[0]["text"])], settings, desc="warm-up")
    lat, gen, thought, answer = [], [], [], []
    for p in prompts:
        stats = GenerationStats()
        torch.manual_seed(0)
        t0 = time.perf_counter()
        text = generate(model, tok, [chat_messages(model_cfg, p["text"])], settings, desc="", stats=stats)[0]
        lat.append(time.perf_counter() - t0)
        gen.append(stats.n_new_tokens)
        th, ans = split_response(text, fmt)
        thought.append(len(tok(th, add_special_tokens=False).input_ids) if th else 0)
        answer.append(len(tok(ans, add_special_tokens=False).input_ids) if ans else 0)
    del model
    mean = statistics.mean
    return {"model_path": path, "n": len(prompts), "latency_mean_s": mean(lat), "latency_median_s": statistics.median(lat),
            "generated_tokens_mean": mean(gen), "thought_tokens_mean": mean(thought), "answer_tokens_mean": mean(answer),
            "tokens_per_s": sum(gen) / sum(lat)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="finished training run directories")
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--max-new-tokens", type=int, default=320)
    ap.add_argument("--out", default="runs/bench/method_cost")
    a = ap.parse_args()

    from omegaconf import OmegaConf

    from reasonalign.config import CoTConfig, ModelConfig

    def typed(cls, node):
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), node))

    runs = [Path(r) for r in a.runs]
    prompts = pick_prompts(runs[0] / "stages" / "prompts" / "eval_prompts.jsonl", a.prompts)
    results: dict[str, dict] = {}
    for i, run in enumerate(runs):
        cfg, base, final = run_models(run)
        mcfg, cot = typed(ModelConfig, cfg["model"]), typed(CoTConfig, cfg.get("cot", {}))
        if i == 0:
            from reasonalign.models import resolve_model_dir

            results["base"] = measure(mcfg, cot, base or resolve_model_dir(mcfg), prompts, a.max_new_tokens)
            print("base", json.dumps(results["base"]), flush=True)
        name = cfg.get("method", {}).get("name", run.name)
        results[name] = measure(mcfg, cot, final, prompts, a.max_new_tokens)
        print(name, json.dumps(results[name]), flush=True)
    base = results["base"]["latency_mean_s"]
    for r in results.values():
        r["latency_vs_base"] = r["latency_mean_s"] / base
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"prompts": [p["id"] for p in prompts],
                                                  "max_new_tokens": a.max_new_tokens, "models": results}, indent=2))
    lines = ["# Method cost: reasoning tokens and latency per request", "",
             f"Command: `python benchmarks/method_cost.py {' '.join(a.runs)} --prompts {a.prompts} "
             f"--max-new-tokens {a.max_new_tokens}`", "",
             f"{len(prompts)} held-out prompts, one at a time, greedy, max {a.max_new_tokens} new tokens.", "",
             "| model | mean latency s | median latency s | latency vs base | generated tokens | reasoning tokens | "
             "answer tokens | tokens/s |", "|---|---|---|---|---|---|---|---|"]
    for k, r in results.items():
        lines.append(f"| {k} | {r['latency_mean_s']:.2f} | {r['latency_median_s']:.2f} | "
                     f"{(r['latency_vs_base'] - 1) * 100:+.1f}% | {r['generated_tokens_mean']:.1f} | "
                     f"{r['thought_tokens_mean']:.1f} | {r['answer_tokens_mean']:.1f} | {r['tokens_per_s']:.1f} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
