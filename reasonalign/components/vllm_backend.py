"""OPTIONAL vLLM generation path (``eval.backend: auto|vllm``). Used only when ``vllm`` imports and a
CUDA GPU is present; not exercised by the tests (no GPU there). Greedy or sampled like
:mod:`reasonalign.components.generation`; writes the same ``{"id", "response", "n_tokens"}`` rows.
"""

from __future__ import annotations

from pathlib import Path

from reasonalign.config import GenerationSettings
from reasonalign.pipeline import write_jsonl

_LLMS: dict[str, object] = {}


def available() -> bool:
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def generate_vllm(model_path: str, tokenizer, items: list[dict], settings: GenerationSettings,
                  out_path: Path) -> list[dict]:  # pragma: no cover - needs a GPU and vllm
    from vllm import LLM, SamplingParams

    llm = _LLMS.get(model_path) or _LLMS.setdefault(model_path, LLM(model=model_path))
    params = SamplingParams(max_tokens=settings.max_new_tokens,
                            temperature=settings.temperature if settings.do_sample else 0.0,
                            top_p=settings.top_p if settings.do_sample else 1.0)
    texts = [tokenizer.apply_chat_template(it["messages"], add_generation_prompt=True, tokenize=False)
             for it in items]
    outs = llm.generate(texts, params)
    rows = [{"id": it["id"], "response": o.outputs[0].text.strip(), "n_tokens": len(o.outputs[0].token_ids)}
            for it, o in zip(items, outs, strict=True)]
    write_jsonl(out_path, rows)
    return rows
