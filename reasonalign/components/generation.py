"""Batched chat generation, plain (:func:`generate`) or resumable through a JSONL file
(:func:`generate_resumable`).

* Each prompt is a list of chat messages, rendered with the tokenizer's chat template and
  ``add_generation_prompt=True``, then tokenized without adding special tokens again (the template
  already holds them).
* Prompts are sorted by token length (longest first: the peak memory shows up in the first batch)
  and cut into batches of ``settings.batch_size``, so a batch holds similar lengths and little
  padding. Batches are left-padded, with an attention mask; results come back in input order.
* Greedy decoding unless ``settings.do_sample``; sampling uses ``temperature`` and ``top_p`` only
  (top-k off). Generation stops at the tokenizer's eos token and the model's own eos token(s).
* A response is the decoded new tokens, special tokens skipped, surrounding whitespace stripped.
  Its ``n_tokens`` counts the new tokens before the stop token (so ``n_tokens ==
  max_new_tokens`` means the answer was cut off).
* A prompt may come with a ``prefix``: the start of the assistant turn, appended to the rendered
  prompt before generation (e.g. the verdict a verdict head chose, ``components/verdict_head.py``).
  The response is then the prefix followed by the continuation; ``n_tokens`` counts the
  continuation's tokens only.
* Throughput goes to an optional :class:`GenerationStats` the caller passes in.

Backends. :func:`load_generator` loads the model a call site generates with: a transformers model
(``hf``) or a :class:`~reasonalign.components.vllm_backend.VLLMModel` (``vllm``), as the run's
``generation_backend`` (``auto`` | ``hf`` | ``vllm``) and the device decide
(:func:`reasonalign.device.generation_choice`); it logs one line saying which and records it in the
stage's ``stage.json``. Every function here takes either kind and gives the same rows, order,
resumability, prefixes and stats. With vLLM the prompts (the same token ids, prefix included) go to
the engine in chunks of :data:`VLLM_CHUNK`, each chunk appended to a resumable file as it finishes;
the engine samples each request with its own seed, derived from the caller's ``seed`` and the item's
id (:func:`~reasonalign.components.vllm_backend.request_seed`), so a resumed run samples what an
uninterrupted one would. The transformers path samples from torch's global generator (the caller
seeds it). The tokens vLLM returns are cut at the first stop token and decoded exactly as here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from reasonalign.config import GenerationSettings
from reasonalign.pipeline.jsonl import append_jsonl, read_finished_lines

log = logging.getLogger("reasonalign.generation")

VLLM_CHUNK = 256  # prompts handed to vLLM at once (and appended to a resumable file together)


@dataclass
class GenerationStats:
    """Counters that :func:`generate` and :func:`generate_resumable` add to (one object may span calls)."""

    n_prompts: int = 0  # prompts generated in these calls
    n_resumed: int = 0  # prompts found already finished in a resumable output file
    n_new_tokens: int = 0  # tokens generated, stop tokens included (what the model computed)
    wall_s: float = 0.0  # seconds inside model.generate and decoding

    @property
    def tokens_per_s(self) -> float:
        return self.n_new_tokens / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict:
        return {"n_prompts": self.n_prompts, "n_resumed": self.n_resumed, "n_new_tokens": self.n_new_tokens,
                "wall_s": round(self.wall_s, 3), "tokens_per_s": round(self.tokens_per_s, 2)}


def encode_chat(tokenizer, messages: list[dict], prefix: str = "") -> list[int]:
    """Token ids of ``messages`` rendered for generation (chat template + generation prompt), then
    ``prefix`` (the start of the assistant turn), tokenized together as one text."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text + prefix, add_special_tokens=False)["input_ids"])


def _stop_ids(model, tokenizer) -> list[int]:
    ids: list[int] = []
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        for i in value if isinstance(value, (list, tuple)) else [value]:
            if i is not None and i not in ids:
                ids.append(int(i))
    if not ids:
        raise ValueError("generation needs an eos token: neither the tokenizer nor the model defines one")
    return ids


def _finish(row: list[int], stops: list[int], prefix: str, tokenizer) -> tuple[str, int, int]:
    """``(response, n_tokens, tokens computed)`` of one prompt's generated ids ``row``: cut at the
    first stop token, decoded without special tokens, after ``prefix``, stripped."""
    n = next((j for j, t in enumerate(row) if t in stops), len(row))
    return (prefix + tokenizer.decode(row[:n], skip_special_tokens=True)).strip(), n, min(n + 1, len(row))


def _finish_batch(idx: list[int], rows: list[list[int]], stops: list[int], prefixes: list[str] | None, tokenizer,
                  stats: GenerationStats | None, t0: float) -> tuple[list[str], list[int]]:
    """One batch's ``(responses, n_tokens)`` (:func:`_finish` per row) and its share of ``stats``."""
    done = [_finish(row, stops, prefixes[i] if prefixes else "", tokenizer) for i, row in zip(idx, rows, strict=True)]
    if stats is not None:
        stats.wall_s += time.perf_counter() - t0
        stats.n_prompts += len(idx)
        stats.n_new_tokens += sum(c for _, _, c in done)
    return [t for t, _, _ in done], [n for _, n, _ in done]


def is_vllm(model) -> bool:
    """Whether ``model`` (from :func:`load_generator`) generates through vLLM."""
    return getattr(model, "backend", None) == "vllm"


def _batches(model, tokenizer, encoded: list[list[int]], settings: GenerationSettings,
             stats: GenerationStats | None, prefixes: list[str] | None = None,
             seeds: list[int] | None = None,
             stopping_criteria: list | None = None) -> Iterator[tuple[list[int], list[str], list[int]]]:
    """Yield ``(indices, responses, n_tokens)`` per batch, longest prompts first (vLLM: per chunk,
    in input order); a response starts with its prompt's prefix (``prefixes[i]``) when there is
    one. ``seeds``: each prompt's sampling seed (vLLM only); ``stopping_criteria``: extra
    transformers stops (the transformers path only)."""
    if settings.batch_size < 1 or settings.max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be >= 1 (got {settings.batch_size}, "
                         f"{settings.max_new_tokens})")
    pad = tokenizer.pad_token_id
    if pad is None:
        raise ValueError("the tokenizer has no pad token (load it with reasonalign.models.load_tokenizer)")
    stops = _stop_ids(model, tokenizer)
    if is_vllm(model):
        yield from _vllm_batches(model, tokenizer, encoded, settings, stats, prefixes, seeds, stops)
        return
    import torch

    kwargs: dict = {"max_new_tokens": settings.max_new_tokens, "do_sample": settings.do_sample,
                    "pad_token_id": pad, "eos_token_id": stops, "use_cache": True}
    if settings.do_sample:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
    if stopping_criteria:
        from transformers import StoppingCriteriaList

        kwargs["stopping_criteria"] = StoppingCriteriaList(stopping_criteria)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    device = model.device
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), settings.batch_size):
            idx = order[start:start + settings.batch_size]
            seqs = [encoded[i] for i in idx]
            width = max(len(s) for s in seqs)
            input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=device)
            mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
            yield idx, *_finish_batch(idx, out[:, width:].tolist(), stops, prefixes, tokenizer, stats, t0)
    finally:
        model.train(was_training)


def _vllm_batches(model, tokenizer, encoded: list[list[int]], settings: GenerationSettings,
                  stats: GenerationStats | None, prefixes: list[str] | None, seeds: list[int] | None,
                  stops: list[int]) -> Iterator[tuple[list[int], list[str], list[int]]]:
    """:func:`_batches` through a :class:`~reasonalign.components.vllm_backend.VLLMModel`: chunks of
    :data:`VLLM_CHUNK` prompts in input order (vLLM batches them itself)."""
    if encoded:
        model.engine()  # started before the clock: like loading a transformers model, not generation time
    for start in range(0, len(encoded), VLLM_CHUNK):
        idx = list(range(start, min(start + VLLM_CHUNK, len(encoded))))
        t0 = time.perf_counter()
        rows = model.generate_ids([encoded[i] for i in idx], max_new_tokens=settings.max_new_tokens,
                                  do_sample=settings.do_sample, temperature=settings.temperature,
                                  top_p=settings.top_p, stop_ids=stops,
                                  seeds=[seeds[i] for i in idx] if seeds else None)
        rows = [row[:settings.max_new_tokens] for row in rows]
        yield idx, *_finish_batch(idx, rows, stops, prefixes, tokenizer, stats, t0)


def _progress(total: int, desc: str, initial: int = 0):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="prompt", dynamic_ncols=True)


def generate(model, tokenizer, prompts: list[list[dict]], settings: GenerationSettings,
             desc: str = "generating", stats: GenerationStats | None = None,
             prefixes: list[str] | None = None, seeds: list[int] | None = None,
             stopping_criteria: list | None = None) -> list[str]:
    """Responses to ``prompts`` (each a list of chat messages), in input order; ``prefixes``: the
    start of each assistant turn (see the module docstring); ``seeds``: each prompt's sampling
    seed on vLLM (the transformers path samples from torch's global generator);
    ``stopping_criteria``: extra transformers ``StoppingCriteria`` (e.g. a time limit): a response
    they stop early is the tokens generated so far."""
    if prefixes is not None and len(prefixes) != len(prompts):
        raise ValueError(f"{len(prefixes)} prefixes for {len(prompts)} prompts")
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    encoded = [encode_chat(tokenizer, m, prefixes[i] if prefixes else "") for i, m in enumerate(prompts)]
    responses: list[str] = [""] * len(prompts)
    with _progress(len(prompts), desc) as bar:
        for idx, texts, _ in _batches(model, tokenizer, encoded, settings, stats, prefixes, seeds,
                                      stopping_criteria):
            for i, text in zip(idx, texts, strict=True):
                responses[i] = text
            bar.update(len(idx))
    return responses


def generate_resumable(model, tokenizer, items: list[dict], settings: GenerationSettings, out_path: Path,
                       desc: str = "generating", stats: GenerationStats | None = None,
                       on_batch: Callable[[list[dict]], None] | None = None, seed: int = 0) -> list[dict]:
    """Generate for ``items`` (``{"id", "messages"[, "prefix"]}``), appending ``{"id", "response", "n_tokens"}``
    rows to ``out_path`` batch by batch; ids already finished there are not generated again.

    Returns one row per item, in input order. A torn last line (an interrupted write) is dropped
    and its item generated again. ``on_batch`` sees each batch's new rows after they are written.
    ``seed``: with the item ids, the per-request sampling seeds on vLLM (module docstring).
    """
    out_path = Path(out_path)
    ids = [it["id"] for it in items]
    if len(set(ids)) != len(ids):
        dupes = sorted({str(i) for i in ids if ids.count(i) > 1})
        raise ValueError(f"duplicate item ids: {', '.join(dupes[:5])}")
    wanted = set(ids)
    done = {r["id"]: r for r in read_finished_lines(out_path) if isinstance(r, dict) and r.get("id") in wanted}
    todo = [it for it in items if it["id"] not in done]
    if done:
        log.info("%s: %d of %d already generated in %s; generating %d", desc, len(done), len(items), out_path,
                 len(todo))
    if stats is not None:
        stats.n_resumed += len(done)
    if todo:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        encoded = [encode_chat(tokenizer, it["messages"], it.get("prefix", "")) for it in todo]
        prefixes = [it.get("prefix", "") for it in todo]
        seeds = item_seeds(seed, [it["id"] for it in todo]) if is_vllm(model) else None
        with _progress(len(items), desc, initial=len(done)) as bar:
            for idx, texts, counts in _batches(model, tokenizer, encoded, settings, stats,
                                               prefixes if any(prefixes) else None, seeds):
                rows = [{"id": todo[i]["id"], "response": t, "n_tokens": n}
                        for i, t, n in zip(idx, texts, counts, strict=True)]
                append_jsonl(out_path, rows)
                done.update((r["id"], r) for r in rows)
                if on_batch is not None:
                    on_batch(rows)
                bar.update(len(idx))
    return [done[i] for i in ids]


def item_seeds(seed: int, ids: list) -> list[int]:
    """Each item's sampling seed on vLLM, from the caller's ``seed`` and the item's id."""
    from reasonalign.components.vllm_backend import request_seed

    return [request_seed(seed, i) for i in ids]


# ------------------------------------------------------------------------------------ backends


def load_generator(model_cfg, path=None, backend: str = "auto", *, seed: int = 0, cache=None,
                   hf_model=None, what: str = "generation"):
    """``(model, tokenizer)`` to generate with ``model_cfg``'s model (or the one saved in ``path``):
    a transformers model or a :class:`~reasonalign.components.vllm_backend.VLLMModel`, as
    ``backend`` (the run's ``generation_backend``: ``auto`` | ``hf`` | ``vllm``) and the device
    decide (:func:`reasonalign.device.generation_choice`; ``vllm`` without a GPU or without vllm is
    a :class:`~reasonalign.config.ConfigError`). Logs one line (``<what>: vllm on cuda:0 (model
    ...)``) and records the backend in the running stage's ``stage.json``.

    ``hf_model``: the same checkpoint already loaded with transformers (e.g. for a verdict head's
    hidden states): the hf backend generates with it; with vLLM the caller drops it, and the engine,
    which starts on the first generation, finds that memory free. ``seed``: vLLM's engine seed.
    """
    from reasonalign import device as D
    from reasonalign.models import load_model, load_tokenizer, model_source

    dev = D.resolve()
    name, why = D.generation_choice(backend, dev)
    src, _ = model_source(model_cfg, path, cache)
    tok = load_tokenizer(model_cfg, path, cache=cache)
    if name == "vllm":
        from reasonalign.components.vllm_backend import VLLMModel

        model = VLLMModel.from_config(model_cfg, path, seed=seed, cache=cache)
    else:
        model = hf_model if hf_model is not None else load_model(model_cfg, path, cache=cache)
    log.info("%s: %s on %s (model %s; %s)", what, name, dev, src, why)
    D.note_backend(name)
    return model, tok


def release_generator(model) -> None:
    """Stop ``model``'s vLLM engine now (its GPU memory back, e.g. for a judge that loads next); a
    later generation starts it again. Nothing for a transformers model (the caller drops it)."""
    if is_vllm(model):
        model.release()
