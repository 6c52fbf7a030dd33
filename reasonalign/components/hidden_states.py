"""Prompt embeddings from a model's hidden states: the shared piece of the verdict head
(:mod:`reasonalign.components.verdict_head`), the embedding-space analysis
(:mod:`reasonalign.analysis.embedding`) and ``benchmarks/probe.py``.

* :func:`embed_prompts`: one vector per prompt from the model's hidden states at ``layer``
  (default the last), mean-pooled over the prompt's tokens (``pooling="mean"``, padding
  excluded) or taken at its last token (``pooling="last"``: the position the answer is generated
  from).
* :func:`embed_prompts_layers`: the same for several layers and poolings from one forward pass
  per batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

POOLINGS = ("mean", "last")


def embed_prompts(model, tokenizer, texts: Sequence[str], batch_size: int = 8, pooling: str = "mean",
                  layer: int = -1, max_length: int = 512, add_special_tokens: bool = True) -> np.ndarray:
    """``[len(texts), hidden]`` float32 embeddings of ``texts`` (see the module docstring)."""
    return embed_prompts_layers(model, tokenizer, texts, [layer], batch_size, (pooling,), max_length,
                                add_special_tokens)[(pooling, layer)]


def embed_prompts_layers(model, tokenizer, texts: Sequence[str], layers: Sequence[int], batch_size: int = 8,
                         poolings: Sequence[str] = ("mean",), max_length: int = 512,
                         add_special_tokens: bool = True) -> dict[tuple[str, int], np.ndarray]:
    """:func:`embed_prompts` for several layers and poolings from one forward pass per batch:
    ``{(pooling, layer): [len(texts), hidden] array}``."""
    import torch

    for pooling in poolings:
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token (load it with reasonalign.models.load_tokenizer)")
    out: dict[tuple[str, int], list[np.ndarray]] = {(p, layer): [] for p in poolings for layer in layers}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start:start + batch_size])
            enc = tokenizer(batch, return_tensors="pt", padding=True, truncation=True, max_length=max_length,
                            add_special_tokens=add_special_tokens)
            enc = {k: v.to(model.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            with torch.inference_mode():
                states = model(**enc, output_hidden_states=True).hidden_states
            mask = enc["attention_mask"]
            last = mask.shape[1] - 1 - torch.argmax(mask.flip(1), dim=1)  # the last real token, either padding side
            m = mask.float()
            count = m.sum(1, keepdim=True).clamp(min=1)
            for layer in layers:
                hidden = states[layer].float()
                for pooling in poolings:
                    if pooling == "mean":
                        vec = (hidden * m.unsqueeze(-1)).sum(1) / count
                    else:
                        vec = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
                    out[(pooling, layer)].append(vec.cpu().numpy().astype(np.float32))
    finally:
        model.train(was_training)
    return {key: np.concatenate(v, axis=0) if v else np.zeros((0, 0), dtype=np.float32) for key, v in out.items()}
